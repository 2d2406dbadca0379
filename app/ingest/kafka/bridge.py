"""`KafkaBridge`: consumes the events topic into embedded chDB, exactly once.

A ClickHouse server consumes the topic itself (Kafka engine); chDB has none, so the bridge
consumes it in this process (or in `clickpulse bridge`) and INSERTs through the facade
(docs/ingest.md, "Exactly once from Kafka"):

* batches are cut per partition; a batch is the offset range `[lo, hi]` of one partition;
* each INSERT carries an `insert_deduplication_token` derived from that range (topic, partition,
  lo, hi and each message's offset, timestamp and size), and the tables keep a deduplication
  window (sql/migrations/clickhouse/0005_insert_deduplication.sql), so inserting a range twice
  stores it once in `events` and in every rollup;
* before the INSERTs of a cycle, the ranges are written to the in-flight file (inflight.py);
  offsets are committed only after every INSERT of the cycle succeeded, then the file is
  cleared. After a crash the restarted bridge cuts the first batch of each listed partition at
  exactly the recorded `hi`, so the replay is the same range with the same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import sys
import threading
import time
from typing import Any

from app.clickhouse import ClickHouse
from app.config import Settings
from app.ingest.columns import ARROW_SCHEMA, Columns
from app.ingest.kafka.client import client_config
from app.ingest.kafka.codec import decode_json_each_row
from app.ingest.kafka.inflight import InflightFile, OffsetRange, ranges_text
from app.ingest.writer import (
    DEFAULT_INSERT_SETTINGS,
    dedup_insert_settings,
)

log = logging.getLogger("clickpulse.ingest.kafka")

# Test-only fault injection, read by `clickpulse bridge` only (never by the app server): exit
# (os._exit, no cleanup) right after the k-th INSERT, before the offsets are committed — the
# crash window exactly-once is about.
CRASH_AFTER_INSERT_ENV = "CLICKPULSE_BRIDGE_CRASH_AFTER_INSERT"
CRASH_EXIT_CODE = 86

# The bridge's INSERTs pin the block shape and deduplication (app.ingest.writer.BLOCK_SETTINGS,
# DEDUP_SETTINGS; shared with the WAL writer's segment INSERTs): the deduplication token names
# blocks `<token>_<n>`, so a replay dedups fully only if it is cut the same way.

# Commit attempts before the bridge restarts its consumer (which re-reads the cycle's ranges
# from the committed offsets and re-inserts them with the same tokens: dropped as duplicates):
# a commit that keeps failing usually means the group moved on while we were inserting (e.g.
# inserts retried past max.poll.interval.ms), and only a new join gets the partitions back.
_COMMIT_ATTEMPTS = 5


class _Restart(Exception):
    """Start the consumer afresh: positions from the committed offsets, ranges from the file."""


def bridge_insert_settings(token: str) -> dict[str, Any]:
    """The settings of one bridge INSERT: the writer's, the pinned block shape and
    deduplication, and the range's token."""
    return {**DEFAULT_INSERT_SETTINGS, **dedup_insert_settings(token)}


class _Batch:
    """Messages of one partition read since its last commit, decoded, not yet inserted."""

    __slots__ = ("partition", "cols", "lo", "hi", "messages", "digest", "recovering", "complete")

    def __init__(self, partition: int, recovering: OffsetRange | None = None) -> None:
        self.partition = partition
        self.cols = Columns()
        self.lo = -1
        self.hi = -1
        self.messages = 0
        # Identity of the messages: offset, timestamp and size of each. Offsets alone would
        # repeat if the topic were deleted and re-created; these do not.
        self.digest = hashlib.blake2b(digest_size=16)
        self.recovering = recovering  # the range this batch must reproduce exactly
        self.complete = False

    def add(self, offset: int, timestamp: int, value: bytes) -> int:
        if self.messages == 0:
            self.lo = offset
        self.hi = offset
        self.messages += 1
        self.digest.update(struct.pack("<qqq", offset, timestamp, len(value)))
        if self.recovering is not None and offset == self.recovering.hi:
            self.complete = True
        return decode_json_each_row(value, self.cols)

    def range(self, topic: str) -> OffsetRange:
        head = f"{topic}\0{self.partition}\0{self.lo}\0{self.hi}\0".encode()
        token = hashlib.blake2b(head + self.digest.digest(), digest_size=16).hexdigest()
        # The facade quotes only identifier-like setting values: letters, digits, underscores.
        return OffsetRange(self.partition, self.lo, self.hi, f"kafka_{token}", len(self.cols))


class KafkaBridge:
    """Consumes the events topic and INSERTs into `events_queue`, exactly once (embedded chDB).

    See the module docstring and docs/ingest.md for the design. `start`/`stop` run it in a
    thread of this process (the embedded app); `run` runs it in the calling thread until
    `request_stop` (`clickpulse bridge`).
    """

    def __init__(
        self,
        ch: ClickHouse,
        settings: Settings,
        *,
        group: str | None = None,
        table: str = "events_queue",
        crash_after_insert: int = 0,
    ) -> None:
        assert settings.kafka_brokers
        self.ch = ch
        self.settings = settings
        self.brokers = settings.kafka_brokers
        self.topic = settings.kafka_topic
        self.group = group or settings.kafka_group
        self.table = table
        self.max_rows = settings.writer_max_rows
        self.max_wait_s = settings.writer_max_delay_ms / 1000
        self.inflight = InflightFile(
            os.path.join(settings.data_dir, "kafka-bridge"), self.group, self.topic
        )
        self._crash_after = crash_after_insert  # tests: see CRASH_AFTER_INSERT_ENV
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._oldest: float | None = None
        self._batches: dict[int, _Batch] = {}
        self._recovery: dict[int, OffsetRange] = {}
        self._assigned: set[int] = set()
        self.rows_written = 0  # rows inserted (a replayed range counts again)
        self.inserts = 0
        self.replayed_ranges = 0
        self.broken_lines = 0
        self.failed_inserts = 0
        self.commits = 0

    def oldest_pending_age_s(self) -> float:
        """Age of the oldest message read and not yet inserted; 0 when none."""
        oldest = self._oldest
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    async def start(self) -> None:
        """Run the bridge in a thread of this process."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="kafka-bridge", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop consuming; what was read and not committed is read again at the next start."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def request_stop(self) -> None:
        """Make `run` return soon (signal handlers may call this)."""
        self._stop.set()

    async def wait_caught_up(self, poll_s: float = 0.05) -> None:
        """Return once the group's committed offsets reach the topic's end (tests, tools)."""
        await asyncio.to_thread(self.wait_caught_up_sync, poll_s)

    def wait_caught_up_sync(self, poll_s: float = 0.05, timeout_s: float | None = None) -> None:
        """`wait_caught_up`, blocking; raises TimeoutError after `timeout_s` (if given)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while consumer_lag(self.brokers, self.group, self.topic) != 0:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not catch up within {timeout_s} s")
            time.sleep(poll_s)

    def _consumer_config(self) -> dict[str, Any]:
        session_ms = int(self.settings.kafka_session_timeout_ms)
        return {
            **client_config(self.brokers),
            "group.id": self.group,
            # Offsets are committed by hand, after the INSERT holding their messages.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # End-of-partition events tell a recovery that its range is no longer in the log.
            "enable.partition.eof": True,
            # A dead bridge's partitions move after the session timeout; a join on tansu also
            # waits about half of it (measured: ~23 s at the 45 s default, ~1 s at 2 s).
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 10),
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.max.ms": 1000,
        }

    def run(self) -> None:
        """Consume, insert and commit until `request_stop`/`stop` (blocking).

        Any unexpected failure (a commit that keeps failing, a bug, a fatal client error)
        restarts the consumer, as if the process had restarted: positions come back from the
        committed offsets and unfinished ranges from the in-flight file, so nothing read and not
        committed is skipped, and nothing inserted is inserted again under another token.
        """
        while not self._stop.is_set():
            try:
                self._consume_until_stopped()
                return
            except Exception as exc:
                log.error(
                    "bridge: %s; restarting the consumer in 1 s",
                    exc,
                    exc_info=not isinstance(exc, _Restart),
                )
                self._stop.wait(1.0)

    def _consume_until_stopped(self) -> None:
        from confluent_kafka import Consumer

        self._batches.clear()
        self._assigned.clear()
        self._oldest = None
        self._recovery = self.inflight.load()
        if self._recovery:
            log.warning(
                "bridge: %d range(s) of %s were being inserted when the last run stopped; "
                "reading them again first: %s",
                len(self._recovery),
                self.topic,
                ranges_text(self._recovery),
            )
        consumer = Consumer(self._consumer_config())
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("bridge: consuming %s as group %s into %s", self.topic, self.group, self.table)
        try:
            while not self._stop.is_set() and self._cycle(consumer):
                pass
        finally:
            with contextlib.suppress(Exception):
                consumer.close()  # leaves the group: a restarted bridge is assigned at once

    def _cycle(self, consumer: Any) -> bool:
        """One consume call and the flushes it makes due; False when stopping."""
        messages = consumer.consume(num_messages=1000, timeout=self._poll_timeout())
        for msg in messages:
            if self._take(msg) and not self._flush(consumer, [msg.partition()]):
                return False
        ready = self._ready()
        return not ready or self._flush(consumer, ready)

    # -- consuming ---------------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        # Positions start at the committed offsets: whatever was read before is re-read.
        self._assigned = {tp.partition for tp in partitions}
        self._batches.clear()
        self._oldest = None
        log.info("bridge: assigned %s %s", self.topic, sorted(self._assigned))

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._batches.pop(tp.partition, None)  # not inserted; the next owner reads it
        if not self._batches:
            self._oldest = None

    def _poll_timeout(self) -> float:
        # A recovering batch waits for its messages, not for a deadline.
        if self._oldest is None or all(b.recovering for b in self._batches.values()):
            return 0.2
        return max(0.0, min(0.2, self._oldest + self.max_wait_s - time.monotonic()))

    def _take(self, msg: Any) -> bool:
        """Add one consumed message to its partition's batch; True when that batch is a
        recovered range now complete (to be inserted before anything else of the partition)."""
        from confluent_kafka import KafkaError

        err = msg.error()
        partition = msg.partition()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._end_of_partition(partition, msg.offset())
            else:
                log.error("bridge: kafka consumer error: %s", err)
            return False
        if partition not in self._assigned:
            return False
        offset = msg.offset()
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _Batch(
                partition, self._recovery_for(partition, offset)
            )
            if self._oldest is None:
                self._oldest = time.monotonic()
        elif batch.recovering is not None and offset > batch.recovering.hi:
            self._lose_recovery(partition, f"it skips from {batch.hi} to {offset}")
        value = msg.value() or b""
        broken = batch.add(offset, msg.timestamp()[1], value)
        if broken:
            self.broken_lines += broken
            log.error(
                "bridge: skipped %d unreadable line(s) in %s[%d]@%d",
                broken,
                msg.topic(),
                partition,
                offset,
            )
        return batch.complete

    def _recovery_for(self, partition: int, first_offset: int) -> OffsetRange | None:
        """The recorded range the batch starting at `first_offset` must reproduce, if any."""
        rec = self._recovery.get(partition)
        if rec is None:
            return None
        if first_offset == rec.lo:
            return rec
        if first_offset > rec.hi:
            self._range_done(partition)
        else:
            self._lose_recovery(partition, f"the partition now starts at {first_offset}")
        return None

    def _end_of_partition(self, partition: int, offset: int) -> None:
        rec = self._recovery.get(partition)
        if rec is None:
            return
        batch = self._batches.get(partition)
        if batch is None and offset > rec.hi:
            self._range_done(partition)
        elif offset <= rec.hi:
            self._lose_recovery(partition, f"the partition ends at {offset}")

    def _range_done(self, partition: int) -> None:
        # The consumer starts past the range: its offsets were committed before the last run
        # stopped (the record was not cleared yet). Nothing to replay.
        rec = self._recovery.pop(partition)
        log.info("bridge: range [%d] %d..%d was already committed", partition, rec.lo, rec.hi)
        self.inflight.write(self._recovery)

    def _lose_recovery(self, partition: int, why: str) -> None:
        # The log no longer holds the recorded range as it was (retention, a re-created topic):
        # it cannot be replayed. What is read now is inserted as new data under its own token.
        rec = self._recovery.pop(partition)
        log.error(
            "bridge: the recorded range [%d] %d..%d cannot be read again (%s); continuing "
            "without it",
            partition,
            rec.lo,
            rec.hi,
            why,
        )
        batch = self._batches.get(partition)
        if batch is not None:
            batch.recovering = None
        self.inflight.write(self._recovery)

    def _ready(self) -> list[int]:
        """Partitions whose batch is due: max rows reached or the oldest message waited long
        enough. A recovering batch waits for its last recorded offset instead."""
        batches = [b for b in self._batches.values() if b.messages and b.recovering is None]
        if not batches:
            return []
        rows = sum(len(b.cols) for b in batches)
        due = self._oldest is not None and time.monotonic() >= self._oldest + self.max_wait_s
        if rows >= self.max_rows or due:
            return [b.partition for b in batches]
        return []

    # -- inserting and committing ------------------------------------------------------------

    def _flush(self, consumer: Any, partitions: list[int]) -> bool:
        """Insert the batches of `partitions`, then commit them. False when stopping."""
        from confluent_kafka import TopicPartition

        batches = [self._batches.pop(p) for p in partitions if p in self._batches]
        if not self._batches:
            self._oldest = None
        batches = [b for b in batches if b.messages]
        if not batches:
            return True
        ranges = {b.partition: b.range(self.topic) for b in batches}
        # Recorded before inserting: after a crash from here on, these exact ranges are replayed.
        self.inflight.write({**self._recovery, **ranges})
        for batch in batches:
            rng = ranges[batch.partition]
            rec = batch.recovering
            if rec is not None:
                self.replayed_ranges += 1
                if rec.token != rng.token:
                    log.warning(
                        "bridge: range [%d] %d..%d holds other messages than recorded; "
                        "inserting them as new",
                        rng.partition,
                        rng.lo,
                        rng.hi,
                    )
                log.warning(
                    "bridge: replaying range [%d] %d..%d (%d rows) with its recorded token: "
                    "what the last run inserted of it is dropped as a duplicate",
                    rng.partition,
                    rng.lo,
                    rng.hi,
                    rng.rows,
                )
            if not self._insert_until_done(batch.cols, rng.token):
                return False
            self.inserts += 1
            if self._crash_after and self.inserts >= self._crash_after:
                print(
                    f"bridge: {CRASH_AFTER_INSERT_ENV}={self._crash_after}: exiting after "
                    f"insert {self.inserts} ([{rng.partition}] {rng.lo}..{rng.hi}), before the "
                    "commit",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(CRASH_EXIT_CODE)
        offsets = [TopicPartition(self.topic, b.partition, b.hi + 1) for b in batches]
        if not self._commit(consumer, offsets):
            if self._stop.is_set():
                return False
            # The ranges are in the file: a fresh consumer re-reads them from `lo` (still the
            # committed offset) and re-inserts them with the same tokens, then commits.
            raise _Restart(f"committing offsets {ranges_text(ranges)} keeps failing")
        self.commits += 1
        for batch in batches:
            self._recovery.pop(batch.partition, None)
        self.inflight.write(self._recovery, durable=False)
        return True

    def _commit(self, consumer: Any, offsets: list[Any]) -> bool:
        delay = 0.1
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                return True
            except Exception as exc:  # KafkaException: broker down, rebalance, …
                log.error("bridge: offset commit failed (attempt %d): %s", attempt, exc)
                if self._stop.wait(delay):
                    return False
                delay = min(2.0, delay * 2)
        return False

    def _insert_until_done(self, cols: Columns, token: str) -> bool:
        if not len(cols):
            return True  # every line was unreadable: nothing to insert, the offsets commit
        table = cols.to_arrow()
        assert table.schema == ARROW_SCHEMA
        settings = bridge_insert_settings(token)
        delay = 0.1
        while True:
            try:
                self.ch.insert_sync(self.table, table, settings=settings)
                self.rows_written += len(cols)
                return True
            except Exception as exc:
                self.failed_inserts += 1
                log.error("bridge: insert of %d events failed (retrying): %s", len(cols), exc)
                if self._stop.wait(delay):
                    return False
                delay = min(5.0, delay * 2)


def consumer_lag(brokers: str, group: str, topic: str, timeout_s: float = 10) -> int:
    """Messages of `topic` not yet committed by `group` (summed over partitions).

    A partition the group never committed counts from its low watermark.
    """
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({**client_config(brokers), "group.id": group, "enable.auto.commit": False})
    try:
        meta = probe.list_topics(topic, timeout=timeout_s)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        total = 0
        for tp in probe.committed(parts, timeout=timeout_s):
            low, high = probe.get_watermark_offsets(tp, timeout=timeout_s)
            total += high - (tp.offset if tp.offset >= 0 else low)
        return total
    finally:
        probe.close()
