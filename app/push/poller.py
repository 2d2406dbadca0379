"""The Poller: each round reads every active key's recent seconds of rollup_1s — the shapes many
orgs share in one fan-in statement for all their orgs (app/querybuilder/fanin.py), the other
keys that batch in one statement per org and table (app/querybuilder/batch.py), nothing for orgs
with no reported insert between poll-all rounds — diffs them against what was last emitted, and hands
the changed rows (encoded once) to the hub or Redis; alerts watch keys through `watch()`. Long
because a round's steps (lease, phases, batched reads with their per-key fallback, late
re-reads, diff, listeners) share the per-key state kept here; split, they would pass it around.

Rounds start on the wall clock's tick grid; the fan-in keys of the whole round are read at its
start, the rest and the fan-out go in phases of equal fan-out, so no phase holds the event loop
for the whole process's sends; docs/push.md ("Poller", "Phases", "Batched polling") has the
steps and the measurements behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.clickhouse import ClickHouse
from app.gcpause import paused_collection
from app.observability import Telemetry
from app.push import protocol
from app.push.gcpolicy import LongLivedHeap
from app.push.keys import KeySpec
from app.push.late import LateRows
from app.querybuilder.execute import run_compiled_async, run_fan_in_async

log = logging.getLogger("clickpulse.push.poller")


class KeyTick:
    """What one tick read for one key (handed to listeners). The poller hands over records
    (tuples in `spec.names` order: what it diffs); `rows` and `changed` are the row dicts,
    built on first use — most ticks of a round are read by nobody but the diff."""

    __slots__ = (
        "key",
        "spec",
        "time_from",
        "time_to",
        "tick_time",
        "lag_ms",
        "_rows",
        "_changed",
        "_records",
    )

    def __init__(
        self,
        key: str,
        spec: KeySpec,
        rows: list[Any],
        changed: list[Any],
        time_from: int,
        time_to: int,
        tick_time: float,
        lag_ms: int,
        *,
        records: bool = False,
    ):
        """`rows`: every row of the re-read window [time_from, time_to); `changed`: those whose
        values differ from the last emitted ones — row dicts, or records with `records`."""
        self.key, self.spec = key, spec
        self.time_from, self.time_to = time_from, time_to
        self.tick_time, self.lag_ms = tick_time, lag_ms  # epoch s; pipeline lag at the tick
        self._rows, self._changed, self._records = rows, changed, records

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of the re-read window, as dicts keyed by column name."""
        if self._records:
            self._as_dicts()
        return self._rows

    @property
    def changed(self) -> list[dict[str, Any]]:
        """The rows whose values differ from the last emitted ones."""
        if self._records:
            self._as_dicts()
        return self._changed

    def _as_dicts(self) -> None:
        rows_of = self.spec.rows_of
        self._rows, self._changed, self._records = (
            rows_of(self._rows),
            rows_of(self._changed),
            False,
        )


TickListener = Callable[[KeyTick], Awaitable[None]]
AllTicksListener = Callable[[list[KeyTick]], Awaitable[None]]


@dataclass(slots=True)
class _KeyState:
    spec: KeySpec
    refs: int = 0
    watermark: int | None = None  # the last second a successful tick read up to
    # (t, *dims) -> the record last emitted for that row
    last: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    failing_since: float | None = None
    # The first second a failed read was asked for: the next read starts there, so seconds a
    # report named (used by the round it arrived for, once) are not lost with that round.
    retry_from: int | None = None
    stale_sent: bool = False
    listeners: list[TickListener] = field(default_factory=list)
    pruned_at: int = 0
    queries: int = 0  # queries this node ran for the key
    phase: int = -1  # the phase of the round that polls it (-1: not placed yet)
    extended: bool = False  # this round's window reaches back further for late rows


@dataclass(slots=True)
class _EarlyRead:
    """A round's fan-in keys of every phase, read once at its start (`Poller._read_early`)."""

    at: float  # the time (epoch s) they were read up to
    reads: dict[str, tuple[int, int, Any]]  # due key -> (lo, hi, its rows or the exception)


class Watch:
    """A registration made by `Poller.watch`; `close()` ends it."""

    def __init__(self, poller: Poller, key: str, listener: TickListener):
        self._poller, self.key, self._listener = poller, key, listener
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._poller._unwatch(self.key, self._listener)


async def run_guarded(ch: ClickHouse, compiled: Any) -> Any:
    """Run a compiled query the way the API does: the tenant guard re-verified on the final
    SQL, in the org's lane of the shared query pool."""
    return await run_compiled_async(ch, compiled)


async def run_fan_in(ch: ClickHouse, query: Any) -> Any:
    """Run a fan-in statement (many orgs' keys of shared shapes): its guard re-verified on the
    final SQL and its orgs parameter checked, like `run_guarded`."""
    return await run_fan_in_async(ch, query)


#: Rounds start this long after each multiple of the tick on the wall clock: a timer may fire
#: a hair early, and a round that reads `int(time.time())` just before a second boundary would
#: miss the second that has just begun until the next round.
ALIGN_S = 0.002
#: Place keys again (weights change as viewers come and go) at most every this many rounds.
REBALANCE_EVERY = 4
#: Compiled batches kept for re-binding (one per distinct set of keys read together).
BATCH_CACHE = 1024
#: Keys re-reading beyond the regular window fan in with those whose re-read starts in the same
#: this-many seconds (each key keeps only its own seconds of the statement's rows).
EXTENDED_GROUP_S = 60


def next_round(slot: int | None, now: float, period: float) -> tuple[int, float]:
    """(slot, seconds to wait) for the next round: rounds start `ALIGN_S` after `slot * period`
    on the wall clock. `slot` is the one planned (None at start: the next grid point).

    Behind (the planned start has passed, e.g. after a long round): missed rounds are skipped,
    not bunched — run at once if the next grid point is more than half a period away, else
    wait for it, so two rounds never start less than half a period apart. A wall clock set
    back re-aligns from now instead of waiting for the old grid."""
    if slot is None:
        slot = math.floor(now / period) + 1
    if slot * period + ALIGN_S < now:
        upcoming = math.floor((now - ALIGN_S) / period) + 1
        late_ok = upcoming * period + ALIGN_S - now > period / 2
        slot = upcoming - 1 if late_ok else upcoming
    delay = slot * period + ALIGN_S - now
    if delay > 2 * period:
        slot = math.floor(now / period) + 1
        delay = slot * period + ALIGN_S - now
    return slot, delay


class Poller:
    """Polls every active key once per round, in phases; see the module docstring."""

    def __init__(
        self,
        ch: ClickHouse,
        *,
        tick_ms: int = 250,
        reread_s: int = 5,
        retention_s: int = 600,
        stale_ms: int = 5000,
        lag_source: Callable[[], float] | None = None,
        emit: Callable[[str, str, str], Awaitable[None]] | None = None,
        bus: Any = None,
        on_lag: Callable[[int], None] | None = None,
        concurrency: int = 8,
        max_phases: int = 8,
        spread_ms: int = 0,
        weight: Callable[[str], int] | None = None,
        full_reread_s: int = 30,
        poll_all_s: int = 0,
        batch: bool = True,
        fan_in: bool = True,
        unit_weight: int = 256,
        telemetry: Telemetry | None = None,
        heap: LongLivedHeap | None = None,
    ):
        self.ch = ch
        self.telemetry = telemetry or Telemetry()  # round durations and statements
        # Keys are long-lived (app/push/gcpolicy.py): counted in, frozen out of full scans.
        self.heap = heap
        self.tick_ms = tick_ms
        self.reread_s = reread_s
        self.retention_s = retention_s
        self.stale_ms = stale_ms
        self.lag_source = lag_source or (lambda: 0.0)
        self.emit = emit  # async emit(key, kind, text): kind "d" delta / "c" control
        self.bus = bus
        self.on_lag = on_lag
        self.keys: dict[str, _KeyState] = {}
        self.owned: set[str] = set()
        # Seconds to re-read beyond the regular window: late rows reported by the writer(s),
        # and every key's whole range now and then (app/push/late.py).
        self.late = LateRows(full_reread_s=full_reread_s)
        # > 0: a round polls only the keys of orgs whose inserts were reported since the last
        # round (`self.late`), and every key in the first round of each `poll_all_s` seconds of
        # the wall clock. 0: every round polls every key (where nobody reports inserts).
        self.poll_all_s = max(int(poll_all_s), 0)
        self._poll_all_slot: int | None = None
        # Keys of one org over one table (and the same seconds) read in one statement
        # (app/querybuilder/batch.py); False: one statement per key.
        self.batch = batch
        # Keys with a shape (KeySpec.shape) read for all their orgs in one statement per phase,
        # table and seconds (app/querybuilder/fanin.py); False: per org as above.
        self.fan_in = fan_in  # (only while `batch` is on too)
        # Compiled batches by their keys (the SQL does not depend on the range): compiled once,
        # re-bound each round; the least recently used go first.
        self._compiled_batches: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        # Keys read together stay in one phase up to this fan-out weight (`plan_phases`).
        self.unit_weight = max(int(unit_weight), 0)
        self._tick_listeners: list[AllTicksListener] = []
        self._sem = asyncio.Semaphore(concurrency)
        self.max_phases = max(int(max_phases), 1)
        # > 0: phase j starts no earlier than j * spread_ms / phases into the round (a bounded
        # pacing of the fan-out over part of the tick); 0: phases run back to back.
        self.spread_ms = max(int(spread_ms), 0)
        # The fan-out cost of a key, to balance the phases: the hub passes its local viewers.
        self.weight = weight or (lambda key: 1)
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # the pause between phases
        self._rounds = 0
        self._keys_version = 0  # bumped when a key becomes live here or goes
        # The last round's ((keys version, settings), owned keys, states, phases): reused
        # while none changed, between rebalancing rounds (`_round_plan`).
        self._plan: tuple[Any, set[str], list[_KeyState], list[list[_KeyState]]] | None = None
        self.phases = 0  # phases of the last round
        self._task: asyncio.Task[None] | None = None
        self._tick_lock = asyncio.Lock()
        self.lag_ms = 0
        self._prev_lag_ms = 0
        # Counters for tests and benchmarks.
        self.ticks = 0
        self.queries = 0  # statements run (a batch is one)
        self.batches = 0  # statements that answered more than one key
        self.fan_ins = 0  # statements that answered keys of several orgs at once
        self.skipped = 0  # key polls left out because their org reported no insert
        self.rows = 0  # rows read for keys (each diffed against what was last emitted)
        self.query_s = 0.0  # seconds spent waiting for this poller's statements
        self.last_tick_s = 0.0

    # -- keys -----------------------------------------------------------------------------
    def acquire(self, spec: KeySpec) -> bool:
        """Add a reference to `spec.key`; True when the key just became active here."""
        state = self.keys.get(spec.key)
        if state is None:
            state = self.keys[spec.key] = _KeyState(spec)
            self._keys_version += 1
            if self.heap is not None:
                self.heap.opened()
        state.refs += 1
        return state.refs == 1

    def release(self, key: str) -> bool:
        """Drop a reference; True when the key is no longer active here."""
        state = self.keys.get(key)
        if state is None:
            return False
        state.refs -= 1
        if state.refs > 0:
            return False
        del self.keys[key]
        self._keys_version += 1
        if self.heap is not None:
            self.heap.closed()
        self.owned.discard(key)
        self.late.forget(key)
        if self.bus is not None:
            self.bus.release_soon(key)
        return True

    def watch(self, spec: KeySpec, listener: TickListener) -> Watch:
        """The alerts hook: keep `spec` polled (sharing the query with any viewers of the
        same key) and call `listener(KeyTick)` after every tick that read it on this node."""
        self.acquire(spec)
        self.keys[spec.key].listeners.append(listener)
        return Watch(self, spec.key, listener)

    def _unwatch(self, key: str, listener: TickListener) -> None:
        state = self.keys.get(key)
        if state is not None:
            with contextlib.suppress(ValueError):
                state.listeners.remove(listener)
            self.release(key)

    def add_tick_listener(self, listener: AllTicksListener) -> Callable[[], None]:
        """Call `listener(list[KeyTick])` after every tick (all keys polled here); returns
        a function that removes it."""
        self._tick_listeners.append(listener)
        return lambda: self._tick_listeners.remove(listener)

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and self.tick_ms > 0:
            self._task = asyncio.create_task(self._run(), name="push-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        period = self.tick_ms / 1000
        slot = None
        while True:
            slot, delay = next_round(slot, time.time(), period)
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a round must never kill the loop
                log.exception("push tick failed")
            slot += 1

    async def tick(self, now: float | None = None) -> list[KeyTick]:
        """One poll round, all phases; returns what each key polled here read. Safe to call
        from tests (`CLICKPULSE_PUSH_TICK_MS=0` leaves rounds to them); `now` (epoch s) pins
        the time every phase reads up to, otherwise each phase reads up to its own start."""
        async with self._tick_lock:
            started, queries_before = time.perf_counter(), self.queries
            if self.heap is not None:
                self.heap.settle()
            loop = asyncio.get_running_loop()
            round_at = loop.time()
            lag_ms = int(self.lag_source() * 1000)
            if self.bus is not None:
                lag_ms = await self.bus.report_lag(lag_ms)
            self._prev_lag_ms, self.lag_ms = self.lag_ms, lag_ms
            if self.on_lag is not None:
                self.on_lag(lag_ms)
            if self.bus is not None:
                owned, acquired = await self.bus.maintain_leases(list(self.keys))
                self.owned = owned & set(self.keys)
                if acquired:
                    marks = await self.bus.get_watermarks(acquired)
                    for key in acquired:
                        state = self.keys.get(key)
                        if state is not None:
                            state.last.clear()
                            state.watermark = marks.get(key)
            else:
                self.owned = set(self.keys)
            self.late.begin_round()
            poll_all = self._poll_all_round(time.time() if now is None else now)
            states, phases = self._round_plan(rebalance=self._rounds % REBALANCE_EVERY == 0)
            self.phases = len(phases)
            spacing = self.spread_ms / 1000 / len(phases) if phases else 0.0
            # Keys of shared shapes are read for every phase at once: one fan-in statement per
            # round (per table and window) rather than one per phase, each scanning the same
            # seconds of every org. Phases still pace the fan-out and the other reads.
            early = (
                await self._read_early(
                    states, time.time() if now is None else now, lag_ms, poll_all
                )
                if len(phases) > 1
                else None
            )
            ticks: list[KeyTick] = []
            for j, group in enumerate(phases):
                if j:
                    # Let the previous phase's fan-out reach the sockets (the ASGI route's
                    # writer tasks, other callbacks) before this phase's queries; with
                    # spread_ms, also wait for this phase's place in the round.
                    await self._sleep(max(round_at + j * spacing - loop.time(), 0.0))
                at = time.time() if now is None else now
                # A key released while an earlier phase ran is not polled.
                group = [s for s in group if self.keys.get(s.spec.key) is s]
                results = await self._poll_phase(group, at, lag_ms, poll_all, early)
                # Fan out only once the phase's reads are done: a query thread running while
                # the loop writes to thousands of sockets would contend with it for the GIL
                # (every send releases it), so reads and fan-out take turns.
                for state, (tick, out) in results:
                    if tick is not None:
                        ticks.append(tick)
                    if self.emit is not None:
                        for kind, text in out:
                            await self.emit(state.spec.key, kind, text)
            if self.bus is not None and ticks:
                await self.bus.set_watermarks({t.key: t.time_to - 1 for t in ticks})
            for tick in ticks:
                state = self.keys.get(tick.key)
                for listener in list(state.listeners) if state else ():
                    try:
                        await listener(tick)
                    except Exception:
                        log.exception("tick listener failed for key %s", tick.key)
            for listener in list(self._tick_listeners):
                try:
                    await listener(ticks)
                except Exception:
                    log.exception("tick listener failed")
            self.ticks += 1
            self._rounds += 1
            self.last_tick_s = time.perf_counter() - started
            self.telemetry.poll_round(self.last_tick_s, self.queries - queries_before)
            return ticks

    def _round_plan(self, *, rebalance: bool) -> tuple[list[_KeyState], list[list[_KeyState]]]:
        """This round's keys and phases: planned again when a key came or went, this node's
        share of keys changed, or on a rebalancing round; else the last round's (placing
        10,000 keys is ~30 ms of a round's Python, and would place nothing new)."""
        plan = self._plan
        version = (self._keys_version, self.max_phases, self.batch, self.unit_weight)
        if not rebalance and plan is not None and plan[0] == version and plan[1] == self.owned:
            return plan[2], plan[3]
        keys = self.keys
        states = [keys[k] for k in self.owned if k in keys]
        phases = self.plan_phases(states, rebalance=rebalance)
        self._plan = (version, set(self.owned), states, phases)
        return states, phases

    def plan_phases(
        self, states: list[_KeyState], *, rebalance: bool = False
    ) -> list[list[_KeyState]]:
        """Split `states` into at most `max_phases` non-empty groups of about equal weight.

        What is placed is a *piece*: the keys one statement reads together (batchable keys of
        one org and table) form one piece, unless their weight exceeds both the ideal phase
        load and `unit_weight` — then each of its keys is a piece of its own (a tenant whose
        fan-out is most of the process's still has it spread over the phases, at one statement
        per phase). Other keys are pieces of their own.

        A piece keeps its phase from round to round (so its polls stay one tick apart); a new
        one joins the lightest phase. With `rebalance` (every `REBALANCE_EVERY` rounds), if the
        heaviest phase is well above the best possible, all pieces are placed again (heaviest
        first, each into the lightest phase) and the new placement is kept when it is better."""
        n = min(self.max_phases, len(states))
        if n <= 1:
            for state in states:
                state.phase = 0
            return [states] if states else []
        weights = {id(s): max(int(self.weight(s.spec.key)), 0) + 1 for s in states}
        pieces = self._pieces(states, weights, n)
        piece_weight = [sum(weights[id(s)] for s in piece) for piece in pieces]
        loads = [0] * n
        new = []
        for i, piece in enumerate(pieces):
            phases = {s.phase for s in piece}
            phase = phases.pop() if len(phases) == 1 else -1
            if 0 <= phase < n:
                loads[phase] += piece_weight[i]
            else:
                new.append(i)
        for i in sorted(new, key=lambda i: -piece_weight[i]):
            j = loads.index(min(loads))
            for state in pieces[i]:
                state.phase = j
            loads[j] += piece_weight[i]
        if rebalance:
            best = max(sum(loads) / n, max(piece_weight))
            if max(loads) > 1.25 * best:
                fresh = [0] * n
                placed = []
                for i in sorted(range(len(pieces)), key=lambda i: -piece_weight[i]):
                    j = fresh.index(min(fresh))
                    placed.append((i, j))
                    fresh[j] += piece_weight[i]
                if max(fresh) < max(loads):
                    for i, j in placed:
                        for state in pieces[i]:
                            state.phase = j
        groups: list[list[_KeyState]] = [[] for _ in range(n)]
        for state in states:
            groups[state.phase].append(state)
        return [g for g in groups if g]

    def _pieces(
        self, states: list[_KeyState], weights: dict[int, int], n: int
    ) -> list[list[_KeyState]]:
        """The units `plan_phases` places (see there)."""
        if not self.batch:
            return [[s] for s in states]
        units: dict[Any, list[_KeyState]] = {}
        for state in states:
            spec = state.spec
            ident = (spec.org_id, spec.compiled.plan.table) if spec.batchable else spec.key
            units.setdefault(ident, []).append(state)
        limit = max(math.ceil(sum(weights.values()) / n), self.unit_weight)
        pieces: list[list[_KeyState]] = []
        for unit in units.values():
            if len(unit) > 1 and sum(weights[id(s)] for s in unit) > limit:
                pieces.extend([s] for s in unit)
            else:
                pieces.append(unit)
        return pieces

    def _poll_all_round(self, now: float) -> bool:
        """Whether this round polls every key (the first round of each `poll_all_s` period
        of the wall clock, or always when `poll_all_s` is 0)."""
        if not self.poll_all_s:
            return True
        slot = math.floor(now / self.poll_all_s)
        if slot == self._poll_all_slot:
            return False
        self._poll_all_slot = slot
        return True

    def _due(self, state: _KeyState, poll_all: bool) -> bool:
        """Whether `state` is read this round: always in a poll-all round; otherwise only when
        its org reported an insert since the last round, or the key has no good read to build
        on (new here, taken over, or its last read failed)."""
        return (
            poll_all
            or state.watermark is None
            or state.failing_since is not None
            or self.late.inserted(state.spec.org_id)
        )

    def _window(self, state: _KeyState, now_s: int, lag_ms: int) -> tuple[int, int]:
        """[lo, hi) this round reads for `state` (asks `self.late` once per key per round)."""
        spec = state.spec
        mark = now_s if state.watermark is None else min(state.watermark, now_s)
        lowest = now_s - self.retention_s + 1
        if self.poll_all_s and state.watermark is not None:
            # Every insert is reported here (`poll_all_s` is only on where they are), and a
            # reported insert makes the next round re-read from its first second (below). So
            # the regular window need only start at the last second read (it was still open
            # then): re-reading `reread_s` more seconds of every key each round found nothing
            # the reports did not, at several times the rows read, split and diffed.
            lo = max(mark, lowest)
        else:
            catch_up = math.ceil(max(lag_ms, self._prev_lag_ms) / 1000)
            lo = max(mark - self.reread_s - catch_up, lowest)
        late = self.late.reread_from(spec.key, spec.org_id, now_s, lowest)
        if state.retry_from is not None:
            retry = max(state.retry_from, lowest)
            late = retry if late is None else min(late, retry)
        state.extended = late is not None and late < lo
        if late is not None:
            lo = min(lo, late)
        return lo, now_s + 1

    def _fans_in(self, spec: KeySpec) -> bool:
        """The key is read with other orgs' keys of its shape (app/querybuilder/fanin.py)."""
        return self.batch and self.fan_in and spec.shape is not None

    async def _read_early(
        self, states: list[_KeyState], now: float, lag_ms: int, poll_all: bool
    ) -> _EarlyRead | None:
        """Read this round's due keys that fan in, of every phase, as of `now` (None: keys
        never fan in here, each phase reads its own)."""
        if not (self.batch and self.fan_in):
            return None
        now_s = int(now)
        due = [
            (state, *self._window(state, now_s, lag_ms))
            for state in states
            if self._fans_in(state.spec) and self._due(state, poll_all)
        ]
        reads: dict[str, Any] = {}
        await self._read_items(due, reads)
        return _EarlyRead(
            now, {state.spec.key: (lo, hi, reads[state.spec.key]) for state, lo, hi in due}
        )

    async def _poll_phase(
        self,
        group: list[_KeyState],
        now: float,
        lag_ms: int,
        poll_all: bool,
        early: _EarlyRead | None = None,
    ) -> list[tuple[_KeyState, tuple[KeyTick | None, list[tuple[str, str]]]]]:
        """Read a phase's due keys — batchable keys of one org over the same table and seconds
        in one statement, the others alone; with `early`, the keys that fan in were read at the
        round's start — and diff each; returns (state, (tick, messages)) per key read, in
        `group` order."""
        now_s = int(now)
        due: list[tuple[_KeyState, int, int]] = []
        reads: dict[str, Any] = {}  # key -> rows or the exception its read raised
        for state in group:
            spec = state.spec
            if early is not None and self._fans_in(spec):
                got = early.reads.get(spec.key)
                if got is None:
                    self.skipped += 1  # the early read found it not due
                    continue
                lo, hi, reads[spec.key] = got
                due.append((state, lo, hi))
            elif self._due(state, poll_all):
                due.append((state, *self._window(state, now_s, lag_ms)))
            else:
                self.skipped += 1
        await self._read_items([item for item in due if item[0].spec.key not in reads], reads)
        out = []
        with paused_collection():
            for state, lo, hi in due:
                key = state.spec.key
                read_at = early.at if early is not None and key in early.reads else now
                out.append((state, self._apply(state, reads[key], read_at, lo, hi, lag_ms)))
        return out

    async def _read_items(
        self, due: list[tuple[_KeyState, int, int]], reads: dict[str, Any]
    ) -> None:
        """Read `due` (key, lo, hi) into `reads[key]`: keys with a shape fan in with other orgs'
        keys of the same table and window, batchable keys of one org over the same table and
        seconds share a statement, the others are read alone."""
        batches: dict[tuple[Any, ...], list[tuple[_KeyState, int, int]]] = {}
        # A fan-in statement reads from the earliest regular window of its keys (they were read
        # in the same rounds, so their watermarks agree). A key re-reading further back (late
        # rows, its periodic whole range) fans in only with keys re-reading from the same minute
        # (`EXTENDED_GROUP_S`): the orgs whose whole range comes round together are one
        # statement, and one org's long re-read never widens every org's read.
        for item in due:
            state, lo, hi = item
            spec = state.spec
            if self._fans_in(spec):
                shape = spec.shape if spec.shape_kind == "window" else ""
                since = lo // EXTENDED_GROUP_S if state.extended else None
                ident: tuple[Any, ...] = ("fan-in", spec.compiled.plan.table, shape, hi, since)
            elif self.batch and spec.batchable:
                ident = (spec.org_id, spec.compiled.plan.table, lo, hi)
            else:
                ident = ("key", spec.key)
            batches.setdefault(ident, []).append(item)
        await asyncio.gather(
            *(
                self._read_fan_in(items, reads)
                if ident[0] == "fan-in"
                else self._read(items, reads)
                for ident, items in batches.items()
            )
        )

    async def _read_fan_in(
        self, items: list[tuple[_KeyState, int, int]], reads: dict[str, Any]
    ) -> None:
        """Read `items` (keys of many orgs over the same table and seconds, each with a shape;
        one windowed shape, or batchable shapes) in one fan-in statement per `MAX_BATCH`
        shapes; a statement that fails is read again per org (`_read`), so an error never
        crosses orgs."""
        from app.querybuilder.batch import MAX_BATCH
        from app.querybuilder.fanin import compile_fan_in_batch, compile_fan_in_window

        by_shape: dict[str, list[tuple[_KeyState, int, int]]] = {}
        for item in items:
            by_shape.setdefault(item[0].spec.shape or "", []).append(item)
        shapes = sorted(by_shape)
        lo, hi = min(item[1] for item in items), items[0][2]
        for start in range(0, len(shapes), MAX_BATCH):
            chunk_shapes = shapes[start : start + MAX_BATCH]
            chunk = [item for shape in chunk_shapes for item in by_shape[shape]]
            index = {shape: i for i, shape in enumerate(chunk_shapes)}
            first = [by_shape[shape][0][0].spec for shape in chunk_shapes]
            orgs = sorted({state.spec.org_id for state, _, _ in chunk})
            try:
                ident = ("fan-in", *chunk_shapes)
                batch = self._compiled_batches.get(ident)
                if batch is None:
                    if first[0].shape_kind == "window":
                        batch = compile_fan_in_window(
                            first[0].live,
                            first[0].window_s,
                            org_ids=orgs,
                            database=self.ch.database,
                            time_from=lo,
                            time_to=hi,
                        )
                    else:
                        batch = compile_fan_in_batch(
                            [spec.live for spec in first],
                            org_ids=orgs,
                            database=self.ch.database,
                            time_from=lo,
                            time_to=hi,
                        )
                    self._remember_batch(ident, batch)
                else:
                    self._compiled_batches.move_to_end(ident)
                bound = batch.bind(lo, hi, orgs)
                for state, _, _ in chunk:
                    state.queries += 1
                result = await self._statement(bound.compiled, fan_in=True)
                self.fan_ins += 1
            except Exception as exc:
                log.warning(
                    "push fan-in of %d keys failed, reading them per org: %s", len(chunk), exc
                )
                per_org: dict[int, list[tuple[_KeyState, int, int]]] = {}
                for item in chunk:
                    per_org.setdefault(item[0].spec.org_id, []).append(item)
                await asyncio.gather(*(self._read(group, reads) for group in per_org.values()))
                continue
            wanted = {(state.spec.org_id, index[state.spec.shape or ""]) for state, _, _ in chunk}
            with paused_collection():
                split = bound.split_records(result.columns, result.types, result.rows, wanted)
            for state, own_lo, _ in chunk:
                rows = split[(state.spec.org_id, index[state.spec.shape or ""])]
                # Exactly the key's own window (the statement may have started earlier).
                reads[state.spec.key] = (
                    rows if own_lo == lo else [r for r in rows if r[0] >= own_lo]
                )

    def _remember_batch(self, ident: tuple[Any, ...], batch: Any) -> None:
        self._compiled_batches[ident] = batch
        while len(self._compiled_batches) > BATCH_CACHE:
            del self._compiled_batches[next(iter(self._compiled_batches))]

    async def _read(self, items: list[tuple[_KeyState, int, int]], reads: dict[str, Any]) -> None:
        """Read `items` (one key, or keys of one org over the same table and seconds) into
        `reads[key]`: the key's rows, or the exception its read raised. A batch that fails is
        read again key by key, so one key's failure stays its own."""
        if len(items) > 1:
            from app.querybuilder.batch import MAX_BATCH, compile_live_batch

            items = sorted(items, key=lambda item: item[0].spec.key)
            for start in range(0, len(items), MAX_BATCH):
                chunk = items[start : start + MAX_BATCH]
                try:
                    members = tuple(state.spec.key for state, _, _ in chunk)
                    batch = self._compiled_batches.get(members)
                    if batch is None:
                        batch = compile_live_batch(
                            [state.spec.live for state, _, _ in chunk],
                            org_id=chunk[0][0].spec.org_id,
                            database=self.ch.database,
                            time_from=chunk[0][1],
                            time_to=chunk[0][2],
                        )
                        self._remember_batch(members, batch)
                    else:
                        self._compiled_batches.move_to_end(members)
                    batch = batch.bind(chunk[0][1], chunk[0][2])
                    for state, _, _ in chunk:
                        state.queries += 1
                    result = await self._statement(batch.compiled)
                    self.batches += 1
                except Exception as exc:
                    log.warning(
                        "push batch of %d keys failed, reading them one by one: %s", len(chunk), exc
                    )
                    await asyncio.gather(*(self._read([item], reads) for item in chunk))
                    continue
                split = batch.split_records(result.columns, result.types, result.rows)
                for (state, _, _), rows in zip(chunk, split, strict=True):
                    reads[state.spec.key] = rows
            return
        state, lo, hi = items[0]
        state.queries += 1
        try:
            result = await self._statement(state.spec.bind(lo, hi))
            reads[state.spec.key] = state.spec.records_of(result)
        except Exception as exc:
            reads[state.spec.key] = exc

    async def _statement(self, compiled: Any, *, fan_in: bool = False) -> Any:
        """One statement (a fan-in statement with `fan_in`), under the semaphore, counted."""
        run = run_fan_in if fan_in else run_guarded
        async with self._sem:
            self.queries += 1
            started = time.perf_counter()
            try:
                return await run(self.ch, compiled)
            finally:
                self.query_s += time.perf_counter() - started

    def _apply(
        self, state: _KeyState, read: Any, now: float, lo: int, hi: int, lag_ms: int
    ) -> tuple[KeyTick | None, list[tuple[str, str]]]:
        """Diff one key's read (its rows, or the exception its read raised) against what was
        last emitted: (its tick or None if the read failed, the messages to emit for it as
        (kind, text)). Emitting is left to the caller, after the whole phase has read."""
        spec = state.spec
        out: list[tuple[str, str]] = []
        now_s = int(now)
        if isinstance(read, BaseException):
            state.retry_from = lo if state.retry_from is None else min(state.retry_from, lo)
            if state.failing_since is None:
                state.failing_since = now
                log.warning("push poll failed for key %s: %s", spec.key, read)
            down_ms = int((now - state.failing_since) * 1000)
            if down_ms >= self.stale_ms:
                state.stale_sent = True
                out.append(
                    ("c", protocol.encode({"type": "stale", "key": spec.key, "lag_ms": down_ms}))
                )
            return None, out
        state.retry_from = None
        if state.failing_since is not None:
            state.failing_since = None
            if state.stale_sent:
                state.stale_sent = False
                out.append(("c", protocol.encode({"type": "live", "key": spec.key})))
        # Records (tuples: t, dims, outputs): a row's identity is its first `key_width`
        # fields, and a whole record equal to the last one emitted for it means no change —
        # one slice and one comparison a row (tens of thousands a round at the seed's scale).
        records = spec.without_empty_fill(read, lo, hi)
        self.rows += len(records)
        changed = []
        last = state.last
        width = spec.key_width
        for record in records:
            ident = record[:width]
            if last.get(ident) != record:
                last[ident] = record
                changed.append(record)
        state.watermark = now_s
        if now_s - state.pruned_at >= 10:
            state.pruned_at = now_s
            horizon = now_s - self.retention_s
            for ident in [ident for ident in last if ident[0] < horizon]:
                del last[ident]
        if changed:
            out.append(
                (
                    "d",
                    protocol.encode(
                        {"type": "delta", "key": spec.key, "rows": spec.wire_rows(changed)}
                    ),
                )
            )
        return KeyTick(spec.key, spec, records, changed, lo, hi, now, lag_ms, records=True), out
