"""The migration runner: applies `sql/` to ClickHouse and PostgreSQL, in order, once.

Two ordered sets of files, each with its own ledger table:

* ClickHouse: `sql/migrations/clickhouse/*.sql`, then `sql/materialized_views/*.sql`,
  rendered with jinja2 for what differs between embedded and server (database, engine,
  cluster, the Kafka queue). Ledger: `<db>.schema_migrations`.
* PostgreSQL: `sql/migrations/postgres/*.sql`. Ledger: `schema_migrations`.

A file already in the ledger is skipped if its checksum matches and reported (never
re-applied) if it does not. A failing statement raises `MigrationError` naming the file,
the statement's position and its first line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from app.clickhouse import ClickHouse

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


def render_clickhouse(
    *,
    database: str,
    events_ttl_days: int = 90,
    cluster: str | None = None,
    kafka_brokers: str | None = None,
    kafka_topic: str = "clickpulse_events",
    sql_dir: Path = SQL_DIR,
) -> list[Migration]:
    """The ClickHouse migrations then materialized views, rendered for this deployment."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    context: dict[str, Any] = {
        "db": database,
        "on_cluster": f"ON CLUSTER {cluster}" if cluster else "",
        "engine": _engine_macro(cluster),
        "events_ttl_days": int(events_ttl_days),
        "kafka_brokers": kafka_brokers,
        "kafka_topic": kafka_topic,
        "kafka_group": f"{database}_events",
    }
    files = sorted((sql_dir / "migrations" / "clickhouse").glob("*.sql"))
    files += sorted((sql_dir / "materialized_views").glob("*.sql"))
    out = []
    for path in files:
        rel = path.relative_to(sql_dir).as_posix()
        out.append(Migration(rel, env.from_string(path.read_text()).render(**context)))
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


def migrate_clickhouse(ch: ClickHouse, migrations: list[Migration]) -> MigrationReport:
    """Apply pending ClickHouse migrations to `ch.database`, recording each in the ledger."""
    db = ch.database
    ch.command_sync(f"CREATE DATABASE IF NOT EXISTS {db}")
    ch.command_sync(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY name"
    )
    rows = ch.query_sync(f"SELECT name, checksum FROM {db}.schema_migrations").rows
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
