"""The :class:`Gatehouse` object that wires Gatehouse into a FastAPI app."""

# No `from __future__ import annotations` (see the package's __init__).

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Final, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.security import APIKeyCookie, HTTPBearer

from .._models import ProfileIn, ProfileOut
from .._proto.gatehouse.v1 import auth_pb2
from ..client import AsyncClient
from ..errors import DeadlineExceeded, GatehouseError, Unauthenticated, Unavailable
from ..service import AsyncRevocationWatch, AsyncServiceClient
from .cache import SessionCache
from .caller import ClientMeta, CurrentUser, UserDependency
from .cookies import (
    DEFAULT_COOKIE_NAME,
    DEFAULT_OAUTH_STATE_COOKIE,
    DEFAULT_PASSKEY_COOKIE,
    DEFAULT_SECOND_FACTOR_COOKIE,
    SameSite,
    _check_cookie,
    _Cookies,
    _samesite,
    _with_prefix,
)
from .errors import _http_errors, gatehouse_exception_handler, http_exception
from .origins import _origin, cross_site_refusal
from .router import build_router

__all__ = [
    "BEARER_SCHEME_NAME",
    "COOKIE_SCHEME_NAME",
    "DEFAULT_OAUTH_CALLBACK_PATH",
    "Gatehouse",
]

DEFAULT_OAUTH_CALLBACK_PATH: Final = "/auth/oauth/{provider}/callback"
#: The names of the OpenAPI security schemes (``components.securitySchemes``).
COOKIE_SCHEME_NAME: Final = "GatehouseSessionCookie"
BEARER_SCHEME_NAME: Final = "GatehouseBearer"
_log = logging.getLogger("gatehouse.fastapi")


class Gatehouse(_Cookies):
    """Gatehouse for a FastAPI app.

    ``client`` is an :class:`AsyncClient` or a ``host:port`` target. The session token is read
    from ``Authorization: Bearer <token>`` first, then from the cookie ``cookie_name``.
    ``cookie_secure`` should stay ``True`` outside plain-http tests (browsers accept Secure
    cookies on ``http://localhost``). ``cookie_samesite`` is ``"lax"`` (default), ``"strict"``
    or ``"none"``, the last for a front end on another site (it needs Secure; see the README,
    "Front end on another origin"); ``cookie_domain`` and ``cookie_path`` set the cookie's
    Domain and Path. ``cache_ttl`` (seconds, ``0`` = off) enables the
    :class:`SessionCache` trade-off described in :mod:`gatehouse.fastapi`. ``expose_token`` also
    returns the token in sign-up/sign-in bodies, for non-browser clients. ``service`` (an
    :class:`AsyncServiceClient` with an API key or client certificate) makes the cache follow
    Gatehouse's revocation stream (see :mod:`gatehouse.fastapi`); start it with :meth:`start` or
    ``FastAPI(lifespan=gatehouse.lifespan)`` (it also starts on the first request), stop it
    with :meth:`aclose`.

    Provider sign-in (``GET /oauth/{provider}/start`` and ``/callback``) needs each provider's
    callback URL, exactly as listed in Gatehouse's ``GATEHOUSE_*_REDIRECT_URIS``: from
    ``oauth_redirect_uris`` (provider -> URL), else ``oauth_base_url`` + ``oauth_callback_path``
    (``/auth/oauth/{provider}/callback``, for a router mounted at ``/auth``). A provider with
    neither is 404. The flow's state travels in the short-lived cookie
    ``oauth_state_cookie_name`` (HttpOnly, SameSite=Lax, Secure as ``cookie_secure``).

    Second factors: a sign-in (password or provider) of a user with a second factor answers
    ``second_factor_required`` and keeps the challenge in the short-lived cookie
    ``second_factor_cookie_name`` (HttpOnly, SameSite as the session cookie, living until the
    challenge expires, at most 5 minutes), which ``POST /second-factor`` completes.

    Passkeys (WebAuthn): ``POST /passkeys/register/options`` and ``/passkeys/register`` add
    one to the signed-in user; ``POST /passkeys/sign-in/options`` and ``/passkeys/sign-in``
    sign in without a password. The sign-in ceremony's id travels in the short-lived cookie
    ``passkey_cookie_name`` (HttpOnly, SameSite as the session cookie, at most 5 minutes).
    Gatehouse checks each credential's origin against its ``GATEHOUSE_WEBAUTHN_ORIGINS`` and
    RP id ``GATEHOUSE_WEBAUTHN_RP_ID``: the page's exact origin must be listed there.

    Cross-site request forgery: a state-changing request (any method but GET, HEAD and
    OPTIONS) that is not authenticated by ``Authorization: Bearer`` is refused with 403 when
    it comes from a page of another origin: on every route of :meth:`router` and wherever
    :attr:`current_user` / :attr:`optional_user` (or :meth:`check_origin`) is a dependency.
    The browser's ``Sec-Fetch-Site`` decides when present (``same-origin``/``none`` pass,
    ``same-site``/``cross-site`` only with an ``Origin`` in ``trusted_origins``); otherwise
    ``Origin`` must be the app's own (its host equals the request's ``Host``) or trusted.
    A request with neither header carrying the session cookie is refused too (browsers send
    them on every such request; a script should use Bearer); without the cookie it passes.
    ``trusted_origins`` (``https://book.example.org``, exact scheme, host and port) adds
    front ends on other origins; ``oauth_base_url``'s origin is trusted as well.

    ``cookie_host_prefix`` names the cookies (all four) ``__Host-<name>``: the browser then only accepts
    them Secure, with Path=/ and no Domain, so a sibling subdomain cannot set or shadow them.
    Settings that contradict that (``cookie_secure=False``, a ``cookie_domain``, another
    ``cookie_path``) raise ValueError here, as do SameSite=None without Secure, an unknown
    ``cookie_samesite``, a malformed cookie name or path, and a malformed trusted origin.

    Dependencies: :attr:`current_user` (the caller or 401) and :attr:`optional_user` (or
    None), and their variants ``current_user(verified=..., optional=..., active=...)`` (see
    :class:`UserDependency`). They give a :class:`CurrentUser`, a pydantic model a route can
    return. When Gatehouse refuses the session cookie's token (revoked, expired, forged), the
    answer clears the cookie, so the browser stops sending it.

    The end user's address (``request.client.host``; run uvicorn with ``--proxy-headers`` and
    ``--forwarded-allow-ips`` behind a proxy) and User-Agent are forwarded to Gatehouse.

    ``degrade_public_to_anonymous`` (off by default): where the dependency is optional
    (:attr:`optional_user`, ``current_user(optional=True)``), a Gatehouse that is down or too
    slow (UNAVAILABLE, DEADLINE_EXCEEDED) makes the caller anonymous (``None``) instead of a
    503/504: a public page stays up, a signed-in reader sees it signed out meanwhile. The
    cookie is kept (Gatehouse did not refuse it), a warning is logged (never the token), and
    :attr:`degraded_requests` counts such requests. Protected routes still answer 503/504.
    """


    def __init__(
        self,
        client: AsyncClient | str,
        *,
        cookie_name: str = DEFAULT_COOKIE_NAME,
        cookie_secure: bool = True,
        cookie_domain: str | None = None,
        cookie_path: str = "/",
        cookie_samesite: SameSite = "lax",
        cache_ttl: float = 0.0,
        cache_max_entries: int = 10_000,
        expose_token: bool = False,
        service: AsyncServiceClient | None = None,
        oauth_redirect_uris: Mapping[str, str] | None = None,
        oauth_base_url: str | None = None,
        oauth_callback_path: str = DEFAULT_OAUTH_CALLBACK_PATH,
        oauth_state_cookie_name: str = DEFAULT_OAUTH_STATE_COOKIE,
        second_factor_cookie_name: str = DEFAULT_SECOND_FACTOR_COOKIE,
        passkey_cookie_name: str = DEFAULT_PASSKEY_COOKIE,
        trusted_origins: Iterable[str] = (),
        cookie_host_prefix: bool = False,
        degrade_public_to_anonymous: bool = False,
    ) -> None:
        if cookie_host_prefix:
            cookie_name = _with_prefix(cookie_name)
            oauth_state_cookie_name = _with_prefix(oauth_state_cookie_name)
            second_factor_cookie_name = _with_prefix(second_factor_cookie_name)
            passkey_cookie_name = _with_prefix(passkey_cookie_name)
        cookie_samesite = _samesite(cookie_samesite)
        _check_cookie(cookie_name, cookie_secure, cookie_domain, cookie_path, cookie_samesite)
        _check_cookie(oauth_state_cookie_name, cookie_secure, cookie_domain, cookie_path)
        _check_cookie(
            second_factor_cookie_name, cookie_secure, cookie_domain, cookie_path, cookie_samesite
        )
        _check_cookie(
            passkey_cookie_name, cookie_secure, cookie_domain, cookie_path, cookie_samesite
        )
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
        self.second_factor_cookie_name = second_factor_cookie_name
        self.passkey_cookie_name = passkey_cookie_name
        self.service = service
        self.watch: AsyncRevocationWatch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._cache_generation = 0
        self.cookie_name = cookie_name
        self.cookie_secure = cookie_secure
        self.cookie_domain = cookie_domain
        self.cookie_path = cookie_path
        self.cookie_samesite: SameSite = cookie_samesite
        #: The OpenAPI security schemes (the session cookie, and the same token as Bearer),
        #: sub-dependencies of :attr:`current_user` and its variants so that their routes carry
        #: ``security`` and ``/docs`` has the Authorize button. ``auto_error=False``: they never
        #: refuse a request themselves.
        self.security_schemes: tuple[APIKeyCookie, HTTPBearer] = (
            APIKeyCookie(
                name=cookie_name,
                scheme_name=COOKIE_SCHEME_NAME,
                description="The session cookie set by sign-in and sign-up (HttpOnly).",
                auto_error=False,
            ),
            HTTPBearer(
                scheme_name=BEARER_SCHEME_NAME,
                bearerFormat="gate_...",
                description="A Gatehouse session token, for clients that are not browsers.",
                auto_error=False,
            ),
        )
        #: Dependency: the signed-in caller, or 401 (503 if Gatehouse is unavailable; 403 for
        #: a state-changing cookie request from another origin). Call it for a variant:
        #: ``current_user(verified=True)``, ``current_user(optional=True)``.
        self.current_user = UserDependency(self._resolve_caller, security=self.security_schemes)
        #: Dependency: the signed-in caller, or None when there is no valid session (still
        #: 503 when Gatehouse is unavailable: better than treating a reader as anonymous;
        #: ``degrade_public_to_anonymous=True`` chooses anonymous instead).
        self.optional_user = self.current_user(optional=True)
        self.cache: SessionCache | None = (
            SessionCache(cache_ttl, cache_max_entries) if cache_ttl > 0 else None
        )
        self.expose_token = expose_token
        #: See the class docstring: optional dependencies give None while Gatehouse is down.
        self.degrade_public_to_anonymous = degrade_public_to_anonymous
        #: How many requests were served as anonymous because Gatehouse was down or slow
        #: (with ``degrade_public_to_anonymous``); e.g. for a metric or a health page.
        self.degraded_requests = 0

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

    # Provider sign-in (OAuth / OpenID Connect); the cookies are in _Cookies

    def oauth_redirect_uri(self, provider: str) -> str | None:
        """The callback URL configured for ``provider``, or None."""
        uri = self.oauth_redirect_uris.get(provider)
        if uri:
            return uri
        if self.oauth_base_url is None:
            return None
        return self.oauth_base_url + self.oauth_callback_path.format(provider=provider)

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
        return cross_site_refusal(request, self.token_from_request(request), self.trusted_origins)

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

    async def _resolve_caller(
        self, request: Request, response: Response, verified: bool, optional: bool
    ) -> CurrentUser | None:
        """What a :class:`UserDependency` gives: checks the origin, then the session (clearing
        a cookie Gatehouse refuses), then the options."""
        self.check_origin(request)
        found = self.token_from_request(request)
        if found is None:
            if optional:
                return None
            raise http_exception(Unauthenticated("not signed in"))
        token, source = found
        try:
            answer = await self._session(token)
        except Unauthenticated as exc:
            # Revoked, expired or forged. A cookie would come back with every request and
            # cost a Gatehouse round trip each time until it expires: clear it.
            if optional:
                if source == "cookie":
                    self.clear_session_cookie(response)
                return None
            refused = http_exception(exc)
            headers = dict(refused.headers or {})
            if source == "cookie":
                headers["set-cookie"] = self.session_cookie_clearing()
            raise HTTPException(refused.status_code, refused.detail, headers) from exc
        except (Unavailable, DeadlineExceeded) as exc:
            if not (optional and self.degrade_public_to_anonymous):
                raise http_exception(exc) from exc
            # The cookie stays: Gatehouse did not say the session is invalid.
            self.degraded_requests += 1
            _log.warning(
                "%s %s served as anonymous: Gatehouse %s (%s); degrade_public_to_anonymous",
                request.method,
                request.url.path,
                "unavailable" if isinstance(exc, Unavailable) else "timed out",
                exc.message,
            )
            return None
        except GatehouseError as exc:
            raise http_exception(exc) from exc
        caller = CurrentUser(user=answer.user, session=answer.session, token=token)
        if verified and not caller.user.email_verified:
            if optional:
                return None
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail="email address not verified: follow the link mailed to it first",
            )
        return caller

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
        ``GET /oauth/{provider}/callback``; second factors: ``POST /second-factor``,
        ``GET /factors``, ``POST /factors/totp``, ``POST /factors/totp/confirm``,
        ``POST /factors/recovery-codes``, ``DELETE /factors/{id}``; privacy: ``GET /export``
        (the caller's data as a JSON download), ``GET /consents``, ``POST /consents``.
        Every state-changing route applies :meth:`check_origin` (sign-in and sign-up too: no login forgery from another site).
        ``POST /sign-out`` always clears the cookie and answers 204, revoking the session
        at Gatehouse when it can (if it cannot, a warning is logged and the session lives
        until it expires, unless revoked later).
        """
        return build_router(self, tags=tags)


    async def update_profile(
        self, user: CurrentUser, body: ProfileIn, request: Request | None = None
    ) -> ProfileOut:
        """Applies a :class:`ProfileIn` patch for ``user`` (shared by the router and apps).

        With ``request``, the browser's address and User-Agent are forwarded: Gatehouse records
        them with a change of ``consent_given`` in the consent history."""
        mask = body.update_mask()
        meta = (
            self.client_meta(request)
            if request is not None
            else ClientMeta(client_ip=None, user_agent=None)
        )
        with _http_errors(strip_field_prefix="profile."):
            if not mask:
                profile = await self.client.get_profile(token=user.token)
            else:
                profile = await self.client.update_profile(
                    body.to_proto(), mask, token=user.token, **meta
                )
        return ProfileOut.from_proto(profile)
