"""The long-lived parts of one app process, handed to handlers via `Provide`: what they are,
and `start`/`stop` for the background ones. `app.runtime.build_services` builds and wires them."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.cache import SingleFlight
from app.observability.metrics import Telemetry

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool
    from redis.asyncio import Redis

    from app.alerts import Evaluator
    from app.api.clickhouse_http import ClickHouseHttpServer
    from app.auth import Authenticator
    from app.cache import Cache, Degradation
    from app.clickhouse import ClickHouse
    from app.config import Settings
    from app.ingest.writer import EventWriter
    from app.limits import Limiter
    from app.observability.exposition import MetricsServer
    from app.push.dedicated import DedicatedServer
    from app.push.hub import Hub
    from app.store import Store


log = logging.getLogger(__name__)

#: How long one shutdown step may take before it is abandoned (logged with its stack).
STOP_STEP_S = 15.0
#: The writer's final flush gets longer: it is the step that keeps acknowledged events.
STOP_WRITER_S = 60.0


async def _bounded(name: str, step: Any, timeout_s: float = STOP_STEP_S) -> None:
    """Await the shutdown `step` for at most `timeout_s`; past that, log where it waits and
    leave it (cancelled, not awaited: a step stuck on a peer may not even end on cancel)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        task.result()  # its error, as before
        return
    log.error(
        "shutdown: %s did not finish in %.0f s, left waiting at:\n%s",
        name,
        timeout_s,
        "\n".join(_awaiting(task.get_coro())),
    )
    task.cancel()


def _awaiting(coro: Any) -> list[str]:
    """Where a suspended coroutine waits, outermost first, through its chain of awaits."""
    where = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


@dataclass
class Services:
    """Everything a request handler may need; one instance per process."""

    settings: Settings
    ch: ClickHouse
    pg: AsyncConnectionPool
    writer: EventWriter  # or app.ingest.kafka.KafkaEventSink (app.ingest.make_writer)
    store: Store  # the configuration repositories over `pg`
    cache: Cache  # Redis when `redis` is set, else in process
    limiter: Limiter  # per-org quotas
    auth: Authenticator  # user tokens -> Principal
    degradation: Degradation  # what is failing, for readyz
    redis: Redis | None = None  # when REDIS_URL is set
    database_url: str = ""  # the PostgreSQL `pg` is on (the demo creates its org there)
    # This process's Prometheus metrics (its own registry) and, with metrics_port, their port.
    telemetry: Telemetry = field(default_factory=Telemetry)
    metrics_server: MetricsServer | None = None
    # Built over this object by `build_services` (they read its parts when they run).
    push: Hub = field(init=False)  # live push
    alerts: Evaluator = field(init=False)  # alerts on the push ticks
    dedicated: DedicatedServer | None = None  # the `websockets` transport, when push_port is set
    # The ClickHouse HTTP interface's listener, when clickhouse_http_port is set (api role).
    clickhouse_http: ClickHouseHttpServer | None = None
    # app/api/metrics.py's memos: compiled metrics and saved definitions (with the one read in
    # flight per definition).
    compiled_memo: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    definition_memo: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    definition_flights: SingleFlight = field(default_factory=SingleFlight)
    # app/ingest/routes.py keeps its IngestState here (a typed field once that module moves).
    extras: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        """Start the background parts of this process's roles (`settings.roles`): the writer
        (ingest); the poller, push transports and alerts evaluator (push); the ClickHouse HTTP
        listener when configured (api; its cache, limiter and store work on demand)."""
        roles = self.settings.roles
        try:
            if self.metrics_server is not None:
                # First: a long WAL replay below is then visible to the operator's scrapes.
                await self.metrics_server.start()
            await self.pg.open()
            if "ingest" in roles:
                listeners = getattr(self.writer, "insert_listeners", None)
                if listeners is not None and self.push.rows_inserted not in listeners:
                    # Late rows reach live viewers (app/push/late.py), on every node via Redis.
                    listeners.append(self.push.rows_inserted)
                await self.writer.start()
            if "push" in roles:
                await self.push.start()
                if self.dedicated is not None:
                    await self.dedicated.start()
                await self.alerts.start()
            if "api" in roles and self.clickhouse_http is not None:
                await self.clickhouse_http.start()
        except BaseException:
            # A failed start must not leave a part running (the pool's connection workers
            # would keep a process whose server never started alive): stop what started.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop what `start` started, in dependency order. Each step is bounded
        (`STOP_STEP_S`): a step that hangs (a peer that never answers) is logged with where it
        waits and abandoned, so a SIGTERM still ends the process and the later steps still run
        (the writer's WAL keeps what it could not flush)."""
        roles = self.settings.roles
        if "api" in roles and self.clickhouse_http is not None:
            await _bounded("clickhouse http", self.clickhouse_http.stop())  # no new statement
        if "push" in roles:
            # Alerts first: no evaluation (or webhook) outlives the poller and the store.
            await _bounded("alerts", self.alerts.stop())
            # Sockets close first (1001), so no poll runs while the writer drains; the dedicated
            # server's handlers drop theirs while the poller and bus still run.
            await _bounded("push sockets", self.push.close_sockets())
            if self.dedicated is not None:
                await _bounded("dedicated push server", self.dedicated.stop())
            await _bounded("push", self.push.stop())
        if "ingest" in roles:
            # The writer flushes what it has acknowledged before anything else goes away.
            await _bounded("writer", self.writer.stop(), STOP_WRITER_S)
        await _bounded("postgres pool", self.pg.close())
        if self.redis is not None:
            await _bounded("redis", self.redis.aclose())
        if self.metrics_server is not None:
            await _bounded("metrics server", self.metrics_server.stop())
