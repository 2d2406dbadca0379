"""Building one process's `Services` from `Settings`: the embedded stack or the scaled one."""

from __future__ import annotations

import logging

from app.clickhouse import ClickHouse, connect
from app.config import Settings
from app.db import migrate as migrate_pg
from app.db import open_pool, resolve_database_url
from app.migrate import Migration, MigrationReport, migrate_clickhouse, render_clickhouse
from app.services import Services

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


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open every dependency named by `settings` and return the process's Services."""
    from app.ingest import make_writer

    ch = open_clickhouse(settings)
    pg_url = resolve_database_url(settings)
    if migrate:
        migrate_all(settings, ch, pg_url)
    redis_client = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(settings.redis_url)
    return Services(
        settings=settings,
        ch=ch,
        pg=open_pool(pg_url, timeout_s=settings.pg_timeout_s),
        writer=make_writer(ch, settings),
        redis=redis_client,
        extras={"database_url": pg_url},
    )
