"""The session and OAuth state cookies: their names, the prefix rules, and the methods of
:class:`gatehouse.fastapi.Gatehouse` that set, read and clear them."""

import base64
from datetime import UTC, datetime
from typing import Final

from fastapi import Request, Response

from .._proto.gatehouse.v1 import auth_pb2
from .origins import _safe_redirect

DEFAULT_COOKIE_NAME: Final = "gatehouse_session"
DEFAULT_OAUTH_STATE_COOKIE: Final = "gatehouse_oauth_state"
HOST_PREFIX: Final = "__Host-"
_SECURE_PREFIX: Final = "__Secure-"


def _with_prefix(name: str) -> str:
    return name if name.startswith(HOST_PREFIX) else HOST_PREFIX + name


def _check_cookie_prefix(name: str, secure: bool, domain: str | None, path: str) -> None:
    """Refuses settings a browser would silently drop the cookie for (RFC 6265bis 4.1.3):
    better a clear error at startup than a sign-in that never sticks."""
    problems: list[str] = []
    if name.startswith(HOST_PREFIX):
        if not secure:
            problems.append("cookie_secure must be True")
        if domain:
            problems.append(f"cookie_domain must be unset (is {domain!r})")
        if path != "/":
            problems.append(f"cookie_path must be '/' (is {path!r})")
        prefix = HOST_PREFIX
    elif name.startswith(_SECURE_PREFIX):
        if not secure:
            problems.append("cookie_secure must be True")
        prefix = _SECURE_PREFIX
    if problems:
        raise ValueError(
            f"cookie {name!r}: a {prefix} cookie is only accepted by browsers when Secure"
            + (", with Path=/ and no Domain" if prefix == HOST_PREFIX else "")
            + ": "
            + "; ".join(problems)
        )


class _Cookies:
    """The cookie methods of :class:`gatehouse.fastapi.Gatehouse`, on the settings it holds."""

    cookie_name: str
    cookie_secure: bool
    cookie_domain: str | None
    cookie_path: str
    oauth_state_cookie_name: str

    # One set of attributes for both cookies: HttpOnly so no script reads them, SameSite=Lax
    # so they still come back on the provider's top-level redirect to the OAuth callback.

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def _delete_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def set_session_cookie(self, response: Response, token: str, session: auth_pb2.Session) -> None:
        """Sets the HttpOnly, SameSite=Lax session cookie, living until ``session.expires_at``."""
        max_age = 0
        if session.HasField("expires_at"):
            expires = session.expires_at.ToDatetime(tzinfo=UTC)
            max_age = max(0, int((expires - datetime.now(UTC)).total_seconds()))
        self._set_cookie(response, self.cookie_name, token, max_age)

    def clear_session_cookie(self, response: Response) -> None:
        """Expires the session cookie."""
        self._delete_cookie(response, self.cookie_name)

    def set_oauth_state_cookie(
        self, response: Response, state: str, redirect_to: str | None, max_age: int
    ) -> None:
        """Keeps the flow's ``state`` (and where to go afterwards) in a short-lived HttpOnly,
        SameSite=Lax cookie: Lax still sends it on the provider's top-level redirect back."""
        value = state
        if redirect_to:
            value += "." + base64.urlsafe_b64encode(redirect_to.encode()).decode().rstrip("=")
        self._set_cookie(response, self.oauth_state_cookie_name, value, max_age)

    def oauth_state_from_request(self, request: Request) -> tuple[str, str | None] | None:
        """(state, redirect_to) from the state cookie, or None if absent or malformed."""
        value = request.cookies.get(self.oauth_state_cookie_name)
        if not value:
            return None
        state, _, encoded = value.partition(".")
        redirect_to: str | None = None
        if encoded:
            try:
                redirect_to = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except ValueError:
                return None
            if not _safe_redirect(redirect_to):
                return None
        return (state, redirect_to) if state else None

    def clear_oauth_state_cookie(self, response: Response) -> None:
        """Expires the state cookie."""
        self._delete_cookie(response, self.oauth_state_cookie_name)
