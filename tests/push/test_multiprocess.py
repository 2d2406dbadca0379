"""Three push-node PROCESSES (`python -m app.cli serve`) on loopback sharing a real Redis and
one PostgreSQL schema (so tokens and API keys are shared); real `websockets` clients on all of
them; the lease holder's process is SIGKILLed mid-stream.

What is and is not shared: chDB allows one data path per process, so here every node has its
own embedded ClickHouse (its own `CLICKPULSE_DATA_DIR`) and the test posts the IDENTICAL event
stream (same events, explicit `ts`) to every node's `/v1/events`. Each node could therefore
answer the key by itself; the test asserts that only one of them does (the lease holder) and
that the others deliver what it publishes on Redis. With a ClickHouse server
(`CLICKHOUSE_URL`) the nodes would share one database instead of being fed the same stream.

Bounded: every wait has a deadline (a hang guard, not a timing assertion); ~25-40 s in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import websockets

from tests.conftest import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
EVENT = "mp"
METRIC = f"SELECT count() AS n WHERE event = '{EVENT}'"
LEASE_MS = 2000
NODES = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def count_for(second: int) -> int:
    """How many events the stream holds in epoch second `second` (varies per second)."""
    return second % 5 + 1


class Proc:
    def __init__(self, index: int, tmp: Path, env: dict[str, str]):
        self.index = index
        self.port = _free_port()
        self.data_dir = tmp / f"node-{index}"
        self.log_path = tmp / f"node-{index}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env={
                **env,
                "CLICKPULSE_DATA_DIR": str(self.data_dir),
                "CLICKPULSE_PORT": str(self.port),
                "CLICKPULSE_HOST": "127.0.0.1",
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.alive = True
        self.node_id = ""

    def ws_url(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/subscribe?token={token}"

    async def stats(self, token: str) -> dict[str, Any]:
        r = await self.http.get("/push/stats", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.alive = False

    async def stop(self) -> None:
        await self.http.aclose()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def tail(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")[-3000:]


class Client:
    """A `websockets` client that keeps the series it was shown: snapshot + deltas."""

    def __init__(self, node: Proc, ws: Any):
        self.node = node
        self.ws = ws
        self.key = ""
        self.series: dict[int, int] = {}
        self.deltas = 0
        self.task: asyncio.Task[None] | None = None

    async def subscribe(self) -> None:
        await self.ws.send(
            msgspec.json.encode(
                {"type": "subscribe", "id": "s", "metric": METRIC, "range_s": 120}
            ).decode()
        )
        while True:
            msg = msgspec.json.decode(await asyncio.wait_for(self.ws.recv(), 20))
            if msg["type"] == "snapshot":
                break
        self.key = msg["key"]
        self._apply(msg["rows"])
        self.task = asyncio.create_task(self._read())

    def _apply(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.series[row["t"]] = row["n"]

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in self.ws:
                msg = msgspec.json.decode(text)
                if msg["type"] == "delta" and msg["key"] == self.key:
                    self.deltas += 1
                    self._apply(msg["rows"])

    def has(self, seconds: range) -> bool:
        return all(self.series.get(s) == count_for(s) for s in seconds)


@pytest.fixture
def mp_redis_url() -> str:
    """A Redis database of this test's own (db 13), emptied first."""
    import redis

    url = TEST_REDIS_URL.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


async def _until(predicate, timeout: float, what: str, nodes: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- node {n.index}\n{n.tail()}" for n in nodes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.1)


async def test_processes_share_redis_one_poller_takeover_without_gap(
    pg_url, org, mp_redis_url, tmp_path
):
    import redis.asyncio as aioredis

    database = f"mp_{uuid.uuid4().hex[:8]}"  # also the Redis namespace: no clash with others
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "REDIS_URL": mp_redis_url,
        "CLICKPULSE_CLICKHOUSE_DATABASE": database,
        "CLICKPULSE_PUSH_LEASE_MS": str(LEASE_MS),
        "CLICKPULSE_PUSH_TICK_MS": "250",
        "CLICKPULSE_WRITER_MAX_DELAY_MS": "50",
    }
    env.pop("CLICKHOUSE_URL", None)
    env.pop("CLICKPULSE_CLICKHOUSE_URL", None)
    nodes = [Proc(i, tmp_path, env) for i in range(NODES)]
    clients: list[Client] = []
    feeder: asyncio.Task[None] | None = None
    redis = aioredis.Redis.from_url(mp_redis_url)
    token = org.admin_token
    try:

        async def all_up() -> bool:
            for n in nodes:
                if n.proc.poll() is not None:
                    raise AssertionError(f"node {n.index} exited\n{n.tail()}")
                try:
                    n.node_id = (await n.stats(token))["node_id"]
                except (httpx.HTTPError, AssertionError):
                    return False
            return True

        await _until(all_up, 60, "the nodes to start", nodes)

        # The event stream: at the start of every second, the same batch (explicit ts) to
        # every live node.
        fed: list[int] = []

        async def feed() -> None:
            # One batch per consecutive second, never skipping one: on a loaded machine a
            # late round catches up instead of leaving a hole the test would read as a gap.
            second = int(time.time())
            while True:
                batch = [
                    {"event": EVENT, "ts": second * 1000 + 100 + i, "user_id": f"u{i}"}
                    for i in range(count_for(second))
                ]
                for n in [n for n in nodes if n.alive]:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await n.http.post("/v1/events", json=batch, headers=org.ingest_headers)
                        assert r.status_code in (200, 202), r.text
                fed.append(second)
                second += 1
                await asyncio.sleep(max(0.0, second + 0.02 - time.time()))

        # Two clients per node, all on the same metric.
        for n in nodes:
            for _ in range(2):
                c = Client(n, await websockets.connect(n.ws_url(token), ping_interval=None))
                await c.subscribe()
                clients.append(c)
        key = clients[0].key
        assert all(c.key == key for c in clients)
        feeder = asyncio.create_task(feed())

        # Exactly one node polls the key; the others only deliver.
        async def one_leader() -> bool:
            stats = [await n.stats(token) for n in nodes]
            leaders = [s for s in stats if s["keys"].get(key, {}).get("polled_here")]
            return len(leaders) == 1 and len(fed) >= 3

        await _until(one_leader, 60, "one leader and 3 fed seconds", nodes)
        stats = {n.index: await n.stats(token) for n in nodes}
        leaders = [n for n in nodes if stats[n.index]["keys"][key]["polled_here"]]
        assert len(leaders) == 1
        leader = leaders[0]
        assert all(s["keys"][key]["viewers"] == 2 for s in stats.values())
        for n in nodes:
            queries = stats[n.index]["keys"][key]["queries"]
            assert (queries > 0) if n is leader else (queries == 0), {
                i: s["keys"][key] for i, s in stats.items()
            }
        lease = await redis.get(f"clickpulse:{database}:push:lease:{key}")
        assert lease is not None and lease.decode() == leader.node_id

        # Every client, on every node, was shown the same values for the fed seconds.
        first = fed[0]
        settled = range(first, fed[-1])
        await _until(
            lambda: _true(all(c.has(settled) for c in clients)),
            30,
            "every client to have the first seconds",
            nodes,
        )
        assert all(c.deltas > 0 for c in clients)

        # SIGKILL the leader: it never releases its lease. Another node takes over within
        # the lease (plus a tick) and resumes from the dead leader's watermark.
        kill_second = int(time.time())
        leader.kill()
        survivors = [n for n in nodes if n.alive]

        async def taken_over() -> bool:
            for n in survivors:
                s = await n.stats(token)
                if s["keys"].get(key, {}).get("polled_here"):
                    return True
            return False

        await _until(taken_over, LEASE_MS / 1000 + 30, "a surviving node to take over", nodes)
        stats = {n.index: await n.stats(token) for n in survivors}
        assert sum(s["keys"][key]["polled_here"] for s in stats.values()) == 1
        new_leader = next(n for n in survivors if stats[n.index]["keys"][key]["polled_here"])
        lease = await redis.get(f"clickpulse:{database}:push:lease:{key}")
        assert lease is not None and lease.decode() == new_leader.node_id

        # Keep feeding past the takeover, then stop and check the series has no gap: every
        # second from the first fed one to the last, the ones while the leader was dying too.
        await _until(
            lambda: _true(len(fed) >= 2 and fed[-1] >= kill_second + 3),
            45,
            "seconds after the takeover",
            nodes,
        )
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        last = fed[-1]
        assert set(range(first, last + 1)) <= set(fed)  # the feeder skipped no second
        everything = range(first, last + 1)
        alive_clients = [c for c in clients if c.node.alive]
        await _until(
            lambda: _true(all(c.has(everything) for c in alive_clients)),
            30,
            "surviving clients to see every second",
            nodes,
        )
        series = [{s: c.series[s] for s in everything} for c in alive_clients]
        assert all(s == series[0] for s in series)
        assert kill_second in everything and kill_second + 1 in everything
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        for c in clients:
            if c.task is not None:
                c.task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.ws.close(), 2)
        for n in nodes:
            await n.stop()
        await redis.aclose()


async def _true(value: bool) -> bool:
    return value
