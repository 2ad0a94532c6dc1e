"""Test helpers: the real ``gatehouse`` binary for your tests, and a TestClient that keeps the
Secure session cookie.

As a pytest plugin (registered by the package's ``pytest11`` entry point, so installed means
active; or ``pytest_plugins = ["gatehouse.testing"]``) it provides the fixture
``gatehouse_server``: one server per test session on SQLite in a temporary directory, on free
ports, with test-friendly settings (:data:`TEST_ENV`: rate limits out of reach, cheap Argon2),
its mail readable in :attr:`GatehouseServer.outbox`. Override the fixture
``gatehouse_server_env`` to add settings.

>>> def test_sign_up(gatehouse_server):
...     app = create_app(gatehouse_server.target)
...     with secure_test_client(app) as web:       # https://testserver: the cookie is kept
...         web.post("/auth/sign-up", json={...})
...         token = gatehouse_server.wait_for_link(email, "Confirm your email address")

The binary is ``$GATEHOUSE_BIN``, else ``gatehouse`` on ``PATH``, else ``target/debug`` or
``target/release`` of a cargo checkout above the working directory or this package
(``$CARGO_TARGET_DIR`` first); none is :class:`GatehouseBinaryNotFound`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import grpc
import pytest

if TYPE_CHECKING:
    from starlette.testclient import TestClient

__all__ = [
    "FAST_HASHING",
    "GENEROUS_RATE_LIMITS",
    "TEST_ENV",
    "GatehouseBinaryNotFound",
    "GatehouseServer",
    "api_key_env",
    "free_port",
    "gatehouse_binary",
    "gatehouse_server",
    "gatehouse_server_env",
    "secure_test_client",
]

HEALTH_CHECK: Final = "/grpc.health.v1.Health/Check"
#: HealthCheckResponse{status: SERVING} on the wire.
SERVING: Final = b"\x08\x01"
STARTUP_TIMEOUT: Final = 30.0
#: Limits no test trips by accident: the per-IP sign-up limit would otherwise refuse the
#: 11th user signed up from 127.0.0.1.
GENEROUS_RATE_LIMITS: Final[Mapping[str, str]] = {
    f"GATEHOUSE_RATE_{name}": "10000/1m"
    for name in (
        "SIGN_IN_PER_ACCOUNT",
        "SIGN_IN_PER_IP",
        "SIGN_UP_PER_IP",
        "RESET_PER_EMAIL",
        "RESET_PER_IP",
        "VERIFICATION_PER_ACCOUNT",
        "REDEEM_PER_IP",
    )
}
#: Argon2id far below the production default (19 MiB, 2 passes): hashing in milliseconds.
FAST_HASHING: Final[Mapping[str, str]] = {
    "GATEHOUSE_ARGON2_MEMORY_KIB": "1024",
    "GATEHOUSE_ARGON2_ITERATIONS": "1",
    "GATEHOUSE_ARGON2_PARALLELISM": "1",
}
#: The extra environment of :func:`gatehouse_server` (and of a GatehouseServer by default).
TEST_ENV: Final[Mapping[str, str]] = {**GENEROUS_RATE_LIMITS, **FAST_HASHING}
_LINK_TOKEN_RE = re.compile(r"token=(gatelink_[A-Za-z0-9_-]+)")


class GatehouseBinaryNotFound(RuntimeError):
    """No gatehouse binary: set GATEHOUSE_BIN, put it on PATH, or build it with cargo."""


def api_key_env(name: str, api_key: str) -> dict[str, str]:
    """Server environment accepting ``api_key`` as service credentials (``x-api-key``)."""
    return {"GATEHOUSE_ADMIN_API_KEYS": f"{name}=" + hashlib.sha256(api_key.encode()).hexdigest()}


def gatehouse_binary() -> Path:
    """The binary to run (see the module docstring for where it is looked for)."""
    override = os.environ.get("GATEHOUSE_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            raise GatehouseBinaryNotFound(f"GATEHOUSE_BIN={override}: no such file")
        return path
    on_path = shutil.which("gatehouse")
    if on_path:
        return Path(on_path)
    tried: list[Path] = []
    roots = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    dirs = [Path(target_dir)] if target_dir and Path(target_dir).is_absolute() else []
    for root in roots:
        if (root / "Cargo.toml").is_file():
            dirs.append(root / (target_dir or "target"))
    for directory in dirs:
        for profile in ("debug", "release"):
            candidate = directory / profile / "gatehouse"
            tried.append(candidate)
            if candidate.is_file():
                return candidate
    raise GatehouseBinaryNotFound(
        "no gatehouse binary: set GATEHOUSE_BIN to its path, put `gatehouse` on PATH, or run "
        "`cargo build --bin gatehouse` in the Gatehouse checkout"
        + (f" (looked for {', '.join(map(str, tried))})" if tried else "")
    )


def free_port() -> int:
    """A port the OS just handed out (closed again before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inherited_env() -> dict[str, str]:
    """This process's environment without Gatehouse settings: a developer's GATEHOUSE_* or
    REDIS_URL (shared rate-limit counters) must not leak into the server under test."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEHOUSE_") and k not in ("REDIS_URL", "DATABASE_URL")
        or k == "GATEHOUSE_BIN"
    }


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _with_database(admin_url: str, name: str) -> str:
    base, _, query = admin_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@dataclass
class GatehouseServer:
    """One running gatehouse process and the database it owns: SQLite in :attr:`tmp`, or a
    fresh PostgreSQL database created through ``postgres_admin_url`` (``psql`` needed) and
    dropped by :meth:`stop`. Also a context manager (``with GatehouseServer() as server:``)."""

    backend: str = "sqlite"
    postgres_admin_url: str | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gh_py_")))
    database: str | None = None
    #: Extra environment for the server; :data:`TEST_ENV` unless given.
    env: dict[str, str] = field(default_factory=lambda: dict(TEST_ENV))
    #: The plain-HTTP side port (JWKS, discovery, metrics); every server gets its own.
    http_port: int = 0

    @property
    def target(self) -> str:
        """``host:port`` of the gRPC port, for ``Client``/``AsyncClient``/``Gatehouse``."""
        return f"127.0.0.1:{self.port}"

    @property
    def http_base(self) -> str:
        """Base URL of the HTTP side port."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        """GATEHOUSE_DATA_DIR: ``<tmp>/data``."""
        return self.tmp / "data"

    @property
    def outbox(self) -> Path:
        """Where the server writes mail (no SMTP relay is configured)."""
        return self.data_dir / "outbox"

    def mails(self, to: str, subject: str) -> list[tuple[str, str]]:
        """(text, link token or "") of the outbox messages to ``to`` whose subject is
        ``subject``, oldest first (file names start with the time written)."""
        found: list[tuple[str, str]] = []
        if not self.outbox.exists():
            return found
        for path in sorted(self.outbox.glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace")
            head = text.split("\n\n", 1)[0].splitlines()
            # A .txt is written after its .eml: one still empty has no head yet.
            if f"To: {to}" in head and f"Subject: {subject}" in head:
                match = _LINK_TOKEN_RE.search(text)
                found.append((text, match.group(1) if match else ""))
        return found

    def wait_for_mail(
        self, to: str, subject: str, count: int = 1, timeout: float = 10.0
    ) -> tuple[str, str]:
        """(text, link token) of the ``count``-th message to ``to`` with ``subject``, polling
        the outbox: mail is delivered in the background."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.mails(to, subject)
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no message #{count} to {to} with subject {subject!r} in {self.outbox} "
                    f"within {timeout}s; found {len(found)}"
                )
            time.sleep(0.05)

    def wait_for_link(self, to: str, subject: str, count: int = 1, timeout: float = 10.0) -> str:
        """The link token (``gatelink_...``) of the ``count``-th message to ``to``."""
        text, token = self.wait_for_mail(to, subject, count, timeout)
        assert token, f"no gatelink token in:\n{text}"
        return token

    def start(self) -> GatehouseServer:
        """Starts the server (on free ports), on a fresh database unless it already has one
        (a restart), and waits until it is SERVING."""
        binary = gatehouse_binary()
        if self.backend == "postgres":
            if not self.postgres_admin_url:
                raise RuntimeError("postgres backend needs postgres_admin_url")
            if self.database is None:
                self.database = f"gh_py_{uuid.uuid4().hex}"
                _psql(self.postgres_admin_url, f'CREATE DATABASE "{self.database}"')
            database_url = _with_database(self.postgres_admin_url, self.database)
        elif self.backend == "sqlite":
            database_url = f"sqlite://{self.tmp}/gatehouse.db?mode=rwc"
        else:
            raise ValueError(f"backend must be 'sqlite' or 'postgres', not {self.backend!r}")
        self.port = free_port()
        self.http_port = free_port()
        env = {
            **_inherited_env(),
            "GATEHOUSE_LISTEN": self.target,
            "GATEHOUSE_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "GATEHOUSE_ISSUER": self.http_base,
            "DATABASE_URL": database_url,
            "GATEHOUSE_DATA_DIR": str(self.data_dir),
            "GATEHOUSE_SECRET": "python-client-tests-secret-" + "x" * 16,
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
            **self.env,
        }
        log = (self.tmp / "server.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with grpc.insecure_channel(self.target) as channel:
            check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(HEALTH_CHECK)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"gatehouse exited at start:\n{self.log()}")
                try:
                    if check(b"", timeout=1.0) == SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gatehouse not SERVING within {STARTUP_TIMEOUT}s:\n{self.log()}")

    def restart(self, env: dict[str, str] | None = None) -> GatehouseServer:
        """Stops the server and starts it again (new ports) on the same database and data
        directory, with ``env`` added to its environment."""
        self.stop(drop=False)
        self.env.update(env or {})
        return self.start()

    def log(self) -> str:
        """The end of the server's log."""
        path = self.tmp / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, *, drop: bool = True) -> None:
        """SIGTERM (graceful), SIGKILL after 10 s; then (``drop``) the database and files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not drop:
            return
        if self.database and self.postgres_admin_url:
            _psql(
                self.postgres_admin_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
            )
            self.database = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> GatehouseServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def secure_test_client(app: Any, **options: Any) -> TestClient:
    """A Starlette/FastAPI ``TestClient`` on ``https://testserver``.

    TestClient's default ``base_url`` is ``http://testserver``, and its cookie jar silently
    drops a ``Secure`` cookie received over http: the session cookie (Secure by default) is
    then never sent back, and every request after sign-in looks anonymous. ``options`` go to
    TestClient (e.g. ``headers=``, ``client=("203.0.113.7", 50000)``)."""
    from starlette.testclient import TestClient

    options.setdefault("base_url", "https://testserver")
    return TestClient(app, **options)


# The pytest plugin.


@pytest.fixture(scope="session")
def gatehouse_server_env() -> dict[str, str]:
    """The extra server environment of :func:`gatehouse_server`; override it in a conftest
    (keep ``**TEST_ENV`` for the test-friendly limits and hashing)."""
    return dict(TEST_ENV)


@pytest.fixture(scope="session")
def gatehouse_server(gatehouse_server_env: dict[str, str]) -> Iterator[GatehouseServer]:
    """A real gatehouse for the test session (SQLite, temporary directory, free ports),
    stopped and removed at the end."""
    server = GatehouseServer(env=dict(gatehouse_server_env))
    server.start()
    try:
        yield server
    finally:
        server.stop()
