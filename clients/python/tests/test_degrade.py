"""``degrade_public_to_anonymous``: with Gatehouse down (the real server stopped) or not
answering in time, public routes on the optional dependency serve the reader as anonymous,
keep the cookie, log a warning without the token and count it; protected routes stay 503/504."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' local aliases.

import logging
import socket
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from conftest import PASSWORD, browser
from fastapi import Depends, FastAPI
from gatehouse_server import GatehouseServer

from gatehouse import AsyncClient
from gatehouse.fastapi import CurrentUser, Gatehouse

SESSION = "gatehouse_session"


def make_app(target: str, **options: Any) -> FastAPI:
    gatehouse = Gatehouse(AsyncClient(target, timeout=1.0), **options)
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    app.state.gatehouse = gatehouse
    Reader = Annotated[CurrentUser | None, Depends(gatehouse.optional_user)]
    Verified = Annotated[CurrentUser | None, Depends(gatehouse.current_user(optional=True))]
    User = Annotated[CurrentUser, Depends(gatehouse.current_user)]

    @app.get("/public")
    async def public(reader: Reader) -> dict[str, str | None]:
        return {"reader": reader.user.name if reader else None}

    @app.get("/public2")
    async def public2(reader: Verified) -> dict[str, str | None]:
        return {"reader": reader.user.name if reader else None}

    @app.get("/me")
    async def me(user: User) -> dict[str, str]:
        return {"name": user.user.name}

    return app


async def test_down_gatehouse_degrades_public_routes_only(
    fresh_server: GatehouseServer, email: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fresh_server.target, degrade_public_to_anonymous=True)
    gatehouse: Gatehouse = app.state.gatehouse
    async with browser(app) as web:
        signed_up = await web.post(
            "/auth/sign-up", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert signed_up.status_code == 201, signed_up.text
        token = web.cookies[SESSION]
        assert (await web.get("/public")).json() == {"reader": "Ada"}
        assert gatehouse.degraded_requests == 0

        fresh_server.stop(drop=False)
        caplog.set_level(logging.WARNING, logger="gatehouse.fastapi")
        for path in ("/public", "/public2"):
            answer = await web.get(path)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"reader": None}
            assert "set-cookie" not in answer.headers  # the cookie is not cleared
        assert web.cookies[SESSION] == token
        assert gatehouse.degraded_requests == 2
        warnings = [r for r in caplog.records if "served as anonymous" in r.getMessage()]
        assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
        assert all(token not in r.getMessage() for r in caplog.records)

        protected = await web.get("/me")
        assert protected.status_code == 503
        assert protected.headers["retry-after"] == "1"
        assert "set-cookie" not in protected.headers
        session = await web.get("/auth/session")
        assert session.status_code == 503
        assert gatehouse.degraded_requests == 2  # protected routes are not counted
    await gatehouse.client.close()


async def test_without_the_option_public_routes_stay_503(
    fresh_server: GatehouseServer, email: str
) -> None:
    app = make_app(fresh_server.target)
    async with browser(app) as web:
        signed_up = await web.post(
            "/auth/sign-up", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert signed_up.status_code == 201
        fresh_server.stop(drop=False)
        answer = await web.get("/public")
        assert answer.status_code == 503
        assert app.state.gatehouse.degraded_requests == 0
        # Anonymous callers never need Gatehouse: 200 either way.
        web.cookies.clear()
        assert (await web.get("/public")).json() == {"reader": None}
    await app.state.gatehouse.client.close()


@pytest.fixture
def silent_target() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: every call times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_timeout_degrades_public_routes_and_protected_ones_are_504(
    silent_target: str,
) -> None:
    app = make_app(silent_target, degrade_public_to_anonymous=True)
    async with browser(app) as web:
        cookie = {"cookie": f"{SESSION}=gate_{'a' * 43}"}
        answer = await web.get("/public", headers=cookie)
        assert answer.status_code == 200
        assert answer.json() == {"reader": None}
        assert "set-cookie" not in answer.headers
        assert app.state.gatehouse.degraded_requests == 1
        assert (await web.get("/me", headers=cookie)).status_code == 504
    await app.state.gatehouse.client.close()
