"""The Litestar application: routes, dependencies, lifespan, error shape."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app import api, ingest, push, web
from app.errors import exception_handlers
from app.services import Services

_frozen = False


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


def create_app(services: Services) -> Litestar:
    """An app serving `services` (built by `app.runtime.build_services` or by tests)."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start()
        _freeze_startup_heap()
        try:
            yield
        finally:
            await services.stop()

    app = Litestar(
        route_handlers=[
            *ingest.route_handlers,
            *api.route_handlers,
            *web.route_handlers,
            *push.route_handlers,
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="ClickPulse", version="0.1.0", path="/schema"),
        request_max_body_size=services.settings.ingest_max_body_bytes,
    )
    app.state.services = services
    return app
