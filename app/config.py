"""Settings, read once from the environment. Every variable is listed in README.md."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError


_KINDS: dict[type, tuple[Callable[[str], Any], str]] = {
    int: (int, "an integer"),
    float: (float, "a number"),
    bool: (_parse_bool, "a boolean (1/0, true/false)"),
}


def _env(name: str, default: T, kind: type[T]) -> T:
    """The variable parsed as `kind`, `default` when unset or empty; a clear error otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    parse, what = _KINDS[kind]
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from exc


def _env_optional(name: str, kind: type[T]) -> T | None:
    """The variable parsed as `kind`, None when unset or empty."""
    return _env(name, None, kind)  # type: ignore[arg-type]


def _env_int(name: str, default: int) -> int:
    return _env(name, default, int)


def _env_float(name: str, default: float) -> float:
    return _env(name, default, float)


def _env_bool(name: str, default: bool) -> bool:
    return _env(name, default, bool)


# What one process serves (docs/deployment.md): `ingest` = POST /v1/events and the event
# writer / Kafka sink; `api` = the REST API and the UI; `push` = /ws/subscribe, the poller, the
# dedicated push transport and the alerts evaluator (it runs on the poller's ticks).
# /healthz and /readyz are served by every role.
ROLES: tuple[str, ...] = ("ingest", "api", "push")


def _parse_roles(raw: str) -> tuple[str, ...]:
    """A comma list of roles, in canonical order, without duplicates; ValueError otherwise."""
    names = {part.strip().lower() for part in raw.split(",") if part.strip()}
    unknown = names - set(ROLES)
    if unknown or not names:
        raise ValueError
    return tuple(role for role in ROLES if role in names)


def _env_roles(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return _parse_roles(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a comma list of {', '.join(ROLES)}, got {raw!r}") from exc


def _kafka_bootstrap(env: Any) -> str | None:
    """The broker list: KAFKA_BOOTSTRAP, or its older name CLICKPULSE_KAFKA_BROKERS."""
    new = (env.get("KAFKA_BOOTSTRAP") or "").strip()
    old = (env.get("CLICKPULSE_KAFKA_BROKERS") or "").strip()
    if new and old and new != old:
        raise ValueError(
            f"KAFKA_BOOTSTRAP ({new!r}) and its alias CLICKPULSE_KAFKA_BROKERS ({old!r}) differ; "
            "set only KAFKA_BOOTSTRAP"
        )
    return new or old or None


LOG_FORMATS = ("text", "json")
# A scrape token shorter than this is refused: it guards every org's figures.
METRICS_TOKEN_MIN_CHARS = 16


def log_format_from_env() -> str:
    """CLICKPULSE_LOG_FORMAT, lower-cased ("text" when unset); Settings checks the value. Read
    on its own too: the CLI configures logging before the settings are read."""
    return (os.environ.get("CLICKPULSE_LOG_FORMAT") or "text").strip().lower()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_metrics(s: Settings) -> None:
    """The metrics port shows every org's figures: beyond loopback only with a scrape token."""
    if s.metrics_token is not None and len(s.metrics_token) < METRICS_TOKEN_MIN_CHARS:
        raise ValueError(
            f"CLICKPULSE_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_CHARS} characters"
        )
    if s.metrics_port is not None and not s.metrics_token and not _is_loopback(s.metrics_host):
        raise ValueError(
            f"CLICKPULSE_METRICS_HOST={s.metrics_host} is reachable from other machines: set "
            "CLICKPULSE_METRICS_TOKEN (the scrape token), or listen on a loopback address"
        )
    if s.metrics_top_orgs < 0:
        raise ValueError("CLICKPULSE_METRICS_TOP_ORGS must be >= 0")


class Settings(msgspec.Struct, kw_only=True):
    """What the app needs to know about its surroundings."""

    data_dir: str = "data"
    clickhouse_url: str | None = None
    clickhouse_database: str = "clickpulse"
    clickhouse_cluster: str | None = None
    # The facade's worker threads (every ClickHouse call of this process runs on one), shared
    # fairly between orgs (app/clickhouse/fair.py); how long a call may wait for one → 429.
    # A waiting query costs nothing; each retry after a 429 costs the event loop a compile, so a
    # longer wait means an org over its share churns less (bench/fairness.py: at 2 s its retries
    # stalled the loop for seconds; at 5-8 s not). Below the query timeout, so it ends as a 429.
    clickhouse_workers: int = 8
    clickhouse_queue_wait_s: float = 5.0
    # The most of those threads one org may hold at once; None = half of them (at least 1),
    # with embedded chDB also at most the CPU count (app/clickhouse/__init__.py).
    clickhouse_org_workers: int | None = None
    database_url: str | None = None
    redis_url: str | None = None
    kafka_brokers: str | None = None  # env KAFKA_BOOTSTRAP (alias CLICKPULSE_KAFKA_BROKERS)
    kafka_topic: str = "clickpulse_events"
    # Embedded bridge (app/ingest/kafka/bridge.py): its consumer group (committed offsets live there).
    kafka_group: str = "clickpulse-bridge"
    # How long ingest waits for the broker's acknowledgement before answering 503: librdkafka's
    # own default (message.timeout.ms, 300 s) would hold every request through an outage.
    kafka_delivery_timeout_ms: int = 5000
    # Bridge consumer-group session: a dead bridge's partitions are reassigned after this; on
    # tansu a join also waits about half of it. 6000 is the smallest Kafka accepts by default.
    kafka_session_timeout_ms: int = 6000
    # Consumer threads of the Kafka engine table on each ClickHouse node (server mode): every
    # node consumes, so the topic needs at least nodes x this many partitions to use them all.
    kafka_num_consumers: int = 1
    # The longest the Kafka engine holds rows before inserting a block (server mode): lower is
    # fresher dashboards, higher is larger blocks and less CPU per row (docs/deployment.md).
    kafka_flush_interval_ms: int = 250
    # Which parts this process runs (ROLES above); all of them by default.
    roles: tuple[str, ...] = ROLES
    host: str = "127.0.0.1"
    port: int = 8000
    events_ttl_days: int = 90
    ingest_max_events: int = 10_000
    # Deepest [ / { nesting accepted in any JSON a client sends (bodies, JSON query parameters,
    # WebSocket frames): decoders recurse per level, so unbounded depth is a 500 (app/jsondepth.py).
    max_json_depth: int = 64
    ingest_max_body_bytes: int = 10 * 1024 * 1024
    ingest_max_event_bytes: int = 32 * 1024
    ingest_max_past_skew_s: int = 7 * 24 * 3600
    ingest_max_future_skew_s: int = 300
    ingest_rate_per_s: int = 200_000
    # How long a looked-up API key (or its absence) is trusted before asking PostgreSQL again:
    # the longest a revoked key keeps working on another node. 0 disables the cache.
    ingest_key_cache_ttl_s: float = 5.0
    # Take the client IP (for country enrichment) from X-Forwarded-For: only behind a proxy
    # that sets it, otherwise clients could choose their country.
    ingest_trust_forwarded_for: bool = False
    # Idempotency (docs/ingest.md): how long an `Idempotency-Key`'s answer is kept (Redis when
    # configured, else <data_dir>/ingest-idempotency.sqlite3); how long, and up to how many,
    # event ids per process are remembered to drop a repeated id.
    ingest_idempotency_ttl_s: int = 24 * 3600
    ingest_event_id_window_s: int = 3600
    ingest_event_id_max: int = 1_000_000
    # 100k-row inserts run ~2x the rows/s of 20k ones with every rollup MV attached.
    writer_max_rows: int = 100_000
    writer_max_delay_ms: int = 100
    writer_max_pending_rows: int = 500_000
    # Write-ahead log (docs/ingest.md): a request is acknowledged once its rows are in the WAL;
    # the writer inserts from memory in large batches and retires WAL segments afterwards.
    # off: no WAL, a request waits for the INSERT holding its rows (the pre-WAL behaviour).
    wal_enabled: bool = True
    wal_dir: str | None = None  # default <data_dir>/wal
    # fsync the WAL before acknowledging (group commit): survives power loss, not just a crash.
    wal_fsync: bool = False
    # Backpressure: more WAL bytes than this not yet inserted -> 503 (nothing accepted).
    wal_max_bytes: int = 512 * 1024 * 1024
    # HTTP API: body size, timeouts, cache, per-org quotas (orgs.limits overrides)
    pg_timeout_s: float = 2.0
    query_timeout_s: float = 10.0
    cache_max_entries: int = 10_000
    cache_keep_s: int = 3600
    auth_cache_s: float = 5.0
    # Requests per minute through one public dashboard link (page, dashboard, data), per node.
    share_rate_per_min: int = 120
    # Failed authentications (user tokens and ingest keys): per client address and per token
    # prefix, at most this many in a window of this many seconds, then 429 + Retry-After.
    auth_fail_max: int = 30
    auth_fail_window_s: float = 60.0
    # How long a token or key PostgreSQL called unknown is answered 401 without asking again.
    auth_negative_cache_s: float = 2.0
    # Lifetime of a new user token in days (0 = never expires).
    token_ttl_days: int = 90
    # Lifetime of a WebSocket ticket (POST /ws/ticket): single use, seconds.
    ws_ticket_ttl_s: float = 30.0
    # Ingest keys seen in the last this many seconds keep working while PostgreSQL is down.
    ingest_key_stale_s: float = 900.0
    # After PostgreSQL failed, answer "unavailable" at once for this long, then let one
    # request probe it (circuit breaker).
    pg_breaker_s: float = 2.0
    limit_rate_per_s: float = 50.0
    limit_burst: int = 100
    limit_concurrent_queries: int = 4
    limit_rows_per_minute: int = 500_000_000
    # Operator ceilings (app/limits.py): no org's effective limit goes above them, whatever
    # orgs.limits says; PUT /org/limits refuses more (422). None = the default above, so by
    # default an org admin can only lower its limits.
    limit_max_rate_per_s: float | None = None
    limit_max_burst: int | None = None
    limit_max_concurrent_queries: int | None = None
    limit_max_rows_per_minute: int | None = None
    # Live push (app/push): poller tick (0 = ticks only when driven, for tests),
    # seconds re-read each tick for late updates, pipeline lag that makes a view stale,
    # per-socket protocol limits, slow-consumer cut-off and the Redis leader lease.
    push_tick_ms: int = 250
    push_reread_s: int = 5
    # every key's whole range is re-read this often (s; 0 = never): the fallback that makes a
    # viewer converge to history for late rows nobody reported (app/push/late.py)
    push_full_reread_s: int = 30
    # the same where every insert is reported (the writer here, other nodes' through Redis):
    # then only the net under a lost report, so rarer — each round re-reads about
    # push_max_range_s / this many rounds' worth of rows on top of the regular window
    push_full_reread_reported_s: int = 600
    # a round polls only the keys of orgs whose inserts were reported since the last round, and
    # every key this often (s, on the wall clock; 0 = every round polls every key). Only where
    # inserts are reported (the writer here; other nodes' through Redis; not Kafka ingest).
    push_poll_all_s: int = 1
    push_stale_ms: int = 5000
    push_max_range_s: int = 600
    push_max_subscriptions: int = 50
    push_max_message_bytes: int = 64 * 1024
    push_max_msgs_per_s: float = 20.0
    push_max_queue: int = 256
    push_slow_consumer_s: float = 10.0
    push_gc_freeze: bool = True  # app/push/gcpolicy.py: sockets and keys out of full GC scans
    push_lease_ms: int = 5000
    # Optional dedicated push listener (app/push/dedicated.py): `websockets` served directly on
    # this port (path /ws/subscribe), next to the ASGI route. None = off; 0 = any free port.
    push_port: int | None = None
    # The ClickHouse HTTP interface for analysts (app/api/clickhouse_http): ClickHouse clients
    # connect here with an analyst token as password. None = off; 0 = any free port.
    clickhouse_http_port: int | None = None
    # Alerts (app/alerts): a second is evaluated once it is this old past its end
    # (plus the pipeline lag); definitions are re-read this often (other nodes' edits);
    # webhook timeout per attempt, retries after the first attempt, first backoff (doubling).
    alert_settle_ms: int = 1500
    alert_sync_s: float = 10.0
    alert_webhook_timeout_s: float = 5.0
    alert_webhook_retries: int = 3
    alert_webhook_backoff_s: float = 1.0
    # Let webhooks reach loopback/private addresses and local names (self-hosted installs
    # whose receivers live on the internal network). Off: SSRF guard, see docs/alerts.md.
    alert_webhook_allow_private: bool = False
    # Operators (app/observability): Prometheus metrics on their own port (None = off; 0 = any
    # free port), on this host, behind this scrape token (bearer or basic-auth password); a
    # non-loopback host needs the token. Per-org series are capped at `metrics_top_orgs` orgs.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = None
    metrics_top_orgs: int = 20
    # "text" or "json" (one JSON object per line; redacted like every log line).
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.roles or set(self.roles) - set(ROLES):
            raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {self.roles!r}")
        if self.clickhouse_cluster and not self.clickhouse_url:
            raise ValueError(
                "CLICKPULSE_CLICKHOUSE_CLUSTER needs CLICKPULSE_CLICKHOUSE_URL "
                "(embedded chDB is one process, not a cluster)"
            )
        for name in ("rate_per_s", "burst", "concurrent_queries", "rows_per_minute"):
            ceiling = getattr(self, f"limit_max_{name}")
            default = getattr(self, f"limit_{name}")
            if ceiling is not None and (ceiling <= 0 or ceiling < default):
                raise ValueError(
                    f"CLICKPULSE_LIMIT_MAX_{name.upper()} ({ceiling}) must be positive and at "
                    f"least CLICKPULSE_LIMIT_{name.upper()} ({default})"
                )
        if self.clickhouse_workers < 1 or self.clickhouse_queue_wait_s <= 0:
            raise ValueError(
                "CLICKPULSE_CLICKHOUSE_WORKERS must be >= 1 and "
                "CLICKPULSE_CLICKHOUSE_QUEUE_WAIT_S > 0"
            )
        if self.clickhouse_org_workers is not None and not (
            1 <= self.clickhouse_org_workers <= self.clickhouse_workers
        ):
            raise ValueError(
                "CLICKPULSE_CLICKHOUSE_ORG_WORKERS must be between 1 and "
                "CLICKPULSE_CLICKHOUSE_WORKERS"
            )
        _check_metrics(self)
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"CLICKPULSE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                f"got {self.log_format!r}"
            )
        if self.kafka_num_consumers < 1 or self.kafka_flush_interval_ms < 1:
            raise ValueError(
                "CLICKPULSE_KAFKA_NUM_CONSUMERS and CLICKPULSE_KAFKA_FLUSH_INTERVAL_MS must be >= 1"
            )

    @property
    def chdb_path(self) -> str:
        return os.path.join(self.data_dir, "clickhouse")

    @property
    def wal_path(self) -> str:
        return self.wal_dir or os.path.join(self.data_dir, "wal")

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
            "clickhouse_workers": _env_int("CLICKPULSE_CLICKHOUSE_WORKERS", 8),
            "clickhouse_queue_wait_s": _env_float("CLICKPULSE_CLICKHOUSE_QUEUE_WAIT_S", 5.0),
            "clickhouse_org_workers": _env_optional("CLICKPULSE_CLICKHOUSE_ORG_WORKERS", int),
            "database_url": env.get("DATABASE_URL") or None,
            "redis_url": env.get("REDIS_URL") or None,
            "kafka_brokers": _kafka_bootstrap(env),
            "kafka_topic": env.get("CLICKPULSE_KAFKA_TOPIC", "clickpulse_events"),
            "kafka_group": env.get("CLICKPULSE_KAFKA_GROUP") or "clickpulse-bridge",
            "kafka_delivery_timeout_ms": _env_int("CLICKPULSE_KAFKA_DELIVERY_TIMEOUT_MS", 5000),
            "kafka_session_timeout_ms": _env_int("CLICKPULSE_KAFKA_SESSION_TIMEOUT_MS", 6000),
            "kafka_num_consumers": _env_int("CLICKPULSE_KAFKA_NUM_CONSUMERS", 1),
            "kafka_flush_interval_ms": _env_int("CLICKPULSE_KAFKA_FLUSH_INTERVAL_MS", 250),
            "roles": _env_roles("CLICKPULSE_ROLES", ROLES),
            "host": env.get("CLICKPULSE_HOST", "127.0.0.1"),
            "port": _env_int("CLICKPULSE_PORT", 8000),
            "events_ttl_days": _env_int("CLICKPULSE_EVENTS_TTL_DAYS", 90),
            "ingest_max_events": _env_int("CLICKPULSE_INGEST_MAX_EVENTS", 10_000),
            "max_json_depth": _env_int("CLICKPULSE_MAX_JSON_DEPTH", 64),
            "ingest_max_body_bytes": _env_int("CLICKPULSE_INGEST_MAX_BODY_BYTES", 10 * 1024 * 1024),
            "ingest_max_event_bytes": _env_int("CLICKPULSE_INGEST_MAX_EVENT_BYTES", 32 * 1024),
            "ingest_max_past_skew_s": _env_int("CLICKPULSE_INGEST_MAX_PAST_SKEW_S", 7 * 24 * 3600),
            "ingest_max_future_skew_s": _env_int("CLICKPULSE_INGEST_MAX_FUTURE_SKEW_S", 300),
            "ingest_rate_per_s": _env_int("CLICKPULSE_INGEST_RATE_PER_S", 200_000),
            "ingest_key_cache_ttl_s": _env_float("CLICKPULSE_INGEST_KEY_CACHE_TTL_S", 5.0),
            "ingest_trust_forwarded_for": _env_bool("CLICKPULSE_INGEST_TRUST_FORWARDED_FOR", False),
            "ingest_idempotency_ttl_s": _env_int("CLICKPULSE_INGEST_IDEMPOTENCY_TTL_S", 24 * 3600),
            "ingest_event_id_window_s": _env_int("CLICKPULSE_INGEST_EVENT_ID_WINDOW_S", 3600),
            "ingest_event_id_max": _env_int("CLICKPULSE_INGEST_EVENT_ID_MAX", 1_000_000),
            "writer_max_rows": _env_int("CLICKPULSE_WRITER_MAX_ROWS", 100_000),
            "writer_max_delay_ms": _env_int("CLICKPULSE_WRITER_MAX_DELAY_MS", 100),
            "writer_max_pending_rows": _env_int("CLICKPULSE_WRITER_MAX_PENDING_ROWS", 500_000),
            "wal_enabled": _env_bool("CLICKPULSE_WAL", True),
            "wal_dir": env.get("CLICKPULSE_WAL_DIR") or None,
            "wal_fsync": _env_bool("CLICKPULSE_WAL_FSYNC", False),
            "wal_max_bytes": _env_int("CLICKPULSE_WAL_MAX_BYTES", 512 * 1024 * 1024),
            "pg_timeout_s": _env_float("CLICKPULSE_PG_TIMEOUT_S", 2.0),
            "query_timeout_s": _env_float("CLICKPULSE_QUERY_TIMEOUT_S", 10.0),
            "cache_max_entries": _env_int("CLICKPULSE_CACHE_MAX_ENTRIES", 10_000),
            "cache_keep_s": _env_int("CLICKPULSE_CACHE_KEEP_S", 3600),
            "auth_cache_s": _env_float("CLICKPULSE_AUTH_CACHE_S", 5.0),
            "share_rate_per_min": _env_int("CLICKPULSE_SHARE_RATE_PER_MIN", 120),
            "auth_fail_max": _env_int("CLICKPULSE_AUTH_FAIL_MAX", 30),
            "auth_fail_window_s": _env_float("CLICKPULSE_AUTH_FAIL_WINDOW_S", 60.0),
            "auth_negative_cache_s": _env_float("CLICKPULSE_AUTH_NEGATIVE_CACHE_S", 2.0),
            "token_ttl_days": _env_int("CLICKPULSE_TOKEN_TTL_DAYS", 90),
            "ws_ticket_ttl_s": _env_float("CLICKPULSE_WS_TICKET_TTL_S", 30.0),
            "ingest_key_stale_s": _env_float("CLICKPULSE_INGEST_KEY_STALE_S", 900.0),
            "pg_breaker_s": _env_float("CLICKPULSE_PG_BREAKER_S", 2.0),
            "limit_rate_per_s": _env_float("CLICKPULSE_LIMIT_RATE_PER_S", 50.0),
            "limit_burst": _env_int("CLICKPULSE_LIMIT_BURST", 100),
            "limit_concurrent_queries": _env_int("CLICKPULSE_LIMIT_CONCURRENT_QUERIES", 4),
            "limit_rows_per_minute": _env_int("CLICKPULSE_LIMIT_ROWS_PER_MINUTE", 500_000_000),
            "limit_max_rate_per_s": _env_optional("CLICKPULSE_LIMIT_MAX_RATE_PER_S", float),
            "limit_max_burst": _env_optional("CLICKPULSE_LIMIT_MAX_BURST", int),
            "limit_max_concurrent_queries": _env_optional(
                "CLICKPULSE_LIMIT_MAX_CONCURRENT_QUERIES", int
            ),
            "limit_max_rows_per_minute": _env_optional("CLICKPULSE_LIMIT_MAX_ROWS_PER_MINUTE", int),
            "push_tick_ms": _env_int("CLICKPULSE_PUSH_TICK_MS", 250),
            "push_reread_s": _env_int("CLICKPULSE_PUSH_REREAD_S", 5),
            "push_full_reread_s": _env_int("CLICKPULSE_PUSH_FULL_REREAD_S", 30),
            "push_full_reread_reported_s": _env_int("CLICKPULSE_PUSH_FULL_REREAD_REPORTED_S", 600),
            "push_poll_all_s": _env_int("CLICKPULSE_PUSH_POLL_ALL_S", 1),
            "push_stale_ms": _env_int("CLICKPULSE_PUSH_STALE_MS", 5000),
            "push_max_range_s": _env_int("CLICKPULSE_PUSH_MAX_RANGE_S", 600),
            "push_max_subscriptions": _env_int("CLICKPULSE_PUSH_MAX_SUBSCRIPTIONS", 50),
            "push_max_message_bytes": _env_int("CLICKPULSE_PUSH_MAX_MESSAGE_BYTES", 64 * 1024),
            "push_max_msgs_per_s": _env_float("CLICKPULSE_PUSH_MAX_MSGS_PER_S", 20.0),
            "push_max_queue": _env_int("CLICKPULSE_PUSH_MAX_QUEUE", 256),
            "push_slow_consumer_s": _env_float("CLICKPULSE_PUSH_SLOW_CONSUMER_S", 10.0),
            "push_gc_freeze": _env_bool("CLICKPULSE_PUSH_GC_FREEZE", True),
            "push_lease_ms": _env_int("CLICKPULSE_PUSH_LEASE_MS", 5000),
            "push_port": (
                _env_int("CLICKPULSE_PUSH_PORT", 0)
                if env.get("CLICKPULSE_PUSH_PORT", "").strip()
                else None
            ),
            "clickhouse_http_port": (
                _env_int("CLICKPULSE_CLICKHOUSE_HTTP_PORT", 0)
                if env.get("CLICKPULSE_CLICKHOUSE_HTTP_PORT", "").strip()
                else None
            ),
            "alert_settle_ms": _env_int("CLICKPULSE_ALERT_SETTLE_MS", 1500),
            "alert_sync_s": _env_float("CLICKPULSE_ALERT_SYNC_S", 10.0),
            "alert_webhook_timeout_s": _env_float("CLICKPULSE_ALERT_WEBHOOK_TIMEOUT_S", 5.0),
            "alert_webhook_retries": _env_int("CLICKPULSE_ALERT_WEBHOOK_RETRIES", 3),
            "alert_webhook_backoff_s": _env_float("CLICKPULSE_ALERT_WEBHOOK_BACKOFF_S", 1.0),
            "alert_webhook_allow_private": _env_bool(
                "CLICKPULSE_ALERT_WEBHOOK_ALLOW_PRIVATE", False
            ),
            "metrics_port": _env_optional("CLICKPULSE_METRICS_PORT", int),
            "metrics_host": env.get("CLICKPULSE_METRICS_HOST") or "127.0.0.1",
            "metrics_token": env.get("CLICKPULSE_METRICS_TOKEN") or None,
            "metrics_top_orgs": _env_int("CLICKPULSE_METRICS_TOP_ORGS", 20),
            "log_format": log_format_from_env(),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
