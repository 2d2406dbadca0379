"""The scaled event stream: ingest → Kafka topic → `events_queue`.

With `KAFKA_BOOTSTRAP` (alias `CLICKPULSE_KAFKA_BROKERS`) set, `KafkaEventSink` takes the
writer's place: each accepted request is produced as **one message** to the events topic
(`kafka_topic`), keyed by its org id (so an org's events stay in one partition, in order), its
events as JSONEachRow lines (the `kafka_format` of the Kafka engine `events_queue` in
sql/migrations/clickhouse/0001_events.sql). `submit` returns when the broker acknowledged the
message (`acks=all`, idempotent producer) and raises `KafkaDeliveryFailed` (HTTP 503) when it
did not within `kafka_delivery_timeout_ms`.

A ClickHouse server consumes the topic itself (Kafka engine). chDB has no Kafka engine:
`KafkaBridge` consumes the topic in this process (or in `clickpulse bridge`) and INSERTs
through the facade, **exactly once** (docs/ingest.md, "Exactly once from Kafka"):

* batches are cut per partition; a batch is the offset range `[lo, hi]` of one partition;
* each INSERT carries an `insert_deduplication_token` derived from that range (topic,
  partition, lo, hi and each message's offset, timestamp and size), and the tables keep a
  deduplication window (sql/migrations/clickhouse/0005_insert_deduplication.sql), so
  inserting a range twice stores it once in `events` and in every rollup;
* before the INSERTs of a cycle, the ranges are written to a small state file under the data
  dir; offsets are committed only after every INSERT of the cycle succeeded, then the file is
  cleared. After a crash the restarted bridge reads the file and cuts the first batch of each
  listed partition at exactly the recorded `hi`, so the replay is the same range with the same
  token: whatever of it was inserted before the crash is dropped, the rest is inserted.

Wire format of one event (a JSON object per line):
`{"org_id": 7, "ts": "1700000000.123", "event": …, …, "props": {"k": "v"},
"received_at": "1700000000.456"}` — timestamps as decimal epoch seconds with milliseconds
in a string: the form ClickHouse's JSONEachRow reads into DateTime64(3) (an integer of
milliseconds is not: it saturates).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from app.clickhouse import ClickHouse
from app.config import Settings
from app.ingest.columns import ARROW_SCHEMA, SCALAR_COLUMNS, Columns
from app.ingest.writer import (
    DEFAULT_INSERT_SETTINGS,
    WriterClosed,
    WriterError,
    WriterOverloaded,
    dedup_insert_settings,
)

log = logging.getLogger("clickpulse.ingest.kafka")

_encoder = msgspec.json.Encoder()
_TS_COLUMNS = ("ts", "received_at")
_STRING_COLUMNS = tuple(
    name for name in SCALAR_COLUMNS if name not in ("org_id", "value", *_TS_COLUMNS)
)

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


class KafkaDeliveryFailed(WriterError):
    """The broker did not acknowledge the batch in time (or refused it)."""


class _Row(msgspec.Struct, forbid_unknown_fields=False):
    """One event on the wire (fields in the positional order encode_json_each_row uses)."""

    org_id: int
    ts: str
    event: str
    user_id: str = ""
    session_id: str = ""
    value: float = 0.0
    path: str = ""
    referrer: str = ""
    country: str = ""
    device: str = ""
    browser: str = ""
    os: str = ""
    props: dict[str, str] = msgspec.field(default_factory=dict)
    received_at: str = ""


_row_decoder = msgspec.json.Decoder(_Row)
_rows_decoder = msgspec.json.Decoder(list[_Row])
_NO_PROPS: dict[str, str] = {}  # shared by every event without props (only ever encoded)


def _ts_texts(ms: list[int]) -> list[str]:
    return [f"{t // 1000}.{t % 1000:03d}" for t in ms]


def _props_dicts(cols: Columns) -> list[dict[str, str]]:
    keys, values = cols.prop_keys, cols.prop_values
    out: list[dict[str, str]] = []
    pos = 0
    for n in cols.prop_counts:
        if n:
            out.append(dict(zip(keys[pos : pos + n], values[pos : pos + n], strict=True)))
            pos += n
        else:
            out.append(_NO_PROPS)
    return out


def encode_json_each_row(cols: Columns) -> bytes:
    """The events of `cols` as JSONEachRow (one JSON object per line)."""
    # One Struct per event encoded by msgspec: ~3x faster than a dict per event (measured).
    rows = map(
        _Row,
        cols.org_id,
        _ts_texts(cols.ts),
        cols.event,
        cols.user_id,
        cols.session_id,
        cols.value,
        cols.path,
        cols.referrer,
        cols.country,
        cols.device,
        cols.browser,
        cols.os,
        _props_dicts(cols),
        _ts_texts(cols.received_at),
    )
    return b"\n".join(map(_encoder.encode, rows)) + b"\n"


def _ms(text: str) -> int:
    # Decimal epoch seconds; a double holds them to well below a millisecond until year 2200.
    return round(float(text) * 1000)


def _append_rows(rows: list[_Row], into: Columns) -> None:
    # Timestamps first: a bad one raises ValueError before anything was appended.
    ts = [_ms(r.ts) for r in rows]
    received = [_ms(r.received_at) if r.received_at else t for r, t in zip(rows, ts, strict=True)]
    into.org_id.extend([r.org_id for r in rows])
    into.ts.extend(ts)
    into.received_at.extend(received)
    into.value.extend([r.value for r in rows])
    for name in _STRING_COLUMNS:
        getattr(into, name).extend([getattr(r, name) for r in rows])
    for r in rows:
        if r.props:
            into.prop_keys.extend(r.props)
            into.prop_values.extend(r.props.values())
    into.prop_counts.extend([len(r.props) for r in rows])
    if into.event_id:  # ids do not travel on the topic (app.ingest.columns)
        into.event_id.extend([""] * len(rows))


def decode_json_each_row(payload: bytes, into: Columns) -> int:
    """Append the events of one message to `into`; answer the number of unreadable lines
    (skipped and logged, like the Kafka engine's `kafka_skip_broken_messages`)."""
    # Fast path: the whole message as one JSON array (JSON text holds no raw newline, so the
    # line breaks are exactly the row boundaries); any bad line sends it to the slow path.
    body = payload.strip(b"\n")
    if not body:
        return 0
    try:
        _append_rows(_rows_decoder.decode(b"[" + body.replace(b"\n", b",") + b"]"), into)
        return 0
    except (msgspec.MsgspecError, ValueError):
        pass
    broken = 0
    for line in payload.split(b"\n"):
        if not line.strip():
            continue
        try:
            _append_rows([_row_decoder.decode(line)], into)
        except (msgspec.MsgspecError, ValueError):
            broken += 1
    return broken


def split_by_org(cols: Columns) -> list[tuple[int, Columns]]:
    """`cols` as one batch per org, in first-seen order (one request is always one org)."""
    orgs = cols.org_id
    if not orgs or min(orgs) == max(orgs):
        return [(orgs[0], cols)] if orgs else []
    parts: dict[int, Columns] = {}
    pos = 0
    for i, org in enumerate(orgs):
        part = parts.get(org)
        if part is None:
            part = parts[org] = Columns()
        for name in SCALAR_COLUMNS:  # not event_id: ids do not travel on the topic
            getattr(part, name).append(getattr(cols, name)[i])
        n = cols.prop_counts[i]
        part.prop_keys.extend(cols.prop_keys[pos : pos + n])
        part.prop_values.extend(cols.prop_values[pos : pos + n])
        part.prop_counts.append(n)
        pos += n
    return list(parts.items())


# librdkafka's own log lines (connection refused, request timeouts, …) go through Python
# logging instead of straight to stderr.
_librdkafka_log = logging.getLogger("clickpulse.ingest.kafka.librdkafka")


def _client_config(brokers: str) -> dict[str, Any]:
    return {"bootstrap.servers": brokers, "client.id": "clickpulse", "logger": _librdkafka_log}


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the ingest producer (each one says why)."""
    timeout_ms = max(1000, int(settings.kafka_delivery_timeout_ms))
    return {
        **_client_config(settings.kafka_brokers or ""),
        # Durability: a 200 means every in-sync replica has the events; idempotence keeps
        # librdkafka's own retries from writing a message twice or out of order.
        "acks": "all",
        "enable.idempotence": True,
        # An HTTP request is waiting: librdkafka's default message.timeout.ms (300 s) would
        # hold it through a whole outage. After this long the request is answered 503.
        "message.timeout.ms": timeout_ms,
        "request.timeout.ms": timeout_ms,
        # Find a broker that came back within a second, not librdkafka's 10 s backoff cap.
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "socket.connection.setup.timeout.ms": min(timeout_ms, 10_000),
        # Concurrent requests share produce requests; JSON compresses ~5-10x with lz4, which
        # the Kafka engine of a ClickHouse server reads too.
        "linger.ms": 5,
        "compression.type": "lz4",
        # One request is one message: up to ingest_max_body_bytes of JSON before compression.
        "message.max.bytes": max(16 * 1024 * 1024, 2 * settings.ingest_max_body_bytes),
        # The Java client's key -> partition mapping, so other producers keyed by org id (e.g.
        # a backfill in another language) put an org in the same partition.
        "partitioner": "murmur2_random",
    }


class KafkaEventSink:
    """The writer interface (`start`, `submit`, `stop`, …) over a Kafka producer.

    A failed delivery retires the producer and the next request builds a new one: after a
    timeout librdkafka's idempotent producer bumps its epoch or finds its producer id unknown
    (a restarted broker), which some brokers answer with errors that never clear (measured on
    tansu: PRODUCER_FENCED for every later message, or a fatal UNKNOWN_PRODUCER_ID); a fresh
    producer id always starts clean. Retired producers are polled until their last
    outstanding message is settled.
    """

    def __init__(self, settings: Settings, *, bridge: KafkaBridge | None = None) -> None:
        assert settings.kafka_brokers
        self.settings = settings
        self.brokers = settings.kafka_brokers
        self.topic = settings.kafka_topic
        self.bridge = bridge
        self.max_in_flight_rows = settings.writer_max_pending_rows
        self._producer: Any = None
        self._producer_number = 0
        self._retired: list[Any] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._running = False
        self._closing = False
        self._in_flight = 0
        self.rows_written = 0  # rows acknowledged by the broker
        self.flushes = 0
        self.failed_flushes = 0
        self.producers_created = 0

    @property
    def pending_rows(self) -> int:
        """Rows produced and not yet acknowledged by the broker."""
        return self._in_flight

    def oldest_pending_age_s(self) -> float:
        """The pipeline lag: the bridge's, when this process runs one (else unknown: 0)."""
        return self.bridge.oldest_pending_age_s() if self.bridge is not None else 0.0

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        # The callback names its producer by number: holding the producer itself would make a
        # reference cycle that keeps librdkafka's threads and sockets alive until a GC pass.
        self.producers_created += 1
        number = self.producers_created

        def on_error(err: Any) -> None:  # poll thread
            if err.fatal():
                log.error("kafka producer fatal error (a new producer takes over): %s", err)
                with self._lock:
                    producer = self._producer if self._producer_number == number else None
                if producer is not None:
                    self._retire(producer)
            else:
                log.warning("kafka producer: %s", err)

        producer = Producer({**producer_config(self.settings), "error_cb": on_error})
        self._producer_number = number
        return producer

    def _current(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self._new_producer()
            return self._producer

    def _retire(self, producer: Any) -> None:
        with self._lock:
            if producer is self._producer:
                self._producer = None
                self._retired.append(producer)

    async def start(self) -> None:
        """Create the producer and its poll thread; start the bridge (if any)."""
        if self._running:
            return
        self._current()
        self._running, self._closing = True, False
        self._poller = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
        self._poller.start()
        if self.bridge is not None:
            await self.bridge.start()

    def _poll(self) -> None:
        from confluent_kafka import KafkaException

        while self._running:
            with self._lock:
                current, retired = self._producer, list(self._retired)
            for producer in retired:
                with contextlib.suppress(KafkaException):
                    producer.poll(0)
            try:
                if current is not None:
                    current.poll(0.05)  # runs delivery callbacks
                else:
                    time.sleep(0.05)
            except KafkaException as exc:  # a fatal error surfaces here too
                log.error("kafka producer failed (a new producer takes over): %s", exc)
                self._retire(current)
            with self._lock:
                self._retired = [p for p in self._retired if len(p) > 0]

    async def submit(self, columns: Columns) -> None:
        """Produce the batch (one message per org); return when the broker acknowledged it.

        Raises `WriterOverloaded` when too many rows wait for acknowledgements (nothing is
        produced), `WriterClosed` when stopping, and `KafkaDeliveryFailed` when the broker did
        not acknowledge within `kafka_delivery_timeout_ms`. A batch of several orgs (tools,
        benchmarks; never an HTTP request) may then have been stored in part.
        """
        from confluent_kafka import KafkaException

        rows = len(columns)
        if rows == 0:
            return
        if self._closing or not self._running:
            raise WriterClosed("the event writer is not running")
        if self._in_flight + rows > self.max_in_flight_rows:
            raise WriterOverloaded(
                f"{self._in_flight} rows are waiting for the broker (limit "
                f"{self.max_in_flight_rows})"
            )
        loop = asyncio.get_running_loop()
        producer = self._current()
        futures: list[asyncio.Future[None]] = []

        def on_delivery(done: asyncio.Future[None]) -> Any:
            def delivered(err: Any, _msg: Any) -> None:  # producer poll thread
                def settle() -> None:
                    if done.done():
                        return
                    if err is None:
                        done.set_result(None)
                    else:
                        done.set_exception(
                            KafkaDeliveryFailed(f"the broker did not take the batch: {err}")
                        )

                loop.call_soon_threadsafe(settle)

            return delivered

        self._in_flight += rows
        try:
            for org_id, part in split_by_org(columns):
                done: asyncio.Future[None] = loop.create_future()
                try:
                    producer.produce(
                        self.topic,
                        key=str(org_id).encode(),
                        value=encode_json_each_row(part),
                        on_delivery=on_delivery(done),
                    )
                except BufferError as exc:
                    self.failed_flushes += 1
                    raise KafkaDeliveryFailed("the producer queue is full") from exc
                except KafkaException as exc:  # message too large, unknown topic, fatal, …
                    self.failed_flushes += 1
                    self._retire(producer)
                    raise KafkaDeliveryFailed(str(exc)) from exc
                futures.append(done)
            # shield: a client that disconnects must not cancel the deliveries' futures.
            results = await asyncio.shield(asyncio.gather(*futures, return_exceptions=True))
            for result in results:
                if isinstance(result, BaseException):
                    self.failed_flushes += 1
                    self._retire(producer)
                    raise result
            self.rows_written += rows
            self.flushes += 1
        finally:
            self._in_flight -= rows

    async def wait_inserted(self) -> None:
        """Return once the bridge (if this process runs one) consumed the topic to its end."""
        if self.bridge is not None:
            await self.bridge.wait_caught_up()

    async def stop(self) -> None:
        """Wait for outstanding deliveries, then stop the bridge (if any)."""
        self._closing = True
        if self._running:
            with self._lock:
                producers = [p for p in (self._producer, *self._retired) if p is not None]
            timeout_s = self.settings.kafka_delivery_timeout_ms / 1000 + 1
            for producer in producers:
                await asyncio.to_thread(producer.flush, timeout_s)
            self._running = False
            if self._poller is not None:
                self._poller.join()
            with self._lock:
                # librdkafka handles are released when collected
                self._producer, self._retired = None, []
        if self.bridge is not None:
            await self.bridge.stop()


# -- the embedded bridge ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Messages `lo`..`hi` (inclusive) of one partition, inserted as one block with `token`."""

    partition: int
    lo: int
    hi: int
    token: str
    rows: int = 0


class InflightFile:
    """The bridge's record of the ranges it is inserting and has not committed yet.

    Written (fsynced, atomically replaced) before the INSERTs of a cycle and emptied after
    their offsets were committed; read once at start. One small JSON file per group and topic
    under `<data_dir>/kafka-bridge/`.
    """

    def __init__(self, directory: str, group: str, topic: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}.{topic}")
        self.directory = directory
        self.path = os.path.join(directory, f"{safe}.inflight.json")
        self.group, self.topic = group, topic

    def load(self) -> dict[int, OffsetRange]:
        """The ranges a previous run left uncommitted (empty when it stopped cleanly)."""
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Only a clearing write (not fsynced: see `write`) can be torn by a power loss, and
            # it cleared ranges already committed; anything else is disk damage.
            log.error("ignoring unreadable %s: %s", self.path, exc)
            return {}
        if doc.get("topic") != self.topic or doc.get("group") != self.group:
            log.warning("ignoring %s: it is for another topic or group", self.path)
            return {}
        ranges = [OffsetRange(**r) for r in doc.get("ranges", [])]
        return {r.partition: r for r in ranges}

    def write(self, ranges: dict[int, OffsetRange], *, durable: bool = True) -> None:
        """Replace the record with `ranges`; `durable` (fsync) before inserting them, since
        the replay depends on it. Clearing committed ranges need not be: a stale record of a
        committed range is recognised and skipped at the next start."""
        if not ranges and not os.path.exists(self.path):
            return
        os.makedirs(self.directory, exist_ok=True)
        doc = {
            "group": self.group,
            "topic": self.topic,
            "ranges": [asdict(r) for _, r in sorted(ranges.items())],
        }
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(doc, indent=1).encode())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if not durable:
            return
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
            **_client_config(self.brokers),
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


def ranges_text(ranges: dict[int, OffsetRange]) -> str:
    """`[p] lo..hi, …` for log lines."""
    return ", ".join(f"[{r.partition}] {r.lo}..{r.hi}" for _, r in sorted(ranges.items()))


def consumer_lag(brokers: str, group: str, topic: str, timeout_s: float = 10) -> int:
    """Messages of `topic` not yet committed by `group` (summed over partitions).

    A partition the group never committed counts from its low watermark.
    """
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({**_client_config(brokers), "group.id": group, "enable.auto.commit": False})
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
