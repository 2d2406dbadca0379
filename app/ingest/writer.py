"""The micro-batching writer: many small submissions in, few large INSERTs out. Long because
it owns the whole path from acceptance to ClickHouse — buffer, WAL segments, exactly-once
INSERTs with their retries, replay, backpressure, health and insert listeners — around one
shared state that splitting would have to pass around.

Why batch: every insert block costs the rollup MVs once per group it touches and writes one
part per table, so rows/s grows with the block size (docs/pipeline.md, "Batch size decides
throughput"). Why bound the delay: live dashboards read rollup_1s. With the WAL (the default)
`submit` returns once the rows are in the write-ahead log and INSERTs run behind it, exactly
once per segment; with the WAL off it returns once the INSERT holding its rows succeeded.
Flush triggers, backpressure, retries and stop are in docs/ingest.md, section "The writer"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from app.clickhouse import ClickHouse
from app.config import Settings
from app.health import ComponentHealth
from app.ingest.columns import ARROW_SCHEMA, ARROW_SCHEMA_WITH_ID, Columns, with_event_id
from app.ingest.dedup import EventIdWindow
from app.ingest.wal import Wal, WalError, decode_table, encode_table
from app.observability import Telemetry

log = logging.getLogger("clickpulse.ingest.writer")

# The rollup MVs are independent of each other once the raw block is in: with this setting
# ClickHouse pushes a block through them in parallel (measured: needed for ~350k rows/s).
DEFAULT_INSERT_SETTINGS: dict[str, Any] = {"parallel_view_processing": 1}

# An INSERT with a deduplication token pins what decides how it is cut into blocks: the token
# names blocks `<token>_<n>`, so a replay dedups fully only if it is cut the same way (measured:
# a replay with 1,000-row blocks re-inserted all but the first block). These are ClickHouse's
# defaults (one block up to ~1M rows), pinned so a profile cannot change them between a crash
# and its replay.
BLOCK_SETTINGS: dict[str, Any] = {
    "max_block_size": 65409,
    "min_insert_block_size_rows": 1048449,
    "min_insert_block_size_bytes": 268402944,
}
# Deduplication itself, pinned too (both are chDB 26.9's defaults): on for this INSERT, and
# applied to the blocks the materialized views write (every table here is fed by a view).
DEDUP_SETTINGS: dict[str, Any] = {
    "deduplicate_insert": "enable",
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


def dedup_insert_settings(token: str) -> dict[str, Any]:
    """Settings that make an INSERT idempotent under `token` (with the tables' window,
    sql/migrations/clickhouse/0005_insert_deduplication.sql)."""
    return {**BLOCK_SETTINGS, **DEDUP_SETTINGS, "insert_deduplication_token": token}


# Test-only fault injection (the crash suite, tests/ingest/test_crash.py): with
# CLICKPULSE_TEST_CRASH_AT=<point>[:<n>] the process exits at once (os._exit, no cleanup) the
# n-th time (default 1st) it reaches <point>: `after_wal_append` (a request's record is written,
# not yet acknowledged), `before_insert`, `after_insert` (an INSERT returned, nothing recorded),
# `before_wal_delete` (checkpoint written, segment not yet deleted). Unset in production.
CRASH_AT_ENV = "CLICKPULSE_TEST_CRASH_AT"
CRASH_EXIT_CODE = 87
CRASH_POINTS = ("after_wal_append", "before_insert", "after_insert", "before_wal_delete")


class _CrashHook:
    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining = None, 0
        if spec:
            point, _, nth = spec.partition(":")
            if point not in CRASH_POINTS:
                raise ValueError(f"{CRASH_AT_ENV}: unknown point {point!r} (one of {CRASH_POINTS})")
            self.point, self.remaining = point, int(nth or 1)

    def reached(self, point: str) -> None:
        if point == self.point:
            self.remaining -= 1
            if self.remaining == 0:
                log.error("%s=%s: exiting now", CRASH_AT_ENV, point)
                os._exit(CRASH_EXIT_CODE)


# Retry backoff of failed INSERTs in WAL mode: 0.1 s doubling up to 5 s.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# Failed attempts during stop() before giving up (the rows stay in the WAL for the next start)
STOP_ATTEMPTS = 3
# Failed attempts of a replay at start() before start() raises.
REPLAY_ATTEMPTS = 5


class WriterError(Exception):
    """The writer could not store a submission; nothing of it was acknowledged."""


class WriterOverloaded(WriterError):
    """Too many rows are buffered or in flight; retry later."""


class WriterClosed(WriterError):
    """The writer is stopping or stopped."""


class InsertFailed(WriterError):
    """The INSERT holding this submission failed in ClickHouse (WAL off only)."""


class WalWriteFailed(WriterError):
    """The submission could not be written to the WAL; nothing of it was accepted."""


class ReplayFailed(WriterError):
    """Leftover WAL segments could not be inserted at start; they are kept."""


class _Batch:
    """Rows inserted by one INSERT: one WAL segment, or (WAL off) one flush's untokened
    submissions or one tokened submission."""

    __slots__ = ("rows", "seq", "since", "tables", "token", "waiters")

    def __init__(self, seq: int | None, token: str | None, since: float) -> None:
        self.seq = seq
        self.token = token
        self.since = since  # monotonic time of its oldest row
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.waiters: list[asyncio.Future[None]] = []


def seconds_per_org(batch: list[pa.Table]) -> dict[int, tuple[int, int]]:
    """{org_id: (first, last) epoch second of `ts`} over the rows of `batch`."""
    table = batch[0] if len(batch) == 1 else pa.concat_tables(batch, promote_options="default")
    summary = (
        table.select(["org_id", "ts"]).group_by("org_id").aggregate([("ts", "min"), ("ts", "max")])
    )
    out = {}
    for org_id, first, last in zip(
        summary.column("org_id").to_pylist(),
        summary.column("ts_min").to_pylist(),
        summary.column("ts_max").to_pylist(),
        strict=True,
    ):
        out[int(org_id)] = (int(first.timestamp()), int(last.timestamp()))
    return out


class EventWriter:
    """Buffers events and inserts them into `events_queue` in batches."""

    def __init__(
        self,
        ch: ClickHouse,
        settings: Settings,
        *,
        table: str = "events_queue",
        insert_settings: dict[str, Any] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.ch = ch
        # Batch sizes, INSERT latency, pipeline lag; build_services sets the process's own.
        self.telemetry = telemetry or Telemetry()
        self.table = table
        self.max_rows = settings.writer_max_rows
        self.max_delay_s = settings.writer_max_delay_ms / 1000
        self.max_pending_rows = settings.writer_max_pending_rows
        self.max_wal_bytes = settings.wal_max_bytes
        self.insert_settings = (
            DEFAULT_INSERT_SETTINGS if insert_settings is None else insert_settings
        )
        self.wal: Wal | None = (
            Wal(settings.wal_path, fsync=settings.wal_fsync) if settings.wal_enabled else None
        )
        # Submissions not yet cut into batches, in order: (WAL segment or None, token or None,
        # rows, waiter or None). WAL mode: one batch per segment; WAL off: tokened ones alone.
        self._buffer: list[tuple[int | None, str | None, pa.Table, asyncio.Future[None] | None]]
        self._buffer = []
        self._buffer_rows = 0
        self._queue: list[_Batch] = []  # cut, not yet inserted; the head is next (or failing)
        self._first_row_at: float | None = None  # monotonic time of the buffer's oldest row
        self._inflight_since: float | None = None  # ... of the batch being inserted
        self._pending_rows = 0  # buffered + queued
        self._accepted_rows = 0  # cumulative, for wait_inserted()
        self._inserted_rows = 0  # cumulative (rows_written counts replays too)
        self._inserted_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flush_now = False
        self._retry_at: float | None = None
        self._consecutive_failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._crash = _CrashHook(os.environ.get(CRASH_AT_ENV))
        # Event ids stored recently (app.ingest.dedup); the ingest route drops repeats with it.
        self.event_ids = EventIdWindow(
            settings.ingest_event_id_window_s, settings.ingest_event_id_max
        )
        # One thread: INSERTs are serialised by design, and stay off the query pool.
        self._executor: ThreadPoolExecutor | None = None
        # Counters for tests, benchmarks and /readyz-style introspection.
        self.rows_written = 0
        self.replayed_rows = 0
        self.flushes = 0
        self.failed_flushes = 0
        self.insert_seconds = 0.0  # wall time spent building Arrow tables and inserting
        # What /readyz reports for ingest (app.health: each change of state logged once).
        self.wal_health = ComponentHealth("wal")
        self.insert_health = ComponentHealth("clickhouse_insert")
        self.backlog_health = ComponentHealth("ingest_backlog")
        # Called after each successful INSERT with {org_id: (first, last) second} of its rows:
        # the push tier re-reads those seconds for live viewers (app/push/late.py).
        self.insert_listeners: list[Callable[[dict[int, tuple[int, int]]], None]] = []

    @property
    def pending_rows(self) -> int:
        """Rows accepted by `submit` and not yet inserted (buffered or in flight)."""
        return self._pending_rows

    def oldest_pending_age_s(self) -> float:
        """Age in seconds of the oldest accepted row not yet inserted; 0 when none.

        The pipeline's lag as the push tier sees it (read-only, cheap: call it every tick).
        """
        oldest = [t for t in (self._inflight_since, self._first_row_at) if t is not None]
        if self._queue:
            oldest.append(self._queue[0].since)
        if not oldest or self._pending_rows == 0:
            return 0.0
        return max(0.0, time.monotonic() - min(oldest))

    def health(self) -> dict[str, dict[str, Any]]:
        """Each ingest component's state for /readyz: {name: {ok, detail, ..., blocks_ingest}}.

        `wal`: the last append or fsync failed (disk full, read-only, ...), or the WAL holds
        more than `wal_max_bytes` not yet inserted. `clickhouse_insert`: the last INSERT
        failed. `ingest_backlog`: more than `writer_max_pending_rows` rows wait. A component
        `blocks_ingest` when, while it fails, every POST /v1/events answers 503: always for
        `wal` and `ingest_backlog`; for `clickhouse_insert` only with the WAL off (with the
        WAL on, requests are still accepted into it until it is full).
        """
        self._check_bounds()
        out = {}
        if self.wal is not None:
            out["wal"] = {**self.wal_health.status(), "blocks_ingest": True}
        out["clickhouse_insert"] = {
            **self.insert_health.status(),
            "blocks_ingest": self.wal is None,
        }
        out["ingest_backlog"] = {**self.backlog_health.status(), "blocks_ingest": True}
        return out

    def _over_bound(self, rows: int) -> str | None:
        """Why a submission of `rows` more rows would be refused now, if it would."""
        if self._pending_rows + rows > self.max_pending_rows:
            return (
                f"{self._pending_rows} rows are waiting to be written (limit "
                f"{self.max_pending_rows})"
            )
        return None

    def _wal_over_bound(self) -> str | None:
        wal = self.wal
        if wal is not None and wal.pending_bytes > self.max_wal_bytes:
            return (
                f"the ingest WAL holds {wal.pending_bytes} bytes not yet inserted (limit "
                f"{self.max_wal_bytes})"
            )
        return None

    def _check_bounds(self) -> None:
        """End a full-WAL / backlog state once the inserts caught up (no submission needed)."""
        if not self.backlog_health.ok and self._pending_rows < self.max_pending_rows:
            self.backlog_health.succeeded()
        if (
            not self.wal_health.ok
            and self.wal_health.error.startswith("full: ")
            and self._wal_over_bound() is None
        ):
            self.wal_health.succeeded()

    async def start(self) -> None:
        """Open the WAL, insert what a previous process left in it, start the flusher.

        Idempotent. Raises `ReplayFailed` (the leftovers stay on disk) when the leftover
        rows cannot be inserted, and `WalWriteFailed` when the WAL cannot be opened (e.g.
        another process owns it).
        """
        if self._task is not None:
            return
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        if self.wal is not None:
            try:
                leftovers = self.wal.open()
            except (WalError, OSError) as exc:
                self._executor.shutdown(wait=False)
                self._executor = None
                self.wal_health.failed(f"opening the WAL failed: {exc}")
                raise WalWriteFailed(str(exc)) from exc
            try:
                await self._replay(leftovers)
                await self._load_event_ids()
            except BaseException:
                self.wal.close()
                self._executor.shutdown(wait=False)
                self._executor = None
                raise
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def _load_event_ids(self) -> None:
        """Remember the ids `events` got within the window (WAL mode, after the replay).

        Exact in WAL mode: every INSERT that a crash cut short was completed by the replay,
        so an id in `events` is in every rollup too. Not done with the WAL off, where a crash
        inside an INSERT can leave ids in `events` that some rollup lacks: there the client's
        retry must reach ClickHouse, whose token completes the cut INSERT (docs/ingest.md).
        """
        window = self.event_ids
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._executor,
                lambda: self.ch.query_sync(
                    f"SELECT org_id, event_id FROM {self.ch.table('events')} WHERE event_id != '' "
                    "AND received_at >= now64(3) - toIntervalSecond({w:UInt32}) "
                    "ORDER BY received_at DESC LIMIT {n:UInt64}",
                    {"w": int(window.window_s), "n": window.max_ids // 2},
                ),
            )
        except Exception as exc:
            # Ingest must not stay down for this: ids stored before this start are then not
            # recognised (a client retry of them counts twice) until they age out anyway.
            log.error("event id window: could not load recent ids from events: %s", exc)
            return
        window.add([window.key(int(org), event_id) for org, event_id in reversed(result.rows)])
        if result.rows:
            log.info(
                "event id window: %d ids of the last %d s loaded from events in %.2f s",
                len(result.rows),
                window.window_s,
                time.monotonic() - started,
            )

    async def _replay(self, leftovers: list) -> None:
        """Insert each leftover segment as one INSERT under its token, then retire it.

        Exactly the batch the crashed process inserted (or was inserting) for that segment,
        with the same token: whatever of it ClickHouse already stored is dropped, per table.
        """
        if not leftovers:
            return
        assert self.wal is not None
        total = sum(len(s.payloads) for s in leftovers)
        log.warning(
            "replaying %d record(s) from %d leftover WAL segment(s) in %s",
            total,
            len(leftovers),
            self.wal.directory,
        )
        for segment in leftovers:
            tables = [decode_table(payload) for payload in segment.payloads]
            rows = sum(t.num_rows for t in tables)
            await self._replay_batch(tables, rows, segment.token)
            self.wal.retire_leftover(segment)
            # Their ids count as stored however old they are: the window's horizon starts at
            # the replay, not at the original receipt.
            for table in tables:
                if "event_id" in table.column_names:
                    orgs = table.column("org_id").to_pylist()
                    ids = table.column("event_id").to_pylist()
                    self.event_ids.add(
                        [self.event_ids.key(o, e) for o, e in zip(orgs, ids, strict=True) if e]
                    )

    async def _replay_batch(self, batch: list[pa.Table], rows: int, token: str) -> None:
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        for attempt in range(1, REPLAY_ATTEMPTS + 1):
            try:
                if rows:
                    await loop.run_in_executor(self._executor, self._insert, batch, token)
            except Exception as exc:
                log.error("replay insert of %d rows failed (attempt %d): %s", rows, attempt, exc)
                if attempt == REPLAY_ATTEMPTS:
                    raise ReplayFailed(
                        f"inserting {rows} rows left in the ingest WAL failed: {exc}"[:500]
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
            else:
                self.replayed_rows += rows
                self.rows_written += rows
                self._notify_inserted(await self._summarize(batch))
                return

    async def stop(self) -> None:
        """Refuse new submissions, insert everything buffered, stop the flusher."""
        self._closing = True
        if self._task is None:
            return
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self.wal is not None:
            if self._pending_rows:
                log.error(
                    "stopping with %d rows not inserted; they stay in the WAL (%s) and are "
                    "inserted at the next start",
                    self._pending_rows,
                    self.wal.directory,
                )
                # The WAL holds them; a later start() of this writer replays them from there.
                self._buffer, self._buffer_rows, self._first_row_at = [], 0, None
                self._queue = []
                self._accepted_rows -= self._pending_rows
                self._pending_rows = 0
                self._retry_at, self._consecutive_failures = None, 0
            self.wal.close()
        for _, fut in self._inserted_waiters:
            if not fut.done():
                fut.set_exception(WriterClosed("the writer stopped before inserting the rows"))
                fut.exception()
        self._inserted_waiters = []

    async def submit(self, columns: Columns, *, token: str | None = None) -> None:
        """Accept `columns`; see the module docstring for when this returns in each mode.

        `token` (WAL off only; ignored with the WAL, whose segments carry their own): insert
        these rows alone under this deduplication token. Raises `WriterOverloaded` (nothing
        stored) when over the pending-rows or WAL-size bound, `WriterClosed` when stopping,
        `WalWriteFailed` when the WAL write failed (nothing accepted), and, with the WAL off,
        `InsertFailed` when the INSERT failed.
        """
        rows = len(columns)
        if rows == 0:
            return
        if self._closing or self._task is None:
            raise WriterClosed("the event writer is not running")
        over = self._over_bound(rows)
        if over is not None:
            self.backlog_health.failed(over)
            raise WriterOverloaded(over)
        self._check_bounds()
        wal = self.wal
        over = self._wal_over_bound()
        if over is not None:
            self.wal_health.failed("full: " + over)
            raise WriterOverloaded(over)
        table = columns.to_arrow()
        if wal is not None:
            try:
                seq = wal.append(encode_table(table))
            except WalError as exc:
                self.wal_health.failed(str(exc))
                raise WalWriteFailed(str(exc)) from exc
            self._add(seq, None, table, rows, None)
            self._crash.reached("after_wal_append")
            try:
                await wal.sync()  # no-op unless wal_fsync
            except WalError as exc:
                # The rows will still be inserted (they are buffered); the client is told
                # they were not stored and may retry: a duplicate, never a loss.
                self.wal_health.failed(str(exc))
                raise WalWriteFailed(str(exc)) from exc
            self.wal_health.succeeded()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add(None, token, table, rows, waiter)
        # shield: a client that disconnects must not cancel the shared future (the rows are
        # in the batch either way).
        await asyncio.shield(waiter)

    def _add(
        self,
        seq: int | None,
        token: str | None,
        table: pa.Table,
        rows: int,
        waiter: asyncio.Future[None] | None,
    ) -> None:
        self._buffer.append((seq, token, table, waiter))
        self._buffer_rows += rows
        self._pending_rows += rows
        self._accepted_rows += rows
        if self._first_row_at is None:
            self._first_row_at = time.monotonic()
            self._wake.set()  # the flusher starts the max-delay clock
        elif self._buffer_rows >= self.max_rows:
            self._wake.set()

    async def wait_inserted(self) -> None:
        """Return once every row accepted before this call is inserted (flushing now).

        For tests and tools that need to read what they just posted (callable from another
        event loop, e.g. a test client's); raises `WriterClosed` if the writer stops first
        with rows still pending.
        """
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            await self._wait_inserted()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._wait_inserted(), loop))

    async def _wait_inserted(self) -> None:
        target = self._accepted_rows
        if self._inserted_rows >= target:
            return
        if self._task is None:
            raise WriterClosed("the event writer is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inserted_waiters.append((target, fut))
        self._flush_now = True
        self._wake.set()
        await asyncio.shield(fut)

    async def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _run(self) -> None:
        while True:
            if self._buffer_rows == 0 and not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._retry_at is not None:
                if self._closing and self._consecutive_failures >= STOP_ATTEMPTS:
                    return  # give up: the rows stay in the WAL for the next start
                if time.monotonic() < self._retry_at:
                    await self._sleep_until(self._retry_at)
                    continue
                self._retry_at = None
            elif (
                self._buffer_rows < self.max_rows
                and not self._closing
                and not self._flush_now
                and self._first_row_at is not None
            ):
                deadline = self._first_row_at + self.max_delay_s
                if time.monotonic() < deadline:
                    await self._sleep_until(deadline)
                    continue
            self._flush_now = False
            await self._flush()

    def _cut(self) -> None:
        """Move the buffer into the queue as batches (the WAL's open segment is sealed)."""
        buffer, since = self._buffer, self._first_row_at or time.monotonic()
        self._buffer, self._buffer_rows, self._first_row_at = [], 0, None
        sealed = self.wal.seal() if self.wal is not None else []
        untokened: _Batch | None = None
        by_seq: dict[int, _Batch] = {}
        for seq, token, table, waiter in buffer:
            if seq is not None:
                batch = by_seq.get(seq)
                if batch is None:
                    assert self.wal is not None
                    batch = by_seq[seq] = _Batch(seq, self.wal.token(seq), since)
                    self._queue.append(batch)
            elif token is not None:
                batch = _Batch(None, token, since)
                self._queue.append(batch)
            else:
                if untokened is None:
                    untokened = _Batch(None, None, since)
                    self._queue.append(untokened)
                batch = untokened
            batch.tables.append(table)
            batch.rows += table.num_rows
            if waiter is not None:
                batch.waiters.append(waiter)
        if self.wal is not None:
            # A sealed segment with no rows (its only write failed and was undone) has nothing
            # to insert: retire it now.
            queued = {b.seq for b in self._queue}
            empty = [seq for seq in sealed if seq not in queued]
            if empty:
                self.wal.retire(empty)

    async def _flush(self) -> None:
        """Insert everything buffered and queued, batch by batch; settle what depends on it."""
        if self._buffer:
            self._cut()
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[0]
            self._inflight_since = batch.since
            started = loop.time()
            try:
                self._crash.reached("before_insert")
                await loop.run_in_executor(self._executor, self._insert, batch.tables, batch.token)
                self._crash.reached("after_insert")
                ranges = await self._summarize(batch.tables)
            except Exception as exc:  # any failure must be handled, never vanish
                self.failed_flushes += 1
                self.telemetry.insert_failures.inc()
                # Logged at ERROR once per failing period (here and by insert_health), then
                # DEBUG: a ClickHouse outage must not write a line per retry or per request.
                level = logging.ERROR if self.insert_health.ok else logging.DEBUG
                self.insert_health.failed(f"{type(exc).__name__}: {exc}")
                if self.wal is not None:
                    # Keep the batch at the head and retry it, alone and under the same token,
                    # with backoff: a replay after a crash re-cuts exactly this segment.
                    self._consecutive_failures += 1
                    delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._consecutive_failures - 1))
                    log.log(
                        level,
                        "insert of %d events into %s failed (attempt %d, retrying in %.1f s): %s",
                        batch.rows,
                        self.table,
                        self._consecutive_failures,
                        delay,
                        exc,
                    )
                    self._retry_at = time.monotonic() + delay
                    return
                log.log(
                    level, "insert of %d events into %s failed: %s", batch.rows, self.table, exc
                )
                self._queue.pop(0)
                self._pending_rows -= batch.rows
                self._inserted_rows += batch.rows  # settled (failed): nobody waits for them
                error = InsertFailed(f"storing the events failed: {exc}"[:500])
                for waiter in batch.waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                        # Retrieved by the submitter; mark it so a gone submitter logs nothing.
                        waiter.exception()
                self._settle_inserted_waiters()
            else:
                self._queue.pop(0)
                self._consecutive_failures = 0
                self.insert_health.succeeded()
                self._notify_inserted(ranges)  # before the waiters: "inserted" implies "told"
                if self.wal is not None and batch.seq is not None:
                    self.wal.mark_inserted(batch.seq)
                    self._crash.reached("before_wal_delete")
                    self.wal.retire([batch.seq])
                self.flushes += 1
                self.rows_written += batch.rows
                self._pending_rows -= batch.rows
                self._inserted_rows += batch.rows
                for waiter in batch.waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._settle_inserted_waiters()
            finally:
                self._inflight_since = None
                self.insert_seconds += loop.time() - started

    async def _summarize(self, batch: list[pa.Table]) -> dict[int, tuple[int, int]] | None:
        """The seconds per org of an inserted batch, for the insert listeners (computed in the
        writer thread: 8-30 ms for 100k rows, too long for the event loop); never raises."""
        if not self.insert_listeners or not batch:
            return None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, seconds_per_org, batch)
        except Exception:  # a summary for the push tier must never fail an insert
            log.exception("summarising an inserted batch failed")
            return None

    def _notify_inserted(self, ranges: dict[int, tuple[int, int]] | None) -> None:
        """Tell the insert listeners which seconds of which org a batch touched."""
        if not ranges:
            return
        for listener in list(self.insert_listeners):
            try:
                listener(ranges)
            except Exception:
                log.exception("insert listener failed")

    def _settle_inserted_waiters(self) -> None:
        done = self._inserted_rows
        keep = []
        for target, fut in self._inserted_waiters:
            if target <= done:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._inserted_waiters = keep
        if keep:
            self._flush_now = True

    def _insert(self, batch: list[pa.Table], token: str | None = None) -> None:
        # Runs in the writer thread. The per-request tables are concatenated without copying;
        # the facade's insert squashes them into one block.
        schema = ARROW_SCHEMA
        if any("event_id" in t.column_names for t in batch):
            schema = ARROW_SCHEMA_WITH_ID
            batch = [with_event_id(t) for t in batch]
        table = batch[0] if len(batch) == 1 else pa.concat_tables(batch)
        if table.schema != schema:  # replayed records from an older layout
            table = table.select(schema.names).cast(schema)
        settings = self.insert_settings
        if token is not None:
            settings = {**settings, **dedup_insert_settings(token)}
        started = time.perf_counter()
        self.ch.insert_sync(self.table, table, settings=settings)
        self.telemetry.inserted(table, time.perf_counter() - started)
