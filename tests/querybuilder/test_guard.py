"""The tenant guard: present on every table read, re-proven on the final SQL, fail closed."""

from __future__ import annotations

import msgspec
import pytest
import sqlglot
from sqlglot import exp

from app.querybuilder import (
    TenantGuardError,
    apply_tenant_guard,
    compile_funnel,
    compile_metric,
    compile_top_n,
    run_compiled,
    verify_tenant_guard,
)
from app.querybuilder.guard import guard_condition


def _compiled(loaded, text="SELECT count() AS v", **kwargs):
    kwargs.setdefault("granularity", "1m")
    return compile_metric(
        text,
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
        **kwargs,
    )


def _tamper(compiled, transform):
    tree = sqlglot.parse_one(compiled.sql, dialect="clickhouse")
    tree = transform(tree)
    return msgspec.structs.replace(compiled, sql=tree.sql(dialect="clickhouse"))


def _drop_guards(tree: exp.Expression) -> exp.Expression:
    # Each isolated read's WHERE is `guard AND bound AND bound`: keep only the bounds.
    for select in tree.find_all(exp.Select):
        where = select.args.get("where")
        if where is not None and isinstance(where.this, exp.And):
            left = where.this.this
            if isinstance(left, exp.And):
                where.this.set("this", left.expression)
    return tree


def test_a_compiled_query_runs(loaded):
    result = run_compiled(loaded.ch, _compiled(loaded))
    assert sum(r[1] for r in result.rows) == len(loaded.rows)


def test_tampered_sql_without_the_guard_is_refused_before_running(loaded):
    compiled = _compiled(loaded)
    tampered = _tamper(compiled, _drop_guards)
    assert "org_id" not in tampered.sql.replace("{org_id", "")
    before = loaded.ch.query_count
    with pytest.raises(TenantGuardError, match="is not a guarded read of ours"):
        run_compiled(loaded.ch, tampered)
    assert loaded.ch.query_count == before  # nothing reached ClickHouse


def test_guard_missing_in_one_branch_of_a_comparison_is_refused(loaded):
    compiled = _compiled(loaded, compare="previous_period")
    assert compiled.sql.count("org_id = {org_id: UInt32}") == 2

    def drop_second(tree):
        selects = [
            s
            for s in tree.find_all(exp.Select)
            if s.args.get("from_") and isinstance(s.args["from_"].this, exp.Table)
        ]
        selects[1].set("where", exp.Where(this=selects[1].args["where"].this.expression))
        return tree

    with pytest.raises(TenantGuardError):
        run_compiled(loaded.ch, _tamper(compiled, drop_second))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda c: msgspec.structs.replace(c, params={**c.params, "org_id": 2}),
            id="param-other-org",
        ),
        pytest.param(lambda c: msgspec.structs.replace(c, org_id=2), id="claimed-other-org"),
        pytest.param(
            lambda c: msgspec.structs.replace(c, database="other_db"), id="other-database"
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(c, sql=c.sql.replace("{org_id: UInt32}", "2")),
            id="literal-org",
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(
                c,
                sql=c.sql.replace(
                    "org_id = {org_id: UInt32} AND", "(org_id = {org_id: UInt32} OR 1) AND"
                ),
            ),
            id="guard-under-or",
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(
                c, sql=c.sql.replace(".rollup_1m", ".schema_migrations")
            ),
            id="other-table",
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(
                c, sql=c.sql.replace("FROM " + c.database + ".rollup_1m", "FROM system.tables")
            ),
            id="system-table",
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(c, sql=c.sql + "; SELECT 1"), id="two-statements"
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(c, sql=c.sql + " SETTINGS max_threads = 1"),
            id="settings",
        ),
        pytest.param(lambda c: msgspec.structs.replace(c, sql=c.sql + " FORMAT JSON"), id="format"),
        pytest.param(
            lambda c: msgspec.structs.replace(
                c, sql=c.sql.replace("sum(events)", "sum(events) + count(dictGet('d', 'x', 1))")
            ),
            id="dictget",
        ),
        pytest.param(
            lambda c: msgspec.structs.replace(
                c, sql=c.sql.replace("GROUP BY t", "AND org_id IN (1, 2) GROUP BY t")
            ),
            id="extra-org-mention",
        ),
    ],
)
def test_run_compiled_fails_closed(loaded, mutate):
    compiled = _compiled(loaded)
    tampered = mutate(compiled)
    assert tampered != compiled
    before = loaded.ch.query_count
    with pytest.raises(TenantGuardError):
        run_compiled(loaded.ch, tampered)
    assert loaded.ch.query_count == before


def test_table_functions_and_joins_are_refused_by_verify():
    for sql in (
        "SELECT count() FROM file('x') WHERE org_id = {org_id:UInt32}",
        "SELECT count() FROM db.events AS a JOIN db.events AS b ON 1 WHERE org_id = {org_id:UInt32}",
        "SELECT count() FROM db.events WHERE org_id = {org_id:UInt32} AND event IN (SELECT event FROM db.events)",
        "SELECT count() FROM remote('h', db.events) WHERE org_id = {org_id:UInt32}",
    ):
        with pytest.raises(TenantGuardError):
            verify_tenant_guard(
                sqlglot.parse_one(sql, dialect="clickhouse"), 1, database="db", params={"org_id": 1}
            )


def test_apply_guards_every_select_that_reads_a_table_and_only_those():
    tree = sqlglot.parse_one(
        "SELECT * FROM (SELECT a FROM db.events WHERE x = 1 UNION ALL SELECT a FROM db.rollup_1m) "
        "WHERE a IN (SELECT a FROM db.rollup_1h)",
        dialect="clickhouse",
    )
    apply_tenant_guard(tree, 5)
    verify_tenant_guard(tree, 5, database="db", params={"org_id": 5})
    sql = tree.sql(dialect="clickhouse")
    assert sql.count("org_id = {org_id: UInt32}") == 3
    # The user's condition stays above the isolated read: it never sees another org's row.
    assert (
        " FROM db.events WHERE org_id = {org_id: UInt32} "
        "LIMIT 1000000000000000000) AS events WHERE x = 1" in sql
    )
    assert guard_condition().sql(dialect="clickhouse") == "org_id = {org_id: UInt32}"


@pytest.mark.parametrize("org_id", [0, -1, 2**32, True, "1", 1.0, None])
def test_org_id_must_be_a_real_tenant_id(org_id, loaded):
    with pytest.raises(TenantGuardError):
        compile_metric("SELECT count() AS v", org_id=org_id, database="db", time_from=0, time_to=60)


def test_each_org_sees_only_its_rows(loaded):
    def total(org_id):
        compiled = compile_metric(
            "SELECT count() AS v, sum(value) AS s",
            org_id=org_id,
            database=loaded.database,
            time_from=loaded.base,
            time_to=loaded.base + 180,
            granularity="1m",
        )
        rows = run_compiled(loaded.ch, compiled).rows
        return sum(r[1] for r in rows), sum(r[2] for r in rows)

    assert total(1) == (180, sum(r["value"] for r in loaded.rows))
    assert total(2) == (90, 90 * 1_000_000.0)
    assert total(3) == (0, 0)


def test_chart_queries_are_guarded_on_every_table(loaded):
    funnel = compile_funnel(
        ["pageview", "purchase"],
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
        window_seconds=600,
    )
    top = compile_top_n(
        "SELECT count() AS v",
        dimension="path",
        n=3,
        org_id=1,
        database=loaded.database,
        time_from=loaded.base,
        time_to=loaded.base + 180,
    )
    assert funnel.sql.count("org_id = {org_id: UInt32}") == 1
    assert top.sql.count("org_id = {org_id: UInt32}") == 2  # the ranking subquery too
    for compiled in (funnel, top):
        tampered = _tamper(compiled, _drop_guards)
        with pytest.raises(TenantGuardError):
            run_compiled(loaded.ch, tampered)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count() FROM db.events FINAL WHERE org_id = {org_id:UInt32}",
        "SELECT count() FROM db.events SAMPLE 0.1 WHERE org_id = {org_id:UInt32}",
    ],
)
def test_refusals_of_nodes_sqlglot_cannot_write_are_tenant_guard_errors(sql):
    # Building the refusal's message must not fail in its own way (it raised ValueError).
    with pytest.raises(TenantGuardError):
        verify_tenant_guard(
            sqlglot.parse_one(sql, dialect="clickhouse"), 1, database="db", params={"org_id": 1}
        )
