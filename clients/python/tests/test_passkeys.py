"""Passkeys (WebAuthn) through the clients against the real gatehouse (both backends), with the
software authenticator of ``softauthn.py`` playing the browser: registering one as a factor
(the options' shape, the first factor's recovery codes), the passwordless sign-in, a passkey
answering a password sign-in's second-factor challenge, and the refusals (another origin, a
replayed or reused ceremony, a malformed credential, the step-up rule)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from conftest import PASSWORD
from gatehouse_server import GatehouseServer
from softauthn import Passkey, SoftAuthenticator, b64url, unb64url

from gatehouse import (
    AsyncClient,
    AuthResponse,
    Client,
    FailedPrecondition,
    InvalidArgument,
    ReauthenticationRequired,
    Unauthenticated,
)
from gatehouse.errors import SECOND_FACTOR_REQUIRED


def register(
    client: Client, token: str, authenticator: SoftAuthenticator, name: str = "Laptop"
) -> tuple[str, list[str]]:
    """Registers a passkey on ``authenticator``: (factor id, recovery codes)."""
    started = client.start_passkey_registration(name, token=token)
    credential = authenticator.create(json.loads(started.options_json))
    finished = client.finish_passkey_registration(json.dumps(credential), token=token)
    return finished.factor.id, list(finished.recovery_codes)


def assert_passkey_session(auth: AuthResponse, method: str = "hwk") -> None:
    assert auth.HasField("session") and auth.session_token.startswith("gate_")
    assert not auth.HasField("second_factor_required")
    assert auth.session.aal == 2
    assert {method, "mfa"} <= set(auth.session.amr), list(auth.session.amr)


def test_register_a_passkey_and_sign_in_with_it_alone(
    server: GatehouseServer, email: str
) -> None:
    authenticator = SoftAuthenticator()
    with Client(server.target) as client:
        signed_up = client.sign_up(email, PASSWORD, "Passkey Reader")
        token = signed_up.session_token

        started = client.start_passkey_registration("Laptop", token=token)
        assert started.expires_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
        options = json.loads(started.options_json)
        # PublicKeyCredentialCreationOptionsJSON: binary members as base64url strings.
        assert options["rp"]["id"] == "localhost" and options["rp"]["name"]
        assert unb64url(options["challenge"]) and "=" not in options["challenge"]
        assert unb64url(options["user"]["id"]) and options["user"]["name"] == email
        selection = options["authenticatorSelection"]
        assert selection["residentKey"] == "required"
        assert selection["userVerification"] == "required"
        assert -7 in [p["alg"] for p in options["pubKeyCredParams"]]

        credential = authenticator.create(options)
        finished = client.finish_passkey_registration(json.dumps(credential), token=token)
        factor = finished.factor
        assert (factor.kind, factor.name) == ("passkey", "Laptop")
        assert not factor.backup_eligible and not factor.backed_up
        codes = list(finished.recovery_codes)
        assert len(codes) == 10, "the first second factor comes with the recovery codes"
        listed = client.list_factors(token=token)
        assert [f.id for f in listed.factors] == [factor.id]
        assert listed.recovery_codes_remaining == 10

        # No pending registration any more.
        with pytest.raises(FailedPrecondition):
            client.finish_passkey_registration(json.dumps(credential), token=token)

        # Passwordless: any discoverable credential of the relying party.
        ceremony = client.start_passkey_sign_in()
        assert ceremony.challenge_id
        assert ceremony.expires_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
        request = json.loads(ceremony.options_json)
        assert unb64url(request["challenge"])
        assert not request.get("allowCredentials"), "discoverable: no credential is named"
        assertion = authenticator.get(request)
        signed_in = client.finish_passkey_sign_in(ceremony.challenge_id, json.dumps(assertion))
        assert_passkey_session(signed_in)
        assert "pwd" not in signed_in.session.amr
        assert signed_in.user.email == email
        me = client.get_session(token=signed_in.session_token)
        assert me.session.aal == 2
        used = client.list_factors(token=signed_in.session_token).factors[0]
        assert used.HasField("last_used_at")

        # The ceremony is single use; an old assertion does not answer a new ceremony.
        with pytest.raises(Unauthenticated):
            client.finish_passkey_sign_in(ceremony.challenge_id, json.dumps(assertion))
        again = client.start_passkey_sign_in()
        with pytest.raises(Unauthenticated):
            client.finish_passkey_sign_in(again.challenge_id, json.dumps(assertion))


def test_a_synced_passkey_is_a_software_key(server: GatehouseServer, email: str) -> None:
    authenticator = SoftAuthenticator(synced=True)
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Synced Reader").session_token
        factor_id, _ = register(client, token, authenticator, name="Phone")
        [factor] = client.list_factors(token=token).factors
        assert factor.id == factor_id and factor.backup_eligible and factor.backed_up
        ceremony = client.start_passkey_sign_in()
        signed_in = client.finish_passkey_sign_in(
            ceremony.challenge_id, json.dumps(authenticator.get(json.loads(ceremony.options_json)))
        )
        assert_passkey_session(signed_in, "swk")


def test_a_passkey_answers_the_second_factor_challenge(
    server: GatehouseServer, email: str
) -> None:
    authenticator = SoftAuthenticator()
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Two Step Reader").session_token
        register(client, token, authenticator)

        answer = client.sign_in(email, PASSWORD)
        assert not answer.HasField("session")
        challenge = answer.second_factor_required
        assert set(challenge.methods) == {"passkey", "recovery_code"}
        options = json.loads(challenge.passkey_options_json)
        assert [c["id"] for c in options["allowCredentials"]] == [authenticator.passkeys[0].id]

        # A passkey answer made for another origin is refused; the challenge stays usable.
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(
                challenge.challenge_token,
                passkey_credential_json=json.dumps(
                    authenticator.get(options, origin="https://evil.example")
                ),
            )
        done = client.complete_second_factor(
            challenge.challenge_token,
            passkey_credential_json=json.dumps(authenticator.get(options)),
        )
        assert_passkey_session(done)
        assert "pwd" in done.session.amr

        with pytest.raises(ValueError, match="exactly one"):
            client.complete_second_factor(
                challenge.challenge_token, totp_code="123456", passkey_credential_json="{}"
            )

        # A user with a passkey and an authenticator app is offered both.
        strong = done.session_token
        started = client.start_totp_enrollment("Phone", token=strong)
        totp = pyotp.TOTP(started.secret)
        confirmed = client.confirm_totp_enrollment(totp.now(), token=strong)
        assert len(confirmed.recovery_codes) == 10
        both = client.sign_in(email, PASSWORD).second_factor_required
        assert set(both.methods) == {"totp", "passkey", "recovery_code"}
        assert both.passkey_options_json
        code = client.complete_second_factor(
            both.challenge_token, totp_code=totp.at(time.time() + 30)
        )
        assert {"pwd", "otp", "mfa"} <= set(code.session.amr)


def creation_options(user_handle: bytes = b"someone") -> dict[str, Any]:
    """Creation options Gatehouse never issued (a challenge it does not know)."""
    return {
        "rp": {"id": "localhost", "name": "Gatehouse"},
        "user": {"id": b64url(user_handle), "name": "x", "displayName": "x"},
        "challenge": b64url(b"not a challenge Gatehouse issued"),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }


def unregistered_like(authenticator: SoftAuthenticator) -> Passkey:
    """A passkey for the same RP and user as ``authenticator``'s first, never registered."""
    other = SoftAuthenticator()
    other.create(creation_options(authenticator.passkeys[0].user_handle))
    return other.passkeys[0]


def test_refused_registrations(server: GatehouseServer, email: str) -> None:
    authenticator = SoftAuthenticator()
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Careful Reader").session_token

        with pytest.raises(FailedPrecondition):  # nothing started
            client.finish_passkey_registration(
                json.dumps(authenticator.create(creation_options())), token=token
            )

        for bad in ("not json", json.dumps({"id": "x"})):
            client.start_passkey_registration(token=token)
            with pytest.raises(InvalidArgument) as refused:
                client.finish_passkey_registration(bad, token=token)
            assert [v.field for v in refused.value.field_violations] == ["credential_json"]

        for origin, options in (
            ("https://evil.example", None),  # another origin
            (None, creation_options()),  # another challenge
        ):
            started = client.start_passkey_registration(token=token)
            credential = authenticator.create(
                options or json.loads(started.options_json), origin=origin
            )
            with pytest.raises(InvalidArgument) as wrong:
                client.finish_passkey_registration(json.dumps(credential), token=token)
            assert [v.field for v in wrong.value.field_violations] == ["credential_json"]
        assert list(client.list_factors(token=token).factors) == []

        # Once the user has a second factor, only a sign-in that used it may add another.
        register(client, token, SoftAuthenticator())
        with pytest.raises(ReauthenticationRequired) as weak:
            client.start_passkey_registration(token=token)
        assert weak.value.reason == SECOND_FACTOR_REQUIRED

        with pytest.raises(Unauthenticated):
            client.start_passkey_registration(token="gate_not-a-session")


def test_refused_passkey_sign_ins(server: GatehouseServer, email: str) -> None:
    authenticator = SoftAuthenticator()
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Refused Reader").session_token
        register(client, token, authenticator)
        stranger = SoftAuthenticator(passkeys=[unregistered_like(authenticator)])
        for make in (
            lambda o: authenticator.get(o, origin="https://evil.example"),
            lambda o: stranger.get(o),  # a credential Gatehouse does not know
        ):
            ceremony = client.start_passkey_sign_in()
            with pytest.raises(Unauthenticated):
                client.finish_passkey_sign_in(
                    ceremony.challenge_id, json.dumps(make(json.loads(ceremony.options_json)))
                )
        ceremony = client.start_passkey_sign_in()
        with pytest.raises(InvalidArgument) as malformed:
            client.finish_passkey_sign_in(ceremony.challenge_id, "{}")
        assert [v.field for v in malformed.value.field_violations] == ["credential_json"]
        assertion = json.dumps(authenticator.get(json.loads(ceremony.options_json)))
        with pytest.raises(InvalidArgument) as unknown:
            client.finish_passkey_sign_in("not-a-ceremony", assertion)
        assert [v.field for v in unknown.value.field_violations] == ["challenge_id"]
        # A malformed credential did not spend the ceremony.
        assert_passkey_session(client.finish_passkey_sign_in(ceremony.challenge_id, assertion))


async def test_async_client_passkeys(server: GatehouseServer, email: str) -> None:
    authenticator = SoftAuthenticator()
    async with AsyncClient(server.target) as client:
        token = (await client.sign_up(email, PASSWORD, "Async Passkey Reader")).session_token
        started = await client.start_passkey_registration(token=token)
        credential = authenticator.create(json.loads(started.options_json))
        finished = await client.finish_passkey_registration(json.dumps(credential), token=token)
        assert finished.factor.kind == "passkey" and finished.factor.name == "Passkey"
        ceremony = await client.start_passkey_sign_in()
        assertion = authenticator.get(json.loads(ceremony.options_json))
        signed_in = await client.finish_passkey_sign_in(
            ceremony.challenge_id, json.dumps(assertion)
        )
        assert_passkey_session(signed_in)
        challenge = (await client.sign_in(email, PASSWORD)).second_factor_required
        done = await client.complete_second_factor(
            challenge.challenge_token,
            passkey_credential_json=json.dumps(
                authenticator.get(json.loads(challenge.passkey_options_json))
            ),
        )
        assert_passkey_session(done)
