"""The micro-batching writer: many small submissions in, few large INSERTs out.

Why batch: every insert block costs the rollup MVs once per group they touch, so rows/s
grows with the block size (measured into chDB with every MV attached: ~210k rows/s at
50k-row inserts, ~350k rows/s at 100k). Why bound the delay: live dashboards read rollup_1s,
and a request is acknowledged only once its events are stored.

How it behaves:

* `submit(columns)` appends to column buffers and returns when the INSERT holding those rows
  has succeeded (raises `InsertFailed` if it failed): nothing acknowledged is lost.
* A flush starts when `writer_max_rows` rows are buffered, or `writer_max_delay_ms` after the
  first row of the buffer arrived, whichever comes first.
* One INSERT runs at a time; submissions keep accumulating meanwhile and the next flush
  takes everything buffered, so batches grow with load (adaptive batching) while light load
  keeps the ≤ max-delay latency.
* More than `writer_max_pending_rows` buffered or in flight: `submit` raises
  `WriterOverloaded` at once (the handler answers 503 + Retry-After) instead of growing memory.
* `stop()` refuses new submissions and flushes everything buffered before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.clickhouse import ClickHouse
from app.config import Settings
from app.ingest.columns import Columns

log = logging.getLogger("clickpulse.ingest.writer")

# The rollup MVs are independent of each other once the raw block is in: with this setting
# ClickHouse pushes a block through them in parallel (measured: needed for ~350k rows/s).
DEFAULT_INSERT_SETTINGS: dict[str, Any] = {"parallel_view_processing": 1}


class WriterError(Exception):
    """The writer could not store a submission; nothing of it was acknowledged."""


class WriterOverloaded(WriterError):
    """Too many rows are buffered or in flight; retry later."""


class WriterClosed(WriterError):
    """The writer is stopping or stopped."""


class InsertFailed(WriterError):
    """The INSERT holding this submission failed in ClickHouse."""


class EventWriter:
    """Buffers events column-wise and inserts them into `events_queue` in batches."""

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
        self.insert_settings = (
            DEFAULT_INSERT_SETTINGS if insert_settings is None else insert_settings
        )
        self._buffer = Columns()
        self._waiters: list[asyncio.Future[None]] = []
        self._first_row_at: float | None = None  # loop time of the buffer's oldest row
        self._pending_rows = 0  # buffered + being inserted
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # One thread: INSERTs are serialised by design, and stay off the query pool.
        self._executor: ThreadPoolExecutor | None = None
        # Counters for tests, benchmarks and /readyz-style introspection.
        self.rows_written = 0
        self.flushes = 0
        self.failed_flushes = 0
        self.insert_seconds = 0.0  # wall time spent building Arrow tables and inserting

    @property
    def pending_rows(self) -> int:
        """Rows accepted by `submit` and not yet inserted (buffered or in flight)."""
        return self._pending_rows

    async def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._task is not None:
            return
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Refuse new submissions, flush everything buffered, and stop the flusher."""
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

    async def submit(self, columns: Columns) -> None:
        """Buffer `columns` and return once they are durably inserted.

        Raises `WriterOverloaded` (nothing buffered) when over `writer_max_pending_rows`,
        `WriterClosed` when stopping, and `InsertFailed` when the batch's INSERT failed.
        """
        rows = len(columns)
        if rows == 0:
            return
        if self._closing or self._task is None:
            raise WriterClosed("the event writer is not running")
        if self._pending_rows + rows > self.max_pending_rows:
            raise WriterOverloaded(
                f"{self._pending_rows} rows are waiting to be written (limit "
                f"{self.max_pending_rows})"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._buffer.extend(columns)
        self._waiters.append(waiter)
        self._pending_rows += rows
        if self._first_row_at is None:
            self._first_row_at = loop.time()
            self._wake.set()  # the flusher starts the max-delay clock
        elif len(self._buffer) >= self.max_rows:
            self._wake.set()
        # shield: a client that disconnects must not cancel the shared future (the rows are
        # in the batch either way).
        await asyncio.shield(waiter)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            buffered = len(self._buffer)
            if buffered == 0:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if buffered < self.max_rows and not self._closing:
                assert self._first_row_at is not None
                remaining = self._first_row_at + self.max_delay_s - loop.time()
                if remaining > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    continue
            await self._flush()

    async def _flush(self) -> None:
        """Insert everything buffered now; settle the waiters of those rows."""
        batch, waiters = self._buffer, self._waiters
        self._buffer, self._waiters, self._first_row_at = Columns(), [], None
        rows = len(batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await loop.run_in_executor(self._executor, self._insert, batch)
        except Exception as exc:  # any failure must reach the waiters, never vanish
            self.failed_flushes += 1
            log.error("insert of %d events into %s failed: %s", rows, self.table, exc)
            error = InsertFailed(f"storing the events failed: {exc}"[:500])
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
                    # Retrieved by the submitter; mark it so a gone submitter logs nothing.
                    waiter.exception()
        else:
            self.flushes += 1
            self.rows_written += rows
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            self._pending_rows -= rows
            self.insert_seconds += loop.time() - started

    def _insert(self, batch: Columns) -> None:
        # Runs in the writer thread: building the Arrow table is Python-heavy, keep it off
        # the event loop's thread.
        self.ch.insert_sync(self.table, batch.to_arrow(), settings=self.insert_settings)
