"""Offline verification of Gatehouse access tokens for internal services, with push revocation.

>>> verifier = AccessTokenVerifier(
...     issuer="http://gatehouse:50052",            # GATEHOUSE_ISSUER: `iss` and the JWKS base URL
...     audience="books-api",                       # this service (GATEHOUSE_ACCESS_TOKEN_AUDIENCES)
...     service=AsyncServiceClient("gatehouse:50051", api_key=os.environ["GATEHOUSE_API_KEY"]),
... )
>>> app = FastAPI(lifespan=verifier.lifespan)   # or await verifier.start() / verifier.aclose()
>>> @app.get("/books")
... async def books(claims: Annotated[AccessTokenClaims, Depends(verifier)]) -> list[Book]:
...     return await books_of(claims.subject)

Signatures are checked with PyJWT against the JWK Set of ``<issuer>/.well-known/jwks.json``
(cached for its ``Cache-Control: max-age``; an unknown ``kid`` refreshes it at most once per
``min_refresh_interval``). Only the algorithm a key names is accepted, among ``algorithms``
(EdDSA, ES256, RS256); ``none`` never, HS256 only with ``hs256_secret``. ``typ`` must be
``at+jwt``; ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, ``sub`` and ``sid`` are required.

Revocation: a background task follows ``TokenService.WatchRevocations`` and remembers every
revoked session id for as long as a token of it may live (the access-token TTL plus leeway);
a token of such a session is refused. A token issued before the stream covered it (at start,
or after a reconnect that could not resume) is introspected once, then trusted to its expiry
unless an event revokes it. When the stream has been down longer than ``watch_down_limit``
seconds, ``on_watch_down`` decides: ``"fail_closed"`` (default) answers 503, ``"introspect"``
asks ``IntrospectToken`` on every request until the stream is back.
"""

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import httpx
import jwt
from fastapi import FastAPI, HTTPException, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from .._service_base import AsyncRevocationWatch
from ..errors import GatehouseError
from ..service import AsyncServiceClient

__all__ = [
    "AccessTokenClaims",
    "AccessTokenVerifier",
    "JwksCache",
    "TokenRejected",
    "VerifierUnavailable",
]

_log = logging.getLogger("gatehouse.fastapi.access_tokens")

#: The algorithms Gatehouse signs with (GATEHOUSE_SIGNING_ALGORITHM), asymmetric only.
DEFAULT_ALGORITHMS: Final = ("EdDSA", "ES256", "RS256")
_ASYMMETRIC: Final = frozenset({"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512",
                                "PS256", "PS384", "PS512"})
ACCESS_TOKEN_TYPE: Final = "at+jwt"
_REQUIRED_CLAIMS: Final = ["iss", "sub", "aud", "exp", "iat", "nbf", "sid"]
_MAX_AGE_RE: Final = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)
_bearer = HTTPBearer(auto_error=False, scheme_name="GatehouseAccessToken",
                     description="A Gatehouse access token (JWT) for this service")


class TokenRejected(Exception):
    """The token is not valid here (answered 401 ``invalid_token``)."""


class VerifierUnavailable(Exception):
    """The token cannot be verified now (no keys, revocation feed down): answered 503."""


class AccessTokenClaims(BaseModel):
    """The verified claims of a Gatehouse access token."""

    model_config = ConfigDict(frozen=True)

    #: The user id (``sub``).
    subject: str
    #: The session id (``sid``).
    session_id: str
    #: This service (``aud``).
    audience: str
    issuer: str
    #: ``scope`` split on spaces (Gatehouse issues none today).
    scopes: tuple[str, ...] = ()
    expires_at: datetime
    issued_at: datetime
    #: ``jti``.
    token_id: str = ""
    email: str = ""
    email_verified: bool = False
    name: str = ""

    @property
    def user_id(self) -> str:
        return self.subject


def _max_age(cache_control: str | None, default: float) -> float:
    match = _MAX_AGE_RE.search(cache_control or "")
    return float(match.group(1)) if match else default


class JwksCache:
    """The JWK Set at ``url``, cached for its ``max-age`` and refreshed on an unknown ``kid``
    at most once per ``min_refresh_interval`` seconds (a flood of bogus kids costs one fetch).

    ``fetches`` counts the HTTP fetches made. On a failed refresh the keys in hand stay in use.
    """

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        min_refresh_interval: float = 30.0,
        default_max_age: float = 300.0,
        max_max_age: float = 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._http = http
        self._own_http = http is None
        self.min_refresh_interval = min_refresh_interval
        self.default_max_age = default_max_age
        self.max_max_age = max_max_age
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fresh_until = 0.0
        self._last_fetch: float | None = None
        self._last_unknown_kid_fetch: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _fetch(self) -> None:
        self._last_fetch = time.monotonic()
        self.fetches += 1
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._http.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
            keys: dict[str, jwt.PyJWK] = {}
            for data in document.get("keys", []):
                kid = data.get("kid")
                if not isinstance(kid, str) or data.get("use", "sig") != "sig":
                    continue
                try:
                    keys[kid] = jwt.PyJWK(data)
                except jwt.PyJWTError:
                    _log.warning("skipping unusable JWK %r", kid)
        except (httpx.HTTPError, ValueError, AttributeError) as err:
            _log.warning("JWKS fetch from %s failed: %s", self.url, err)
            # Keep what we had; try again after the refresh interval.
            self._fresh_until = time.monotonic() + self.min_refresh_interval
            return
        self._keys = keys
        max_age = min(_max_age(response.headers.get("cache-control"), self.default_max_age),
                      self.max_max_age)
        self._fresh_until = time.monotonic() + max_age

    async def refresh(self) -> None:
        """Fetches the set now."""
        async with self._lock:
            await self._fetch()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid``, or None if the set (fresh, or just refreshed) has no such key.
        Raises :class:`VerifierUnavailable` if no key set could ever be fetched."""
        now = time.monotonic()
        if now < self._fresh_until and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            if now >= self._fresh_until:
                await self._fetch()
            elif kid not in self._keys and (
                self._last_unknown_kid_fetch is None
                or now - self._last_unknown_kid_fetch >= self.min_refresh_interval
            ):
                # A key published since the last fetch; bogus kids get one fetch per interval.
                self._last_unknown_kid_fetch = now
                await self._fetch()
            if not self._keys:
                raise VerifierUnavailable("no JWK Set from " + self.url)
            return self._keys.get(kid)

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None


class AccessTokenVerifier:
    """A FastAPI dependency (``Depends(verifier)``) that verifies Gatehouse access tokens
    offline and gives :class:`AccessTokenClaims`; see the module docs for the rules.

    401 (``WWW-Authenticate: Bearer error="invalid_token"``) for a missing, malformed, forged,
    expired, foreign or revoked token; 503 (``Retry-After``) when it cannot be verified now.
    ``service`` (a service credential) is required unless ``check_revocation=False``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        service: AsyncServiceClient | None = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        hs256_secret: bytes | None = None,
        leeway: float = 30.0,
        access_token_ttl: float = 600.0,
        watch_down_limit: float = 10.0,
        on_watch_down: Literal["fail_closed", "introspect"] = "fail_closed",
        check_revocation: bool = True,
        min_jwks_refresh_interval: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if "none" in {a.lower() for a in algorithms}:
            raise ValueError('the "none" algorithm is never accepted')
        unknown = set(algorithms) - _ASYMMETRIC
        if unknown:
            raise ValueError(f"unsupported algorithms {sorted(unknown)} (HS256: hs256_secret=)")
        if hs256_secret is not None and len(hs256_secret) < 32:
            raise ValueError("hs256_secret must be at least 32 bytes")
        if check_revocation and service is None:
            raise ValueError("service credentials required for revocation (or check_revocation=False)")
        if on_watch_down not in ("fail_closed", "introspect"):
            raise ValueError('on_watch_down is "fail_closed" or "introspect"')
        self.issuer = issuer
        self.audience = audience
        self.service = service
        self.algorithms = tuple(algorithms)
        self.hs256_secret = hs256_secret
        self.leeway = leeway
        self.access_token_ttl = access_token_ttl
        self.watch_down_limit = watch_down_limit
        self.on_watch_down = on_watch_down
        self.check_revocation = check_revocation
        self.jwks = JwksCache(
            jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json",
            http=http,
            min_refresh_interval=min_jwks_refresh_interval,
        )
        #: Revoked session id -> monotonic time after which no token of it can be alive.
        self._revoked: OrderedDict[str, float] = OrderedDict()
        #: jti -> token expiry (epoch seconds) of tokens introspected active since coverage.
        self._introspected: OrderedDict[str, float] = OrderedDict()
        self._longest_lifetime = access_token_ttl
        self.watch: AsyncRevocationWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Since when (monotonic) the stream has been down; None while it is up.
        self._down_since: float | None = time.monotonic()
        #: Epoch seconds since which every revocation is known (None: not yet).
        self._covered_since: float | None = None

    # Lifecycle

    async def start(self) -> None:
        """Fetches the keys and starts following the revocation stream."""
        await self.jwks.refresh()
        if not self.check_revocation or self.service is None or self._tasks:
            return
        self._down_since = time.monotonic()
        self.watch = self.service.watch_revocations()
        self._tasks = [
            asyncio.create_task(self._follow(self.watch)),
            asyncio.create_task(self._monitor(self.watch)),
        ]

    async def aclose(self) -> None:
        """Stops the stream and closes the HTTP client (not ``service``: it is yours)."""
        if self.watch is not None:
            self.watch.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.watch = None
        self._down_since = time.monotonic()
        await self.jwks.aclose()

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """A FastAPI lifespan that starts and stops the verifier."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    async def _follow(self, watch: AsyncRevocationWatch) -> None:
        try:
            async for event in watch:
                self.revoke_session(event.session_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # credentials refused: stays down, so 503 (or introspection)
            _log.exception("revocation watch stopped")

    async def _monitor(self, watch: AsyncRevocationWatch, poll: float = 0.05) -> None:
        while True:
            await watch.connected.wait()
            if watch.last_id == 0:
                # Nothing to resume from: revocations before now may have been missed.
                self._covered_since = time.time()
                self._introspected.clear()
            self._down_since = None
            while watch.connected.is_set():
                await asyncio.sleep(poll)
            self._down_since = time.monotonic()

    # Revocation state

    def revoke_session(self, session_id: str) -> None:
        """Refuses every token of ``session_id`` from now on (for as long as one may live)."""
        now = time.monotonic()
        self._revoked[session_id] = now + self._longest_lifetime + self.leeway
        self._revoked.move_to_end(session_id)
        while self._revoked:
            oldest, until = next(iter(self._revoked.items()))
            if until > now:
                break
            del self._revoked[oldest]

    def _is_revoked(self, session_id: str) -> bool:
        until = self._revoked.get(session_id)
        return until is not None and until > time.monotonic()

    @property
    def stream_healthy(self) -> bool:
        """Whether the revocation stream is up, or down for less than ``watch_down_limit``."""
        down = self._down_since
        return down is None or time.monotonic() - down <= self.watch_down_limit

    # Verification

    async def verify(self, token: str) -> AccessTokenClaims:
        """The claims of ``token``; :class:`TokenRejected` or :class:`VerifierUnavailable`."""
        claims = await self._verify_signature_and_claims(token)
        model = AccessTokenClaims(
            subject=claims["sub"],
            session_id=claims["sid"],
            audience=self.audience,
            issuer=claims["iss"],
            scopes=tuple(str(claims.get("scope", "")).split()),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            issued_at=datetime.fromtimestamp(claims["iat"], UTC),
            token_id=str(claims.get("jti", "")),
            email=str(claims.get("email", "")),
            email_verified=bool(claims.get("email_verified", False)),
            name=str(claims.get("name", "")),
        )
        lifetime = float(claims["exp"]) - float(claims["iat"])
        self._longest_lifetime = max(self._longest_lifetime, lifetime)
        if self.check_revocation:
            await self._check_revocation(token, model, float(claims["iat"]), float(claims["exp"]))
        return model

    async def _verify_signature_and_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise TokenRejected("malformed token") from err
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenRejected("not an access token (typ)")
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self.hs256_secret is not None:
            key = self.hs256_secret
        elif isinstance(alg, str) and alg in self.algorithms:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise TokenRejected("no kid")
            jwk = await self.jwks.get(kid)
            if jwk is None:
                raise TokenRejected("unknown kid")
            if jwk.algorithm_name != alg:
                raise TokenRejected("algorithm does not match the key")
            key = jwk
        else:
            raise TokenRejected("algorithm not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_iat": True},
            )
        except jwt.PyJWTError as err:
            raise TokenRejected(str(err)) from err
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
            raise TokenRejected("sub and sid must be strings")
        return claims

    async def _check_revocation(
        self, token: str, claims: AccessTokenClaims, iat: float, exp: float
    ) -> None:
        if self._is_revoked(claims.session_id):
            raise TokenRejected("session revoked")
        if not self.stream_healthy:
            if self.on_watch_down == "fail_closed":
                raise VerifierUnavailable("revocation stream down")
            await self._introspect(token, claims)
            return
        covered = self._covered_since
        if covered is None:
            # The stream is connecting: revocations so far are unknown, so ask (not cached).
            await self._introspect(token, claims)
            return
        if iat < covered and claims.token_id not in self._introspected:
            await self._introspect(token, claims)
            if claims.token_id:
                self._introspected[claims.token_id] = exp
                now = time.time()
                while self._introspected and (
                    len(self._introspected) > 10_000 or next(iter(self._introspected.values())) < now
                ):
                    self._introspected.popitem(last=False)

    async def _introspect(self, token: str, claims: AccessTokenClaims) -> None:
        assert self.service is not None
        try:
            info = await self.service.introspect_token(token)
        except GatehouseError as err:
            raise VerifierUnavailable(f"introspection failed: {err}") from err
        if not info.active or info.sid != claims.session_id:
            raise TokenRejected("inactive")

    # The dependency

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
    ) -> AccessTokenClaims:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "access token required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await self.verify(credentials.credentials)
        except TokenRejected as err:
            _log.info("access token refused: %s", err)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from err
        except VerifierUnavailable as err:
            _log.warning("access token not verifiable now: %s", err)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "cannot verify the access token now",
                headers={"Retry-After": "1"},
            ) from err
