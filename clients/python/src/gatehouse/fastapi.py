"""FastAPI integration: session dependencies, error mapping, cookie helpers and a ready router.

>>> gatehouse = Gatehouse(AsyncClient("localhost:50051"))
>>> gatehouse.install(app)                       # exception handlers for GatehouseError
>>> app.include_router(gatehouse.router(), prefix="/auth")
>>> @app.get("/me")
... async def me(user: Annotated[CurrentUser, Depends(gatehouse.current_user)]) -> str:
...     return user.user.email

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

# No `from __future__ import annotations`: FastAPI must resolve the route annotations,
# which use aliases local to Gatehouse.router().

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypedDict
from urllib.parse import urlsplit

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse, RedirectResponse

from ._models import (
    AccessTokenIn,
    AccessTokenOut,
    AuditEventOut,
    AuditEventsOut,
    AuthOut,
    ChangePasswordIn,
    DeleteAccountIn,
    MessageOut,
    ProfileIn,
    ProfileOut,
    RequestEmailChangeIn,
    RequestPasswordResetIn,
    ResetPasswordIn,
    RevokedOut,
    SessionInfoOut,
    SessionOut,
    SessionsOut,
    SignInIn,
    SignUpIn,
    UserOut,
    VerifyEmailIn,
    field_location,
    timestamp,
)
from ._proto.gatehouse.v1 import auth_pb2
from .client import AsyncClient
from .service import AsyncRevocationWatch, AsyncServiceClient
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GatehouseError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AccessTokenIn",
    "AccessTokenOut",
    "AuditEventOut",
    "AuditEventsOut",
    "AuthOut",
    "CurrentUser",
    "Gatehouse",
    "MessageOut",
    "ProfileIn",
    "ProfileOut",
    "SessionCache",
    "gatehouse_exception_handler",
    "http_exception",
]

DEFAULT_COOKIE_NAME: Final = "gatehouse_session"
DEFAULT_OAUTH_STATE_COOKIE: Final = "gatehouse_oauth_state"
DEFAULT_OAUTH_CALLBACK_PATH: Final = "/auth/oauth/{provider}/callback"
HOST_PREFIX: Final = "__Host-"
_SECURE_PREFIX: Final = "__Secure-"
#: Methods that must not change state, so a forged one gains an attacker nothing.
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Upper bound of the state cookie's life when Gatehouse gives no expiry (seconds).
_OAUTH_STATE_MAX_AGE: Final = 600
_REDIRECT_TO_MAX: Final = 2048
#: Revoked session ids remembered so that a GetSession answer racing its own revocation event
#: is never cached.
_RECENTLY_REVOKED: Final = 10_000
_log = logging.getLogger("gatehouse.fastapi")
_RESET_REQUESTED: Final = "If an account uses this address, a password reset link is on its way."

_STATUS_BY_ERROR: Final[tuple[tuple[type[GatehouseError], int], ...]] = (
    (Unauthenticated, status.HTTP_401_UNAUTHORIZED),
    (PermissionDenied, status.HTTP_403_FORBIDDEN),
    (NotFound, status.HTTP_404_NOT_FOUND),
    (InvalidArgument, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (AlreadyExists, status.HTTP_409_CONFLICT),
    (FailedPrecondition, status.HTTP_400_BAD_REQUEST),
    (ResourceExhausted, status.HTTP_429_TOO_MANY_REQUESTS),
    (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (DeadlineExceeded, status.HTTP_504_GATEWAY_TIMEOUT),
)


def _safe_redirect(target: str) -> bool:
    """Whether ``target`` is a same-site relative path (``/books?x=1``): no scheme, host,
    protocol-relative ``//`` or ``/\\``, backslash or control character."""
    return (
        0 < len(target) <= _REDIRECT_TO_MAX
        and target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and "\\" not in target
        and all(ch >= " " and ch != "\x7f" for ch in target)
    )


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` as browsers serialise an Origin (lower case, no
    default port), or None when ``url`` is not an http(s) origin, possibly with a trailing
    ``/``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    host = parts.hostname
    if "*" in host:  # no wildcards: each trusted front end is listed
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _host_of(origin: str) -> str:
    """The ``host[:port]`` of a normalised origin."""
    return origin.partition("://")[2]


def _normal_host(host: str, scheme: str) -> str:
    """A Host header without the scheme's default port, lower case."""
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return host


def _violation_detail(
    violation: FieldViolation, strip_prefix: str, location: str
) -> dict[str, Any]:
    field = violation.field.removeprefix(strip_prefix)
    return {
        "loc": [location, *field_location(field)],
        "msg": violation.description,
        "type": "gatehouse.invalid_argument",
    }


def http_exception(
    exc: GatehouseError, *, strip_field_prefix: str = "", location: str = "body"
) -> HTTPException:
    """The HTTPException a Gatehouse error becomes (see the module docstring for the table).

    ``strip_field_prefix`` removes a proto prefix from field violation paths when the HTTP body
    is shaped differently (the profile update body is the profile itself, so ``profile.``).
    ``location`` is the first element of each field error's ``loc`` (``"query"`` for fields
    sent as query parameters).
    Messages of 5xx answers are generic; 4xx answers carry Gatehouse's message, which never
    contains secrets or internal details.
    """
    code = next(
        (http for cls, http in _STATUS_BY_ERROR if isinstance(exc, cls)),
        status.HTTP_502_BAD_GATEWAY,
    )
    headers: dict[str, str] = {}
    detail: Any = exc.message
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, InvalidArgument):
        detail = [
            _violation_detail(v, strip_field_prefix, location) for v in exc.field_violations
        ] or [{"loc": [location], "msg": exc.message, "type": "gatehouse.invalid_argument"}]
    elif isinstance(exc, ResourceExhausted):
        retry = exc.retry_after if exc.retry_after is not None else 1.0
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = "1"
        detail = "authentication service unavailable"
    elif code >= 500:
        detail = "authentication service error"
    return HTTPException(status_code=code, detail=detail, headers=headers or None)


async def gatehouse_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler for :class:`GatehouseError` raised in application code."""
    if not isinstance(exc, GatehouseError):  # pragma: no cover - registered for GatehouseError
        raise exc
    http = http_exception(exc)
    return JSONResponse({"detail": http.detail}, status_code=http.status_code, headers=http.headers)


@contextmanager
def _http_errors(strip_field_prefix: str = "", location: str = "body") -> Iterator[None]:
    try:
        yield
    except GatehouseError as exc:
        raise http_exception(exc, strip_field_prefix=strip_field_prefix, location=location) from exc


class ClientMeta(TypedDict):
    """The end user's address and browser, forwarded to Gatehouse."""

    client_ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The signed-in caller: Gatehouse's user and session, and the token that proved them."""

    user: auth_pb2.User
    session: auth_pb2.Session
    token: str

    @property
    def id(self) -> str:
        """The user's id."""
        return self.user.id


class SessionCache:
    """A small LRU of GetSession results, keyed by SHA-256 of the token, with a TTL.

    An entry lives at most ``ttl`` seconds and never past the session's own ``expires_at``.
    Thread-safe; shared by every request of the process.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, auth_pb2.GetSessionResponse]] = OrderedDict()
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> auth_pb2.GetSessionResponse | None:
        """The cached result for ``token``, if fresh."""
        key = self._key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, token: str, response: auth_pb2.GetSessionResponse) -> None:
        """Caches ``response`` for ``token``."""
        lifetime = self.ttl
        if response.session.HasField("expires_at"):
            expires = response.session.expires_at.ToDatetime(tzinfo=UTC)
            lifetime = min(lifetime, (expires - datetime.now(UTC)).total_seconds())
        if lifetime <= 0:
            return
        with self._lock:
            if response.session.id in self._revoked:
                return
            self._entries[self._key(token)] = (time.monotonic() + lifetime, response)
            self._entries.move_to_end(self._key(token))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, token: str) -> None:
        """Forgets ``token``."""
        with self._lock:
            self._entries.pop(self._key(token), None)

    def evict_session(self, session_id: str) -> None:
        """Forgets the session ``session_id`` and refuses to cache it again (it was revoked)."""
        with self._lock:
            self._revoked[session_id] = None
            while len(self._revoked) > _RECENTLY_REVOKED:
                self._revoked.popitem(last=False)
            for key in [k for k, (_, r) in self._entries.items() if r.session.id == session_id]:
                del self._entries[key]

    def evict_user(self, user_id: str) -> None:
        """Forgets every cached session of ``user_id``."""
        with self._lock:
            for key in [k for k, (_, r) in self._entries.items() if r.user.id == user_id]:
                del self._entries[key]

    def clear(self) -> None:
        """Forgets every cached session."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _with_prefix(name: str) -> str:
    return name if name.startswith(HOST_PREFIX) else HOST_PREFIX + name


def _check_cookie_prefix(name: str, secure: bool, domain: str | None, path: str) -> None:
    """Refuses settings a browser would silently drop the cookie for (RFC 6265bis 4.1.3):
    better a clear error at startup than a sign-in that never sticks."""
    problems: list[str] = []
    if name.startswith(HOST_PREFIX):
        if not secure:
            problems.append("cookie_secure must be True")
        if domain:
            problems.append(f"cookie_domain must be unset (is {domain!r})")
        if path != "/":
            problems.append(f"cookie_path must be '/' (is {path!r})")
        prefix = HOST_PREFIX
    elif name.startswith(_SECURE_PREFIX):
        if not secure:
            problems.append("cookie_secure must be True")
        prefix = _SECURE_PREFIX
    if problems:
        raise ValueError(
            f"cookie {name!r}: a {prefix} cookie is only accepted by browsers when Secure"
            + (", with Path=/ and no Domain" if prefix == HOST_PREFIX else "")
            + ": "
            + "; ".join(problems)
        )


class Gatehouse:
    """Gatehouse for a FastAPI app.

    ``client`` is an :class:`AsyncClient` or a ``host:port`` target. The session token is read
    from ``Authorization: Bearer <token>`` first, then from the cookie ``cookie_name``.
    ``cookie_secure`` should stay ``True`` outside plain-http tests (browsers accept Secure
    cookies on ``http://localhost``). ``cache_ttl`` (seconds, ``0`` = off) enables the
    :class:`SessionCache` trade-off described in the module docstring. ``expose_token`` also
    returns the token in sign-up/sign-in bodies, for non-browser clients. ``service`` (an
    :class:`AsyncServiceClient` with an API key or client certificate) makes the cache follow
    Gatehouse's revocation stream (see the module docstring); start it with :meth:`start` or
    ``FastAPI(lifespan=gatehouse.lifespan)`` (it also starts on the first request), stop it
    with :meth:`aclose`.

    Provider sign-in (``GET /oauth/{provider}/start`` and ``/callback``) needs each provider's
    callback URL, exactly as listed in Gatehouse's ``GATEHOUSE_*_REDIRECT_URIS``: from
    ``oauth_redirect_uris`` (provider -> URL), else ``oauth_base_url`` + ``oauth_callback_path``
    (``/auth/oauth/{provider}/callback``, for a router mounted at ``/auth``). A provider with
    neither is 404. The flow's state travels in the short-lived cookie
    ``oauth_state_cookie_name`` (HttpOnly, SameSite=Lax, Secure as ``cookie_secure``).

    Cross-site request forgery: a state-changing request (any method but GET, HEAD and
    OPTIONS) that is not authenticated by ``Authorization: Bearer`` is refused with 403 when
    it comes from a page of another origin: on every route of :meth:`router` and wherever
    :meth:`current_user` / :meth:`optional_user` (or :meth:`check_origin`) is a dependency.
    The browser's ``Sec-Fetch-Site`` decides when present (``same-origin``/``none`` pass,
    ``same-site``/``cross-site`` only with an ``Origin`` in ``trusted_origins``); otherwise
    ``Origin`` must be the app's own (its host equals the request's ``Host``) or trusted.
    A request with neither header carrying the session cookie is refused too (browsers send
    them on every such request; a script should use Bearer); without the cookie it passes.
    ``trusted_origins`` (``https://book.example.org``, exact scheme, host and port) adds
    front ends on other origins; ``oauth_base_url``'s origin is trusted as well.

    ``cookie_host_prefix`` names the cookies ``__Host-<name>``: the browser then only accepts
    them Secure, with Path=/ and no Domain, so a sibling subdomain cannot set or shadow them.
    Settings that contradict that (``cookie_secure=False``, a ``cookie_domain``, another
    ``cookie_path``) raise ValueError here, as does a malformed trusted origin.

    The end user's address (``request.client.host``; run uvicorn with ``--proxy-headers`` and
    ``--forwarded-allow-ips`` behind a proxy) and User-Agent are forwarded to Gatehouse.
    """

    def __init__(
        self,
        client: AsyncClient | str,
        *,
        cookie_name: str = DEFAULT_COOKIE_NAME,
        cookie_secure: bool = True,
        cookie_domain: str | None = None,
        cookie_path: str = "/",
        cache_ttl: float = 0.0,
        cache_max_entries: int = 10_000,
        expose_token: bool = False,
        service: AsyncServiceClient | None = None,
        oauth_redirect_uris: Mapping[str, str] | None = None,
        oauth_base_url: str | None = None,
        oauth_callback_path: str = DEFAULT_OAUTH_CALLBACK_PATH,
        oauth_state_cookie_name: str = DEFAULT_OAUTH_STATE_COOKIE,
        trusted_origins: Iterable[str] = (),
        cookie_host_prefix: bool = False,
    ) -> None:
        if cookie_host_prefix:
            cookie_name = _with_prefix(cookie_name)
            oauth_state_cookie_name = _with_prefix(oauth_state_cookie_name)
        _check_cookie_prefix(cookie_name, cookie_secure, cookie_domain, cookie_path)
        _check_cookie_prefix(oauth_state_cookie_name, cookie_secure, cookie_domain, cookie_path)
        origins: set[str] = set()
        for entry in [*trusted_origins, *([oauth_base_url] if oauth_base_url else [])]:
            origin = _origin(entry)
            if origin is None:
                setting = "oauth_base_url" if entry == oauth_base_url else "trusted_origins"
                raise ValueError(
                    f"{setting}: {entry!r} is not an origin; write scheme://host[:port] "
                    "(http or https, no path), e.g. https://book.example.org"
                )
            origins.add(origin)
        #: Origins, besides the app's own, whose pages may send cookie-authenticated
        #: state-changing requests (``trusted_origins`` and ``oauth_base_url``'s origin).
        self.trusted_origins: frozenset[str] = frozenset(origins)
        self.client = AsyncClient(client) if isinstance(client, str) else client
        self.oauth_redirect_uris = dict(oauth_redirect_uris or {})
        self.oauth_base_url = oauth_base_url.rstrip("/") if oauth_base_url else None
        self.oauth_callback_path = oauth_callback_path
        self.oauth_state_cookie_name = oauth_state_cookie_name
        self.service = service
        self.watch: AsyncRevocationWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._cache_generation = 0
        self.cookie_name = cookie_name
        self.cookie_secure = cookie_secure
        self.cookie_domain = cookie_domain
        self.cookie_path = cookie_path
        self.cache: SessionCache | None = (
            SessionCache(cache_ttl, cache_max_entries) if cache_ttl > 0 else None
        )
        self.expose_token = expose_token

    # Request helpers

    def token_from_request(
        self, request: Request
    ) -> tuple[str, Literal["header", "cookie"]] | None:
        """The session token and where it came from, or None."""
        authorization = request.headers.get("authorization")
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip(), "header"
        cookie = request.cookies.get(self.cookie_name)
        if cookie:
            return cookie, "cookie"
        return None

    @staticmethod
    def client_meta(request: Request) -> ClientMeta:
        """The end user's IP and User-Agent, as keyword arguments for the client."""
        return ClientMeta(
            client_ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        )

    # Cookies

    def set_session_cookie(self, response: Response, token: str, session: auth_pb2.Session) -> None:
        """Sets the HttpOnly, SameSite=Lax session cookie, living until ``session.expires_at``."""
        max_age = 0
        if session.HasField("expires_at"):
            expires = session.expires_at.ToDatetime(tzinfo=UTC)
            max_age = max(0, int((expires - datetime.now(UTC)).total_seconds()))
        response.set_cookie(
            self.cookie_name,
            token,
            max_age=max_age,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def clear_session_cookie(self, response: Response) -> None:
        """Expires the session cookie."""
        response.delete_cookie(
            self.cookie_name,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    # Provider sign-in (OAuth / OpenID Connect)

    def oauth_redirect_uri(self, provider: str) -> str | None:
        """The callback URL configured for ``provider``, or None."""
        uri = self.oauth_redirect_uris.get(provider)
        if uri:
            return uri
        if self.oauth_base_url is None:
            return None
        return self.oauth_base_url + self.oauth_callback_path.format(provider=provider)

    def set_oauth_state_cookie(
        self, response: Response, state: str, redirect_to: str | None, max_age: int
    ) -> None:
        """Keeps the flow's ``state`` (and where to go afterwards) in a short-lived HttpOnly,
        SameSite=Lax cookie: Lax still sends it on the provider's top-level redirect back."""
        value = state
        if redirect_to:
            value += "." + base64.urlsafe_b64encode(redirect_to.encode()).decode().rstrip("=")
        response.set_cookie(
            self.oauth_state_cookie_name,
            value,
            max_age=max_age,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def oauth_state_from_request(self, request: Request) -> tuple[str, str | None] | None:
        """(state, redirect_to) from the state cookie, or None if absent or malformed."""
        value = request.cookies.get(self.oauth_state_cookie_name)
        if not value:
            return None
        state, _, encoded = value.partition(".")
        redirect_to: str | None = None
        if encoded:
            try:
                redirect_to = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except ValueError:
                return None
            if not _safe_redirect(redirect_to):
                return None
        return (state, redirect_to) if state else None

    def clear_oauth_state_cookie(self, response: Response) -> None:
        """Expires the state cookie."""
        response.delete_cookie(
            self.oauth_state_cookie_name,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    # Revocation watch

    async def start(self) -> None:
        """Starts following the revocation stream (when there is a cache and ``service``)."""
        if self.cache is None or self.service is None:
            return
        if self._watch_task is None or self._watch_task.done():
            self.watch = self.service.watch_revocations()
            self._watch_task = asyncio.create_task(self._follow(self.watch))

    async def _follow(self, watch: AsyncRevocationWatch) -> None:
        try:
            async for event in watch:
                if self.cache is not None:
                    self.cache.evict_session(event.session_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # credentials refused: no push, so the cache stays bypassed
            _log.exception("revocation watch stopped; the session cache is bypassed")

    async def aclose(self) -> None:
        """Stops the revocation watch and closes the clients' channels of this loop."""
        if self.watch is not None:
            self.watch.close()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        await self.client.close()
        if self.service is not None:
            await self.service.close()

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """A FastAPI lifespan that starts the watch and closes everything at shutdown."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    def _cache_usable(self) -> bool:
        """Whether the cache may answer now: always with TTL only; with a watch, only while
        the stream is open, emptied whenever it has reconnected (events may have been
        missed in between)."""
        if self.cache is None:
            return False
        if self.service is None:
            return True
        watch = self.watch
        if watch is None or not watch.connected.is_set():
            self.cache.clear()
            return False
        if watch.reconnects != self._cache_generation:
            self.cache.clear()
            self._cache_generation = watch.reconnects
        return True

    # Cross-site request forgery

    def cross_site_refusal(self, request: Request) -> str | None:
        """Why ``request`` must be refused as a possible cross-site forgery, or None."""
        if request.method.upper() in _SAFE_METHODS:
            return None
        found = self.token_from_request(request)
        if found is not None and found[1] == "header":
            return None  # a page on another site cannot attach this header
        site = request.headers.get("sec-fetch-site", "").strip().lower()
        origin_header = request.headers.get("origin")
        if site in ("same-origin", "none"):
            return None  # set by the browser itself; pages cannot forge it
        if not site and origin_header is None:
            if found is None:
                return None  # no browser and no cookie: nothing ambient to abuse
            return (
                "cross-site request refused: a cookie-authenticated request must carry an "
                "Origin or Sec-Fetch-Site header (browsers send them); "
                "a client outside a browser should use Authorization: Bearer"
            )
        if origin_header is None:
            return f"cross-site request refused: a {site} request without an Origin header"
        origin = _origin(origin_header)
        if origin is not None and origin in self.trusted_origins:
            return None
        if not site and origin is not None:
            host = request.headers.get("host", "")
            if host and _normal_host(host, origin.partition(":")[0]) == _host_of(origin):
                return None
        return (
            f"cross-site request refused: origin {origin_header!r} is not this site's "
            "nor a trusted origin (Gatehouse trusted_origins)"
        )

    def check_origin(self, request: Request) -> None:
        """Dependency: 403 for a state-changing cookie request from another origin (see the
        class docstring); every route of :meth:`router` and :meth:`current_user` apply it."""
        refusal = self.cross_site_refusal(request)
        if refusal is not None:
            _log.warning(
                "refused %s %s: %s", request.method, request.url.path, refusal.partition(": ")[2]
            )
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=refusal)

    # Dependencies

    async def _session(self, token: str) -> auth_pb2.GetSessionResponse:
        if self.cache is not None and self.service is not None and self._watch_task is None:
            await self.start()
        usable = self._cache_usable()
        if usable and self.cache is not None:
            cached = self.cache.get(token)
            if cached is not None:
                return cached
        response = await self.client.get_session(token=token)
        if usable and self.cache is not None:
            self.cache.put(token, response)
        return response

    async def current_user(self, request: Request) -> CurrentUser:
        """Dependency: the signed-in caller, or 401 (503 if Gatehouse is unavailable; 403
        for a state-changing cookie request from another origin)."""
        self.check_origin(request)
        found = self.token_from_request(request)
        if found is None:
            raise http_exception(Unauthenticated("not signed in"))
        with _http_errors():
            response = await self._session(found[0])
        return CurrentUser(user=response.user, session=response.session, token=found[0])

    async def optional_user(self, request: Request) -> CurrentUser | None:
        """Dependency: the signed-in caller, or None when there is no valid session.

        Other failures (Gatehouse unavailable) still raise: a 503 is clearer than silently
        treating a signed-in reader as anonymous.
        """
        try:
            return await self.current_user(request)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_401_UNAUTHORIZED:
                return None
            raise

    # App wiring

    def install(self, app: FastAPI) -> None:
        """Registers :func:`gatehouse_exception_handler` for GatehouseError on ``app``."""
        app.add_exception_handler(GatehouseError, gatehouse_exception_handler)

    def router(self, *, tags: list[str] | None = None) -> APIRouter:
        """An APIRouter with the auth endpoints a front end needs; mount it at e.g. ``/auth``.

        ``POST /sign-up``, ``POST /sign-in``, ``POST /sign-out``, ``GET /session``,
        ``GET /sessions``, ``DELETE /sessions/{id}``, ``POST /sessions/revoke-others``,
        ``POST /change-password``, ``POST /delete-account``, ``GET /profile``,
        ``PATCH /profile``; email and recovery: ``POST /send-verification``,
        ``POST /verify-email``, ``POST /request-password-reset``, ``POST /reset-password``,
        ``POST /request-email-change``; history: ``GET /audit-events``; service mesh:
        ``POST /access-token``; provider sign-in: ``GET /oauth/{provider}/start``,
        ``GET /oauth/{provider}/callback``. Every state-changing route applies
        :meth:`check_origin` (sign-in and sign-up too: no login forgery from another site).
        """
        router = APIRouter(tags=list(tags or ["auth"]), dependencies=[Depends(self.check_origin)])
        gh = self
        User = Annotated[CurrentUser, Depends(self.current_user)]
        meta = self.client_meta

        def auth_out(result: auth_pb2.AuthResponse) -> AuthOut:
            signed_in = result.HasField("session") and bool(result.session_token)
            return AuthOut(
                user=UserOut.from_proto(result.user),
                session=SessionOut.from_proto(result.session) if signed_in else None,
                session_token=result.session_token if gh.expose_token and signed_in else None,
            )

        def set_cookie_for(response: Response, result: auth_pb2.AuthResponse) -> None:
            if result.HasField("session") and result.session_token:
                gh.set_session_cookie(response, result.session_token, result.session)

        @router.post("/sign-up", status_code=status.HTTP_201_CREATED)
        async def sign_up(body: SignUpIn, request: Request, response: Response) -> AuthOut:
            """Creates an account (with optional profile), signs in and sets the cookie."""
            profile = body.profile.to_proto() if body.profile is not None else None
            with _http_errors():
                result = await gh.client.sign_up(
                    body.email, body.password, body.name, profile, **gh.client_meta(request)
                )
            set_cookie_for(response, result)
            return auth_out(result)

        @router.post("/sign-in")
        async def sign_in(body: SignInIn, request: Request, response: Response) -> AuthOut:
            """Signs in and sets the session cookie."""
            with _http_errors():
                result = await gh.client.sign_in(
                    body.email, body.password, **gh.client_meta(request)
                )
            set_cookie_for(response, result)
            return auth_out(result)

        @router.post("/sign-out", status_code=status.HTTP_204_NO_CONTENT)
        async def sign_out(request: Request) -> Response:
            """Revokes the caller's session (if any) and clears the cookie. Always 204."""
            response = Response(status_code=status.HTTP_204_NO_CONTENT)
            found = gh.token_from_request(request)
            if found is not None:
                if gh.cache is not None:
                    gh.cache.evict(found[0])
                try:
                    with _http_errors():
                        await gh.client.sign_out(token=found[0], **meta(request))
                except HTTPException as exc:
                    if exc.status_code != status.HTTP_401_UNAUTHORIZED:
                        raise
            gh.clear_session_cookie(response)
            return response

        @router.get("/session")
        async def session(user: User, request: Request, response: Response) -> SessionInfoOut:
            """The signed-in user and session; a cookie session gets its cookie's lifetime
            renewed to the session's (sliding) expiry."""
            found = gh.token_from_request(request)
            if found is not None and found[1] == "cookie":
                gh.set_session_cookie(response, user.token, user.session)
            return SessionInfoOut(
                user=UserOut.from_proto(user.user), session=SessionOut.from_proto(user.session)
            )

        @router.get("/sessions")
        async def list_sessions(user: User) -> SessionsOut:
            """The caller's active sessions, the current one marked."""
            with _http_errors():
                sessions = await gh.client.list_sessions(token=user.token)
            return SessionsOut(sessions=[SessionOut.from_proto(s) for s in sessions])

        @router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
        async def revoke_session(session_id: str, user: User, request: Request) -> Response:
            """Revokes one of the caller's sessions."""
            with _http_errors():
                await gh.client.revoke_session(session_id, token=user.token, **meta(request))
            if gh.cache is not None:
                gh.cache.evict_user(user.id)
            return Response(status_code=status.HTTP_204_NO_CONTENT)

        @router.post("/sessions/revoke-others")
        async def revoke_other_sessions(user: User, request: Request) -> RevokedOut:
            """Signs the caller out everywhere else."""
            with _http_errors():
                count = await gh.client.revoke_other_sessions(token=user.token, **meta(request))
            if gh.cache is not None:
                gh.cache.evict_user(user.id)
            return RevokedOut(revoked_count=count)

        @router.post("/change-password")
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

        @router.post("/delete-account", status_code=status.HTTP_204_NO_CONTENT)
        async def delete_account(body: DeleteAccountIn, user: User, request: Request) -> Response:
            """Deletes the caller's account after checking the password; clears the cookie."""
            with _http_errors():
                await gh.client.delete_account(body.password, token=user.token, **meta(request))
            if gh.cache is not None:
                gh.cache.evict_user(user.id)
            response = Response(status_code=status.HTTP_204_NO_CONTENT)
            gh.clear_session_cookie(response)
            return response

        @router.get("/profile")
        async def get_profile(user: User) -> ProfileOut:
            """The caller's learner profile."""
            with _http_errors():
                profile = await gh.client.get_profile(token=user.token)
            return ProfileOut.from_proto(profile)

        @router.patch("/profile")
        async def update_profile(body: ProfileIn, user: User) -> ProfileOut:
            """Changes the profile fields present in the body (null clears a field)."""
            return await gh.update_profile(user, body)

        # Email and recovery. The link in the mail points to the front end
        # (GATEHOUSE_FRONTEND_URL/verify-email?token=... or /reset-password?token=...), which
        # posts the token here.

        @router.post("/send-verification", status_code=status.HTTP_202_ACCEPTED)
        async def send_verification(user: User, request: Request) -> MessageOut:
            """Mails the caller a new verification link (400 if already verified)."""
            with _http_errors():
                await gh.client.send_verification_email(token=user.token, **meta(request))
            return MessageOut(message="A new verification link is on its way.")

        @router.post("/verify-email")
        async def verify_email(body: VerifyEmailIn, request: Request) -> MessageOut:
            """Redeems a verification or email-change link's token; needs no session. A used,
            expired or unknown token is 422 on ``token``."""
            with _http_errors():
                await gh.client.verify_email(body.token, **meta(request))
            found = gh.token_from_request(request)
            if gh.cache is not None and found is not None:
                gh.cache.evict(found[0])
            return MessageOut(message="Your email address is verified.")

        @router.post("/request-password-reset", status_code=status.HTTP_202_ACCEPTED)
        async def request_password_reset(
            body: RequestPasswordResetIn, request: Request
        ) -> MessageOut:
            """Mails a reset link if the address has an account. The answer is the same either
            way (only a malformed address, 422, or a rate limit, 429, differ)."""
            with _http_errors():
                await gh.client.request_password_reset(body.email, **meta(request))
            return MessageOut(message=_RESET_REQUESTED)

        @router.post("/reset-password")
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

        @router.post("/request-email-change", status_code=status.HTTP_202_ACCEPTED)
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

        @router.post("/access-token")
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

        @router.get("/audit-events")
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

        def redirect_uri_for(provider: str) -> str:
            uri = gh.oauth_redirect_uri(provider)
            if uri is None:
                raise HTTPException(
                    status_code=status.HTTP_404_NOT_FOUND,
                    detail=f"sign-in with {provider!r} is not configured here",
                )
            return uri

        def bad_state(detail: str) -> JSONResponse:
            return JSONResponse({"detail": detail}, status_code=status.HTTP_400_BAD_REQUEST)

        @router.get("/oauth/{provider}/start", response_model=None)
        async def oauth_start(
            provider: Annotated[str, Path(min_length=1, max_length=64)],
            request: Request,
            redirect_to: Annotated[str | None, Query(max_length=_REDIRECT_TO_MAX)] = None,
        ) -> Response:
            """302 to the provider's sign-in page. ``redirect_to`` (a same-site path such as
            ``/books``; anything else is 422) is where the callback sends the browser after."""
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
            redirect_uri = redirect_uri_for(provider)
            with _http_errors(location="query"):
                started = await gh.client.start_o_auth(provider, redirect_uri)
            max_age = _OAUTH_STATE_MAX_AGE
            if started.HasField("expires_at"):
                expires = started.expires_at.ToDatetime(tzinfo=UTC)
                left = int((expires - datetime.now(UTC)).total_seconds())
                max_age = max(1, min(left, _OAUTH_STATE_MAX_AGE))
            response = RedirectResponse(
                started.authorization_url, status_code=status.HTTP_302_FOUND
            )
            response.headers["Cache-Control"] = "no-store"
            gh.set_oauth_state_cookie(response, started.state, redirect_to, max_age)
            return response

        @router.get("/oauth/{provider}/callback", response_model=None)
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
                return bad_state("no sign-in in progress in this browser (state cookie missing)")
            expected, redirect_to = kept
            if not state or not hmac.compare_digest(expected.encode(), state.encode()):
                return bad_state("the state does not match this browser's sign-in")
            if error is not None or not code:
                refused = bad_state(
                    f"the provider did not sign you in: {error}" if error else "code is missing"
                )
                gh.clear_oauth_state_cookie(refused)
                return refused
            redirect_uri = redirect_uri_for(provider)
            try:
                result = await gh.client.complete_o_auth(
                    provider, code, state, redirect_uri, **meta(request)
                )
            except GatehouseError as exc:
                http = http_exception(exc, location="query")
                failed = JSONResponse(
                    {"detail": http.detail}, status_code=http.status_code, headers=http.headers
                )
                gh.clear_oauth_state_cookie(failed)  # the state is spent either way
                return failed
            response: Response
            if redirect_to:
                response = RedirectResponse(redirect_to, status_code=status.HTTP_302_FOUND)
            else:
                out = auth_out(
                    auth_pb2.AuthResponse(
                        user=result.user,
                        session=result.session,
                        session_token=result.session_token,
                    )
                )
                response = JSONResponse(
                    {**out.model_dump(mode="json"), "is_new_user": result.is_new_user}
                )
            response.headers["Cache-Control"] = "no-store"
            if result.HasField("session") and result.session_token:
                gh.set_session_cookie(response, result.session_token, result.session)
            gh.clear_oauth_state_cookie(response)
            return response

        return router

    async def update_profile(self, user: CurrentUser, body: ProfileIn) -> ProfileOut:
        """Applies a :class:`ProfileIn` patch for ``user`` (shared by the router and apps)."""
        mask = body.update_mask()
        with _http_errors(strip_field_prefix="profile."):
            if not mask:
                profile = await self.client.get_profile(token=user.token)
            else:
                profile = await self.client.update_profile(body.to_proto(), mask, token=user.token)
        return ProfileOut.from_proto(profile)
