"""Fan-in live reads (app/querybuilder/fanin.py): the same shapes for many orgs in ONE guarded
statement, split back into exactly what each org's key's own statement returns — on `loaded`
(orgs 1 and 2 on the same seconds) and against `org1_only` (a copy holding only org 1: any
difference is org 2's rows leaking in)."""

from __future__ import annotations

import msgspec
import pytest
import sqlglot

from app.querybuilder import compile_metric, run_compiled
from app.querybuilder.batch import live_query
from app.querybuilder.builtin import BUILTIN_METRICS
from app.querybuilder.errors import MetricError, TenantGuardError
from app.querybuilder.execute import check_fan_in
from app.querybuilder.fanin import (
    compile_fan_in_batch,
    compile_fan_in_window,
    total_live_query,
)
from app.querybuilder.guard import FANIN_POLICY, verify_tenant_guard

from .test_batch import _rollup_key, corpus
from .test_hostile import HARMLESS


def own_rows(ch, org_id, text, filters, group_by, lo, hi, window=0):
    compiled = compile_metric(
        text,
        org_id=org_id,
        database=ch.database,
        time_from=lo,
        time_to=hi,
        granularity="1s",
        filters=filters,
        group_by=group_by,
        window_seconds=window,
    )
    return run_compiled(ch, compiled).dicts()


def fan_in_rows(ch, orgs, entries, lo, hi, wanted_orgs=None):
    queries = [live_query(t, filters=f, group_by=g) for t, f, g in entries]
    batch = compile_fan_in_batch(
        queries, org_ids=orgs, database=ch.database, time_from=lo, time_to=hi
    )
    check_fan_in(batch.compiled, ch.database)
    result = ch.query_sync(batch.compiled.sql, params=dict(batch.compiled.params))
    wanted = [(o, k) for o in (wanted_orgs or orgs) for k in range(len(entries))]
    return batch, batch.split(result.columns, result.types, result.rows, wanted)


def total_entries():
    return [e for e in corpus() if total_live_query(live_query(e[0], filters=e[1], group_by=e[2]))]


def test_fan_in_equals_each_orgs_own_statements(loaded):
    entries = total_entries()
    assert len(entries) >= 20
    for lo, hi in [(loaded.base + 10, loaded.base + 40), (loaded.base + 170, loaded.base + 200)]:
        _, split = fan_in_rows(loaded.ch, [1, 2], entries, lo, hi)
        for org_id in (1, 2):
            for k, entry in enumerate(entries):
                want = own_rows(loaded.ch, org_id, *entry, lo, hi)
                got = split[(org_id, k)]
                assert got == want, (org_id, entry)
                assert [list(map(type, r.values())) for r in got] == [
                    list(map(type, r.values())) for r in want
                ], entry


def test_org_1_reads_the_same_with_or_without_org_2_in_the_statement(loaded, org1_only):
    """The differential: fanned in with org 2 on `loaded`, org 1's results equal those on a
    database where org 2 does not exist at all."""
    hostile = [(t, [], None) for t in HARMLESS if total_live_query(live_query(t))]
    entries = total_entries() + [e for e in hostile if _rollup_key(loaded, e)]
    assert len(entries) > len(total_entries()) + 3
    lo, hi = loaded.base, loaded.base + 180
    _, together = fan_in_rows(loaded.ch, [1, 2], entries, lo, hi)
    _, alone = fan_in_rows(org1_only.ch, [1], entries, lo, hi)
    for k in range(len(entries)):
        assert together[(1, k)] == alone[(1, k)], entries[k]
    # Org 2's values (1e6 per event) are in org 2's results, never in org 1's.
    big = [
        v
        for (org, _), rows in together.items()
        for r in rows
        for name, v in r.items()
        if name != "t" and isinstance(v, int | float) and v >= 1_000_000
        if org == 1
    ]
    assert big == []


def test_an_org_not_asked_for_gets_nothing_and_an_org_without_rows_gets_the_fill(loaded):
    entries = total_entries()[:4]
    lo, hi = loaded.base, loaded.base + 10
    # Org 2 is read (in org_ids) but not wanted: its rows are dropped, never handed out.
    batch, split = fan_in_rows(loaded.ch, [1, 2], entries, lo, hi, wanted_orgs=[1])
    assert {org for org, _ in split} == {1}
    # Org 3 has no rows at all: every second filled, as its own statement would be.
    _, split = fan_in_rows(loaded.ch, [3], entries, lo, hi)
    for k, entry in enumerate(entries):
        assert split[(3, k)] == own_rows(loaded.ch, 3, *entry, lo, hi)


def test_windowed_builtin_fans_in_and_equals_each_orgs_own_statement(loaded, org1_only):
    builtin = BUILTIN_METRICS["active_users"]
    query = live_query(builtin.text)
    lo, hi = loaded.base + 100, loaded.base + 130
    for data, orgs in ((loaded, [1, 2, 3]), (org1_only, [1])):
        batch = compile_fan_in_window(
            query,
            builtin.window_seconds,
            org_ids=[1],
            database=data.database,
            time_from=lo,
            time_to=lo + 5,
        ).bind(lo, hi, orgs)
        check_fan_in(batch.compiled, data.database)
        result = data.ch.query_sync(batch.compiled.sql, params=dict(batch.compiled.params))
        split = batch.split(result.columns, result.types, result.rows, [(o, 0) for o in orgs])
        for org_id in orgs:
            want = own_rows(data.ch, org_id, builtin.text, [], None, lo, hi, window=300)
            assert split[(org_id, 0)] == want, org_id
        if data is loaded:
            together = split[(1, 0)]
        else:
            assert split[(1, 0)] == together


def test_non_total_shapes_are_not_fanned_in():
    assert total_live_query(live_query("SELECT countIf(event = 'x') / count() AS r"))
    assert total_live_query(live_query("SELECT count() AS n WHERE props['plan'] = 'pro'"))
    for text in [
        "SELECT count() % (count() - 5) AS r",  # integer modulo by zero raises
        "SELECT topK(3)(country) AS top",
    ]:
        assert not total_live_query(live_query(text)), text
        with pytest.raises(MetricError):
            compile_fan_in_batch(
                [live_query(text)], org_ids=[1, 2], database="db", time_from=0, time_to=10
            )


def _tampered(sql: str, database: str) -> list[str]:
    guard = "has({org_ids: Array(UInt32)}, org_id)"
    return [
        sql.replace(guard + " AND ", "", 1),  # guard dropped
        sql.replace(guard, "has({p0: Array(UInt32)}, org_id)", 1),  # another parameter
        sql.replace(guard, "org_id IN (1, 2)", 1),
        sql.replace(guard, "has({org_ids: Array(UInt32)}, org_id) OR 1", 1),
        sql.replace(" LIMIT 1000000000000000000", "", 1),  # barrier dropped
        sql.replace("SELECT org_id AS __org, ", "SELECT 1 AS __org, ", 1),  # not grouped by org
        sql.replace("SELECT org_id AS __org, ", "SELECT device AS __org, ", 1),
        sql.replace("GROUP BY __org, ", "GROUP BY ", 1),
        sql.replace("LIMIT 100000 BY __org, __k", "LIMIT 100000", 1),  # a cut across orgs
        sql.replace("LIMIT 100000 BY __org, __k", "LIMIT 100000 BY __k", 1),
        sql.replace(
            "AS __k,", "AS __k, sum(events) OVER (PARTITION BY __k) AS leak,", 1
        ),  # a window across orgs
        sql.replace("AS __k,", f"AS __k, (SELECT count() FROM {database}.events) AS leak,", 1),
        sql.replace("AS rollup_1s WHERE ", "AS rollup_1s WHERE org_id = 2 OR ", 1),
        sql.replace("AS __k,", "AS __k, {org_ids: Array(UInt32)} AS o,", 1),
        sql.replace("GROUP BY __org, ", "GROUP BY __org, ", 1) + " WITH TOTALS",
    ]


def test_a_tampered_fan_in_statement_is_refused(loaded):
    batch, _ = fan_in_rows(loaded.ch, [1, 2], total_entries()[:6], loaded.base, loaded.base + 30)
    sql = batch.compiled.sql
    verify_tenant_guard(
        sqlglot.parse_one(sql, dialect="clickhouse"),
        (1, 2),
        database=loaded.database,
        params=dict(batch.compiled.params),
        policy=FANIN_POLICY,
    )
    for bad in _tampered(sql, loaded.database):
        assert bad != sql, bad
        with pytest.raises(TenantGuardError):
            check_fan_in(msgspec.structs.replace(batch.compiled, sql=bad), loaded.database)
    # The orgs parameter must be exactly the statement's orgs, sorted, and no single org_id.
    params = dict(batch.compiled.params)
    for wrong in (
        {**params, "org_ids": [1, 2, 3]},
        {**params, "org_ids": [2, 1]},
        {**params, "org_id": 1},
        {k: v for k, v in params.items() if k != "org_ids"},
    ):
        with pytest.raises(TenantGuardError):
            check_fan_in(msgspec.structs.replace(batch.compiled, params=wrong), loaded.database)
    for orgs in ((), (2, 1), (1, 1), (0,), (True,)):
        with pytest.raises(TenantGuardError):
            check_fan_in(msgspec.structs.replace(batch.compiled, org_ids=orgs), loaded.database)
