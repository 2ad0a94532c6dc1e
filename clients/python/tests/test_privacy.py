"""Consent records, the data export and the privacy report: both clients, the ServiceClient
and the router's endpoints, against the real gatehouse (both backends)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import BACKENDS, BROWSER_UA, PASSWORD, start_server, unique_ip
from gatehouse_server import DEFAULT_ENV, SERVICE_API_KEY, GatehouseServer

from gatehouse import (
    AsyncClient,
    AsyncServiceClient,
    Client,
    InvalidArgument,
    NotFound,
    PrivacyReport,
    Profile,
    ProgrammingLevel,
    ServiceClient,
    Unauthenticated,
)
from gatehouse.fastapi import PrivacyReportOut

BACKGROUND = "learner_background"
EXPORT_TABLES = {
    "users",
    "profiles",
    "sessions",
    "accounts",
    "verification_tokens",
    "oauth_states",
    "consent_records",
    "audit_events",
    "revocations",
    "user_changes",
    # Second factors (their rows without the TOTP secret, code hashes or challenge tokens).
    "factors",
    "recovery_codes",
    "second_factor_challenges",
    # Passkey ceremonies in progress (registrations; their WebAuthn state, no secret).
    "passkey_ceremonies",
}
COOKIE = "gatehouse_session"


def purpose(report: PrivacyReport, name: str) -> tuple[int, int, int]:
    """(current, outdated, none) of one purpose of a report."""
    [counts] = [p for p in report.purposes if p.purpose == name]
    return counts.current, counts.outdated, counts.none


# Consent history


def test_consent_history_across_grant_and_withdrawal(server: GatehouseServer, email: str) -> None:
    ip, other_ip = unique_ip(), unique_ip()
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Consenting Reader").session_token
        empty = client.list_consent_records(token=token)
        assert list(empty.records) == [] and empty.next_page_token == ""
        version = empty.policy_version
        assert version == "1", "the server's default GATEHOUSE_CONSENT_POLICY_VERSION"
        [state] = empty.purposes
        assert state.purpose == BACKGROUND
        assert not state.granted and state.policy_version == "" and not state.outdated
        assert not state.HasField("updated_at")

        granted = client.update_consent(
            BACKGROUND, True, token=token, client_ip=ip, user_agent="consent/1"
        )
        assert granted.purpose == BACKGROUND and granted.granted
        assert granted.policy_version == version and not granted.outdated
        assert granted.HasField("updated_at")
        profile = client.get_profile(token=token)
        assert profile.consent_given and profile.consent_policy_version == version
        assert not profile.consent_outdated
        client.update_profile(
            Profile(programming_level=ProgrammingLevel.PROGRAMMING_LEVEL_ADVANCED),
            ["programming_level"],
            token=token,
        )

        withdrawn = client.update_consent(BACKGROUND, False, token=token, client_ip=other_ip)
        assert not withdrawn.granted and withdrawn.policy_version == ""
        profile = client.get_profile(token=token)
        assert not profile.consent_given and profile.consent_policy_version == ""
        assert profile.programming_level == 0, "withdrawing consent erases the background"

        # Consenting through the profile is the same purpose, recorded the same way.
        again = client.update_profile(
            Profile(consent_given=True), ["consent_given"], token=token, user_agent="profile/1"
        )
        assert again.consent_given and again.consent_policy_version == version

        page = client.list_consent_records(token=token)
        assert [r.granted for r in page.records] == [True, False, True], "newest first"
        assert all(r.purpose == BACKGROUND and r.policy_version == version for r in page.records)
        assert len({r.id for r in page.records}) == 3
        times = [r.created_at.ToDatetime() for r in page.records]
        assert times == sorted(times, reverse=True)
        newest, middle, oldest = page.records
        assert (oldest.ip_address, oldest.user_agent) == (ip, "consent/1")
        assert middle.ip_address == other_ip
        assert newest.user_agent == "profile/1"
        [state] = page.purposes
        assert state.granted and state.policy_version == version and not state.outdated
        assert state.updated_at == newest.created_at

        first = client.list_consent_records(token=token, page_size=2)
        assert len(first.records) == 2 and first.next_page_token
        rest = client.list_consent_records(
            token=token, page_size=2, page_token=first.next_page_token
        )
        assert rest.next_page_token == ""
        assert [r.id for r in [*first.records, *rest.records]] == [r.id for r in page.records]


def test_sign_up_with_consent_is_recorded(server: GatehouseServer, email: str) -> None:
    ip = unique_ip()
    with Client(server.target) as client:
        auth = client.sign_up(
            email, PASSWORD, "Reader", Profile(consent_given=True), client_ip=ip, user_agent="su/1"
        )
        page = client.list_consent_records(token=auth.session_token)
        [record] = page.records
        assert record.granted and record.purpose == BACKGROUND
        assert (record.ip_address, record.user_agent) == (ip, "su/1")


def test_update_consent_refuses_unknown_purposes_and_bad_pages(
    server: GatehouseServer, email: str
) -> None:
    with Client(server.target) as client:
        token = client.sign_up(email, PASSWORD, "Reader").session_token
        with pytest.raises(InvalidArgument) as unknown:
            client.update_consent("marketing", True, token=token)
        assert [v.field for v in unknown.value.field_violations] == ["purpose"]
        assert BACKGROUND in unknown.value.field_violations[0].description
        assert list(client.list_consent_records(token=token).records) == [], "nothing recorded"
        with pytest.raises(InvalidArgument) as size:
            client.list_consent_records(token=token, page_size=1000)
        assert [v.field for v in size.value.field_violations] == ["page_size"]
        with pytest.raises(InvalidArgument) as page:
            client.list_consent_records(token=token, page_token="not-a-token")
        assert [v.field for v in page.value.field_violations] == ["page_token"]
        with pytest.raises(Unauthenticated):
            client.update_consent(BACKGROUND, True, token="gate_" + "A" * 43)


# The export


def test_export_my_data(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client:
        auth = client.sign_up(
            email, PASSWORD, "Exported Reader", Profile(consent_given=True, role="student")
        )
        token = auth.session_token
        other = client.sign_in(email, PASSWORD)
        document = client.export_my_data(token=token, user_agent="export/1")
        assert document["format"] == "gatehouse.export.v1"
        assert document["user_id"] == auth.user.id
        exported_at = datetime.fromisoformat(document["exported_at"])
        assert abs(datetime.now(UTC) - exported_at) < timedelta(minutes=1)
        tables: dict[str, list[dict[str, Any]]] = document["tables"]
        assert set(tables) == EXPORT_TABLES
        [user] = tables["users"]
        assert user["email"] == email and user["id"] == auth.user.id
        assert [p["role"] for p in tables["profiles"]] == ["student"]
        assert {s["id"] for s in tables["sessions"]} == {auth.session.id, other.session.id}
        assert [c["granted"] for c in tables["consent_records"]] == [True]
        assert "sign_up" in {e["event"] for e in tables["audit_events"]}

        text = json.dumps(document)
        for secret in (token, other.session_token, PASSWORD):
            assert secret not in text
        assert "gate_" not in text, "no session token of any kind"
        assert "password_hash" not in text and "token_hash" not in text

        # The export is audited, so the next one shows the first.
        again = client.export_my_data(token=token)
        exports = [e for e in again["tables"]["audit_events"] if e["event"] == "data_exported"]
        assert len(exports) == 1 and exports[0]["user_agent"] == "export/1"
        with pytest.raises(Unauthenticated):
            client.export_my_data(token="gate_" + "A" * 43)


async def test_async_client_consents_and_export(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client:
        token = (await client.sign_up(email, PASSWORD, "Async Reader")).session_token
        state = await client.update_consent(BACKGROUND, True, token=token)
        assert state.granted and not state.outdated
        await client.update_consent(BACKGROUND, False, token=token)
        page = await client.list_consent_records(token=token)
        assert [r.granted for r in page.records] == [False, True]
        assert not page.purposes[0].granted
        with pytest.raises(InvalidArgument):
            await client.update_consent("no-such-purpose", True, token=token)
        document = await client.export_my_data(token=token)
        assert document["tables"]["users"][0]["email"] == email
        assert token not in json.dumps(document)


# The service client: export and report


def test_service_export_and_privacy_report(server: GatehouseServer, email: str) -> None:
    with Client(server.target) as client, ServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        before = svc.get_privacy_report()
        assert before.policy_version == "1"
        assert [p.purpose for p in before.purposes] == [BACKGROUND]

        auth = client.sign_up(email, PASSWORD, "Reported Reader", Profile(consent_given=True))
        token = auth.session_token
        client.export_my_data(token=token)
        exported = svc.export_user_data(auth.user.id)
        assert exported["user_id"] == auth.user.id
        assert set(exported["tables"]) == EXPORT_TABLES
        assert exported["tables"]["users"][0]["email"] == email
        assert token not in json.dumps(exported)
        # The user's own export shows in what the operator gets.
        events = {e["event"] for e in exported["tables"]["audit_events"]}
        assert "data_exported" in events

        granted = svc.get_privacy_report()
        current, outdated, none = purpose(granted, BACKGROUND)
        assert current >= 1
        assert granted.users == before.users + 1
        assert current == purpose(before, BACKGROUND)[0] + 1
        assert current + outdated + none == granted.users
        assert granted.self_exports == before.self_exports + 1
        assert granted.admin_exports == before.admin_exports + 1
        assert granted.deletions == before.deletions
        until = granted.until.ToDatetime(tzinfo=UTC)
        since = granted.since.ToDatetime(tzinfo=UTC)
        assert abs(datetime.now(UTC) - until) < timedelta(minutes=1)
        assert until - since == timedelta(days=30), "the default period"
        retention = granted.retention
        assert retention.personal_data.ToTimedelta() == timedelta(days=30)
        assert retention.personal_data_mode == "truncate"
        assert retention.audit_events.ToTimedelta() == timedelta(days=90)
        assert retention.feeds.ToTimedelta() == timedelta(days=7)

        client.update_consent(BACKGROUND, False, token=token)
        withdrawn = svc.get_privacy_report()
        assert purpose(withdrawn, BACKGROUND)[0] == current - 1
        assert purpose(withdrawn, BACKGROUND)[2] == none + 1

        svc.delete_user(auth.user.id)
        deleted = svc.get_privacy_report()
        assert deleted.deletions == before.deletions + 1
        assert deleted.users == before.users
        with pytest.raises(NotFound):
            svc.export_user_data(auth.user.id)

        # A period before any of it counts none of it; since after until is refused.
        now = datetime.now(UTC)
        since, until = now - timedelta(days=400), now - timedelta(days=399)
        past = svc.get_privacy_report(since=since, until=until)
        assert (past.self_exports, past.admin_exports, past.deletions) == (0, 0, 0)
        assert abs(past.since.ToDatetime(tzinfo=UTC) - since) < timedelta(milliseconds=1)
        assert abs(past.until.ToDatetime(tzinfo=UTC) - until) < timedelta(milliseconds=1)
        assert past.users == deleted.users, "consent and users are counted as of now"
        with pytest.raises(InvalidArgument) as backwards:
            svc.get_privacy_report(since=now, until=now - timedelta(days=1))
        assert backwards.value.field_violations[0].field == "since"

        out = PrivacyReportOut.from_proto(deleted).model_dump(mode="json")
        assert out["users"] == deleted.users
        assert out["purposes"][0]["purpose"] == BACKGROUND
        assert out["retention"]["personal_data_mode"] == "truncate"
        assert PrivacyReportOut.from_proto(deleted).retention.feeds == timedelta(days=7)

    with ServiceClient(server.target, api_key="wrong-key") as wrong:
        with pytest.raises(Unauthenticated):
            wrong.get_privacy_report()
        with pytest.raises(Unauthenticated):
            wrong.export_user_data(str(uuid.uuid4()))


async def test_async_service_export_and_report(server: GatehouseServer, email: str) -> None:
    async with AsyncClient(server.target) as client, AsyncServiceClient(
        server.target, api_key=SERVICE_API_KEY
    ) as svc:
        auth = await client.sign_up(email, PASSWORD, "Async Reported", Profile(consent_given=True))
        report = await svc.get_privacy_report()
        assert purpose(report, BACKGROUND)[0] >= 1 and report.users >= 1
        document = await svc.export_user_data(auth.user.id)
        assert document["tables"]["users"][0]["id"] == auth.user.id
        after = await svc.get_privacy_report(until=datetime.now(UTC) + timedelta(seconds=5))
        assert after.admin_exports == report.admin_exports + 1
        with pytest.raises(NotFound):
            await svc.export_user_data(str(uuid.uuid4()))


# A server with its own consent policy and retention, and a policy version that moves on

POLICY_ENV = {
    **DEFAULT_ENV,
    "GATEHOUSE_CONSENT_POLICY_VERSION": "2025-01",
    "GATEHOUSE_CONSENT_PURPOSES": "analytics,newsletter",
    "GATEHOUSE_PERSONAL_DATA_RETENTION": "12days",
    "GATEHOUSE_PERSONAL_DATA_REDACTION": "clear",
    "GATEHOUSE_AUDIT_RETENTION": "60days",
    "GATEHOUSE_REVOCATION_RETENTION": "3days",
}


@pytest.fixture(params=BACKENDS)
def policy_server(request: pytest.FixtureRequest) -> Iterator[GatehouseServer]:
    """A gatehouse of its own with POLICY_ENV (the test may restart it)."""
    srv = start_server(request.param, POLICY_ENV)
    yield srv
    srv.stop()


def test_configured_purposes_and_an_outdated_policy_version(
    policy_server: GatehouseServer, email: str
) -> None:
    with Client(policy_server.target) as client, ServiceClient(
        policy_server.target, api_key=SERVICE_API_KEY
    ) as svc:
        token = client.sign_up(email, PASSWORD, "Policy Reader").session_token
        page = client.list_consent_records(token=token)
        assert page.policy_version == "2025-01"
        assert [s.purpose for s in page.purposes] == [BACKGROUND, "analytics", "newsletter"]
        client.update_profile(
            Profile(consent_given=True, role="student", software_background="Python"),
            token=token,
        )
        analytics = client.update_consent("analytics", True, token=token)
        assert analytics.granted and analytics.policy_version == "2025-01"
        assert not client.update_consent("newsletter", False, token=token).granted

        report = svc.get_privacy_report()
        assert report.policy_version == "2025-01" and report.users == 1
        assert [p.purpose for p in report.purposes] == [BACKGROUND, "analytics", "newsletter"]
        assert purpose(report, BACKGROUND) == (1, 0, 0)
        assert purpose(report, "analytics") == (1, 0, 0)
        assert purpose(report, "newsletter") == (0, 0, 1)
        retention = PrivacyReportOut.from_proto(report).retention
        assert retention.personal_data == timedelta(days=12)
        assert retention.personal_data_mode == "clear"
        assert retention.audit_events == timedelta(days=60)
        assert retention.feeds == timedelta(days=3)
        json_retention = PrivacyReportOut.from_proto(report).model_dump(mode="json")["retention"]
        assert json_retention["personal_data"] == "P12D"

    policy_server.restart({"GATEHOUSE_CONSENT_POLICY_VERSION": "2025-06"})
    with Client(policy_server.target) as client, ServiceClient(
        policy_server.target, api_key=SERVICE_API_KEY
    ) as svc:
        profile = client.get_profile(token=token)
        assert profile.consent_given and profile.consent_outdated
        assert profile.consent_policy_version == "2025-01"
        assert profile.software_background == "Python", "kept, but flagged"
        page = client.list_consent_records(token=token)
        assert page.policy_version == "2025-06"
        states = {s.purpose: s for s in page.purposes}
        assert states[BACKGROUND].outdated and states[BACKGROUND].policy_version == "2025-01"
        assert states["analytics"].outdated
        assert not states["newsletter"].outdated, "a withdrawal is never outdated"
        report = svc.get_privacy_report()
        assert purpose(report, BACKGROUND) == (0, 1, 0)

        renewed = client.update_consent(BACKGROUND, True, token=token, user_agent="renew/1")
        assert renewed.granted and not renewed.outdated and renewed.policy_version == "2025-06"
        profile = client.get_profile(token=token)
        assert not profile.consent_outdated and profile.consent_policy_version == "2025-06"
        latest = client.list_consent_records(token=token).records[0]
        assert latest.policy_version == "2025-06" and latest.user_agent == "renew/1"
        assert purpose(svc.get_privacy_report(), BACKGROUND) == (1, 0, 0)
        assert purpose(svc.get_privacy_report(), "analytics") == (0, 1, 0)


# The router's endpoints


async def sign_up(web: httpx.AsyncClient, email: str, **extra: object) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": "Web Reader", **extra}
    response = await web.post("/auth/sign-up", json=body)
    assert response.status_code == 201, response.text
    return response


async def test_export_endpoint(web: httpx.AsyncClient, email: str) -> None:
    assert (await web.get("/auth/export")).status_code == 401
    user_id = (await sign_up(web, email)).json()["user"]["id"]
    token = web.cookies[COOKIE]
    response = await web.get("/auth/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert (
        response.headers["content-disposition"] == 'attachment; filename="gatehouse-export.json"'
    )
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert document["format"] == "gatehouse.export.v1" and document["user_id"] == user_id
    assert set(document["tables"]) == EXPORT_TABLES
    assert document["tables"]["users"][0]["email"] == email
    assert token not in response.text and "gate_" not in response.text
    browser_ip = web.browser_ip  # type: ignore[attr-defined]
    again = (await web.get("/auth/export")).json()
    [audited] = [e for e in again["tables"]["audit_events"] if e["event"] == "data_exported"]
    assert (audited["ip_address"], audited["user_agent"]) == (browser_ip, BROWSER_UA)


async def test_consent_endpoints(web: httpx.AsyncClient, email: str) -> None:
    assert (await web.get("/auth/consents")).status_code == 401
    await sign_up(web, email)
    empty = await web.get("/auth/consents")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "records": [],
        "purposes": [
            {
                "purpose": BACKGROUND,
                "granted": False,
                "policy_version": "",
                "outdated": False,
                "updated_at": None,
            }
        ],
        "policy_version": "1",
        "next_page_token": None,
    }

    granted = await web.post("/auth/consents", json={"purpose": BACKGROUND, "granted": True})
    assert granted.status_code == 200, granted.text
    assert granted.json()["granted"] is True and granted.json()["policy_version"] == "1"
    assert granted.json()["updated_at"]
    profile = (await web.get("/auth/profile")).json()
    assert profile["consent_given"] is True
    assert profile["consent_policy_version"] == "1" and profile["consent_outdated"] is False

    withdrawn = await web.post("/auth/consents", json={"purpose": BACKGROUND, "granted": False})
    assert withdrawn.status_code == 200 and withdrawn.json()["granted"] is False
    # PATCH /profile records consent with the browser's address as well.
    patched = await web.patch("/auth/profile", json={"consent_given": True})
    assert patched.status_code == 200 and patched.json()["consent_policy_version"] == "1"

    listed = (await web.get("/auth/consents")).json()
    assert [r["granted"] for r in listed["records"]] == [True, False, True]
    browser_ip = web.browser_ip  # type: ignore[attr-defined]
    assert {(r["ip_address"], r["user_agent"]) for r in listed["records"]} == {
        (browser_ip, BROWSER_UA)
    }
    assert listed["purposes"][0]["granted"] is True

    first = (await web.get("/auth/consents", params={"page_size": 2})).json()
    assert len(first["records"]) == 2 and first["next_page_token"]
    rest = (
        await web.get(
            "/auth/consents", params={"page_size": 2, "page_token": first["next_page_token"]}
        )
    ).json()
    assert rest["next_page_token"] is None
    assert [r["id"] for r in first["records"] + rest["records"]] == [
        r["id"] for r in listed["records"]
    ]

    unknown = await web.post("/auth/consents", json={"purpose": "marketing", "granted": True})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "purpose"]
    extra = await web.post(
        "/auth/consents", json={"purpose": BACKGROUND, "granted": True, "user": "x"}
    )
    assert extra.status_code == 422, "unknown fields are refused by the model"
    bad_page = await web.get("/auth/consents", params={"page_token": "nope"})
    assert bad_page.status_code == 422
    assert bad_page.json()["detail"][0]["loc"] == ["query", "page_token"]
    assert (await web.get("/auth/consents", params={"page_size": 101})).status_code == 422


async def test_consent_post_is_protected_against_cross_site_requests(
    web: httpx.AsyncClient, email: str
) -> None:
    await sign_up(web, email)
    body = {"purpose": BACKGROUND, "granted": True}
    for headers in (
        {"origin": "https://evil.example"},
        {"origin": "https://testserver", "sec-fetch-site": "cross-site"},
    ):
        refused = await web.post("/auth/consents", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "cross-site request refused" in refused.json()["detail"]
    web.headers.pop("origin")
    refused = await web.post("/auth/consents", json=body)
    assert refused.status_code == 403, "a cookie request without Origin or Sec-Fetch-Site"
    assert (await web.get("/auth/consents")).json()["records"] == [], "nothing was recorded"
    same_origin = {"sec-fetch-site": "same-origin"}
    accepted = await web.post("/auth/consents", json=body, headers=same_origin)
    assert accepted.status_code == 200, accepted.text
    bearer = {"authorization": f"Bearer {web.cookies[COOKIE]}", "origin": "https://evil.example"}
    web.cookies.clear()
    by_script = await web.post(
        "/auth/consents", json={"purpose": BACKGROUND, "granted": False}, headers=bearer
    )
    assert by_script.status_code == 200, "Bearer requests are not subject to the check"
    assert by_script.json()["granted"] is False
