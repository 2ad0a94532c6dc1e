"""The synchronous and asyncio clients: a thin, typed facade over the generated stubs.

Both clients send the end user's session token as ``authorization: Bearer <token>`` and the
end user's address and browser as ``x-forwarded-for`` / ``x-forwarded-user-agent``, give each
call a deadline, retry only the read-only RPCs after ``UNAVAILABLE``, and raise
:class:`gatehouse.errors.GatehouseError` subclasses instead of ``grpc.RpcError``.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from . import _requests
from ._common import (
    DEFAULT_TIMEOUT,
    IDEMPOTENT_METHODS,
    Metadata,
    RetryPolicy,
    TlsConfig,
    call_metadata,
    channel_options,
)
from ._proto.gatehouse.v1 import (
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from .errors import DeadlineExceeded, GatehouseError, Unavailable, error_from_rpc_error

__all__ = ["AsyncClient", "Client"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _make_channel_args(
    target: str,
    tls: TlsConfig | bool,
    options: Sequence[tuple[str, str | int]] | None,
) -> tuple[TlsConfig | None, list[tuple[str, str | int]]]:
    tls_config = TlsConfig() if tls is True else (tls or None)
    if not target:
        raise ValueError("target must be host:port")
    return tls_config, channel_options(tls_config, options)


def _jwks(response: token_pb2.GetJwksResponse) -> dict[str, Any]:
    jwks: dict[str, Any] = json.loads(response.jwks_json)
    return jwks


def _should_retry(method: str, error: GatehouseError, attempt: int, policy: RetryPolicy) -> bool:
    return (
        method in IDEMPOTENT_METHODS
        and isinstance(error, Unavailable)
        and attempt < policy.max_attempts
    )


class _SyncBase:
    """Channel, deadlines, retries and error mapping of the synchronous clients."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsConfig | bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] | None = None,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        tls_config, opts = _make_channel_args(target, tls, options)
        if tls_config is None:
            channel = grpc.insecure_channel(target, options=opts)
        else:
            channel = grpc.secure_channel(target, tls_config.credentials(), options=opts)
        self._raw_channel = channel
        self._channel: grpc.Channel = (
            grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        )
        self._auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._profile = profile_pb2_grpc.ProfileServiceStub(self._channel)
        self._token = token_pb2_grpc.TokenServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()

    def close(self) -> None:
        """Closes the channel; the client cannot be used afterwards."""
        self._raw_channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        name: str,
        rpc: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        metadata: Metadata,
        timeout: float | None,
    ) -> Resp:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"{name}: deadline exceeded after {attempt - 1} attempts")
            try:
                return rpc(request, metadata=metadata, timeout=remaining)
            except grpc.RpcError as err:
                error = error_from_rpc_error(err)
                if _should_retry(name, error, attempt, self.retry):
                    delay = self.retry.backoff(attempt)
                    if time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        continue
                raise error from err


class Client(_SyncBase):
    """Synchronous Gatehouse client.

    >>> with Client("localhost:50051") as gatehouse:
    ...     auth = gatehouse.sign_in("ada@example.com", "correct horse battery staple")
    ...     me = gatehouse.get_session(token=auth.session_token)

    ``target`` is ``host:port``. ``tls`` is ``False`` (plaintext, for loopback and
    development), ``True`` (system roots) or a :class:`TlsConfig`. ``timeout`` is the default
    deadline in seconds of every call, retries included; each method also takes ``timeout``.
    ``interceptors`` are ``grpc`` client interceptors (e.g. for tracing).
    """

    # AuthService

    def sign_up(
        self,
        email: str,
        password: str,
        name: str,
        profile: profile_pb2.Profile | None = None,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Creates an account (optionally with its learner profile) and signs it in."""
        request = _requests.sign_up(email, password, name, profile)
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return self._call("SignUp", self._auth.SignUp, request, metadata, timeout)

    def sign_in(
        self,
        email: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Signs in and returns a new session with its token (shown only this once)."""
        request = auth_pb2.SignInRequest(email=email, password=password)
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return self._call("SignIn", self._auth.SignIn, request, metadata, timeout)

    def sign_out(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Revokes the session of ``token``."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        self._call("SignOut", self._auth.SignOut, auth_pb2.SignOutRequest(), metadata, timeout)

    def get_session(
        self, *, token: str, timeout: float | None = None
    ) -> auth_pb2.GetSessionResponse:
        """Validates ``token`` and returns its user and session (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.GetSessionRequest()
        return self._call("GetSession", self._auth.GetSession, request, metadata, timeout)

    def list_sessions(self, *, token: str, timeout: float | None = None) -> list[auth_pb2.Session]:
        """The caller's active sessions, most recently used first (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListSessionsRequest()
        response = self._call("ListSessions", self._auth.ListSessions, request, metadata, timeout)
        return list(response.sessions)

    def revoke_session(
        self,
        session_id: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Revokes one of the caller's sessions by id (another user's id is NOT_FOUND)."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.RevokeSessionRequest(session_id=session_id)
        self._call("RevokeSession", self._auth.RevokeSession, request, metadata, timeout)

    def revoke_other_sessions(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Revokes every session of the caller but this one; returns how many."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.RevokeOtherSessionsRequest()
        response = self._call(
            "RevokeOtherSessions", self._auth.RevokeOtherSessions, request, metadata, timeout
        )
        return response.revoked_count

    def change_password(
        self,
        current_password: str,
        new_password: str,
        *,
        token: str,
        revoke_other_sessions: bool = False,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Changes the caller's password; returns how many other sessions were revoked."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.ChangePasswordRequest(
            current_password=current_password,
            new_password=new_password,
            revoke_other_sessions=revoke_other_sessions,
        )
        response = self._call(
            "ChangePassword", self._auth.ChangePassword, request, metadata, timeout
        )
        return response.revoked_count

    def delete_account(
        self,
        password: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Deletes the caller's account, sessions and profile after checking the password."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.DeleteAccountRequest(password=password)
        self._call("DeleteAccount", self._auth.DeleteAccount, request, metadata, timeout)

    # AuthService: email and recovery

    def send_verification_email(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails the caller a new verification link; earlier links stop working.

        Raises :class:`FailedPrecondition` if the address is already verified.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.SendVerificationEmailRequest()
        self._call(
            "SendVerificationEmail", self._auth.SendVerificationEmail, request, metadata, timeout
        )

    def verify_email(
        self,
        link_token: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Redeems the ``token`` of a verification or email-change link (needs no session).

        A used, expired, superseded or unknown link token is :class:`InvalidArgument`.
        """
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.VerifyEmailRequest(token=link_token)
        self._call("VerifyEmail", self._auth.VerifyEmail, request, metadata, timeout)

    def request_password_reset(
        self,
        email: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails a reset link if ``email`` has an account; answers the same either way."""
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.RequestPasswordResetRequest(email=email)
        self._call(
            "RequestPasswordReset", self._auth.RequestPasswordReset, request, metadata, timeout
        )

    def reset_password(
        self,
        link_token: str,
        new_password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Sets a new password with the ``token`` of a reset link (needs no session).

        Every session of the user ends; no new one is returned: sign in with the new password.
        """
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.ResetPasswordRequest(token=link_token, new_password=new_password)
        self._call("ResetPassword", self._auth.ResetPassword, request, metadata, timeout)

    def request_email_change(
        self,
        new_email: str,
        current_password: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails a link to ``new_email`` (and a notice to the current address); the change
        happens when the link is redeemed with :meth:`verify_email`."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.RequestEmailChangeRequest(
            new_email=new_email, current_password=current_password
        )
        self._call("RequestEmailChange", self._auth.RequestEmailChange, request, metadata, timeout)

    def list_audit_events(
        self, *, token: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of the caller's security events, newest first (retried after UNAVAILABLE).

        ``page_size`` 0 means the server's default (50); pass the response's
        ``next_page_token`` as ``page_token`` for the next page (empty on the last one).
        """
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token)
        return self._call("ListAuditEvents", self._auth.ListAuditEvents, request, metadata, timeout)

    def iter_audit_events(
        self, *, token: str, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[auth_pb2.AuditEvent]:
        """Every security event of the caller, newest first, fetched page by page."""
        page_token = ""
        while True:
            page = self.list_audit_events(
                token=token, page_size=page_size, page_token=page_token, timeout=timeout
            )
            yield from page.events
            page_token = page.next_page_token
            if not page_token:
                return
    def start_o_auth(
        self,
        provider: str,
        redirect_uri: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.StartOAuthResponse:
        """Where to send the browser to sign in with ``provider``; with ``token``, a link flow."""
        metadata = call_metadata(token)
        request = auth_pb2.StartOAuthRequest(provider=provider, redirect_uri=redirect_uri)
        return self._call("StartOAuth", self._auth.StartOAuth, request, metadata, timeout)

    def complete_o_auth(
        self,
        provider: str,
        code: str,
        state: str,
        redirect_uri: str,
        *,
        token: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.CompleteOAuthResponse:
        """Finishes a provider sign-in with the callback's ``code`` and ``state``."""
        metadata = call_metadata(token, client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.CompleteOAuthRequest(
            provider=provider, code=code, state=state, redirect_uri=redirect_uri
        )
        return self._call("CompleteOAuth", self._auth.CompleteOAuth, request, metadata, timeout)

    def list_accounts(
        self, *, token: str, timeout: float | None = None
    ) -> list[auth_pb2.LinkedAccount]:
        """The caller's linked provider accounts (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListAccountsRequest()
        response = self._call("ListAccounts", self._auth.ListAccounts, request, metadata, timeout)
        return list(response.accounts)

    def unlink_account(
        self, provider: str, account_id: str, *, token: str, timeout: float | None = None
    ) -> None:
        """Unlinks a provider account (never the last way to sign in: FAILED_PRECONDITION)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.UnlinkAccountRequest(provider=provider, account_id=account_id)
        self._call("UnlinkAccount", self._auth.UnlinkAccount, request, metadata, timeout)

    def get_provider_access_token(
        self,
        provider: str,
        account_id: str = "",
        *,
        token: str,
        timeout: float | None = None,
    ) -> auth_pb2.GetProviderAccessTokenResponse:
        """A valid access token for the caller's account at ``provider``, refreshed if needed."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.GetProviderAccessTokenRequest(provider=provider, account_id=account_id)
        return self._call(
            "GetProviderAccessToken", self._auth.GetProviderAccessToken, request, metadata, timeout
        )

    # TokenService

    def issue_access_token(
        self, audience: str, *, token: str, timeout: float | None = None
    ) -> token_pb2.IssueAccessTokenResponse:
        """Exchanges the session of ``token`` for a short-lived signed JWT for ``audience``
        (one of the server's GATEHOUSE_ACCESS_TOKEN_AUDIENCES, else :class:`InvalidArgument`)."""
        metadata = call_metadata(token, token_required=True)
        request = token_pb2.IssueAccessTokenRequest(audience=audience)
        return self._call("IssueAccessToken", self._token.IssueAccessToken, request, metadata, timeout)

    def get_jwks(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The JWK Set (parsed JSON) that verifies access tokens (retried after UNAVAILABLE)."""
        response = self._call(
            "GetJwks", self._token.GetJwks, token_pb2.GetJwksRequest(), (), timeout
        )
        return _jwks(response)

    # ProfileService

    def get_profile(self, *, token: str, timeout: float | None = None) -> profile_pb2.Profile:
        """The caller's learner profile (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = profile_pb2.GetProfileRequest()
        return self._call(
            "GetProfile", self._profile.GetProfile, request, metadata, timeout
        ).profile

    def update_profile(
        self,
        profile: profile_pb2.Profile,
        update_mask: Iterable[str] | None = None,
        *,
        token: str,
        timeout: float | None = None,
    ) -> profile_pb2.Profile:
        """Changes the profile fields named in ``update_mask`` and returns the new profile.

        A named field that is empty in ``profile`` is cleared; ``["*"]`` replaces every field.
        Without a mask, every non-empty field of ``profile`` is changed.
        """
        metadata = call_metadata(token, token_required=True)
        request = _requests.update_profile(profile, update_mask)
        response = self._call(
            "UpdateProfile", self._profile.UpdateProfile, request, metadata, timeout
        )
        return response.profile


@dataclass(slots=True)
class _AsyncStubs:
    channel: grpc.aio.Channel
    auth: auth_pb2_grpc.AuthServiceAsyncStub
    profile: profile_pb2_grpc.ProfileServiceAsyncStub
    token: token_pb2_grpc.TokenServiceAsyncStub
    admin: admin_pb2_grpc.AdminServiceAsyncStub


class _AsyncBase:
    """Per-loop channels, deadlines, retries and error mapping of the asyncio clients."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsConfig | bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._tls, self._options = _make_channel_args(target, tls, options)
        self._interceptors = list(interceptors)
        self._stubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncStubs] = (
            weakref.WeakKeyDictionary()
        )
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()

    def _current(self) -> _AsyncStubs:
        loop = asyncio.get_running_loop()
        stubs = self._stubs.get(loop)
        if stubs is None:
            interceptors = self._interceptors or None
            if self._tls is None:
                channel = grpc.aio.insecure_channel(
                    self.target, options=self._options, interceptors=interceptors
                )
            else:
                channel = grpc.aio.secure_channel(
                    self.target,
                    self._tls.credentials(),
                    options=self._options,
                    interceptors=interceptors,
                )
            stubs = _AsyncStubs(
                channel,
                auth_pb2_grpc.AuthServiceStub(channel),
                profile_pb2_grpc.ProfileServiceStub(channel),
                token_pb2_grpc.TokenServiceStub(channel),
                admin_pb2_grpc.AdminServiceStub(channel),
            )
            self._stubs[loop] = stubs
        return stubs

    async def close(self) -> None:
        """Closes the channel of the running event loop."""
        loop = asyncio.get_running_loop()
        stubs = self._stubs.pop(loop, None)
        if stubs is not None:
            await stubs.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self,
        name: str,
        rpc: Callable[..., Awaitable[Resp]],
        request: Any,
        metadata: Metadata,
        timeout: float | None,
    ) -> Resp:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"{name}: deadline exceeded after {attempt - 1} attempts")
            try:
                return await rpc(request, metadata=metadata, timeout=remaining)
            except grpc.RpcError as err:
                error = error_from_rpc_error(err)
                if _should_retry(name, error, attempt, self.retry):
                    delay = self.retry.backoff(attempt)
                    if time.monotonic() + delay < deadline:
                        await asyncio.sleep(delay)
                        continue
                raise error from err


class AsyncClient(_AsyncBase):
    """asyncio Gatehouse client (``grpc.aio``), with the same methods as :class:`Client`.

    >>> async with AsyncClient("localhost:50051") as gatehouse:
    ...     me = await gatehouse.get_session(token=token)

    A ``grpc.aio`` channel belongs to one event loop, so the channel is opened lazily on first
    use in the running loop (and a separate one in any other loop, as test clients create).
    """

    # AuthService

    async def sign_up(
        self,
        email: str,
        password: str,
        name: str,
        profile: profile_pb2.Profile | None = None,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Creates an account (optionally with its learner profile) and signs it in."""
        request = _requests.sign_up(email, password, name, profile)
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return await self._call("SignUp", self._current().auth.SignUp, request, metadata, timeout)

    async def sign_in(
        self,
        email: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Signs in and returns a new session with its token (shown only this once)."""
        request = auth_pb2.SignInRequest(email=email, password=password)
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return await self._call("SignIn", self._current().auth.SignIn, request, metadata, timeout)

    async def sign_out(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Revokes the session of ``token``."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        await self._call(
            "SignOut", self._current().auth.SignOut, auth_pb2.SignOutRequest(), metadata, timeout
        )

    async def get_session(
        self, *, token: str, timeout: float | None = None
    ) -> auth_pb2.GetSessionResponse:
        """Validates ``token`` and returns its user and session (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        return await self._call(
            "GetSession",
            self._current().auth.GetSession,
            auth_pb2.GetSessionRequest(),
            metadata,
            timeout,
        )

    async def list_sessions(
        self, *, token: str, timeout: float | None = None
    ) -> list[auth_pb2.Session]:
        """The caller's active sessions, most recently used first (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        response: auth_pb2.ListSessionsResponse = await self._call(
            "ListSessions",
            self._current().auth.ListSessions,
            auth_pb2.ListSessionsRequest(),
            metadata,
            timeout,
        )
        return list(response.sessions)

    async def revoke_session(
        self,
        session_id: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Revokes one of the caller's sessions by id (another user's id is NOT_FOUND)."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.RevokeSessionRequest(session_id=session_id)
        await self._call(
            "RevokeSession", self._current().auth.RevokeSession, request, metadata, timeout
        )

    async def revoke_other_sessions(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Revokes every session of the caller but this one; returns how many."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        response: auth_pb2.RevokeOtherSessionsResponse = await self._call(
            "RevokeOtherSessions",
            self._current().auth.RevokeOtherSessions,
            auth_pb2.RevokeOtherSessionsRequest(),
            metadata,
            timeout,
        )
        return response.revoked_count

    async def change_password(
        self,
        current_password: str,
        new_password: str,
        *,
        token: str,
        revoke_other_sessions: bool = False,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Changes the caller's password; returns how many other sessions were revoked."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.ChangePasswordRequest(
            current_password=current_password,
            new_password=new_password,
            revoke_other_sessions=revoke_other_sessions,
        )
        response: auth_pb2.ChangePasswordResponse = await self._call(
            "ChangePassword", self._current().auth.ChangePassword, request, metadata, timeout
        )
        return response.revoked_count

    async def delete_account(
        self,
        password: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Deletes the caller's account, sessions and profile after checking the password."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.DeleteAccountRequest(password=password)
        await self._call(
            "DeleteAccount", self._current().auth.DeleteAccount, request, metadata, timeout
        )

    # AuthService: email and recovery

    async def send_verification_email(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails the caller a new verification link; earlier links stop working.

        Raises :class:`FailedPrecondition` if the address is already verified.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.SendVerificationEmailRequest()
        await self._call(
            "SendVerificationEmail",
            self._current().auth.SendVerificationEmail,
            request,
            metadata,
            timeout,
        )

    async def verify_email(
        self,
        link_token: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Redeems the ``token`` of a verification or email-change link (needs no session).

        A used, expired, superseded or unknown link token is :class:`InvalidArgument`.
        """
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.VerifyEmailRequest(token=link_token)
        await self._call(
            "VerifyEmail", self._current().auth.VerifyEmail, request, metadata, timeout
        )

    async def request_password_reset(
        self,
        email: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails a reset link if ``email`` has an account; answers the same either way."""
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.RequestPasswordResetRequest(email=email)
        await self._call(
            "RequestPasswordReset",
            self._current().auth.RequestPasswordReset,
            request,
            metadata,
            timeout,
        )

    async def reset_password(
        self,
        link_token: str,
        new_password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Sets a new password with the ``token`` of a reset link (needs no session).

        Every session of the user ends; no new one is returned: sign in with the new password.
        """
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.ResetPasswordRequest(token=link_token, new_password=new_password)
        await self._call(
            "ResetPassword", self._current().auth.ResetPassword, request, metadata, timeout
        )

    async def request_email_change(
        self,
        new_email: str,
        current_password: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mails a link to ``new_email`` (and a notice to the current address); the change
        happens when the link is redeemed with :meth:`verify_email`."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.RequestEmailChangeRequest(
            new_email=new_email, current_password=current_password
        )
        await self._call(
            "RequestEmailChange",
            self._current().auth.RequestEmailChange,
            request,
            metadata,
            timeout,
        )

    async def list_audit_events(
        self, *, token: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of the caller's security events, newest first (retried after UNAVAILABLE).

        ``page_size`` 0 means the server's default (50); pass the response's
        ``next_page_token`` as ``page_token`` for the next page (empty on the last one).
        """
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token)
        response: auth_pb2.ListAuditEventsResponse = await self._call(
            "ListAuditEvents", self._current().auth.ListAuditEvents, request, metadata, timeout
        )
        return response

    async def iter_audit_events(
        self, *, token: str, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[auth_pb2.AuditEvent]:
        """Every security event of the caller, newest first, fetched page by page."""
        page_token = ""
        while True:
            page = await self.list_audit_events(
                token=token, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for event in page.events:
                yield event
            page_token = page.next_page_token
            if not page_token:
                return
    async def start_o_auth(
        self,
        provider: str,
        redirect_uri: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.StartOAuthResponse:
        """Where to send the browser to sign in with ``provider``; with ``token``, a link flow."""
        metadata = call_metadata(token)
        request = auth_pb2.StartOAuthRequest(provider=provider, redirect_uri=redirect_uri)
        response: auth_pb2.StartOAuthResponse = await self._call(
            "StartOAuth", self._current().auth.StartOAuth, request, metadata, timeout
        )
        return response

    async def complete_o_auth(
        self,
        provider: str,
        code: str,
        state: str,
        redirect_uri: str,
        *,
        token: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.CompleteOAuthResponse:
        """Finishes a provider sign-in with the callback's ``code`` and ``state``."""
        metadata = call_metadata(token, client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.CompleteOAuthRequest(
            provider=provider, code=code, state=state, redirect_uri=redirect_uri
        )
        response: auth_pb2.CompleteOAuthResponse = await self._call(
            "CompleteOAuth", self._current().auth.CompleteOAuth, request, metadata, timeout
        )
        return response

    async def list_accounts(
        self, *, token: str, timeout: float | None = None
    ) -> list[auth_pb2.LinkedAccount]:
        """The caller's linked provider accounts (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        response: auth_pb2.ListAccountsResponse = await self._call(
            "ListAccounts",
            self._current().auth.ListAccounts,
            auth_pb2.ListAccountsRequest(),
            metadata,
            timeout,
        )
        return list(response.accounts)

    async def unlink_account(
        self, provider: str, account_id: str, *, token: str, timeout: float | None = None
    ) -> None:
        """Unlinks a provider account (never the last way to sign in: FAILED_PRECONDITION)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.UnlinkAccountRequest(provider=provider, account_id=account_id)
        await self._call(
            "UnlinkAccount", self._current().auth.UnlinkAccount, request, metadata, timeout
        )

    async def get_provider_access_token(
        self,
        provider: str,
        account_id: str = "",
        *,
        token: str,
        timeout: float | None = None,
    ) -> auth_pb2.GetProviderAccessTokenResponse:
        """A valid access token for the caller's account at ``provider``, refreshed if needed."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.GetProviderAccessTokenRequest(provider=provider, account_id=account_id)
        response: auth_pb2.GetProviderAccessTokenResponse = await self._call(
            "GetProviderAccessToken",
            self._current().auth.GetProviderAccessToken,
            request,
            metadata,
            timeout,
        )
        return response

    # TokenService

    async def issue_access_token(
        self, audience: str, *, token: str, timeout: float | None = None
    ) -> token_pb2.IssueAccessTokenResponse:
        """Exchanges the session of ``token`` for a short-lived signed JWT for ``audience``
        (one of the server's GATEHOUSE_ACCESS_TOKEN_AUDIENCES, else :class:`InvalidArgument`)."""
        metadata = call_metadata(token, token_required=True)
        request = token_pb2.IssueAccessTokenRequest(audience=audience)
        response: token_pb2.IssueAccessTokenResponse = await self._call(
            "IssueAccessToken", self._current().token.IssueAccessToken, request, metadata, timeout
        )
        return response

    async def get_jwks(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The JWK Set (parsed JSON) that verifies access tokens (retried after UNAVAILABLE)."""
        response: token_pb2.GetJwksResponse = await self._call(
            "GetJwks", self._current().token.GetJwks, token_pb2.GetJwksRequest(), (), timeout
        )
        return _jwks(response)

    # ProfileService

    async def get_profile(self, *, token: str, timeout: float | None = None) -> profile_pb2.Profile:
        """The caller's learner profile (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        response: profile_pb2.GetProfileResponse = await self._call(
            "GetProfile",
            self._current().profile.GetProfile,
            profile_pb2.GetProfileRequest(),
            metadata,
            timeout,
        )
        return response.profile

    async def update_profile(
        self,
        profile: profile_pb2.Profile,
        update_mask: Iterable[str] | None = None,
        *,
        token: str,
        timeout: float | None = None,
    ) -> profile_pb2.Profile:
        """Changes the profile fields named in ``update_mask`` and returns the new profile.

        A named field that is empty in ``profile`` is cleared; ``["*"]`` replaces every field.
        Without a mask, every non-empty field of ``profile`` is changed.
        """
        metadata = call_metadata(token, token_required=True)
        request = _requests.update_profile(profile, update_mask)
        response: profile_pb2.UpdateProfileResponse = await self._call(
            "UpdateProfile", self._current().profile.UpdateProfile, request, metadata, timeout
        )
        return response.profile
