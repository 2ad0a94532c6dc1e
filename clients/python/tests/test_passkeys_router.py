"""Passkeys through the FastAPI router, driven with Starlette's TestClient as a browser
(``gatehouse.testing.secure_test_client``) against the real gatehouse (both backends), with
the software authenticator of ``softauthn.py``: the registration and sign-in ceremonies as
JSON (the options out, the credential in, as ``credential.toJSON()`` and
``@simplewebauthn/browser`` make them), the sign-in ceremony's id in an HttpOnly cookie, the
session cookie, ``passkey_options`` in the second-factor answer, the error answers (400, 401,
422) and the cross-site check; and the example page's passkey controls."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import BROWSER_UA, PASSWORD
from fastapi import FastAPI
from softauthn import SoftAuthenticator, b64url
from starlette.testclient import TestClient
from test_factors_router import CHALLENGE, EVIL, SESSION, app, browser, set_cookie

from gatehouse.fastapi import Gatehouse
from gatehouse.testing import secure_test_client

__all__ = ["app"]  # the fixture, shared with test_factors_router

PASSKEY = "gatehouse_passkey"


def sign_up(web: TestClient, email: str) -> None:
    body = {"email": email, "password": PASSWORD, "name": "Passkey Reader"}
    assert web.post("/auth/sign-up", json=body).status_code == 201


def register(web: TestClient, authenticator: SoftAuthenticator, **create: Any) -> Any:
    """The registration ceremony through the router; the answer to the credential."""
    options = web.post("/auth/passkeys/register/options", json={"name": "Laptop"})
    assert options.status_code == 200, options.text
    assert options.headers["cache-control"] == "no-store"
    return web.post("/auth/passkeys/register", json=authenticator.create(options.json(), **create))


def attributes(cookie: str) -> set[str]:
    return {a.strip().lower() for a in cookie.split(";")}


def test_register_then_sign_in_with_the_passkey(app: FastAPI, email: str) -> None:
    authenticator = SoftAuthenticator()
    with browser(app) as first:
        sign_up(first, email)
        options = first.post("/auth/passkeys/register/options")  # no body: the default name
        assert options.status_code == 200, options.text
        created = options.json()
        assert created["rp"]["id"] == "localhost"
        assert {"challenge", "user", "pubKeyCredParams", "authenticatorSelection"} <= set(created)
        assert created["user"]["name"] == email

        done = first.post("/auth/passkeys/register", json=authenticator.create(created))
        assert done.status_code == 200, done.text
        assert done.headers["cache-control"] == "no-store"
        body = done.json()
        assert set(body) == {"factor", "recovery_codes"}
        factor = body["factor"]
        assert (factor["kind"], factor["name"]) == ("passkey", "Passkey")
        assert factor["backup_eligible"] is False and factor["backed_up"] is False
        assert len(body["recovery_codes"]) == 10
        listed = first.get("/auth/factors").json()
        assert [f["id"] for f in listed["factors"]] == [factor["id"]]

    with browser(app) as second:
        started = second.post("/auth/passkeys/sign-in/options")
        assert started.status_code == 200, started.text
        assert started.headers["cache-control"] == "no-store"
        request = started.json()
        assert request["challenge"] and "challenge_id" not in request
        cookie = set_cookie(started, PASSKEY)
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes(cookie), cookie
        max_age = next(int(a.split("=")[1]) for a in attributes(cookie) if a.startswith("max-age="))
        assert 0 < max_age <= 300
        ceremony = cookie.split(";")[0].partition("=")[2]
        assert ceremony and ceremony not in started.text, "the ceremony id stays in the cookie"
        assert not set_cookie(started, SESSION)

        signed_in = second.post("/auth/passkeys/sign-in", json=authenticator.get(request))
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.headers["cache-control"] == "no-store"
        session_cookie = set_cookie(signed_in, SESSION)
        assert session_cookie and {"httponly", "secure"} <= attributes(session_cookie)
        assert "max-age=0" in attributes(set_cookie(signed_in, PASSKEY)), "the ceremony is spent"
        out = signed_in.json()
        assert out["user"]["email"] == email and out["second_factor_required"] is None
        assert out["session"]["aal"] == 2 and "mfa" in out["session"]["amr"]
        assert out["session_token"] is None, "the token is in the cookie only"
        me = second.get("/auth/session")
        assert me.status_code == 200 and me.json()["session"]["aal"] == 2
        assert second.get("/api/v1/me").json()["email"] == email

        # The ceremony cookie is gone: finishing again is a clear 400.
        again = second.post("/auth/passkeys/sign-in", json=authenticator.get(request))
        assert again.status_code == 400, again.text
        assert "passkeys/sign-in/options" in again.json()["detail"]

        # The aal 2 session may add another passkey (no new recovery codes then).
        another = register(second, SoftAuthenticator(synced=True))
        assert another.status_code == 200, another.text
        assert another.json()["recovery_codes"] == []
        assert another.json()["factor"]["backup_eligible"] is True


def test_refused_passkey_sign_ins_are_clear(app: FastAPI, email: str) -> None:
    authenticator = SoftAuthenticator()
    with browser(app) as web:
        sign_up(web, email)
        assert register(web, authenticator).status_code == 200
        web.post("/auth/sign-out")
        web.cookies.clear()

        # No ceremony in this browser.
        assertion = authenticator.get({"challenge": b64url(b"x" * 32)})
        none = web.post("/auth/passkeys/sign-in", json=assertion)
        assert none.status_code == 400 and "no passkey sign-in" in none.json()["detail"]

        # A passkey answer for another origin: 401, and the ceremony cookie is cleared.
        request = web.post("/auth/passkeys/sign-in/options").json()
        evil = web.post(
            "/auth/passkeys/sign-in",
            json=authenticator.get(request, origin="https://evil.example"),
        )
        assert evil.status_code == 401, evil.text
        assert evil.headers["www-authenticate"] == "Bearer"
        assert isinstance(evil.json()["detail"], str) and evil.json()["detail"]
        assert "max-age=0" in attributes(set_cookie(evil, PASSKEY))
        assert not set_cookie(evil, SESSION)
        assert web.get("/auth/session").status_code == 401

        # A body that is no credential never reaches Gatehouse: FastAPI's 422.
        web.post("/auth/passkeys/sign-in/options")
        for body in ({"id": "x"}, {"id": "x", "rawId": "x", "type": "password", "response": {}}):
            shaped = web.post("/auth/passkeys/sign-in", json=body)
            assert shaped.status_code == 422, shaped.text
        # One Gatehouse cannot read (no signature) is refused like a wrong one.
        unreadable = {**assertion, "response": {"clientDataJSON": "e30"}}
        refused = web.post("/auth/passkeys/sign-in", json=unreadable)
        assert refused.status_code == 401, refused.text
        # An oversized one is 422 too.
        huge = {**assertion, "clientExtensionResults": {"x": "y" * 70_000}}
        web.post("/auth/passkeys/sign-in/options")
        assert web.post("/auth/passkeys/sign-in", json=huge).status_code == 422

        # The right passkey still signs in with a fresh ceremony.
        request = web.post("/auth/passkeys/sign-in/options").json()
        ok = web.post("/auth/passkeys/sign-in", json=authenticator.get(request))
        assert ok.status_code == 200, ok.text


def test_refused_registrations_are_clear(app: FastAPI, email: str) -> None:
    authenticator = SoftAuthenticator()
    with browser(app) as web:
        # Not signed in.
        assert web.post("/auth/passkeys/register/options").status_code == 401
        sign_up(web, email)

        # Nothing started: 400.
        created = web.post("/auth/passkeys/register/options").json()
        credential = authenticator.create(created)
        assert web.post("/auth/passkeys/register", json=credential).status_code == 200
        again = web.post("/auth/passkeys/register", json=credential)
        # The user now has a second factor and this sign-up session did not use it.
        assert again.status_code == 403, again.text
        assert again.json()["detail"]["reason"] == "second_factor_required"

    with browser(app) as web:
        sign_up(web, "other-" + email)
        web.post("/auth/passkeys/register/options")
        foreign = register(web, authenticator, origin="https://evil.example")
        assert foreign.status_code == 422, foreign.text
        [error] = foreign.json()["detail"]
        assert error["loc"] == ["body"] and "did not verify" in error["msg"]
        assert error["type"] == "gatehouse.invalid_argument"
        none = web.post("/auth/passkeys/register", json=authenticator.create(created))
        assert none.status_code == 400, none.text  # that registration was spent
        assert web.get("/auth/factors").json()["factors"] == []
        bad_name = web.post("/auth/passkeys/register/options", json={"name": "x" * 101})
        assert bad_name.status_code == 422


def test_passkey_as_the_second_factor(app: FastAPI, email: str) -> None:
    authenticator = SoftAuthenticator()
    with browser(app) as web:
        sign_up(web, email)
        assert register(web, authenticator).status_code == 200
        web.post("/auth/sign-out")

        answer = web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        challenge = answer.json()["second_factor_required"]
        assert set(challenge["methods"]) == {"passkey", "recovery_code"}
        options = challenge["passkey_options"]
        assert isinstance(options, dict) and options["challenge"]
        assert [c["id"] for c in options["allowCredentials"]] == [authenticator.passkeys[0].id]
        assert set_cookie(answer, CHALLENGE) and not set_cookie(answer, SESSION)

        both = web.post(
            "/auth/second-factor",
            json={"totp_code": "123456", "passkey_credential": authenticator.get(options)},
        )
        assert both.status_code == 422, "exactly one proof"
        wrong = web.post(
            "/auth/second-factor",
            json={"passkey_credential": authenticator.get(options, origin="https://evil.example")},
        )
        assert wrong.status_code == 401, wrong.text
        assert not set_cookie(wrong, SESSION)

        done = web.post(
            "/auth/second-factor", json={"passkey_credential": authenticator.get(options)}
        )
        assert done.status_code == 200, done.text
        session = done.json()["session"]
        assert session["aal"] == 2 and {"pwd", "hwk", "mfa"} <= set(session["amr"])
        assert set_cookie(done, SESSION)
        assert "Max-Age=0" in set_cookie(done, CHALLENGE)


def test_passkey_routes_refuse_cross_site_requests(app: FastAPI, email: str) -> None:
    with browser(app) as web:
        sign_up(web, email)
        web.post("/auth/passkeys/sign-in/options")
        for path, body in [
            ("/auth/passkeys/register/options", None),
            ("/auth/passkeys/register", {"id": "x"}),
            ("/auth/passkeys/sign-in/options", None),
            ("/auth/passkeys/sign-in", {"id": "x"}),
        ]:
            refused = web.post(path, json=body, headers={"origin": EVIL})
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["detail"].startswith("cross-site request refused")
            sibling = web.post(path, json=body, headers={"sec-fetch-site": "cross-site"})
            assert sibling.status_code == 403, (path, sibling.text)


def test_passkey_cookie_takes_the_host_prefix(server: Any) -> None:
    gatehouse = Gatehouse(server.target, cookie_secure=True, cookie_host_prefix=True)
    assert gatehouse.passkey_cookie_name == "__Host-" + PASSKEY
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    with secure_test_client(app, headers={"origin": "https://testserver"}) as web:
        started = web.post("/auth/passkeys/sign-in/options")
        assert started.status_code == 200, started.text
        assert set_cookie(started, "__Host-" + PASSKEY)
    with pytest.raises(ValueError, match="cookie_name"):
        Gatehouse(server.target, passkey_cookie_name="bad name")


def test_example_page_offers_passkeys(app: FastAPI) -> None:
    with secure_test_client(app, headers={"user-agent": BROWSER_UA}) as web:
        page = web.get("/").text
        for element in (
            'id="passkey-sign-in"',
            'id="passkey-register"',
            'id="second-factor-passkey"',
        ):
            assert element in page, element
        script = web.get("/app.js").text
        for needed in (
            "/auth/passkeys/register/options",
            "/auth/passkeys/register",
            "/auth/passkeys/sign-in/options",
            "/auth/passkeys/sign-in",
            "passkey_credential",
            "parseCreationOptionsFromJSON",
            "parseRequestOptionsFromJSON",
            "toJSON",
        ):
            assert needed in script, needed
