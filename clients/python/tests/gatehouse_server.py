"""Starts the real ``gatehouse`` binary for tests, on SQLite or a fresh PostgreSQL database."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[3]
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: HealthCheckResponse{status: SERVING} on the wire.
SERVING = b"\x08\x01"
STARTUP_TIMEOUT = 30.0
#: Limits high enough that no test trips them by accident (the rate-limit test sets its own).
GENEROUS_RATE_LIMITS = {
    f"GATEHOUSE_RATE_{name}": "10000/1m"
    for name in (
        "SIGN_IN_PER_ACCOUNT",
        "SIGN_IN_PER_IP",
        "SIGN_UP_PER_IP",
        "RESET_PER_EMAIL",
        "RESET_PER_IP",
        "VERIFICATION_PER_ACCOUNT",
        "REDEEM_PER_IP",
    )
}
#: The API key test servers accept as service credentials (``x-api-key``), and the audiences
#: they issue access tokens for (see DEFAULT_ENV).
SERVICE_API_KEY = "gh-py-tests-service-key-0123456789abcdef"
ACCESS_TOKEN_AUDIENCES = ("books-api", "search-api")
SERVICE_ENV = {
    "GATEHOUSE_ADMIN_API_KEYS": "pytests=" + hashlib.sha256(SERVICE_API_KEY.encode()).hexdigest(),
    "GATEHOUSE_ACCESS_TOKEN_AUDIENCES": ",".join(ACCESS_TOKEN_AUDIENCES),
}
#: The extra environment of a test server unless the test gives its own.
DEFAULT_ENV = {**GENEROUS_RATE_LIMITS, **SERVICE_ENV}
_LINK_TOKEN_RE = re.compile(r"token=(gatelink_[A-Za-z0-9_-]+)")


def _inherited_env() -> dict[str, str]:
    """The test process's environment without Gatehouse settings: a developer's GATEHOUSE_* or
    REDIS_URL (shared rate-limit counters) must not leak into the servers under test."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEHOUSE_")
        and k not in ("REDIS_URL", "DATABASE_URL")
        or k == "GATEHOUSE_BIN"
    }


def gatehouse_binary() -> Path:
    """The binary under test: $GATEHOUSE_BIN, or debug/gatehouse in cargo's target directory
    ($CARGO_TARGET_DIR or target/), built if missing."""
    override = os.environ.get("GATEHOUSE_BIN")
    if override:
        return Path(override)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = (target_dir if target_dir.is_absolute() else REPO / target_dir) / "debug" / "gatehouse"
    if not binary.exists():
        subprocess.run(["cargo", "build", "-j2", "--bin", "gatehouse"], cwd=REPO, check=True)
    return binary


def free_port() -> int:
    """A port the OS just handed out (closed again before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _with_database(admin_url: str, name: str) -> str:
    base, _, query = admin_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@dataclass
class GatehouseServer:
    """One running gatehouse process and the database it owns."""

    backend: str
    postgres_admin_url: str | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gh_py_")))
    database: str | None = None
    #: Extra environment for the server; DEFAULT_ENV unless the test says otherwise.
    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
    #: The plain-HTTP side port (JWKS, discovery, metrics); every server gets its own, so
    #: servers never collide on the default 127.0.0.1:50052.
    http_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_base(self) -> str:
        """Base URL of the HTTP side port."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        """GATEHOUSE_DATA_DIR: ``<tmp>/data``, so a shell in ``tmp`` sees it as ``data/``."""
        return self.tmp / "data"

    @property
    def outbox(self) -> Path:
        """Where the server writes mail when no SMTP relay is configured."""
        return self.data_dir / "outbox"

    def mails(self, to: str, subject: str) -> list[tuple[str, str]]:
        """(text, link token or "") of the outbox messages to ``to`` whose subject is
        ``subject``, oldest first (file names start with the time written)."""
        found: list[tuple[str, str]] = []
        if not self.outbox.exists():
            return found
        for path in sorted(self.outbox.glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace")
            head = text.split("\n\n", 1)[0].splitlines()
            # A .txt is written after its .eml: one still empty has no head yet.
            if f"To: {to}" in head and f"Subject: {subject}" in head:
                match = _LINK_TOKEN_RE.search(text)
                found.append((text, match.group(1) if match else ""))
        return found

    def wait_for_mail(
        self, to: str, subject: str, count: int = 1, timeout: float = 10.0
    ) -> tuple[str, str]:
        """(text, link token) of the ``count``-th message to ``to`` with ``subject``, polling
        the outbox: mail is delivered in the background."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.mails(to, subject)
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no message #{count} to {to} with subject {subject!r} in {self.outbox} "
                    f"within {timeout}s; found {len(found)}"
                )
            time.sleep(0.05)

    def wait_for_link(self, to: str, subject: str, count: int = 1, timeout: float = 10.0) -> str:
        """The link token of the ``count``-th message to ``to`` with ``subject``."""
        text, token = self.wait_for_mail(to, subject, count, timeout)
        assert token, f"no gatelink token in:\n{text}"
        return token

    def start(self) -> GatehouseServer:
        """Starts the server, on a fresh database unless it already has one (a restart)."""
        if self.backend == "postgres":
            if not self.postgres_admin_url:
                raise RuntimeError("postgres backend needs TEST_POSTGRES_URL")
            if self.database is None:
                self.database = f"gh_py_{uuid.uuid4().hex}"
                _psql(self.postgres_admin_url, f'CREATE DATABASE "{self.database}"')
            database_url = _with_database(self.postgres_admin_url, self.database)
        else:
            database_url = f"sqlite://{self.tmp}/gatehouse.db?mode=rwc"
        self.port = free_port()
        self.http_port = free_port()
        env = {
            **_inherited_env(),
            "GATEHOUSE_LISTEN": self.target,
            "GATEHOUSE_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "GATEHOUSE_ISSUER": self.http_base,
            "DATABASE_URL": database_url,
            "GATEHOUSE_DATA_DIR": str(self.data_dir),
            "GATEHOUSE_SECRET": "python-client-tests-secret-" + "x" * 16,
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
            **self.env,
        }
        log = (self.tmp / "server.log").open("wb")
        self.process = subprocess.Popen(
            [str(gatehouse_binary())], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with grpc.insecure_channel(self.target) as channel:
            check = channel.unary_unary(HEALTH_CHECK)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"gatehouse exited at start:\n{self.log()}")
                try:
                    if check(b"", timeout=1.0) == SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gatehouse not SERVING within {STARTUP_TIMEOUT}s:\n{self.log()}")

    def restart(self, env: dict[str, str] | None = None) -> GatehouseServer:
        """Stops the server and starts it again on the same database and data directory, with
        ``env`` added to its environment (e.g. a new consent policy version)."""
        self.stop(drop=False)
        self.env.update(env or {})
        return self.start()

    def log(self) -> str:
        path = self.tmp / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, *, drop: bool = True) -> None:
        """SIGTERM (graceful), SIGKILL after 10 s; then drop the database and temp files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not drop:
            return
        if self.database and self.postgres_admin_url:
            _psql(
                self.postgres_admin_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
            )
            self.database = None
        shutil.rmtree(self.tmp, ignore_errors=True)
