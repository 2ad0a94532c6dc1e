"""The synchronous and asyncio clients: a thin, typed facade over the generated stubs.

Both clients send the end user's session token as ``authorization: Bearer <token>`` and the
end user's address and browser as ``x-forwarded-for`` / ``x-forwarded-user-agent``, give each
call a deadline, retry only the read-only RPCs after ``UNAVAILABLE``, and raise
:class:`gatehouse.errors.GatehouseError` subclasses instead of ``grpc.RpcError``.

:class:`Client` below is the source of :class:`AsyncClient`: ``generate.py`` writes
``_async_client.py`` from it (``def`` becomes ``async def`` and each RPC call is awaited), and
``generate.py --check`` fails when that file is stale. Edit the sync methods here, then run
``python clients/python/generate.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from . import _requests
from ._async_client import AsyncClient
from ._base import _SyncBase
from ._common import call_metadata
from ._proto.gatehouse.v1 import auth_pb2, profile_pb2, token_pb2

__all__ = ["AsyncClient", "Client"]


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
        self._call(
            "SignOut", self._auth.SignOut, auth_pb2.SignOutRequest(), metadata, timeout
        )

    def get_session(
        self, *, token: str, timeout: float | None = None
    ) -> auth_pb2.GetSessionResponse:
        """Validates ``token`` and returns its user and session (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.GetSessionRequest()
        return self._call("GetSession", self._auth.GetSession, request, metadata, timeout)

    def list_sessions(
        self, *, token: str, timeout: float | None = None
    ) -> list[auth_pb2.Session]:
        """The caller's active sessions, most recently used first (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListSessionsRequest()
        response = self._call(
            "ListSessions", self._auth.ListSessions, request, metadata, timeout
        )
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
        self._call(
            "RequestEmailChange", self._auth.RequestEmailChange, request, metadata, timeout
        )

    def list_audit_events(
        self, *, token: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of the caller's security events, newest first (retried after UNAVAILABLE).

        ``page_size`` 0 means the server's default (50); pass the response's
        ``next_page_token`` as ``page_token`` for the next page (empty on the last one).
        """
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token)
        return self._call(
            "ListAuditEvents", self._auth.ListAuditEvents, request, metadata, timeout
        )

    def iter_audit_events(
        self, *, token: str, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[auth_pb2.AuditEvent]:
        """Every security event of the caller, newest first, fetched page by page."""
        page_token = ""
        while True:
            page = self.list_audit_events(
                token=token, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for event in page.events:
                yield event
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
        return self._call(
            "CompleteOAuth", self._auth.CompleteOAuth, request, metadata, timeout
        )

    def list_accounts(
        self, *, token: str, timeout: float | None = None
    ) -> list[auth_pb2.LinkedAccount]:
        """The caller's linked provider accounts (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = auth_pb2.ListAccountsRequest()
        response = self._call(
            "ListAccounts", self._auth.ListAccounts, request, metadata, timeout
        )
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

    # AuthService: privacy

    def export_my_data(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Everything Gatehouse holds about the caller, as the parsed JSON document (GDPR
        Art. 15 and 20): ``format`` (``"gatehouse.export.v1"``), ``exported_at``, ``user_id``
        and ``tables`` (``users``, ``profiles``, ``sessions``, ``accounts``,
        ``verification_tokens``, ``oauth_states``, ``consent_records``, ``audit_events``,
        ``revocations``, ``user_changes``: each a list of rows). It never holds a secret (no
        password hash, token or token hash). The export is audited (``data_exported``), so it
        is not retried.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.ExportMyDataRequest()
        response = self._call(
            "ExportMyData", self._auth.ExportMyData, request, metadata, timeout
        )
        document: dict[str, Any] = json.loads(response.document)
        return document

    # TokenService

    def issue_access_token(
        self, audience: str, *, token: str, timeout: float | None = None
    ) -> token_pb2.IssueAccessTokenResponse:
        """Exchanges the session of ``token`` for a short-lived signed JWT for ``audience``
        (one of the server's GATEHOUSE_ACCESS_TOKEN_AUDIENCES, else :class:`InvalidArgument`)."""
        metadata = call_metadata(token, token_required=True)
        request = token_pb2.IssueAccessTokenRequest(audience=audience)
        return self._call(
            "IssueAccessToken", self._token.IssueAccessToken, request, metadata, timeout
        )

    def get_jwks(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The JWK Set (parsed JSON) that verifies access tokens (retried after UNAVAILABLE)."""
        response = self._call(
            "GetJwks", self._token.GetJwks, token_pb2.GetJwksRequest(), (), timeout
        )
        jwks: dict[str, Any] = json.loads(response.jwks_json)
        return jwks

    # ProfileService

    def get_profile(self, *, token: str, timeout: float | None = None) -> profile_pb2.Profile:
        """The caller's learner profile (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = profile_pb2.GetProfileRequest()
        response = self._call(
            "GetProfile", self._profile.GetProfile, request, metadata, timeout
        )
        return response.profile

    def update_profile(
        self,
        profile: profile_pb2.Profile,
        update_mask: Iterable[str] | None = None,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> profile_pb2.Profile:
        """Changes the profile fields named in ``update_mask`` and returns the new profile.

        A named field that is empty in ``profile`` is cleared; ``["*"]`` replaces every field.
        Without a mask, every non-empty field of ``profile`` is changed. A change of
        ``consent_given`` is recorded in the consent history with ``client_ip`` and
        ``user_agent``.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = _requests.update_profile(profile, update_mask)
        response = self._call(
            "UpdateProfile", self._profile.UpdateProfile, request, metadata, timeout
        )
        return response.profile

    def list_consent_records(
        self, *, token: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> profile_pb2.ListConsentRecordsResponse:
        """One page of the caller's consent history, newest first, with the current state of
        every configured purpose (``.purposes``) and the policy version in force
        (``.policy_version``); retried after UNAVAILABLE.

        ``page_size`` 0 means the server's default (50, at most 100); pass the response's
        ``next_page_token`` as ``page_token`` for the next page (empty on the last one).
        """
        metadata = call_metadata(token, token_required=True)
        request = profile_pb2.ListConsentRecordsRequest(page_size=page_size, page_token=page_token)
        return self._call(
            "ListConsentRecords", self._profile.ListConsentRecords, request, metadata, timeout
        )

    def update_consent(
        self,
        purpose: str,
        granted: bool,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> profile_pb2.ConsentState:
        """Grants or withdraws consent for ``purpose`` (recorded with the policy version in
        force, ``client_ip`` and ``user_agent``) and returns the purpose's state after.

        ``learner_background`` is the profile's ``consent_given`` (withdrawing erases the
        background fields). A purpose the server is not configured for is
        :class:`InvalidArgument` on ``purpose``.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = profile_pb2.UpdateConsentRequest(purpose=purpose, granted=granted)
        response = self._call(
            "UpdateConsent", self._profile.UpdateConsent, request, metadata, timeout
        )
        return response.state
