"""Passkeys without a server: the request builder, the models, and the router's passkey routes
on a Gatehouse whose client methods are replaced by fakes (what goes to Gatehouse, the cookie
handling, the error mapping). The real ceremonies are in test_passkeys*.py and the Chromium
test of clients/js."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from gatehouse import _requests
from gatehouse._models import (
    FactorOut,
    PasskeyCredentialIn,
    SecondFactorIn,
    SecondFactorRequiredOut,
    parse_options,
)
from gatehouse._proto.gatehouse.v1 import auth_pb2, factor_pb2
from gatehouse.errors import FieldViolation, InvalidArgument, Unauthenticated
from gatehouse.fastapi import Gatehouse
from gatehouse.testing import secure_test_client

PASSKEY = "gatehouse_passkey"
SESSION = "gatehouse_session"
CREDENTIAL: dict[str, Any] = {
    "id": "Y3JlZA",
    "rawId": "Y3JlZA",
    "type": "public-key",
    "response": {
        "clientDataJSON": "e30",
        "authenticatorData": "YXV0aA",
        "signature": "c2ln",
        "userHandle": None,
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
OPTIONS = {"challenge": "Y2hhbGxlbmdl", "rpId": "localhost", "userVerification": "required"}


def test_complete_second_factor_with_a_passkey() -> None:
    request = _requests.complete_second_factor("c", None, None, '{"id": "x"}')
    assert request.WhichOneof("proof") == "passkey_credential_json"
    assert request.passkey_credential_json == '{"id": "x"}' and request.challenge_token == "c"
    for proofs in [("1", None, "{}"), (None, "r", "{}"), ("1", "r", "{}")]:
        with pytest.raises(ValueError, match="exactly one"):
            _requests.complete_second_factor("c", *proofs)


def test_models() -> None:
    assert parse_options("") is None and parse_options("[1]") is None
    assert parse_options("not json") is None
    assert parse_options(json.dumps(OPTIONS)) == OPTIONS

    challenge = auth_pb2.SecondFactorRequired(
        challenge_token="chal",
        methods=["passkey", "recovery_code"],
        passkey_options_json=json.dumps(OPTIONS),
    )
    out = SecondFactorRequiredOut.from_proto(challenge)
    assert out.passkey_options == OPTIONS and out.methods == ["passkey", "recovery_code"]
    plain = SecondFactorRequiredOut.from_proto(auth_pb2.SecondFactorRequired(methods=["totp"]))
    assert plain.passkey_options is None

    synced = FactorOut.from_proto(
        factor_pb2.Factor(id="f", kind="passkey", name="Phone", backup_eligible=True, backed_up=True)
    )
    assert (synced.kind, synced.backup_eligible, synced.backed_up) == ("passkey", True, True)
    assert FactorOut.from_proto(factor_pb2.Factor(id="t", kind="totp")).backup_eligible is False

    # The credential passes through as sent: nothing added, nothing dropped.
    credential = PasskeyCredentialIn.model_validate(CREDENTIAL)
    assert json.loads(credential.to_json()) == CREDENTIAL
    minimal = {k: CREDENTIAL[k] for k in ("id", "rawId", "type", "response")}
    assert json.loads(PasskeyCredentialIn.model_validate(minimal).to_json()) == minimal
    for bad in (
        {},
        {**CREDENTIAL, "type": "password"},
        {**CREDENTIAL, "response": {}},
        {**CREDENTIAL, "id": ""},
        {**CREDENTIAL, "clientExtensionResults": {"x": "y" * 70_000}},
    ):
        with pytest.raises(ValidationError):
            PasskeyCredentialIn.model_validate(bad)

    assert SecondFactorIn.model_validate({"passkey_credential": CREDENTIAL}).totp_code is None
    for bad_proof in (
        {"passkey_credential": CREDENTIAL, "totp_code": "123456"},
        {"passkey_credential": CREDENTIAL, "recovery_code": "abcde-fghij"},
        {"passkey_credential": {"id": "x"}},
    ):
        with pytest.raises(ValidationError):
            SecondFactorIn.model_validate(bad_proof)


class FakeGatehouse:
    """Records the passkey calls the router makes and answers as configured."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.sign_in_error: Exception | None = None
        self.register_error: Exception | None = None

    async def start_passkey_sign_in(self, **_: Any) -> auth_pb2.StartPasskeySignInResponse:
        self.calls.append(("start_sign_in", ()))
        started = auth_pb2.StartPasskeySignInResponse(
            options_json=json.dumps(OPTIONS), challenge_id="6f1c1f0e-ceremony"
        )
        started.expires_at.FromSeconds(int(time.time()) + 120)
        return started

    async def finish_passkey_sign_in(
        self, challenge_id: str, credential_json: str, **_: Any
    ) -> auth_pb2.AuthResponse:
        self.calls.append(("finish_sign_in", (challenge_id, json.loads(credential_json))))
        if self.sign_in_error is not None:
            raise self.sign_in_error
        result = auth_pb2.AuthResponse(
            user=auth_pb2.User(id="u", email="ada@example.com", name="Ada"),
            session=auth_pb2.Session(id="s", aal=2, amr=["hwk", "mfa"]),
            session_token="gate_fake",
        )
        result.session.expires_at.FromSeconds(int(time.time()) + 3600)
        return result

    async def finish_passkey_registration(
        self, credential_json: str, *, token: str, **_: Any
    ) -> factor_pb2.FinishPasskeyRegistrationResponse:
        self.calls.append(("finish_registration", (token, json.loads(credential_json))))
        if self.register_error is not None:
            raise self.register_error
        return factor_pb2.FinishPasskeyRegistrationResponse(
            factor=factor_pb2.Factor(id="f", kind="passkey", name="Passkey"),
            recovery_codes=["abcde-fghij"],
        )

    async def get_session(self, *, token: str, **_: Any) -> auth_pb2.GetSessionResponse:
        if token != "gate_fake":
            raise Unauthenticated("unknown session")
        return auth_pb2.GetSessionResponse(
            user=auth_pb2.User(id="u", email="ada@example.com", name="Ada"),
            session=auth_pb2.Session(id="s", aal=2),
        )


@pytest.fixture
def fake() -> Iterator[tuple[FakeGatehouse, TestClient]]:
    gatehouse = Gatehouse("127.0.0.1:1", cookie_secure=True)
    fake = FakeGatehouse()
    for name in (
        "start_passkey_sign_in",
        "finish_passkey_sign_in",
        "finish_passkey_registration",
        "get_session",
    ):
        setattr(gatehouse.client, name, getattr(fake, name))
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    with secure_test_client(app, headers={"origin": "https://testserver"}) as web:
        yield fake, web


def set_cookie(response: Any, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return found[0] if found else ""


def test_passkey_sign_in_keeps_the_ceremony_in_the_cookie(
    fake: tuple[FakeGatehouse, TestClient],
) -> None:
    gatehouse, web = fake
    started = web.post("/auth/passkeys/sign-in/options")
    assert started.status_code == 200 and started.json() == OPTIONS
    cookie = set_cookie(started, PASSKEY)
    assert cookie.startswith(f"{PASSKEY}=6f1c1f0e-ceremony;")
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 100 < max_age <= 120, "until the ceremony lapses"

    done = web.post("/auth/passkeys/sign-in", json=CREDENTIAL)
    assert done.status_code == 200, done.text
    assert gatehouse.calls[-1] == ("finish_sign_in", ("6f1c1f0e-ceremony", CREDENTIAL))
    assert set_cookie(done, SESSION).startswith(f"{SESSION}=gate_fake;")
    assert "Max-Age=0" in set_cookie(done, PASSKEY)
    body = done.json()
    assert body["session"]["aal"] == 2 and body["session_token"] is None
    assert web.get("/auth/session").json()["user"]["email"] == "ada@example.com"


@pytest.mark.parametrize(
    "error",
    [
        Unauthenticated("the passkey was not accepted"),
        InvalidArgument(
            "bad", field_violations=[FieldViolation("credential_json", "is not a WebAuthn ...")]
        ),
    ],
)
def test_a_refused_passkey_sign_in_is_401(
    fake: tuple[FakeGatehouse, TestClient], error: Exception
) -> None:
    gatehouse, web = fake
    gatehouse.sign_in_error = error
    assert web.post("/auth/passkeys/sign-in", json=CREDENTIAL).status_code == 400  # no cookie
    assert gatehouse.calls == []
    web.post("/auth/passkeys/sign-in/options")
    refused = web.post("/auth/passkeys/sign-in", json=CREDENTIAL)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "Max-Age=0" in set_cookie(refused, PASSKEY) and not set_cookie(refused, SESSION)
    assert web.post("/auth/passkeys/sign-in", json=CREDENTIAL).status_code == 400


def test_a_refused_registration_is_422_on_the_body(
    fake: tuple[FakeGatehouse, TestClient],
) -> None:
    gatehouse, web = fake
    web.cookies.set(SESSION, "gate_fake")
    gatehouse.register_error = InvalidArgument(
        "bad", field_violations=[FieldViolation("credential_json", "did not verify")]
    )
    refused = web.post("/auth/passkeys/register", json=CREDENTIAL)
    assert refused.status_code == 422
    assert refused.json()["detail"] == [
        {"loc": ["body"], "msg": "did not verify", "type": "gatehouse.invalid_argument"}
    ]
    gatehouse.register_error = None
    done = web.post("/auth/passkeys/register", json=CREDENTIAL)
    assert done.status_code == 200
    assert gatehouse.calls[-1] == ("finish_registration", ("gate_fake", CREDENTIAL))
    assert done.json()["factor"]["kind"] == "passkey"
    assert done.json()["recovery_codes"] == ["abcde-fghij"]
    # No cookie session, no call.
    web.cookies.clear()
    assert web.post("/auth/passkeys/register", json=CREDENTIAL).status_code == 401
