"""The table catalog: derived from the shipped DDL, and exactly the tables the compiler, the
tenant guard and the analysts' grants agree on."""

from __future__ import annotations

import pytest

from app.analyst_access import grants
from app.migrate import Migration, render_clickhouse
from app.querybuilder import catalog, guard, tables

DAY = 86_400


def test_tables_kinds_grains_and_retentions_follow_the_ddl():
    got = {t.name: (t.kind, t.grain, t.retention) for t in catalog.TABLES.values()}
    assert got == {
        "events_queue": ("internal", None, None),
        "events": ("raw", 1, None),
        "rollup_1s": ("rollup", 1, 600),
        "rollup_1m": ("rollup", 60, 7 * DAY),
        "rollup_1h": ("rollup", 3_600, 365 * DAY),
        "rollup_1d": ("rollup", DAY, None),
        "rollup_detail_1m": ("detail", 60, 7 * DAY),
        "rollup_detail_1h": ("detail", 3_600, 365 * DAY),
        "rollup_detail_1d": ("detail", DAY, None),
        "metrics_1s": ("view", 1, 600),
        "metrics_1m": ("view", 60, 7 * DAY),
        "metrics_1h": ("view", 3_600, 365 * DAY),
        "metrics_1d": ("view", DAY, None),
        "metrics_detail_1m": ("view", 60, 7 * DAY),
        "metrics_detail_1h": ("view", 3_600, 365 * DAY),
        "metrics_detail_1d": ("view", DAY, None),
    }


def test_compiler_families_are_coarsest_first():
    assert catalog.ROLLUP_TABLES == (
        ("rollup_1d", DAY, None),
        ("rollup_1h", 3_600, 365 * DAY),
        ("rollup_1m", 60, 7 * DAY),
        ("rollup_1s", 1, 600),
    )
    assert catalog.DETAIL_TABLES == (
        ("rollup_detail_1d", DAY, None),
        ("rollup_detail_1h", 3_600, 365 * DAY),
        ("rollup_detail_1m", 60, 7 * DAY),
    )
    assert tables.ROLLUP_TABLES is catalog.ROLLUP_TABLES


def test_guard_policies_read_exactly_the_catalog_tables():
    metric = {"events", "rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"} | {
        f"rollup_detail_{g}" for g in ("1m", "1h", "1d")
    }
    views = {f"metrics_{g}" for g in ("1s", "1m", "1h", "1d")} | {
        f"metrics_detail_{g}" for g in ("1m", "1h", "1d")
    }
    assert guard.METRIC_POLICY.tables == catalog.METRIC_TABLES == metric
    assert guard.ANALYST_POLICY.tables == catalog.ANALYST_TABLES == metric | views
    # Pipeline plumbing is never readable through the app.
    assert "events_queue" not in catalog.ANALYST_TABLES
    assert guard.MAX_ORG_ID == grants.MAX_ORG_ID == catalog.MAX_ORG_ID == 2**32 - 1


def test_analysts_grants_cover_the_catalog_tables_and_views():
    relations = grants.analyst_relations(render_clickhouse(database="db"), "db")
    assert {r.name for r in relations} == catalog.ANALYST_TABLES


def test_a_new_rollup_is_read_with_its_grain_and_ttl():
    ddl = Migration(
        "0099_rollup_5m.sql",
        "CREATE TABLE IF NOT EXISTS db.rollup_5m\n(\n    org_id UInt32,\n"
        "    bucket DateTime('UTC')\n)\nENGINE = AggregatingMergeTree\nORDER BY (org_id, bucket)\n"
        "TTL bucket + INTERVAL 2 DAY;\n"
        "CREATE VIEW IF NOT EXISTS db.metrics_5m AS\nSELECT org_id, bucket\nFROM db.rollup_5m;\n"
        "CREATE TABLE IF NOT EXISTS db.dead_letters\n(\n    org_id UInt32\n)\nENGINE = MergeTree\n"
        "ORDER BY org_id;\n",
    )
    got = catalog.read_tables([ddl])
    assert got["rollup_5m"] == catalog.Table("rollup_5m", "rollup", 300, 2 * DAY)
    assert got["metrics_5m"] == catalog.Table("metrics_5m", "view", 300, 2 * DAY)
    # Not a table the compiler or the guard knows: readable by neither.
    assert got["dead_letters"] == catalog.Table("dead_letters", "internal", None, None)


def test_a_ttl_unit_the_planner_cannot_count_is_refused():
    ddl = Migration(
        "0099_rollup_1w.sql",
        "CREATE TABLE IF NOT EXISTS db.rollup_1w\n(\n    org_id UInt32\n)\n"
        "ENGINE = AggregatingMergeTree\nORDER BY org_id\nTTL bucket + INTERVAL 3 MONTH;\n",
    )
    with pytest.raises(ValueError, match="rollup_1w: TTL unit MONTH"):
        catalog.read_tables([ddl])
