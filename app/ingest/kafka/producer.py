"""The ingest side of the scaled event stream: `KafkaEventSink` produces each request to the topic.

With `KAFKA_BOOTSTRAP` (alias `CLICKPULSE_KAFKA_BROKERS`) set, it takes the writer's place: each
accepted request is produced as **one message** to the events topic (`kafka_topic`), keyed by its
org id (so an org's events stay in one partition, in order). `submit` returns when the broker
acknowledged the message (`acks=all`, idempotent producer) and raises `KafkaDeliveryFailed` (HTTP
503) when it did not within `kafka_delivery_timeout_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from app.config import Settings
from app.ingest.columns import Columns
from app.ingest.kafka.bridge import KafkaBridge
from app.ingest.kafka.client import client_config
from app.ingest.kafka.codec import encode_json_each_row, split_by_org
from app.ingest.writer import (
    WriterClosed,
    WriterError,
    WriterOverloaded,
)

log = logging.getLogger("clickpulse.ingest.kafka")


class KafkaDeliveryFailed(WriterError):
    """The broker did not acknowledge the batch in time (or refused it)."""


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the ingest producer (each one says why)."""
    timeout_ms = max(1000, int(settings.kafka_delivery_timeout_ms))
    return {
        **client_config(settings.kafka_brokers or ""),
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
