"""Unit tests of the status -> exception -> HTTP mapping and the JSON models (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gatehouse import errors
from gatehouse._common import call_metadata
from gatehouse._models import ENUM_FIELDS, ProfileIn, ProfileOut, enum_names, field_location
from gatehouse._proto.gatehouse.v1 import profile_pb2
from gatehouse.fastapi import SessionCache, http_exception


def trailers(code: grpc.StatusCode, *details: object) -> list[tuple[str, bytes]]:
    status = status_pb2.Status(code=code.value[0], message="m")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return [("grpc-status-details-bin", status.SerializeToString())]


def test_resource_exhausted_carries_retry_info_and_maps_to_429() -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
    )
    err = errors.error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "busy",
        trailers(grpc.StatusCode.RESOURCE_EXHAUSTED, retry),
    )
    assert isinstance(err, errors.ResourceExhausted)
    assert err.retry_after == 2.5
    http = http_exception(err)
    assert http.status_code == 429
    assert http.headers == {"Retry-After": "3"}, "rounded up to whole seconds"

    bare = http_exception(errors.ResourceExhausted("busy"))
    assert bare.status_code == 429 and bare.headers == {"Retry-After": "1"}


def test_bad_request_details_become_field_violations_and_422() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="email", description="is not valid"),
            error_details_pb2.BadRequest.FieldViolation(
                field="profile.interests[1]", description="too long"
            ),
        ]
    )
    err = errors.error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "invalid", trailers(grpc.StatusCode.INVALID_ARGUMENT, bad)
    )
    assert isinstance(err, errors.InvalidArgument)
    assert err.field_violations == (
        errors.FieldViolation("email", "is not valid"),
        errors.FieldViolation("profile.interests[1]", "too long"),
    )
    http = http_exception(err)
    assert http.status_code == 422
    assert [d["loc"] for d in http.detail] == [
        ["body", "email"],
        ["body", "profile", "interests", 1],
    ]
    stripped = http_exception(err, strip_field_prefix="profile.")
    assert stripped.detail[1]["loc"] == ["body", "interests", 1]


@pytest.mark.parametrize(
    ("code", "cls", "http_status"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated, 401),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied, 403),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound, 404),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition, 400),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded, 504),
        (grpc.StatusCode.INTERNAL, errors.GatehouseError, 502),
        (grpc.StatusCode.UNKNOWN, errors.GatehouseError, 502),
    ],
)
def test_every_code_maps_to_its_exception_and_a_non_500_status(
    code: grpc.StatusCode, cls: type[errors.GatehouseError], http_status: int
) -> None:
    err = errors.error_from_status(code, "internal detail", [])
    assert type(err) is cls
    assert err.code is code
    http = http_exception(err)
    assert http.status_code == http_status
    if http_status >= 500:
        assert "internal detail" not in str(http.detail)


def test_garbage_status_details_are_ignored() -> None:
    err = errors.error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", [("grpc-status-details-bin", b"\xff\xff")]
    )
    assert isinstance(err, errors.InvalidArgument) and err.field_violations == ()


def test_metadata_is_sanitised() -> None:
    md = dict(call_metadata("gate_abc", "2001:db8::1", "Browser\r\nX-Evil: 1 ü" + "a" * 600))
    assert md["authorization"] == "Bearer gate_abc"
    assert md["x-forwarded-for"] == "2001:db8::1"
    assert "\r" not in md["x-forwarded-user-agent"] and "ü" not in md["x-forwarded-user-agent"]
    assert len(md["x-forwarded-user-agent"]) == 512
    assert "x-forwarded-for" not in dict(call_metadata(client_ip="testclient"))
    for bad in ("", "gate abc", "gate_\n", "gaté"):
        with pytest.raises(errors.Unauthenticated):
            call_metadata(bad, token_required=True)


def test_enum_names_match_the_proto() -> None:
    for field, (wrapper, prefix, _) in ENUM_FIELDS.items():
        proto_names = {
            name.removeprefix(prefix).lower()
            for name in wrapper.keys()
            if not name.endswith("_UNSPECIFIED")
        }
        assert set(enum_names(field)) == proto_names, field


def test_profile_patch_mask_follows_present_fields() -> None:
    patch = ProfileIn.model_validate({"role": None, "learning_style": "visual", "interests": ["a"]})
    assert patch.update_mask() == ["learning_style", "role", "interests"]
    proto = patch.to_proto()
    assert proto.learning_style == profile_pb2.LEARNING_STYLE_VISUAL
    assert proto.role == "" and list(proto.interests) == ["a"]
    out = ProfileOut.from_proto(proto)
    assert out.learning_style == "visual" and out.programming_level is None
    # Every proto input field is patchable; output-only fields are not.
    output_only = {"consent_updated_at", "updated_at", "consent_policy_version", "consent_outdated"}
    inputs = {f.name for f in profile_pb2.Profile.DESCRIPTOR.fields} - output_only
    assert set(ProfileIn.model_fields) == inputs
    assert set(ProfileOut.model_fields) == inputs | output_only
    flagged = ProfileOut.from_proto(
        profile_pb2.Profile(consent_given=True, consent_policy_version="1", consent_outdated=True)
    )
    assert flagged.consent_policy_version == "1" and flagged.consent_outdated is True
    with pytest.raises(ValueError):
        ProfileIn.model_validate({"consent_outdated": False})


def test_field_location() -> None:
    assert field_location("update_mask.paths[0]") == ["update_mask", "paths", 0]
    assert field_location("email") == ["email"]


def test_session_cache_ttl_and_eviction(monkeypatch: pytest.MonkeyPatch) -> None:
    from gatehouse._proto.gatehouse.v1 import auth_pb2

    now = [1000.0]
    monkeypatch.setattr("gatehouse.fastapi.cache.time.monotonic", lambda: now[0])
    cache = SessionCache(ttl=5, max_entries=2)
    response = auth_pb2.GetSessionResponse()
    response.user.id = "u1"
    response.session.expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    cache.put("t1", response)
    assert cache.get("t1") is response
    now[0] += 5.1
    assert cache.get("t1") is None, "expired after the TTL"
    cache.put("t1", response)
    cache.put("t2", response)
    cache.put("t3", response)
    assert len(cache) == 2 and cache.get("t1") is None, "least recently used dropped"
    cache.evict_user("u1")
    assert len(cache) == 0
    expired = auth_pb2.GetSessionResponse()
    expired.session.expires_at.FromSeconds(1)
    cache.put("t4", expired)
    assert cache.get("t4") is None, "never cached past the session's own expiry"


def test_every_rpc_has_a_facade_method_on_both_clients() -> None:
    import re

    from gatehouse import AsyncClient, AsyncServiceClient, Client, ServiceClient
    from gatehouse._proto.gatehouse.v1 import admin_pb2, auth_pb2, factor_pb2, token_pb2

    services = [
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        profile_pb2.DESCRIPTOR.services_by_name["ProfileService"],
        factor_pb2.DESCRIPTOR.services_by_name["FactorService"],
    ]
    rpcs = [m.name for s in services for m in s.methods]
    assert "GetSession" in rpcs and "UpdateProfile" in rpcs
    assert "CompleteSecondFactor" in rpcs and "StartTotpEnrollment" in rpcs
    user_token = token_pb2.DESCRIPTOR.services_by_name["TokenService"]
    rpcs += ["IssueAccessToken", "GetJwks"]
    service_rpcs = ["IntrospectToken", "WatchRevocations"] + [
        m.name for m in admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods
    ]
    assert set(rpcs + service_rpcs) >= {m.name for m in user_token.methods}
    pairs = ((rpcs, (Client, AsyncClient)), (service_rpcs, (ServiceClient, AsyncServiceClient)))
    for names, clients in pairs:
        for rpc in names:
            method = re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()
            for cls in clients:
                assert callable(getattr(cls, method, None)), f"{cls.__name__}.{method} missing"


def test_query_field_errors_and_cache_clear() -> None:
    from gatehouse._proto.gatehouse.v1 import auth_pb2

    error = errors.InvalidArgument(
        "bad",
        field_violations=[
            errors.FieldViolation("page_token", "is not a token from a previous page")
        ],
    )
    detail = http_exception(error, location="query").detail
    assert detail[0]["loc"] == ["query", "page_token"]
    assert http_exception(error).detail[0]["loc"] == ["body", "page_token"]

    cache = SessionCache(ttl=60)
    cache.put("t", auth_pb2.GetSessionResponse())
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_consent_and_privacy_report_models() -> None:
    from gatehouse._models import ConsentIn, ConsentRecordsOut, PrivacyReportOut
    from gatehouse._proto.gatehouse.v1 import admin_pb2

    page = profile_pb2.ListConsentRecordsResponse(
        records=[
            profile_pb2.ConsentRecord(
                id="r1", purpose="learner_background", policy_version="2", granted=True
            )
        ],
        purposes=[
            profile_pb2.ConsentState(purpose="learner_background", granted=True, outdated=True),
            profile_pb2.ConsentState(purpose="analytics"),
        ],
        policy_version="3",
    )
    page.records[0].created_at.FromSeconds(1_700_000_000)
    out = ConsentRecordsOut.from_proto(page).model_dump(mode="json")
    assert out["next_page_token"] is None and out["policy_version"] == "3"
    assert out["records"][0]["created_at"].startswith("2023-11-14T22:13:20")
    assert out["records"][0]["ip_address"] == ""
    assert [(s["purpose"], s["outdated"], s["updated_at"]) for s in out["purposes"]] == [
        ("learner_background", True, None),
        ("analytics", False, None),
    ]
    with pytest.raises(ValueError):
        ConsentIn.model_validate({"purpose": "", "granted": True})
    with pytest.raises(ValueError):
        ConsentIn.model_validate({"purpose": "analytics"})

    report = admin_pb2.PrivacyReport(
        policy_version="3",
        users=5,
        purposes=[admin_pb2.PurposeConsent(purpose="analytics", current=2, outdated=1, none=2)],
        self_exports=4,
        retention=admin_pb2.RetentionSettings(
            personal_data=duration_pb2.Duration(seconds=30 * 86400),
            personal_data_mode="truncate",
            audit_events=duration_pb2.Duration(seconds=90 * 86400),
        ),
    )
    model = PrivacyReportOut.from_proto(report)
    assert model.retention.personal_data == timedelta(days=30)
    assert model.retention.feeds == timedelta(0), "unset is zero"
    assert model.since is None and model.purposes[0].none == 2
    dumped = model.model_dump(mode="json")
    assert dumped["retention"]["audit_events"] == "P90D"
    assert dumped["self_exports"] == 4 and dumped["admin_exports"] == 0


def test_step_up_error_info_becomes_reauthentication_required_and_403() -> None:
    code = grpc.StatusCode.FAILED_PRECONDITION
    too_old = error_details_pb2.ErrorInfo(
        domain="gatehouse",
        reason="REAUTHENTICATION_REQUIRED",
        metadata={"max_age_seconds": "900"},
    )
    err = errors.error_from_status(code, "sign in again", trailers(code, too_old))
    assert isinstance(err, errors.ReauthenticationRequired)
    assert isinstance(err, errors.FailedPrecondition), "code catching the base keeps working"
    assert err.code is code
    assert err.reason == errors.REAUTHENTICATION_REQUIRED and err.max_age_seconds == 900
    assert not err.second_factor_required
    http = http_exception(err)
    assert http.status_code == 403
    assert http.detail == {
        "error": "reauthentication_required",
        "reason": "reauthentication_required",
        "message": "sign in again",
        "max_age_seconds": 900,
    }

    weak = error_details_pb2.ErrorInfo(domain="gatehouse", reason="SECOND_FACTOR_REQUIRED")
    err = errors.error_from_status(code, "use your second factor", trailers(code, weak))
    assert isinstance(err, errors.ReauthenticationRequired)
    assert err.second_factor_required and err.max_age_seconds is None
    detail = http_exception(err).detail
    assert detail["reason"] == "second_factor_required" and detail["max_age_seconds"] is None

    # Another domain or reason, or the reason on another code, is no step-up.
    for info, status in [
        (error_details_pb2.ErrorInfo(domain="example.com", reason="SECOND_FACTOR_REQUIRED"), code),
        (error_details_pb2.ErrorInfo(domain="gatehouse", reason="SOMETHING_ELSE"), code),
        (weak, grpc.StatusCode.PERMISSION_DENIED),
    ]:
        plain = errors.error_from_status(status, "m", trailers(status, info))
        assert not isinstance(plain, errors.ReauthenticationRequired), (info, status)
    assert http_exception(errors.FailedPrecondition("m")).status_code == 400


def test_second_factor_models() -> None:
    from pydantic import ValidationError

    from gatehouse._models import SecondFactorIn, SecondFactorRequiredOut, SessionOut
    from gatehouse._proto.gatehouse.v1 import auth_pb2

    session = auth_pb2.Session(id="s", aal=2, amr=["pwd", "otp", "mfa"])
    session.auth_time.FromSeconds(1_700_000_000)
    out = SessionOut.from_proto(session)
    assert (out.aal, out.amr) == (2, ["pwd", "otp", "mfa"])
    assert out.auth_time == datetime.fromtimestamp(1_700_000_000, UTC)
    old = SessionOut.from_proto(auth_pb2.Session(id="s"))
    assert (old.aal, old.amr, old.auth_time) == (1, [], None), "a server without factors: aal 1"

    signed_in = auth_pb2.AuthResponse(session=session, session_token="gate_x")
    assert SecondFactorRequiredOut.of(signed_in) is None
    challenged = auth_pb2.AuthResponse(
        second_factor_required=auth_pb2.SecondFactorRequired(
            challenge_token="chal", methods=["totp", "recovery_code"]
        )
    )
    challenge = SecondFactorRequiredOut.of(challenged)
    assert challenge is not None
    assert challenge.challenge_token == "chal"
    assert challenge.methods == ["totp", "recovery_code"] and challenge.expires_at is None

    assert SecondFactorIn(totp_code="123456").recovery_code is None
    assert SecondFactorIn(recovery_code="abcde-fghij").totp_code is None
    for bad in [{}, {"totp_code": "123456", "recovery_code": "abcde-fghij"}, {"code": "1"}]:
        with pytest.raises(ValidationError):
            SecondFactorIn.model_validate(bad)


def test_complete_second_factor_takes_exactly_one_proof() -> None:
    from gatehouse import _requests

    assert _requests.complete_second_factor("c", "123456", None).WhichOneof("proof") == "totp_code"
    request = _requests.complete_second_factor("c", None, "abcde-fghij")
    assert request.WhichOneof("proof") == "recovery_code" and request.challenge_token == "c"
    for totp, recovery in [(None, None), ("123456", "abcde-fghij")]:
        with pytest.raises(ValueError, match="exactly one"):
            _requests.complete_second_factor("c", totp, recovery)
