"""The crash suite (issue #13): kill the server again and again under ingest load.

The server is the real `clickpulse serve` in a child process (its own data dir and chDB, the
test's PostgreSQL schema, a free loopback port). Clients post batches of events with an
`Idempotency-Key` and retry each batch — same body, same key — until it is answered 200. The
server is killed, at least 10 times per run, at random moments and at deterministic points:

* SIGKILL right after a client got its 200 (0–150 ms later: during the next INSERTs);
* SIGKILL at a random moment of continuous load (inside an INSERT, most of the time: one
  runs every ~20 ms);
* `CLICKPULSE_TEST_CRASH_AT` (app.ingest.writer): the process exits by itself right after a
  request's WAL record was written (not acknowledged), just before an INSERT, right after an
  INSERT returned, or after the checkpoint and before the segment is deleted.

Afterwards (a clean stop, then a checker process on the data dir): every event posted is in
`events` exactly once, and `events`, every `rollup_*` and every `metrics_*` view count the same
per org. The same with the WAL off.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KILLS = 10
CLIENTS_PER_ORG = 2
EVENTS_PER_BATCH = 40
STARTUP_GUARD_S = 60
COUNTED = [
    "rollup_1s",
    "rollup_1m",
    "rollup_1h",
    "rollup_1d",
    "metrics_1s",
    "metrics_1m",
    "metrics_1h",
    "metrics_1d",
]
# Distribution tables (sketches, no count column): checked for presence per org; their
# deduplication is shown part by part in tests/ingest/test_kafka_dedup.py and
# tests/ingest/test_wal_exactly_once.py.
DETAILED = ["rollup_detail_1m", "rollup_detail_1h", "rollup_detail_1d"]

CHECKER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from app.clickhouse import EmbeddedClickHouse
    ch = EmbeddedClickHouse(database="clickpulse", data_dir={chdb!r})
    out = {{}}
    q = lambda sql: ch.query_sync(sql).rows
    out["events"] = q("SELECT org_id, count(), uniqExact(user_id) FROM clickpulse.events "
                      "GROUP BY org_id ORDER BY org_id")
    for t in {counted!r}:
        out[t] = q(f"SELECT org_id, sum(events) FROM clickpulse.{{t}} GROUP BY org_id ORDER BY org_id")
    for t in {detailed!r}:
        out[t] = q(f"SELECT org_id, count() FROM clickpulse.{{t}} GROUP BY org_id ORDER BY org_id")
    print(json.dumps(out))
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`clickpulse serve` in a child process, restartable on the same data dir and port."""

    def __init__(self, data_dir: Path, pg_url: str, *, wal: bool) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "server.log"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CLICKPULSE_") and k not in ("REDIS_URL", "KAFKA_BOOTSTRAP")
        }
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": pg_url,
                "CLICKPULSE_DATA_DIR": str(data_dir),
                "CLICKPULSE_WAL": "on" if wal else "off",
                "CLICKPULSE_WRITER_MAX_DELAY_MS": "20",
                "CLICKPULSE_ROLES": "ingest",
            }
        )
        self.proc: subprocess.Popen | None = None
        self.exits: list[int] = []
        self.crash_armed = False

    def start(self, crash_at: str | None = None) -> None:
        env = dict(self.env)
        self.crash_armed = bool(crash_at)
        if crash_at:
            env["CLICKPULSE_TEST_CRASH_AT"] = crash_at
        with self.log.open("a") as log:
            log.write(f"\n=== start (crash_at={crash_at}) ===\n")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.data_dir.parent),
            )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_GUARD_S
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    # A crash point reached during startup is fine only for hooks: the clients'
                    # retries of the last run can reach it before /healthz answers us.
                    if self.crash_armed and self.proc.returncode == 87:
                        return
                    raise AssertionError(f"server exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    if (await http.get(f"{self.base}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.exits.append(self.proc.wait(30))

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(60) == 0, self.tail()

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


class Clients:
    """Per org, clients posting keyed batches and retrying each until it is answered 200."""

    def __init__(self, server: Server, orgs: list, *, seed: int) -> None:
        self.server = server
        self.orgs = orgs
        self.rng = random.Random(seed)
        self.posted: dict[int, int] = {org.id: 0 for org in orgs}  # events of acked batches
        self.values: dict[int, float] = {org.id: 0.0 for org in orgs}
        self.acked = asyncio.Event()
        self.stop_new = asyncio.Event()
        self.retries = 0
        self.replayed_answers = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(
                *(self._client(http, org, n) for org in self.orgs for n in range(CLIENTS_PER_ORG))
            )

    async def _client(self, http: httpx.AsyncClient, org, n: int) -> None:
        batch = 0
        while not self.stop_new.is_set():
            key = f"o{org.id}-c{n}-b{batch}"
            ts = int(time.time() * 1000) - 1000
            events = [
                {"event": "pageview", "user_id": f"{key}-e{i}", "ts": ts, "value": i % 7}
                for i in range(EVENTS_PER_BATCH)
            ]
            body = json.dumps(events).encode()  # byte-identical on every retry
            headers = {
                **org.ingest_headers,
                "Idempotency-Key": key,
                "Content-Type": "application/json",
            }
            tries = 0
            while True:
                tries += 1
                try:
                    r = await http.post(
                        f"{self.server.base}/v1/events", content=body, headers=headers
                    )
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                if r.status_code == 200:
                    got = r.json()
                    assert got["accepted"] == EVENTS_PER_BATCH, got
                    if r.headers.get("idempotent-replayed"):
                        self.replayed_answers += 1
                    break
                assert r.status_code in (409, 503), (r.status_code, r.text)
                await asyncio.sleep(0.05)
            self.retries += tries - 1
            self.posted[org.id] += EVENTS_PER_BATCH
            self.values[org.id] += sum(i % 7 for i in range(EVENTS_PER_BATCH))
            self.acked.set()
            batch += 1
            await asyncio.sleep(self.rng.uniform(0, 0.02))


def _check(data_dir: Path) -> dict:
    script = CHECKER.format(
        root=str(ROOT), chdb=str(data_dir / "clickhouse"), counted=COUNTED, detailed=DETAILED
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


async def _crash_run(tmp_path: Path, pg_url: str, orgs: list, *, wal: bool, seed: int) -> None:
    rng = random.Random(seed)
    server = Server(tmp_path / "data", pg_url, wal=wal)
    clients = Clients(server, orgs, seed=seed)
    hooks = ["before_insert", "after_insert"]
    if wal:
        hooks += ["after_wal_append", "before_wal_delete"]
    # Every hook at least once, then timed kills: after an ack, or at a random moment.
    plan = [("hook", h) for h in hooks]
    while len(plan) < KILLS:
        plan.append(("after_ack", None) if len(plan) % 2 else ("random", None))
    rng.shuffle(plan)

    load = None
    try:
        for kind, hook in plan:
            crash_at = f"{hook}:{rng.randint(1, 3)}" if kind == "hook" else None
            server.start(crash_at)
            await server.wait_ready()
            if load is None:
                load = asyncio.create_task(clients.run())
            if kind == "hook":
                assert server.proc is not None
                code = await asyncio.to_thread(server.proc.wait, STARTUP_GUARD_S)
                assert code == 87, (hook, code, server.tail())  # exited at the crash point
                server.exits.append(code)
            elif kind == "after_ack":
                clients.acked.clear()
                await asyncio.wait_for(clients.acked.wait(), STARTUP_GUARD_S)
                await asyncio.sleep(rng.uniform(0, 0.15))
                server.kill()
            else:
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                server.kill()
        # The last start: no crash; every batch in flight is retried until answered.
        server.start()
        await server.wait_ready()
        await asyncio.sleep(0.5)
        clients.stop_new.set()
        assert load is not None
        await asyncio.wait_for(load, STARTUP_GUARD_S)
        server.stop()
    finally:
        clients.stop_new.set()
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
        if load is not None and not load.done():
            load.cancel()
    assert len(server.exits) >= KILLS
    assert clients.retries > 0  # some requests were in flight at a kill

    found = _check(tmp_path / "data")
    for org in orgs:
        want = clients.posted[org.id]
        assert want > 0
        events = {r[0]: (r[1], r[2]) for r in found["events"]}
        assert events[org.id] == (want, want), (org.id, events, want)  # none lost, none doubled
        for table in COUNTED:
            per_org = {r[0]: r[1] for r in found[table]}
            assert per_org[org.id] == want, (table, org.id, per_org, want)
    for table in DETAILED:
        assert {r[0] for r in found[table]} == {org.id for org in orgs}, table


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "wal_off"])
async def test_no_event_lost_or_doubled_through_repeated_crashes(tmp_path, pg_url, make_org, wal):
    orgs = [await make_org("crash-a"), await make_org("crash-b")]
    await _crash_run(tmp_path, pg_url, orgs, wal=wal, seed=1300 + int(wal))
