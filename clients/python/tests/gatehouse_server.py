"""Starts the real ``gatehouse`` binary for tests, on SQLite or a fresh PostgreSQL database.

The logic is the package's (:mod:`gatehouse.testing`); this module adds the suite's defaults:
service credentials and access-token audiences, and the production Argon2 parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gatehouse.testing import GENEROUS_RATE_LIMITS, api_key_env
from gatehouse.testing import GatehouseServer as _PackageServer
from gatehouse.testing import free_port as free_port
from gatehouse.testing import gatehouse_binary as gatehouse_binary

REPO = Path(__file__).resolve().parents[3]
#: The API key test servers accept as service credentials (``x-api-key``), and the audiences
#: they issue access tokens for (see DEFAULT_ENV).
SERVICE_API_KEY = "gh-py-tests-service-key-0123456789abcdef"
ACCESS_TOKEN_AUDIENCES = ("books-api", "search-api")
SERVICE_ENV = {
    **api_key_env("pytests", SERVICE_API_KEY),
    "GATEHOUSE_ACCESS_TOKEN_AUDIENCES": ",".join(ACCESS_TOKEN_AUDIENCES),
}
#: The extra environment of a test server unless the test gives its own.
DEFAULT_ENV = {**GENEROUS_RATE_LIMITS, **SERVICE_ENV}


@dataclass
class GatehouseServer(_PackageServer):
    """The package's server with the suite's default environment."""

    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
