"""The example RAG app driven as a browser would, against the real gatehouse (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from http.cookies import SimpleCookie
from types import ModuleType

import httpx
import pytest
from conftest import BACKENDS, BROWSER_UA, PASSWORD, browser, start_server
from gatehouse_server import GENEROUS_RATE_LIMITS, SERVICE_API_KEY, GatehouseServer

from gatehouse import Client

COOKIE = "gatehouse_session"
PROFILE = {
    "consent_given": True,
    "programming_level": "advanced",
    "programming_languages": ["python", "rust"],
    "learning_style": "code_first",
    "role": "student",
}


def set_cookie(response: httpx.Response) -> SimpleCookie:
    """The Set-Cookie headers of a response, parsed."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def sign_up(web: httpx.AsyncClient, email: str, **extra: object) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader", **extra}
    return await web.post("/auth/sign-up", json=body)


async def test_sign_up_with_profile_sets_session_cookie(web: httpx.AsyncClient, email: str) -> None:
    response = await sign_up(web, email, profile=PROFILE)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["email"] == email
    assert body["session_token"] is None, "the token must only travel in the HttpOnly cookie"

    cookie = set_cookie(response)[COOKIE]
    assert cookie.value.startswith("gate_")
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    # Max-Age follows Session.expires_at: the 7-day idle deadline of a fresh session.
    max_age = int(cookie["max-age"])
    assert (
        timedelta(days=7) - timedelta(minutes=5) < timedelta(seconds=max_age) <= timedelta(days=7)
    )

    profile = (await web.get("/auth/profile")).json()
    assert profile["programming_level"] == "advanced"
    assert profile["programming_languages"] == ["python", "rust"]
    assert profile["learning_style"] == "code_first"
    assert profile["consent_given"] is True


async def test_session_and_profile_with_cookie_and_with_bearer(
    web: httpx.AsyncClient, example: ModuleType, server: GatehouseServer, email: str
) -> None:
    assert (await sign_up(web, email)).status_code == 201
    token = web.cookies[COOKIE]

    session = await web.get("/auth/session")
    assert session.status_code == 200
    assert session.json()["user"]["email"] == email
    assert session.json()["session"]["current"] is True
    assert set_cookie(session)[COOKIE].value == token, "a cookie session gets its cookie renewed"

    updated = await web.post("/api/v1/profile", json={"role": "teacher", "interests": ["vla"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["role"] == "teacher"
    assert (await web.get("/api/v1/profile")).json()["interests"] == ["vla"]

    app = example.create_app(server.target)
    async with browser(app) as api:  # no cookies: a script with a bearer token
        bearer = {"authorization": f"Bearer {token}"}
        for path in ("/auth/session", "/api/v1/profile", "/auth/profile"):
            response = await api.get(path, headers=bearer)
            assert response.status_code == 200, (path, response.text)
            assert COOKIE not in set_cookie(response)
        patched = await api.patch("/auth/profile", json={"role": None}, headers=bearer)
        assert patched.status_code == 200
        assert patched.json()["role"] == "", "null clears the field"
        anonymous = await api.get("/api/v1/profile")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        forged = await api.get("/auth/session", headers={"authorization": "Bearer gate_forged"})
        assert forged.status_code == 401
    await app.state.gatehouse.client.close()


async def test_rag_is_public_and_personalises_when_signed_in(
    web: httpx.AsyncClient, email: str
) -> None:
    question = {"question": "How does inverse kinematics work for a humanoid robot?"}
    anonymous = await web.post("/api/v1/query", json=question)
    assert anonymous.status_code == 200
    assert anonymous.json()["personalized"] is False
    assert anonymous.json()["sources"][0] == "Chapter 3: Kinematics"
    assert "advanced programmer" not in anonymous.json()["answer"]

    assert (await sign_up(web, email, profile=PROFILE)).status_code == 201
    personal = await web.post("/api/v1/query", json=question)
    assert personal.status_code == 200
    assert personal.json()["personalized"] is True
    assert "advanced programmer" in personal.json()["answer"]
    assert "code first" in personal.json()["answer"]
    assert "python, rust" in personal.json()["answer"]

    select = await web.post("/api/v1/select", json={"selected_text": "A ROS 2 node publishes"})
    assert select.status_code == 200
    assert select.json()["personalized"] is True
    assert select.json()["sources"] == ["Chapter 2: ROS 2 nodes"]

    # A stale cookie is treated as anonymous on public routes, not as an error.
    web.cookies.clear()
    stale = await web.post(
        "/api/v1/select",
        json={"selected_text": "kinematics"},
        headers={"cookie": f"{COOKIE}=gate_stale"},
    )
    assert stale.status_code == 200
    assert stale.json()["personalized"] is False


async def test_me_and_the_verified_only_feedback(
    web: httpx.AsyncClient, server: GatehouseServer, example: ModuleType, email: str
) -> None:
    assert (await sign_up(web, email)).status_code == 201
    me = await web.get("/api/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email and me.json()["email_verified"] is False

    feedback = {"comment": "Chapter 3 needs a diagram of the joint angles."}
    refused = await web.post("/api/v1/feedback", json=feedback)
    assert refused.status_code == 403, refused.text
    assert "not verified" in refused.json()["detail"]
    link = server.wait_for_link(email, "Confirm your email address")
    assert (await web.post("/auth/verify-email", json={"token": link})).status_code == 200
    accepted = await web.post("/api/v1/feedback", json=feedback)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"received": True, "reply_to": email}
    assert (await web.get("/api/v1/me")).json()["email_verified"] is True

    web.cookies.clear()
    assert (await web.get("/api/v1/me")).status_code == 401
    assert (await web.post("/api/v1/feedback", json=feedback)).status_code == 401
    paths = example.create_app(server.target).openapi()["paths"]
    me_schema = paths["/api/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]
    assert me_schema["schema"] == {"$ref": "#/components/schemas/UserOut"}


async def test_sign_out_clears_cookie_and_revokes_token(web: httpx.AsyncClient, email: str) -> None:
    assert (await sign_up(web, email)).status_code == 201
    token = web.cookies[COOKIE]

    out = await web.post("/auth/sign-out")
    assert out.status_code == 204
    cleared = set_cookie(out)[COOKIE]
    assert cleared.value == "" and int(cleared["max-age"]) == 0
    assert COOKIE not in web.cookies

    assert (await web.get("/auth/session")).status_code == 401
    old = await web.get("/auth/session", headers={"authorization": f"Bearer {token}"})
    assert old.status_code == 401
    again = await web.post("/auth/sign-out", headers={"authorization": f"Bearer {token}"})
    assert again.status_code == 204, "signing out twice is harmless"


async def test_sign_in_forwards_browser_ip_and_user_agent(
    web: httpx.AsyncClient, email: str
) -> None:
    assert (await sign_up(web, email)).status_code == 201
    signed_in = await web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200
    browser_ip = web.browser_ip  # type: ignore[attr-defined]
    assert signed_in.json()["session"]["ip_address"] == browser_ip
    assert signed_in.json()["session"]["user_agent"] == BROWSER_UA

    sessions = (await web.get("/auth/sessions")).json()["sessions"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions].count(True) == 1
    assert {s["ip_address"] for s in sessions} == {browser_ip}

    revoked = await web.post("/auth/sessions/revoke-others")
    assert revoked.json() == {"revoked_count": 1}
    assert len((await web.get("/auth/sessions")).json()["sessions"]) == 1


async def test_change_password_and_delete_account(web: httpx.AsyncClient, email: str) -> None:
    assert (await sign_up(web, email)).status_code == 201
    new_password = "an entirely different passphrase"
    wrong = await web.post(
        "/auth/change-password",
        json={"current_password": "not my password at all", "new_password": new_password},
    )
    # Gatehouse reports a wrong current password as a field error of the form.
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "current_password"]
    changed = await web.post(
        "/auth/change-password",
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert changed.status_code == 200, changed.text
    old = await web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    assert (
        await web.post("/auth/sign-in", json={"email": email, "password": new_password})
    ).status_code == 200

    deleted = await web.post("/auth/delete-account", json={"password": new_password})
    assert deleted.status_code == 204
    assert (await web.get("/auth/session")).status_code == 401
    assert (
        await web.post("/auth/sign-in", json={"email": email, "password": new_password})
    ).status_code == 401


async def test_duplicate_sign_up_is_409(web: httpx.AsyncClient, email: str) -> None:
    assert (await sign_up(web, email)).status_code == 201
    duplicate = await sign_up(web, email.upper())
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]


async def test_bad_input_is_422_with_field_errors(web: httpx.AsyncClient, email: str) -> None:
    bad = await web.post(
        "/auth/sign-up",
        json={
            "email": "not-an-email",
            "password": "short",
            "name": "",
            "profile": {"role": "x" * 101},
        },
    )
    assert bad.status_code == 422
    locations = {tuple(error["loc"]) for error in bad.json()["detail"]}
    assert ("body", "email") in locations
    assert ("body", "password") in locations
    assert ("body", "name") in locations
    assert ("body", "profile", "role") in locations
    assert all(error["msg"] for error in bad.json()["detail"])

    assert (await sign_up(web, email)).status_code == 201
    profile = await web.post("/api/v1/profile", json={"interests": ["x" * 101]})
    assert profile.status_code == 422
    assert profile.json()["detail"][0]["loc"][:2] == ["body", "interests"]

    unknown = await web.post("/api/v1/profile", json={"favourite_colour": "blue"})
    assert unknown.status_code == 422, "unknown fields are refused by the model"


async def test_consent_violation_is_400(web: httpx.AsyncClient, email: str) -> None:
    no_consent = await sign_up(web, email, profile={"programming_level": "beginner"})
    assert no_consent.status_code == 400
    assert (await sign_up(web, email, profile={"learning_style": "visual"})).status_code == 201
    refused = await web.post("/api/v1/profile", json={"programming_level": "beginner"})
    assert refused.status_code == 400
    allowed = await web.post(
        "/api/v1/profile", json={"consent_given": True, "programming_level": "beginner"}
    )
    assert allowed.status_code == 200
    withdrawn = await web.post("/api/v1/profile", json={"consent_given": False})
    assert withdrawn.json()["programming_level"] is None, "withdrawing consent erases background"
    assert withdrawn.json()["learning_style"] == "visual"


async def test_session_cache_trade_off_and_local_eviction(
    server: GatehouseServer, example: ModuleType, email: str
) -> None:
    app = example.create_app(server.target, cache_ttl=60.0)
    cache = app.state.gatehouse.cache
    async with browser(app) as web:
        assert (await sign_up(web, email)).status_code == 201
        token = web.cookies[COOKIE]
        assert (await web.get("/auth/session")).status_code == 200
        assert len(cache) == 1

        # Revoked elsewhere (another process): the cached entry is still accepted until its
        # TTL runs out. This is the documented trade-off of turning the cache on.
        with Client(server.target) as direct:
            direct.sign_out(token=token)
        assert (await web.get("/auth/session")).status_code == 200

        # Sign-out through this app's router evicts at once.
        assert (
            await web.post("/auth/sign-out", headers={"authorization": f"Bearer {token}"})
        ).status_code == 204
        assert len(cache) == 0
        assert (
            await web.get("/auth/session", headers={"authorization": f"Bearer {token}"})
        ).status_code == 401
    await app.state.gatehouse.client.close()


async def test_access_token_endpoint(web: httpx.AsyncClient, email: str) -> None:
    assert (await web.post("/auth/access-token", json={"audience": "books-api"})).status_code == 401
    assert (await sign_up(web, email)).status_code == 201
    issued = await web.post("/auth/access-token", json={"audience": "books-api"})
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["access_token"].count(".") == 2 and body["token_type"] == "Bearer"
    assert body["expires_at"]
    wrong = await web.post("/auth/access-token", json={"audience": "payroll"})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "audience"]


async def test_session_cache_follows_revocations_pushed_by_gatehouse(
    server: GatehouseServer, example: ModuleType, email: str
) -> None:
    app = example.create_app(server.target, cache_ttl=300.0, service_api_key=SERVICE_API_KEY)
    gh = app.state.gatehouse
    async with browser(app) as web:
        assert (await sign_up(web, email)).status_code == 201
        token = web.cookies[COOKIE]
        assert (await web.get("/auth/session")).status_code == 200  # starts the watch
        assert gh.watch is not None
        await asyncio.wait_for(gh.watch.connected.wait(), 5)
        assert (await web.get("/auth/session")).status_code == 200
        assert len(gh.cache) == 1, "answered from the cache from now on"

        # Signed out through another path (not this app's router): the pushed revocation
        # evicts the cached session at once, although its TTL has minutes left.
        with Client(server.target) as direct:
            direct.sign_out(token=token)
        deadline = time.monotonic() + 1.0
        while (status := (await web.get("/auth/session")).status_code) == 200:
            assert time.monotonic() < deadline, "cached session still accepted after 1 s"
            await asyncio.sleep(0.02)
        assert status == 401
        assert len(gh.cache) == 0
    await gh.aclose()
    assert gh.watch.connected.is_set() is False


async def test_gatehouse_stopped_gives_503_not_500(
    fresh_server: GatehouseServer, example: ModuleType, email: str
) -> None:
    app = example.create_app(fresh_server.target)
    async with browser(app) as web:
        assert (await sign_up(web, email, profile=PROFILE)).status_code == 201
        assert (await web.get("/auth/session")).status_code == 200
        fresh_server.stop(drop=False)

        for method, path, body in (
            ("GET", "/auth/session", None),
            ("GET", "/api/v1/profile", None),
            ("POST", "/api/v1/query", {"question": "What is a ROS 2 node?"}),
            ("POST", "/auth/sign-in", {"email": email, "password": PASSWORD}),
            ("POST", "/auth/sign-up", {"email": "x" + email, "password": PASSWORD, "name": "X"}),
        ):
            response = await web.request(method, path, json=body)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["retry-after"] == "1"
            assert response.json()["detail"] == "authentication service unavailable"
        # Anonymous readers need no Gatehouse at all.
        web.cookies.clear()
        assert (
            await web.post("/api/v1/query", json={"question": "ROS 2 node?"})
        ).status_code == 200
    await app.state.gatehouse.client.close()


@pytest.fixture(params=BACKENDS)
def limited_server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """A gatehouse whose sign-in limit per email and IP is 2 a minute."""
    srv = start_server(
        request.param, {**GENEROUS_RATE_LIMITS, "GATEHOUSE_RATE_SIGN_IN_PER_ACCOUNT": "2/1m"}
    )
    yield srv
    srv.stop()


async def test_rate_limit_is_429_with_retry_after(
    limited_server: GatehouseServer, example: ModuleType, email: str
) -> None:
    app = example.create_app(limited_server.target)
    credentials = {"email": email, "password": PASSWORD}
    async with browser(app) as web:
        assert (await sign_up(web, email)).status_code == 201
        for _ in range(2):
            assert (await web.post("/auth/sign-in", json=credentials)).status_code == 200
        limited = await web.post("/auth/sign-in", json=credentials)
        assert limited.status_code == 429, limited.text
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 60, retry_after
        assert "set-cookie" not in limited.headers
        # Even the right password is refused until the window passes; the limit is per email
        # and address, so the same account from another address is not held back.
        assert (await web.post("/auth/sign-in", json=credentials)).status_code == 429
        async with browser(app) as elsewhere:
            assert (await elsewhere.post("/auth/sign-in", json=credentials)).status_code == 200
    await app.state.gatehouse.client.close()
