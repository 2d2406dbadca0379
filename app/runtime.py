"""Building one process's `Services` from `Settings`: the embedded stack or the scaled one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.clickhouse import ClickHouse, connect
from app.config import Settings
from app.db import migrate as migrate_pg
from app.db import open_pool, resolve_database_url
from app.migrate import Migration, MigrationReport, migrate_clickhouse, render_clickhouse
from app.services import Services

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool
    from redis.asyncio import Redis

    from app.cache import Degradation

log = logging.getLogger("clickpulse")


def open_clickhouse(settings: Settings) -> ClickHouse:
    """The ClickHouse facade for these settings (chDB on the data dir unless a URL is set)."""
    return connect(
        database=settings.clickhouse_database,
        data_dir=settings.chdb_path,
        url=settings.clickhouse_url,
        max_workers=settings.clickhouse_workers,
        queue_wait_s=settings.clickhouse_queue_wait_s,
        org_workers=settings.clickhouse_org_workers,
    )


def render_for(settings: Settings, database: str) -> list[Migration]:
    """The ClickHouse migrations in the variant these settings select (docs/pipeline.md):
    a cluster and the Kafka engine table only with a ClickHouse server (`clickhouse_url`);
    chDB always gets the embedded rendering (its Kafka topic, if any, is consumed by the
    in-process bridge of app/ingest/kafka/bridge.py)."""
    server = bool(settings.clickhouse_url)
    return render_clickhouse(
        database=database,
        events_ttl_days=settings.events_ttl_days,
        cluster=settings.clickhouse_cluster if server else None,
        kafka_brokers=settings.kafka_brokers if server else None,
        kafka_topic=settings.kafka_topic,
        kafka_num_consumers=settings.kafka_num_consumers,
        kafka_flush_interval_ms=settings.kafka_flush_interval_ms,
    )


def migrate_all(settings: Settings, ch: ClickHouse, pg_url: str) -> dict[str, MigrationReport]:
    """Apply the ClickHouse and PostgreSQL migrations; idempotent."""
    cluster = settings.clickhouse_cluster if settings.clickhouse_url else None
    reports = {
        "clickhouse": migrate_clickhouse(ch, render_for(settings, ch.database), cluster=cluster),
        "postgres": migrate_pg(pg_url),
    }
    for name, report in reports.items():
        log.info(
            "%s migrations: %d applied, %d already there",
            name,
            len(report.applied),
            len(report.skipped),
        )
    return reports


def build_services(
    settings: Settings,
    *,
    migrate: bool = True,
    ch: ClickHouse | None = None,
    pg: AsyncConnectionPool | None = None,
    writer: Any = None,
    redis: Redis | None = None,
) -> Services:
    """The process's Services, every part built and wired here (not started: `start` does).

    Parts not given are opened from `settings` (ClickHouse, the PostgreSQL pool, the writer,
    Redis when `redis_url` is set); tests pass the ones they already have. `migrate` applies
    the ClickHouse and PostgreSQL migrations first."""
    from app.alerts import Evaluator
    from app.auth import Authenticator, FailureThrottle
    from app.cache import Degradation, make_cache
    from app.ingest import make_writer
    from app.limits import Limiter, default_limits, limit_ceilings
    from app.observability.metrics import PartsCollector, Telemetry
    from app.push.hub import Hub
    from app.store import Store

    s = settings
    if ch is None:
        ch = open_clickhouse(s)
    # A given pool is on settings.database_url (tests): never start an embedded server for it.
    given_pool = pg is not None and not migrate
    database_url = s.database_url if given_pool else resolve_database_url(s)
    if migrate:
        migrate_all(s, ch, database_url)
    if pg is None:
        pg = open_pool(database_url, timeout_s=s.pg_timeout_s)
    telemetry = Telemetry(top_orgs=s.metrics_top_orgs)
    if writer is None:
        writer = make_writer(ch, s)
    # Given (tests) or built, the writer counts its INSERTs into this process's registry.
    writer.telemetry = telemetry
    if redis is None and s.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.Redis.from_url(s.redis_url)
    store = Store(pg, s.pg_timeout_s, breaker_open_s=s.pg_breaker_s)
    degradation = Degradation()
    store.breaker.listener = _reports_postgres_to(degradation)
    services = Services(
        settings=s,
        ch=ch,
        pg=pg,
        writer=writer,
        store=store,
        cache=make_cache(redis, max_entries=s.cache_max_entries, keep_s=s.cache_keep_s),
        limiter=Limiter(
            default_limits(s),
            ceilings=limit_ceilings(s),
            redis=redis,
            load_overrides=store.orgs.get_limits,
            telemetry=telemetry,
        ),
        auth=Authenticator(
            store,
            fresh_s=s.auth_cache_s,
            negative_s=s.auth_negative_cache_s,
            throttle=FailureThrottle(s.auth_fail_max, s.auth_fail_window_s),
        ),
        degradation=degradation,
        redis=redis,
        database_url=database_url,
        telemetry=telemetry,
    )
    telemetry.registry.register(PartsCollector(services))
    telemetry.include_process()
    if s.metrics_port is not None:
        from app.observability.exposition import MetricsServer

        services.metrics_server = MetricsServer(
            telemetry, s.metrics_host, s.metrics_port, s.metrics_token
        )
    services.push = Hub(services)
    services.alerts = Evaluator(services)  # reads services.push / services.pg when it runs
    if s.push_port is not None:
        from app.push.dedicated import DedicatedServer

        services.dedicated = DedicatedServer(services.push)
    if s.clickhouse_http_port is not None and "api" in s.roles:
        from app.api.clickhouse_http import ClickHouseHttpServer

        services.clickhouse_http = ClickHouseHttpServer(services)
    return services


def _reports_postgres_to(degradation: Degradation) -> Callable[[bool, str], None]:
    """The store breaker's listener: its outcomes, for readyz (`degraded.postgres`)."""

    def outcome(ok: bool, error: str) -> None:
        if ok:
            degradation.ok("postgres")
        else:
            degradation.failed("postgres", error)

    return outcome
