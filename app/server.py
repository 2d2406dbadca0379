"""The Litestar application: routes, dependencies, lifespan, error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app import api, ingest
from app.errors import exception_handlers
from app.services import Services


def create_app(services: Services) -> Litestar:
    """An app serving `services` (built by `app.runtime.build_services` or by tests)."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = Litestar(
        route_handlers=[*ingest.route_handlers, *api.route_handlers],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="ClickPulse", version="0.1.0", path="/schema"),
        request_max_body_size=services.settings.ingest_max_body_bytes,
    )
    app.state.services = services
    return app
