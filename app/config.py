"""Settings, read once from the environment. Every variable is listed in README.md."""

from __future__ import annotations

import os

import msgspec


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


class Settings(msgspec.Struct, kw_only=True):
    """What the app needs to know about its surroundings."""

    data_dir: str = "data"
    clickhouse_url: str | None = None
    clickhouse_database: str = "clickpulse"
    clickhouse_cluster: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    kafka_brokers: str | None = None
    kafka_topic: str = "clickpulse_events"
    host: str = "127.0.0.1"
    port: int = 8000
    events_ttl_days: int = 90
    ingest_max_events: int = 10_000
    ingest_max_body_bytes: int = 10 * 1024 * 1024
    ingest_max_event_bytes: int = 32 * 1024
    ingest_max_past_skew_s: int = 7 * 24 * 3600
    ingest_max_future_skew_s: int = 300
    ingest_rate_per_s: int = 200_000
    writer_max_rows: int = 20_000
    writer_max_delay_ms: int = 100
    writer_max_pending_rows: int = 500_000

    @property
    def chdb_path(self) -> str:
        return os.path.join(self.data_dir, "clickhouse")

    @property
    def pg_path(self) -> str:
        return os.path.join(self.data_dir, "postgres")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from CLICKPULSE_* (and the conventional DATABASE_URL, REDIS_URL) variables."""
        env = os.environ
        values: dict[str, object] = {
            "data_dir": env.get("CLICKPULSE_DATA_DIR", "data"),
            "clickhouse_url": env.get("CLICKPULSE_CLICKHOUSE_URL") or None,
            "clickhouse_database": env.get("CLICKPULSE_CLICKHOUSE_DATABASE", "clickpulse"),
            "clickhouse_cluster": env.get("CLICKPULSE_CLICKHOUSE_CLUSTER") or None,
            "database_url": env.get("DATABASE_URL") or None,
            "redis_url": env.get("REDIS_URL") or None,
            "kafka_brokers": env.get("CLICKPULSE_KAFKA_BROKERS") or None,
            "kafka_topic": env.get("CLICKPULSE_KAFKA_TOPIC", "clickpulse_events"),
            "host": env.get("CLICKPULSE_HOST", "127.0.0.1"),
            "port": _env_int("CLICKPULSE_PORT", 8000),
            "events_ttl_days": _env_int("CLICKPULSE_EVENTS_TTL_DAYS", 90),
            "ingest_max_events": _env_int("CLICKPULSE_INGEST_MAX_EVENTS", 10_000),
            "ingest_max_body_bytes": _env_int("CLICKPULSE_INGEST_MAX_BODY_BYTES", 10 * 1024 * 1024),
            "ingest_max_past_skew_s": _env_int("CLICKPULSE_INGEST_MAX_PAST_SKEW_S", 7 * 24 * 3600),
            "ingest_max_future_skew_s": _env_int("CLICKPULSE_INGEST_MAX_FUTURE_SKEW_S", 300),
            "ingest_rate_per_s": _env_int("CLICKPULSE_INGEST_RATE_PER_S", 200_000),
            "writer_max_rows": _env_int("CLICKPULSE_WRITER_MAX_ROWS", 20_000),
            "writer_max_delay_ms": _env_int("CLICKPULSE_WRITER_MAX_DELAY_MS", 100),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
