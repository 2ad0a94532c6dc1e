"""Email verification, password reset, email change and the audit log through the example
app, driven as a browser would, against the real gatehouse (both backends). Links are read
from the server's outbox, as a developer without a mail server would."""

from __future__ import annotations

import uuid
from datetime import datetime
from types import ModuleType

import httpx
from conftest import BROWSER_UA, PASSWORD, browser
from gatehouse_server import GatehouseServer

COOKIE = "gatehouse_session"
NEW_PASSWORD = "a brand new passphrase"
CONFIRM = "Confirm your email address"
RESET = "Reset your password"


async def sign_up(web: httpx.AsyncClient, email: str) -> None:
    body = {"email": email, "password": PASSWORD, "name": "Ada Reader"}
    response = await web.post("/auth/sign-up", json=body)
    assert response.status_code == 201, response.text


def field_errors(response: httpx.Response) -> dict[tuple[str | int, ...], str]:
    assert response.status_code == 422, response.text
    return {tuple(d["loc"]): d["msg"] for d in response.json()["detail"]}


async def test_email_verification(
    web: httpx.AsyncClient, server: GatehouseServer, example: ModuleType, email: str
) -> None:
    await sign_up(web, email)
    assert (await web.get("/auth/session")).json()["user"]["email_verified"] is False
    first = server.wait_for_link(email, CONFIRM)  # SignUp sends the first link

    resent = await web.post("/auth/send-verification")
    assert resent.status_code == 202, resent.text
    second = server.wait_for_link(email, CONFIRM, count=2)
    assert second != first

    # The newer link supersedes the older one.
    stale = await web.post("/auth/verify-email", json={"token": first})
    assert ("body", "token") in field_errors(stale)

    # The link is opened in another browser, with no session: that is fine.
    app = example.create_app(server.target)
    async with browser(app) as other:
        verified = await other.post("/auth/verify-email", json={"token": second})
        assert verified.status_code == 200, verified.text
        again = await other.post("/auth/verify-email", json={"token": second})
        assert ("body", "token") in field_errors(again), "a link works once"
    await app.state.gatehouse.client.close()

    assert (await web.get("/auth/session")).json()["user"]["email_verified"] is True
    already = await web.post("/auth/send-verification")
    assert already.status_code == 400, already.text

    web.cookies.clear()
    assert (await web.post("/auth/send-verification")).status_code == 401
    bogus = await web.post("/auth/verify-email", json={"token": "gatelink_" + "A" * 43})
    assert ("body", "token") in field_errors(bogus)


async def test_password_reset_ends_sessions_and_the_new_password_works(
    web: httpx.AsyncClient, server: GatehouseServer, example: ModuleType, email: str
) -> None:
    await sign_up(web, email)
    old_token = web.cookies[COOKIE]

    app = example.create_app(server.target)
    async with browser(app) as anonymous:
        requested = await anonymous.post("/auth/request-password-reset", json={"email": email})
        unknown = await anonymous.post(
            "/auth/request-password-reset", json={"email": f"nobody-{uuid.uuid4().hex}@example.com"}
        )
        assert requested.status_code == unknown.status_code == 202
        assert requested.json() == unknown.json(), "the answer never tells who has an account"
        malformed = await anonymous.post("/auth/request-password-reset", json={"email": "nope"})
        assert ("body", "email") in field_errors(malformed)
    await app.state.gatehouse.client.close()

    link = server.wait_for_link(email, RESET)
    weak = await web.post("/auth/reset-password", json={"token": link, "new_password": "short"})
    assert ("body", "new_password") in field_errors(weak)
    assert (await web.get("/auth/session")).status_code == 200, "a refused reset changes nothing"

    # The signed-in browser follows the link: its own session ends with all the others.
    reset = await web.post(
        "/auth/reset-password", json={"token": link, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text
    assert COOKIE not in web.cookies, "the dead session's cookie is cleared"
    stale = await web.get("/auth/session", headers={"authorization": f"Bearer {old_token}"})
    assert stale.status_code == 401

    reused = await web.post(
        "/auth/reset-password", json={"token": link, "new_password": "yet another new passphrase"}
    )
    assert ("body", "token") in field_errors(reused)
    old = await web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await web.post("/auth/sign-in", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200, new.text
    assert (await web.get("/auth/session")).json()["user"]["email"] == email
    text, _ = server.wait_for_mail(email, "Your password was changed")
    assert "gatelink_" not in text


async def test_email_change(web: httpx.AsyncClient, server: GatehouseServer, email: str) -> None:
    await sign_up(web, email)
    new_email = f"moved-{uuid.uuid4().hex[:12]}@example.com"

    wrong = await web.post(
        "/auth/request-email-change",
        json={"new_email": new_email, "current_password": "not my password at all"},
    )
    assert ("body", "current_password") in field_errors(wrong)
    same = await web.post(
        "/auth/request-email-change", json={"new_email": email, "current_password": PASSWORD}
    )
    assert ("body", "new_email") in field_errors(same)

    requested = await web.post(
        "/auth/request-email-change", json={"new_email": new_email, "current_password": PASSWORD}
    )
    assert requested.status_code == 202, requested.text
    server.wait_for_mail(email, "Your email address is being changed")
    link = server.wait_for_link(new_email, "Confirm your new email address")
    assert (await web.get("/auth/session")).json()["user"]["email"] == email, "not before the link"

    changed = await web.post("/auth/verify-email", json={"token": link})
    assert changed.status_code == 200, changed.text
    user = (await web.get("/auth/session")).json()["user"]
    assert user["email"] == new_email
    assert user["email_verified"] is True

    web.cookies.clear()
    assert (
        await web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    ).status_code == 401
    assert (
        await web.post("/auth/sign-in", json={"email": new_email, "password": PASSWORD})
    ).status_code == 200


async def test_audit_events_are_listed_newest_first_in_pages(
    web: httpx.AsyncClient, email: str
) -> None:
    await sign_up(web, email)
    assert (
        await web.post("/auth/sign-in", json={"email": email, "password": "wrong password!"})
    ).status_code == 401
    assert (
        await web.post("/auth/sign-in", json={"email": email, "password": PASSWORD})
    ).status_code == 200
    changed = await web.post(
        "/auth/change-password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text

    events: list[dict[str, object]] = []
    page_token: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"page_size": 2}
        if page_token:
            params["page_token"] = page_token
        response = await web.get("/auth/audit-events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["events"]) <= 2
        events += page["events"]
        pages += 1
        page_token = page["next_page_token"]
        if page_token is None:
            break
        assert pages < 20
    assert pages >= 2
    assert len({e["id"] for e in events}) == len(events), "pages do not overlap"

    times = [datetime.fromisoformat(str(e["created_at"])) for e in events]
    assert times == sorted(times, reverse=True), "newest first"
    kinds = [(e["event"], e["outcome"]) for e in events]
    assert kinds[0] == ("password_changed", "success")
    assert ("sign_in", "success") in kinds and ("sign_up", "success") in kinds
    assert ("sign_in", "failure") in kinds
    # The browser's address and user agent, forwarded by the app, are what was recorded.
    for event in events:
        assert event["ip_address"] == web.browser_ip, event  # type: ignore[attr-defined]
        assert event["user_agent"] == BROWSER_UA, event

    default = (await web.get("/auth/audit-events")).json()
    assert [e["id"] for e in default["events"]] == [e["id"] for e in events]
    assert default["next_page_token"] is None

    for bad in ({"page_size": 0}, {"page_size": 101}):
        assert (await web.get("/auth/audit-events", params=bad)).status_code == 422
    garbage = await web.get("/auth/audit-events", params={"page_token": "garbage"})
    assert ("query", "page_token") in field_errors(garbage)

    web.cookies.clear()
    assert (await web.get("/auth/audit-events")).status_code == 401
