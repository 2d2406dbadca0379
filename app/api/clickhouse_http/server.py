"""The interface's own listener: uvicorn on (settings.host, settings.clickhouse_http_port),
started and stopped with the process's services (the api role)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from app.api.clickhouse_http.routes import create_clickhouse_http_app
from app.services import Services

log = logging.getLogger("clickpulse.clickhouse_http")


class ClickHouseHttpServer:
    """uvicorn serving `create_clickhouse_http_app` on its own port (`port` once started)."""

    def __init__(self, services: Services):
        self.services = services
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        s = self.services.settings
        # Bound here, so a port in use is an OSError out of start (uvicorn would exit).
        sock = socket.create_server((s.host, s.clickhouse_http_port or 0), reuse_port=False)
        config = uvicorn.Config(
            create_clickhouse_http_app(self.services),
            lifespan="off",  # the main app's lifespan starts and stops the services
            # uvicorn's logging is process-wide: configured once, by the main server. (A level
            # or access_log=False here would silence the main server's logs too.)
            log_config=None,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        self.port = sock.getsockname()[1]
        # main_loop only watches for should_exit; the sockets serve on the event loop.
        self._loop_task = asyncio.create_task(server.main_loop())
        log.info("ClickHouse HTTP interface on %s:%s", s.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await server.shutdown()
