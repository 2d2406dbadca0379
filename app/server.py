"""The Litestar application: routes, dependencies, lifespan, error shape."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import Empty

from app import api, ingest, logredact, push, web
from app.deps import provide_services
from app.errors import exception_handlers
from app.httpheaders import security_headers
from app.jsondepth import check_depth
from app.observability import logformat
from app.openapi import ApiOpenAPIConfig
from app.services import Services
from app.web.apidocs import LocalSwaggerPlugin

_frozen = False

# Which role serves a path, by prefix: the same prefixes the load balancer routes on
# (docker/nginx.conf), so a request only ever reaches a node that mounted its handler.
# Everything else is `api` (REST API, UI); health is served by every role.
ROLE_PREFIXES: dict[str, tuple[str, ...]] = {
    # Our own format, then PostHog's, Segment's (RudderStack's) and Plausible's (app.ingest.compat).
    "ingest": (
        "/v1/events",
        "/capture",
        "/batch",
        "/e",
        "/i/v0/e",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/identify",
        "/v1/batch",
        "/api/event",
    ),
    "push": ("/ws/", "/push/"),
}
EVERY_ROLE_PATHS = frozenset({"/healthz", "/readyz"})


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def role_of_path(path: str) -> str | None:
    """The role whose nodes serve `path`; None for the health endpoints (every role)."""
    if path in EVERY_ROLE_PATHS:
        return None
    for role, prefixes in ROLE_PREFIXES.items():
        # Whole path segments: `/e` is PostHog's capture, `/embed` would not be.
        if any(_under(path, prefix) for prefix in prefixes):
            return role
    return "api"


def _handler_paths(handler: Any) -> set[str]:
    paths = getattr(handler, "paths", None)  # route handlers; controllers and routers: `path`
    return set(paths) if paths else {handler.path}


def for_roles(roles: tuple[str, ...], handlers: list[Any]) -> list[Any]:
    """The handlers (route handlers, controllers, routers) this process mounts for `roles`."""
    mounted = []
    for handler in handlers:
        owners = {role_of_path(path) for path in _handler_paths(handler)}
        if len(owners) > 1:
            raise ValueError(
                f"{handler!r} serves paths of several roles: {sorted(map(str, owners))}"
            )
        owner = owners.pop()
        if owner is None or owner in roles:
            mounted.append(handler)
    return mounted


def _freeze_startup_heap() -> None:
    """Once per process: what exists at startup (modules, routes, pools, chDB) lives as long as
    the process, so move it out of the cyclic collector's generations. Otherwise every full
    collection re-scans all of it: 65-70 ms event-loop stalls every few seconds under load, the
    largest share of the history endpoint's p99 (docs/benchmarks.md, "API")."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class BoundedRequest(Request):
    """Litestar's request, refusing a JSON body nested deeper than `max_json_depth` before it
    is decoded (every `data:` parameter is decoded through `json()`): the decoder recurses
    per level, and 100,000 levels are a RecursionError, a 500, otherwise."""

    async def json(self) -> Any:
        if self._json is Empty and self._connection_state.json is Empty:
            check_depth(await self.body(), self.app.state.services.settings.max_json_depth)
        return await super().json()


def create_app(services: Services) -> Litestar:
    """An app serving `services` (built by `app.runtime.build_services` or by tests)."""
    # Every way the app is served passes here: from now on no log line carries a secret.
    logredact.install()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start()
        _freeze_startup_heap()
        try:
            yield
        finally:
            await services.stop()

    # The document Litestar derives, completed with every error answer (app/openapi.py).
    openapi_config = ApiOpenAPIConfig(
        title="ClickPulse",
        version="0.1.0",
        path="/schema",
        # The docs page from our own assets (Litestar's pages load from CDNs), and the JSON.
        render_plugins=[LocalSwaggerPlugin(), JsonRenderPlugin()],
    )
    # JSON logs (CLICKPULSE_LOG_FORMAT): Litestar must not put its text handler on the root.
    logging_config = logformat.litestar_logging_config(services.settings.log_format)
    app = Litestar(
        route_handlers=for_roles(
            services.settings.roles,
            [
                *ingest.route_handlers,
                *api.route_handlers,
                *web.route_handlers,
                *push.route_handlers,
            ],
        ),
        dependencies={"services": provide_services(services)},
        exception_handlers=exception_handlers,
        request_class=BoundedRequest,
        lifespan=[lifespan],
        openapi_config=openapi_config,
        before_send=[security_headers, ingest.cors_headers],
        request_max_body_size=services.settings.ingest_max_body_bytes,
        **({"logging_config": logging_config} if logging_config is not None else {}),
    )
    openapi_config.bind(app)
    app.state.services = services
    return app
