"""Second factors through the FastAPI router, driven with Starlette's TestClient as a browser
(``gatehouse.testing.secure_test_client``) against the real gatehouse (both backends): sign-in
answering ``second_factor_required`` with the challenge in an HttpOnly cookie, ``POST
/auth/second-factor`` setting the session cookie, the enrolment endpoints, the step-up 403,
the cross-site check; and the example app's account page."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pyotp
import pytest
from conftest import BROWSER_UA, PASSWORD
from fastapi import FastAPI
from gatehouse_server import GatehouseServer
from starlette.testclient import TestClient

from gatehouse import AsyncClient
from gatehouse.fastapi import Gatehouse
from gatehouse.testing import secure_test_client

SESSION = "gatehouse_session"
CHALLENGE = "gatehouse_second_factor"
SELF = "https://testserver"
EVIL = "https://evil.example"


@pytest.fixture
def app(server: GatehouseServer, example: ModuleType) -> FastAPI:
    app: FastAPI = example.create_app(server.target, cookie_secure=True)
    return app


def browser(app: FastAPI) -> TestClient:
    """A browser on the app: https (the Secure cookies are kept), pages of its own origin."""
    return secure_test_client(app, headers={"origin": SELF, "user-agent": BROWSER_UA})


def set_cookie(response: Any, name: str) -> str:
    """The Set-Cookie header of the response for cookie ``name`` ("" if none)."""
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) <= 1, found
    return found[0] if found else ""


def sign_up_and_enrol(web: TestClient, email: str) -> tuple[pyotp.TOTP, str, list[str]]:
    """Signs ``web`` up and turns on an authenticator app: (totp, factor id, recovery codes)."""
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
    assert web.post("/auth/sign-up", json=body).status_code == 201

    started = web.post("/auth/factors/totp", json={"name": "Phone"})
    assert started.status_code == 200, started.text
    assert started.headers["cache-control"] == "no-store"
    enrolment = started.json()
    assert set(enrolment) == {"factor_id", "secret", "otpauth_uri", "qr_code_svg", "expires_at"}
    assert "<svg" in enrolment["qr_code_svg"]
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(enrolment["secret"])

    wrong = "000000" if totp.now() != "000000" else "111111"
    refused = web.post("/auth/factors/totp/confirm", json={"code": wrong})
    assert refused.status_code == 422, refused.text
    assert [e["loc"] for e in refused.json()["detail"]] == [["body", "code"]]

    confirmed = web.post("/auth/factors/totp/confirm", json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    out = confirmed.json()
    assert out["factor"]["id"] == enrolment["factor_id"] and out["factor"]["kind"] == "totp"
    assert len(out["recovery_codes"]) == 10
    return totp, enrolment["factor_id"], out["recovery_codes"]


def sign_in_for_challenge(web: TestClient, email: str) -> None:
    """Signs in with the password: asserts the second-factor answer and cookie."""
    answer = web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    challenge = body["second_factor_required"]
    assert body["user"] is None and body["session"] is None and body["session_token"] is None
    assert set(challenge["methods"]) == {"totp", "recovery_code"}
    assert challenge["expires_at"] and challenge["challenge_token"] is None
    assert answer.headers["cache-control"] == "no-store"

    cookie = set_cookie(answer, CHALLENGE)
    assert cookie, answer.headers.get_list("set-cookie")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= set(attributes), cookie
    max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("max-age="))
    assert 0 < max_age <= 300
    token = cookie.split(";")[0].partition("=")[2]
    assert token and token not in answer.text, "the challenge stays in the HttpOnly cookie"
    assert not set_cookie(answer, SESSION), "no session before the second factor"


def test_sign_in_with_second_factor_sets_the_session_cookie(app: FastAPI, email: str) -> None:
    with browser(app) as first, browser(app) as second:
        totp, factor_id, codes = sign_up_and_enrol(first, email)
        listed = first.get("/auth/factors").json()
        assert [f["id"] for f in listed["factors"]] == [factor_id]
        assert listed["recovery_codes_remaining"] == 10
        assert first.get("/auth/session").json()["session"]["aal"] == 1

        # Another browser: the password alone leaves it signed out, holding the challenge.
        sign_in_for_challenge(second, email)
        assert second.get("/auth/session").status_code == 401

        wrong = second.post("/auth/second-factor", json={"recovery_code": "aaaaa-bbbbb"})
        assert wrong.status_code == 401, wrong.text
        assert not set_cookie(wrong, SESSION) and not set_cookie(wrong, CHALLENGE)

        done = second.post("/auth/second-factor", json={"totp_code": totp.at(time.time() + 30)})
        assert done.status_code == 200, done.text
        assert done.headers["cache-control"] == "no-store"
        session_cookie = set_cookie(done, SESSION)
        assert session_cookie and "HttpOnly" in session_cookie and "Secure" in session_cookie
        assert "Max-Age=0" in set_cookie(done, CHALLENGE), "the spent challenge is cleared"
        body = done.json()
        assert body["user"]["email"] == email and body["second_factor_required"] is None
        assert body["session"]["aal"] == 2 and {"pwd", "otp", "mfa"} <= set(body["session"]["amr"])
        assert body["session_token"] is None, "the token is in the cookie only"

        me = second.get("/auth/session")
        assert me.status_code == 200
        assert me.json()["session"]["aal"] == 2 and me.json()["session"]["auth_time"]
        assert second.get("/api/v1/me").json()["email"] == email

        again = second.post("/auth/second-factor", json={"totp_code": totp.now()})
        assert again.status_code == 400, "no challenge waits in this browser any more"

        # The first browser's session predates the factor: changes ask for a new sign-in.
        weak = first.post("/auth/factors/recovery-codes")
        assert weak.status_code == 403, weak.text
        detail = weak.json()["detail"]
        assert detail["error"] == "reauthentication_required"
        assert detail["reason"] == "second_factor_required" and detail["message"]

        # The second browser's (aal 2) session may.
        fresh = second.post("/auth/factors/recovery-codes")
        assert fresh.status_code == 200, fresh.text
        assert fresh.headers["cache-control"] == "no-store"
        assert len(fresh.json()["recovery_codes"]) == 10
        assert not set(fresh.json()["recovery_codes"]) & set(codes)

        # Cross-site requests are refused like on every state-changing route.
        for method, path, body_ in [
            ("POST", "/auth/factors/totp", {}),
            ("POST", "/auth/factors/recovery-codes", None),
            ("DELETE", f"/auth/factors/{factor_id}", None),
            ("POST", "/auth/second-factor", {"totp_code": "123456"}),
        ]:
            refused = second.request(method, path, json=body_, headers={"origin": EVIL})
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["detail"].startswith("cross-site request refused")

        assert second.delete("/auth/factors/not-a-factor").status_code in (404, 422)
        removed = second.delete(f"/auth/factors/{factor_id}")
        assert removed.status_code == 204, removed.text
        assert second.get("/auth/factors").json() == {"factors": [], "recovery_codes_remaining": 0}

    # Without a factor, sign-in sets the session cookie at once again.
    with browser(app) as third:
        plain = third.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
        assert plain.status_code == 200 and plain.json()["second_factor_required"] is None
        assert set_cookie(plain, SESSION) and not set_cookie(plain, CHALLENGE)


def test_second_factor_with_a_recovery_code(app: FastAPI, email: str) -> None:
    with browser(app) as web:
        _, _, codes = sign_up_and_enrol(web, email)
        web.cookies.clear()
        assert web.post("/auth/second-factor", json={"totp_code": "123456"}).status_code == 400

        sign_in_for_challenge(web, email)
        both = web.post("/auth/second-factor", json={"totp_code": "1", "recovery_code": "x"})
        assert both.status_code == 422, "exactly one proof"
        done = web.post("/auth/second-factor", json={"recovery_code": codes[0]})
        assert done.status_code == 200, done.text
        assert "rec" in done.json()["session"]["amr"]
        assert web.get("/auth/factors").json()["recovery_codes_remaining"] == 9


@pytest.fixture
def token_app(server: GatehouseServer) -> Iterator[FastAPI]:
    """An integration with ``expose_token=True``, for clients that are not browsers."""
    gatehouse = Gatehouse(AsyncClient(server.target), cookie_secure=True, expose_token=True)
    app = FastAPI(lifespan=gatehouse.lifespan)
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    yield app


def test_expose_token_puts_the_challenge_in_the_body(
    app: FastAPI, token_app: FastAPI, email: str
) -> None:
    with browser(app) as web:
        totp, _, _ = sign_up_and_enrol(web, email)
    with secure_test_client(token_app) as script:  # no Origin: a script, not a browser
        answer = script.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
        challenge = answer.json()["second_factor_required"]["challenge_token"]
        assert challenge
        script.cookies.clear()
        done = script.post(
            "/auth/second-factor",
            json={"challenge_token": challenge, "totp_code": totp.at(time.time() + 30)},
        )
        assert done.status_code == 200, done.text
        token = done.json()["session_token"]
        assert token.startswith("gate_")
        script.cookies.clear()
        listed = script.get("/auth/factors", headers={"authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and len(listed.json()["factors"]) == 1


def test_example_serves_the_account_page(app: FastAPI) -> None:
    with browser(app) as web:
        page = web.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        for element in (
            'id="sign-up-form"',
            'name="consent_given"',
            'id="sign-in-form"',
            'id="second-factor-form"',
            'id="enroll-start"',
            'id="qr"',
            'id="codes-list"',
            'id="factors"',
        ):
            assert element in page.text, element
        script = web.get("/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        for needed in ("/auth/second-factor", "/auth/factors/totp/confirm", "reauthentication"):
            assert needed in script.text, needed
        assert web.get("/app.css").headers["content-type"].startswith("text/css")
        assert "/" not in app.openapi()["paths"], "the page is not part of the API document"


def test_provider_sign_in_that_needs_the_second_factor() -> None:
    """The OAuth callback's answer when CompleteOAuth asks for the second factor (no provider
    is configured in the test servers, so the answer is built from a CompleteOAuthResponse):
    the challenge cookie instead of the session cookie, and ``?second_factor=required`` on
    the redirect target."""
    from gatehouse._proto.gatehouse.v1 import auth_pb2
    from gatehouse.fastapi.router import _signed_in, _with_query

    assert _with_query("/books", "second_factor", "required") == "/books?second_factor=required"
    assert (
        _with_query("/b?x=1#top", "second_factor", "required")
        == "/b?x=1&second_factor=required#top"
    )

    gatehouse = Gatehouse("127.0.0.1:1", cookie_secure=True)
    result = auth_pb2.CompleteOAuthResponse(user=auth_pb2.User(id="u", email="ada@example.com"))
    result.second_factor_required.challenge_token = "gatemfa_abc"
    result.second_factor_required.methods.extend(["totp", "recovery_code"])
    result.second_factor_required.expires_at.FromSeconds(int(time.time()) + 120)

    redirected = _signed_in(gatehouse, result, "/books")
    assert redirected.status_code == 302
    assert redirected.headers["location"] == "/books?second_factor=required"
    cookies = "\n".join(v.decode() for k, v in redirected.raw_headers if k == b"set-cookie")
    assert f"{CHALLENGE}=gatemfa_abc" in cookies and f"{SESSION}=" not in cookies
    assert 'gatehouse_oauth_state=""' in cookies, "the spent state is cleared"

    answered = _signed_in(gatehouse, result, None)
    assert b"gatemfa_abc" not in answered.body
    body = json.loads(answered.body)
    assert body["second_factor_required"]["methods"] == ["totp", "recovery_code"]
    assert body["user"] is None and body["session"] is None and body["is_new_user"] is False
