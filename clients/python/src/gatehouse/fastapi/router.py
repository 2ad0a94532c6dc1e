"""The routes of :meth:`gatehouse.fastapi.Gatehouse.router`, a function per group."""

# No `from __future__ import annotations`: FastAPI reads the route annotations, which use the
# alias `User` local to each group.

import hmac
import logging
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse

from .._models import (
    AccessTokenIn,
    AccessTokenOut,
    AuditEventsOut,
    AuthOut,
    ChangePasswordIn,
    ConsentIn,
    ConsentRecordsOut,
    ConsentStateOut,
    DeleteAccountIn,
    FactorsOut,
    MessageOut,
    PasskeyCredentialIn,
    PasskeyRegisteredOut,
    PasskeyRegistrationIn,
    ProfileIn,
    ProfileOut,
    RequestEmailChangeIn,
    RecoveryCodesOut,
    RequestPasswordResetIn,
    ResetPasswordIn,
    RevokedOut,
    SecondFactorIn,
    SecondFactorRequiredOut,
    SessionInfoOut,
    SessionOut,
    SessionsOut,
    SignInIn,
    SignUpIn,
    TotpConfirmedOut,
    TotpConfirmIn,
    TotpEnrollmentIn,
    TotpEnrollmentOut,
    UserOut,
    VerifyEmailIn,
    parse_options,
    timestamp,
)
from .._proto.gatehouse.v1 import auth_pb2
from ..errors import GatehouseError, InvalidArgument, Unauthenticated
from .caller import CurrentUser
from .errors import _http_errors, error_responses, http_exception, reauthentication_responses
from .host import RouterHost
from .origins import _REDIRECT_TO_MAX, _safe_redirect

__all__ = ["build_router"]

_log = logging.getLogger("gatehouse.fastapi")

#: Upper bound of the state cookie's life when Gatehouse gives no expiry (seconds).
_OAUTH_STATE_MAX_AGE: Final = 600
#: Upper bound of the second-factor cookie's life (seconds): Gatehouse's challenges live 5
#: minutes.
_SECOND_FACTOR_MAX_AGE: Final = 300
#: The query parameter added to ``redirect_to`` when a provider sign-in needs a second factor.
SECOND_FACTOR_QUERY: Final = "second_factor"
#: Upper bound of the passkey cookie's life (seconds): Gatehouse's ceremonies live 5 minutes.
_PASSKEY_MAX_AGE: Final = 300
_NO_PASSKEY_SIGN_IN: Final = (
    "no passkey sign-in is in progress in this browser (it expired or was used): "
    "start again with POST passkeys/sign-in/options"
)
_NO_SECOND_FACTOR: Final = (
    "no sign-in is waiting for a second factor in this browser (it expired or was "
    "completed): sign in again"
)
_RESET_REQUESTED: Final = "If an account uses this address, a password reset link is on its way."
#: Where FastAPI's own 422 puts the provider routes' fields: ``provider`` is a path parameter,
#: the rest (``code``, ``state``) are query parameters.
_OAUTH_LOCATIONS: Final = {"provider": "path"}
#: The file name browsers save the data export under.
EXPORT_FILENAME: Final = "gatehouse-export.json"


def build_router(gh: RouterHost, *, tags: list[str] | None = None) -> APIRouter:
    """The router of :meth:`Gatehouse.router <gatehouse.fastapi.Gatehouse.router>`."""
    router = APIRouter(tags=list(tags or ["auth"]), dependencies=[Depends(gh.check_origin)])
    # In this order so that the routes (and the OpenAPI document) keep theirs.
    _add_session_routes(router, gh)
    _add_account_routes(router, gh)
    _add_recovery_routes(router, gh)
    _add_token_routes(router, gh)
    _add_oauth_routes(router, gh)
    _add_privacy_routes(router, gh)
    _add_factor_routes(router, gh)
    _add_passkey_routes(router, gh)
    return router


def _auth_out(gh: RouterHost, result: auth_pb2.AuthResponse) -> AuthOut:
    challenge = SecondFactorRequiredOut.of(result)
    if challenge is not None:
        # Nothing about the account before the second factor; the token is in the cookie.
        if not gh.expose_token:
            challenge = challenge.model_copy(update={"challenge_token": None})
        return AuthOut(user=None, session=None, second_factor_required=challenge)
    signed_in = result.HasField("session") and bool(result.session_token)
    return AuthOut(
        user=UserOut.from_proto(result.user),
        session=SessionOut.from_proto(result.session) if signed_in else None,
        session_token=result.session_token if gh.expose_token and signed_in else None,
    )


def _max_age_until(
    message: auth_pb2.SecondFactorRequired | auth_pb2.StartPasskeySignInResponse, ceiling: int
) -> int:
    """Seconds a short-lived cookie lives: until ``message.expires_at``, at most ``ceiling``."""
    max_age = ceiling
    if message.HasField("expires_at"):
        expires = message.expires_at.ToDatetime(tzinfo=UTC)
        left = int((expires - datetime.now(UTC)).total_seconds())
        max_age = max(1, min(left, ceiling))
    return max_age


def _challenge_max_age(challenge: auth_pb2.SecondFactorRequired) -> int:
    """Seconds the second-factor cookie lives: until the challenge expires, at most
    _SECOND_FACTOR_MAX_AGE."""
    return _max_age_until(challenge, _SECOND_FACTOR_MAX_AGE)


def _set_cookie_for(
    gh: RouterHost,
    response: Response,
    result: auth_pb2.AuthResponse | auth_pb2.CompleteOAuthResponse,
) -> None:
    """The session cookie of a sign-in, or the second-factor cookie of one that needs it."""
    if result.HasField("second_factor_required"):
        challenge = result.second_factor_required
        response.headers["Cache-Control"] = "no-store"
        gh.set_second_factor_cookie(
            response, challenge.challenge_token, _challenge_max_age(challenge)
        )
    elif result.HasField("session") and result.session_token:
        gh.set_session_cookie(response, result.session_token, result.session)


def _add_session_routes(router: APIRouter, gh: RouterHost) -> None:
    """Sign-up, sign-in, sign-out and the caller's sessions."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    @router.post(
        "/sign-up",
        status_code=status.HTTP_201_CREATED,
        responses=error_responses(403, 409, 429, 503, 504),
    )
    async def sign_up(body: SignUpIn, request: Request, response: Response) -> AuthOut:
        """Creates an account (with optional profile), signs in and sets the cookie."""
        profile = body.profile.to_proto() if body.profile is not None else None
        with _http_errors():
            result = await gh.client.sign_up(
                body.email, body.password, body.name, profile, **gh.client_meta(request)
            )
        _set_cookie_for(gh, response, result)
        return _auth_out(gh, result)

    @router.post("/sign-in", responses=error_responses(401, 403, 429, 503, 504))
    async def sign_in(body: SignInIn, request: Request, response: Response) -> AuthOut:
        """Signs in and sets the session cookie. For a user with a second factor, the answer
        is ``{"user": null, "session": null, "second_factor_required": {"methods",
        "expires_at"}}`` and the challenge goes into a short-lived HttpOnly cookie instead:
        finish with ``POST second-factor``."""
        with _http_errors():
            result = await gh.client.sign_in(
                body.email, body.password, **gh.client_meta(request)
            )
        _set_cookie_for(gh, response, result)
        return _auth_out(gh, result)

    @router.post("/second-factor", responses=error_responses(400, 401, 403, 429, 503, 504))
    async def second_factor(
        body: SecondFactorIn, request: Request, response: Response
    ) -> AuthOut:
        """Finishes a sign-in that answered ``second_factor_required``, with
        ``{"totp_code"}``, ``{"recovery_code"}`` or ``{"passkey_credential"}`` (the
        browser's answer to ``second_factor_required.passkey_options``: ``credential.toJSON()``
        or ``startAuthentication``'s result), and sets the session cookie as sign-in does. 400
        if no challenge is waiting in this browser (the cookie expired, or the sign-in was
        completed); a wrong or already used code, or a passkey answer Gatehouse refuses, is
        401, and the challenge stays (try again until it expires; wrong codes count towards
        the account's lockout)."""
        challenge = body.challenge_token or gh.second_factor_from_request(request)
        if challenge is None:
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=_NO_SECOND_FACTOR)
        passkey = body.passkey_credential
        with _http_errors():
            result = await gh.client.complete_second_factor(
                challenge,
                totp_code=body.totp_code,
                recovery_code=body.recovery_code,
                passkey_credential_json=passkey.to_json() if passkey is not None else None,
                **meta(request),
            )
        gh.clear_second_factor_cookie(response)
        _set_cookie_for(gh, response, result)
        response.headers["Cache-Control"] = "no-store"
        return _auth_out(gh, result)

    @router.post(
        "/sign-out",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(403),
        dependencies=[Depends(scheme) for scheme in gh.security_schemes],
    )
    async def sign_out(request: Request) -> Response:
        """Clears the cookie and revokes the caller's session (if any) at Gatehouse. Always
        204: when Gatehouse cannot be reached, the browser is signed out all the same, and
        the session lives until it expires unless revoked later (a warning is logged)."""
        response = Response(status_code=status.HTTP_204_NO_CONTENT)
        found = gh.token_from_request(request)
        if found is not None:
            if gh.cache is not None:
                gh.cache.evict(found[0])
            try:
                await gh.client.sign_out(token=found[0], **meta(request))
            except Unauthenticated:
                pass  # already revoked or expired, or never a session
            except GatehouseError as exc:
                # Never the token: the log would then hold a live session.
                _log.warning(
                    "sign-out: Gatehouse did not revoke the session (%s: %s); the caller is "
                    "signed out here, but the session stays valid until it expires unless "
                    "revoked later (another session's sign-out of it, a password change, "
                    "an operator)",
                    type(exc).__name__,
                    exc.message,
                )
        gh.clear_session_cookie(response)
        return response

    @router.get("/session", responses=error_responses(401, 503, 504))
    async def session(user: User, request: Request, response: Response) -> SessionInfoOut:
        """The signed-in user and session; a cookie session gets its cookie's lifetime
        renewed to the session's (sliding) expiry."""
        found = gh.token_from_request(request)
        if found is not None and found[1] == "cookie":
            gh.set_session_cookie(response, user.token, user.session)
        return SessionInfoOut(user=user.user, session=user.session)

    @router.get("/sessions", responses=error_responses(401, 503, 504))
    async def list_sessions(user: User) -> SessionsOut:
        """The caller's active sessions, the current one marked."""
        with _http_errors():
            sessions = await gh.client.list_sessions(token=user.token)
        return SessionsOut(sessions=[SessionOut.from_proto(s) for s in sessions])

    @router.delete(
        "/sessions/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(401, 403, 404, 503, 504),
    )
    async def revoke_session(session_id: str, user: User, request: Request) -> Response:
        """Revokes one of the caller's sessions."""
        with _http_errors():
            await gh.client.revoke_session(session_id, token=user.token, **meta(request))
        if gh.cache is not None:
            gh.cache.evict_user(user.id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post("/sessions/revoke-others", responses=error_responses(401, 403, 503, 504))
    async def revoke_other_sessions(user: User, request: Request) -> RevokedOut:
        """Signs the caller out everywhere else."""
        with _http_errors():
            count = await gh.client.revoke_other_sessions(token=user.token, **meta(request))
        if gh.cache is not None:
            gh.cache.evict_user(user.id)
        return RevokedOut(revoked_count=count)


def _add_account_routes(router: APIRouter, gh: RouterHost) -> None:
    """Password change, account deletion and the profile."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    @router.post("/change-password", responses=error_responses(401, 403, 429, 503, 504))
    async def change_password(
        body: ChangePasswordIn, user: User, request: Request
    ) -> RevokedOut:
        """Changes the password, optionally revoking the other sessions."""
        with _http_errors():
            count = await gh.client.change_password(
                body.current_password,
                body.new_password,
                token=user.token,
                revoke_other_sessions=body.revoke_other_sessions,
                **meta(request),
            )
        if gh.cache is not None and body.revoke_other_sessions:
            gh.cache.evict_user(user.id)
        return RevokedOut(revoked_count=count)

    @router.post(
        "/delete-account",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(401, 403, 503, 504),
    )
    async def delete_account(body: DeleteAccountIn, user: User, request: Request) -> Response:
        """Deletes the caller's account after checking the password; clears the cookie."""
        with _http_errors():
            await gh.client.delete_account(body.password, token=user.token, **meta(request))
        if gh.cache is not None:
            gh.cache.evict_user(user.id)
        response = Response(status_code=status.HTTP_204_NO_CONTENT)
        gh.clear_session_cookie(response)
        return response

    @router.get("/profile", responses=error_responses(401, 503, 504))
    async def get_profile(user: User) -> ProfileOut:
        """The caller's learner profile."""
        with _http_errors():
            profile = await gh.client.get_profile(token=user.token)
        return ProfileOut.from_proto(profile)

    @router.patch("/profile", responses=error_responses(400, 401, 403, 503, 504))
    async def update_profile(body: ProfileIn, user: User, request: Request) -> ProfileOut:
        """Changes the profile fields present in the body (null clears a field)."""
        return await gh.update_profile(user, body, request)


def _add_recovery_routes(router: APIRouter, gh: RouterHost) -> None:
    """Email verification, password reset and email change."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    # Email and recovery. The link in the mail points to the front end
    # (GATEHOUSE_FRONTEND_URL/verify-email?token=... or /reset-password?token=...), which
    # posts the token here.

    @router.post(
        "/send-verification",
        status_code=status.HTTP_202_ACCEPTED,
        responses=error_responses(400, 401, 403, 429, 503, 504),
    )
    async def send_verification(user: User, request: Request) -> MessageOut:
        """Mails the caller a new verification link (400 if already verified)."""
        with _http_errors():
            await gh.client.send_verification_email(token=user.token, **meta(request))
        return MessageOut(message="A new verification link is on its way.")

    @router.post("/verify-email", responses=error_responses(403, 429, 503, 504))
    async def verify_email(body: VerifyEmailIn, request: Request) -> MessageOut:
        """Redeems a verification or email-change link's token; needs no session. A used,
        expired or unknown token is 422 on ``token``."""
        with _http_errors():
            await gh.client.verify_email(body.token, **meta(request))
        found = gh.token_from_request(request)
        if gh.cache is not None and found is not None:
            gh.cache.evict(found[0])
        return MessageOut(message="Your email address is verified.")

    @router.post(
        "/request-password-reset",
        status_code=status.HTTP_202_ACCEPTED,
        responses=error_responses(403, 429, 503, 504),
    )
    async def request_password_reset(
        body: RequestPasswordResetIn, request: Request
    ) -> MessageOut:
        """Mails a reset link if the address has an account. The answer is the same either
        way (only a malformed address, 422, or a rate limit, 429, differ)."""
        with _http_errors():
            await gh.client.request_password_reset(body.email, **meta(request))
        return MessageOut(message=_RESET_REQUESTED)

    @router.post("/reset-password", responses=error_responses(403, 429, 503, 504))
    async def reset_password(
        body: ResetPasswordIn, request: Request, response: Response
    ) -> MessageOut:
        """Sets a new password with a reset link's token. Every session of the user ends
        (the caller signs in again); the browser's cookie is cleared if it was one of them."""
        with _http_errors():
            await gh.client.reset_password(body.token, body.new_password, **meta(request))
        if gh.cache is not None:
            gh.cache.clear()  # the reset's user is unknown here; resets are rare
        found = gh.token_from_request(request)
        if found is not None and found[1] == "cookie":
            try:
                await gh.client.get_session(token=found[0])
            except Unauthenticated:
                gh.clear_session_cookie(response)
            except GatehouseError:
                pass
        return MessageOut(message="Your password was reset. Sign in with the new one.")

    @router.post(
        "/request-email-change",
        status_code=status.HTTP_202_ACCEPTED,
        responses=error_responses(401, 403, 409, 429, 503, 504),
    )
    async def request_email_change(
        body: RequestEmailChangeIn, user: User, request: Request
    ) -> MessageOut:
        """Sends a confirmation link to the new address (and a notice to the current one);
        the address changes when the link is redeemed at ``/verify-email``. A wrong
        ``current_password`` is 422 on that field."""
        with _http_errors():
            await gh.client.request_email_change(
                body.new_email, body.current_password, token=user.token, **meta(request)
            )
        return MessageOut(message="A confirmation link was sent to the new address.")


def _add_token_routes(router: APIRouter, gh: RouterHost) -> None:
    """Access tokens for other services, and the caller's audit log."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]

    @router.post("/access-token", responses=error_responses(401, 403, 503, 504))
    async def access_token(body: AccessTokenIn, user: User) -> AccessTokenOut:
        """A short-lived signed JWT for another service (``audience``), for the signed-in
        caller; an audience Gatehouse is not configured for is 422 on ``audience``."""
        with _http_errors():
            issued = await gh.client.issue_access_token(body.audience, token=user.token)
        return AccessTokenOut(
            access_token=issued.access_token,
            token_type=issued.token_type or "Bearer",
            expires_at=timestamp(issued, "expires_at"),
        )

    @router.get("/audit-events", responses=error_responses(401, 503, 504))
    async def audit_events(
        user: User,
        page_size: Annotated[int | None, Query(ge=1, le=100)] = None,
        page_token: Annotated[str, Query(max_length=1024)] = "",
    ) -> AuditEventsOut:
        """The caller's security events, newest first, a page at a time (default 50)."""
        with _http_errors(location="query"):
            page = await gh.client.list_audit_events(
                token=user.token, page_size=page_size or 0, page_token=page_token
            )
        return AuditEventsOut.from_proto(page)


# Provider sign-in. The browser goes to /oauth/{provider}/start, is redirected to the
# provider, comes back to /oauth/{provider}/callback with code and state, and leaves
# signed in (the session cookie) to redirect_to.


def _redirect_uri_for(gh: RouterHost, provider: str) -> str:
    uri = gh.oauth_redirect_uri(provider)
    if uri is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"sign-in with {provider!r} is not configured here",
        )
    return uri


def _check_redirect_to(redirect_to: str | None) -> None:
    if redirect_to is not None and not _safe_redirect(redirect_to):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["query", "redirect_to"],
                    "msg": "must be a path on this site, starting with a single /",
                    "type": "gatehouse.redirect_to",
                }
            ],
        )


def _state_max_age(started: auth_pb2.StartOAuthResponse) -> int:
    """Seconds the state cookie lives: until the flow expires, at most _OAUTH_STATE_MAX_AGE."""
    max_age = _OAUTH_STATE_MAX_AGE
    if started.HasField("expires_at"):
        expires = started.expires_at.ToDatetime(tzinfo=UTC)
        left = int((expires - datetime.now(UTC)).total_seconds())
        max_age = max(1, min(left, _OAUTH_STATE_MAX_AGE))
    return max_age


def _bad_state(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status.HTTP_400_BAD_REQUEST)


def _with_query(target: str, name: str, value: str) -> str:
    """The same-site path ``target`` with ``name=value`` added to its query."""
    parts = urlsplit(target)
    query = f"{parts.query}&{name}={value}" if parts.query else f"{name}={value}"
    return urlunsplit(("", "", parts.path, query, parts.fragment))


def _signed_in(
    gh: RouterHost, result: auth_pb2.CompleteOAuthResponse, redirect_to: str | None
) -> Response:
    """The callback's answer once Gatehouse has signed the browser in (or asked for the
    second factor: then the redirect target gets ``?second_factor=required``)."""
    response: Response
    needs_factor = result.HasField("second_factor_required")
    if redirect_to:
        target = redirect_to
        if needs_factor:
            target = _with_query(redirect_to, SECOND_FACTOR_QUERY, "required")
        response = RedirectResponse(target, status_code=status.HTTP_302_FOUND)
    else:
        as_auth = auth_pb2.AuthResponse(
            user=result.user,
            session=result.session,
            session_token=result.session_token,
        )
        if needs_factor:
            as_auth.second_factor_required.CopyFrom(result.second_factor_required)
        out = _auth_out(gh, as_auth)
        response = JSONResponse({**out.model_dump(mode="json"), "is_new_user": result.is_new_user})
    response.headers["Cache-Control"] = "no-store"
    _set_cookie_for(gh, response, result)
    gh.clear_oauth_state_cookie(response)
    return response


def _add_oauth_routes(router: APIRouter, gh: RouterHost) -> None:
    """Provider sign-in: the start and the callback."""
    meta = gh.client_meta

    @router.get(
        "/oauth/{provider}/start",
        response_model=None,
        responses=error_responses(404, 503, 504),
    )
    async def oauth_start(
        provider: Annotated[str, Path(min_length=1, max_length=64)],
        request: Request,
        redirect_to: Annotated[str | None, Query(max_length=_REDIRECT_TO_MAX)] = None,
    ) -> Response:
        """302 to the provider's sign-in page. ``redirect_to`` (a same-site path such as
        ``/books``; anything else is 422) is where the callback sends the browser after."""
        _check_redirect_to(redirect_to)
        redirect_uri = _redirect_uri_for(gh, provider)
        with _http_errors(location="query", locations=_OAUTH_LOCATIONS):
            started = await gh.client.start_o_auth(provider, redirect_uri)
        max_age = _state_max_age(started)
        response = RedirectResponse(started.authorization_url, status_code=status.HTTP_302_FOUND)
        response.headers["Cache-Control"] = "no-store"
        gh.set_oauth_state_cookie(response, started.state, redirect_to, max_age)
        return response

    @router.get(
        "/oauth/{provider}/callback",
        response_model=None,
        responses=error_responses(400, 401, 404, 503, 504),
    )
    async def oauth_callback(
        provider: Annotated[str, Path(min_length=1, max_length=64)],
        request: Request,
        code: Annotated[str, Query(max_length=4096)] = "",
        state: Annotated[str, Query(max_length=1024)] = "",
        error: Annotated[str | None, Query(max_length=256)] = None,
    ) -> Response:
        """Where the provider sends the browser back. The ``state`` must equal the state
        cookie set by ``start`` (else 400, and Gatehouse is not asked); then the session
        cookie is set and the browser goes to ``redirect_to`` (302), or, without one, the
        answer is JSON like sign-in's."""
        kept = gh.oauth_state_from_request(request)
        if kept is None:
            return _bad_state("no sign-in in progress in this browser (state cookie missing)")
        expected, redirect_to = kept
        if not state or not hmac.compare_digest(expected.encode(), state.encode()):
            return _bad_state("the state does not match this browser's sign-in")
        if error is not None or not code:
            refused = _bad_state(
                f"the provider did not sign you in: {error}" if error else "code is missing"
            )
            gh.clear_oauth_state_cookie(refused)
            return refused
        redirect_uri = _redirect_uri_for(gh, provider)
        try:
            result = await gh.client.complete_o_auth(
                provider, code, state, redirect_uri, **meta(request)
            )
        except GatehouseError as exc:
            http = http_exception(exc, location="query", locations=_OAUTH_LOCATIONS)
            failed = JSONResponse(
                {"detail": http.detail}, status_code=http.status_code, headers=http.headers
            )
            gh.clear_oauth_state_cookie(failed)  # the state is spent either way
            return failed
        return _signed_in(gh, result, redirect_to)


def _add_privacy_routes(router: APIRouter, gh: RouterHost) -> None:
    """The caller's data export and consents."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    @router.get(
        "/export",
        response_model=None,
        responses=error_responses(401, 503, 504),
    )
    async def export(user: User, request: Request) -> Response:
        """Everything Gatehouse holds about the caller, as a JSON download
        (``gatehouse-export.json``: ``format``, ``exported_at``, ``user_id``, ``tables``).
        Never a secret; the export is audited."""
        with _http_errors():
            document = await gh.client.export_my_data(token=user.token, **meta(request))
        return JSONResponse(
            document,
            headers={
                "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"',
                "Cache-Control": "no-store",
            },
        )

    @router.get("/consents", responses=error_responses(401, 503, 504))
    async def list_consents(
        user: User,
        page_size: Annotated[int | None, Query(ge=1, le=100)] = None,
        page_token: Annotated[str, Query(max_length=1024)] = "",
    ) -> ConsentRecordsOut:
        """The caller's consent history, newest first, a page at a time (default 50), with
        the state of every purpose and the policy version in force."""
        with _http_errors(location="query"):
            page = await gh.client.list_consent_records(
                token=user.token, page_size=page_size or 0, page_token=page_token
            )
        return ConsentRecordsOut.from_proto(page)

    @router.post("/consents", responses=error_responses(401, 403, 503, 504))
    async def update_consent(body: ConsentIn, user: User, request: Request) -> ConsentStateOut:
        """Grants or withdraws consent for one purpose (recorded with the browser's address
        and User-Agent); an unknown purpose is 422 on ``purpose``. Withdrawing
        ``learner_background`` erases the profile's background fields."""
        with _http_errors():
            state = await gh.client.update_consent(
                body.purpose, body.granted, token=user.token, **meta(request)
            )
        return ConsentStateOut.from_proto(state)


def _add_factor_routes(router: APIRouter, gh: RouterHost) -> None:
    """The caller's second factors: an authenticator app (TOTP) and recovery codes.

    Gatehouse lets only a recent sign-in (``GATEHOUSE_STEP_UP_MAX_AGE``, 15 minutes by
    default) change them, and once there is a second factor only a sign-in that used it;
    otherwise these routes answer 403 with ``{"detail": {"error": "reauthentication_required",
    "reason": ...}}``. Answers holding a secret or codes are ``Cache-Control: no-store``."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    @router.get("/factors", responses=reauthentication_responses(401, 403, 503, 504))
    async def list_factors(user: User) -> FactorsOut:
        """The caller's active second factors (never a secret) and how many recovery codes
        are left."""
        with _http_errors():
            listed = await gh.client.list_factors(token=user.token)
        return FactorsOut.from_proto(listed)

    @router.post("/factors/totp", responses=reauthentication_responses(401, 403, 409, 503, 504))
    async def start_totp_enrollment(
        user: User,
        request: Request,
        response: Response,
        body: Annotated[TotpEnrollmentIn | None, Body()] = None,
    ) -> TotpEnrollmentOut:
        """Starts enrolling an authenticator app (``{"name"}``, optional): its secret, the
        ``otpauth://`` URI and a QR code of it (``qr_code_svg``, an SVG document). Nothing is
        active until ``POST factors/totp/confirm``; starting again replaces the pending
        secret. 409 if the caller already has an authenticator app (remove it first)."""
        name = body.name if body is not None else ""
        with _http_errors():
            started = await gh.client.start_totp_enrollment(
                name, token=user.token, **meta(request)
            )
        response.headers["Cache-Control"] = "no-store"
        return TotpEnrollmentOut.from_proto(started)

    @router.post(
        "/factors/totp/confirm",
        responses=reauthentication_responses(400, 401, 403, 429, 503, 504),
    )
    async def confirm_totp_enrollment(
        body: TotpConfirmIn, user: User, request: Request, response: Response
    ) -> TotpConfirmedOut:
        """Activates the pending authenticator app with a code it shows (``{"code"}``) and
        returns 10 new recovery codes, shown once. A wrong code is 422 on ``code``; no pending
        enrollment 400."""
        with _http_errors():
            confirmed = await gh.client.confirm_totp_enrollment(
                body.code, token=user.token, **meta(request)
            )
        response.headers["Cache-Control"] = "no-store"
        return TotpConfirmedOut.from_proto(confirmed)

    @router.post(
        "/factors/recovery-codes",
        responses=reauthentication_responses(400, 401, 403, 503, 504),
    )
    async def regenerate_recovery_codes(
        user: User, request: Request, response: Response
    ) -> RecoveryCodesOut:
        """Replaces the recovery codes with 10 new ones (shown once); 400 without an active
        second factor."""
        with _http_errors():
            codes = await gh.client.regenerate_recovery_codes(token=user.token, **meta(request))
        response.headers["Cache-Control"] = "no-store"
        return RecoveryCodesOut(recovery_codes=codes)

    @router.delete(
        "/factors/{factor_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=reauthentication_responses(401, 403, 404, 503, 504),
    )
    async def remove_factor(
        factor_id: Annotated[str, Path(min_length=1, max_length=128)],
        user: User,
        request: Request,
    ) -> Response:
        """Removes one of the caller's factors (404 for one they do not have). Removing the
        last one removes the recovery codes too: sign-in needs the password alone again."""
        with _http_errors(location="path"):
            await gh.client.remove_factor(factor_id, token=user.token, **meta(request))
        return Response(status_code=status.HTTP_204_NO_CONTENT)


def _credential_errors() -> AbstractContextManager[None]:
    """Gatehouse's INVALID_ARGUMENT on ``credential_json`` as a 422 on the request body (the
    body is the credential)."""
    return _http_errors(strip_field_prefix="credential_json")


def _add_passkey_routes(router: APIRouter, gh: RouterHost) -> None:
    """Passkeys (WebAuthn): registering one for the signed-in user, and signing in with one
    without a password.

    Each ceremony is two JSON calls around the browser's ``navigator.credentials.create`` /
    ``.get``: the options (WebAuthn's ``PublicKeyCredentialCreationOptionsJSON`` /
    ``PublicKeyCredentialRequestOptionsJSON``, binary members as base64url strings, as
    ``PublicKeyCredential.parseCreationOptionsFromJSON`` and ``@simplewebauthn/browser``'s
    ``startRegistration({optionsJSON})`` take them), then the credential the browser made
    (``credential.toJSON()``, or what ``startRegistration`` / ``startAuthentication``
    return). Gatehouse verifies the credential, including that the page's origin is one of
    its ``GATEHOUSE_WEBAUTHN_ORIGINS``. Registering needs the step-up sign-in of every factor
    change (403 ``reauthentication_required`` otherwise)."""
    User = Annotated[CurrentUser, Depends(gh.current_user)]
    meta = gh.client_meta

    @router.post(
        "/passkeys/register/options",
        responses=reauthentication_responses(401, 403, 503, 504),
    )
    async def passkey_registration_options(
        user: User,
        request: Request,
        response: Response,
        body: Annotated[PasskeyRegistrationIn | None, Body()] = None,
    ) -> dict[str, Any]:
        """Starts registering a passkey (``{"name"}``, optional; default "Passkey"): the
        ``PublicKeyCredentialCreationOptionsJSON`` to create it with. Starting again replaces
        the pending registration, which lapses after 5 minutes."""
        name = body.name if body is not None else ""
        with _http_errors():
            started = await gh.client.start_passkey_registration(
                name, token=user.token, **meta(request)
            )
        options = parse_options(started.options_json)
        if options is None:
            raise HTTPException(
                status_code=status.HTTP_502_BAD_GATEWAY, detail="authentication service error"
            )
        response.headers["Cache-Control"] = "no-store"
        return options

    @router.post(
        "/passkeys/register",
        responses=reauthentication_responses(400, 401, 403, 503, 504),
    )
    async def passkey_registration(
        body: PasskeyCredentialIn, user: User, request: Request, response: Response
    ) -> PasskeyRegisteredOut:
        """Finishes the registration with the credential the browser created (the body is
        the ``RegistrationResponseJSON``) and returns the new factor, with the 10 recovery
        codes (shown once) when it is the caller's first second factor. A credential
        Gatehouse refuses (another origin or RP id, another challenge, a malformed
        attestation) is 422 on the body; no registration in progress 400."""
        with _credential_errors():
            finished = await gh.client.finish_passkey_registration(
                body.to_json(), token=user.token, **meta(request)
            )
        response.headers["Cache-Control"] = "no-store"
        return PasskeyRegisteredOut.from_proto(finished)

    @router.post("/passkeys/sign-in/options", responses=error_responses(403, 429, 503, 504))
    async def passkey_sign_in_options(request: Request, response: Response) -> dict[str, Any]:
        """Starts a passwordless sign-in: the ``PublicKeyCredentialRequestOptionsJSON`` for
        ``navigator.credentials.get`` (any passkey of this site). The ceremony's id goes into
        a short-lived HttpOnly cookie, for ``POST passkeys/sign-in`` (5 minutes, single
        use)."""
        with _http_errors():
            started = await gh.client.start_passkey_sign_in(**meta(request))
        options = parse_options(started.options_json)
        if options is None or not started.challenge_id:
            raise HTTPException(
                status_code=status.HTTP_502_BAD_GATEWAY, detail="authentication service error"
            )
        response.headers["Cache-Control"] = "no-store"
        gh.set_passkey_cookie(
            response, started.challenge_id, _max_age_until(started, _PASSKEY_MAX_AGE)
        )
        return options

    @router.post(
        "/passkeys/sign-in",
        response_model=None,
        responses={
            200: {"model": AuthOut, "description": "Signed in: the session cookie is set"},
            **error_responses(400, 401, 403, 429, 503, 504),
        },
    )
    async def passkey_sign_in(body: PasskeyCredentialIn, request: Request) -> Response:
        """Finishes a passkey sign-in with the browser's answer (the body is the
        ``AuthenticationResponseJSON``) and sets the session cookie as sign-in does (the
        session has ``aal`` 2: the passkey verified its user). 400 if no passkey sign-in is in
        progress in this browser (the cookie expired or was used); a passkey Gatehouse
        refuses (unknown, another origin, a bad signature, a lapsed ceremony) is 401. The
        ceremony is spent either way: start again with ``POST passkeys/sign-in/options``."""
        challenge_id = gh.passkey_challenge_from_request(request)
        if challenge_id is None:
            return JSONResponse(
                {"detail": _NO_PASSKEY_SIGN_IN}, status_code=status.HTTP_400_BAD_REQUEST
            )
        answer: Response
        try:
            result = await gh.client.finish_passkey_sign_in(
                challenge_id, body.to_json(), **meta(request)
            )
        except GatehouseError as exc:
            if isinstance(exc, InvalidArgument):
                # A credential Gatehouse cannot read at all is as good as a wrong one.
                exc = Unauthenticated(exc.message)
            http = http_exception(exc)
            answer = JSONResponse(
                {"detail": http.detail}, status_code=http.status_code, headers=http.headers
            )
        else:
            answer = JSONResponse(_auth_out(gh, result).model_dump(mode="json"))
            _set_cookie_for(gh, answer, result)
        answer.headers["Cache-Control"] = "no-store"
        gh.clear_passkey_cookie(answer)
        return answer
