"""JSON models of the FastAPI integration and their conversion from and to the proto messages.

Enums travel as short lower-case strings (``PROGRAMMING_LEVEL_ADVANCED`` is ``"advanced"``),
unspecified enums and unset timestamps as ``null``, durations as :class:`~datetime.timedelta`
(ISO 8601 in JSON, e.g. ``"P30D"``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ._proto.gatehouse.v1 import admin_pb2, auth_pb2, factor_pb2, profile_pb2

ProgrammingLevelName = Literal["beginner", "intermediate", "advanced"]
AiKnowledgeLevelName = Literal["none", "basic", "intermediate", "advanced"]
HardwareExperienceName = Literal["none", "basic", "robotics", "embedded_systems"]
LearningStyleName = Literal["theory", "code_first", "visual", "mixed"]

#: Profile field -> (proto enum wrapper, value-name prefix, JSON literal type).
ENUM_FIELDS: dict[str, tuple[Any, str, Any]] = {
    "programming_level": (profile_pb2.ProgrammingLevel, "PROGRAMMING_LEVEL_", ProgrammingLevelName),
    "ai_knowledge_level": (
        profile_pb2.AiKnowledgeLevel,
        "AI_KNOWLEDGE_LEVEL_",
        AiKnowledgeLevelName,
    ),
    "hardware_experience": (
        profile_pb2.HardwareExperience,
        "HARDWARE_EXPERIENCE_",
        HardwareExperienceName,
    ),
    "learning_style": (profile_pb2.LearningStyle, "LEARNING_STYLE_", LearningStyleName),
}


# The server's limits (src/domain/email.rs, password.rs, auth.rs, profile.rs; the comments of
# proto/gatehouse/v1/auth.proto and profile.proto), checked here too so that the OpenAPI
# document states them and an obviously bad form is FastAPI's 422 before Gatehouse is asked.
# Gatehouse still checks everything (the blocklist, a higher configured minimum).
MAX_EMAIL_CHARS: Final = 254
#: GATEHOUSE_PASSWORD_MIN_LENGTH's default; a server configured higher answers 422 itself.
MIN_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_CHARS: Final = 128
MAX_NAME_CHARS: Final = 200
MAX_BACKGROUND_CHARS: Final = 2000
MAX_ROLE_CHARS: Final = 100
MAX_LIST_ITEMS: Final = 20
MAX_LANGUAGE_CHARS: Final = 50
MAX_INTEREST_CHARS: Final = 100
#: A lenient shape (one @, no spaces, a dot somewhere after it): Gatehouse checks the rest.
_EMAIL_PATTERN: Final = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"

Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=MAX_EMAIL_CHARS,
        pattern=_EMAIL_PATTERN,
        json_schema_extra={"format": "email"},
        examples=["ada@example.com"],
    ),
]
NewPassword = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_CHARS,
        max_length=MAX_PASSWORD_CHARS,
        json_schema_extra={"format": "password", "writeOnly": True},
    ),
]
_Language = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LANGUAGE_CHARS)]
_Interest = Annotated[str, StringConstraints(min_length=1, max_length=MAX_INTEREST_CHARS)]


def enum_names(field: str) -> tuple[str, ...]:
    """The JSON names the model accepts for an enum profile field."""
    return tuple(get_args(ENUM_FIELDS[field][2]))


def _enum_to_json(field: str, value: int) -> Any:
    """The JSON name of an enum value (typed Any: pydantic checks it against the Literal)."""
    wrapper, prefix, _ = ENUM_FIELDS[field]
    if value == 0:
        return None
    try:
        name: str = wrapper.Name(value)
    except ValueError:  # a value newer than these stubs
        return None
    return name.removeprefix(prefix).lower()


def _enum_from_json(field: str, name: str | None) -> int:
    wrapper, prefix, _ = ENUM_FIELDS[field]
    if name is None:
        return 0
    value: int = wrapper.Value(prefix + name.upper())
    return value


def timestamp(message: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime, or None when unset."""
    if not message.HasField(field):
        return None
    ts: Timestamp = getattr(message, field)
    return ts.ToDatetime(tzinfo=UTC)


def duration(message: Message, field: str) -> timedelta:
    """A Duration field as a timedelta (zero when unset)."""
    value: Duration = getattr(message, field)
    return value.ToTimedelta()


class UserOut(BaseModel):
    """A Gatehouse user."""

    id: str
    email: str
    name: str
    image: str | None = None
    email_verified: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, user: auth_pb2.User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            image=user.image if user.HasField("image") else None,
            email_verified=user.email_verified,
            created_at=timestamp(user, "created_at"),
            updated_at=timestamp(user, "updated_at"),
        )


class SessionOut(BaseModel):
    """A session (never its token). ``aal`` is the authenticator assurance level (1: one
    factor, 2: the sign-in also used a second factor), ``amr`` how the user authenticated
    (``pwd``, ``oauth``, ``otp``, ``rec``, ``mfa``), ``auth_time`` when."""

    id: str
    created_at: datetime | None
    expires_at: datetime | None
    last_active_at: datetime | None
    ip_address: str
    user_agent: str
    current: bool
    aal: int = 1
    amr: list[str] = Field(default_factory=list)
    auth_time: datetime | None = None

    @classmethod
    def from_proto(cls, session: auth_pb2.Session) -> SessionOut:
        return cls(
            id=session.id,
            created_at=timestamp(session, "created_at"),
            expires_at=timestamp(session, "expires_at"),
            last_active_at=timestamp(session, "last_active_at"),
            ip_address=session.ip_address,
            user_agent=session.user_agent,
            current=session.current,
            # 0 from a server older than second factors: one factor.
            aal=session.aal or 1,
            amr=list(session.amr),
            auth_time=timestamp(session, "auth_time"),
        )


class SessionInfoOut(BaseModel):
    """The signed-in user and their current session."""

    user: UserOut
    session: SessionOut


def parse_options(options_json: str) -> dict[str, Any] | None:
    """WebAuthn options as Gatehouse sends them (a JSON string) parsed into an object, or None
    when empty or not a JSON object."""
    if not options_json:
        return None
    try:
        parsed = json.loads(options_json)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class SecondFactorRequiredOut(BaseModel):
    """The password was right; the sign-in needs a second factor too. ``methods``: ``totp``
    (an authenticator app code), ``passkey``, ``recovery_code``. ``passkey_options`` (with
    ``passkey`` among the methods): the ``PublicKeyCredentialRequestOptionsJSON`` to pass to
    ``navigator.credentials.get`` (or ``@simplewebauthn/browser``'s ``startAuthentication``),
    allowing the user's passkeys. ``expires_at``: when the challenge stops being accepted.
    ``challenge_token`` (for :meth:`Client.complete_second_factor`) is filled by
    :meth:`from_proto`; the router keeps it in an HttpOnly cookie instead and puts it in the
    body only with ``expose_token=True``."""

    methods: list[str]
    expires_at: datetime | None
    passkey_options: dict[str, Any] | None = None
    challenge_token: str | None = None

    @classmethod
    def from_proto(cls, challenge: auth_pb2.SecondFactorRequired) -> SecondFactorRequiredOut:
        return cls(
            methods=list(challenge.methods),
            expires_at=timestamp(challenge, "expires_at"),
            passkey_options=parse_options(challenge.passkey_options_json),
            challenge_token=challenge.challenge_token or None,
        )

    @classmethod
    def of(
        cls, result: auth_pb2.AuthResponse | auth_pb2.CompleteOAuthResponse
    ) -> SecondFactorRequiredOut | None:
        """The challenge of a SignIn or CompleteOAuth answer, or None when it signed in."""
        if not result.HasField("second_factor_required"):
            return None
        return cls.from_proto(result.second_factor_required)


class AuthOut(BaseModel):
    """Result of sign-up, sign-in and the second factor. ``session`` is null if Gatehouse
    signed nobody in: a sign-up that must verify its email first, or a sign-in that needs a
    second factor, when ``second_factor_required`` is set (and ``user`` null: nothing about
    the account before both factors). ``session_token`` (and the challenge's token) are only
    filled when the integration is configured with ``expose_token=True`` (browsers should rely
    on the cookies)."""

    user: UserOut | None
    session: SessionOut | None
    session_token: str | None = None
    second_factor_required: SecondFactorRequiredOut | None = None


class SessionsOut(BaseModel):
    """The caller's active sessions."""

    sessions: list[SessionOut]


class RevokedOut(BaseModel):
    """How many sessions were revoked."""

    revoked_count: int


class ProfileOut(BaseModel):
    """A learner profile."""

    programming_level: ProgrammingLevelName | None = None
    programming_languages: list[str] = Field(default_factory=list)
    ai_knowledge_level: AiKnowledgeLevelName | None = None
    hardware_experience: HardwareExperienceName | None = None
    learning_style: LearningStyleName | None = None
    software_background: str = ""
    hardware_background: str = ""
    role: str = ""
    interests: list[str] = Field(default_factory=list)
    onboarding_completed: bool = False
    consent_given: bool = False
    consent_updated_at: datetime | None = None
    updated_at: datetime | None = None
    #: The consent policy version the reader last consented to ("" without consent).
    consent_policy_version: str = ""
    #: Consent was given, but for an earlier policy version: ask the reader again.
    consent_outdated: bool = False

    @classmethod
    def from_proto(cls, profile: profile_pb2.Profile) -> ProfileOut:
        return cls(
            programming_level=_enum_to_json("programming_level", profile.programming_level),
            programming_languages=list(profile.programming_languages),
            ai_knowledge_level=_enum_to_json("ai_knowledge_level", profile.ai_knowledge_level),
            hardware_experience=_enum_to_json("hardware_experience", profile.hardware_experience),
            learning_style=_enum_to_json("learning_style", profile.learning_style),
            software_background=profile.software_background,
            hardware_background=profile.hardware_background,
            role=profile.role,
            interests=list(profile.interests),
            onboarding_completed=profile.onboarding_completed,
            consent_given=profile.consent_given,
            consent_updated_at=timestamp(profile, "consent_updated_at"),
            updated_at=timestamp(profile, "updated_at"),
            consent_policy_version=profile.consent_policy_version,
            consent_outdated=profile.consent_outdated,
        )


class ProfileIn(BaseModel):
    """Profile fields to set. As in a JSON merge patch, only the fields present in the body
    change; ``null`` (or an empty value) clears one. Background fields need
    ``consent_given: true``."""

    model_config = ConfigDict(extra="forbid")

    programming_level: ProgrammingLevelName | None = None
    programming_languages: list[_Language] | None = Field(None, max_length=MAX_LIST_ITEMS)
    ai_knowledge_level: AiKnowledgeLevelName | None = None
    hardware_experience: HardwareExperienceName | None = None
    learning_style: LearningStyleName | None = None
    software_background: str | None = Field(None, max_length=MAX_BACKGROUND_CHARS)
    hardware_background: str | None = Field(None, max_length=MAX_BACKGROUND_CHARS)
    role: str | None = Field(None, max_length=MAX_ROLE_CHARS)
    interests: list[_Interest] | None = Field(None, max_length=MAX_LIST_ITEMS)
    onboarding_completed: bool | None = None
    consent_given: bool | None = None

    def update_mask(self) -> list[str]:
        """The proto field paths present in the request body, in declaration order."""
        return [name for name in type(self).model_fields if name in self.model_fields_set]

    def to_proto(self) -> profile_pb2.Profile:
        """The proto Profile with the present fields set (absent and null fields empty)."""
        profile = profile_pb2.Profile()
        for name in self.update_mask():
            value = getattr(self, name)
            if value is None:
                continue
            if name in ENUM_FIELDS:
                setattr(profile, name, _enum_from_json(name, value))
            elif isinstance(value, list):
                getattr(profile, name).extend(value)
            else:
                setattr(profile, name, value)
        return profile


class SignUpIn(BaseModel):
    """Sign-up form. Lengths and the address's shape are checked here (FastAPI's 422); Gatehouse
    checks the rest (a common password, an address in use) and answers 422 or 409."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    password: NewPassword
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    profile: ProfileIn | None = None


class SignInIn(BaseModel):
    """Sign-in form."""

    model_config = ConfigDict(extra="forbid")

    email: str
    password: str


#: Longest code either field of :class:`SecondFactorIn` takes (a recovery code is 11
#: characters; spaces and dashes are allowed).
MAX_CODE_CHARS: Final = 32


#: Largest WebAuthn credential (``RegistrationResponseJSON`` or
#: ``AuthenticationResponseJSON``) passed on to Gatehouse, as JSON text: an attestation with a
#: certificate chain is a few KiB.
MAX_CREDENTIAL_JSON_CHARS: Final = 65_536


class PasskeyResponseIn(BaseModel):
    """The ``response`` member of a WebAuthn credential: base64url strings
    (``clientDataJSON`` and, for a registration, ``attestationObject``; for a sign-in,
    ``authenticatorData``, ``signature`` and ``userHandle``). Other members (``transports``,
    ``publicKey``, ...) pass through unchanged."""

    model_config = ConfigDict(extra="allow")

    clientDataJSON: str = Field(min_length=1)


class PasskeyCredentialIn(BaseModel):
    """A WebAuthn credential in its JSON serialisation: ``credential.toJSON()`` in the
    browser, or what ``@simplewebauthn/browser``'s ``startRegistration`` and
    ``startAuthentication`` return (``RegistrationResponseJSON`` /
    ``AuthenticationResponseJSON``: ``id``, ``rawId``, ``type`` ``"public-key"``,
    ``response``, ``clientExtensionResults``, ``authenticatorAttachment``). It is checked for
    this shape only and passed to Gatehouse as sent, which verifies it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=1024)
    rawId: str = Field(min_length=1, max_length=1024)
    type: Literal["public-key"]
    response: PasskeyResponseIn

    def to_json(self) -> str:
        """The credential as the JSON text Gatehouse takes: the members the browser sent,
        nothing added."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))

    @model_validator(mode="after")
    def _bounded(self) -> PasskeyCredentialIn:
        if len(self.to_json()) > MAX_CREDENTIAL_JSON_CHARS:
            raise ValueError(f"a credential is at most {MAX_CREDENTIAL_JSON_CHARS} characters")
        return self


class SecondFactorIn(BaseModel):
    """The second step of a sign-in: exactly one of ``totp_code`` (the 6 digits the
    authenticator app shows), ``recovery_code`` (``xxxxx-xxxxx``, single use) or
    ``passkey_credential`` (the browser's answer to the sign-in's ``passkey_options``, as
    ``credential.toJSON()`` or ``startAuthentication`` give it). The challenge comes from the
    cookie sign-in set; ``challenge_token`` is for clients of an integration with
    ``expose_token=True``, which got it in the sign-in body."""

    model_config = ConfigDict(extra="forbid")

    totp_code: str | None = Field(None, min_length=1, max_length=MAX_CODE_CHARS)
    recovery_code: str | None = Field(None, min_length=1, max_length=MAX_CODE_CHARS)
    passkey_credential: PasskeyCredentialIn | None = None
    challenge_token: str | None = Field(None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_proof(self) -> SecondFactorIn:
        proofs = (self.totp_code, self.recovery_code, self.passkey_credential)
        if sum(proof is not None for proof in proofs) != 1:
            raise ValueError(
                "give exactly one of totp_code, recovery_code and passkey_credential"
            )
        return self


class TotpEnrollmentIn(BaseModel):
    """A name for the authenticator app, shown in the list of factors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=100)


class TotpEnrollmentOut(BaseModel):
    """A pending authenticator app: show ``qr_code_svg`` (an SVG document) to scan, or
    ``secret`` (base32) to type in, then confirm with a code the app shows before
    ``expires_at``. The secret is shown only here."""

    factor_id: str
    secret: str
    otpauth_uri: str
    qr_code_svg: str
    expires_at: datetime | None

    @classmethod
    def from_proto(cls, started: factor_pb2.StartTotpEnrollmentResponse) -> TotpEnrollmentOut:
        return cls(
            factor_id=started.factor_id,
            secret=started.secret,
            otpauth_uri=started.otpauth_uri,
            qr_code_svg=started.qr_code_svg,
            expires_at=timestamp(started, "expires_at"),
        )


class TotpConfirmIn(BaseModel):
    """A code the pending authenticator app shows."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=MAX_CODE_CHARS)


class FactorOut(BaseModel):
    """A second factor (never its secret). ``kind``: ``totp`` or ``passkey``. For a passkey,
    ``backup_eligible`` says whether it may be synced to the user's other devices and
    ``backed_up`` whether it is (as of its last use); both are false for ``totp``."""

    id: str
    kind: str
    name: str
    created_at: datetime | None
    last_used_at: datetime | None
    backup_eligible: bool = False
    backed_up: bool = False

    @classmethod
    def from_proto(cls, factor: factor_pb2.Factor) -> FactorOut:
        return cls(
            id=factor.id,
            kind=factor.kind,
            name=factor.name,
            created_at=timestamp(factor, "created_at"),
            last_used_at=timestamp(factor, "last_used_at"),
            backup_eligible=factor.backup_eligible,
            backed_up=factor.backed_up,
        )


class FactorsOut(BaseModel):
    """The caller's active factors, oldest first, and how many recovery codes are unused."""

    factors: list[FactorOut]
    recovery_codes_remaining: int

    @classmethod
    def from_proto(cls, listed: factor_pb2.ListFactorsResponse) -> FactorsOut:
        return cls(
            factors=[FactorOut.from_proto(f) for f in listed.factors],
            recovery_codes_remaining=listed.recovery_codes_remaining,
        )


class RecoveryCodesOut(BaseModel):
    """Ten one-time recovery codes, shown once: every earlier code stopped working."""

    recovery_codes: list[str]


class TotpConfirmedOut(RecoveryCodesOut):
    """The now active authenticator app, and the user's new recovery codes (shown once)."""

    factor: FactorOut

    @classmethod
    def from_proto(cls, confirmed: factor_pb2.ConfirmTotpEnrollmentResponse) -> TotpConfirmedOut:
        return cls(
            factor=FactorOut.from_proto(confirmed.factor),
            recovery_codes=list(confirmed.recovery_codes),
        )


class PasskeyRegistrationIn(BaseModel):
    """A name for the passkey, shown in the list of factors (default "Passkey")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=100)


class PasskeyRegisteredOut(BaseModel):
    """The new passkey, and, when it is the user's first second factor, their 10 recovery
    codes (shown once; empty otherwise)."""

    factor: FactorOut
    recovery_codes: list[str]

    @classmethod
    def from_proto(
        cls, finished: factor_pb2.FinishPasskeyRegistrationResponse
    ) -> PasskeyRegisteredOut:
        return cls(
            factor=FactorOut.from_proto(finished.factor),
            recovery_codes=list(finished.recovery_codes),
        )


class ReauthenticationOut(BaseModel):
    """Why a call needs a new sign-in (the ``detail`` of a 403): ``reason`` is
    ``reauthentication_required`` (the sign-in is older than ``max_age_seconds``) or
    ``second_factor_required`` (the user has a second factor this session's sign-in did not
    use). Sign in again (with the second factor), then retry."""

    error: Literal["reauthentication_required"] = "reauthentication_required"
    reason: Literal["reauthentication_required", "second_factor_required"]
    message: str
    max_age_seconds: int | None = None


class ReauthenticationErrorOut(BaseModel):
    """A 403 asking for a new sign-in: ``{"detail": {"error": "reauthentication_required",
    "reason": ..., "message": ..., "max_age_seconds": ...}}``."""

    detail: ReauthenticationOut


class ChangePasswordIn(BaseModel):
    """Password change form."""

    model_config = ConfigDict(extra="forbid")

    current_password: str
    new_password: NewPassword
    revoke_other_sessions: bool = False


class DeleteAccountIn(BaseModel):
    """Account deletion form: the password, to confirm."""

    model_config = ConfigDict(extra="forbid")

    password: str


class VerifyEmailIn(BaseModel):
    """The ``token`` query parameter of a verification or email-change link."""

    model_config = ConfigDict(extra="forbid")

    token: str


class RequestPasswordResetIn(BaseModel):
    """Forgotten-password form."""

    model_config = ConfigDict(extra="forbid")

    email: str


class ResetPasswordIn(BaseModel):
    """Password reset form: the reset link's ``token`` and the new password."""

    model_config = ConfigDict(extra="forbid")

    token: str
    new_password: NewPassword


class RequestEmailChangeIn(BaseModel):
    """Email change form: the new address, and the current password to confirm."""

    model_config = ConfigDict(extra="forbid")

    new_email: str
    current_password: str


class AccessTokenIn(BaseModel):
    """Which service the access token is for (one of Gatehouse's configured audiences)."""

    model_config = ConfigDict(extra="forbid")

    audience: str = Field(min_length=1, max_length=256)


class AccessTokenOut(BaseModel):
    """A short-lived signed JWT for one audience; send it as ``Authorization: Bearer``."""

    access_token: str
    token_type: str
    expires_at: datetime | None


class MessageOut(BaseModel):
    """A human-readable confirmation."""

    message: str


class AuditEventOut(BaseModel):
    """One security event of the caller's history."""

    id: str
    event: str
    outcome: str
    ip_address: str
    user_agent: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, event: auth_pb2.AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            event=event.event,
            outcome=event.outcome,
            ip_address=event.ip_address,
            user_agent=event.user_agent,
            created_at=timestamp(event, "created_at"),
        )


class AuditEventsOut(BaseModel):
    """A page of security events, newest first. Pass ``next_page_token`` as ``page_token`` for
    the next page; it is null on the last page."""

    events: list[AuditEventOut]
    next_page_token: str | None = None

    @classmethod
    def from_proto(cls, page: auth_pb2.ListAuditEventsResponse) -> AuditEventsOut:
        return cls(
            events=[AuditEventOut.from_proto(e) for e in page.events],
            next_page_token=page.next_page_token or None,
        )


class ConsentRecordOut(BaseModel):
    """One recorded grant or withdrawal of consent (the address and user agent are redacted
    after Gatehouse's personal-data retention)."""

    id: str
    purpose: str
    policy_version: str
    granted: bool
    created_at: datetime | None
    ip_address: str
    user_agent: str

    @classmethod
    def from_proto(cls, record: profile_pb2.ConsentRecord) -> ConsentRecordOut:
        return cls(
            id=record.id,
            purpose=record.purpose,
            policy_version=record.policy_version,
            granted=record.granted,
            created_at=timestamp(record, "created_at"),
            ip_address=record.ip_address,
            user_agent=record.user_agent,
        )


class ConsentStateOut(BaseModel):
    """Where the caller stands for one purpose. ``policy_version`` is that of the latest grant
    ("" if never granted or withdrawn); ``outdated``: granted for an earlier policy version;
    ``updated_at`` is null if nothing was ever recorded."""

    purpose: str
    granted: bool
    policy_version: str
    outdated: bool
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, state: profile_pb2.ConsentState) -> ConsentStateOut:
        return cls(
            purpose=state.purpose,
            granted=state.granted,
            policy_version=state.policy_version,
            outdated=state.outdated,
            updated_at=timestamp(state, "updated_at"),
        )


class ConsentRecordsOut(BaseModel):
    """A page of the caller's consent history, newest first, the state of every configured
    purpose and the policy version in force. ``next_page_token`` is null on the last page."""

    records: list[ConsentRecordOut]
    purposes: list[ConsentStateOut]
    policy_version: str
    next_page_token: str | None = None

    @classmethod
    def from_proto(cls, page: profile_pb2.ListConsentRecordsResponse) -> ConsentRecordsOut:
        return cls(
            records=[ConsentRecordOut.from_proto(r) for r in page.records],
            purposes=[ConsentStateOut.from_proto(s) for s in page.purposes],
            policy_version=page.policy_version,
            next_page_token=page.next_page_token or None,
        )


class ConsentIn(BaseModel):
    """Grant (``granted: true``) or withdraw consent for one of Gatehouse's configured
    purposes, e.g. ``learner_background``."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(min_length=1, max_length=64)
    granted: bool


class PurposeConsentOut(BaseModel):
    """Consent counts for one purpose over the users that exist now: ``current`` (granted for
    the policy version in force), ``outdated`` (for an earlier one), ``none``."""

    purpose: str
    current: int
    outdated: int
    none: int

    @classmethod
    def from_proto(cls, counts: admin_pb2.PurposeConsent) -> PurposeConsentOut:
        return cls(
            purpose=counts.purpose,
            current=counts.current,
            outdated=counts.outdated,
            none=counts.none,
        )


class RetentionSettingsOut(BaseModel):
    """Gatehouse's retention settings: client addresses and user agents are redacted after
    ``personal_data`` (``personal_data_mode``: ``truncate`` or ``clear``), audit events
    deleted after ``audit_events``, feed entries after ``feeds``."""

    personal_data: timedelta
    personal_data_mode: str
    audit_events: timedelta
    feeds: timedelta

    @classmethod
    def from_proto(cls, retention: admin_pb2.RetentionSettings) -> RetentionSettingsOut:
        return cls(
            personal_data=duration(retention, "personal_data"),
            personal_data_mode=retention.personal_data_mode,
            audit_events=duration(retention, "audit_events"),
            feeds=duration(retention, "feeds"),
        )


class PrivacyReportOut(BaseModel):
    """Gatehouse's privacy report (``ServiceClient.get_privacy_report``), for an operator page:
    users and consent per purpose now; exports (by users themselves and by operators) and
    account deletions between ``since`` and ``until``; the retention settings in force."""

    policy_version: str
    users: int
    purposes: list[PurposeConsentOut]
    since: datetime | None
    until: datetime | None
    self_exports: int
    admin_exports: int
    deletions: int
    retention: RetentionSettingsOut

    @classmethod
    def from_proto(cls, report: admin_pb2.PrivacyReport) -> PrivacyReportOut:
        return cls(
            policy_version=report.policy_version,
            users=report.users,
            purposes=[PurposeConsentOut.from_proto(p) for p in report.purposes],
            since=timestamp(report, "since"),
            until=timestamp(report, "until"),
            self_exports=report.self_exports,
            admin_exports=report.admin_exports,
            deletions=report.deletions,
            retention=RetentionSettingsOut.from_proto(report.retention),
        )


_INDEX_RE = re.compile(r"^(.*)\[(\d+)\]$")


def field_location(path: str) -> list[str | int]:
    """Splits a Gatehouse field path into a FastAPI-style location: ``profile.interests[2]``
    becomes ``["profile", "interests", 2]``."""
    location: list[str | int] = []
    for part in path.split("."):
        match = _INDEX_RE.match(part)
        if match:
            location.extend([match.group(1), int(match.group(2))])
        elif part:
            location.append(part)
    return location
