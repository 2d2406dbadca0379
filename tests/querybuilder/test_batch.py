"""Batched live reads (app/querybuilder/batch.py): many live keys of one org in one guarded
statement, split back into exactly what each key's own statement returns. Real chDB data
(`loaded`: org 1's and org 2's events on the same seconds)."""

from __future__ import annotations

import itertools

import pytest
import sqlglot

from app.querybuilder import compile_metric, run_compiled
from app.querybuilder.batch import batchable, compile_live_batch, live_query
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.execute import check_compiled
from app.querybuilder.guard import verify_tenant_guard

from .test_hostile import HARMLESS

# (metric text, filters, group_by): metrics, filters and group-bys a live key can have.
METRICS = [
    "SELECT count() AS n",
    "SELECT countIf(event = 'purchase') AS n",
    "SELECT sum(value) AS revenue",
    "SELECT avg(value) AS v",
    "SELECT uniq(user_id) AS visitors",
    "SELECT countIf(event = 'purchase') / uniq(user_id) AS conversion, count() AS n",
    "SELECT count() AS n WHERE country IN ('DE', 'FR')",
    "SELECT sumIf(value, event = 'purchase') AS v WHERE device = 'mobile'",
    "SELECT nullIf(count(), 0) AS n",
    "SELECT round(avg(value), 1) AS v, uniq(user_id) AS u WHERE event != 'error'",
    "SELECT count() AS n WHERE event = 'never-happens'",
    "SELECT avg(value) AS v WHERE event = 'never-happens'",
]
FILTERS = [
    [],
    [{"dimension": "country", "op": "=", "value": "DE"}],
    [{"dimension": "browser", "op": "in", "value": ["chrome", "firefox"]}],
    [{"dimension": "device", "op": "!=", "value": "mobile"}],
]
GROUP_BYS = [None, ["country"], ["browser", "device"], ["os"]]


def corpus() -> list[tuple[str, list, list | None]]:
    """Every metric once, with filters and group-bys cycling (co-prime lengths vary them)."""
    out = []
    for i, text in enumerate(METRICS):
        out.append((text, FILTERS[i % len(FILTERS)], GROUP_BYS[i % len(GROUP_BYS)]))
        out.append((text, FILTERS[(i + 1) % len(FILTERS)], GROUP_BYS[(i + 3) % len(GROUP_BYS)]))
    return out


def own_rows(ch, org_id, text, filters, group_by, lo, hi):
    """What the key's own statement (the per-key path) returns over [lo, hi)."""
    compiled = compile_metric(
        text,
        org_id=org_id,
        database=ch.database,
        time_from=lo,
        time_to=hi,
        granularity="1s",
        filters=filters,
        group_by=group_by,
    )
    assert batchable(live_query(text, filters=filters, group_by=group_by), compiled.plan)
    return run_compiled(ch, compiled).dicts()


def batched_rows(ch, org_id, entries, lo, hi):
    queries = [live_query(t, filters=f, group_by=g) for t, f, g in entries]
    batch = compile_live_batch(
        queries, org_id=org_id, database=ch.database, time_from=lo, time_to=hi
    )
    result = run_compiled(ch, batch.compiled)
    return batch, batch.split(result.columns, result.types, result.rows)


@pytest.mark.parametrize("org_id", [1, 2])
def test_batched_results_equal_each_keys_own_statement(loaded, org_id):
    entries = corpus()
    for lo, hi in [(loaded.base + 10, loaded.base + 40), (loaded.base + 170, loaded.base + 200)]:
        _, split = batched_rows(loaded.ch, org_id, entries, lo, hi)
        assert len(split) == len(entries)
        for entry, got in zip(entries, split, strict=True):
            want = own_rows(loaded.ch, org_id, *entry, lo, hi)
            assert got == want, entry
            # Same Python types too (0 vs 0.0, None): a delta carries them as they are.
            assert [list(map(type, r.values())) for r in got] == [
                list(map(type, r.values())) for r in want
            ], entry


def test_every_pair_and_single_key_batches_equal_own_statements(loaded):
    entries = corpus()
    lo, hi = loaded.base + 50, loaded.base + 62
    for pair in itertools.combinations(entries[:8], 2):
        _, split = batched_rows(loaded.ch, 1, list(pair), lo, hi)
        assert split == [own_rows(loaded.ch, 1, *e, lo, hi) for e in pair]
    for entry in entries:
        _, split = batched_rows(loaded.ch, 1, [entry], lo, hi)
        assert split == [own_rows(loaded.ch, 1, *entry, lo, hi)]


def test_one_statement_with_one_isolated_read(loaded):
    entries = corpus()
    batch, _ = batched_rows(loaded.ch, 1, entries, loaded.base, loaded.base + 30)
    sql = batch.compiled.sql
    assert sql.count("org_id = {org_id: UInt32}") == 1
    assert sql.count("FROM " + loaded.database + ".rollup_1s") == 1
    assert "arrayJoin([1, 2, " in sql
    # Re-parsed from its text, it passes the unchanged guard (what run_compiled checks).
    check_compiled(batch.compiled, loaded.database)
    verify_tenant_guard(
        sqlglot.parse_one(sql, dialect="clickhouse"),
        1,
        database=loaded.database,
        params=dict(batch.compiled.params),
    )


def _tampered(sql: str, database: str) -> list[str]:
    guard = "org_id = {org_id: UInt32}"
    return [
        sql.replace(guard + " AND ", "", 1),  # guard dropped
        sql.replace(guard, "org_id = {p0: UInt32}", 1),  # guard on another parameter
        sql.replace(guard, "org_id IN (1, 2)", 1),
        sql.replace(" LIMIT 1000000000000000000", "", 1),  # barrier dropped
        sql.replace(f"FROM {database}.rollup_1s", f"FROM {database}.rollup_1s AS r", 1),
        sql.replace("AS rollup_1s WHERE ", "AS rollup_1s WHERE org_id = 2 OR ", 1),
        sql.replace("AS rollup_1s WHERE", "AS rollup_1s ARRAY JOIN [1] AS z WHERE", 1),
        sql.replace("arrayJoin([", "arrayJoin((SELECT groupArray(org_id) FROM system.one), [", 1),
        sql.replace("AS __k,", f"AS __k, (SELECT count() FROM {database}.events) AS leak,", 1),
    ]


def test_a_tampered_batch_is_refused(loaded):
    batch, _ = batched_rows(loaded.ch, 1, corpus()[:6], loaded.base, loaded.base + 30)
    import msgspec

    for sql in _tampered(batch.compiled.sql, loaded.database):
        assert sql != batch.compiled.sql
        tampered = msgspec.structs.replace(batch.compiled, sql=sql)
        with pytest.raises(TenantGuardError):
            check_compiled(tampered, loaded.database)
    other_org = msgspec.structs.replace(batch.compiled, org_id=2)
    with pytest.raises(TenantGuardError):
        check_compiled(other_org, loaded.database)


def test_hostile_metric_texts_batch_without_crossing_orgs(loaded):
    """Metric texts trying to reach another org: each org's batch answers only its own rows,
    exactly as each key's own statement does, and org 2's values never appear in org 1's."""
    entries = [(text, [], None) for text in HARMLESS] + [
        ("SELECT sum(value) AS v WHERE os = 'mac' OR event = '1'' OR org_id = 2 --'", [], None),
        (
            "SELECT sum(value) AS v",
            [{"dimension": "browser", "op": "=", "value": "chrome"}],
            ["os"],
        ),
        (
            "SELECT sum(value) AS v",
            [{"dimension": "path", "op": "=", "value": "/org2-secret"}],
            None,
        ),
    ]
    entries = [e for e in entries if _rollup_key(loaded, e)]
    assert len(entries) >= 6
    lo, hi = loaded.base, loaded.base + 180
    for org_id in (1, 2):
        _, split = batched_rows(loaded.ch, org_id, entries, lo, hi)
        for entry, got in zip(entries, split, strict=True):
            assert got == own_rows(loaded.ch, org_id, *entry, lo, hi), (org_id, entry)
    # Org 2's values (1e6 per event; org 1's are under 15) never reach org 1's keys.
    for org_id, seen in ((1, False), (2, True)):
        _, split = batched_rows(loaded.ch, org_id, entries, lo, hi)
        assert (max(r["v"] or 0 for rows in split for r in rows) >= 1_000_000) is seen


def _rollup_key(loaded, entry) -> bool:
    text, filters, group_by = entry
    try:
        compiled = compile_metric(
            text,
            org_id=1,
            database=loaded.database,
            time_from=loaded.base,
            time_to=loaded.base + 10,
            granularity="1s",
            filters=filters,
            group_by=group_by,
        )
    except Exception:
        return False
    return batchable(live_query(text, filters=filters, group_by=group_by), compiled.plan)


def test_raw_and_window_keys_are_not_batchable(loaded):
    for text, window in [
        ("SELECT count() AS n WHERE props['plan'] = 'pro'", 0),
        ("SELECT uniq(user_id) AS u", 300),
    ]:
        compiled = compile_metric(
            text,
            org_id=1,
            database=loaded.database,
            time_from=loaded.base,
            time_to=loaded.base + 10,
            granularity="1s",
            window_seconds=window,
        )
        assert not batchable(live_query(text), compiled.plan)


def test_a_rebound_batch_is_the_batch_compiled_for_that_range(loaded):
    queries = [live_query(t, filters=f, group_by=g) for t, f, g in corpus()[:6]]

    def compiled(lo, hi):
        return compile_live_batch(
            queries, org_id=1, database=loaded.database, time_from=lo, time_to=hi
        )

    rebound = compiled(loaded.base, loaded.base + 5).bind(loaded.base + 20, loaded.base + 30)
    fresh = compiled(loaded.base + 20, loaded.base + 30)
    assert rebound.compiled == fresh.compiled
    assert (rebound.time_from, rebound.time_to) == (loaded.base + 20, loaded.base + 30)
