"""The in-process cache of GetSession answers (see :mod:`gatehouse.fastapi` for the trade-off)."""

import hashlib
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Final

from .._proto.gatehouse.v1 import auth_pb2

__all__ = ["SessionCache"]

#: Revoked session ids remembered so that a GetSession answer racing its own revocation event
#: is never cached.
_RECENTLY_REVOKED: Final = 10_000


class SessionCache:
    """A small LRU of GetSession results, keyed by SHA-256 of the token, with a TTL.

    An entry lives at most ``ttl`` seconds and never past the session's own ``expires_at``.
    Thread-safe; shared by every request of the process.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, auth_pb2.GetSessionResponse]] = OrderedDict()
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> auth_pb2.GetSessionResponse | None:
        """The cached result for ``token``, if fresh."""
        key = self._key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, token: str, response: auth_pb2.GetSessionResponse) -> None:
        """Caches ``response`` for ``token``."""
        lifetime = self.ttl
        if response.session.HasField("expires_at"):
            expires = response.session.expires_at.ToDatetime(tzinfo=UTC)
            lifetime = min(lifetime, (expires - datetime.now(UTC)).total_seconds())
        if lifetime <= 0:
            return
        with self._lock:
            if response.session.id in self._revoked:
                return
            self._entries[self._key(token)] = (time.monotonic() + lifetime, response)
            self._entries.move_to_end(self._key(token))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, token: str) -> None:
        """Forgets ``token``."""
        with self._lock:
            self._entries.pop(self._key(token), None)

    def evict_session(self, session_id: str) -> None:
        """Forgets the session ``session_id`` and refuses to cache it again (it was revoked)."""
        with self._lock:
            self._revoked[session_id] = None
            while len(self._revoked) > _RECENTLY_REVOKED:
                self._revoked.popitem(last=False)
            for key in [k for k, (_, r) in self._entries.items() if r.session.id == session_id]:
                del self._entries[key]

    def evict_user(self, user_id: str) -> None:
        """Forgets every cached session of ``user_id``."""
        with self._lock:
            for key in [k for k, (_, r) in self._entries.items() if r.user.id == user_id]:
                del self._entries[key]

    def clear(self) -> None:
        """Forgets every cached session."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
