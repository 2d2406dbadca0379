"""Batched polling: the poller reads the keys of one org over one table in one statement per
round, gives each key exactly the rows its own statement would, skips orgs that reported no
insert since the last round (a periodic round reads everything), and every statement it runs
passes the tenant guard (`fan_in=False`: the per-org path; tests/push/test_fan_in_polling.py has
the many-org one). Real chDB data; ticks driven with an explicit `now`."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
import pytest

from app.push import poller as poller_module
from app.push.keys import make_key
from app.push.poller import Poller
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.execute import check_compiled
from tests.api.conftest import seed_events
from tests.push.conftest import drain, events, now_ms, subscribe
from tests.querybuilder.test_hostile import HARMLESS

# (metric, filters, group_by) of live keys, all answerable from rollup_1s.
KEYS: list[tuple[str, list[dict[str, Any]], list[str] | None]] = [
    ("SELECT count() AS n", [], None),
    ("SELECT count() AS n", [{"dimension": "country", "op": "=", "value": "DE"}], None),
    ("SELECT count() AS n", [], ["country"]),
    ("SELECT sum(value) AS revenue, uniq(user_id) AS visitors", [], ["device", "browser"]),
    ("SELECT avg(value) AS v WHERE event = 'purchase'", [], None),
    ("SELECT countIf(event = 'error') / count() AS rate", [], ["os"]),
    ("SELECT count() AS n WHERE event = 'never'", [], ["country"]),
]
RAW_KEY = ("SELECT count() AS n WHERE props['plan'] = 'pro'", [], None)


def seed(ch, org_id: int, base: int, seconds: int, scale: float = 1.0) -> None:
    rows = []
    for i in range(seconds * 3):
        rows.append(
            {
                "org_id": org_id,
                "ts": base + i // 3,
                "event": ["pageview", "purchase", "error"][i % 3],
                "user_id": f"u{org_id}-{i % 7}",
                "value": (i % 5) * 1.5 * scale,
                "country": ["DE", "FR", "US"][i % 3 if org_id == 1 else 0],
                "device": ["desktop", "mobile"][i % 2],
                "browser": ["firefox", "chrome"][i % 2],
                "os": ["linux", "mac", "windows"][(i // 2) % 3],
            }
        )
    seed_events(ch, rows)


def spec_of(ch, org_id: int, entry) -> Any:
    metric, filters, group_by = entry
    return make_key(metric, org_id=org_id, database=ch.database, filters=filters, group_by=group_by)


async def own_read(ch, tick) -> list[dict[str, Any]]:
    """What the key's own statement returns over the tick's window (the per-key path), as a
    reader takes it (a grouped key's fill of an empty result is no rows)."""
    spec = tick.spec
    result = await poller_module.run_guarded(ch, spec.bind(tick.time_from, tick.time_to))
    return spec.rows_of(spec.read_records(result, tick.time_from, tick.time_to))


def recording(monkeypatch, runner: str = "run_guarded") -> list[Any]:
    """Every statement the poller runs through `runner` (`run_guarded`, or `run_fan_in` for
    fan-in statements); they still run, through the real path."""
    statements: list[Any] = []
    real = getattr(poller_module, runner)

    async def run(ch, compiled):
        statements.append(compiled)
        return await real(ch, compiled)

    monkeypatch.setattr(poller_module, runner, run)
    return statements


async def test_keys_of_one_org_are_read_in_one_statement_per_table(ch, monkeypatch):
    now = int(time.time())
    seed(ch, 1, now - 20, 20)
    seed(ch, 2, now - 20, 20, scale=1_000_000)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, fan_in=False)
    specs = {(org, i): spec_of(ch, org, e) for org in (1, 2) for i, e in enumerate(KEYS)}
    for spec in specs.values():
        poller.acquire(spec)
    raw = spec_of(ch, 1, RAW_KEY)
    poller.acquire(raw)
    watched: list[Any] = []

    async def listener(tick):
        watched.append(tick)

    # An alert's key is a key of the poller like any other: it shares the org's statement.
    alert = poller.watch(
        spec_of(ch, 1, ("SELECT count() AS n WHERE device = 'mobile'", [], None)), listener
    )
    statements = recording(monkeypatch)
    before = ch.query_count
    ticks = await poller.tick(now=now + 0.5)
    # 8 rollup keys of org 1 in one statement, 7 of org 2 in another, the raw key alone.
    assert len(statements) == 3 == poller.queries == ch.query_count - before
    assert poller.batches == 2
    assert sorted(len(s.plan.columns) > 0 and s.plan.kind for s in statements) == [
        "live_batch",
        "live_batch",
        "series",
    ]
    assert {s.org_id for s in statements if s.plan.kind == "live_batch"} == {1, 2}
    assert len(ticks) == len(specs) + 2 and len(watched) == 1
    alert.close()
    # Each key's rows are exactly its own statement's, and its first delta is all of them.
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick), tick.spec.label
        assert tick.changed == tick.rows
        # Filled: every second — except a grouped key with no data in the window (no group).
        assert len(tick.rows) >= tick.time_to - tick.time_from or (
            tick.rows == [] and tick.spec.dims
        )
    # Org 2's values (a million times org 1's) never reach org 1's keys.
    for tick in ticks:
        values = [
            v
            for r in tick.rows
            for v in (r[o] for o in tick.spec.outputs)
            if isinstance(v, int | float)
        ]
        if tick.spec.org_id == 1:
            assert max(values, default=0) < 1_000
        elif "revenue" in tick.spec.outputs:
            assert max(values) >= 1_000_000


async def test_batched_ticks_equal_per_key_ticks_round_after_round(ch):
    """Two pollers over the same data, one batching and one not: the same ticks, deltas and
    watermarks, round after round, with rows arriving between rounds."""
    now = int(time.time())
    seed(ch, 1, now - 30, 20)
    pollers = [Poller(ch, tick_ms=0, full_reread_s=0, batch=b) for b in (True, False)]
    entries = KEYS + [(text, [], None) for text in HARMLESS]
    for p in pollers:
        for e in entries:
            with contextlib.suppress(Exception):  # a text refused for live keys: for both
                p.acquire(spec_of(ch, 1, e))
    assert len(pollers[0].keys) >= len(KEYS) + 5
    for step in range(4):
        seed(ch, 1, now - 10 + step * 3, 3)
        batched, single = [await p.tick(now=now + step) for p in pollers]
        assert len(batched) == len(single) == len(pollers[0].keys)
        by_key = {t.key: t for t in single}
        for tick in batched:
            other = by_key[tick.key]
            assert (tick.time_from, tick.time_to) == (other.time_from, other.time_to)
            assert tick.rows == other.rows and tick.changed == other.changed, tick.spec.label
    assert pollers[0].queries < pollers[1].queries
    assert pollers[0].batches + pollers[0].fan_ins >= 4


async def test_org_without_inserts_is_not_read_until_the_periodic_round(ch, monkeypatch):
    now = int(time.time()) // 60 * 60  # a poll-all period (60 s) starts here
    seed(ch, 1, now - 10, 5)
    seed(ch, 2, now - 10, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, poll_all_s=60, fan_in=False)
    org1 = [spec_of(ch, 1, e) for e in KEYS[:3]]
    org2 = [spec_of(ch, 2, e) for e in KEYS[:3]]
    for spec in org1 + org2:
        poller.acquire(spec)
    statements = recording(monkeypatch)

    ticks = await poller.tick(now=now + 0.1)  # the period's first round: everything
    assert {s.org_id for s in statements} == {1, 2} and len(statements) == 2
    assert len(ticks) == 6

    statements.clear()
    ticks = await poller.tick(now=now + 0.35)  # nobody reported an insert: no statement
    assert statements == [] and ticks == [] and poller.skipped == 6

    # Org 1's writer reports an insert; org 2's rows arrive unreported (behind the writer).
    seed(ch, 1, now, 1)
    seed(ch, 2, now, 1)
    poller.late.note({1: (now, now)})
    ticks = await poller.tick(now=now + 0.6)
    assert [s.org_id for s in statements] == [1]
    assert {t.spec.org_id for t in ticks} == {1}
    assert all(any(r["t"] == now for r in t.changed) for t in ticks)

    statements.clear()
    await poller.tick(now=now + 0.85)  # the report was used once
    assert statements == []

    # The next period's first round reads org 2 too and delivers its unreported second.
    ticks = await poller.tick(now=now + 60.1)
    assert sorted(s.org_id for s in statements) == [1, 2]
    org2_ticks = [t for t in ticks if t.spec.org_id == 2]
    assert len(org2_ticks) == 3
    assert all(any(r["t"] == now for r in t.changed) for t in org2_ticks)


async def test_a_failing_batch_falls_back_to_one_statement_per_key(ch, monkeypatch):
    now = int(time.time())
    seed(ch, 1, now - 10, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, fan_in=False)
    for e in KEYS[:4]:
        poller.acquire(spec_of(ch, 1, e))
    real = poller_module.run_guarded
    statements: list[Any] = []

    async def batch_fails(ch_, compiled):
        statements.append(compiled.plan.kind)
        if compiled.plan.kind == "live_batch":
            raise RuntimeError("simulated batch failure")
        return await real(ch_, compiled)

    monkeypatch.setattr(poller_module, "run_guarded", batch_fails)
    ticks = await poller.tick(now=now + 0.5)
    assert statements == ["live_batch"] + ["series"] * 4
    assert len(ticks) == 4
    for tick in ticks:
        assert tick.rows == await own_read(ch, tick)


async def test_every_statement_passes_the_guard_and_a_tampered_one_is_refused(ch, monkeypatch):
    now = int(time.time())
    seed(ch, 1, now - 10, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=0, fan_in=False)
    for e in KEYS:
        poller.acquire(spec_of(ch, 1, e))
    statements = recording(monkeypatch)
    await poller.tick(now=now + 0.5)
    (batch,) = statements
    check_compiled(batch, ch.database)  # re-parsed from its text, the unchanged guard
    guard = "org_id = {org_id: UInt32}"
    for sql in (
        batch.sql.replace(guard + " AND ", "", 1),
        batch.sql.replace(guard, "org_id IN (1, 2)", 1),
        batch.sql.replace("AS rollup_1s WHERE ", "AS rollup_1s WHERE org_id = 2 OR ", 1),
        batch.sql.replace(" LIMIT 1000000000000000000", "", 1),
    ):
        assert sql != batch.sql
        with pytest.raises(TenantGuardError):
            await poller_module.run_guarded(ch, msgspec.structs.replace(batch, sql=sql))
    with pytest.raises(TenantGuardError):
        await poller_module.run_guarded(ch, msgspec.structs.replace(batch, org_id=2))


async def test_writer_reports_drive_the_rounds_end_to_end(make_node, org):
    """Through the app: events posted through /v1/events (the writer reports the insert) reach
    a viewer at the next round; a round with no insert since runs no statement."""
    async with make_node(
        push_poll_all_s=3600, push_full_reread_s=30, push_full_reread_reported_s=900
    ) as node:
        poller = node.hub.poller
        assert poller.poll_all_s == 3600
        # Every insert is reported, in this process: no whole-range re-read (the net where
        # reports cross nodes over Redis, `push_full_reread_reported_s`, is not needed).
        assert poller.late.full_reread_s == 0
        ws = await node.connect(org.admin_token)
        try:
            snap = await subscribe(ws, id=1, metric="SELECT count() AS n", range_s=30)
            await subscribe(
                ws, id=2, metric="SELECT count() AS n", group_by=["country"], range_s=30
            )
            start = time.time()
            await poller.tick(now=start)  # a poll-all round (first of its period)
            await drain(ws)
            base = poller.queries
            await poller.tick(now=start + 0.25)
            assert poller.queries == base  # no insert reported: nothing read
            t = now_ms()
            await node.post(org.api_key, events("x", 4, t))
            await poller.tick(now=time.time())
            assert poller.queries == base + 1  # both keys of the org: one statement
            deltas = [m for m in await drain(ws) if m["type"] == "delta"]
            second = t // 1000
            assert {
                (m["key"] == snap["key"], r.get("country"), r["n"])
                for m in deltas
                for r in m["rows"]
                if r["t"] == second
            } == {(True, None, 4), (False, "", 4)}
        finally:
            await ws.close()


def test_keys_read_together_share_a_phase_unless_their_fan_out_dominates():
    weights: dict[str, int] = {}
    poller = Poller(None, tick_ms=0, max_phases=4, weight=lambda k: weights.get(k, 0))
    light = [
        make_key(f"SELECT count() AS n WHERE event = 'e{i}'", org_id=1, database="db")
        for i in range(6)
    ]
    other = [
        make_key(f"SELECT count() AS n WHERE event = 'e{i}'", org_id=2, database="db")
        for i in range(3)
    ]
    for spec in light + other:
        poller.acquire(spec)
    groups = [{s.spec.key for s in g} for g in poller.plan_phases(list(poller.keys.values()))]
    # One org's keys are one statement, so one piece: two phases, one per org.
    assert sorted(groups, key=len) == [{s.key for s in other}, {s.key for s in light}]
    # Org 1's viewers grow to most of the process's fan-out (over `unit_weight` and the ideal
    # phase load): its keys are placed one by one again, over every phase.
    for spec in light:
        weights[spec.key] = 500
    groups = poller.plan_phases(list(poller.keys.values()), rebalance=True)
    assert len(groups) == 4
    assert all(any(s.spec.org_id == 1 for s in g) for g in groups)


async def test_an_orgs_keys_take_their_whole_range_reread_in_one_statement(ch, monkeypatch):
    now = int(time.time())
    seed(ch, 1, now - 40, 5)
    poller = Poller(ch, tick_ms=0, full_reread_s=30, fan_in=False)
    specs = [spec_of(ch, 1, e) for e in KEYS[:4]]
    for spec in specs:
        poller.acquire(spec)
    statements = recording(monkeypatch)
    rereads: list[int] = []
    for step in range(31):  # a whole period, one round a second
        statements.clear()
        before = poller.late.full_rereads
        ticks = await poller.tick(now=now + step + 0.5)
        if poller.late.full_rereads > before:
            rereads.append(poller.late.full_rereads - before)
            # Every key of the org re-read its whole range, in one statement.
            assert len(statements) == 1
            assert {t.time_from for t in ticks} == {now + step - 600 + 1}
        else:
            assert len(statements) == 1
    assert rereads == [4]


async def test_a_grouped_key_without_data_has_no_rows_not_an_empty_group(ch):
    """A grouped statement over seconds without data still returns a row a second (WITH FILL),
    its group-by column at the default: readers get no rows (no "" series, no "" group for
    a grouped alert); a real group, even one valued 0 somewhere, keeps its rows."""
    now = int(time.time())
    seed(ch, 1, now - 30, 3)
    spec = spec_of(ch, 1, ("SELECT count() AS n", [], ["country"]))
    empty = spec.records_of(await poller_module.run_guarded(ch, spec.bind(now - 5, now)))
    assert len(empty) == 5 and {r["country"] for r in spec.rows_of(empty)} == {""}  # the fill
    assert spec.without_empty_fill(empty, now - 5, now) == []
    real = spec.records_of(await poller_module.run_guarded(ch, spec.bind(now - 30, now - 27)))
    assert {r["country"] for r in spec.rows_of(real)} == {"DE", "FR", "US"}
    assert spec.without_empty_fill(real, now - 30, now - 27) == real
    zero = [(t, "DE", 0) for t in range(now - 5, now)]
    assert spec.names == ("t", "country", "n")
    assert spec.without_empty_fill(zero, now - 5, now) == zero
    ungrouped = spec_of(ch, 1, ("SELECT count() AS n", [], None))
    quiet = ungrouped.records_of(await poller_module.run_guarded(ch, ungrouped.bind(now - 5, now)))
    assert ungrouped.without_empty_fill(quiet, now - 5, now) == quiet  # zeros are values
    # Through the poller: the tick of the quiet window has no rows and emits no delta.
    poller = Poller(ch, tick_ms=0, full_reread_s=0, max_phases=1)
    poller.acquire(spec)
    (tick,) = await poller.tick(now=now + 0.5)
    assert tick.rows == [] and tick.changed == []


def test_a_deltas_rows_encode_as_the_row_objects_of_the_key():
    from app.push import protocol

    spec = make_key(
        "SELECT count() AS n, avg(value) AS mean", org_id=1, database="db", group_by=["country"]
    )
    records = [(100, "DE", 3, 1.5), (101, 'x"\\\u2028y', 0, None), (102, "", 7, float("nan"))]
    as_dicts = protocol.encode({"type": "delta", "key": spec.key, "rows": spec.rows_of(records)})
    as_wire = protocol.encode({"type": "delta", "key": spec.key, "rows": spec.wire_rows(records)})
    assert as_wire == as_dicts
    assert protocol.encode(spec.wire_rows(records[:1])) == (
        '[{"t":100,"country":"DE","n":3,"mean":1.5}]'
    )


def test_a_ticks_records_become_row_dicts_when_a_listener_reads_them():
    from app.push.poller import KeyTick

    spec = make_key("SELECT count() AS n", org_id=1, database="db", group_by=["country"])
    records = [(100, "DE", 3), (100, "FR", 1), (101, "DE", 4)]
    tick = KeyTick(spec.key, spec, records, records[2:], 100, 102, 101.5, 0, records=True)
    assert tick.changed == [{"t": 101, "country": "DE", "n": 4}]
    assert tick.rows == [
        {"t": 100, "country": "DE", "n": 3},
        {"t": 100, "country": "FR", "n": 1},
        {"t": 101, "country": "DE", "n": 4},
    ]
    assert tick.rows is tick.rows  # built once
    given = [{"t": 5, "country": "x", "n": 1}]  # tests and benches hand over dicts
    assert KeyTick(spec.key, spec, given, given, 5, 6, 5.5, 0).rows is given
