"""The session, OAuth state, second-factor and passkey sign-in cookies: their names, the prefix
rules, and the methods of :class:`gatehouse.fastapi.Gatehouse` that set, read and clear them."""

import base64
import re
from datetime import UTC, datetime
from typing import Final, Literal

from fastapi import Request, Response

from .._models import SessionOut
from .._proto.gatehouse.v1 import auth_pb2
from .origins import _safe_redirect

DEFAULT_COOKIE_NAME: Final = "gatehouse_session"
DEFAULT_OAUTH_STATE_COOKIE: Final = "gatehouse_oauth_state"
DEFAULT_SECOND_FACTOR_COOKIE: Final = "gatehouse_second_factor"
DEFAULT_PASSKEY_COOKIE: Final = "gatehouse_passkey"
#: A challenge token is cookie-safe ASCII (RFC 6265 cookie-octets: no space, ``"``, ``,``,
#: ``;`` or backslash); anything else in the cookie is ignored (never sent to Gatehouse).
_CHALLENGE_RE: Final = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,1024}")
HOST_PREFIX: Final = "__Host-"
_SECURE_PREFIX: Final = "__Secure-"
SameSite = Literal["lax", "strict", "none"]
_SAMESITE: Final[tuple[SameSite, ...]] = ("lax", "strict", "none")
#: A cookie name is an RFC 9110 token: no space, separator or control character.
_COOKIE_NAME_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _with_prefix(name: str) -> str:
    return name if name.startswith(HOST_PREFIX) else HOST_PREFIX + name


def _samesite(value: str) -> SameSite:
    """``value`` as a SameSite setting (any case), or ValueError."""
    lowered = value.lower()
    if lowered not in _SAMESITE:
        raise ValueError(f"cookie_samesite must be 'lax', 'strict' or 'none' (is {value!r})")
    return lowered


def _check_cookie(
    name: str, secure: bool, domain: str | None, path: str, samesite: SameSite = "lax"
) -> None:
    """Refuses settings a browser would silently drop the cookie for (RFC 6265bis: the
    ``__Host-``/``__Secure-`` prefixes, SameSite=None without Secure, a name that is no
    token): better a clear error at startup than a sign-in that never sticks."""
    if not _COOKIE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"cookie_name {name!r} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"
        )
    if not path.startswith("/"):
        raise ValueError(f"cookie_path must start with '/' (is {path!r})")
    if samesite == "none" and not secure:
        raise ValueError(
            f"cookie {name!r}: browsers refuse a SameSite=None cookie that is not Secure; "
            "set cookie_secure=True (browsers accept Secure cookies on http://localhost)"
        )
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
    cookie_samesite: SameSite
    oauth_state_cookie_name: str
    second_factor_cookie_name: str
    passkey_cookie_name: str

    # One set of attributes for the cookies: HttpOnly so no script reads them, Secure as
    # configured, the configured Path and Domain. SameSite is the setting for the session
    # cookie, the second-factor cookie and the passkey cookie (sent back by the page's own
    # POST, like the session cookie), and always Lax for the state cookie, which must come back on the provider's
    # top-level (cross-site) redirect to the OAuth callback: Strict would not send it.

    def _set_cookie(
        self, response: Response, name: str, value: str, max_age: int, samesite: SameSite
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite=samesite,
        )

    def _delete_cookie(self, response: Response, name: str, samesite: SameSite) -> None:
        # The browser replaces the cookie of the same name, Domain and Path; the deletion
        # repeats Secure and SameSite too (a SameSite=None one without Secure is refused).
        response.delete_cookie(
            name,
            path=self.cookie_path,
            domain=self.cookie_domain,
            secure=self.cookie_secure,
            httponly=True,
            samesite=samesite,
        )

    def set_session_cookie(
        self, response: Response, token: str, session: auth_pb2.Session | SessionOut
    ) -> None:
        """Sets the HttpOnly session cookie (SameSite as ``cookie_samesite``), living until the
        session's ``expires_at``."""
        if isinstance(session, SessionOut):
            expires = session.expires_at
        elif session.HasField("expires_at"):
            expires = session.expires_at.ToDatetime(tzinfo=UTC)
        else:
            expires = None
        max_age = 0
        if expires is not None:
            max_age = max(0, int((expires - datetime.now(UTC)).total_seconds()))
        self._set_cookie(response, self.cookie_name, token, max_age, self.cookie_samesite)

    def clear_session_cookie(self, response: Response) -> None:
        """Expires the session cookie."""
        self._delete_cookie(response, self.cookie_name, self.cookie_samesite)

    def session_cookie_clearing(self) -> str:
        """The ``Set-Cookie`` value that expires the session cookie, for the headers of an
        HTTPException (whose answer is not a Response the app can change)."""
        response = Response()
        self.clear_session_cookie(response)
        return response.headers["set-cookie"]

    def set_oauth_state_cookie(
        self, response: Response, state: str, redirect_to: str | None, max_age: int
    ) -> None:
        """Keeps the flow's ``state`` (and where to go afterwards) in a short-lived HttpOnly,
        SameSite=Lax cookie: Lax still sends it on the provider's top-level redirect back."""
        value = state
        if redirect_to:
            value += "." + base64.urlsafe_b64encode(redirect_to.encode()).decode().rstrip("=")
        self._set_cookie(response, self.oauth_state_cookie_name, value, max_age, "lax")

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
        self._delete_cookie(response, self.oauth_state_cookie_name, "lax")

    def set_second_factor_cookie(
        self, response: Response, challenge_token: str, max_age: int
    ) -> None:
        """Keeps a sign-in's second-factor challenge in a short-lived HttpOnly cookie (SameSite
        as the session cookie), until ``POST second-factor`` completes it."""
        self._set_cookie(
            response, self.second_factor_cookie_name, challenge_token, max_age, self.cookie_samesite
        )

    def second_factor_from_request(self, request: Request) -> str | None:
        """The challenge token from the second-factor cookie, or None if absent or malformed."""
        value = request.cookies.get(self.second_factor_cookie_name)
        if not value or not _CHALLENGE_RE.fullmatch(value):
            return None
        return value

    def clear_second_factor_cookie(self, response: Response) -> None:
        """Expires the second-factor cookie."""
        self._delete_cookie(response, self.second_factor_cookie_name, self.cookie_samesite)

    def set_passkey_cookie(self, response: Response, challenge_id: str, max_age: int) -> None:
        """Keeps a passkey sign-in's ceremony id in a short-lived HttpOnly cookie (SameSite as
        the session cookie), until ``POST passkeys/sign-in`` spends it."""
        self._set_cookie(
            response, self.passkey_cookie_name, challenge_id, max_age, self.cookie_samesite
        )

    def passkey_challenge_from_request(self, request: Request) -> str | None:
        """The ceremony id from the passkey cookie, or None if absent or malformed."""
        value = request.cookies.get(self.passkey_cookie_name)
        if not value or not _CHALLENGE_RE.fullmatch(value):
            return None
        return value

    def clear_passkey_cookie(self, response: Response) -> None:
        """Expires the passkey cookie."""
        self._delete_cookie(response, self.passkey_cookie_name, self.cookie_samesite)
