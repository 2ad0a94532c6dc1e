"""gatehouse.testing: the pytest plugin's ``gatehouse_server`` fixture (the real binary, free
ports, generous limits, cheap hashing, a readable outbox, torn down at the end), the binary
lookup, and ``secure_test_client`` keeping the Secure session cookie that TestClient's default
``http://testserver`` drops."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' local aliases.

import uuid
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import pytest
from conftest import PASSWORD
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

import gatehouse.testing
from gatehouse import Client, Profile
from gatehouse.fastapi import CurrentUser, Gatehouse
from gatehouse.testing import (
    TEST_ENV,
    GatehouseBinaryNotFound,
    GatehouseServer,
    gatehouse_binary,
    secure_test_client,
)

VERIFY_SUBJECT = "Confirm your email address"


def test_plugin_is_registered_by_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("gatehouse") == "gatehouse.testing"


def test_fixture_server_is_test_friendly(gatehouse_server: GatehouseServer) -> None:
    assert gatehouse_server.backend == "sqlite"
    assert gatehouse_server.process is not None and gatehouse_server.process.poll() is None
    assert gatehouse_server.port != 0 and gatehouse_server.http_port != gatehouse_server.port
    assert gatehouse_server.tmp.is_dir()
    assert gatehouse_server.env["GATEHOUSE_ARGON2_MEMORY_KIB"] == "1024"
    assert gatehouse_server.env["GATEHOUSE_RATE_SIGN_UP_PER_IP"] == "10000/1m"
    run = uuid.uuid4().hex[:8]
    with Client(gatehouse_server.target) as client:
        # Twelve sign-ups from 127.0.0.1: past the default per-IP limit of ten.
        for i in range(12):
            address = f"plugin-{run}-{i}@example.com"
            auth = client.sign_up(address, PASSWORD, f"Reader {i}", Profile(consent_given=True))
            assert auth.user.email == address
        token = gatehouse_server.wait_for_link(f"plugin-{run}-11@example.com", VERIFY_SUBJECT)
        assert token.startswith("gatelink_")
        client.verify_email(token)


def test_server_context_manager_tears_down() -> None:
    with GatehouseServer() as server:
        assert server.env == dict(TEST_ENV)
        process, tmp = server.process, server.tmp
        assert process is not None and process.poll() is None
        with Client(server.target) as client:
            assert client.get_jwks()["keys"]
    assert process.poll() is not None  # stopped
    assert not tmp.exists()  # and its database and data directory removed


def test_missing_binary_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEHOUSE_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(GatehouseBinaryNotFound, match="GATEHOUSE_BIN=.*no such file"):
        gatehouse_binary()
    monkeypatch.delenv("GATEHOUSE_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # Outside a checkout the package's own location is searched last: hide it too.
    monkeypatch.setattr(gatehouse.testing, "__file__", str(tmp_path / "testing.py"))
    with pytest.raises(GatehouseBinaryNotFound, match="set GATEHOUSE_BIN"):
        gatehouse_binary()
    binary = tmp_path / "gatehouse"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert gatehouse_binary() == binary  # found on PATH


def test_secure_test_client_keeps_the_secure_cookie(
    gatehouse_server: GatehouseServer,
) -> None:
    gatehouse = Gatehouse(gatehouse_server.target)  # cookie_secure=True, the default
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    Reader = Annotated[CurrentUser | None, Depends(gatehouse.optional_user)]

    @app.get("/whoami")
    async def whoami(reader: Reader) -> dict[str, str | None]:
        return {"email": reader.user.email if reader else None}

    def sign_up_then_whoami(web: TestClient) -> str | None:
        address = f"tc-{uuid.uuid4().hex[:12]}@example.com"
        answer = web.post(
            "/auth/sign-up",
            json={"email": address, "password": PASSWORD, "name": "Ada"},
            headers={"origin": str(web.base_url).rstrip("/")},
        )
        assert answer.status_code == 201, answer.text
        assert "secure" in answer.headers["set-cookie"].lower()
        email: str | None = web.get("/whoami").json()["email"]
        assert email in (address, None)
        return email

    with secure_test_client(app) as web:
        assert str(web.base_url) == "https://testserver"
        assert sign_up_then_whoami(web) is not None
    with TestClient(app) as plain:  # http://testserver: the Secure cookie is dropped
        assert sign_up_then_whoami(plain) is None
