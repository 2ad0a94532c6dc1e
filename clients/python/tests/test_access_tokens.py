"""AccessTokenVerifier (gatehouse.fastapi.access_tokens) against the real gatehouse, both
backends: offline signature and claim checks, the JWKS refresh on an unknown kid, push
revocation, and failing closed when the revocation stream is down."""


import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import jwt
import pytest
from conftest import PASSWORD, start_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI
from gatehouse_server import DEFAULT_ENV, SERVICE_API_KEY, GatehouseServer

from gatehouse import AsyncServiceClient, Client
from gatehouse.fastapi.access_tokens import AccessTokenClaims, AccessTokenVerifier

AUDIENCE = "books-api"


def make_app(verifier: AccessTokenVerifier) -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(claims: Annotated[AccessTokenClaims, Depends(verifier)]) -> dict[str, Any]:
        return claims.model_dump(mode="json")

    return app


class Harness:
    def __init__(self, verifier: AccessTokenVerifier) -> None:
        self.verifier = verifier
        transport = httpx.ASGITransport(app=make_app(verifier))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://books")

    async def call(self, token: str) -> httpx.Response:
        return await self.http.get("/whoami", headers={"authorization": f"Bearer {token}"})

    async def wait_connected(self) -> None:
        assert self.verifier.watch is not None
        await asyncio.wait_for(self.verifier.watch.connected.wait(), 5)
        for _ in range(100):  # the monitor notices within a poll
            if self.verifier._covered_since is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("revocation coverage never started")


@asynccontextmanager
async def harness_for(server: GatehouseServer, **options: Any) -> AsyncIterator[Harness]:
    service = AsyncServiceClient(server.target, api_key=SERVICE_API_KEY)
    options = {"issuer": server.http_base, "audience": AUDIENCE, "service": service} | options
    verifier = AccessTokenVerifier(**options)
    await verifier.start()
    harness = Harness(verifier)
    try:
        yield harness
    finally:
        await harness.http.aclose()
        await verifier.aclose()
        await service.close()


def issue(server: GatehouseServer, email: str, audience: str = AUDIENCE) -> tuple[Any, str]:
    with Client(server.target) as client:
        auth = client.sign_up(email, PASSWORD, "Mesh Reader")
        return auth, client.issue_access_token(audience, token=auth.session_token).access_token


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forged(real: str, **header: Any) -> str:
    """The real token's claims, signed by a key of our own, with ``header`` overrides."""
    claims = json.loads(unb64(real.split(".")[1]))
    key = Ed25519PrivateKey.generate()
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "at+jwt", **header})


async def test_valid_token_and_claims(server: GatehouseServer, email: str) -> None:
    async with harness_for(server) as h:
        await h.wait_connected()
        auth, token = issue(server, email)
        response = await h.call(token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["subject"] == auth.user.id
        assert body["session_id"] == auth.session.id
        assert body["audience"] == AUDIENCE and body["issuer"] == server.http_base
        assert body["email"] == email and body["scopes"] == []
        assert body["expires_at"] > body["issued_at"]

        missing = await h.http.get("/whoami")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert_invalid_token(await h.call("not-a-jwt"))


async def test_wrong_audience_and_issuer(server: GatehouseServer, email: str) -> None:
    _, other_audience = issue(server, email, audience="search-api")
    async with harness_for(server) as h:
        assert_invalid_token(await h.call(other_audience))
    _, token = issue(server, "b-" + email)
    jwks_url = server.http_base + "/.well-known/jwks.json"
    async with harness_for(server, issuer="http://someone-else.example", jwks_url=jwks_url) as h:
        # The keys are this server's, so only `iss` is wrong.
        await h.wait_connected()
        assert_invalid_token(await h.call(token))
    async with harness_for(server, jwks_url=jwks_url) as h:
        await h.wait_connected()
        assert (await h.call(token)).status_code == 200, "the same token passes with the right iss"


async def test_tampered_and_forged_tokens(server: GatehouseServer, email: str) -> None:
    _, token = issue(server, email)
    head, payload, signature = token.split(".")
    kid = json.loads(unb64(head))["kid"]
    async with harness_for(server) as h:
        await h.wait_connected()
        assert (await h.call(token)).status_code == 200
        sig = bytearray(unb64(signature))
        sig[5] ^= 0x01
        assert_invalid_token(await h.call(f"{head}.{payload}.{b64(bytes(sig))}"))
        # Claims changed under the real signature.
        claims = json.loads(unb64(payload)) | {"sub": str(uuid.uuid4())}
        assert_invalid_token(await h.call(f"{head}.{b64(json.dumps(claims).encode())}.{signature}"))
        # Our own key under the real kid; `none`; HS256 keyed with the public key.
        assert_invalid_token(await h.call(forged(token, kid=kid)))
        none = jwt.encode(json.loads(unb64(payload)), None, algorithm="none",
                          headers={"kid": kid, "typ": "at+jwt"})
        assert_invalid_token(await h.call(none))
        hs = jwt.encode(json.loads(unb64(payload)), "x" * 32, algorithm="HS256",
                        headers={"kid": kid, "typ": "at+jwt"})
        assert_invalid_token(await h.call(hs))


async def test_unknown_kid_refreshes_exactly_once(server: GatehouseServer, email: str) -> None:
    _, token = issue(server, email)
    async with harness_for(server) as h:
        await h.wait_connected()
        assert h.verifier.jwks.fetches == 1, "start() fetched the set"
        assert (await h.call(token)).status_code == 200
        assert h.verifier.jwks.fetches == 1, "a known kid does not refetch"
        assert_invalid_token(await h.call(forged(token, kid="bogus-1")))
        assert h.verifier.jwks.fetches == 2, "an unknown kid refetches once"
        results = await asyncio.gather(*(h.call(forged(token, kid=f"flood-{i}")) for i in range(20)))
        for response in results:
            assert_invalid_token(response)
        assert h.verifier.jwks.fetches == 2, "a flood of bogus kids is rate-limited"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_expired_token_refused(backend: str, email: str) -> None:
    server = start_server(backend, {**DEFAULT_ENV, "GATEHOUSE_ACCESS_TOKEN_TTL": "1s"})
    try:
        _, token = issue(server, email)
        async with harness_for(server, leeway=0, access_token_ttl=1) as h:
            await h.wait_connected()
            claims = json.loads(unb64(token.split(".")[1]))
            assert claims["exp"] - claims["iat"] <= 1
            first = await h.call(token)
            if claims["exp"] > time.time():
                assert first.status_code == 200, first.text
            await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 1.1)
            assert_invalid_token(await h.call(token))
    finally:
        server.stop()


async def test_revoked_session_is_refused(server: GatehouseServer, email: str) -> None:
    async with harness_for(server) as h:
        await h.wait_connected()
        auth, token = issue(server, email)
        assert (await h.call(token)).status_code == 200
        with Client(server.target) as client:
            client.sign_out(token=auth.session_token)
        deadline = time.monotonic() + 5
        while (response := await h.call(token)).status_code == 200:
            assert time.monotonic() < deadline, "revoked token still accepted after 5 s"
            await asyncio.sleep(0.05)
        assert_invalid_token(response)


async def test_token_revoked_before_start_is_refused(server: GatehouseServer, email: str) -> None:
    # Revoked before the verifier subscribed: the stream cannot say, so it introspects.
    auth, token = issue(server, email)
    with Client(server.target) as client:
        client.sign_out(token=auth.session_token)
    async with harness_for(server) as h:
        await h.wait_connected()
        assert_invalid_token(await h.call(token))


async def test_fails_closed_when_stream_down(fresh_server: GatehouseServer, email: str) -> None:
    async with harness_for(fresh_server, watch_down_limit=0.5) as h:
        await h.wait_connected()
        _, token = issue(fresh_server, email)
        assert (await h.call(token)).status_code == 200
        fresh_server.stop(drop=False)
        await asyncio.sleep(1.5)
        assert h.verifier.watch is not None and not h.verifier.watch.connected.is_set()
        response = await h.call(token)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="service credentials"):
        AccessTokenVerifier(issuer="http://gh", audience=AUDIENCE)
    with pytest.raises(ValueError, match="none"):
        AccessTokenVerifier(issuer="http://gh", audience=AUDIENCE, algorithms=["none"],
                            check_revocation=False)
    with pytest.raises(ValueError, match="unsupported"):
        AccessTokenVerifier(issuer="http://gh", audience=AUDIENCE, algorithms=["HS256"],
                            check_revocation=False)
    with pytest.raises(ValueError, match="required"):
        AccessTokenVerifier(issuer="http://gh", audience="", check_revocation=False)
