"""Pieces shared by the sync and async clients: options, metadata and the retry policy."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from .errors import Unauthenticated

__all__ = ["DEFAULT_TIMEOUT", "RetryPolicy", "TlsConfig"]

#: Default deadline of a call, in seconds, covering all its retry attempts.
DEFAULT_TIMEOUT: Final = 5.0
#: Longest user agent forwarded (Gatehouse keeps at most 512 characters too).
MAX_USER_AGENT_CHARS: Final = 512
#: A session token is printable ASCII without spaces (``gate_`` + base64url); anything else is
#: refused locally, so a hostile cookie can never produce invalid gRPC metadata.
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")
_UNPRINTABLE_RE: Final = re.compile(r"[^\x20-\x7e]")

#: RPCs that only read, so retrying them after UNAVAILABLE cannot apply a change twice.
IDEMPOTENT_METHODS: Final = frozenset(
    {
        "GetSession",
        "ListSessions",
        "GetProfile",
        "ListAuditEvents",
        "ListAccounts",
        "GetJwks",
        "IntrospectToken",
        "ListUsers",
        "GetUser",
        "ListUserAuditEvents",
        "ListConsentRecords",
        "GetPrivacyReport",
        "ListFactors",
    }
)

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS settings for the channel to Gatehouse.

    With every field left as ``None`` the system's root certificates are used. Give
    ``root_certificates`` (PEM) for a private CA, and ``private_key`` with ``certificate_chain``
    (PEM) for mutual TLS. ``server_name`` overrides the name checked against the server's
    certificate (useful when connecting by IP address).
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("private_key and certificate_chain must be given together")

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials for these settings."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options these settings need."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Only the read-only RPCs (``GetSession``, ``ListSessions``, ``GetProfile``,
    ``ListAuditEvents``, ``ListAccounts``, ``GetJwks``, ``IntrospectToken``, ``ListUsers``,
    ``GetUser``, ``ListUserAuditEvents``, ``ListConsentRecords``, ``GetPrivacyReport``,
    ``ListFactors``) are
    retried, and only after ``UNAVAILABLE``. Every attempt stays within the call's one deadline.
    The exports (``ExportMyData``, ``ExportUserData``) only read too, but each is audited and
    counted in the privacy report, so they are not retried.
    ``max_attempts=1`` turns retries off.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be non-negative and multiplier at least 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the given failed attempt (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)


def channel_options(
    tls: TlsConfig | None, extra: Sequence[tuple[str, str | int]] | None
) -> list[tuple[str, str | int]]:
    """Channel options: a client user agent, TLS name override, then the caller's options."""
    from . import __version__

    options: list[tuple[str, str | int]] = [
        ("grpc.primary_user_agent", f"gatehouse-client-python/{__version__}"),
    ]
    if tls is not None:
        options.extend(tls.channel_options())
    options.extend(extra or ())
    return options


def call_metadata(
    token: str | None = None,
    client_ip: str | None = None,
    user_agent: str | None = None,
    *,
    token_required: bool = False,
) -> Metadata:
    """Metadata for one call: the bearer token and the end user's address and browser.

    A token that cannot be a Gatehouse token (empty, too long, spaces or non-ASCII) raises
    :class:`Unauthenticated` without calling the server. An unparsable ``client_ip`` is left
    out, and the user agent is reduced to printable ASCII and bounded, so untrusted browser
    input never makes the metadata invalid.
    """
    metadata: list[tuple[str, str]] = []
    if token is not None or token_required:
        if not token or not _TOKEN_RE.fullmatch(token):
            raise Unauthenticated("missing or malformed session token")
        metadata.append(("authorization", f"Bearer {token}"))
    if client_ip:
        try:
            metadata.append(("x-forwarded-for", str(ipaddress.ip_address(client_ip.strip()))))
        except ValueError:
            pass
    if user_agent:
        cleaned = _UNPRINTABLE_RE.sub("", user_agent).strip()[:MAX_USER_AGENT_CHARS]
        if cleaned:
            metadata.append(("x-forwarded-user-agent", cleaned))
    return tuple(metadata)
