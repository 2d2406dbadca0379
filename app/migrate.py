"""The migration runner: applies `sql/` to ClickHouse and PostgreSQL, in order, once.

Two ordered sets of files, each with its own ledger table:

* ClickHouse: `sql/migrations/clickhouse/*.sql`, then `sql/materialized_views/*.sql`,
  rendered with jinja2 for what differs between embedded and server (database, engine,
  cluster, the Kafka queue; see `render_clickhouse` and docs/pipeline.md). A file that renders
  to no statement in this variant (e.g. the Kafka dead-letter view without Kafka) is left out.
  Ledger: `<db>.schema_migrations` (replicated to every node in cluster mode).
* PostgreSQL: `sql/migrations/postgres/*.sql`. Ledger: `schema_migrations`.

A file already in the ledger is skipped if its checksum matches and reported (never
re-applied) if it does not. A failing statement raises `MigrationError` naming the file,
the statement's position and its first line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from app.clickhouse import ClickHouse, ClickHouseError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


class MigrationError(Exception):
    """A migration could not be applied, or an applied file has been edited since."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # e.g. "clickhouse/0001_events.sql", stable across checkouts
    text: str  # the rendered SQL

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationReport:
    applied: list[str]
    skipped: list[str]


def split_statements(sql: str) -> list[str]:
    """Split a script on `;`, ignoring those inside quotes and comments."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and sql[end] != ch:
                end += 2 if sql[end] == "\\" else 1
            current.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif ch == ";":
            statements.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _engine_macro(cluster: str | None) -> Callable[[str, str], str]:
    def engine(kind: str, table: str) -> str:
        if not cluster:
            return kind
        return (
            f"Replicated{kind}('/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}')"
        )

    return engine


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Rows of one org live on one shard (all Distributed tables shard alike), so the cascaded views,
# which run on the shard that received the insert, see all of an org's rows for a bucket, and
# an org's query can be sent to its shard only (optimize_skip_unused_shards).
SHARDING_KEY = "cityHash64(org_id)"


def _check_name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} must be a plain identifier, got {value!r}")
    return value


def _check_literal(what: str, value: str) -> str:
    # Rendered inside '...' in the Kafka table's SETTINGS.
    if not value or any(ch in value for ch in "'\\\n"):
        raise ValueError(f"{what} cannot be empty or hold quotes, backslashes or newlines")
    return value


def render_clickhouse(
    *,
    database: str,
    events_ttl_days: int = 90,
    cluster: str | None = None,
    kafka_brokers: str | None = None,
    kafka_topic: str = "clickpulse_events",
    kafka_num_consumers: int = 1,
    kafka_flush_interval_ms: int = 250,
    sql_dir: Path = SQL_DIR,
) -> list[Migration]:
    """The ClickHouse migrations then materialized views, rendered for this deployment.

    The variant follows the arguments (docs/pipeline.md, "Variants"):

    * neither `cluster` nor `kafka_brokers` (embedded chDB, or one server without Kafka):
      `events_queue` is a Null table the app inserts into; text identical to what deployed
      ledgers hold;
    * `kafka_brokers`: `events_queue` is a Kafka engine table (`kafka_handle_error_mode =
      'stream'`), the views reading it skip rows with an `_error`, and
      `events_queue_errors(_mv)` keep those;
    * `cluster`: every statement `ON CLUSTER`, Replicated engines, storage tables named
      `<name>_local` with a Distributed `<name>` over them, so readers keep the plain names.
      Cascaded views read and write the local tables. Without Kafka, `events_queue` is a
      Distributed table over a Null `events_queue_local` (inserts go to the org's shard, whose
      views fill its local tables); with Kafka, the views of the Kafka table write to the
      Distributed tables, which route each row to its org's shard.
    """
    if cluster:
        _check_name("the ClickHouse cluster name", cluster)
    if kafka_brokers:
        _check_literal("the Kafka broker list", kafka_brokers)
        _check_literal("the Kafka topic", kafka_topic)
        if int(kafka_num_consumers) < 1 or int(kafka_flush_interval_ms) < 1:
            raise ValueError("kafka_num_consumers and kafka_flush_interval_ms must be >= 1")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    context: dict[str, Any] = {
        "db": database,
        "cluster": cluster or "",
        "on_cluster": f"ON CLUSTER {cluster}" if cluster else "",
        "engine": _engine_macro(cluster),
        # Suffix of the storage tables (cluster: `<name>_local` under a Distributed `<name>`).
        "local": "_local" if cluster else "",
        # Suffix of the tables the views of events_queue read and write: local when the queue
        # is itself on the org's shard (cluster without Kafka); the plain (Distributed) names
        # when a Kafka table on any node feeds them and rows still have to reach their shard.
        "queue_local": "_local" if cluster and not kafka_brokers else "",
        "sharding_key": SHARDING_KEY,
        "events_ttl_days": int(events_ttl_days),
        "kafka_brokers": kafka_brokers,
        "kafka_topic": kafka_topic,
        "kafka_group": f"{database}_events",
        "kafka_num_consumers": int(kafka_num_consumers),
        "kafka_flush_interval_ms": int(kafka_flush_interval_ms),
    }
    files = sorted((sql_dir / "migrations" / "clickhouse").glob("*.sql"))
    files += sorted((sql_dir / "materialized_views").glob("*.sql"))
    out = []
    for path in files:
        rel = path.relative_to(sql_dir).as_posix()
        text = env.from_string(path.read_text()).render(**context)
        if split_statements(text):
            out.append(Migration(rel, text))
    return out


def read_postgres(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The PostgreSQL migrations (plain SQL, nothing to render)."""
    files = sorted((sql_dir / "migrations" / "postgres").glob("*.sql"))
    return [Migration(p.relative_to(sql_dir).as_posix(), p.read_text()) for p in files]


def _plan(
    migrations: Iterable[Migration], ledger: dict[str, str]
) -> tuple[list[Migration], list[str]]:
    pending, skipped = [], []
    for m in migrations:
        known = ledger.get(m.name)
        if known is None:
            pending.append(m)
        elif known != m.checksum:
            raise MigrationError(
                f"{m.name} was edited after it was applied (checksum {known[:12]} in the "
                f"ledger, {m.checksum[:12]} on disk); add a new migration instead"
            )
        else:
            skipped.append(m.name)
    return pending, skipped


def _first_line(statement: str) -> str:
    return next((ln.strip() for ln in statement.splitlines() if ln.strip()), "")[:120]


def _apply_each(m: Migration, run: Callable[[str], None]) -> None:
    for idx, statement in enumerate(split_statements(m.text), start=1):
        try:
            run(statement)
        except Exception as exc:
            raise MigrationError(
                f"{m.name}: statement {idx} failed ({_first_line(statement)}): {exc}"
            ) from exc


def migrate_clickhouse(
    ch: ClickHouse, migrations: list[Migration], *, cluster: str | None = None
) -> MigrationReport:
    """Apply pending ClickHouse migrations to `ch.database`, recording each in the ledger.

    With `cluster` (the migrations rendered for it) the database is created on every node and
    the ledger is one ReplicatedMergeTree shared by all nodes (no {shard} in its path), so a
    later run through any node sees what was applied. The database and ledger are only
    created when the ledger cannot be read: an up-to-date node starting while another node is
    down sends no ON CLUSTER statement (those wait for every node)."""
    db = ch.database
    read_ledger = f"SELECT name, checksum FROM {db}.schema_migrations"
    try:
        rows = ch.query_sync(read_ledger).rows
    except ClickHouseError:  # no database or no ledger yet
        on_cluster, engine = "", "MergeTree"
        if cluster:
            on_cluster = f" ON CLUSTER {_check_name('the ClickHouse cluster name', cluster)}"
            engine = (
                "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', "
                "'{replica}')"
            )
        ch.command_sync(f"CREATE DATABASE IF NOT EXISTS {db}{on_cluster}")
        ch.command_sync(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on_cluster} "
            "(name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            f"ENGINE = {engine} ORDER BY name"
        )
        rows = ch.query_sync(read_ledger).rows
    pending, skipped = _plan(migrations, {name: checksum for name, checksum in rows})
    for m in pending:
        _apply_each(m, ch.command_sync)
        ch.command_sync(
            f"INSERT INTO {db}.schema_migrations (name, checksum) "
            "VALUES ({name:String}, {checksum:String})",
            {"name": m.name, "checksum": m.checksum},
        )
    return MigrationReport([m.name for m in pending], skipped)


def migrate_postgres(conn: Any, migrations: list[Migration]) -> MigrationReport:
    """Apply pending PostgreSQL migrations on a psycopg (sync) connection, each in a transaction."""
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "name text PRIMARY KEY, checksum text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
    rows = conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()
    pending, skipped = _plan(migrations, dict(rows))
    for m in pending:
        with conn.transaction():
            _apply_each(m, conn.execute)
            conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                (m.name, m.checksum),
            )
    return MigrationReport([m.name for m in pending], skipped)
