"""Python client for Gatehouse, the gRPC identity service.

``Client`` (sync) and ``AsyncClient`` (asyncio) wrap the generated stubs; errors are
:mod:`gatehouse.errors` exceptions; the FastAPI integration is :mod:`gatehouse.fastapi`
(install the ``fastapi`` extra).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._common import DEFAULT_TIMEOUT, RetryPolicy, TlsConfig
from ._proto.gatehouse.v1.auth_pb2 import (
    AuditEvent,
    AuthResponse,
    GetSessionResponse,
    ListAuditEventsResponse,
    SecondFactorRequired,
    Session,
    StartPasskeySignInResponse,
    User,
)
from ._proto.gatehouse.v1.factor_pb2 import (
    ConfirmTotpEnrollmentResponse,
    Factor,
    FinishPasskeyRegistrationResponse,
    ListFactorsResponse,
    StartPasskeyRegistrationResponse,
    StartTotpEnrollmentResponse,
)
from ._proto.gatehouse.v1.profile_pb2 import (
    AiKnowledgeLevel,
    ConsentRecord,
    ConsentState,
    HardwareExperience,
    LearningStyle,
    ListConsentRecordsResponse,
    Profile,
    ProgrammingLevel,
)
from ._proto.gatehouse.v1.admin_pb2 import AdminUser, ListUsersResponse, PrivacyReport
from ._proto.gatehouse.v1.token_pb2 import (
    IntrospectTokenResponse,
    IssueAccessTokenResponse,
    RevocationEvent,
)
from .client import AsyncClient, Client
from .service import AsyncRevocationWatch, AsyncServiceClient, RevocationWatch, ServiceClient
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GatehouseError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ReauthenticationRequired,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AdminUser",
    "AsyncRevocationWatch",
    "AsyncServiceClient",
    "IntrospectTokenResponse",
    "IssueAccessTokenResponse",
    "ListUsersResponse",
    "PrivacyReport",
    "RevocationEvent",
    "RevocationWatch",
    "ServiceClient",
    "AiKnowledgeLevel",
    "AlreadyExists",
    "AsyncClient",
    "AuditEvent",
    "AuthResponse",
    "Client",
    "ConsentRecord",
    "ConfirmTotpEnrollmentResponse",
    "ConsentState",
    "DeadlineExceeded",
    "Factor",
    "FailedPrecondition",
    "FieldViolation",
    "FinishPasskeyRegistrationResponse",
    "GatehouseError",
    "GetSessionResponse",
    "HardwareExperience",
    "InvalidArgument",
    "LearningStyle",
    "ListAuditEventsResponse",
    "ListConsentRecordsResponse",
    "ListFactorsResponse",
    "NotFound",
    "PermissionDenied",
    "Profile",
    "ProgrammingLevel",
    "ReauthenticationRequired",
    "ResourceExhausted",
    "RetryPolicy",
    "SecondFactorRequired",
    "Session",
    "StartPasskeyRegistrationResponse",
    "StartPasskeySignInResponse",
    "StartTotpEnrollmentResponse",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "User",
    "__version__",
]
