"""Clients for trusted services: introspection, the revocation stream and the admin API.

These RPCs refuse end users. A service authenticates with an API key (sent as ``x-api-key``;
the server holds its SHA-256 in ``GATEHOUSE_ADMIN_API_KEYS=name=<hex>``) or with a client
certificate under mutual TLS (``TlsConfig(private_key=..., certificate_chain=...)``) whose
subject or SAN is in ``GATEHOUSE_ADMIN_CLIENT_NAMES``.

>>> with ServiceClient("gatehouse:50051", api_key=os.environ["GATEHOUSE_API_KEY"]) as svc:
...     info = svc.introspect_token(token)
...     for event in svc.watch_revocations():
...         cache.evict_session(event.session_id)

:class:`ServiceClient` below is the source of :class:`AsyncServiceClient`: ``generate.py``
writes ``_async_service.py`` from it (see :mod:`gatehouse.client`); ``watch_revocations`` and
the watches differ between the two and are written by hand in ``_service_base.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import grpc

from ._async_service import AsyncServiceClient
from . import _requests
from ._common import DEFAULT_TIMEOUT, RetryPolicy, TlsConfig
from ._proto.gatehouse.v1 import admin_pb2, auth_pb2, token_pb2
from ._service_base import RESUMABLE_CODES as RESUMABLE_CODES
from ._service_base import WATCH_RETRY as WATCH_RETRY
from ._service_base import (
    AsyncRevocationWatch,
    RevocationWatch,
    _service_metadata,
    _SyncServiceBase,
)

__all__ = [
    "AsyncRevocationWatch",
    "AsyncServiceClient",
    "RevocationWatch",
    "ServiceClient",
]


class ServiceClient(_SyncServiceBase):
    """Synchronous client for trusted services (introspection, revocations, admin API).

    Give ``api_key`` (sent as ``x-api-key``), or a ``tls`` :class:`TlsConfig` with a client
    certificate for mutual TLS. Other options are those of :class:`gatehouse.Client`.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: TlsConfig | bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, str | int]] | None = None,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self._service_metadata = _service_metadata(api_key, tls)
        super().__init__(
            target,
            tls=tls,
            timeout=timeout,
            retry=retry,
            options=options,
            interceptors=interceptors,
        )

    # TokenService

    def introspect_token(
        self, token: str, *, timeout: float | None = None
    ) -> token_pb2.IntrospectTokenResponse:
        """Whether a session token or access token is active now, and for whom (only
        ``active=False`` for an unknown, expired or revoked one)."""
        request = token_pb2.IntrospectTokenRequest(token=token)
        return self._call(
            "IntrospectToken", self._token.IntrospectToken, request, self._service_metadata, timeout
        )

    # AdminService

    def list_users(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        email_filter: str = "",
        timeout: float | None = None,
    ) -> admin_pb2.ListUsersResponse:
        """One page of users, oldest first (``page_size`` 0: the server's default, 50)."""
        request = admin_pb2.ListUsersRequest(
            page_size=page_size, page_token=page_token, email_filter=email_filter
        )
        return self._call(
            "ListUsers", self._admin.ListUsers, request, self._service_metadata, timeout
        )

    def iter_users(
        self, *, email_filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[admin_pb2.AdminUser]:
        """Every user (optionally filtered by email), page by page."""
        page_token = ""
        while True:
            page = self.list_users(
                page_size=page_size,
                page_token=page_token,
                email_filter=email_filter,
                timeout=timeout,
            )
            for user in page.users:
                yield user
            page_token = page.next_page_token
            if not page_token:
                return

    def get_user(self, user_id: str, *, timeout: float | None = None) -> admin_pb2.AdminUser:
        """One user by id (:class:`NotFound` if there is none)."""
        request = admin_pb2.GetUserRequest(user_id=user_id)
        return self._call(
            "GetUser", self._admin.GetUser, request, self._service_metadata, timeout
        )

    def disable_user(
        self, user_id: str, *, timeout: float | None = None
    ) -> admin_pb2.AdminUser:
        """Disables a user: no sign-in, and their sessions stop validating at once."""
        request = admin_pb2.DisableUserRequest(user_id=user_id)
        return self._call(
            "DisableUser", self._admin.DisableUser, request, self._service_metadata, timeout
        )

    def enable_user(
        self, user_id: str, *, timeout: float | None = None
    ) -> admin_pb2.AdminUser:
        """Re-enables a disabled user (who then signs in again)."""
        request = admin_pb2.EnableUserRequest(user_id=user_id)
        return self._call(
            "EnableUser", self._admin.EnableUser, request, self._service_metadata, timeout
        )

    def delete_user(self, user_id: str, *, timeout: float | None = None) -> None:
        """Deletes a user with their sessions, accounts and profile."""
        request = admin_pb2.DeleteUserRequest(user_id=user_id)
        self._call(
            "DeleteUser", self._admin.DeleteUser, request, self._service_metadata, timeout
        )

    def revoke_user_sessions(self, user_id: str, *, timeout: float | None = None) -> int:
        """Ends every session of a user; returns how many."""
        request = admin_pb2.RevokeUserSessionsRequest(user_id=user_id)
        response = self._call(
            "RevokeUserSessions",
            self._admin.RevokeUserSessions,
            request,
            self._service_metadata,
            timeout,
        )
        return response.revoked_count

    def list_user_audit_events(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> auth_pb2.ListAuditEventsResponse:
        """One page of a user's security events, newest first."""
        request = admin_pb2.ListUserAuditEventsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token
        )
        return self._call(
            "ListUserAuditEvents",
            self._admin.ListUserAuditEvents,
            request,
            self._service_metadata,
            timeout,
        )

    def export_user_data(
        self, user_id: str, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Everything Gatehouse holds about a user, as the parsed JSON document that
        :meth:`gatehouse.Client.export_my_data` gives the user themself, for an access or
        portability request (:class:`NotFound` if there is no such user). Audited
        (``admin_export``), so it is not retried."""
        request = admin_pb2.ExportUserDataRequest(user_id=user_id)
        response = self._call(
            "ExportUserData", self._admin.ExportUserData, request, self._service_metadata, timeout
        )
        document: dict[str, Any] = json.loads(response.document)
        return document

    def reset_second_factors(self, user_id: str, *, timeout: float | None = None) -> int:
        """Removes every second factor and recovery code of a user who lost them (once an
        operator has confirmed who they are): they sign in with the password alone and
        enroll again. Their sessions end and they get a notice; audited (``factors_reset``).
        Returns how many factors were removed (:class:`NotFound` if there is no such user)."""
        request = admin_pb2.ResetSecondFactorsRequest(user_id=user_id)
        response = self._call(
            "ResetSecondFactors",
            self._admin.ResetSecondFactors,
            request,
            self._service_metadata,
            timeout,
        )
        return response.removed_count

    def get_privacy_report(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> admin_pb2.PrivacyReport:
        """Figures for privacy compliance reporting: users and consent per purpose now,
        exports and deletions between ``since`` (default: 30 days before ``until``) and
        ``until`` (default: now), and the retention settings in force. Naive datetimes are
        taken as UTC; ``since`` after ``until`` is :class:`InvalidArgument`. For JSON (with
        :class:`~datetime.timedelta` retention), ``gatehouse.fastapi.PrivacyReportOut``."""
        request = _requests.privacy_report(since, until)
        return self._call(
            "GetPrivacyReport",
            self._admin.GetPrivacyReport,
            request,
            self._service_metadata,
            timeout,
        )
