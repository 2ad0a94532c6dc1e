"""Second factors through the clients against the real gatehouse (both backends): enrolling
an authenticator app (TOTP, codes from pyotp), sign-in with the second factor, replayed and
reused codes refused, recovery codes, removal, the step-up errors and the operator reset.

The server's clock is the real clock. A TOTP code is accepted once per 30-second step, so a
test that needs a second code uses the next step's (``totp.at(time.time() + 30)``, within the
server's one-step tolerance) or a recovery code. Each account gets few wrong codes: they count
towards its lockout (5 by default)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from conftest import BACKENDS, PASSWORD, start_server
from gatehouse_server import DEFAULT_ENV, SERVICE_API_KEY, GatehouseServer

from gatehouse import (
    AlreadyExists,
    AsyncClient,
    AsyncServiceClient,
    AuthResponse,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ReauthenticationRequired,
    ServiceClient,
    Unauthenticated,
)
from gatehouse.errors import REAUTHENTICATION_REQUIRED, SECOND_FACTOR_REQUIRED

RECOVERY_CODE = re.compile(r"^[a-z0-9]{5}-[a-z0-9]{5}$")
BASE32 = re.compile(r"^[A-Z2-7]+$")


@dataclass
class Enrolled:
    """A user with an active authenticator app."""

    email: str
    user_id: str
    token: str  # the sign-up session: aal 1, from before the factor existed
    totp: pyotp.TOTP
    factor_id: str
    recovery_codes: list[str]
    confirm_code: str  # the code that confirmed the enrollment (so it is spent)


def enrol(client: Client, email: str, name: str = "Phone") -> Enrolled:
    signed_up = client.sign_up(email, PASSWORD, "Two Step Reader")
    token = signed_up.session_token
    started = client.start_totp_enrollment(name, token=token)
    totp = pyotp.TOTP(started.secret)
    code = totp.now()
    confirmed = client.confirm_totp_enrollment(code, token=token)
    return Enrolled(
        email=email,
        user_id=signed_up.user.id,
        token=token,
        totp=totp,
        factor_id=confirmed.factor.id,
        recovery_codes=list(confirmed.recovery_codes),
        confirm_code=code,
    )


def next_code(totp: pyotp.TOTP) -> str:
    """The next step's code: valid now (one step of tolerance) and unused."""
    return totp.at(time.time() + 30)


def challenge_of(auth: AuthResponse) -> str:
    """The challenge token of a sign-in that needs the second factor (asserting the shape)."""
    assert not auth.HasField("session") and auth.session_token == ""
    assert auth.HasField("second_factor_required")
    return auth.second_factor_required.challenge_token


def assert_two_factor_session(auth: AuthResponse, proof: str) -> None:
    assert auth.HasField("session") and auth.session_token.startswith("gate_")
    assert not auth.HasField("second_factor_required")
    assert auth.session.aal == 2
    assert {"pwd", proof, "mfa"} <= set(auth.session.amr), list(auth.session.amr)
    assert auth.session.HasField("auth_time")


def test_enrol_then_sign_in_with_the_authenticator_app(
    server: GatehouseServer, email: str
) -> None:
    with Client(server.target) as client:
        signed_up = client.sign_up(email, PASSWORD, "Two Step Reader")
        token = signed_up.session_token
        assert signed_up.session.aal == 1 and list(signed_up.session.amr) == ["pwd"]
        assert signed_up.session.HasField("auth_time")

        started = client.start_totp_enrollment("Phone", token=token)
        assert BASE32.match(started.secret) and len(started.secret) >= 16
        assert started.otpauth_uri.startswith("otpauth://totp/")
        assert f"secret={started.secret}" in started.otpauth_uri
        assert "<svg" in started.qr_code_svg
        expires = started.expires_at.ToDatetime(tzinfo=UTC)
        assert expires > datetime.now(UTC)
        totp = pyotp.TOTP(started.secret)

        wrong_code = "000000" if totp.now() != "000000" else "111111"
        with pytest.raises(InvalidArgument) as wrong:
            client.confirm_totp_enrollment(wrong_code, token=token)
        assert [v.field for v in wrong.value.field_violations] == ["code"]

        code = totp.now()
        confirmed = client.confirm_totp_enrollment(code, token=token)
        assert confirmed.factor.id == started.factor_id
        assert (confirmed.factor.kind, confirmed.factor.name) == ("totp", "Phone")
        codes = list(confirmed.recovery_codes)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(RECOVERY_CODE.match(c) for c in codes), codes

        listed = client.list_factors(token=token)
        assert [f.id for f in listed.factors] == [started.factor_id]
        assert listed.recovery_codes_remaining == 10
        assert not listed.factors[0].HasField("last_used_at"), "no sign-in used it yet"

        # The password alone no longer signs in: a challenge instead of a session.
        answer = client.sign_in(email, PASSWORD)
        challenge = challenge_of(answer)
        assert challenge
        assert set(answer.second_factor_required.methods) == {"totp", "recovery_code"}
        challenge_expires = answer.second_factor_required.expires_at.ToDatetime(tzinfo=UTC)
        now = datetime.now(UTC)
        assert now < challenge_expires <= now + timedelta(minutes=5, seconds=5)

        # The code that confirmed the enrollment is spent.
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(challenge, totp_code=code)
        signed_in = client.complete_second_factor(challenge, totp_code=next_code(totp))
        assert_two_factor_session(signed_in, "otp")
        assert signed_in.user.email == email
        me = client.get_session(token=signed_in.session_token)
        assert me.session.aal == 2 and "mfa" in me.session.amr
        assert client.list_factors(token=signed_in.session_token).factors[0].HasField(
            "last_used_at"
        )

        # The challenge is single use once it succeeded.
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(challenge, recovery_code=codes[0])


def test_replayed_totp_code_is_refused(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client:
        user = enrol(client, email)
        code = next_code(user.totp)
        first = client.complete_second_factor(
            challenge_of(client.sign_in(email, PASSWORD)), totp_code=code
        )
        assert_two_factor_session(first, "otp")

        challenge = challenge_of(client.sign_in(email, PASSWORD))
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(challenge, totp_code=code)
        # A refused code leaves the challenge usable (until it expires): a recovery code works.
        second = client.complete_second_factor(challenge, recovery_code=user.recovery_codes[0])
        assert_two_factor_session(second, "rec")
        assert second.session.id != first.session.id

        with pytest.raises(ValueError, match="exactly one"):
            client.complete_second_factor(challenge)
        with pytest.raises(ValueError, match="exactly one"):
            client.complete_second_factor(challenge, totp_code=code, recovery_code="x")


def test_recovery_codes_are_single_use_and_regenerated(
    server: GatehouseServer, email: str
) -> None:
    with Client(server.target) as client:
        user = enrol(client, email)
        codes = user.recovery_codes
        used = client.complete_second_factor(
            challenge_of(client.sign_in(email, PASSWORD)), recovery_code=codes[0]
        )
        assert_two_factor_session(used, "rec")
        token = used.session_token

        challenge = challenge_of(client.sign_in(email, PASSWORD))
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(challenge, recovery_code=codes[0])
        # Case and dashes do not matter.
        loose = codes[1].upper().replace("-", "")
        assert_two_factor_session(
            client.complete_second_factor(challenge, recovery_code=loose), "rec"
        )
        assert client.list_factors(token=token).recovery_codes_remaining == 8

        fresh = client.regenerate_recovery_codes(token=token)
        assert len(fresh) == 10 and all(RECOVERY_CODE.match(c) for c in fresh)
        assert not set(fresh) & set(codes)
        assert client.list_factors(token=token).recovery_codes_remaining == 10

        challenge = challenge_of(client.sign_in(email, PASSWORD))
        with pytest.raises(Unauthenticated):
            client.complete_second_factor(challenge, recovery_code=codes[2])
        assert_two_factor_session(
            client.complete_second_factor(challenge, recovery_code=fresh[0]), "rec"
        )
        assert client.list_factors(token=token).recovery_codes_remaining == 9


def test_changing_factors_needs_a_sign_in_with_the_second_factor(
    server: GatehouseServer, email: str
) -> None:
    with Client(server.target) as client:
        user = enrol(client, email)
        # The sign-up session (aal 1) predates the factor: changes need a stronger sign-in.
        for change in (
            lambda: client.regenerate_recovery_codes(token=user.token),
            lambda: client.remove_factor(user.factor_id, token=user.token),
        ):
            with pytest.raises(ReauthenticationRequired) as weak:
                change()
            assert weak.value.reason == SECOND_FACTOR_REQUIRED
            assert weak.value.second_factor_required
            assert isinstance(weak.value, FailedPrecondition)

        strong = client.complete_second_factor(
            challenge_of(client.sign_in(email, PASSWORD)), totp_code=next_code(user.totp)
        ).session_token
        with pytest.raises(AlreadyExists):
            client.start_totp_enrollment("Second phone", token=strong)
        assert len(client.regenerate_recovery_codes(token=strong)) == 10


def test_remove_factor(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client:
        user = enrol(client, email)
        other = enrol(client, f"other-{uuid.uuid4().hex[:12]}@example.com")
        token = client.complete_second_factor(
            challenge_of(client.sign_in(email, PASSWORD)), recovery_code=user.recovery_codes[0]
        ).session_token

        with pytest.raises(NotFound):
            client.remove_factor(str(uuid.uuid4()), token=token)
        with pytest.raises(NotFound):
            client.remove_factor(other.factor_id, token=token)  # another user's factor

        client.remove_factor(user.factor_id, token=token)
        listed = client.list_factors(token=token)
        assert list(listed.factors) == [] and listed.recovery_codes_remaining == 0

        # The password alone signs in again, and the recovery codes are gone with the factor.
        plain = client.sign_in(email, PASSWORD)
        assert plain.HasField("session") and plain.session_token.startswith("gate_")
        assert not plain.HasField("second_factor_required")
        assert plain.session.aal == 1 and list(plain.session.amr) == ["pwd"]
        with pytest.raises(FailedPrecondition) as none:
            client.regenerate_recovery_codes(token=plain.session_token)
        assert not isinstance(none.value, ReauthenticationRequired)

        # The other user still needs their second factor.
        assert challenge_of(client.sign_in(other.email, PASSWORD))


async def test_async_client_second_factor(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client:
        token = (await client.sign_up(email, PASSWORD, "Async Reader")).session_token
        started = await client.start_totp_enrollment(token=token)
        assert started.factor_id
        totp = pyotp.TOTP(started.secret)
        confirmed = await client.confirm_totp_enrollment(totp.now(), token=token)
        assert confirmed.factor.name, "a default name"
        answer = await client.sign_in(email, PASSWORD)
        done = await client.complete_second_factor(
            challenge_of(answer), totp_code=next_code(totp)
        )
        assert_two_factor_session(done, "otp")
        strong = done.session_token
        listed = await client.list_factors(token=strong)
        assert [f.id for f in listed.factors] == [started.factor_id]
        codes = await client.regenerate_recovery_codes(token=strong)
        assert len(codes) == 10
        await client.remove_factor(started.factor_id, token=strong)
        assert list((await client.list_factors(token=strong)).factors) == []


async def test_operator_reset_of_second_factors(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client, ServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        user = enrol(client, email)
        strong = client.complete_second_factor(
            challenge_of(client.sign_in(email, PASSWORD)), recovery_code=user.recovery_codes[0]
        ).session_token

        assert svc.reset_second_factors(user.user_id) == 1
        for token in (user.token, strong):
            with pytest.raises(Unauthenticated):
                client.get_session(token=token)  # the reset ended their sessions
        plain = client.sign_in(email, PASSWORD)
        assert plain.HasField("session") and not plain.HasField("second_factor_required")
        assert list(client.list_factors(token=plain.session_token).factors) == []
        with pytest.raises(NotFound):
            svc.reset_second_factors(str(uuid.uuid4()))

    async with AsyncServiceClient(server.target, api_key=SERVICE_API_KEY) as asvc:
        assert await asvc.reset_second_factors(user.user_id) == 0


def test_export_holds_factors_but_no_secret(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client:
        signed_up = client.sign_up(email, PASSWORD, "Exported Reader")
        started = client.start_totp_enrollment("Phone", token=signed_up.session_token)
        totp = pyotp.TOTP(started.secret)
        codes = list(
            client.confirm_totp_enrollment(totp.now(), token=signed_up.session_token).recovery_codes
        )
        challenge = challenge_of(client.sign_in(email, PASSWORD))
        token = client.complete_second_factor(challenge, recovery_code=codes[0]).session_token
        pending = challenge_of(client.sign_in(email, PASSWORD))

        document = client.export_my_data(token=token)
        tables = document["tables"]
        [factor] = tables["factors"]
        assert factor["id"] == started.factor_id
        assert (factor["kind"], factor["name"]) == ("totp", "Phone")
        assert len(tables["recovery_codes"]) == 10
        assert sum(1 for c in tables["recovery_codes"] if c["used_at"]) == 1
        assert len(tables["second_factor_challenges"]) == 2
        text = json.dumps(document)
        for secret in (started.secret, challenge, pending, *codes):
            assert secret not in text
        assert "gate_" not in text and "gatemfa_" not in text


@pytest.fixture(params=BACKENDS)
def short_step_up_server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """A gatehouse that lets only sign-ins at most 2 seconds old change factors."""
    srv = start_server(request.param, env={**DEFAULT_ENV, "GATEHOUSE_STEP_UP_MAX_AGE": "2s"})
    yield srv
    srv.stop()


def test_an_old_sign_in_must_reauthenticate(
    short_step_up_server: GatehouseServer, email: str
) -> None:
    with Client(short_step_up_server.target) as client:
        token = client.sign_up(email, PASSWORD, "Slow Reader").session_token
        started = client.start_totp_enrollment("Phone", token=token)
        time.sleep(2.5)
        with pytest.raises(ReauthenticationRequired) as old:
            client.confirm_totp_enrollment(pyotp.TOTP(started.secret).now(), token=token)
        assert old.value.reason == REAUTHENTICATION_REQUIRED
        assert not old.value.second_factor_required
        assert old.value.max_age_seconds == 2
        # A new sign-in may.
        fresh = client.sign_in(email, PASSWORD).session_token
        assert client.start_totp_enrollment("Phone", token=fresh).secret
