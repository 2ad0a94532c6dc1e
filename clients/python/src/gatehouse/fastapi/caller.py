"""What the dependencies tell a route about its caller."""

from dataclasses import dataclass
from typing import TypedDict

from .._proto.gatehouse.v1 import auth_pb2

__all__ = ["ClientMeta", "CurrentUser"]


class ClientMeta(TypedDict):
    """The end user's address and browser, forwarded to Gatehouse."""

    client_ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The signed-in caller: Gatehouse's user and session, and the token that proved them."""

    user: auth_pb2.User
    session: auth_pb2.Session
    token: str

    @property
    def id(self) -> str:
        """The user's id."""
        return self.user.id
