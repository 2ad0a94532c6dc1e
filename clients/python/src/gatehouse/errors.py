"""Python exceptions for Gatehouse's gRPC status codes.

Every failed call made through :class:`gatehouse.Client` or :class:`gatehouse.AsyncClient`
raises a subclass of :class:`GatehouseError`. The mapping is one function,
:func:`error_from_status`, so it can be tested and reused without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "GatehouseError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "REAUTHENTICATION_REQUIRED",
    "ReauthenticationRequired",
    "ResourceExhausted",
    "SECOND_FACTOR_REQUIRED",
    "Unauthenticated",
    "Unavailable",
    "error_from_rpc_error",
    "error_from_status",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: The ``google.rpc.ErrorInfo`` domain of Gatehouse's own error reasons.
ERROR_DOMAIN = "gatehouse"
#: ErrorInfo reason: the session's sign-in is older than the server's step-up age.
REAUTHENTICATION_REQUIRED = "REAUTHENTICATION_REQUIRED"
#: ErrorInfo reason: the user has a second factor, but the session's sign-in did not use it.
SECOND_FACTOR_REQUIRED = "SECOND_FACTOR_REQUIRED"
_STEP_UP_REASONS = frozenset({REAUTHENTICATION_REQUIRED, SECOND_FACTOR_REQUIRED})


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request, from ``google.rpc.BadRequest``.

    ``field`` is a path such as ``email``, ``profile.role`` or ``update_mask.paths[0]``.
    """

    field: str
    description: str


class GatehouseError(Exception):
    """A Gatehouse call failed. ``code`` is the gRPC status code, ``message`` its text."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: The code a subclass stands for (used by :func:`error_from_status`).
    status_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        elif self.status_code is not None:
            self.code = self.status_code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(GatehouseError):
    """INVALID_ARGUMENT: the request was malformed; ``field_violations`` names each bad field."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field_violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)


class Unauthenticated(GatehouseError):
    """UNAUTHENTICATED: wrong credentials, or a missing, unknown, expired or revoked token."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GatehouseError):
    """PERMISSION_DENIED: the caller may not do this."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(GatehouseError):
    """NOT_FOUND: e.g. a session id that is not one of the caller's sessions."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(GatehouseError):
    """ALREADY_EXISTS: e.g. sign-up with an email that has an account."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(GatehouseError):
    """FAILED_PRECONDITION: e.g. a background profile field set without consent."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class ReauthenticationRequired(FailedPrecondition):
    """FAILED_PRECONDITION with a step-up reason: the call needs a fresher or stronger sign-in.

    ``reason`` is :data:`REAUTHENTICATION_REQUIRED` (the sign-in is older than the server's
    ``GATEHOUSE_STEP_UP_MAX_AGE``; ``max_age_seconds`` says how old it may be) or
    :data:`SECOND_FACTOR_REQUIRED` (the user has a second factor but this session's sign-in
    did not use it). Either way: ask the user to sign in again (with the second factor), then
    retry with the new session. A subclass of :class:`FailedPrecondition`, so code that
    catches that keeps working.
    """

    def __init__(
        self, message: str, *, reason: str, max_age_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.max_age_seconds = max_age_seconds

    @property
    def second_factor_required(self) -> bool:
        """Whether the new sign-in must use the second factor (not merely be recent)."""
        return self.reason == SECOND_FACTOR_REQUIRED


class ResourceExhausted(GatehouseError):
    """RESOURCE_EXHAUSTED: overloaded or rate-limited. ``retry_after`` is in seconds, if given."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(GatehouseError):
    """UNAVAILABLE: Gatehouse or its database cannot be reached; retry later."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(GatehouseError):
    """DEADLINE_EXCEEDED: the call did not finish within its deadline."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[GatehouseError]] = {
    cls.status_code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
    )
    if cls.status_code is not None
}


def _status_details(metadata: Iterable[Any] | None) -> status_pb2.Status | None:
    """Parses the ``google.rpc.Status`` carried in ``grpc-status-details-bin``, if any."""
    for item in metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def error_from_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[Any] | None = None
) -> GatehouseError:
    """Builds the exception for a gRPC status and its trailers.

    ``google.rpc.BadRequest`` details become :attr:`InvalidArgument.field_violations`,
    ``google.rpc.RetryInfo`` becomes :attr:`ResourceExhausted.retry_after`, and a
    FAILED_PRECONDITION with a ``google.rpc.ErrorInfo`` of domain ``gatehouse`` and reason
    ``REAUTHENTICATION_REQUIRED`` or ``SECOND_FACTOR_REQUIRED`` becomes
    :class:`ReauthenticationRequired`. Codes without a dedicated class give a plain
    :class:`GatehouseError` carrying the code.
    """
    status = _status_details(trailing_metadata)
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    step_up: error_details_pb2.ErrorInfo | None = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(retry_info)
                retry_after = retry_info.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN and info.reason in _STEP_UP_REASONS:
                    step_up = info

    cls = _BY_CODE.get(code)
    if cls is FailedPrecondition and step_up is not None:
        return ReauthenticationRequired(
            message,
            reason=step_up.reason,
            max_age_seconds=_int_or_none(step_up.metadata.get("max_age_seconds")),
        )
    if cls is InvalidArgument:
        return InvalidArgument(message, field_violations=violations)
    if cls is ResourceExhausted:
        return ResourceExhausted(message, retry_after=retry_after)
    if cls is not None:
        return cls(message)
    return GatehouseError(message, code=code)


def error_from_rpc_error(err: grpc.RpcError) -> GatehouseError:
    """Converts a ``grpc.RpcError`` (sync) or ``grpc.aio.AioRpcError`` into a GatehouseError."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailers_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = details_fn() if callable(details_fn) else None
    trailers = trailers_fn() if callable(trailers_fn) else None
    return error_from_status(code or grpc.StatusCode.UNKNOWN, message or "", trailers)
