"""chDB hands the output a failed statement had already written to the next statement on the
same connection (chDB 4.4). The embedded facade must never let that reach another query —
with one org's rows in another org's answer as the stake."""

from __future__ import annotations

import threading

import pytest

from app.clickhouse import ClickHouseError

FAILS_AFTER_OUTPUT = "SELECT 'LEAK' AS marker, number FROM numbers(1000000)"
STOP_AT_20K_ROWS = {
    "max_result_rows": 20_000,
    "result_overflow_mode": "throw",
    "max_block_size": 1000,
}


def test_a_failed_query_leaves_nothing_for_the_next_one(ch):
    with pytest.raises(ClickHouseError) as info:
        ch.query_raw_sync(FAILS_AFTER_OUTPUT, settings=STOP_AT_20K_ROWS, fmt="CSV")
    assert info.value.code == 396
    assert ch.query_raw_sync("SELECT 42", fmt="CSV").data == b"42\n"
    with pytest.raises(ClickHouseError):
        ch.query_sync(FAILS_AFTER_OUTPUT, settings=STOP_AT_20K_ROWS)
    assert ch.query_sync("SELECT 43 AS x").rows == [[43]]
    assert ch.query_raw_sync("SELECT 44", fmt="CSV").data == b"44\n"


def test_concurrent_queries_never_see_a_failed_query_output(ch):
    wrong: list[object] = []
    failures = []

    def failing() -> None:
        for _ in range(60):
            try:
                ch.query_raw_sync(FAILS_AFTER_OUTPUT, settings=STOP_AT_20K_ROWS, fmt="CSV")
            except ClickHouseError:
                failures.append(1)

    def answering(n: int) -> None:
        for _ in range(120):
            data = ch.query_raw_sync(f"SELECT {n}", fmt="CSV").data
            if data != f"{n}\n".encode():
                wrong.append(data[:40])
            rows = ch.query_sync(f"SELECT {n} AS x").rows
            if rows != [[n]]:
                wrong.append(rows[:2])

    threads = [threading.Thread(target=failing)]
    threads += [threading.Thread(target=answering, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == 60
    assert wrong == []
