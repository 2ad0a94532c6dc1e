"""The sync and async facades against the real gatehouse (both backends), and their retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from conftest import PASSWORD, unique_ip
from gatehouse_server import GatehouseServer, free_port

import gatehouse
from gatehouse import (
    AlreadyExists,
    AsyncClient,
    Client,
    FailedPrecondition,
    InvalidArgument,
    LearningStyle,
    NotFound,
    Profile,
    ProgrammingLevel,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)

NEW_PASSWORD = "a brand new passphrase"


def test_sync_client_covers_every_rpc(server: GatehouseServer, email: str) -> None:
    ip = unique_ip()
    with Client(server.target) as client:
        profile = Profile(
            consent_given=True,
            programming_level=ProgrammingLevel.PROGRAMMING_LEVEL_INTERMEDIATE,
            learning_style=LearningStyle.LEARNING_STYLE_VISUAL,
        )
        signed_up = client.sign_up(
            email, PASSWORD, "Sync Reader", profile, client_ip=ip, user_agent="sync/1"
        )
        assert signed_up.session_token.startswith("gate_")
        assert signed_up.session.ip_address == ip
        assert signed_up.session.user_agent == "sync/1"
        token = signed_up.session_token

        me = client.get_session(token=token)
        assert me.user.email == email and me.session.current

        other = client.sign_in(email, PASSWORD)
        assert other.session_token != token
        sessions = client.list_sessions(token=token)
        assert {s.id for s in sessions} == {signed_up.session.id, other.session.id}

        client.revoke_session(other.session.id, token=token)
        with pytest.raises(Unauthenticated):
            client.get_session(token=other.session_token)
        with pytest.raises(NotFound):
            client.revoke_session(str(uuid.uuid4()), token=token)

        third = client.sign_in(email, PASSWORD)
        assert client.revoke_other_sessions(token=token) == 1
        with pytest.raises(Unauthenticated):
            client.get_session(token=third.session_token)

        got = client.get_profile(token=token)
        assert got.programming_level == ProgrammingLevel.PROGRAMMING_LEVEL_INTERMEDIATE
        updated = client.update_profile(
            Profile(role="student", interests=["humanoids"]), ["role", "interests"], token=token
        )
        assert updated.role == "student" and list(updated.interests) == ["humanoids"]
        assert updated.learning_style == LearningStyle.LEARNING_STYLE_VISUAL, "unmasked field kept"
        cleared = client.update_profile(Profile(), ["role"], token=token)
        assert cleared.role == "" and list(cleared.interests) == ["humanoids"]

        fourth = client.sign_in(email, PASSWORD)
        revoked = client.change_password(
            PASSWORD, NEW_PASSWORD, token=token, revoke_other_sessions=True
        )
        assert revoked == 1
        with pytest.raises(Unauthenticated):
            client.get_session(token=fourth.session_token)

        client.sign_out(token=token)
        with pytest.raises(Unauthenticated):
            client.get_session(token=token)

        last = client.sign_in(email, NEW_PASSWORD).session_token
        client.delete_account(NEW_PASSWORD, token=last)
        with pytest.raises(Unauthenticated, match="invalid email or password"):
            client.sign_in(email, NEW_PASSWORD)


def test_sync_client_maps_status_to_exceptions(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client:
        with pytest.raises(InvalidArgument) as bad:
            client.sign_up("nope", "short", "Name")
        fields = {v.field for v in bad.value.field_violations}
        assert {"email", "password"} <= fields
        assert all(v.description for v in bad.value.field_violations)
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT

        token = client.sign_up(email, PASSWORD, "Reader").session_token
        with pytest.raises(AlreadyExists):
            client.sign_up(email, PASSWORD, "Reader")
        with pytest.raises(Unauthenticated):
            client.sign_in(email, "wrong password entirely")
        with pytest.raises(FailedPrecondition):
            client.update_profile(
                Profile(programming_level=ProgrammingLevel.PROGRAMMING_LEVEL_BEGINNER),
                ["programming_level"],
                token=token,
            )
        with pytest.raises(InvalidArgument) as mask:
            client.update_profile(Profile(), ["updated_at"], token=token)
        assert mask.value.field_violations[0].field.startswith("update_mask")
        with pytest.raises(Unauthenticated):
            client.get_profile(token="gate_" + "A" * 43)
        with pytest.raises(gatehouse.DeadlineExceeded):
            client.get_session(token=token, timeout=0.0)


async def test_async_client_round_trip_and_errors(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client:
        profile = Profile(consent_given=True, programming_languages=["rust"])
        auth = await client.sign_up(email, PASSWORD, "Async Reader", profile, user_agent="aio/1")
        token = auth.session_token
        assert auth.session.user_agent == "aio/1"
        assert (await client.get_session(token=token)).user.id == auth.user.id
        assert len(await client.list_sessions(token=token)) == 1
        other = await client.sign_in(email, PASSWORD)
        await client.revoke_session(other.session.id, token=token)
        await client.sign_in(email, PASSWORD)
        assert await client.revoke_other_sessions(token=token) == 1
        assert list((await client.get_profile(token=token)).programming_languages) == ["rust"]
        updated = await client.update_profile(Profile(role="mentor"), token=token)
        assert updated.role == "mentor" and list(updated.programming_languages) == ["rust"]
        assert await client.change_password(PASSWORD, NEW_PASSWORD, token=token) == 0

        with pytest.raises(AlreadyExists):
            await client.sign_up(email, PASSWORD, "Again")
        with pytest.raises(InvalidArgument) as bad:
            await client.sign_up("bad", PASSWORD, "Name")
        assert [v.field for v in bad.value.field_violations] == ["email"]
        with pytest.raises(FailedPrecondition):
            await client.update_profile(
                Profile(consent_given=False, software_background="x"),
                ["software_background", "consent_given"],
                token=token,
            )
        with pytest.raises(NotFound):
            await client.revoke_session(str(uuid.uuid4()), token=token)

        await client.sign_out(token=token)
        with pytest.raises(Unauthenticated):
            await client.get_session(token=token)
        final = (await client.sign_in(email, NEW_PASSWORD)).session_token
        await client.delete_account(NEW_PASSWORD, token=final)
        with pytest.raises(Unauthenticated):
            await client.sign_in(email, NEW_PASSWORD)


# Retries: against a port nothing listens on, every attempt is UNAVAILABLE.


class _CountingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.calls.append(details.method.rsplit("/", 1)[-1])
        return continuation(details, request)


class _AsyncCountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.calls.append(method.rsplit("/", 1)[-1])
        return await continuation(details, request)


TOKEN = "gate_" + "B" * 43
SAFE = ("get_session", "list_sessions", "get_profile", "list_audit_events", "list_consent_records")
UNSAFE: tuple[tuple[str, tuple[Any, ...], dict[str, Any]], ...] = (
    ("sign_up", ("a@example.com", PASSWORD, "A"), {}),
    ("sign_in", ("a@example.com", PASSWORD), {}),
    ("sign_out", (), {"token": TOKEN}),
    ("revoke_session", (str(uuid.uuid4()),), {"token": TOKEN}),
    ("revoke_other_sessions", (), {"token": TOKEN}),
    ("change_password", (PASSWORD, NEW_PASSWORD), {"token": TOKEN}),
    ("delete_account", (PASSWORD,), {"token": TOKEN}),
    ("update_profile", (Profile(role="x"), ["role"]), {"token": TOKEN}),
    ("send_verification_email", (), {"token": TOKEN}),
    ("verify_email", ("gatelink_" + "C" * 43,), {}),
    ("request_password_reset", ("a@example.com",), {}),
    ("reset_password", ("gatelink_" + "C" * 43, NEW_PASSWORD), {}),
    ("request_email_change", ("b@example.com", PASSWORD), {"token": TOKEN}),
    ("update_consent", ("learner_background", True), {"token": TOKEN}),
    ("export_my_data", (), {"token": TOKEN}),
)
RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


def test_sync_retries_only_safe_reads_after_unavailable() -> None:
    counter = _CountingInterceptor()
    with Client(f"127.0.0.1:{free_port()}", retry=RETRY, interceptors=[counter]) as client:
        for name in SAFE:
            counter.calls.clear()
            with pytest.raises(Unavailable):
                getattr(client, name)(token=TOKEN)
            assert len(counter.calls) == 3, name
        for name, args, kwargs in UNSAFE:
            counter.calls.clear()
            with pytest.raises(Unavailable):
                getattr(client, name)(*args, **kwargs)
            assert len(counter.calls) == 1, f"{name} must not be retried"
        counter.calls.clear()
        with pytest.raises(Unauthenticated):
            client.get_session(token="not a token\n")
        assert counter.calls == [], "a malformed token is refused without a call"


async def test_async_retries_only_safe_reads_after_unavailable() -> None:
    counter = _AsyncCountingInterceptor()
    client = AsyncClient(f"127.0.0.1:{free_port()}", retry=RETRY, interceptors=[counter])
    async with client:
        for name in SAFE:
            counter.calls.clear()
            with pytest.raises(Unavailable):
                await getattr(client, name)(token=TOKEN)
            assert len(counter.calls) == 3, name
        for name, args, kwargs in UNSAFE:
            counter.calls.clear()
            with pytest.raises(Unavailable):
                await getattr(client, name)(*args, **kwargs)
            assert len(counter.calls) == 1, f"{name} must not be retried"


def test_retries_stay_within_the_deadline() -> None:
    slow = RetryPolicy(max_attempts=50, initial_backoff=0.2, max_backoff=0.2, multiplier=1)
    counter = _CountingInterceptor()
    with Client(
        f"127.0.0.1:{free_port()}", retry=slow, timeout=0.5, interceptors=[counter]
    ) as client:
        with pytest.raises((Unavailable, gatehouse.DeadlineExceeded)):
            client.get_session(token=TOKEN)
    assert 1 <= len(counter.calls) < 10


# Email verification, password reset, email change and the audit log.

CONFIRM = "Confirm your email address"


def test_sync_client_recovery_and_audit(server: GatehouseServer, email: str) -> None:
    ip = unique_ip()
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Sync Reader", client_ip=ip).session_token

        client.send_verification_email(token=token, client_ip=ip, user_agent="sync/2")
        link = server.wait_for_link(email, CONFIRM, count=2)
        with pytest.raises(InvalidArgument) as bad:
            client.verify_email("gatelink_" + "A" * 43)
        assert [v.field for v in bad.value.field_violations] == ["token"]
        client.verify_email(link)
        assert client.get_session(token=token).user.email_verified
        with pytest.raises(FailedPrecondition):
            client.send_verification_email(token=token)

        client.request_password_reset(email, client_ip=ip)
        client.request_password_reset(f"nobody-{uuid.uuid4().hex}@example.com")
        reset = server.wait_for_link(email, "Reset your password")
        client.reset_password(reset, NEW_PASSWORD, client_ip=ip, user_agent="sync/2")
        with pytest.raises(Unauthenticated):
            client.get_session(token=token)
        with pytest.raises(Unauthenticated):
            client.sign_in(email, PASSWORD)
        token = client.sign_in(email, NEW_PASSWORD, client_ip=ip).session_token

        new_email = f"moved-{uuid.uuid4().hex[:12]}@example.com"
        with pytest.raises(InvalidArgument) as wrong:
            client.request_email_change(new_email, PASSWORD, token=token)
        assert [v.field for v in wrong.value.field_violations] == ["current_password"]
        client.request_email_change(new_email, NEW_PASSWORD, token=token, client_ip=ip)
        client.verify_email(server.wait_for_link(new_email, "Confirm your new email address"))
        assert client.get_session(token=token).user.email == new_email

        first = client.list_audit_events(token=token, page_size=3)
        assert len(first.events) == 3 and first.next_page_token
        everything = list(client.iter_audit_events(token=token, page_size=3))
        assert [e.id for e in everything[:3]] == [e.id for e in first.events]
        kinds = [e.event for e in everything]
        assert kinds[0] == "email_changed" and kinds[-1] == "sign_up"
        assert {"password_reset", "email_verified", "verification_sent"} <= set(kinds)
        reset_event = next(e for e in everything if e.event == "password_reset")
        assert reset_event.ip_address == ip and reset_event.user_agent == "sync/2"
        assert reset_event.outcome == "success" and reset_event.HasField("created_at")
        with pytest.raises(InvalidArgument):
            client.list_audit_events(token=token, page_size=1000)


async def test_async_client_recovery_and_audit(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client:
        token = (await client.sign_up(email, PASSWORD, "Async Reader")).session_token
        await client.send_verification_email(token=token)
        await client.verify_email(server.wait_for_link(email, CONFIRM, count=2))
        assert (await client.get_session(token=token)).user.email_verified
        with pytest.raises(FailedPrecondition):
            await client.send_verification_email(token=token)

        await client.request_password_reset(email)
        reset = server.wait_for_link(email, "Reset your password")
        with pytest.raises(InvalidArgument) as weak:
            await client.reset_password(reset, "short")
        assert [v.field for v in weak.value.field_violations] == ["new_password"]
        await client.reset_password(reset, NEW_PASSWORD)
        with pytest.raises(Unauthenticated):
            await client.get_session(token=token)
        token = (await client.sign_in(email, NEW_PASSWORD)).session_token

        new_email = f"moved-{uuid.uuid4().hex[:12]}@example.com"
        await client.request_email_change(new_email, NEW_PASSWORD, token=token)
        await client.verify_email(server.wait_for_link(new_email, "Confirm your new email address"))
        assert (await client.get_session(token=token)).user.email == new_email

        page = await client.list_audit_events(token=token)
        assert page.next_page_token == ""
        events = [e async for e in client.iter_audit_events(token=token, page_size=2)]
        assert [e.id for e in events] == [e.id for e in page.events]
        assert events[0].event == "email_changed"
