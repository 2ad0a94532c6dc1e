"""Provider sign-in through the FastAPI router (``/auth/oauth/{provider}/start`` and
``/callback``) against the real gatehouse (both backends), with no provider configured: the
state cookie checks, and the server's refusals mapped like every other endpoint's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import browser
from fastapi import FastAPI
from gatehouse_server import GatehouseServer

from gatehouse import AsyncClient
from gatehouse.fastapi import Gatehouse

SESSION = "gatehouse_session"
STATE = "gatehouse_oauth_state"
BASE = "https://app.example.com"


def make_app(server: GatehouseServer, **options: Any) -> FastAPI:
    gatehouse = Gatehouse(
        AsyncClient(server.target), cookie_secure=True, **({"oauth_base_url": BASE} | options)
    )
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    app.state.gatehouse = gatehouse
    return app


@pytest.fixture
async def app(server: GatehouseServer) -> AsyncIterator[FastAPI]:
    app = make_app(server)
    yield app
    await app.state.gatehouse.client.close()


@pytest.fixture
async def web(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        yield client


@pytest.fixture
def complete_calls(app: FastAPI) -> list[tuple[Any, ...]]:
    """Records every CompleteOAuth the router makes (then makes it)."""
    client = app.state.gatehouse.client
    calls: list[tuple[Any, ...]] = []
    original = client.complete_o_auth

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await original(*args, **kwargs)

    client.complete_o_auth = spy
    return calls


def set_cookies(response: httpx.Response) -> str:
    return "\n".join(response.headers.get_list("set-cookie"))


def redirect_uri(provider: str) -> str:
    return f"{BASE}/auth/oauth/{provider}/callback"


async def test_start_without_configured_provider_maps_the_server_error(
    web: httpx.AsyncClient,
) -> None:
    response = await web.get("/auth/oauth/google/start", params={"redirect_to": "/books"})
    # Gatehouse has no Google client id: INVALID_ARGUMENT on the provider, 422 here, located
    # where FastAPI's own 422 would put it: the provider is a path parameter.
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "provider"], error
    assert error["msg"] and error["type"] == "gatehouse.invalid_argument"
    assert STATE not in set_cookies(response)
    assert SESSION not in set_cookies(response)


async def test_start_for_a_provider_without_callback_url_is_404(server: GatehouseServer) -> None:
    app = make_app(server, oauth_base_url=None, oauth_redirect_uris={"github": redirect_uri("github")})
    try:
        async with browser(app) as web:
            response = await web.get("/auth/oauth/google/start")
            assert response.status_code == 404, response.text
            # The mapped provider reaches Gatehouse, which has no GitHub client: 422.
            refused = await web.get("/auth/oauth/github/start")
            assert refused.status_code == 422, refused.text
            assert [e["loc"] for e in refused.json()["detail"]] == [["path", "provider"]]
    finally:
        await app.state.gatehouse.client.close()


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "books", "/a\r\nb", ""],
)
async def test_start_refuses_off_site_redirect_to(web: httpx.AsyncClient, target: str) -> None:
    response = await web.get("/auth/oauth/google/start", params={"redirect_to": target})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "redirect_to"]
    assert "set-cookie" not in response.headers


async def test_callback_without_state_cookie_is_400(
    web: httpx.AsyncClient, complete_calls: list[tuple[Any, ...]]
) -> None:
    response = await web.get("/auth/oauth/google/callback", params={"code": "c", "state": "s"})
    assert response.status_code == 400, response.text
    assert "set-cookie" not in response.headers
    assert complete_calls == [], "Gatehouse must not be asked without the browser's state"


@pytest.mark.parametrize("query_state", ["another-state", "", "the-state-x"])
async def test_callback_with_mismatched_state_is_400_and_sets_no_session(
    web: httpx.AsyncClient, complete_calls: list[tuple[Any, ...]], query_state: str
) -> None:
    response = await web.get(
        "/auth/oauth/google/callback",
        params={"code": "c", "state": query_state},
        headers={"cookie": f"{STATE}=the-state"},
    )
    assert response.status_code == 400, response.text
    assert SESSION not in set_cookies(response)
    assert complete_calls == []


async def test_callback_with_matching_state_is_refused_by_gatehouse(
    web: httpx.AsyncClient, complete_calls: list[tuple[Any, ...]]
) -> None:
    """A matching but unknown state (and no configured provider) reaches Gatehouse, which
    refuses it: mapped, no session, and the spent state cookie is cleared."""
    response = await web.get(
        "/auth/oauth/google/callback",
        params={"code": "c", "state": "the-state"},
        headers={"cookie": f"{STATE}=the-state"},
    )
    assert response.status_code == 422, response.text
    assert complete_calls == [("google", "c", "the-state", redirect_uri("google"))]
    cookies = set_cookies(response)
    assert SESSION not in cookies
    assert f'{STATE}=""' in cookies and "Max-Age=0" in cookies


async def test_callback_with_provider_error_clears_state(
    web: httpx.AsyncClient, complete_calls: list[tuple[Any, ...]]
) -> None:
    response = await web.get(
        "/auth/oauth/google/callback",
        params={"error": "access_denied", "state": "the-state"},
        headers={"cookie": f"{STATE}=the-state"},
    )
    assert response.status_code == 400, response.text
    assert "access_denied" in response.json()["detail"]
    assert SESSION not in set_cookies(response)
    assert f'{STATE}=""' in set_cookies(response)
    assert complete_calls == []
