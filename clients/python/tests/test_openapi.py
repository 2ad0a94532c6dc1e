"""The OpenAPI document of the FastAPI integration: security schemes (the session cookie and
Bearer) so that /docs has the Authorize button, the error answers of every router route, and
the sign-up form's constraints (which FastAPI enforces before Gatehouse is asked)."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' local aliases.

from types import ModuleType
from typing import Annotated, Any

import pytest
from conftest import PASSWORD, browser
from fastapi import Depends, FastAPI
from gatehouse_server import GatehouseServer, free_port

from gatehouse import AsyncClient
from gatehouse.fastapi import CurrentUser, ErrorOut, Gatehouse, error_responses

COOKIE = "GatehouseSessionCookie"
BEARER = "GatehouseBearer"
SECURITY = [{COOKIE: []}, {BEARER: []}]


@pytest.fixture(scope="module")
def document(example: ModuleType) -> dict[str, Any]:
    app = example.create_app("127.0.0.1:1", cookie_secure=True)
    return app.openapi()


def _op(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][path][method]
    return op


def test_security_schemes_are_the_cookie_and_bearer(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes[COOKIE]["type"] == "apiKey"
    assert schemes[COOKIE]["in"] == "cookie"
    assert schemes[COOKIE]["name"] == "gatehouse_session"
    assert schemes[BEARER]["type"] == "http"
    assert schemes[BEARER]["scheme"] == "bearer"


def test_cookie_scheme_takes_the_configured_cookie_name() -> None:
    gatehouse = Gatehouse("127.0.0.1:1", cookie_name="book_sid", cookie_host_prefix=True)
    app = FastAPI()
    app.include_router(gatehouse.router(), prefix="/auth")
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes[COOKIE] == {**schemes[COOKIE], "in": "cookie", "name": "__Host-book_sid"}


def test_protected_routes_carry_security_and_public_ones_do_not(
    document: dict[str, Any],
) -> None:
    for method, path in [
        ("get", "/auth/session"),
        ("get", "/auth/sessions"),
        ("post", "/auth/change-password"),
        ("patch", "/auth/profile"),
        ("post", "/auth/access-token"),
        ("get", "/api/v1/me"),  # the example's own route on current_user
        ("post", "/auth/sign-out"),
    ]:
        assert _op(document, method, path).get("security") == SECURITY, (method, path)
    for method, path in [
        ("post", "/auth/sign-up"),
        ("post", "/auth/sign-in"),
        ("post", "/auth/request-password-reset"),
    ]:
        assert "security" not in _op(document, method, path), (method, path)


def test_router_routes_document_their_errors(document: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorOut"}
    expected = {
        ("post", "/auth/sign-up"): {"403", "409", "422", "429", "503"},
        ("post", "/auth/sign-in"): {"401", "403", "422", "429", "503"},
        ("get", "/auth/session"): {"401", "503"},
        ("delete", "/auth/sessions/{session_id}"): {"401", "403", "404", "422", "503"},
        ("post", "/auth/send-verification"): {"400", "401", "403", "429", "503"},
        ("post", "/auth/request-email-change"): {"401", "403", "409", "422", "429", "503"},
        ("get", "/auth/oauth/{provider}/callback"): {"400", "401", "404", "422", "503"},
    }
    for (method, path), codes in expected.items():
        responses = _op(document, method, path)["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        for code in codes - {"422"}:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == error, (method, path, code)
            assert responses[code]["description"]
        if "422" in codes:  # FastAPI's own, the shape of Gatehouse's field errors too
            schema = responses["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/HTTPValidationError"}
    assert document["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    assert ErrorOut(detail="x").model_dump() == {"detail": "x"}
    assert set(error_responses(401, 503)) == {401, 503}


def test_sign_up_form_constraints(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    form = schemas["SignUpIn"]["properties"]
    assert form["email"]["maxLength"] == 254
    assert form["email"]["format"] == "email"
    assert "pattern" in form["email"]
    assert (form["password"]["minLength"], form["password"]["maxLength"]) == (8, 128)
    assert (form["name"]["minLength"], form["name"]["maxLength"]) == (1, 200)
    profile = schemas["ProfileIn"]["properties"]
    level = profile["programming_level"]["anyOf"][0]
    assert level["type"] == "string"
    assert level["enum"] == ["beginner", "intermediate", "advanced"]
    assert profile["learning_style"]["anyOf"][0]["enum"] == [
        "theory",
        "code_first",
        "visual",
        "mixed",
    ]
    languages = profile["programming_languages"]["anyOf"][0]
    assert languages["maxItems"] == 20
    assert languages["items"]["maxLength"] == 50
    assert profile["interests"]["anyOf"][0]["items"]["maxLength"] == 100
    assert profile["role"]["anyOf"][0]["maxLength"] == 100
    assert profile["software_background"]["anyOf"][0]["maxLength"] == 2000


async def test_constraints_refuse_before_gatehouse_is_asked() -> None:
    """Nothing listens on the target: a 503 would mean Gatehouse was asked."""
    gatehouse = Gatehouse(AsyncClient(f"127.0.0.1:{free_port()}", timeout=2.0))
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    async with browser(app) as web:
        cases = [
            ({"email": "ada@example.com", "password": "x" * 129, "name": "Ada"}, "password"),
            ({"email": "ada@example.com", "password": "short", "name": "Ada"}, "password"),
            ({"email": "not-an-address", "password": PASSWORD, "name": "Ada"}, "email"),
            ({"email": "ada@example.com", "password": PASSWORD, "name": "A" * 201}, "name"),
        ]
        for body, field in cases:
            answer = await web.post("/auth/sign-up", json=body)
            assert answer.status_code == 422, answer.text
            assert [e["loc"] for e in answer.json()["detail"]] == [["body", field]]
        profile = {"interests": ["ai"] * 21, "learning_style": "by_osmosis"}
        answer = await web.post(
            "/auth/sign-up",
            json={"email": "ada@example.com", "password": PASSWORD, "name": "A", "profile": profile},
        )
        assert answer.status_code == 422
        locs = sorted(tuple(e["loc"]) for e in answer.json()["detail"])
        assert locs == [
            ("body", "profile", "interests"),
            ("body", "profile", "learning_style"),
        ]
        # The same app does ask Gatehouse for a valid form: it is down, so 503.
        answer = await web.post(
            "/auth/sign-up", json={"email": "ada@example.com", "password": PASSWORD, "name": "A"}
        )
        assert answer.status_code == 503
    await gatehouse.client.close()


async def test_valid_sign_up_passes_the_constraints(
    server: GatehouseServer, email: str
) -> None:
    gatehouse = Gatehouse(AsyncClient(server.target))
    app = FastAPI()
    gatehouse.install(app)
    app.include_router(gatehouse.router(), prefix="/auth")
    User = Annotated[CurrentUser, Depends(gatehouse.current_user)]

    @app.get("/me")
    async def me(user: User) -> dict[str, str]:
        return {"email": user.user.email}

    async with browser(app) as web:
        body = {
            "email": f"  {email.upper()}  ",
            "password": PASSWORD,
            "name": "Ada",
            "profile": {"consent_given": True, "interests": ["robotics"] * 20},
        }
        answer = await web.post("/auth/sign-up", json=body)
        assert answer.status_code == 201, answer.text
        assert (await web.get("/me")).json() == {"email": email}
        # The security sub-dependencies never refuse on their own: Bearer works too,
        # and no credentials at all is the integration's 401, not the scheme's 403.
        assert (await web.get("/me", headers={"authorization": "Basic eDp5"})).status_code == 200
        web.cookies.clear()
        anonymous = await web.get("/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
    await gatehouse.client.close()
