"""The scaled event stream: ingest → Kafka topic → `events_queue`.

With `CLICKPULSE_KAFKA_BROKERS` set, `KafkaEventSink` takes the writer's place: each
accepted request is produced as **one message** to the events topic (`kafka_topic`), its
events as JSONEachRow lines (the `kafka_format` of the Kafka engine `events_queue` in
sql/migrations/clickhouse/0001_events.sql), and `submit` returns when the broker acknowledged
it (`acks=all`, idempotent producer). A ClickHouse server consumes the topic itself (Kafka
engine). chDB has no Kafka engine: `KafkaBridge` consumes the topic in this process and
INSERTs through the facade, committing offsets only after the INSERT succeeded (at least
once: a crash between the two re-inserts that batch).

Wire format of one event (a JSON object per line):
`{"org_id": 7, "ts": "1700000000.123", "event": …, …, "props": {"k": "v"},
"received_at": "1700000000.456"}` — timestamps as decimal epoch seconds with milliseconds
in a string: the form ClickHouse's JSONEachRow reads into DateTime64(3) (an integer of
milliseconds is not: it saturates).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import msgspec

from app.clickhouse import ClickHouse
from app.config import Settings
from app.ingest.columns import ARROW_SCHEMA, SCALAR_COLUMNS, Columns
from app.ingest.writer import DEFAULT_INSERT_SETTINGS, WriterClosed, WriterError

log = logging.getLogger("clickpulse.ingest.kafka")

_encoder = msgspec.json.Encoder()
_TS_COLUMNS = ("ts", "received_at")
_STRING_COLUMNS = tuple(
    name for name in SCALAR_COLUMNS if name not in ("org_id", "value", *_TS_COLUMNS)
)


class KafkaDeliveryFailed(WriterError):
    """The broker did not acknowledge the batch; nothing of it was accepted."""


def _ts_text(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def encode_json_each_row(cols: Columns) -> bytes:
    """The events of `cols` as JSONEachRow (one JSON object per line)."""
    names = SCALAR_COLUMNS
    lists = [getattr(cols, name) for name in names]
    keys, values, counts = cols.prop_keys, cols.prop_values, cols.prop_counts
    rows = []
    pos = 0
    for i in range(len(cols)):
        row: dict[str, Any] = {name: column[i] for name, column in zip(names, lists, strict=True)}
        row["ts"] = _ts_text(row["ts"])
        row["received_at"] = _ts_text(row["received_at"])
        n = counts[i]
        row["props"] = dict(zip(keys[pos : pos + n], values[pos : pos + n], strict=True))
        pos += n
        rows.append(_encoder.encode(row))
    return b"\n".join(rows) + b"\n"


class _Row(msgspec.Struct, forbid_unknown_fields=False):
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


def _ms(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1000 + int((frac + "000")[:3])


def decode_json_each_row(payload: bytes, into: Columns) -> int:
    """Append the events of one message to `into`; answer the number of unreadable lines
    (skipped and logged, like the Kafka engine's `kafka_skip_broken_messages`)."""
    broken = 0
    for line in payload.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = _row_decoder.decode(line)
            ts = _ms(row.ts)
            received = _ms(row.received_at) if row.received_at else ts
        except (msgspec.MsgspecError, ValueError):
            broken += 1
            continue
        into.org_id.append(row.org_id)
        into.ts.append(ts)
        into.received_at.append(received)
        into.value.append(row.value)
        for name in _STRING_COLUMNS:
            getattr(into, name).append(getattr(row, name))
        into.prop_keys.extend(row.props)
        into.prop_values.extend(row.props.values())
        into.prop_counts.append(len(row.props))
    return broken


def _kafka_config(brokers: str) -> dict[str, Any]:
    return {"bootstrap.servers": brokers, "client.id": "clickpulse"}


class KafkaEventSink:
    """The writer interface (`start`, `submit`, `stop`, …) over a Kafka producer."""

    def __init__(self, settings: Settings, *, bridge: KafkaBridge | None = None) -> None:
        assert settings.kafka_brokers
        self.brokers = settings.kafka_brokers
        self.topic = settings.kafka_topic
        self.bridge = bridge
        self._producer: Any = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._closing = False
        self._in_flight = 0
        self.rows_written = 0  # rows acknowledged by the broker
        self.flushes = 0
        self.failed_flushes = 0

    @property
    def pending_rows(self) -> int:
        return self._in_flight

    def oldest_pending_age_s(self) -> float:
        """The pipeline lag: the bridge's, when this process runs one (else unknown: 0)."""
        return self.bridge.oldest_pending_age_s() if self.bridge is not None else 0.0

    async def start(self) -> None:
        if self._running:
            return
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                **_kafka_config(self.brokers),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": 16 * 1024 * 1024,
            }
        )
        self._running, self._closing = True, False
        self._poller = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
        self._poller.start()
        if self.bridge is not None:
            await self.bridge.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)  # runs delivery callbacks

    async def submit(self, columns: Columns) -> None:
        """Produce the batch as one message; return when the broker acknowledged it."""
        rows = len(columns)
        if rows == 0:
            return
        if self._closing or not self._running:
            raise WriterClosed("the event writer is not running")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def delivered(err: Any, _msg: Any) -> None:  # producer poll thread
            def settle() -> None:
                if done.done():
                    return
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(KafkaDeliveryFailed(f"the broker refused the batch: {err}"))

            loop.call_soon_threadsafe(settle)

        payload = encode_json_each_row(columns)
        self._in_flight += rows
        try:
            try:
                self._producer.produce(self.topic, value=payload, on_delivery=delivered)
            except BufferError as exc:
                raise KafkaDeliveryFailed("the producer queue is full") from exc
            except Exception as exc:  # KafkaException: message too large, unknown topic, …
                raise KafkaDeliveryFailed(str(exc)) from exc
            try:
                await asyncio.shield(done)
            except KafkaDeliveryFailed:
                self.failed_flushes += 1
                raise
            self.rows_written += rows
            self.flushes += 1
        finally:
            self._in_flight -= rows

    async def wait_inserted(self) -> None:
        if self.bridge is not None:
            await self.bridge.wait_caught_up()

    async def stop(self) -> None:
        """Wait for outstanding deliveries, then stop the bridge (if any)."""
        self._closing = True
        if self._running:
            await asyncio.to_thread(self._producer.flush, 30)
            self._running = False
            if self._poller is not None:
                self._poller.join()
            self._producer = None  # librdkafka handles are released when collected
        if self.bridge is not None:
            await self.bridge.stop()


class KafkaBridge:
    """Consumes the events topic and INSERTs into `events_queue` (embedded chDB only).

    Offsets are committed only after the INSERT holding their messages succeeded; a failed
    INSERT is retried (same batch, backoff) before anything more is consumed.
    """

    def __init__(
        self,
        ch: ClickHouse,
        settings: Settings,
        *,
        group: str = "clickpulse-bridge",
        table: str = "events_queue",
    ) -> None:
        assert settings.kafka_brokers
        self.ch = ch
        self.brokers = settings.kafka_brokers
        self.topic = settings.kafka_topic
        self.group = group
        self.table = table
        self.max_rows = settings.writer_max_rows
        self.max_wait_s = settings.writer_max_delay_ms / 1000
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._oldest: float | None = None
        self.rows_written = 0
        self.broken_lines = 0
        self.failed_inserts = 0
        self.commits = 0

    def oldest_pending_age_s(self) -> float:
        oldest = self._oldest
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-bridge", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def wait_caught_up(self, poll_s: float = 0.05) -> None:
        """Return once the bridge's committed offsets reach the topic's end (tests)."""
        from confluent_kafka import Consumer, TopicPartition

        def lag() -> int:
            probe = Consumer({**_kafka_config(self.brokers), "group.id": self.group})
            try:
                meta = probe.list_topics(self.topic, timeout=10)
                parts = [TopicPartition(self.topic, p) for p in meta.topics[self.topic].partitions]
                committed = probe.committed(parts, timeout=10)
                total = 0
                for tp in committed:
                    _, high = probe.get_watermark_offsets(tp, timeout=10)
                    total += high - max(tp.offset, 0)
                return total
            finally:
                probe.close()

        while await asyncio.to_thread(lag) > 0:
            await asyncio.sleep(poll_s)

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaError

        consumer = Consumer(
            {
                **_kafka_config(self.brokers),
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                cols = Columns()
                messages = []
                deadline = time.monotonic() + self.max_wait_s
                while len(cols) < self.max_rows and not self._stop.is_set():
                    timeout = deadline - time.monotonic() if messages else 0.2
                    if timeout <= 0:
                        break
                    batch = consumer.consume(num_messages=500, timeout=timeout)
                    for msg in batch:
                        err = msg.error()
                        if err is not None:
                            if err.code() != KafkaError._PARTITION_EOF:
                                log.error("kafka consumer error: %s", err)
                            continue
                        if not messages:
                            self._oldest = time.monotonic()
                        messages.append(msg)
                        broken = decode_json_each_row(msg.value() or b"", cols)
                        if broken:
                            self.broken_lines += broken
                            log.error(
                                "skipped %d unreadable line(s) in %s[%d]@%d",
                                broken,
                                msg.topic(),
                                msg.partition(),
                                msg.offset(),
                            )
                if not messages:
                    continue
                if not self._insert_until_done(cols):
                    return  # stopping: offsets stay uncommitted, the batch is re-read later
                consumer.commit(asynchronous=False)
                self.commits += 1
                self._oldest = None
        finally:
            consumer.close()

    def _insert_until_done(self, cols: Columns) -> bool:
        table = cols.to_arrow() if len(cols) else None
        delay = 0.1
        while True:
            try:
                if table is not None:
                    assert table.schema == ARROW_SCHEMA
                    self.ch.insert_sync(self.table, table, settings=DEFAULT_INSERT_SETTINGS)
                    self.rows_written += len(cols)
                return True
            except Exception as exc:
                self.failed_inserts += 1
                log.error("bridge insert of %d events failed (retrying): %s", len(cols), exc)
                if self._stop.wait(delay):
                    return False
                delay = min(5.0, delay * 2)
