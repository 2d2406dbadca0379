"""`clickpulse sql`: the same compile-and-guard path as POST /sql, from a terminal.

`run_sql` runs in process against the test's chDB database with two orgs' events; the real
command runs once in a subprocess (its own chDB on a temporary data dir) for argument and stdin
handling and exit codes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq

from app.sql_command import run_sql
from tests.querybuilder.data import insert, minute_start

GUARD_S = 120  # hang guard only; nothing asserts on time


def _seed(ch) -> None:
    base = minute_start(3)
    insert(ch, [{"org_id": 1, "ts": base + i, "path": f"/p{i % 2}", "value": i} for i in range(10)])
    insert(ch, [{"org_id": 2, "ts": base + i, "path": "/secret", "value": 500} for i in range(4)])


def _run(ch, org_id: int, text: str, output: str = "json") -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    status = run_sql(ch, org_id, text, output, out, err)
    return status, out.getvalue(), err.getvalue()


def test_run_sql_answers_for_the_org_in_each_format(ch):
    _seed(ch)
    sql = (
        "WITH t AS (SELECT path, count() AS n, sum(value) AS total FROM events GROUP BY path) "
        "SELECT path, n, total, sum(n) OVER (ORDER BY path) AS running FROM t ORDER BY path"
    )
    status, out, err = _run(ch, 1, sql)
    assert (status, err) == (0, "")
    assert json.loads(out)["data"] == [
        {"path": "/p0", "n": 5, "total": 20, "running": 5},
        {"path": "/p1", "n": 5, "total": 25, "running": 10},
    ]
    status, out, _ = _run(ch, 2, sql, "csv")
    assert status == 0 and out.decode().splitlines() == [
        '"path","n","total","running"',
        '"/secret",4,2000,4',
    ]
    status, out, _ = _run(ch, 1, "SELECT count() AS n FROM metrics_1m", "parquet")
    assert status == 0 and pq.read_table(io.BytesIO(out)).to_pydict() == {"n": [1]}


def test_run_sql_refuses_with_code_and_position_and_exit_status(ch):
    status, out, err = _run(ch, 1, "SELECT *\nFROM system.tables")
    assert status == 2 and out == b""
    assert err.startswith("refused (system_table):") and "line 2, column 6" in err
    status, _, err = _run(ch, 1, "SELECT 2 AS org_id FROM events")
    assert status == 2 and "org_id_forbidden" in err
    status, _, err = _run(ch, 0, "SELECT 1")
    assert status == 2 and err.startswith("invalid --org")
    status, _, err = _run(ch, 1, "SELECT nosuchcolumn FROM events")
    assert status == 1 and err.startswith("query failed:") and "nosuchcolumn" in err
    assert ch.database not in err


def test_the_command_reads_the_query_from_its_argument_or_stdin(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CLICKPULSE_DATA_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "app.cli", "sql", "--org", "7"]

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *args], input=stdin, capture_output=True, text=True, env=env,
            timeout=GUARD_S,
        )  # fmt: skip

    # Three runs of the real command; these queries read no table, so no migration is needed.
    answered = run("--format", "csv", "SELECT 6 * 7 AS answer, 'a,b' AS text")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines() == ['"answer","text"', '42,"a,b"']
    from_stdin = run(stdin="SELECT [1, 2] AS xs")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["data"] == [{"xs": [1, 2]}]
    refused = run("SELECT * FROM file('/etc/passwd', 'RawBLOB')")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "refused (table_function)" in refused.stderr
