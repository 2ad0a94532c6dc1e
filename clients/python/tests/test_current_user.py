"""The session dependencies of the FastAPI integration, against the real gatehouse (both
backends): the caller as a pydantic model a route can return, ``current_user``'s options
(``verified``, ``optional``, ``active``), and a revoked or forged session cookie cleared
rather than checked with Gatehouse again on every request."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' local aliases.

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Annotated, Any

import httpx
import pytest
from conftest import PASSWORD, browser
from fastapi import Depends, FastAPI
from gatehouse_server import SERVICE_API_KEY, GatehouseServer

from gatehouse import AsyncClient, AsyncServiceClient
from gatehouse._proto.gatehouse.v1 import auth_pb2
from gatehouse.fastapi import CurrentUser, Gatehouse, SessionOut, UserOut

SESSION = "gatehouse_session"
VERIFY_SUBJECT = "Confirm your email address"


def make_app(server: GatehouseServer, **options: Any) -> FastAPI:
    """An app with the router and routes on the plain dependencies."""
    gatehouse = Gatehouse(AsyncClient(server.target), cookie_secure=True, **options)
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    app.state.gatehouse = gatehouse
    User = Annotated[CurrentUser, Depends(gatehouse.current_user)]
    Reader = Annotated[CurrentUser | None, Depends(gatehouse.optional_user)]

    @app.get("/me")
    async def me(user: User) -> UserOut:
        """The signed-in reader, as the book's front end shows them."""
        return user.user

    @app.get("/public")
    async def public(reader: Reader) -> dict[str, str | None]:
        return {"reader": reader.user.email if reader is not None else None}

    return app


def add_caller_route(app: FastAPI) -> None:
    """A route that returns the caller itself."""
    gatehouse: Gatehouse = app.state.gatehouse

    @app.get("/me/session")
    async def me_and_session(
        user: Annotated[CurrentUser, Depends(gatehouse.current_user)],
    ) -> CurrentUser:
        return user


def add_option_routes(app: FastAPI) -> None:
    """Routes on the variants ``current_user(...)`` makes."""
    gatehouse: Gatehouse = app.state.gatehouse
    Verified = Annotated[CurrentUser, Depends(gatehouse.current_user(verified=True))]
    Maybe = Annotated[CurrentUser | None, Depends(gatehouse.current_user(optional=True))]
    MaybeVerified = Annotated[
        CurrentUser | None, Depends(gatehouse.current_user(verified=True, optional=True))
    ]
    Active = Annotated[CurrentUser, Depends(gatehouse.current_user(active=True))]

    @app.get("/verified")
    async def verified(user: Verified) -> UserOut:
        return user.user

    @app.get("/maybe")
    async def maybe(reader: Maybe) -> dict[str, str | None]:
        return {"reader": reader.user.email if reader is not None else None}

    @app.get("/maybe-verified")
    async def maybe_verified(reader: MaybeVerified) -> dict[str, str | None]:
        return {"reader": reader.user.email if reader is not None else None}

    @app.get("/active")
    async def active(user: Active) -> UserOut:
        return user.user


@pytest.fixture
async def app(server: GatehouseServer) -> AsyncIterator[FastAPI]:
    app = make_app(server)
    yield app
    await app.state.gatehouse.client.close()


@pytest.fixture
async def options_app(app: FastAPI) -> FastAPI:
    add_option_routes(app)
    return app


async def sign_up(web: httpx.AsyncClient, email: str) -> str:
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
    response = await web.post("/auth/sign-up", json=body)
    assert response.status_code == 201, response.text
    token = web.cookies[SESSION]
    assert token.startswith("gate_")
    return token


def cleared_cookie(response: httpx.Response) -> SimpleCookie:
    """The response's Set-Cookie for the session cookie, asserted to be a deletion."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    assert SESSION in jar, f"the session cookie is not cleared: {response.headers}"
    cookie = jar[SESSION]
    assert cookie.value == "" and int(cookie["max-age"]) == 0, cookie.OutputString()
    # The same attributes as the cookie set at sign-in, or the browser keeps that one.
    assert cookie["path"] == "/" and cookie["secure"] and cookie["httponly"]
    assert cookie["samesite"].lower() == "lax"
    return jar


class SessionCalls:
    """Counts the GetSession calls the integration makes."""

    def __init__(self, gatehouse: Gatehouse) -> None:
        self.count = 0
        original = gatehouse.client.get_session

        async def spy(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        gatehouse.client.get_session = spy  # type: ignore[method-assign]


# The caller as a model (a protobuf message made `return user.user` a 500)


async def test_a_route_returns_the_current_user_as_json(app: FastAPI, email: str) -> None:
    add_caller_route(app)
    async with browser(app) as web:
        token = await sign_up(web, email)
        me = await web.get("/me")
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["email"] == email and body["name"] == "Ada Reader"
        assert body["id"] and body["email_verified"] is False
        assert body["created_at"] is not None
        session = await web.get("/auth/session")
        assert body["id"] == session.json()["user"]["id"]

        both = await web.get("/me/session")
        assert both.status_code == 200, both.text
        assert set(both.json()) == {"user", "session"}
        assert both.json()["user"] == body
        assert both.json()["session"]["id"] == session.json()["session"]["id"]
        assert both.json()["session"]["current"] is True
        assert token not in both.text, "the token never travels in a body"


def test_the_current_user_model_is_in_the_openapi_schema(app: FastAPI) -> None:
    add_caller_route(app)
    schema = app.openapi()
    ok = schema["paths"]["/me"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/UserOut"}
    user = schema["components"]["schemas"]["UserOut"]
    assert {"id", "email", "name", "email_verified"} <= set(user["properties"])
    both = schema["paths"]["/me/session"]["get"]["responses"]["200"]["content"]
    assert both["application/json"]["schema"] == {"$ref": "#/components/schemas/CurrentUser"}
    current = schema["components"]["schemas"]["CurrentUser"]
    assert set(current["properties"]) == {"user", "session"}, "no token in the schema"
    # The dependency is no parameter of the operation.
    assert "parameters" not in schema["paths"]["/me"]["get"]


def test_current_user_keeps_the_token_and_takes_the_messages() -> None:
    user = auth_pb2.User(id="u1", email="ada@example.com", name="Ada", email_verified=True)
    user.created_at.FromSeconds(1_700_000_000)
    session = auth_pb2.Session(id="s1", user_id="u1", current=True)
    caller = CurrentUser(user=user, session=session, token="gate_abc")
    assert isinstance(caller.user, UserOut) and isinstance(caller.session, SessionOut)
    assert caller.user.email == "ada@example.com" and caller.user.created_at is not None
    assert caller.id == "u1" and caller.session.id == "s1" and caller.token == "gate_abc"
    assert "gate_abc" not in caller.model_dump_json()
    again = CurrentUser(user=caller.user, session=caller.session, token="gate_abc")
    assert again == caller


# A cookie Gatehouse no longer accepts is cleared


async def test_revoked_cookie_is_cleared_on_a_protected_route(
    app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(app) as web:
        token = await sign_up(web, email)
        async with AsyncClient(server.target) as direct:
            await direct.sign_out(token=token)  # revoked at Gatehouse, not through this app
        calls = SessionCalls(app.state.gatehouse)

        refused = await web.get("/auth/session")
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["detail"]
        cleared_cookie(refused)
        assert SESSION not in web.cookies
        assert calls.count == 1

        again = await web.get("/auth/session")
        assert "cookie" not in again.request.headers, "the browser dropped the cookie"
        assert again.status_code == 401
        assert "set-cookie" not in again.headers
        assert calls.count == 1, "no Gatehouse round trip for a browser without a cookie"


async def test_revoked_cookie_is_cleared_on_a_public_route(
    app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(app) as web:
        await sign_up(web, email)
        assert (await web.get("/public")).json() == {"reader": email}
        async with AsyncServiceClient(server.target, api_key=SERVICE_API_KEY) as service:
            user_id = (await web.get("/auth/session")).json()["user"]["id"]
            assert await service.revoke_user_sessions(user_id) == 1
        calls = SessionCalls(app.state.gatehouse)

        anonymous = await web.get("/public")
        assert anonymous.status_code == 200, anonymous.text
        assert anonymous.json() == {"reader": None}
        cleared_cookie(anonymous)
        assert SESSION not in web.cookies
        again = await web.get("/public")
        assert again.status_code == 200 and again.json() == {"reader": None}
        assert "set-cookie" not in again.headers
        assert calls.count == 1
        # A forged cookie goes the same way.
        forged = await web.get("/public", headers={"cookie": f"{SESSION}=gate_forged"})
        assert forged.json() == {"reader": None}
        cleared_cookie(forged)
        refused = await web.get("/auth/session", headers={"cookie": f"{SESSION}=gate_forged"})
        assert refused.status_code == 401
        cleared_cookie(refused)


async def test_a_refused_bearer_token_leaves_the_cookie_alone(
    app: FastAPI, email: str
) -> None:
    async with browser(app) as web:
        await sign_up(web, email)
        bearer = {"authorization": "Bearer gate_forged"}
        refused = await web.get("/auth/session", headers=bearer)
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers
        assert (await web.get("/public", headers=bearer)).json() == {"reader": None}
        session = await web.get("/auth/session")
        assert session.status_code == 200, "the cookie session still works"


# current_user(verified=..., optional=..., active=...)


async def test_verified_requires_a_verified_address(
    options_app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(options_app) as web:
        await sign_up(web, email)
        refused = await web.get("/verified")
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        assert isinstance(detail, str) and "not verified" in detail, detail
        assert "set-cookie" not in refused.headers, "an unverified reader stays signed in"
        assert (await web.get("/auth/session")).status_code == 200

        link = server.wait_for_link(email, VERIFY_SUBJECT)
        verified = await web.post("/auth/verify-email", json={"token": link})
        assert verified.status_code == 200, verified.text
        allowed = await web.get("/verified")
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["email"] == email and allowed.json()["email_verified"] is True
        web.cookies.clear()
        assert (await web.get("/verified")).status_code == 401


async def test_optional_gives_none_to_anonymous_and_invalid_callers(
    options_app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(options_app) as web:
        anonymous = await web.get("/maybe")
        assert anonymous.status_code == 200 and anonymous.json() == {"reader": None}
        token = await sign_up(web, email)
        assert (await web.get("/maybe")).json() == {"reader": email}
        # Signed in but unverified: a verified-only optional dependency gives None.
        assert (await web.get("/maybe-verified")).json() == {"reader": None}
        async with AsyncClient(server.target) as direct:
            await direct.sign_out(token=token)
        revoked = await web.get("/maybe")
        assert revoked.status_code == 200 and revoked.json() == {"reader": None}
        cleared_cookie(revoked)
        assert SESSION not in web.cookies


async def test_optional_verified_gives_a_verified_reader(
    options_app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(options_app) as web:
        await sign_up(web, email)
        link = server.wait_for_link(email, VERIFY_SUBJECT)
        assert (await web.post("/auth/verify-email", json={"token": link})).status_code == 200
        assert (await web.get("/maybe-verified")).json() == {"reader": email}


async def test_active_and_a_disabled_user(
    options_app: FastAPI, server: GatehouseServer, email: str
) -> None:
    async with browser(options_app) as web:
        await sign_up(web, email)
        assert (await web.get("/active")).status_code == 200
        user_id = (await web.get("/auth/session")).json()["user"]["id"]
        async with AsyncServiceClient(server.target, api_key=SERVICE_API_KEY) as service:
            await service.disable_user(user_id)
        # Gatehouse refuses every session of a disabled user: 401, and the cookie goes.
        refused = await web.get("/active")
        assert refused.status_code == 401, refused.text
        cleared_cookie(refused)


def test_active_false_is_refused() -> None:
    gatehouse = Gatehouse("localhost:1")
    with pytest.raises(ValueError, match="active=False"):
        gatehouse.current_user(active=False)


def test_variants_are_shared_and_add_no_parameters(options_app: FastAPI) -> None:
    gatehouse: Gatehouse = options_app.state.gatehouse
    assert gatehouse.current_user() is gatehouse.current_user
    assert gatehouse.current_user(optional=True) is gatehouse.optional_user
    assert gatehouse.current_user(verified=True) is gatehouse.current_user(verified=True)
    assert gatehouse.optional_user(verified=True) is gatehouse.current_user(
        verified=True, optional=True
    )
    paths = options_app.openapi()["paths"]
    for path in ("/verified", "/maybe", "/maybe-verified", "/active", "/public"):
        assert "parameters" not in paths[path]["get"], (path, paths[path]["get"]["parameters"])


async def test_overriding_the_dependency(app: FastAPI) -> None:
    """Apps test their own routes without Gatehouse by overriding the dependency."""
    gatehouse: Gatehouse = app.state.gatehouse
    fake = CurrentUser(
        user=UserOut(
            id="u1", email="ada@example.com", name="Ada", email_verified=True,
            created_at=None, updated_at=None,
        ),
        session=SessionOut(
            id="s1", created_at=None, expires_at=None, last_active_at=None,
            ip_address="", user_agent="", current=True,
        ),
        token="gate_fake",
    )
    app.dependency_overrides[gatehouse.current_user] = lambda: fake
    async with browser(app) as web:
        me = await web.get("/me")
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
