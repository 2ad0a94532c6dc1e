"""Where a request comes from and where it may send the browser: the cross-site request
check of state-changing requests and the same-site check of redirect targets."""

from typing import Final, Literal
from urllib.parse import urlsplit

from fastapi import Request

#: Methods that must not change state, so a forged one gains an attacker nothing.
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_REDIRECT_TO_MAX: Final = 2048


def _safe_redirect(target: str) -> bool:
    """Whether ``target`` is a same-site relative path (``/books?x=1``): no scheme, host,
    protocol-relative ``//`` or ``/\\``, backslash or control character."""
    return (
        0 < len(target) <= _REDIRECT_TO_MAX
        and target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and "\\" not in target
        and all(ch >= " " and ch != "\x7f" for ch in target)
    )


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` as browsers serialise an Origin (lower case, no
    default port), or None when ``url`` is not an http(s) origin, possibly with a trailing
    ``/``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    host = parts.hostname
    if "*" in host:  # no wildcards: each trusted front end is listed
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _host_of(origin: str) -> str:
    """The ``host[:port]`` of a normalised origin."""
    return origin.partition("://")[2]


def _normal_host(host: str, scheme: str) -> str:
    """A Host header without the scheme's default port, lower case."""
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return host



def cross_site_refusal(
    request: Request,
    found: tuple[str, Literal["header", "cookie"]] | None,
    trusted_origins: frozenset[str],
) -> str | None:
    """Why ``request`` (whose session token, if any, is ``found``) must be refused as a
    possible cross-site forgery, or None; see :class:`gatehouse.fastapi.Gatehouse`."""
    if request.method.upper() in _SAFE_METHODS:
        return None
    if found is not None and found[1] == "header":
        return None  # a page on another site cannot attach this header
    site = request.headers.get("sec-fetch-site", "").strip().lower()
    origin_header = request.headers.get("origin")
    if site in ("same-origin", "none"):
        return None  # set by the browser itself; pages cannot forge it
    if not site and origin_header is None:
        if found is None:
            return None  # no browser and no cookie: nothing ambient to abuse
        return (
            "cross-site request refused: a cookie-authenticated request must carry an "
            "Origin or Sec-Fetch-Site header (browsers send them); "
            "a client outside a browser should use Authorization: Bearer"
        )
    if origin_header is None:
        return f"cross-site request refused: a {site} request without an Origin header"
    origin = _origin(origin_header)
    if origin is not None and origin in trusted_origins:
        return None
    if not site and origin is not None:
        host = request.headers.get("host", "")
        if host and _normal_host(host, origin.partition(":")[0]) == _host_of(origin):
            return None
    return (
        f"cross-site request refused: origin {origin_header!r} is not this site's "
        "nor a trusted origin (Gatehouse trusted_origins)"
    )
