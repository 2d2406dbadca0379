"""The migration runner against real chDB and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from app.migrate import (
    MigrationError,
    migrate_clickhouse,
    migrate_postgres,
    read_postgres,
    render_clickhouse,
    split_statements,
)

EXPECTED_TABLES = {
    "events_queue",
    "events",
    "rollup_1s",
    "rollup_1m",
    "rollup_1h",
    "rollup_1d",
    "rollup_detail_1m",
    "rollup_detail_1h",
    "rollup_detail_1d",
    "schema_migrations",
}


def _tables(ch) -> set[str]:
    rows = ch.query_sync(
        "SELECT name FROM system.tables WHERE database = {db:String}", {"db": ch.database}
    ).rows
    return {r[0] for r in rows}


def test_schema_has_every_table_and_view(ch):
    names = _tables(ch)
    assert names >= EXPECTED_TABLES
    views = {n for n in names if n.endswith("_mv")}
    assert views == {
        "events_mv",
        "rollup_1s_mv",
        "rollup_1m_mv",
        "rollup_1h_mv",
        "rollup_1d_mv",
        "rollup_detail_1m_mv",
        "rollup_detail_1h_mv",
        "rollup_detail_1d_mv",
    }


def test_applying_twice_changes_nothing(ch):
    before = ch.query_sync(
        f"SELECT name, checksum FROM {ch.database}.schema_migrations ORDER BY name"
    ).rows
    report = migrate_clickhouse(ch, render_clickhouse(database=ch.database))
    assert report.applied == []
    assert len(report.skipped) == len(before) > 0
    after = ch.query_sync(
        f"SELECT name, checksum FROM {ch.database}.schema_migrations ORDER BY name"
    ).rows
    assert after == before


def test_edited_applied_clickhouse_file_is_reported(ch):
    migrations = render_clickhouse(database=ch.database)
    edited = [migrations[0].__class__(migrations[0].name, migrations[0].text + "\n-- edit")]
    with pytest.raises(MigrationError, match=r"clickhouse/0001_events\.sql was edited"):
        migrate_clickhouse(ch, edited + migrations[1:])


def test_failing_statement_names_file_and_statement(ch, tmp_path: Path):
    (tmp_path / "migrations" / "clickhouse").mkdir(parents=True)
    (tmp_path / "materialized_views").mkdir()
    (tmp_path / "migrations" / "clickhouse" / "0001_ok.sql").write_text(
        "CREATE TABLE {{ db }}.ok (x UInt8) ENGINE = Memory;\n"
    )
    (tmp_path / "migrations" / "clickhouse" / "0002_bad.sql").write_text(
        "CREATE TABLE {{ db }}.fine (x UInt8) ENGINE = Memory;\n"
        "-- a comment; with a semicolon\n"
        "CREATE TABLE {{ db }}.broken (x NoSuchType) ENGINE = Memory;\n"
    )
    other = ch.with_database(f"t_{uuid.uuid4().hex[:12]}")
    try:
        with pytest.raises(MigrationError) as err:
            migrate_clickhouse(other, render_clickhouse(database=other.database, sql_dir=tmp_path))
        message = str(err.value)
        assert "migrations/clickhouse/0002_bad.sql: statement 2 failed" in message
        assert "broken" in message
        applied = other.query_sync(f"SELECT name FROM {other.database}.schema_migrations").rows
        assert applied == [["migrations/clickhouse/0001_ok.sql"]]
    finally:
        other.command_sync(f"DROP DATABASE IF EXISTS {other.database}")


def test_server_rendering_uses_kafka_cluster_and_replicated_engines():
    migrations = render_clickhouse(
        database="prod", cluster="main", kafka_brokers="kafka:9092", kafka_topic="ev"
    )
    text = "\n".join(m.text for m in migrations)
    assert "ENGINE = Kafka" in text and "kafka_broker_list = 'kafka:9092'" in text
    assert "ON CLUSTER main" in text
    assert (
        "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/rollup_1h'" in text
    )
    embedded = "\n".join(m.text for m in render_clickhouse(database="x"))
    assert "ENGINE = Kafka" not in embedded and "kafka_broker_list" not in embedded
    assert "ENGINE = Null" in embedded and "ON CLUSTER" not in embedded


def test_split_statements_respects_quotes_and_comments():
    sql = "SELECT ';' AS a; -- x; y\nSELECT 2 /* ; */; SELECT 'it\\'s;'"
    assert split_statements(sql) == ["SELECT ';' AS a", "SELECT 2", "SELECT 'it\\'s;'"]


def test_postgres_migrations_apply_once_and_detect_edits(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        again = migrate_postgres(conn, read_postgres())
        assert again.applied == [] and again.skipped == [m.name for m in read_postgres()]
        assert again.skipped[0] == "migrations/postgres/0001_config.sql"
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
        }
        assert {
            "orgs",
            "api_keys",
            "dashboards",
            "charts",
            "metrics",
            "alerts",
            "alert_events",
        } <= tables
        edited = [m.__class__(m.name, m.text + "\n-- edited") for m in read_postgres()]
        with pytest.raises(MigrationError, match="was edited after it was applied"):
            migrate_postgres(conn, edited)
