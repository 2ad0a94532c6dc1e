"""FastAPI integration: session dependencies, error mapping, cookie helpers and a ready router.

>>> gatehouse = Gatehouse(AsyncClient("localhost:50051"))
>>> gatehouse.install(app)                       # exception handlers for GatehouseError
>>> app.include_router(gatehouse.router(), prefix="/auth")
>>> @app.get("/me")
... async def me(user: Annotated[CurrentUser, Depends(gatehouse.current_user)]) -> UserOut:
...     return user.user                         # a pydantic model, in the OpenAPI document
>>> Verified = Depends(gatehouse.current_user(verified=True))  # also optional=, active=

HTTP status mapping (:func:`http_exception`):

==================== ==========================================================
gRPC status          HTTP
==================== ==========================================================
UNAUTHENTICATED      401 (``WWW-Authenticate: Bearer``)
PERMISSION_DENIED    403
NOT_FOUND            404
INVALID_ARGUMENT     422, ``detail`` lists field errors like FastAPI's own 422
ALREADY_EXISTS       409
FAILED_PRECONDITION  400 (the request cannot be applied as sent, e.g. background profile
                     fields without consent; ``google.rpc.Code``'s own HTTP mapping)
  with a step-up     403 ``{"detail": {"error": "reauthentication_required", "reason":
  reason             "reauthentication_required" | "second_factor_required", "message",
                     "max_age_seconds"}}`` (:class:`gatehouse.ReauthenticationRequired`:
                     sign in again, with the second factor, and retry)
RESOURCE_EXHAUSTED   429 with ``Retry-After`` (seconds, from ``google.rpc.RetryInfo``)
UNAVAILABLE          503 with ``Retry-After: 1`` (also when Gatehouse cannot be reached)
DEADLINE_EXCEEDED    504
anything else        502 (an upstream failure: never 500)
==================== ==========================================================

Session cache (``cache_ttl``, off by default): ``GetSession`` results are kept in this
process for at most ``cache_ttl`` seconds (never past the session's own expiry).

- Without service credentials (TTL only), the trade-off: a session revoked elsewhere (another
  process, another device's "sign out everywhere", a password change, an operator disabling
  the user) is still accepted here until its entry expires. Sign-out, password change, revoke
  and delete through this router evict locally at once, and a password reset through it
  empties the cache (the reset link does not say whose sessions ended). Keep the TTL short (a
  few seconds) or leave the cache off.
- With service credentials (``service=AsyncServiceClient(target, api_key=...)``), the cache
  subscribes to ``WatchRevocations`` in the background and drops a session the moment any
  replica revokes it, whatever the path. The cache only answers while the stream is open;
  while it is down, every request asks Gatehouse, and when it reconnects the cache starts
  empty. A longer TTL (minutes) is then safe; what remains is that a cached answer is not
  re-read, so profile-independent user fields (name, email verification) may be up to
  ``cache_ttl`` old, and the session's sliding expiry is only renewed by uncached calls.
"""

# The integration is split by concern: errors (status mapping), cache (SessionCache), cookies,
# origins (the cross-site and redirect checks), caller (CurrentUser), integration (Gatehouse)
# and router (its routes); the names it offered as one module are re-exported here.
# No module of the package uses `from __future__ import annotations`: FastAPI evaluates the
# annotations of routes and dependencies, and router's use aliases local to a function.

from .._models import (
    AccessTokenIn,
    AccessTokenOut,
    AuditEventOut,
    AuditEventsOut,
    AuthOut,
    MessageOut,
    PrivacyReportOut,
    ProfileIn,
    ProfileOut,
)
from .._models import ChangePasswordIn as ChangePasswordIn
from .._models import ConsentIn as ConsentIn
from .._models import ConsentRecordOut as ConsentRecordOut
from .._models import ConsentRecordsOut as ConsentRecordsOut
from .._models import ConsentStateOut as ConsentStateOut
from .._models import DeleteAccountIn as DeleteAccountIn
from .._models import FactorOut as FactorOut
from .._models import FactorsOut as FactorsOut
from .._models import ReauthenticationErrorOut as ReauthenticationErrorOut
from .._models import ReauthenticationOut as ReauthenticationOut
from .._models import RecoveryCodesOut as RecoveryCodesOut
from .._models import RequestEmailChangeIn as RequestEmailChangeIn
from .._models import RequestPasswordResetIn as RequestPasswordResetIn
from .._models import PurposeConsentOut as PurposeConsentOut
from .._models import ResetPasswordIn as ResetPasswordIn
from .._models import RetentionSettingsOut as RetentionSettingsOut
from .._models import RevokedOut as RevokedOut
from .._models import SecondFactorIn as SecondFactorIn
from .._models import SecondFactorRequiredOut as SecondFactorRequiredOut
from .._models import SessionInfoOut as SessionInfoOut
from .._models import SessionOut as SessionOut
from .._models import SessionsOut as SessionsOut
from .._models import SignInIn as SignInIn
from .._models import SignUpIn as SignUpIn
from .._models import TotpConfirmedOut as TotpConfirmedOut
from .._models import TotpConfirmIn as TotpConfirmIn
from .._models import TotpEnrollmentIn as TotpEnrollmentIn
from .._models import TotpEnrollmentOut as TotpEnrollmentOut
from .._models import UserOut as UserOut
from .._models import VerifyEmailIn as VerifyEmailIn
from .._models import field_location as field_location
from .._models import timestamp as timestamp
from .cache import SessionCache
from .caller import ClientMeta as ClientMeta
from .caller import CurrentUser
from .caller import UserDependency as UserDependency
from .cookies import DEFAULT_COOKIE_NAME as DEFAULT_COOKIE_NAME
from .cookies import DEFAULT_OAUTH_STATE_COOKIE as DEFAULT_OAUTH_STATE_COOKIE
from .cookies import DEFAULT_SECOND_FACTOR_COOKIE as DEFAULT_SECOND_FACTOR_COOKIE
from .cookies import HOST_PREFIX as HOST_PREFIX
from .cookies import SameSite as SameSite
from .errors import ErrorOut as ErrorOut
from .errors import error_responses as error_responses
from .errors import reauthentication_responses as reauthentication_responses
from .errors import gatehouse_exception_handler, http_exception
from .integration import BEARER_SCHEME_NAME as BEARER_SCHEME_NAME
from .integration import COOKIE_SCHEME_NAME as COOKIE_SCHEME_NAME
from .integration import DEFAULT_OAUTH_CALLBACK_PATH as DEFAULT_OAUTH_CALLBACK_PATH
from .integration import Gatehouse

__all__ = [
    "AccessTokenIn",
    "AccessTokenOut",
    "AuditEventOut",
    "AuditEventsOut",
    "AuthOut",
    "CurrentUser",
    "Gatehouse",
    "MessageOut",
    "PrivacyReportOut",
    "ProfileIn",
    "ProfileOut",
    "SessionCache",
    "gatehouse_exception_handler",
    "http_exception",
]

# Offline access-token verification (gatehouse.fastapi.access_tokens) needs the `verify` extra
# (PyJWT), so it is imported on first use rather than with the package.
_ACCESS_TOKEN_NAMES = frozenset(
    {"AccessTokenClaims", "AccessTokenVerifier", "JwksCache", "TokenRejected", "VerifierUnavailable"}
)


def __getattr__(name: str) -> object:
    if name in _ACCESS_TOKEN_NAMES:
        from . import access_tokens

        return getattr(access_tokens, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
