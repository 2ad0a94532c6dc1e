"""Access tokens, JWKS, and the ServiceClient (introspection, revocation watch, admin API)
against the real gatehouse (both backends); the watch's reconnect logic without a server."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest
from conftest import PASSWORD, browser
from gatehouse_server import SERVICE_API_KEY, GatehouseServer

from gatehouse import (
    AsyncClient,
    AsyncServiceClient,
    Client,
    InvalidArgument,
    NotFound,
    RevocationEvent,
    ServiceClient,
    TlsConfig,
    Unauthenticated,
)
from gatehouse._proto.gatehouse.v1 import token_pb2
from gatehouse.service import RevocationWatch


def jwt_header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return header


def test_access_token_jwks_and_introspection(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client, ServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        auth = client.sign_up(email, PASSWORD, "Mesh Reader")
        token = auth.session_token
        issued = client.issue_access_token("books-api", token=token)
        assert issued.token_type == "Bearer" and issued.HasField("expires_at")
        kids = {key["kid"] for key in client.get_jwks()["keys"]}
        assert jwt_header(issued.access_token)["kid"] in kids
        assert httpx.get(f"{server.http_base}/.well-known/jwks.json").json() == client.get_jwks()
        with pytest.raises(InvalidArgument) as bad:
            client.issue_access_token("not-an-audience", token=token)
        assert bad.value.field_violations[0].field == "audience"

        session = svc.introspect_token(token)
        assert session.active and session.token_type == "session"
        assert session.sub == auth.user.id and session.sid == auth.session.id
        assert session.email == email
        access = svc.introspect_token(issued.access_token)
        assert access.active and access.token_type == "access_token"
        assert access.aud == "books-api" and access.sid == auth.session.id

        client.sign_out(token=token)
        assert not svc.introspect_token(token).active
        assert not svc.introspect_token(issued.access_token).active, "its session was revoked"
        assert not svc.introspect_token("gate_" + "A" * 43).active

        with ServiceClient(server.target, api_key="wrong-key") as wrong:
            with pytest.raises(Unauthenticated):
                wrong.introspect_token(issued.access_token)
    with pytest.raises(ValueError, match="service credentials required"):
        ServiceClient(server.target)
    with pytest.raises(ValueError, match="service credentials required"):
        ServiceClient(server.target, tls=TlsConfig())


def _drain(watch: RevocationWatch, into: queue.Queue[RevocationEvent]) -> None:
    for event in watch:
        into.put(event)


def test_sync_watch_receives_revocations_and_resumes(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client, ServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        watch = svc.watch_revocations()
        events: queue.Queue[RevocationEvent] = queue.Queue()
        thread = threading.Thread(target=_drain, args=(watch, events), daemon=True)
        thread.start()
        try:
            assert watch.connected.wait(5), "watch never connected"
            first = client.sign_up(email, PASSWORD, "Watched")
            second = client.sign_in(email, PASSWORD)
            client.sign_out(token=first.session_token)
            third = client.sign_in(email, PASSWORD).session_token
            client.revoke_session(second.session.id, token=third)
            seen: dict[str, RevocationEvent] = {}
            while not {first.session.id, second.session.id} <= seen.keys():
                event = events.get(timeout=2)
                seen[event.session_id] = event
            assert seen[first.session.id].reason == "sign_out"
            assert seen[first.session.id].user_id == first.user.id
            assert seen[second.session.id].reason == "revoked"
            assert watch.last_id >= seen[second.session.id].id
        finally:
            watch.close()
            thread.join(5)
        assert not thread.is_alive(), "close() ends the iteration"

        # A watcher resuming after an id gets the backlog since then.
        resumed = svc.watch_revocations(after_id=seen[first.session.id].id - 1)
        try:
            ids = [next(resumed).session_id, next(resumed).session_id]
            assert ids == [first.session.id, second.session.id]
        finally:
            resumed.close()


def test_admin_api(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client, ServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        auth = client.sign_up(email, PASSWORD, "Admin Target")
        user_id = auth.user.id
        listed = svc.list_users(email_filter=email.split("@")[0])
        assert [u.user.id for u in listed.users] == [user_id]
        assert [u.user.email for u in svc.iter_users(email_filter=email)] == [email]
        assert svc.get_user(user_id).user.email == email

        disabled = svc.disable_user(user_id)
        assert disabled.HasField("disabled_at")
        with pytest.raises(Unauthenticated):
            client.get_session(token=auth.session_token)
        with pytest.raises(Unauthenticated):
            client.sign_in(email, PASSWORD)
        assert not svc.enable_user(user_id).HasField("disabled_at")

        client.sign_in(email, PASSWORD)
        client.sign_in(email, PASSWORD)
        assert svc.revoke_user_sessions(user_id) == 2
        events = [e.event for e in svc.list_user_audit_events(user_id).events]
        assert "sign_up" in events or "user_created" in events or events, events

        svc.delete_user(user_id)
        with pytest.raises(NotFound):
            svc.get_user(user_id)
        with pytest.raises(Unauthenticated):
            client.sign_in(email, PASSWORD)

        # A user session is not a service credential.
        with Client(server.target) as plain:
            token = plain.sign_up("x" + email, PASSWORD, "Not A Service").session_token
        channel = grpc.insecure_channel(server.target)
        try:
            introspect = channel.unary_unary(
                "/gatehouse.v1.TokenService/IntrospectToken",
                request_serializer=token_pb2.IntrospectTokenRequest.SerializeToString,
                response_deserializer=token_pb2.IntrospectTokenResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as refused:
                introspect(
                    token_pb2.IntrospectTokenRequest(token=token),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=5,
                )
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        finally:
            channel.close()


async def test_async_service_client(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client, AsyncServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        auth = await client.sign_up(email, PASSWORD, "Async Mesh")
        issued = await client.issue_access_token("search-api", token=auth.session_token)
        assert jwt_header(issued.access_token)["kid"] in {
            k["kid"] for k in (await client.get_jwks())["keys"]
        }
        assert (await svc.introspect_token(issued.access_token)).aud == "search-api"

        watch = svc.watch_revocations()
        next_event = asyncio.ensure_future(watch.__anext__())
        await asyncio.wait_for(watch.connected.wait(), 5)
        await client.sign_out(token=auth.session_token)
        event = await asyncio.wait_for(next_event, 2)
        assert event.session_id == auth.session.id and event.reason == "sign_out"
        assert not (await svc.introspect_token(issued.access_token)).active
        watch.close()

        again = await client.sign_in(email, PASSWORD)
        assert [u.user.id async for u in svc.iter_users(email_filter=email)] == [auth.user.id]
        await svc.disable_user(auth.user.id)
        with pytest.raises(Unauthenticated):
            await client.get_session(token=again.session_token)
        await svc.enable_user(auth.user.id)
        assert await svc.revoke_user_sessions(auth.user.id) == 0
        assert (await svc.list_user_audit_events(auth.user.id, page_size=1)).events
        await svc.delete_user(auth.user.id)
        with pytest.raises(NotFound):
            await svc.get_user(auth.user.id)


async def test_admin_disable_makes_the_web_session_401(
    server: GatehouseServer, example: ModuleType, email: str
) -> None:
    app = example.create_app(server.target, cookie_secure=True)
    async with browser(app) as web, AsyncServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        signed_up = await web.post(
            "/auth/sign-up", json={"email": email, "password": PASSWORD, "name": "Web"}
        )
        assert signed_up.status_code == 201
        assert (await web.get("/auth/session")).status_code == 200
        await svc.disable_user(signed_up.json()["user"]["id"])
        assert (await web.get("/auth/session")).status_code == 401
        assert (await web.get("/api/v1/profile")).status_code == 401
    await app.state.gatehouse.client.close()


# The reconnect logic, with a scripted stand-in for the gRPC stream.


class _Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "scripted"

    def trailing_metadata(self) -> None:
        return None


class _Stream:
    def __init__(self, items: list[Any]) -> None:
        self._items = iter(items)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return True

    def cancel(self) -> bool:
        return True

    def __iter__(self) -> Iterator[RevocationEvent]:
        return self

    def __next__(self) -> RevocationEvent:
        item = next(self._items)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, RevocationEvent)
        return item


def test_watch_reconnects_and_resumes_after_unavailable_and_data_loss() -> None:
    scripts = [
        [RevocationEvent(id=5, session_id="a"), _Failure(grpc.StatusCode.UNAVAILABLE)],
        [RevocationEvent(id=6, session_id="b"), _Failure(grpc.StatusCode.DATA_LOSS)],
        [],  # the server ended the stream: reconnect too
        [_Failure(grpc.StatusCode.PERMISSION_DENIED)],
    ]
    requests: list[int] = []

    def rpc(request: token_pb2.WatchRevocationsRequest, metadata: Any) -> _Stream:
        requests.append(request.after_id)
        return _Stream(scripts[len(requests) - 1])

    from gatehouse import PermissionDenied, RetryPolicy

    watch = RevocationWatch(rpc, (), 3, RetryPolicy(initial_backoff=0, max_backoff=0))  # type: ignore[arg-type]
    assert [next(watch).session_id, next(watch).session_id] == ["a", "b"]
    with pytest.raises(PermissionDenied):
        next(watch)
    assert requests == [3, 5, 6, 6]
    assert watch.reconnects == 3 and watch.last_id == 6
