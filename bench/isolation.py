"""What the tenant isolation costs: the guarded forms of the same queries, old and new.

Old: the org filter as a conjunct (metric compiler) or as a plain filtered subquery (analysts).
New (app/querybuilder/guard.py): each read an isolated read — guard (and the compiler's time
bounds) behind a LIMIT barrier, LowCardinality columns cast to String — plus the row count
that is shown and charged. Same data, same answers (checked), median of N runs each, in
embedded chDB with 1M events over 100 orgs (zipf-ish: org 1 has the most).

    .venv/bin/python bench/isolation.py [--events 1000000] [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.clickhouse import EmbeddedClickHouse, close_embedded  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402
from app.querybuilder import compile_metric  # noqa: E402
from app.querybuilder.analyst import compile_analyst_sql  # noqa: E402
from app.querybuilder.execute import visible_rows_statement  # noqa: E402

ORG = 1


def _old_metric_sql(sql: str) -> str:
    """The new isolated read rewritten to the old shape (guard and bounds in the outer WHERE
    would change the text too much; the plain filtered subquery is what ClickHouse optimises
    the same way as the old conjunct: it pushes everything down)."""
    import re

    sql = re.sub(r"\* REPLACE \((?:CAST\(\w+ AS String\) AS \w+(?:, )?)+\)", "*", sql)
    return sql.replace(" LIMIT 1000000000000000000)", ")")


def _time(ch, sql: str, params: dict, runs: int) -> tuple[float, object]:
    samples, rows = [], None
    for _ in range(runs):
        start = time.perf_counter()
        rows = ch.query_sync(sql, params=params).rows
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        ch = EmbeddedClickHouse(database="bench_iso", data_dir=data_dir)
        migrate_clickhouse(ch, render_clickhouse(database="bench_iso"))
        ch.command_sync(
            "INSERT INTO bench_iso.events_queue (org_id, ts, event, user_id, value, path, "
            "country, device, browser, os, received_at) SELECT 1 + toUInt32(pow(number % 1000, 2) "
            "/ 10000), now64(3) - (number % 3000), ['pageview','purchase','signup'][number % 3 + 1],"
            " toString(number % 5000), number % 100, concat('/p', toString(number % 50)), "
            "['DE','FR','US','GB'][number % 4 + 1], ['desktop','mobile'][number % 2 + 1], "
            f"'chrome', 'linux', now64(3) FROM numbers({args.events})"
        )
        now = int(time.time())
        cases = {
            "rollup_1m, 1 h, group by country": compile_metric(
                "SELECT count() AS n WHERE event = 'pageview' GROUP BY country",
                org_id=ORG, database="bench_iso", time_from=now - 3600, time_to=now,
                granularity="1m",
            ),
            "raw events, 1 h, props filter": compile_metric(
                "SELECT count() AS n WHERE path = '/p3'", org_id=ORG, database="bench_iso",
                time_from=now - 3600, time_to=now, granularity="1m", force_raw=True,
            ),
        }  # fmt: skip
        print(f"{args.events:,} events, org {ORG}; median of {args.runs} runs (ms)")
        print(f"{'query':44} {'old':>8} {'new':>8} {'+count':>8}")
        for name, compiled in cases.items():
            params = dict(compiled.params)
            old, old_rows = _time(ch, _old_metric_sql(compiled.sql), params, args.runs)
            new, new_rows = _time(ch, compiled.sql, params, args.runs)
            assert old_rows == new_rows, name
            count_sql, count_params = visible_rows_statement(compiled)
            count, _ = _time(ch, count_sql, count_params, args.runs)
            print(f"{name:44} {old:8.1f} {new:8.1f} {count:8.1f}")
        analyst = {
            "/sql count by country (whole org)": "SELECT country, count() AS n FROM events "
            "GROUP BY country ORDER BY country",
            "/sql last 10 min only (filter above barrier)": "SELECT count() AS n FROM events "
            "WHERE ts > now() - 600",
            "/sql metrics_1m by event": "SELECT event, sum(events) AS n FROM metrics_1m "
            "GROUP BY event ORDER BY event",
        }
        for name, text in analyst.items():
            query = compile_analyst_sql(text, ORG, database="bench_iso")
            params = dict(query.params)
            old, old_rows = _time(ch, _old_metric_sql(query.sql), params, args.runs)
            new, new_rows = _time(ch, query.sql, params, args.runs)
            assert old_rows == new_rows, name
            count, _ = _time(ch, query.visible_rows_sql, params, args.runs)
            print(f"{name:44} {old:8.1f} {new:8.1f} {count:8.1f}")
        ch.close()
        close_embedded()


if __name__ == "__main__":
    main()
