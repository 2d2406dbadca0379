"""The long-lived parts of one app process, built once and handed to handlers via `Provide`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from app.clickhouse import ClickHouse
from app.config import Settings

if TYPE_CHECKING:
    from app.ingest.writer import EventWriter


@dataclass
class Services:
    """Everything a request handler may need; one instance per process."""

    settings: Settings
    ch: ClickHouse
    pg: AsyncConnectionPool
    writer: EventWriter
    redis: Any = None  # redis.asyncio.Redis when REDIS_URL is set
    extras: dict[str, Any] = field(default_factory=dict)
    # The HTTP API's parts (issue 4); built from the above when not given.
    store: Any = None  # app.store.Store over `pg`
    cache: Any = None  # app.cache.Cache: Redis when `redis` is set, else in process
    limiter: Any = None  # app.limits.Limiter: per-org quotas
    auth: Any = None  # app.auth.Authenticator: user tokens -> Principal
    degradation: Any = None  # app.cache.Degradation: what is failing, for readyz
    push: Any = None  # app.push.Hub: live push (issue 5), built from the above
    alerts: Any = None  # app.alerts.Evaluator: alerts on the push ticks (issue 6)
    # app.push.dedicated.DedicatedServer: the `websockets` transport, when push_port is set
    dedicated: Any = None

    def __post_init__(self) -> None:
        from app.auth import Authenticator, FailureThrottle
        from app.cache import Degradation, make_cache
        from app.limits import Limiter, default_limits, limit_ceilings
        from app.store import Store

        s = self.settings
        if self.store is None:
            self.store = Store(self.pg, s.pg_timeout_s, breaker_open_s=s.pg_breaker_s)
        if self.cache is None:
            self.cache = make_cache(
                self.redis, max_entries=s.cache_max_entries, keep_s=s.cache_keep_s
            )
        if self.limiter is None:
            self.limiter = Limiter(
                default_limits(s),
                ceilings=limit_ceilings(s),
                redis=self.redis,
                load_overrides=self.store.orgs.get_limits,
            )
        if self.auth is None:
            self.auth = Authenticator(
                self.store,
                fresh_s=s.auth_cache_s,
                negative_s=s.auth_negative_cache_s,
                throttle=FailureThrottle(s.auth_fail_max, s.auth_fail_window_s),
            )
        if self.degradation is None:
            self.degradation = Degradation()
        breaker = getattr(self.store, "breaker", None)
        if breaker is not None and breaker.listener is None:
            breaker.listener = self._postgres_outcome
        if self.push is None:
            from app.push import Hub

            self.push = Hub(self)
        if self.alerts is None:
            from app.alerts import Evaluator

            self.alerts = Evaluator(self)  # reads self.push / self.pg when it runs
        if self.dedicated is None and s.push_port is not None:
            from app.push.dedicated import DedicatedServer

            self.dedicated = DedicatedServer(self.push)

    def _postgres_outcome(self, ok: bool, error: str) -> None:
        """The store breaker's outcomes, for readyz (`degraded.postgres`)."""
        if ok:
            self.degradation.ok("postgres")
        else:
            self.degradation.failed("postgres", error)

    async def start(self) -> None:
        """Start the background parts of this process's roles (`settings.roles`): the writer
        (ingest); the poller, push transports and alerts evaluator (push). The api role has
        none: its cache, limiter and store work on demand."""
        roles = self.settings.roles
        try:
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
        except BaseException:
            # A failed start must not leave a part running (the pool's connection workers
            # would keep a process whose server never started alive): stop what started.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop what `start` started, in dependency order."""
        roles = self.settings.roles
        if "push" in roles:
            # Alerts first: no evaluation (or webhook) outlives the poller and the store.
            await self.alerts.stop()
            # Sockets close first (1001), so no poll runs while the writer drains; the dedicated
            # server's handlers drop theirs while the poller and bus still run.
            await self.push.close_sockets()
            if self.dedicated is not None:
                await self.dedicated.stop()
            await self.push.stop()
        if "ingest" in roles:
            # The writer flushes what it has acknowledged before anything else goes away.
            await self.writer.stop()
        await self.pg.close()
        if self.redis is not None:
            await self.redis.aclose()
