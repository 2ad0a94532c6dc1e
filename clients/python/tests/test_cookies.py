"""The session cookie of the FastAPI integration against the real gatehouse (both backends):
its settings (SameSite, Domain, Path, name) as browsers receive them, the settings refused at
construction, a front end on another site, and sign-out while Gatehouse is down."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' local aliases.

import logging
from http.cookies import Morsel, SimpleCookie
from typing import Annotated, Any

import httpx
import pytest
from conftest import PASSWORD, browser
from fastapi import Depends, FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from gatehouse_server import GatehouseServer

from gatehouse import AsyncClient
from gatehouse.fastapi import CurrentUser, Gatehouse

SESSION = "gatehouse_session"
BOOK = "https://book.example.org"  # the book's front end, on another site than the API
EVIL = "https://evil.example"
API = "https://api.example.org"


def make_app(server: GatehouseServer, **options: Any) -> FastAPI:
    gatehouse = Gatehouse(AsyncClient(server.target), **({"cookie_secure": True} | options))
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    app.state.gatehouse = gatehouse

    @app.post("/api/notes")
    async def add_note(
        user: Annotated[CurrentUser, Depends(gatehouse.current_user)],
    ) -> dict[str, str]:
        return {"owner": user.user.email}

    return app


def cookie_of(response: httpx.Response, name: str) -> Morsel[str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    assert name in jar, response.headers.get_list("set-cookie")
    return jar[name]


async def sign_up(web: httpx.AsyncClient, email: str, **headers: str) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
    response = await web.post("/auth/sign-up", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response


# (settings, cookie name, expected attributes: SameSite, Path, Domain)
SETTINGS: list[tuple[dict[str, Any], str, tuple[str, str, str]]] = [
    ({}, SESSION, ("lax", "/", "")),
    ({"cookie_samesite": "strict"}, SESSION, ("strict", "/", "")),
    ({"cookie_samesite": "none"}, SESSION, ("none", "/", "")),
    ({"cookie_samesite": "Lax"}, SESSION, ("lax", "/", "")),
    ({"cookie_domain": "example.org"}, SESSION, ("lax", "/", "example.org")),
    ({"cookie_path": "/auth"}, SESSION, ("lax", "/auth", "")),
    ({"cookie_name": "book_session"}, "book_session", ("lax", "/", "")),
    (
        {"cookie_host_prefix": True, "cookie_samesite": "none"},
        "__Host-" + SESSION,
        ("none", "/", ""),
    ),
]


@pytest.mark.parametrize(
    ("settings", "name", "expected"), SETTINGS, ids=[str(s[0]) for s in SETTINGS]
)
async def test_cookie_settings_reach_the_browser(
    server: GatehouseServer,
    email: str,
    settings: dict[str, Any],
    name: str,
    expected: tuple[str, str, str],
) -> None:
    samesite, path, domain = expected
    app = make_app(server, **settings)
    try:
        async with browser(app, origin=API) as web:
            web.base_url = httpx.URL(API)  # a host in the Domain example.org
            signed_up = await sign_up(web, email)
            cookie = cookie_of(signed_up, name)
            assert cookie.value.startswith("gate_")
            assert cookie["samesite"].lower() == samesite
            assert cookie["path"] == path
            assert cookie["domain"] == domain
            assert cookie["secure"] is True and cookie["httponly"] is True
            assert int(cookie["max-age"]) > 0
            # The browser sends it back under that name, and the app reads it.
            session = await web.get("/auth/session")
            assert session.status_code == 200, session.text
            assert session.request.headers["cookie"].startswith(f"{name}=gate_")
            # Clearing it repeats Path, Domain and SameSite, or the browser keeps the cookie.
            signed_out = await web.post("/auth/sign-out")
            assert signed_out.status_code == 204
            cleared = cookie_of(signed_out, name)
            assert cleared.value == "" and int(cleared["max-age"]) == 0
            assert cleared["samesite"].lower() == samesite
            assert (cleared["path"], cleared["domain"]) == (path, domain)
            assert cleared["secure"] is True
            assert name not in web.cookies
    finally:
        await app.state.gatehouse.client.close()


def test_the_oauth_state_cookie_stays_lax() -> None:
    """The provider's redirect back is a cross-site navigation: Lax still sends the state
    cookie on it, Strict would not, so the state cookie keeps Lax whatever the setting."""
    for samesite in ("strict", "none"):
        gatehouse = Gatehouse("localhost:1", cookie_samesite=samesite)
        response = Response()
        gatehouse.set_oauth_state_cookie(response, "the-state", None, 60)
        [header] = response.headers.getlist("set-cookie")
        assert header.startswith("gatehouse_oauth_state=the-state;")
        assert "samesite=lax" in header.lower() and "secure" in header.lower()


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"cookie_samesite": "none", "cookie_secure": False}, "SameSite=None"),
        ({"cookie_samesite": "sometimes"}, "cookie_samesite"),
        ({"cookie_samesite": ""}, "cookie_samesite"),
        ({"cookie_host_prefix": True, "cookie_domain": "example.org"}, "cookie_domain"),
        ({"cookie_host_prefix": True, "cookie_path": "/auth"}, "cookie_path"),
        ({"cookie_host_prefix": True, "cookie_secure": False}, "cookie_secure"),
        (
            {"cookie_host_prefix": True, "cookie_samesite": "none", "cookie_domain": "a.org"},
            "cookie_domain",
        ),
        ({"cookie_name": "book session"}, "cookie_name"),
        ({"cookie_name": ""}, "cookie_name"),
        ({"cookie_path": "auth"}, "cookie_path"),
    ],
)
def test_contradictory_cookie_settings_are_refused(
    settings: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        Gatehouse("localhost:1", **settings)


async def test_front_end_on_another_site(server: GatehouseServer, email: str) -> None:
    """The README's recipe: CORS with credentials for the book's origin, SameSite=None, and
    the book's origin trusted by the cross-site check (any other site is still refused)."""
    app = make_app(server, cookie_samesite="none", trusted_origins=[BOOK])
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[BOOK],
        allow_credentials=True,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["content-type"],
    )
    cross_site = {"sec-fetch-site": "cross-site"}
    try:
        async with browser(app, origin=BOOK) as web:
            preflight = await web.options(
                "/auth/sign-up",
                headers={
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type",
                },
            )
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == BOOK
            assert preflight.headers["access-control-allow-credentials"] == "true"

            signed_up = await sign_up(web, email, **cross_site)
            assert signed_up.headers["access-control-allow-origin"] == BOOK
            assert signed_up.headers["access-control-allow-credentials"] == "true"
            cookie = cookie_of(signed_up, SESSION)
            assert cookie["samesite"].lower() == "none" and cookie["secure"] is True

            session = await web.get("/auth/session", headers=cross_site)
            assert session.status_code == 200, session.text
            assert session.headers["access-control-allow-origin"] == BOOK
            note = await web.post("/api/notes", headers=cross_site)
            assert note.status_code == 200 and note.json() == {"owner": email}

            # Another site gets no CORS grant and its forged POST is refused.
            evil_preflight = await web.options(
                "/api/notes",
                headers={"origin": EVIL, "access-control-request-method": "POST"},
            )
            assert evil_preflight.status_code == 400
            assert "access-control-allow-origin" not in evil_preflight.headers
            forged = await web.post("/api/notes", headers={"origin": EVIL, **cross_site})
            assert forged.status_code == 403, forged.text
            assert "cross-site request refused" in forged.json()["detail"]
            assert "access-control-allow-origin" not in forged.headers
    finally:
        await app.state.gatehouse.client.close()


async def test_example_app_serves_a_front_end_on_another_site(
    server: GatehouseServer, example: Any, email: str
) -> None:
    app = example.create_app(
        server.target, cookie_secure=True, trusted_origins=[BOOK + "/"], cookie_samesite="none"
    )
    cross_site = {"sec-fetch-site": "cross-site"}
    try:
        async with browser(app, origin=BOOK) as web:
            preflight = await web.options(
                "/api/v1/profile", headers={"access-control-request-method": "POST"}
            )
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == BOOK
            assert preflight.headers["access-control-allow-credentials"] == "true"
            signed_up = await sign_up(web, email, **cross_site)
            assert cookie_of(signed_up, SESSION)["samesite"].lower() == "none"
            me = await web.get("/api/v1/me", headers=cross_site)
            assert me.status_code == 200 and me.json()["email"] == email
            assert me.headers["access-control-allow-origin"] == BOOK
            updated = await web.post(
                "/api/v1/profile", json={"role": "teacher"}, headers=cross_site
            )
            assert updated.status_code == 200, updated.text
            forged = await web.post(
                "/api/v1/profile", json={"role": "x"}, headers={"origin": EVIL, **cross_site}
            )
            assert forged.status_code == 403, forged.text
    finally:
        await app.state.gatehouse.client.close()


async def test_sign_out_while_gatehouse_is_down_still_clears_the_cookie(
    fresh_server: GatehouseServer, email: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fresh_server)
    try:
        async with browser(app) as web:
            await sign_up(web, email)
            token = web.cookies[SESSION]
            fresh_server.stop(drop=False)
            # Other routes answer 503 and keep the cookie: the reader is still signed in
            # once Gatehouse is back.
            down = await web.get("/auth/session")
            assert down.status_code == 503, down.text
            assert "set-cookie" not in down.headers

            with caplog.at_level(logging.WARNING, logger="gatehouse.fastapi"):
                signed_out = await web.post("/auth/sign-out")
            assert signed_out.status_code == 204, signed_out.text
            cleared = cookie_of(signed_out, SESSION)
            assert cleared.value == "" and int(cleared["max-age"]) == 0
            assert cleared["path"] == "/" and cleared["secure"] is True
            assert SESSION not in web.cookies
            [warning] = [r for r in caplog.records if r.name == "gatehouse.fastapi"]
            assert warning.levelno == logging.WARNING
            assert "until it expires" in warning.getMessage()
            assert token not in warning.getMessage()

            # A script signing out with its bearer token gets the same answer.
            bearer = await web.post("/auth/sign-out", headers={"authorization": f"Bearer {token}"})
            assert bearer.status_code == 204, bearer.text
    finally:
        await app.state.gatehouse.client.close()
