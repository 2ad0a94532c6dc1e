"""Cross-site request forgery defence of the FastAPI integration and the ``__Host-`` cookie,
against the real gatehouse (both backends).

A cookie-authenticated state-changing request is refused (403) unless the browser says it is
same-origin (``Sec-Fetch-Site``) or its ``Origin`` is the app's own or a trusted one; a Bearer
request is not subject to it (a page on another site cannot attach that header)."""

# No `from __future__ import annotations`: FastAPI must resolve add_note's local alias.

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from conftest import PASSWORD, browser
from fastapi import Depends, FastAPI
from gatehouse_server import GatehouseServer

from gatehouse import AsyncClient
from gatehouse.fastapi import CurrentUser, Gatehouse

SESSION = "gatehouse_session"
SELF = "https://testserver"
EVIL = "https://evil.example"
BOOK = "https://book.example.org"  # the front end on another origin, trusted in make_app


def make_app(server: GatehouseServer, **options: Any) -> FastAPI:
    gatehouse = Gatehouse(
        AsyncClient(server.target),
        cookie_secure=True,
        **({"trusted_origins": [BOOK + "/"]} | options),
    )
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    app.state.gatehouse = gatehouse

    @app.post("/api/notes")
    async def add_note(
        user: Annotated[CurrentUser, Depends(gatehouse.current_user)],
    ) -> dict[str, str]:
        """An app route of its own that changes state for the cookie's user."""
        return {"owner": user.id}

    return app


@pytest.fixture
async def app(server: GatehouseServer) -> AsyncIterator[FastAPI]:
    app = make_app(server)
    yield app
    await app.state.gatehouse.client.close()


@pytest.fixture
async def web(app: FastAPI, email: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the app (its pages send ``Origin: https://testserver``), signed up."""
    async with browser(app) as client:
        body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
        response = await client.post("/auth/sign-up", json=body)
        assert response.status_code == 201, response.text
        assert client.cookies.get(SESSION)
        yield client


# (method, path, json body) of cookie-authenticated state-changing routes.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/auth/sign-out", None),
    ("POST", "/auth/sessions/revoke-others", None),
    ("POST", "/auth/send-verification", None),
    ("PATCH", "/auth/profile", {"role": "teacher"}),
    ("POST", "/auth/change-password", {"current_password": PASSWORD, "new_password": "x" * 20}),
    ("POST", "/auth/delete-account", {"password": PASSWORD}),
    ("POST", "/auth/access-token", {"audience": "library"}),
    ("POST", "/auth/consents", {"purpose": "learner_background", "granted": True}),
    ("POST", "/api/notes", None),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ROUTES]


async def call(
    web: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None, **headers: str
) -> httpx.Response:
    return await web.request(method, path, json=body, headers=headers)


async def still_signed_in(web: httpx.AsyncClient) -> None:
    session = await web.get("/auth/session")
    assert session.status_code == 200, "the refused request must not have touched the session"


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert "cross-site request refused" in detail, detail
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
async def test_cross_origin_cookie_request_is_refused(
    web: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await call(web, method, path, body, origin=EVIL)
    assert_refused(response)
    assert EVIL in response.json()["detail"]
    await still_signed_in(web)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES[:4], ids=ROUTE_IDS[:4])
async def test_sec_fetch_site_cross_or_same_site_is_refused(
    web: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None, site: str
) -> None:
    # Even with an Origin that looks like the app's own: the browser's word wins.
    for origin in (SELF, "https://www.testserver"):
        response = await call(web, method, path, body, origin=origin, **{"sec-fetch-site": site})
        assert_refused(response)
    response = await call(web, method, path, body, **{"sec-fetch-site": site})
    assert_refused(response)
    await still_signed_in(web)


async def test_cookie_request_without_origin_or_sec_fetch_site_is_refused(
    web: httpx.AsyncClient,
) -> None:
    web.headers.pop("origin")
    for method, path, body in ROUTES:
        response = await call(web, method, path, body)
        assert_refused(response)
        assert "Origin" in response.json()["detail"]
    # A null Origin (sandboxed frame, privacy redirect) is not trusted either.
    assert_refused(await call(web, "POST", "/auth/sign-out", None, origin="null"))
    await still_signed_in(web)


async def test_same_origin_cookie_requests_are_accepted(web: httpx.AsyncClient) -> None:
    profile = await call(web, "PATCH", "/auth/profile", {"role": "teacher"})  # Origin: SELF
    assert profile.status_code == 200, profile.text
    assert profile.json()["role"] == "teacher"
    note = await call(web, "POST", "/api/notes", None, **{"sec-fetch-site": "same-origin"})
    assert note.status_code == 200, note.text
    web.headers.pop("origin")
    for site in ("same-origin", "none"):  # a browser that sends no Origin but says so
        note = await call(web, "POST", "/api/notes", None, **{"sec-fetch-site": site})
        assert note.status_code == 200, (site, note.text)
    revoked = await call(web, "POST", "/auth/sessions/revoke-others", None, origin=SELF)
    assert revoked.status_code == 200, revoked.text
    signed_out = await call(web, "POST", "/auth/sign-out", None, origin=SELF)
    assert signed_out.status_code == 204, signed_out.text
    assert (await web.get("/auth/session")).status_code == 401


async def test_trusted_second_origin_is_accepted(web: httpx.AsyncClient) -> None:
    for headers in ({"origin": BOOK}, {"origin": BOOK, "sec-fetch-site": "cross-site"}):
        profile = await call(web, "PATCH", "/auth/profile", {"role": "teacher"}, **headers)
        assert profile.status_code == 200, (headers, profile.text)
        note = await call(web, "POST", "/api/notes", None, **headers)
        assert note.status_code == 200, (headers, note.text)
    # Only the exact origin: another scheme or port is another origin.
    for other in ("http://book.example.org", "https://book.example.org:8443"):
        assert_refused(await call(web, "POST", "/api/notes", None, origin=other))
    signed_out = await call(web, "POST", "/auth/sign-out", None, origin=BOOK)
    assert signed_out.status_code == 204, signed_out.text


async def test_bearer_request_from_anywhere_is_accepted(app: FastAPI, email: str) -> None:
    async with browser(app) as first:
        body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
        assert (await first.post("/auth/sign-up", json=body)).status_code == 201
        token = first.cookies[SESSION]
    async with browser(app, origin=None) as script:
        for extra in ({}, {"origin": EVIL}, {"origin": EVIL, "sec-fetch-site": "cross-site"}):
            headers = {"authorization": f"Bearer {token}", **extra}
            profile = await script.patch("/auth/profile", json={"role": "teacher"}, headers=headers)
            assert profile.status_code == 200, (extra, profile.text)
            note = await script.post("/api/notes", headers=headers)
            assert note.status_code == 200, (extra, note.text)
        signed_out = await script.post(
            "/auth/sign-out", headers={"authorization": f"Bearer {token}", "origin": EVIL}
        )
        assert signed_out.status_code == 204, signed_out.text
        gone = await script.get("/auth/session", headers={"authorization": f"Bearer {token}"})
        assert gone.status_code == 401


async def test_cross_origin_sign_in_is_refused_but_a_script_without_cookie_may(
    app: FastAPI, email: str
) -> None:
    # Login CSRF: a page elsewhere must not sign the browser into the attacker's account.
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
    async with browser(app, origin=None) as script:
        assert (await script.post("/auth/sign-up", json=body)).status_code == 201
        script.cookies.clear()
        credentials = {"email": email, "password": PASSWORD}
        for headers in ({"origin": EVIL}, {"sec-fetch-site": "cross-site"}):
            response = await script.post("/auth/sign-in", json=credentials, headers=headers)
            assert_refused(response)
        signed_in = await script.post("/auth/sign-in", json=credentials)
        assert signed_in.status_code == 200, signed_in.text


async def test_gets_are_not_subject_to_the_check(web: httpx.AsyncClient) -> None:
    for path in ("/auth/session", "/auth/profile", "/auth/sessions", "/auth/consents"):
        response = await web.get(path, headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
        assert response.status_code == 200, (path, response.text)


async def test_host_prefixed_cookie(server: GatehouseServer, email: str) -> None:
    app = make_app(server, cookie_host_prefix=True)
    try:
        async with browser(app) as web:
            body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
            response = await web.post("/auth/sign-up", json=body)
            assert response.status_code == 201, response.text
            [header] = response.headers.get_list("set-cookie")
            name, _, _ = header.partition("=")
            assert name == "__Host-" + SESSION
            attributes = [a.strip().lower() for a in header.split(";")[1:]]
            assert "secure" in attributes
            assert "path=/" in attributes
            assert not any(a.startswith("domain") for a in attributes)
            assert (await web.get("/auth/session")).status_code == 200
            assert "__Host-" + SESSION in web.cookies
            # The OAuth state cookie takes the prefix too.
            assert app.state.gatehouse.oauth_state_cookie_name == "__Host-gatehouse_oauth_state"
            signed_out = await web.post("/auth/sign-out")
            assert signed_out.status_code == 204
            [cleared] = signed_out.headers.get_list("set-cookie")
            assert cleared.startswith("__Host-" + SESSION + "=")
            assert "path=/" in cleared.lower() and "secure" in cleared.lower()
    finally:
        await app.state.gatehouse.client.close()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"cookie_secure": False}, "cookie_secure"),
        ({"cookie_domain": "example.com"}, "cookie_domain"),
        ({"cookie_path": "/auth"}, "cookie_path"),
        # A __Host- name given directly is held to the same rules.
        (
            {"cookie_host_prefix": False, "cookie_name": "__Host-sid", "cookie_path": "/a"},
            "cookie_path",
        ),
    ],
)
def test_host_prefix_refuses_contradictory_config(options: dict[str, Any], complaint: str) -> None:
    settings = {"cookie_host_prefix": True} | options
    with pytest.raises(ValueError, match=complaint) as refused:
        Gatehouse("localhost:1", **settings)
    assert "__Host-" in str(refused.value)


@pytest.mark.parametrize(
    "origin",
    [
        "book.example.org",
        "https://book.example.org/path",
        "ftp://book.example.org",
        "*",
        "https://",
        "https://*.example.org",
    ],
)
def test_malformed_trusted_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="trusted_origins"):
        Gatehouse("localhost:1", trusted_origins=[origin])


async def test_example_app_takes_trusted_origins(
    server: GatehouseServer, example: Any, email: str
) -> None:
    app = example.create_app(server.target, cookie_secure=True, trusted_origins=[BOOK])
    try:
        async with browser(app, origin=BOOK) as web:
            body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
            assert (await web.post("/auth/sign-up", json=body)).status_code == 201
            updated = await web.post("/api/v1/profile", json={"role": "teacher"})
            assert updated.status_code == 200, updated.text
            assert_refused(await web.post("/api/v1/profile", json={}, headers={"origin": EVIL}))
            query = {"question": "What is a humanoid?"}
            assert_refused(await web.post("/api/v1/query", json=query, headers={"origin": EVIL}))
    finally:
        await app.state.gatehouse.client.close()
