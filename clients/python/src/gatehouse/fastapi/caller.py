"""What the dependencies tell a route about its caller, and the dependency objects
themselves (:class:`UserDependency`: ``gatehouse.current_user`` and its variants)."""

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypedDict, overload

from fastapi import Depends, Request, Response
from pydantic import ConfigDict, PrivateAttr

from .._models import SessionInfoOut, SessionOut, UserOut
from .._proto.gatehouse.v1 import auth_pb2

__all__ = ["ClientMeta", "CurrentUser", "UserDependency"]


class ClientMeta(TypedDict):
    """The end user's address and browser, forwarded to Gatehouse."""

    client_ip: str | None
    user_agent: str | None


class CurrentUser(SessionInfoOut):
    """The signed-in caller: Gatehouse's user and session as models (``user`` is a
    :class:`UserOut`, ``session`` a :class:`SessionOut`), and the token that proved them.

    A route may return it (``-> CurrentUser``) or its ``user`` (``-> UserOut``): both are in
    the OpenAPI document. The token is no field, so it is in neither the JSON nor the schema;
    it is ``.token``, for calls to Gatehouse on the caller's behalf. ``user`` and ``session``
    may also be given as the protobuf messages, as before this was a model.
    """

    # The docstring is for Python readers; the OpenAPI document keeps SessionInfoOut's words.
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"description": "The signed-in user and their current session."},
    )

    _token: str = PrivateAttr(default="")

    def __init__(
        self,
        *,
        user: UserOut | auth_pb2.User,
        session: SessionOut | auth_pb2.Session,
        token: str = "",
    ) -> None:
        super().__init__(
            user=UserOut.from_proto(user) if isinstance(user, auth_pb2.User) else user,
            session=(
                SessionOut.from_proto(session)
                if isinstance(session, auth_pb2.Session)
                else session
            ),
        )
        self._token = token

    @property
    def token(self) -> str:
        """The session token (from the cookie or the Authorization header)."""
        return self._token

    @property
    def id(self) -> str:
        """The user's id."""
        return self.user.id


#: Gatehouse's resolution of a request's caller: (request, response, verified, optional).
Resolver = Callable[[Request, Response, bool, bool], Awaitable[CurrentUser | None]]


class UserDependency:
    """A FastAPI dependency giving the caller; called with options, a variant of it.

    ``Depends(gatehouse.current_user)`` is the signed-in caller or 401, and
    ``Depends(gatehouse.current_user(verified=True, optional=False, active=True))`` a
    variant, as in fastapi-users: ``verified`` answers 403 for an address not yet verified,
    ``optional`` gives ``None`` instead of refusing (anonymous callers, a refused session, an
    unverified address when ``verified``). ``active=True`` is what Gatehouse always does (a
    disabled user has no valid session); ``active=False`` cannot be honoured and is a
    ValueError. Options left out keep this dependency's, so
    ``gatehouse.optional_user(verified=True)`` is optional and verified. Each combination is
    one object, so FastAPI resolves it once per request and ``app.dependency_overrides`` can
    replace it.

    ``security`` (the integration's OpenAPI security schemes, e.g. ``APIKeyCookie`` and
    ``HTTPBearer`` with ``auto_error=False``) become sub-dependencies, so that every route
    using the dependency carries ``security`` in the OpenAPI document and ``/docs`` shows the
    Authorize button. Their values are ignored: the resolver reads the token itself.
    """

    # FastAPI reads a dependency's parameters with inspect.signature, which takes this
    # attribute: the options of __call__ are no query parameters.
    __signature__: ClassVar[inspect.Signature] = inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter("response", inspect.Parameter.KEYWORD_ONLY, annotation=Response),
        ]
    )

    def __init__(
        self,
        resolve: Resolver,
        *,
        verified: bool = False,
        optional: bool = False,
        security: Sequence[Callable[..., Any]] = (),
        _family: "dict[tuple[bool, bool], UserDependency] | None" = None,
    ) -> None:
        self.verified = verified
        self.optional = optional
        self._resolve = resolve
        self._security = tuple(security)
        if self._security:
            # Per instance: FastAPI reads inspect.signature(self), which prefers this attribute.
            vars(self)["__signature__"] = inspect.Signature(
                [
                    *type(self).__signature__.parameters.values(),
                    *(
                        inspect.Parameter(
                            f"_security_{i}",
                            inspect.Parameter.KEYWORD_ONLY,
                            default=Depends(scheme),
                            annotation=Any,
                        )
                        for i, scheme in enumerate(self._security)
                    ),
                ]
            )
        self._family = {} if _family is None else _family
        self._family.setdefault((verified, optional), self)
        # Python calls type(self).__call__, which is both the factory and (with a request)
        # the dependency; FastAPI decides whether to await a callable object by looking up
        # its __call__ attribute, and this instance attribute answers that it is awaitable.
        vars(self)["__call__"] = self._dependency

    async def _dependency(
        self, request: Request, response: Response, **_credentials: Any
    ) -> CurrentUser | None:
        return await self._resolve(request, response, self.verified, self.optional)

    @overload
    def __call__(
        self, *, request: Request, response: Response, **_credentials: Any
    ) -> Coroutine[Any, Any, CurrentUser | None]: ...

    @overload
    def __call__(
        self,
        *,
        verified: bool | None = None,
        optional: bool | None = None,
        active: bool = True,
    ) -> "UserDependency": ...

    def __call__(
        self,
        *,
        request: Request | None = None,
        response: Response | None = None,
        verified: bool | None = None,
        optional: bool | None = None,
        active: bool = True,
        **_credentials: Any,
    ) -> "Coroutine[Any, Any, CurrentUser | None] | UserDependency":
        if request is not None and response is not None:
            return self._dependency(request, response)
        if request is not None or response is not None:
            raise TypeError("a UserDependency is called by FastAPI with request and response")
        if not active:
            raise ValueError(
                "current_user(active=False): Gatehouse refuses every session of a disabled "
                "user, so there is no inactive caller to admit"
            )
        key = (
            self.verified if verified is None else verified,
            self.optional if optional is None else optional,
        )
        found = self._family.get(key)
        if found is None:
            found = UserDependency(
                self._resolve,
                verified=key[0],
                optional=key[1],
                security=self._security,
                _family=self._family,
            )
        return found

    def __repr__(self) -> str:
        return f"UserDependency(verified={self.verified}, optional={self.optional})"
