"""Bearer tokens scoped to views, and the refusal to serve beyond loopback without them.

Tokens are read from the environment variables the configuration names, once,
when the app is created. They are kept only as SHA-256 digests and compared in
constant time against every configured token, so neither timing nor logs nor
error bodies reveal them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from statestore import Config, ConfigError

from .errors import ApiError

__all__ = [
    "Authenticator",
    "Principal",
    "authenticate",
    "authenticate_request",
    "bearer_scheme",
    "check_bind",
    "may_see",
    "principal_of",
    "require_admin",
    "require_view",
]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `[[api.tokens]]`, scoped to some views (`*`: all).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the token's name and the views it may read (None: all)."""

    name: str
    views: frozenset[str] | None
    admin: bool = False

    def may_read(self, view: str) -> bool:
        return self.views is None or view in self.views


@dataclass(frozen=True, slots=True)
class _Token:
    digest: bytes
    principal: Principal

    def __repr__(self) -> str:
        return f"_Token({self.principal.name!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """The configured tokens; ``enabled`` is False when none are configured."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str]) -> Authenticator:
        """Read every ``[[api.tokens]]`` entry's token from *environ*; ConfigError when one is unset."""
        known = {v.name for v in config.views}
        tokens = []
        for entry in config.api.tokens:
            label = entry.name or entry.env
            secret = environ.get(entry.env, "")
            if not secret:
                raise ConfigError(
                    f"api token {label!r}: environment variable {entry.env} is not set or empty; "
                    "export the token there or remove the [[api.tokens]] entry"
                )
            unknown = sorted(set(entry.views) - known - {"*"})
            if unknown:
                raise ConfigError(
                    f"api token {label!r} is scoped to unknown views {', '.join(unknown)}; "
                    f"configured views: {', '.join(sorted(known))}"
                )
            scope = None if "*" in entry.views else frozenset(entry.views)
            tokens.append(_Token(_digest(secret), Principal(label, scope, entry.admin)))
        return cls(tokens)

    def identify(self, token: str | None) -> Principal | None:
        """The principal *token* belongs to, or None; the time taken does not depend on which matched."""
        if not token:
            return None
        given = _digest(token)
        found: Principal | None = None
        for entry in self._tokens:
            # No early exit: every configured token is compared.
            if hmac.compare_digest(given, entry.digest) and found is None:
                found = entry.principal
        return found


def _unauthorized(token_given: bool) -> ApiError:
    if token_given:
        return ApiError(
            401,
            "unauthorized",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return ApiError(
        401,
        "unauthorized",
        "a bearer token is required: send `Authorization: Bearer <token>`",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> None:
    """Dependency for every protected route: 401 unless a configured token is sent."""
    auth: Authenticator = request.app.state.auth
    token = credentials.credentials if credentials is not None else None
    principal = auth.identify(token)
    if principal is None:
        raise _unauthorized(credentials is not None or "authorization" in request.headers)
    request.state.principal = principal


async def authenticate_request(request: Request) -> None:
    """``authenticate`` outside dependency solving: the same header parsing, the same errors."""
    await authenticate(request, await bearer_scheme(request))


def principal_of(request: Request) -> Principal | None:
    """The authenticated principal, or None when the app serves without tokens."""
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        # Without tokens nothing sets a principal; a missing attribute would cost an exception.
        return None
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def require_view(request: Request, view: str) -> None:
    """403 when the request's token is not scoped to *view*."""
    principal = principal_of(request)
    if principal is not None and not principal.may_read(view):
        raise ApiError(403, "forbidden", f"this token is not allowed to read view {view!r}")


def may_see(request: Request) -> Callable[[str], bool]:
    """Which views an open route (``/readyz``, ``/metrics``) may detail for this request.

    Without tokens: every view. With tokens: those of the bearer token sent, if it is
    valid, and none otherwise; the route itself stays open.
    """
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        return lambda view: True
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            principal = auth.identify(token.strip())
    if principal is None:
        return lambda view: False
    return principal.may_read


def require_admin(request: Request, view: str, action: str = "rebuild it") -> None:
    """403 unless the request's token may administer *view* (``admin = true``, scoped to it)."""
    require_view(request, view)
    principal = principal_of(request)
    if principal is not None and not principal.admin:
        raise ApiError(
            403,
            "forbidden",
            f"this token may read view {view!r} but not {action}: that needs a token "
            "with admin = true",
        )


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        # Any other host name may resolve anywhere: treat it as reachable from outside.
        return False


def check_bind(config: Config) -> None:
    """Raise ConfigError when the API would listen beyond loopback with nobody to authenticate."""
    api = config.api
    if _is_loopback(api.host) or api.tokens or api.allow_anonymous:
        return
    raise ConfigError(
        f"refusing to serve on {api.host} without tokens: configure [[api.tokens]] "
        "(env = the variable holding the token, views = the views it may read) "
        "or set allow_anonymous = true under [api]"
    )
