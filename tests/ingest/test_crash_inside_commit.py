"""A crash inside one table's commit of a WAL INSERT, and the replay that must complete it.

chDB writes a block's id to the table's deduplication log and only then renames the part into
place (app/clickhouse/dedup_log.py). The crash suite lost a batch in `rollup_1h` that way: the
process was killed between the two, the replay under the same token was taken for a duplicate
in that table, and only there. Here the crash is made deterministic: a real server process
exits right after its INSERT (`CLICKPULSE_TEST_CRASH_AT=after_insert`, the segment stays in
the WAL), then the chosen tables are put back to the state of a kill between "log the block"
and "rename the part" — their newest part renamed back to the `tmp_insert_*` directory it had —
and a new process replays the WAL. Every table must hold the batch exactly once.

With strace available, the same is done with a real SIGKILL delivered on chDB's own rename of a
part (strace's syscall fault injection), wherever the threads put it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = 300
ORG = 42
COUNTED = ["events", "rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"]
DETAILS = ["rollup_detail_1m", "rollup_detail_1h", "rollup_detail_1d"]
CHILD_GUARD_S = 120

# One process life: open chDB on the data dir (migrating it), start the WAL writer (which
# replays what the WAL holds), submit a batch if asked, stop, print what each table holds.
CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {root!r})
    from app.clickhouse import EmbeddedClickHouse, close_embedded
    from app.config import Settings
    from app.ingest.writer import EventWriter
    from app.migrate import migrate_clickhouse, render_clickhouse
    from tests.ingest.helpers import make_columns

    async def main():
        ch = EmbeddedClickHouse(database="cp", data_dir={chdb!r})
        migrate_clickhouse(ch, render_clickhouse(database="cp"))
        writer = EventWriter(ch, Settings(wal_dir={wal!r}, writer_max_delay_ms=3_600_000))
        await writer.start()
        if {submit!r}:
            await writer.submit(make_columns({rows}, org_id={org}))
            await writer.wait_inserted()  # exits in there with CLICKPULSE_TEST_CRASH_AT
        await writer.stop()
        out = {{"replayed": writer.replayed_rows}}
        for t in {counted!r}:
            col = "count()" if t == "events" else "sum(events)"
            out[t] = ch.query_sync(f"SELECT {{col}} FROM cp.{{t}} WHERE org_id = {org}").rows[0][0]
        for t in {details!r}:
            out[t] = ch.query_sync(f"SELECT count() FROM cp.{{t}} WHERE org_id = {org}").rows[0][0]
        print(json.dumps(out), flush=True)
        close_embedded()

    asyncio.run(main())
    """
)


def _child(tmp_path: Path, *, submit: bool, env: dict | None = None, prefix=()):
    script = CHILD.format(
        root=str(ROOT),
        chdb=str(tmp_path / "clickhouse"),
        wal=str(tmp_path / "wal"),
        submit=submit,
        rows=ROWS,
        org=ORG,
        counted=COUNTED,
        details=DETAILS,
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKPULSE_")}
    child_env.update(env or {})
    return subprocess.run(
        [*prefix, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=CHILD_GUARD_S,
        env=child_env,
        cwd=str(tmp_path),
    )


def _table_dir(tmp_path: Path, table: str) -> Path:
    return (tmp_path / "clickhouse" / "data" / "cp" / table).resolve()


def _uncommit_last_part(tmp_path: Path, table: str) -> str:
    """Put `table` in the state of a kill between logging its last block and renaming its
    part: the part directory back under the temporary name it was written under."""
    table_dir = _table_dir(tmp_path, table)
    logs = sorted(
        (table_dir / "deduplication_logs").glob("deduplication_log_*.txt"),
        key=lambda p: int(p.stem.rsplit("_", 1)[1]),
    )
    records = [ln.split("\t") for p in logs for ln in p.read_text().splitlines() if ln]
    op, part, _block_id = records[-1]
    assert op == "1" and (table_dir / part).is_dir(), (table, records[-1])
    (table_dir / part).rename(table_dir / f"tmp_insert_{part}")
    return part


def _settled(out: dict) -> None:
    for table in COUNTED:
        assert out[table] == ROWS, (table, out)
    for table in DETAILS:
        assert out[table] > 0, (table, out)


@pytest.mark.parametrize(
    "tables",
    [["rollup_1h"], ["events"], ["rollup_1s", "rollup_detail_1h"], [*COUNTED, *DETAILS]],
    ids=["rollup_1h", "events", "rollup_1s+detail_1h", "every_table"],
)
def test_a_kill_between_a_tables_block_log_and_its_part_is_completed_by_the_replay(
    tmp_path, tables
):
    crashed = _child(tmp_path, submit=True, env={"CLICKPULSE_TEST_CRASH_AT": "after_insert"})
    assert crashed.returncode == 87, crashed.stderr[-3000:]  # after the INSERT, before retiring
    for table in tables:
        _uncommit_last_part(tmp_path, table)

    replay = _child(tmp_path, submit=False)
    assert replay.returncode == 0, replay.stderr[-3000:]
    out = json.loads(replay.stdout.strip().splitlines()[-1])
    assert out["replayed"] == ROWS
    _settled(out)  # before the fix: 0 in each table in `tables`, ROWS elsewhere
    for table in tables:
        assert "forgetting them so that a replay stores them" in replay.stderr
        assert f"cp.{table}:" in replay.stderr

    again = _child(tmp_path, submit=False)  # nothing left to replay, nothing repaired
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout.strip().splitlines()[-1])
    assert out["replayed"] == 0
    _settled(out)
    assert "forgetting" not in again.stderr


def _strace_can_inject() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=rename", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _strace_can_inject(), reason="needs strace with ptrace allowed")
@pytest.mark.parametrize("nth", [1, 2])
def test_a_real_sigkill_on_a_part_rename_is_completed_by_the_replay(tmp_path, nth):
    # Migrate first (its own parts), so every rename traced below is one of the INSERT's.
    first = _child(tmp_path, submit=False)
    assert first.returncode == 0, first.stderr[-3000:]
    # SIGKILL on the nth rename of a thread: the block is in that table's log, its part is
    # still tmp_insert_*; the rename itself is not carried out (error=EIO, never reached).
    killed = _child(
        tmp_path,
        submit=True,
        prefix=(
            "strace",
            "-f",
            "-qq",
            "-o",
            os.devnull,
            "-e",
            "trace=rename",
            "-e",
            f"inject=rename:error=EIO:signal=KILL:when={nth}",
        ),
    )
    if killed.returncode == 0 and nth > 1:
        pytest.skip(f"no chDB thread renamed {nth} parts in this INSERT (many cores)")
    assert killed.returncode in (-9, 137), (killed.returncode, killed.stderr[-3000:])

    replay = _child(tmp_path, submit=False)
    assert replay.returncode == 0, replay.stderr[-3000:]
    out = json.loads(replay.stdout.strip().splitlines()[-1])
    assert out["replayed"] == ROWS
    _settled(out)
