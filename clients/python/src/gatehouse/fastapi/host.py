"""What the routes need of :class:`gatehouse.fastapi.Gatehouse`.

The router is built from this protocol rather than from the class itself, so ``router.py``
depends on neither ``integration.py`` nor the other way round through a type import.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import Request, Response

from .._models import ProfileIn, ProfileOut, SessionOut
from .._proto.gatehouse.v1 import auth_pb2
from ..client import AsyncClient
from .cache import SessionCache
from .caller import ClientMeta, CurrentUser, UserDependency

__all__ = ["RouterHost"]


class RouterHost(Protocol):
    """The parts of :class:`~gatehouse.fastapi.Gatehouse` its router calls."""

    client: AsyncClient
    cache: SessionCache | None
    expose_token: bool
    #: The signed-in caller, or 401.
    current_user: UserDependency
    #: The OpenAPI security schemes (dependencies that never refuse).
    security_schemes: tuple[Any, ...]

    def token_from_request(self, request: Request) -> tuple[str, Literal["header", "cookie"]] | None:
        """The session token and where it came from, or None."""
        ...

    def client_meta(self, request: Request) -> ClientMeta:
        """The end user's IP and User-Agent, as keyword arguments for the client."""
        ...

    def oauth_redirect_uri(self, provider: str) -> str | None:
        """The callback URL configured for ``provider``, or None."""
        ...

    def check_origin(self, request: Request) -> None:
        """403 for a state-changing cookie request from another origin."""
        ...

    async def update_profile(
        self, user: CurrentUser, body: ProfileIn, request: Request | None = None
    ) -> ProfileOut:
        """Applies a profile patch for ``user`` (forwarding ``request``'s client meta)."""
        ...

    def set_session_cookie(
        self, response: Response, token: str, session: auth_pb2.Session | SessionOut
    ) -> None:
        """Sets the session cookie."""
        ...

    def clear_session_cookie(self, response: Response) -> None:
        """Expires the session cookie."""
        ...

    def set_oauth_state_cookie(
        self, response: Response, state: str, redirect_to: str | None, max_age: int
    ) -> None:
        """Keeps a provider flow's state in a short-lived cookie."""
        ...

    def oauth_state_from_request(self, request: Request) -> tuple[str, str | None] | None:
        """(state, redirect_to) from the state cookie, or None."""
        ...

    def clear_oauth_state_cookie(self, response: Response) -> None:
        """Expires the state cookie."""
        ...

    def set_second_factor_cookie(
        self, response: Response, challenge_token: str, max_age: int
    ) -> None:
        """Keeps a sign-in's second-factor challenge in a short-lived cookie."""
        ...

    def second_factor_from_request(self, request: Request) -> str | None:
        """The challenge token from the second-factor cookie, or None."""
        ...

    def clear_second_factor_cookie(self, response: Response) -> None:
        """Expires the second-factor cookie."""
        ...

    def set_passkey_cookie(self, response: Response, challenge_id: str, max_age: int) -> None:
        """Keeps a passkey sign-in's ceremony id in a short-lived cookie."""
        ...

    def passkey_challenge_from_request(self, request: Request) -> str | None:
        """The ceremony id from the passkey cookie, or None."""
        ...

    def clear_passkey_cookie(self, response: Response) -> None:
        """Expires the passkey cookie."""
        ...
