"""Fixtures: the real gatehouse server per backend, and the example app as a browser sees it."""

from __future__ import annotations

import importlib.util
import ipaddress
import secrets
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatehouse_server import REPO, GatehouseServer  # noqa: E402

BACKENDS = ("sqlite", "postgres")
PASSWORD = "correct horse battery staple"


def _postgres_url_or_skip() -> str:
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("TEST_POSTGRES_URL is not set, and CI=true requires the PostgreSQL run")
    pytest.skip("PostgreSQL backend skipped: set TEST_POSTGRES_URL to run it")


def start_server(backend: str, env: dict[str, str] | None = None) -> GatehouseServer:
    """A fresh gatehouse on ``backend`` (skips or fails postgres without TEST_POSTGRES_URL).

    ``env`` replaces the default extra environment (generous rate limits)."""
    admin = _postgres_url_or_skip() if backend == "postgres" else None
    server = GatehouseServer(backend, postgres_admin_url=admin)
    if env is not None:
        server.env = dict(env)
    return server.start()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """One gatehouse per backend, shared by the session's tests (emails are unique per test)."""
    srv = start_server(request.param)
    yield srv
    srv.stop()


@pytest.fixture(params=BACKENDS)
def fresh_server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """A gatehouse owned by one test, which may stop it."""
    srv = start_server(request.param)
    yield srv
    srv.stop()


@pytest.fixture
def email() -> str:
    """A unique email for this test."""
    return f"reader-{uuid.uuid4().hex[:12]}@example.com"


def load_example() -> ModuleType:
    """examples/fastapi_rag/main.py, imported under a unique name."""
    path = REPO / "examples" / "fastapi_rag" / "main.py"
    spec = importlib.util.spec_from_file_location("fastapi_rag_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example() -> ModuleType:
    return load_example()


def unique_ip() -> str:
    """A random private address, so per-IP rate limits of one test never touch another."""
    return str(ipaddress.IPv4Address(0x0A000000 + secrets.randbelow(0xFFFFFE) + 1))


BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) RagTest/1.0"


def browser(
    app: object, ip: str | None = None, origin: str | None = "https://testserver"
) -> httpx.AsyncClient:
    """An httpx client talking to the ASGI app over https (so Secure cookies are kept), from
    ``ip`` (default: a unique one, as ``client.browser_ip``) with BROWSER_UA, keeping cookies
    like a browser. Every request carries ``Origin: <origin>`` as a page of the app's own
    origin would (``None``: no Origin, as a script outside a browser)."""
    ip = ip or unique_ip()
    transport = httpx.ASGITransport(app=app, client=(ip, 51234))  # type: ignore[arg-type]
    headers = {"user-agent": BROWSER_UA} | ({"origin": origin} if origin else {})
    client = httpx.AsyncClient(transport=transport, base_url="https://testserver", headers=headers)
    client.browser_ip = ip  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def web(server: GatehouseServer, example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the example app wired to the backend's gatehouse."""
    app = example.create_app(server.target, cookie_secure=True)
    async with browser(app) as client:
        yield client
    await app.state.gatehouse.client.close()
