"""Fan-in polling: keys of many orgs with the same shape (the built-in metrics, any metric two
orgs both watch) are read in one statement per round for all their orgs, each key gets exactly
its own statement's rows, orgs without reported inserts are left out of the statement, and a
statement that fails is read again per org. Real chDB data; ticks driven with an explicit
`now`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.push import poller as poller_module
from app.push.keys import make_key
from app.push.poller import Poller
from app.querybuilder.builtin import BUILTIN_METRICS

from .test_batched_polling import KEYS, own_read, recording, seed

ORGS = (1, 2, 3, 4, 5)


def builtin_key(ch, org_id: int, name: str):
    builtin = BUILTIN_METRICS[name]
    return make_key(
        builtin.text, org_id=org_id, database=ch.database, window_s=builtin.window_seconds
    )


def fan_ins(monkeypatch) -> list[Any]:
    """Every fan-in statement the poller runs (they still run, through the real path)."""
    return recording(monkeypatch, "run_fan_in")


def _every_orgs_keys(ch, now: int, max_phases: int) -> tuple[Poller, list[Any]]:
    """20 s of rows for each org of ORGS (org 5's values a million times the others': they must
    stay in org 5's keys) and a poller over every org's keys (`_org_specs`)."""
    for org in ORGS:
        seed(ch, org, now - 20, 20, scale=1_000_000 if org == 5 else 1.0)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=max_phases)
    specs = [spec_of for org in ORGS for spec_of in _org_specs(ch, org)]
    for spec in specs:
        poller.acquire(spec)
    return poller, specs


async def test_shared_shapes_of_many_orgs_are_one_statement_per_round(ch, monkeypatch):
    now = int(time.time())
    poller, specs = _every_orgs_keys(ch, now, max_phases=1)
    assert {s.shape_kind for s in specs} == {"batch", "window"}
    grouped = fan_ins(monkeypatch)
    single = recording(monkeypatch)
    ticks = await poller.tick(now=now + 0.5)
    # One statement for every org's batchable shapes, one for the windowed built-in: 2 for
    # 5 orgs × 11 keys; nothing per org or per key.
    assert len(grouped) == 2 and single == [] and poller.queries == 2 == poller.fan_ins
    assert all(s.org_ids == ORGS for s in grouped)
    assert len(ticks) == len(specs)
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick), (tick.spec.org_id, tick.spec.label)
        # Filled: every second — except a grouped key with no data in the window (no group).
        assert len(tick.rows) >= tick.time_to - tick.time_from or (
            tick.rows == [] and tick.spec.dims
        )
        values = [
            v
            for r in tick.rows
            for v in (r[o] for o in tick.spec.outputs)
            if isinstance(v, int | float)
        ]
        if tick.spec.org_id != 5:
            assert max(values, default=0) < 1_000, tick.spec.outputs


def _org_specs(ch, org_id: int) -> list[Any]:
    from tests.push.test_batched_polling import spec_of

    return [spec_of(ch, org_id, e) for e in KEYS] + [
        builtin_key(ch, org_id, name) for name in BUILTIN_METRICS
    ]


async def test_orgs_without_inserts_are_left_out_of_the_statement(ch, monkeypatch):
    now = int(time.time()) // 60 * 60
    for org in ORGS:
        seed(ch, org, now - 10, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, poll_all_s=60, max_phases=1)
    for org in ORGS:
        for spec in _org_specs(ch, org)[:3]:
            poller.acquire(spec)
    grouped = fan_ins(monkeypatch)
    await poller.tick(now=now + 0.1)  # the period's first round: every org
    assert [s.org_ids for s in grouped] == [ORGS]
    grouped.clear()
    assert await poller.tick(now=now + 0.35) == [] and grouped == []  # nothing reported
    seed(ch, 2, now, 1)
    seed(ch, 4, now, 1)
    poller.late.note({2: (now, now), 4: (now, now)})
    ticks = await poller.tick(now=now + 0.6)
    assert [s.org_ids for s in grouped] == [(2, 4)]
    assert {t.spec.org_id for t in ticks} == {2, 4}
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)
        assert any(r["t"] == now for r in tick.changed)


async def test_a_failing_fan_in_is_read_again_per_org(ch, monkeypatch):
    now = int(time.time())
    for org in (1, 2):
        seed(ch, org, now - 10, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=1)
    for org in (1, 2):
        for spec in _org_specs(ch, org)[:4]:
            poller.acquire(spec)

    async def fails(ch_, query):
        raise RuntimeError("simulated fan-in failure")

    monkeypatch.setattr(poller_module, "run_fan_in", fails)
    single = recording(monkeypatch)
    ticks = await poller.tick(now=now + 0.5)
    assert sorted((s.plan.kind, s.org_id) for s in single) == [
        ("live_batch", 1),
        ("live_batch", 2),
    ]
    assert len(ticks) == 8
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)


@pytest.mark.parametrize(
    "text", ["SELECT count() % (count() - 5) AS r", "SELECT topK(2)(os) AS top"]
)
async def test_a_shape_that_can_raise_is_never_read_with_other_orgs(ch, monkeypatch, text):
    """`count() % (count() - 5)` raises for an org with exactly 5 events in a second: read
    with other orgs, one org's data could fail (or reveal itself to) another's key."""
    now = int(time.time())
    for org in (1, 2):
        seed(ch, org, now - 10, 5)
    specs = [make_key(text, org_id=org, database=ch.database) for org in (1, 2)]
    assert [s.shape for s in specs] == [None, None]
    poller = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=1)
    for spec in specs:
        poller.acquire(spec)
    grouped = fan_ins(monkeypatch)
    single = recording(monkeypatch)
    await poller.tick(now=now + 0.5)
    assert grouped == [] and sorted(s.org_id for s in single) == [1, 2]


async def _polled_once(ch, now: int) -> Poller:
    """A poller over 3 keys of each org of ORGS (two minutes of rows each), after its first
    round: the next round reads only the regular window unless late rows are reported."""
    for org in ORGS:
        seed(ch, org, now - 120, 120)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=1)
    for org in ORGS:
        for spec in _org_specs(ch, org)[:3]:
            poller.acquire(spec)
    await poller.tick(now=now + 0.1)
    return poller


async def test_an_orgs_long_reread_is_its_own_statement_not_widening_the_fan_in(ch, monkeypatch):
    now = int(time.time())
    poller = await _polled_once(ch, now)
    # Rows of org 2 arrive 100 s late (the writer reports them): org 2 re-reads from there.
    seed(ch, 2, now - 100, 1)
    poller.late.note({2: (now - 100, now - 100)})
    grouped = fan_ins(monkeypatch)
    single = recording(monkeypatch)
    ticks = await poller.tick(now=now + 1.1)
    assert sorted((s.org_ids, s.plan.time_from >= now - 10) for s in grouped) == [
        ((1, 3, 4, 5), True),
        ((2,), False),
    ]
    assert [s.plan.time_from for s in grouped if s.org_ids == (2,)] == [now - 100]
    assert single == []
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)
    (late,) = {t.time_from for t in ticks if t.spec.org_id == 2}
    assert late == now - 100
    assert all(any(r["t"] == now - 100 for r in t.changed) for t in ticks if t.spec.org_id == 2)


async def test_orgs_rereading_from_the_same_minute_share_one_statement(ch, monkeypatch):
    """Late rows of two orgs in the same minute: one fan-in for both, from the earlier second;
    each key keeps exactly its own window (equal to its own org's read)."""
    now = int(time.time())
    poller = await _polled_once(ch, now)
    first = (now - 100) - (now - 100) % 60  # both late seconds in one minute
    seed(ch, 2, first + 1, 1)
    seed(ch, 4, first + 3, 1)
    poller.late.note({2: (first + 1, first + 1), 4: (first + 3, first + 3)})
    grouped = fan_ins(monkeypatch)
    single = recording(monkeypatch)
    ticks = await poller.tick(now=now + 1.1)
    assert single == []
    assert sorted(s.org_ids for s in grouped) == [(1, 3, 5), (2, 4)]
    assert [s.plan.time_from for s in grouped if s.org_ids == (2, 4)] == [first + 1]
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)
    assert {t.spec.org_id: t.time_from for t in ticks if t.spec.org_id in (2, 4)} == {
        2: first + 1,
        4: first + 3,
    }


async def test_a_round_in_many_phases_reads_each_shared_shape_once(ch, monkeypatch):
    """Phases pace the fan-out; the fan-in keys of all of them are read at the round's start in
    one statement per table and window (8 phases used to mean 8 statements, each scanning the
    same seconds of every org). Each key still gets exactly its own org's rows."""
    now = int(time.time())
    poller, specs = _every_orgs_keys(ch, now, max_phases=8)
    grouped = fan_ins(monkeypatch)
    single = recording(monkeypatch)
    ticks = await poller.tick(now=now + 0.5)
    assert poller.phases > 1
    assert len(grouped) == 2 and single == [] and poller.queries == 2
    assert len(ticks) == len(specs)
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick), (tick.spec.org_id, tick.spec.label)
    # The next round (a second later) reads them once again: nothing is read twice or skipped.
    grouped.clear()
    ticks = await poller.tick(now=now + 1.5)
    assert len(grouped) == 2 and len(ticks) == len(specs)
    assert {t.time_to for t in ticks} == {now + 2}


async def test_where_inserts_are_reported_the_window_starts_at_the_last_second_read(
    ch, monkeypatch
):
    """With every insert reported (`poll_all_s`), a round re-reads from the second the last one
    read up to (still open then), not `reread_s` seconds more of every key; a row that reaches
    an older second is re-read because its insert is reported."""
    now = int(time.time()) // 60 * 60
    for org in ORGS:
        seed(ch, org, now - 30, 30)
    reported = Poller(ch, tick_ms=0, full_reread_s=0, poll_all_s=60, max_phases=1, reread_s=5)
    unreported = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=1, reread_s=5)
    for poller in (reported, unreported):
        for org in ORGS:
            for spec in _org_specs(ch, org)[:3]:
                poller.acquire(spec)
        await poller.tick(now=now + 0.2)
    grouped = fan_ins(monkeypatch)
    seed(ch, 3, now - 4, 1)  # a late row, 4 s back
    reported.late.note({3: (now - 4, now - 4)})
    for org in ORGS:
        if org != 3:
            reported.late.note({org: (now + 1, now + 1)})
    ticks = await reported.tick(now=now + 1.3)
    # The orgs with only current rows: from the last second read (now), not now - 5.
    regular = [s for s in grouped if 3 not in s.org_ids]
    assert regular and {s.plan.time_from for s in regular} == {now}
    assert [s.plan.time_from for s in grouped if 3 in s.org_ids] == [now - 4]
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)
    assert all(any(r["t"] == now - 4 for r in t.changed) for t in ticks if t.spec.org_id == 3)
    # Without reports (Kafka ingest), every round re-reads `reread_s` seconds (and the lag).
    grouped.clear()
    await unreported.tick(now=now + 1.3)
    assert grouped and all(s.plan.time_from <= now - 5 for s in grouped)
