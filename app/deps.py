"""The HTTP dependencies every controller declares: the caller (`AUTH`, `PrincipalDep`) and
the process's parts (`ServicesDep`), with their providers.

Below app/api, app/push, app/web and app/ingest, so each tier takes them from here and none
imports another tier for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from app.auth import Principal, unauthorized
from app.credentials import USER_TOKEN_PREFIX, bearer_token

if TYPE_CHECKING:
    from app.services import Services

    ServicesDep = Services
    PrincipalDep = Principal
else:
    # Named dependencies typed Any for Litestar: its signature model would otherwise try to
    # resolve every field of the Services dataclass (some only exist under TYPE_CHECKING).
    ServicesDep = NamedDependency[Any]
    PrincipalDep = NamedDependency[Any]


def client_address(request: Request) -> str:
    """The caller's address for the failed-attempt throttle (the socket peer)."""
    return request.client.host if request.client else ""


async def provide_principal(request: Request, services: NamedDependency[Any]) -> Principal:
    """The Litestar dependency: authenticate, then charge the org's request-rate bucket."""
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized("missing Authorization: Bearer <token>")
    token = bearer_token(header)
    if token is None or not token.startswith(USER_TOKEN_PREFIX) or len(token) > 200:
        raise unauthorized("expected Authorization: Bearer cpt_<token>")
    principal = await services.auth.principal(token, client_address(request))
    await services.limiter.check_rate(principal.org_id)
    return principal


def provide_services(services: Services) -> Provide:
    """The app-wide `services` dependency: this process's one `Services`."""
    return Provide(lambda: services, sync_to_thread=False)


AUTH = {"principal": Provide(provide_principal)}
