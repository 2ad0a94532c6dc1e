"""Gatehouse errors as HTTP answers: the status mapping and the exception handler."""

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from fastapi import HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..errors import (
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
from .._models import ReauthenticationErrorOut, ReauthenticationOut, field_location

__all__ = [
    "ErrorOut",
    "error_responses",
    "gatehouse_exception_handler",
    "http_exception",
    "reauthentication_responses",
]


class ErrorOut(BaseModel):
    """An error answer, in FastAPI's own shape: ``{"detail": "..."}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "not signed in"}]})

    detail: str


#: What each error status means on the integration's routes (the OpenAPI descriptions).
ERROR_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "The request cannot be applied as sent (Gatehouse's FAILED_PRECONDITION)",
    401: "Not signed in, or the session was refused (expired, revoked); "
    "`WWW-Authenticate: Bearer`",
    403: "Refused: a cross-site request, a permission Gatehouse denies, an unverified "
    "address where one is required, or a sign-in too old or without the second factor "
    '(`{"detail": {"error": "reauthentication_required", "reason": ...}}`)',
    404: "Not found",
    409: "Already exists (e.g. an account uses this address)",
    429: "Too many attempts; wait `Retry-After` seconds",
    503: "Gatehouse is unavailable; retry after `Retry-After` seconds",
    504: "Gatehouse did not answer in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses, each with :class:`ErrorOut`, for a
    route's ``responses=``: ``@app.get("/me", responses=error_responses(401, 503))``. (422
    keeps FastAPI's own ``HTTPValidationError``, the shape Gatehouse's field errors take.)"""
    return {
        code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS.get(code, "Error")}
        for code in codes
    }


def reauthentication_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """:func:`error_responses` for a route that may ask for a new sign-in: its 403 is
    documented with :class:`ReauthenticationErrorOut` (a cross-site refusal is still
    ``{"detail": "..."}``)."""
    responses = error_responses(*codes)
    responses[403] = {
        "model": ReauthenticationErrorOut,
        "description": "A new sign-in is needed (`reason`: `reauthentication_required`, the "
        "sign-in is too old; `second_factor_required`, it did not use the second factor); "
        'or a cross-site request (`{"detail": "cross-site request refused: ..."}`)',
    }
    return responses


#: ``ReauthenticationRequired.reason`` -> the ``reason`` of the HTTP answer.
_STEP_UP_REASONS: Final[Mapping[str, str]] = {
    "REAUTHENTICATION_REQUIRED": "reauthentication_required",
    "SECOND_FACTOR_REQUIRED": "second_factor_required",
}

_STATUS_BY_ERROR: Final[tuple[tuple[type[GatehouseError], int], ...]] = (
    # Before FailedPrecondition, its base class: 403 (the caller must sign in again), not 400.
    (ReauthenticationRequired, status.HTTP_403_FORBIDDEN),
    (Unauthenticated, status.HTTP_401_UNAUTHORIZED),
    (PermissionDenied, status.HTTP_403_FORBIDDEN),
    (NotFound, status.HTTP_404_NOT_FOUND),
    (InvalidArgument, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (AlreadyExists, status.HTTP_409_CONFLICT),
    (FailedPrecondition, status.HTTP_400_BAD_REQUEST),
    (ResourceExhausted, status.HTTP_429_TOO_MANY_REQUESTS),
    (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (DeadlineExceeded, status.HTTP_504_GATEWAY_TIMEOUT),
)


def _violation_detail(
    violation: FieldViolation, strip_prefix: str, location: str, locations: Mapping[str, str]
) -> dict[str, Any]:
    field = violation.field.removeprefix(strip_prefix)
    path = field_location(field)
    return {
        "loc": [locations.get(str(path[0]), location) if path else location, *path],
        "msg": violation.description,
        "type": "gatehouse.invalid_argument",
    }


def http_exception(
    exc: GatehouseError,
    *,
    strip_field_prefix: str = "",
    location: str = "body",
    locations: Mapping[str, str] | None = None,
) -> HTTPException:
    """The HTTPException a Gatehouse error becomes (see :mod:`gatehouse.fastapi` for the table).

    ``strip_field_prefix`` removes a proto prefix from field violation paths when the HTTP body
    is shaped differently (the profile update body is the profile itself, so ``profile.``).
    ``location`` is the first element of each field error's ``loc`` (``"query"`` for fields
    sent as query parameters); ``locations`` overrides it per top-level field
    (``{"provider": "path"}`` for a path parameter).
    Messages of 5xx answers are generic; 4xx answers carry Gatehouse's message, which never
    contains secrets or internal details.
    """
    code = next(
        (http for cls, http in _STATUS_BY_ERROR if isinstance(exc, cls)),
        status.HTTP_502_BAD_GATEWAY,
    )
    headers: dict[str, str] = {}
    detail: Any = exc.message
    if isinstance(exc, ReauthenticationRequired):
        detail = ReauthenticationOut.model_validate(
            {
                "reason": _STEP_UP_REASONS.get(exc.reason, "reauthentication_required"),
                "message": exc.message,
                "max_age_seconds": exc.max_age_seconds,
            }
        ).model_dump(mode="json")
    elif isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, InvalidArgument):
        detail = [
            _violation_detail(v, strip_field_prefix, location, locations or {})
            for v in exc.field_violations
        ] or [{"loc": [location], "msg": exc.message, "type": "gatehouse.invalid_argument"}]
    elif isinstance(exc, ResourceExhausted):
        retry = exc.retry_after if exc.retry_after is not None else 1.0
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = "1"
        detail = "authentication service unavailable"
    elif code >= 500:
        detail = "authentication service error"
    return HTTPException(status_code=code, detail=detail, headers=headers or None)


async def gatehouse_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler for :class:`GatehouseError` raised in application code."""
    if not isinstance(exc, GatehouseError):  # pragma: no cover - registered for GatehouseError
        raise exc
    http = http_exception(exc)
    return JSONResponse({"detail": http.detail}, status_code=http.status_code, headers=http.headers)


@contextmanager
def _http_errors(
    strip_field_prefix: str = "",
    location: str = "body",
    locations: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Turns a GatehouseError raised in the block into its HTTPException."""
    try:
        yield
    except GatehouseError as exc:
        raise http_exception(
            exc, strip_field_prefix=strip_field_prefix, location=location, locations=locations
        ) from exc
