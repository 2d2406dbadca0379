"""The micro-batching writer: many small submissions in, few large INSERTs out.

Why batch: every insert block costs the rollup MVs once per group they touch and writes one
part per table, so rows/s grows with the block size (measured into chDB with every MV
attached: ~110k rows/s at 16k-row inserts, ~350k+ at 100k). Why bound the delay: live
dashboards read rollup_1s.

Two modes (`Settings.wal_enabled`, env `CLICKPULSE_WAL`, default on):

* **WAL (default)**: `submit(columns)` appends the rows to the write-ahead log
  (`app.ingest.wal`) and to the in-memory buffer, and returns once the record is written
  (with `wal_fsync`, once it is fsynced: group commit). The request is acknowledged then,
  not after the INSERT, so clients never wait for ClickHouse and blocks grow to
  `writer_max_rows`. WAL segments are retired only after the INSERT holding their rows
  succeeded; a failed INSERT is retried with backoff (rows stay in memory and in the WAL);
  on `start()`, segments left by a previous process are inserted before anything new is
  accepted. Delivery into ClickHouse is at-least-once (docs/ingest.md, "Durability").
* **off**: `submit` returns only when the INSERT holding its rows succeeded and raises
  `InsertFailed` if it failed (nothing is retried; the client retries).

Common to both:

* A flush starts when `writer_max_rows` rows are buffered, or `writer_max_delay_ms` after the
  first row of the buffer arrived, whichever comes first.
* One INSERT runs at a time; submissions keep accumulating meanwhile and the next flush
  takes everything buffered, so batches grow with load (adaptive batching).
* Backpressure: more than `writer_max_pending_rows` rows (or `wal_max_bytes` WAL bytes) not
  yet inserted → `submit` raises `WriterOverloaded` at once, having stored nothing.
* `stop()` refuses new submissions and inserts everything buffered before returning (in WAL
  mode it gives up after a few failed attempts, leaving the rows in the WAL for the next
  start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from app.clickhouse import ClickHouse
from app.config import Settings
from app.health import ComponentHealth
from app.ingest.columns import ARROW_SCHEMA, Columns
from app.ingest.wal import Wal, WalError, decode_table, encode_table

log = logging.getLogger("clickpulse.ingest.writer")

# The rollup MVs are independent of each other once the raw block is in: with this setting
# ClickHouse pushes a block through them in parallel (measured: needed for ~350k rows/s).
DEFAULT_INSERT_SETTINGS: dict[str, Any] = {"parallel_view_processing": 1}

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
    ) -> None:
        self.ch = ch
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
        self._buffer: list[pa.Table] = []
        self._buffer_rows = 0
        self._waiters: list[asyncio.Future[None]] = []  # WAL off: one per buffered submission
        self._first_row_at: float | None = None  # monotonic time of the buffer's oldest row
        self._inflight_since: float | None = None  # ... of the batch being inserted
        self._pending_rows = 0  # buffered + being inserted
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
            except BaseException:
                self.wal.close()
                self._executor.shutdown(wait=False)
                self._executor = None
                raise
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def _replay(self, leftovers: list) -> None:
        """Insert leftover segments in batches of up to `writer_max_rows`, then retire them."""
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
        batch: list[pa.Table] = []
        segments: list = []
        rows = 0
        for i, segment in enumerate(leftovers):
            for payload in segment.payloads:
                table = decode_table(payload)
                batch.append(table)
                rows += table.num_rows
            segments.append(segment)
            if rows >= self.max_rows or i == len(leftovers) - 1:
                await self._replay_batch(batch, rows)
                for seg in segments:
                    self.wal.retire_leftover(seg)
                batch, segments, rows = [], [], 0

    async def _replay_batch(self, batch: list[pa.Table], rows: int) -> None:
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        for attempt in range(1, REPLAY_ATTEMPTS + 1):
            try:
                if rows:
                    await loop.run_in_executor(self._executor, self._insert, batch)
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
                self._accepted_rows -= self._pending_rows
                self._pending_rows = 0
                self._retry_at, self._consecutive_failures = None, 0
            self.wal.close()
        for _, fut in self._inserted_waiters:
            if not fut.done():
                fut.set_exception(WriterClosed("the writer stopped before inserting the rows"))
                fut.exception()
        self._inserted_waiters = []

    async def submit(self, columns: Columns) -> None:
        """Accept `columns`; see the module docstring for when this returns in each mode.

        Raises `WriterOverloaded` (nothing stored) when over the pending-rows or WAL-size
        bound, `WriterClosed` when stopping, `WalWriteFailed` when the WAL write failed
        (nothing accepted), and, with the WAL off, `InsertFailed` when the INSERT failed.
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
                wal.append(encode_table(table))
            except WalError as exc:
                self.wal_health.failed(str(exc))
                raise WalWriteFailed(str(exc)) from exc
        self._add(table, rows)
        if wal is not None:
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
        self._waiters.append(waiter)
        # shield: a client that disconnects must not cancel the shared future (the rows are
        # in the batch either way).
        await asyncio.shield(waiter)

    def _add(self, table: pa.Table, rows: int) -> None:
        self._buffer.append(table)
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
            if self._buffer_rows == 0:
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
            elif self._buffer_rows < self.max_rows and not self._closing and not self._flush_now:
                assert self._first_row_at is not None
                deadline = self._first_row_at + self.max_delay_s
                if time.monotonic() < deadline:
                    await self._sleep_until(deadline)
                    continue
            self._flush_now = False
            await self._flush()

    async def _flush(self) -> None:
        """Insert everything buffered now; settle what depends on it."""
        batch, waiters, rows = self._buffer, self._waiters, self._buffer_rows
        segments = self.wal.seal() if self.wal is not None else []
        self._inflight_since = self._first_row_at
        self._buffer, self._waiters, self._buffer_rows, self._first_row_at = [], [], 0, None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await loop.run_in_executor(self._executor, self._insert, batch)
            ranges = await self._summarize(batch)
        except Exception as exc:  # any failure must be handled, never vanish
            self.failed_flushes += 1
            self._consecutive_failures += 1
            # Logged at ERROR once per failing period (here and by insert_health), then DEBUG:
            # a ClickHouse outage must not write a line per retry or per request.
            level = logging.ERROR if self.insert_health.ok else logging.DEBUG
            self.insert_health.failed(f"{type(exc).__name__}: {exc}")
            if self.wal is not None:
                # Keep the rows (in front: order of acceptance) and retry with backoff.
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._consecutive_failures - 1))
                log.log(
                    level,
                    "insert of %d events into %s failed (attempt %d, retrying in %.1f s): %s",
                    rows,
                    self.table,
                    self._consecutive_failures,
                    delay,
                    exc,
                )
                self._buffer = batch + self._buffer
                self._buffer_rows += rows
                if self._inflight_since is not None:
                    self._first_row_at = min(
                        t for t in (self._inflight_since, self._first_row_at) if t is not None
                    )
                self._retry_at = time.monotonic() + delay
            else:
                log.log(level, "insert of %d events into %s failed: %s", rows, self.table, exc)
                self._pending_rows -= rows
                self._inserted_rows += rows  # settled (failed): nobody waits for them
                error = InsertFailed(f"storing the events failed: {exc}"[:500])
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                        # Retrieved by the submitter; mark it so a gone submitter logs nothing.
                        waiter.exception()
                self._settle_inserted_waiters()
        else:
            self._consecutive_failures = 0
            self.insert_health.succeeded()
            self._notify_inserted(ranges)  # before the waiters: "inserted" implies "told"
            if self.wal is not None:
                self.wal.retire(segments)
            self.flushes += 1
            self.rows_written += rows
            self._pending_rows -= rows
            self._inserted_rows += rows
            for waiter in waiters:
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

    def _insert(self, batch: list[pa.Table]) -> None:
        # Runs in the writer thread. The per-request tables are concatenated without copying;
        # the facade's insert squashes them into one block.
        table = batch[0] if len(batch) == 1 else pa.concat_tables(batch)
        if table.schema != ARROW_SCHEMA:  # replayed records from an older layout
            table = table.cast(ARROW_SCHEMA)
        self.ch.insert_sync(self.table, table, settings=self.insert_settings)
