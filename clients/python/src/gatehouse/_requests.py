"""Builders of the request messages, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf import field_mask_pb2

from ._proto.gatehouse.v1 import admin_pb2, auth_pb2, profile_pb2


def sign_up(
    email: str, password: str, name: str, profile: profile_pb2.Profile | None
) -> auth_pb2.SignUpRequest:
    """A SignUpRequest; the profile is included only when given."""
    request = auth_pb2.SignUpRequest(email=email, password=password, name=name)
    if profile is not None:
        request.profile.CopyFrom(profile)
    return request


def update_profile(
    profile: profile_pb2.Profile, update_mask: Iterable[str] | None
) -> profile_pb2.UpdateProfileRequest:
    """An UpdateProfileRequest. ``update_mask=None`` sends no mask (every non-empty field changes)."""
    request = profile_pb2.UpdateProfileRequest(profile=profile)
    if update_mask is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
    return request


def privacy_report(
    since: datetime | None, until: datetime | None
) -> admin_pb2.GetPrivacyReportRequest:
    """A GetPrivacyReportRequest; an unset bound is the server's default, a naive datetime UTC."""
    request = admin_pb2.GetPrivacyReportRequest()
    for field, value in (("since", since), ("until", until)):
        if value is not None:
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            getattr(request, field).FromDatetime(aware)
    return request


def complete_second_factor(
    challenge_token: str,
    totp_code: str | None,
    recovery_code: str | None,
    passkey_credential_json: str | None = None,
) -> auth_pb2.CompleteSecondFactorRequest:
    """A CompleteSecondFactorRequest with exactly one proof (else ValueError, before any call)."""
    proofs = {
        "totp_code": totp_code,
        "recovery_code": recovery_code,
        "passkey_credential_json": passkey_credential_json,
    }
    given = {name: value for name, value in proofs.items() if value is not None}
    if len(given) != 1:
        raise ValueError(
            "give exactly one of totp_code, recovery_code and passkey_credential_json"
        )
    return auth_pb2.CompleteSecondFactorRequest(challenge_token=challenge_token, **given)
