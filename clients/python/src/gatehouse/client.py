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
from ._proto.gatehouse.v1 import auth_pb2, factor_pb2, profile_pb2, token_pb2

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
        """Signs in and returns a new session with its token (shown only this once).

        For a user with a second factor the answer has no session (``HasField("session")``
        is false, ``session_token`` empty) but ``second_factor_required`` (``.challenge_token``,
        ``.methods``, ``.expires_at``): finish with :meth:`complete_second_factor`.
        """
        request = auth_pb2.SignInRequest(email=email, password=password)
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return self._call("SignIn", self._auth.SignIn, request, metadata, timeout)

    def complete_second_factor(
        self,
        challenge_token: str,
        *,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        passkey_credential_json: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Finishes a sign-in that answered ``second_factor_required`` with exactly one of
        ``totp_code`` (the authenticator app's 6 digits), ``recovery_code`` (single use) or
        ``passkey_credential_json`` (the browser's ``AuthenticationResponseJSON``, as a JSON
        string, answering the challenge's ``passkey_options_json``), and returns the new
        session (``aal`` 2). A wrong or replayed code or passkey answer, and an unknown, used
        or expired challenge, are :class:`Unauthenticated`; wrong codes count towards the
        account's lockout. Needs no session.
        """
        request = _requests.complete_second_factor(
            challenge_token, totp_code, recovery_code, passkey_credential_json
        )
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        return self._call(
            "CompleteSecondFactor", self._auth.CompleteSecondFactor, request, metadata, timeout
        )

    def start_passkey_sign_in(
        self,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.StartPasskeySignInResponse:
        """Starts a passwordless sign-in with a passkey (needs no session): ``.options_json``
        (a ``PublicKeyCredentialRequestOptionsJSON`` for ``navigator.credentials.get``, any
        discoverable credential of the relying party), ``.challenge_id`` (for
        :meth:`finish_passkey_sign_in`; single use) and ``.expires_at`` (5 minutes)."""
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.StartPasskeySignInRequest()
        return self._call(
            "StartPasskeySignIn", self._auth.StartPasskeySignIn, request, metadata, timeout
        )

    def finish_passkey_sign_in(
        self,
        challenge_id: str,
        credential_json: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> auth_pb2.AuthResponse:
        """Finishes a passkey sign-in with the browser's ``AuthenticationResponseJSON`` (a
        JSON string: ``JSON.stringify(credential.toJSON())``) and returns the new session
        (``aal`` 2, ``amr`` e.g. ``["hwk", "mfa"]`` or ``["swk", "mfa"]``). An unknown
        credential, a bad signature, a wrong origin or RP id, a used or lapsed ceremony and
        a disabled user are all :class:`Unauthenticated`."""
        metadata = call_metadata(client_ip=client_ip, user_agent=user_agent)
        request = auth_pb2.FinishPasskeySignInRequest(
            challenge_id=challenge_id, credential_json=credential_json
        )
        return self._call(
            "FinishPasskeySignIn", self._auth.FinishPasskeySignIn, request, metadata, timeout
        )

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
        """Finishes a provider sign-in with the callback's ``code`` and ``state``.

        Like :meth:`sign_in`, the answer may hold ``second_factor_required`` instead of a
        session: finish with :meth:`complete_second_factor`.
        """
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
        ``revocations``, ``user_changes``, ``factors``, ``recovery_codes``,
        ``second_factor_challenges``, ``passkey_ceremonies``: each a list of rows). It never holds a secret (no
        password hash, token or token hash, TOTP secret or recovery code). The export is audited (``data_exported``), so it
        is not retried.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = auth_pb2.ExportMyDataRequest()
        response = self._call(
            "ExportMyData", self._auth.ExportMyData, request, metadata, timeout
        )
        document: dict[str, Any] = json.loads(response.document)
        return document

    # FactorService: second factors. Every call needs a recent sign-in (the server's
    # GATEHOUSE_STEP_UP_MAX_AGE) that used the second factor once the user has one, else
    # ReauthenticationRequired (a FailedPrecondition).

    def start_totp_enrollment(
        self,
        name: str = "",
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> factor_pb2.StartTotpEnrollmentResponse:
        """Starts enrolling an authenticator app named ``name`` (default "Authenticator
        app"): ``.factor_id``, ``.secret`` (base32; shown only here), ``.otpauth_uri``,
        ``.qr_code_svg`` (an SVG document) and ``.expires_at``. Nothing is active until
        :meth:`confirm_totp_enrollment`; starting again replaces the pending secret.
        :class:`AlreadyExists` if the user already has an authenticator app.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.StartTotpEnrollmentRequest(name=name)
        return self._call(
            "StartTotpEnrollment", self._factor.StartTotpEnrollment, request, metadata, timeout
        )

    def confirm_totp_enrollment(
        self,
        code: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> factor_pb2.ConfirmTotpEnrollmentResponse:
        """Activates the pending authenticator app with a ``code`` it shows: ``.factor`` and
        ``.recovery_codes`` (10, shown once; earlier ones stop working). A wrong code is
        :class:`InvalidArgument`; no pending enrollment :class:`FailedPrecondition`.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.ConfirmTotpEnrollmentRequest(code=code)
        return self._call(
            "ConfirmTotpEnrollment",
            self._factor.ConfirmTotpEnrollment,
            request,
            metadata,
            timeout,
        )

    def regenerate_recovery_codes(
        self,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> list[str]:
        """Replaces the caller's recovery codes with 10 new ones (shown once) and returns
        them; :class:`FailedPrecondition` without an active second factor."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.RegenerateRecoveryCodesRequest()
        response = self._call(
            "RegenerateRecoveryCodes",
            self._factor.RegenerateRecoveryCodes,
            request,
            metadata,
            timeout,
        )
        return list(response.recovery_codes)

    def list_factors(
        self, *, token: str, timeout: float | None = None
    ) -> factor_pb2.ListFactorsResponse:
        """The caller's active factors (``.factors``: ``id``, ``kind`` (``totp`` or
        ``passkey``), ``name``, ``created_at``, ``last_used_at``, and for passkeys
        ``backup_eligible`` and ``backed_up``; never a secret) and
        ``.recovery_codes_remaining`` (retried after UNAVAILABLE)."""
        metadata = call_metadata(token, token_required=True)
        request = factor_pb2.ListFactorsRequest()
        return self._call("ListFactors", self._factor.ListFactors, request, metadata, timeout)

    def start_passkey_registration(
        self,
        name: str = "",
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> factor_pb2.StartPasskeyRegistrationResponse:
        """Starts registering a passkey named ``name`` (default "Passkey"): ``.options_json``
        (a ``PublicKeyCredentialCreationOptionsJSON``, binary fields base64url, for
        ``navigator.credentials.create`` or ``@simplewebauthn/browser``'s
        ``startRegistration({optionsJSON})``) and ``.expires_at`` (5 minutes). Starting again
        replaces the pending registration. Needs the step-up sign-in like every factor
        change (:class:`ReauthenticationRequired`).
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.StartPasskeyRegistrationRequest(name=name)
        return self._call(
            "StartPasskeyRegistration",
            self._factor.StartPasskeyRegistration,
            request,
            metadata,
            timeout,
        )

    def finish_passkey_registration(
        self,
        credential_json: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> factor_pb2.FinishPasskeyRegistrationResponse:
        """Finishes the registration with the browser's ``RegistrationResponseJSON`` (a JSON
        string: ``JSON.stringify(credential.toJSON())``): ``.factor`` (kind ``passkey``,
        ``backup_eligible``, ``backed_up``) and ``.recovery_codes`` (10, shown once, when this
        is the user's first second factor; else empty). A credential that fails the checks
        (origin, RP id, challenge, format) is :class:`InvalidArgument` on
        ``credential_json``; no pending registration :class:`FailedPrecondition`.
        """
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.FinishPasskeyRegistrationRequest(credential_json=credential_json)
        return self._call(
            "FinishPasskeyRegistration",
            self._factor.FinishPasskeyRegistration,
            request,
            metadata,
            timeout,
        )

    def remove_factor(
        self,
        factor_id: str,
        *,
        token: str,
        client_ip: str | None = None,
        user_agent: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Removes one of the caller's factors (another user's id is :class:`NotFound`).
        Removing the last one also removes the recovery codes: sign-in needs the password
        alone again."""
        metadata = call_metadata(token, client_ip, user_agent, token_required=True)
        request = factor_pb2.RemoveFactorRequest(factor_id=factor_id)
        self._call("RemoveFactor", self._factor.RemoveFactor, request, metadata, timeout)

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
