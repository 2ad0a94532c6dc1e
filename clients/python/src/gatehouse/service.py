"""Clients for trusted services: introspection, the revocation stream and the admin API.

These RPCs refuse end users. A service authenticates with an API key (sent as ``x-api-key``;
the server holds its SHA-256 in ``GATEHOUSE_ADMIN_API_KEYS=name=<hex>``) or with a client
certificate under mutual TLS (``TlsConfig(private_key=..., certificate_chain=...)``) whose
subject or SAN is in ``GATEHOUSE_ADMIN_CLIENT_NAMES``.

>>> with ServiceClient("gatehouse:50051", api_key=os.environ["GATEHOUSE_API_KEY"]) as svc:
...     info = svc.introspect_token(token)
...     for event in svc.watch_revocations():
...         cache.evict_session(event.session_id)
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Final

import grpc
import grpc.aio

from ._common import DEFAULT_TIMEOUT, Metadata, RetryPolicy, TlsConfig
from ._proto.gatehouse.v1 import admin_pb2, auth_pb2, token_pb2
from .client import _AsyncBase, _SyncBase
from .errors import GatehouseError, error_from_rpc_error

__all__ = [
    "AsyncRevocationWatch",
    "AsyncServiceClient",
    "RevocationWatch",
    "ServiceClient",
]

_API_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,1024}")
#: Stream failures after which a watch reconnects and resumes from its last event id.
RESUMABLE_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
#: Backoff between reconnection attempts of a watch (full jitter, capped).
WATCH_RETRY: Final = RetryPolicy(max_attempts=1, initial_backoff=0.05, max_backoff=2.0)


def _service_metadata(api_key: str | None, tls: TlsConfig | bool) -> Metadata:
    if api_key is not None:
        if not _API_KEY_RE.fullmatch(api_key):
            raise ValueError("api_key must be printable ASCII without spaces")
        return (("x-api-key", api_key),)
    if isinstance(tls, TlsConfig) and tls.certificate_chain is not None:
        return ()
    raise ValueError(
        "service credentials required: api_key, or tls=TlsConfig(private_key=..., "
        "certificate_chain=...) for mutual TLS"
    )


def _is_resumable(error: GatehouseError) -> bool:
    return error.code in RESUMABLE_CODES


class RevocationWatch(Iterator[token_pb2.RevocationEvent]):
    """An endless iterator of :class:`RevocationEvent`, from :meth:`ServiceClient.watch_revocations`.

    When the stream breaks with ``UNAVAILABLE`` (Gatehouse restarting, network) or
    ``DATA_LOSS`` (this watcher fell behind), or ends, it reconnects with backoff and resumes
    after ``last_id``, so no event is missed once one has been seen. Before the first event,
    ``last_id`` is the ``after_id`` given (0: "from now on"), so events revoked while the very
    first connection was down can be missed: callers that cache should treat ``reconnects``
    growing as "forget everything" (the FastAPI integration does). Other errors
    (``UNAUTHENTICATED``, ``PERMISSION_DENIED``) are raised. ``connected`` is set while the
    stream is open (the server has subscribed: revocations from then on will arrive).
    :meth:`close` (from any thread) ends the iteration.
    """

    def __init__(
        self,
        rpc: grpc.UnaryStreamMultiCallable[
            token_pb2.WatchRevocationsRequest, token_pb2.RevocationEvent
        ],
        metadata: Metadata,
        after_id: int,
        retry: RetryPolicy = WATCH_RETRY,
    ) -> None:
        self._rpc = rpc
        self._metadata = metadata
        self._retry = retry
        self._call: grpc.Call | None = None
        self._stream: Iterator[token_pb2.RevocationEvent] | None = None
        self._closed = threading.Event()
        self.last_id = after_id
        self.connected = threading.Event()
        #: How many times the stream was re-established after the first connection.
        self.reconnects = 0
        self._connections = 0

    def __iter__(self) -> RevocationWatch:
        return self

    def _connect(self) -> Iterator[token_pb2.RevocationEvent]:
        request = token_pb2.WatchRevocationsRequest(after_id=self.last_id)
        stream = self._rpc(request, metadata=self._metadata)
        self._call = stream
        self._stream = stream
        if self._closed.is_set():
            stream.cancel()
        # Response headers arrive once the server has subscribed (or the call failed).
        stream.initial_metadata()
        if stream.is_active():
            self._connections += 1
            self.reconnects = max(0, self._connections - 1)
            self.connected.set()
        return stream

    def __next__(self) -> token_pb2.RevocationEvent:
        attempt = 0
        while not self._closed.is_set():
            try:
                stream = self._stream or self._connect()
                event = next(stream)
            except StopIteration:
                error: GatehouseError | None = None
            except grpc.RpcError as err:
                if self._closed.is_set():
                    break
                error = error_from_rpc_error(err)
                if not _is_resumable(error):
                    self._drop()
                    raise error from err
            else:
                self.last_id = max(self.last_id, event.id)
                return event
            self._drop()
            attempt += 1
            self._closed.wait(self._retry.backoff(attempt))
        self._drop()
        raise StopIteration

    def _drop(self) -> None:
        self.connected.clear()
        self._stream = None
        self._call = None

    def close(self) -> None:
        """Ends the watch; a thread blocked in ``next()`` gets StopIteration."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()


class AsyncRevocationWatch(AsyncIterator[token_pb2.RevocationEvent]):
    """The asyncio :class:`RevocationWatch` (same resume and reconnect rules)."""

    def __init__(self, client: AsyncServiceClient, after_id: int, retry: RetryPolicy) -> None:
        self._client = client
        self._retry = retry
        self._call: grpc.aio.UnaryStreamCall[
            token_pb2.WatchRevocationsRequest, token_pb2.RevocationEvent
        ] | None = None
        self._closed = False
        self.last_id = after_id
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._connections = 0

    def __aiter__(self) -> AsyncRevocationWatch:
        return self

    async def _connect(
        self,
    ) -> grpc.aio.UnaryStreamCall[token_pb2.WatchRevocationsRequest, token_pb2.RevocationEvent]:
        request = token_pb2.WatchRevocationsRequest(after_id=self.last_id)
        call = self._client._current().token.WatchRevocations(
            request, metadata=self._client._service_metadata
        )
        self._call = call
        await call.initial_metadata()
        if not call.done():
            self._connections += 1
            self.reconnects = max(0, self._connections - 1)
            self.connected.set()
        return call

    async def __anext__(self) -> token_pb2.RevocationEvent:
        attempt = 0
        while not self._closed:
            try:
                call = self._call or await self._connect()
                event = await call.read()
            except grpc.RpcError as err:
                if self._closed:
                    break
                error = error_from_rpc_error(err)
                if not _is_resumable(error):
                    self._drop()
                    raise error from err
            except asyncio.CancelledError:
                if self._closed:
                    break
                raise
            else:
                if event is not grpc.aio.EOF:
                    assert isinstance(event, token_pb2.RevocationEvent)
                    self.last_id = max(self.last_id, event.id)
                    return event
            self._drop()
            attempt += 1
            await asyncio.sleep(self._retry.backoff(attempt))
        self._drop()
        raise StopAsyncIteration

    def _drop(self) -> None:
        self.connected.clear()
        if self._call is not None:
            self._call.cancel()
        self._call = None

    def close(self) -> None:
        """Ends the watch; a pending ``__anext__`` raises StopAsyncIteration."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()


class ServiceClient(_SyncBase):
    """Synchronous client for trusted services (introspection, revocations, admin API).

    Give ``api_key`` (sent as ``x-api-key``), or a ``tls`` :class:`TlsConfig` with a client
    certificate for mutual TLS. Other options are those of :class:`gatehouse.Client`.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: TlsConfig | bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] | None = None,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self._service_metadata = _service_metadata(api_key, tls)
        super().__init__(
            target,
            tls=tls,
            timeout=timeout,
            retry=retry,
            options=options,
            interceptors=interceptors,
        )

    # TokenService

    def introspect_token(
        self, token: str, *, timeout: float | None = None
    ) -> token_pb2.IntrospectTokenResponse:
        """Whether a session token or access token is active now, and for whom (only
        ``active=False`` for an unknown, expired or revoked one)."""
        request = token_pb2.IntrospectTokenRequest(token=token)
        return self._call(
            "IntrospectToken", self._token.IntrospectToken, request, self._service_metadata, timeout
        )

    def watch_revocations(
        self, after_id: int = 0, *, retry: RetryPolicy = WATCH_RETRY
    ) -> RevocationWatch:
        """Every session revocation from now on (or after event ``after_id``), as an endless
        iterator that reconnects and resumes; see :class:`RevocationWatch`."""
        return RevocationWatch(
            self._token.WatchRevocations, self._service_metadata, after_id, retry
        )

    # AdminService

    def list_users(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        email_filter: str = "",
        timeout: float | None = None,
    ) -> admin_pb2.ListUsersResponse:
        """One page of users, oldest first (``page_size`` 0: the server's default, 50)."""
        request = admin_pb2.ListUsersRequest(
            page_size=page_size, page_token=page_token, email_filter=email_filter
        )
        return self._call(
            "ListUsers", self._admin.ListUsers, request, self._service_metadata, timeout
        )

    def iter_users(
        self, *, email_filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[admin_pb2.AdminUser]:
        """Every user (optionally filtered by email), page by page."""
        page_token = ""
        while True:
            page = self.list_users(
                page_size=page_size,
                page_token=page_token,
                email_filter=email_filter,
                timeout=timeout,
            )
            yield from page.users
            page_token = page.next_page_token
            if not page_token:
                return

    def get_user(self, user_id: str, *, timeout: float | None = None) -> admin_pb2.AdminUser:
        """One user by id (:class:`NotFound` if there is none)."""
        request = admin_pb2.GetUserRequest(user_id=user_id)
        return self._call("GetUser", self._admin.GetUser, request, self._service_metadata, timeout)

    def disable_user(self, user_id: str, *, timeout: float | None = None) -> admin_pb2.AdminUser:
        """Disables a user: no sign-in, and their sessions stop validating at once."""
        request = admin_pb2.DisableUserRequest(user_id=user_id)
        return self._call(
            "DisableUser", self._admin.DisableUser, request, self._service_metadata, timeout
        )

    def enable_user(self, user_id: str, *, timeout: float | None = None) -> admin_pb2.AdminUser:
        """Re-enables a disabled user (who then signs in again)."""
        request = admin_pb2.EnableUserRequest(user_id=user_id)
        return self._call(
            "EnableUser", self._admin.EnableUser, request, self._service_metadata, timeout
        )

    def delete_user(self, user_id: str, *, timeout: float | None = None) -> None:
        """Deletes a user with their sessions, accounts and profile."""
        request = admin_pb2.DeleteUserRequest(user_id=user_id)
        self._call("DeleteUser", self._admin.DeleteUser, request, self._service_metadata, timeout)

    def revoke_user_sessions(self, user_id: str, *, timeout: float | None = None) -> int:
        """Ends every session of a user; returns how many."""
        request = admin_pb2.RevokeUserSessionsRequest(user_id=user_id)
        response = self._call(
            "RevokeUserSessions",
            self._admin.RevokeUserSessions,
            request,
            self._service_metadata,
            timeout,
        )
        return response.revoked_count

    def list_user_audit_events(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of a user's security events, newest first."""
        request = admin_pb2.ListUserAuditEventsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(
            "ListUserAuditEvents",
            self._admin.ListUserAuditEvents,
            request,
            self._service_metadata,
            timeout,
        )


class AsyncServiceClient(_AsyncBase):
    """asyncio :class:`ServiceClient` (``grpc.aio``), with the same methods."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: TlsConfig | bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._service_metadata = _service_metadata(api_key, tls)
        super().__init__(
            target,
            tls=tls,
            timeout=timeout,
            retry=retry,
            options=options,
            interceptors=interceptors,
        )

    # TokenService

    async def introspect_token(
        self, token: str, *, timeout: float | None = None
    ) -> token_pb2.IntrospectTokenResponse:
        """Whether a session token or access token is active now, and for whom."""
        request = token_pb2.IntrospectTokenRequest(token=token)
        response: token_pb2.IntrospectTokenResponse = await self._call(
            "IntrospectToken",
            self._current().token.IntrospectToken,
            request,
            self._service_metadata,
            timeout,
        )
        return response

    def watch_revocations(
        self, after_id: int = 0, *, retry: RetryPolicy = WATCH_RETRY
    ) -> AsyncRevocationWatch:
        """Every session revocation from now on (or after event ``after_id``), as an endless
        async iterator that reconnects and resumes; see :class:`RevocationWatch`."""
        return AsyncRevocationWatch(self, after_id, retry)

    # AdminService

    async def list_users(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        email_filter: str = "",
        timeout: float | None = None,
    ) -> admin_pb2.ListUsersResponse:
        """One page of users, oldest first (``page_size`` 0: the server's default, 50)."""
        request = admin_pb2.ListUsersRequest(
            page_size=page_size, page_token=page_token, email_filter=email_filter
        )
        response: admin_pb2.ListUsersResponse = await self._call(
            "ListUsers", self._current().admin.ListUsers, request, self._service_metadata, timeout
        )
        return response

    async def iter_users(
        self, *, email_filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[admin_pb2.AdminUser]:
        """Every user (optionally filtered by email), page by page."""
        page_token = ""
        while True:
            page = await self.list_users(
                page_size=page_size,
                page_token=page_token,
                email_filter=email_filter,
                timeout=timeout,
            )
            for user in page.users:
                yield user
            page_token = page.next_page_token
            if not page_token:
                return

    async def get_user(self, user_id: str, *, timeout: float | None = None) -> admin_pb2.AdminUser:
        """One user by id (:class:`NotFound` if there is none)."""
        request = admin_pb2.GetUserRequest(user_id=user_id)
        response: admin_pb2.AdminUser = await self._call(
            "GetUser", self._current().admin.GetUser, request, self._service_metadata, timeout
        )
        return response

    async def disable_user(
        self, user_id: str, *, timeout: float | None = None
    ) -> admin_pb2.AdminUser:
        """Disables a user: no sign-in, and their sessions stop validating at once."""
        request = admin_pb2.DisableUserRequest(user_id=user_id)
        response: admin_pb2.AdminUser = await self._call(
            "DisableUser",
            self._current().admin.DisableUser,
            request,
            self._service_metadata,
            timeout,
        )
        return response

    async def enable_user(
        self, user_id: str, *, timeout: float | None = None
    ) -> admin_pb2.AdminUser:
        """Re-enables a disabled user (who then signs in again)."""
        request = admin_pb2.EnableUserRequest(user_id=user_id)
        response: admin_pb2.AdminUser = await self._call(
            "EnableUser", self._current().admin.EnableUser, request, self._service_metadata, timeout
        )
        return response

    async def delete_user(self, user_id: str, *, timeout: float | None = None) -> None:
        """Deletes a user with their sessions, accounts and profile."""
        request = admin_pb2.DeleteUserRequest(user_id=user_id)
        await self._call(
            "DeleteUser", self._current().admin.DeleteUser, request, self._service_metadata, timeout
        )

    async def revoke_user_sessions(self, user_id: str, *, timeout: float | None = None) -> int:
        """Ends every session of a user; returns how many."""
        request = admin_pb2.RevokeUserSessionsRequest(user_id=user_id)
        response: admin_pb2.RevokeUserSessionsResponse = await self._call(
            "RevokeUserSessions",
            self._current().admin.RevokeUserSessions,
            request,
            self._service_metadata,
            timeout,
        )
        return response.revoked_count

    async def list_user_audit_events(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of a user's security events, newest first."""
        request = admin_pb2.ListUserAuditEventsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token
        )
        response: auth_pb2.ListAuditEventsResponse = await self._call(
            "ListUserAuditEvents",
            self._current().admin.ListUserAuditEvents,
            request,
            self._service_metadata,
            timeout,
        )
        return response

