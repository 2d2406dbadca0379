"""Live push benchmark on loopback (issue 5): (a) event → client latency, (b) connections per
process at one update a second each, with delivery lag and memory per connection, (c) fan-out
messages/s.

    .venv/bin/python bench/push.py --clients 2000 --keys 4 --samples 30           # (a)
    .venv/bin/python bench/push.py --fanout --transport dedicated --connections 19500  # (b), (c)
    .venv/bin/python bench/push.py --scale --keys 400 --orgs 20 --seconds 10            # (d)
    .venv/bin/python bench/push.py --scale --keys 10000 --orgs 1000 --ingest 50000 \
        --seconds 20 --warm-timeout 60      # (d) at the seed's scale (`run_scale_seed`)

Both modes start one server process (uvicorn + the real app, one process: chDB allows one data
path per process) on a fresh chDB dir and a throwaway PostgreSQL schema (DATABASE_URL, default
the test server), pinned to core 0 with taskset; the load generator runs on core 1 (`--no-pin`
to leave scheduling to the kernel). Every wait is bounded.

(a) `--clients` `websockets` clients (in this process) subscribe to `--keys` keys
    (`SELECT count() AS n WHERE event = 'e<k>'`); `--samples` times, POST one event of a
    random key with ts = now through /v1/events and time until the first and the last
    subscriber of that key received a delta containing it. Latency = POST sent → delta
    received: writer delay + wait for the key's next poll + query + fan-out.

(b)/(c) `--fanout`: `--procs` minimal raw-socket WebSocket clients (own 127.0.0.x source each),
    `--connections` in all, spread over `--keys` keys, subscribe with `range_s=1`.
    `--source poller` (default): the real poller ticks (`--tick-ms`, 250 ms) and queries chDB;
    with no events posted every key changes exactly once a second — the new, empty second
    entering its window — so (b) is "every client gets one update a second" from the real
    query → diff → encode → deliver path. The only instrumentation: the server appends the
    moment `hub.deliver` was called (`"e"`, µs) to each delta. Two lags per received delta:
      * from the second: receive time − the start of the newest second in the delta (the
        second that just began: its row exists from that instant) — includes waiting for the
        key's poll, the query and the fan-out;
      * from the emit: receive time − `"e"` — the push tier alone (fan-out + transport + the
        load generator's own queueing).
    (c) posts one event per key every 50 ms through /v1/events, so every key changes every
    round (1000 / tick_ms updates a second per client); messages/s delivered and server CPU.
    `--source synthetic`: the old method — no poller; a publisher in the server calls
    `hub.deliver` for every key once a second ((c): `--burst-hz`), `--phases` slots apart.
    Memory: server RSS (/proc) with N connections open, and subscribed, minus the RSS after a
    warm-up client read every key's snapshot once; divided by N. Server-side, per round: start
    offset in the tick, duration, event-loop thread CPU, phases; the loop's lateness (a 5 ms
    timer) and every full GC's duration.

Poller options (both modes): `--max-phases 1 --unaligned` is the schedule before phases and
wall-clock rounds; `--spread-ms` paces phases over part of the round; `--gc-freeze` calls
gc.freeze() in the server once every client is subscribed (an experiment, not app behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import (  # noqa: E402
    create_org_credentials,
    creds_ready,
    free_port,
    loadavg,
    pg_schema,
    server_process,
    work_dir,
)

DATABASE = "bench_push"


def metric(k: int) -> str:
    return f"SELECT count() AS n WHERE event = 'e{k}'"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(statistics.median(values), 1),
        "p99": round(_pct(values, 99), 1),
        "max": round(max(values), 1),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_nofile() -> None:
    """As many open files as allowed: root may raise the hard limit where the host lets it
    (this container refuses: the bench then runs at the hard limit, see docs/benchmarks.md)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the server process ---------------------------------------------------------------------


def _build(cfg: dict, **overrides: Any) -> Any:
    from app.config import Settings
    from app.runtime import build_services

    settings = Settings.from_env(
        data_dir=cfg["data_dir"],
        clickhouse_database=DATABASE,
        database_url=cfg["database_url"],
        port=cfg["port"],
        redis_url=None,
        push_port=cfg.get("push_port"),  # set: the dedicated `websockets` transport
        **overrides,
    )
    return build_services(settings)


def _configure_poller(services: Any, cfg: dict) -> deque:
    """Apply the bench's poller options and record every round (start offset, duration,
    phases) for the report."""
    poller = services.push.poller
    poller.max_phases = cfg.get("max_phases", poller.max_phases)
    poller.spread_ms = cfg.get("spread_ms", poller.spread_ms)
    if cfg.get("unaligned"):
        poller._run = lambda: _unaligned_run(poller)
    rounds: deque = deque(maxlen=2000)
    tick = poller.tick

    async def recorded(now: float | None = None) -> Any:
        started, cpu = time.time(), time.thread_time()
        out = await tick(now)
        # The event loop thread's CPU for the round (diff, encode, fan-out; not the query
        # threads): what the round would take on a core of its own.
        rounds.append((started, time.time() - started, poller.phases, time.thread_time() - cpu))
        return out

    poller.tick = recorded
    return rounds


async def _unaligned_run(poller: Any) -> None:
    """The poller's loop before rounds were put on the wall clock's grid (for comparison):
    every tick_ms from whenever it started."""
    period = poller.tick_ms / 1000
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        with contextlib.suppress(Exception):
            await poller.tick()
        next_at += period
        delay = next_at - loop.time()
        if delay < 0:
            next_at, delay = loop.time(), 0
        await asyncio.sleep(delay)


def _instrument_deliver(hub: Any) -> None:
    """Append the moment each delta reaches `hub.deliver` (`"e"`, epoch µs) to its text: the
    same one string still goes to every subscriber."""
    deliver = hub.deliver

    def stamped(key: str, kind: str, text: str) -> None:
        if kind == "d":
            text = f'{text[:-1]},"e":{int(time.time() * 1e6)}}}'
        deliver(key, kind, text)

    hub.deliver = stamped


async def _loop_probe(stalls: deque) -> None:
    """How late a 5 ms timer fires: how long the event loop was kept busy (a fan-out that
    never yields delays every other socket, HTTP request and timer of the process)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(0.005)
        stalls.append((time.time(), (loop.time() - started - 0.005) * 1000))


def _gc_probe(collections: deque) -> None:
    """Record every full (generation 2) collection: (end time, ms) — the cyclic collector
    re-scans every tracked object of every connection, so at 20k sockets it stops the loop."""
    import gc

    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections.append((time.time(), (time.perf_counter() - started[0]) * 1000))

    gc.callbacks.append(callback)


def _worst_per_second(stalls: deque, since: float) -> list[float]:
    worst: dict[int, float] = {}
    for at, late in stalls:
        if at >= since:
            worst[int(at)] = max(worst.get(int(at), 0.0), late)
    return list(worst.values())


def _round_stats(
    rounds: deque, stalls: deque, collections: deque, since: float, period_s: float
) -> dict:
    picked = [r for r in rounds if r[0] >= since]
    if not picked:
        return {}
    offsets = [(r[0] % period_s) * 1000 for r in picked]
    durations = [r[1] * 1000 for r in picked]
    return {
        "rounds": len(picked),
        "start_offset_in_tick_ms": _summary(offsets),
        "duration_ms": _summary(durations),
        "phases_max": max(r[2] for r in picked),
        "loop_cpu_ms": _summary([r[3] * 1000 for r in picked]),
        # The first round of each second: the one where every key changes.
        "boundary_round_loop_cpu_ms": _summary(
            [r[3] * 1000 for r in picked if r[0] % 1.0 < period_s]
        ),
        "boundary_round_duration_ms": _summary(
            [r[1] * 1000 for r in picked if r[0] % 1.0 < period_s]
        ),
        "event_loop_late_ms": _summary([x for at, x in stalls if at >= since]),
        # The longest stall in each second of the window (the boundary round's fan-out lands in
        # every second), so one long block and several short ones are told apart.
        "event_loop_worst_per_second_ms": _summary(_worst_per_second(stalls, since)),
        "full_gc_ms": [round(ms, 1) for at, ms in collections if at >= since],
    }


def serve(cfg_path: str) -> None:
    """(a)'s server: the app with its poller ticking, credentials written once the org exists."""
    import uvicorn

    from app.server import create_app

    cfg = json.loads(Path(cfg_path).read_text())
    services = _build(cfg)
    _configure_poller(services, cfg)
    creds = asyncio.run(
        create_org_credentials(cfg["database_url"], "bench", email="viewer@bench.test")
    )
    Path(cfg["creds"]).write_text(json.dumps(creds))
    uvicorn.run(
        create_app(services),
        host="127.0.0.1",
        port=cfg["port"],
        log_level="warning",
        ws_ping_interval=None,
        ws_per_message_deflate=False,
    )


def serve_fanout(cfg_path: str) -> None:
    """(b)/(c)'s server: the real poller (or the synthetic publisher), controlled through
    `ctl_file`; writes round statistics to `stats_file` when asked."""
    import uvicorn

    from app.push import protocol
    from app.server import create_app

    _raise_nofile()
    cfg = json.loads(Path(cfg_path).read_text())
    if cfg.get("tracemalloc"):
        import tracemalloc

        tracemalloc.start(4)
    synthetic = cfg["source"] == "synthetic"
    services = _build(cfg, push_tick_ms=0 if synthetic else cfg["tick_ms"])
    rounds = _configure_poller(services, cfg)
    _instrument_deliver(services.push)
    creds = asyncio.run(
        create_org_credentials(cfg["database_url"], "bench", email="viewer@bench.test")
    )
    ctl = Path(cfg["ctl_file"])
    stalls: deque = deque(maxlen=20_000)
    collections: deque = deque(maxlen=1000)
    _gc_probe(collections)

    async def control() -> None:
        """Commands: `0` idle, `<hz>` (synthetic publishes/s per key), `snap<n>`
        (tracemalloc), `freeze` (gc.freeze()), `stats <since>` (write round statistics)."""
        seq = 0
        snaps: list = []
        frozen: list[int] = []
        done_stats = ""
        while True:
            try:
                text = ctl.read_text()
            except OSError:
                text = "0"
            if text == "freeze" and not frozen:
                # --gc-freeze: move the connections' objects out of the cyclic collector's
                # generations (what a push-tier GC policy would do; see docs/benchmarks.md).
                import gc

                frozen.append(gc.get_freeze_count())
                gc.freeze()
                frozen.append(gc.get_freeze_count())
            if text.startswith("snap") and len(snaps) < int(text[4:]):
                snaps.append(_trace_snapshot(snaps, cfg))
            if text.startswith("stats") and text != done_stats:
                done_stats = text
                since = float(text.split()[1])
                stats = _round_stats(rounds, stalls, collections, since, cfg["tick_ms"] / 1000)
                Path(cfg["stats_file"]).write_text(json.dumps(stats))
            try:
                hz = float(text) if synthetic else 0.0
            except ValueError:
                hz = 0.0
            if hz <= 0:
                await asyncio.sleep(0.1)
                continue
            period = 1 / hz
            phases = max(int(cfg.get("phases", 1)), 1)
            await asyncio.sleep(period - time.time() % period)  # on the period's boundary
            hub = services.push
            seq += 1
            keys = sorted(hub.by_key)
            # Key i in slot i % phases of the period, not all at once.
            for phase in range(phases):
                if phase:
                    now = time.time()
                    await asyncio.sleep(max(phase * period / phases - now % period, 0))
                for key in keys[phase::phases]:
                    text = protocol.encode(
                        {"type": "delta", "key": key, "rows": [{"t": seq, "n": seq}]}
                    )
                    hub.deliver(key, "d", text)

    async def main() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(services),
                host="127.0.0.1",
                port=cfg["port"],
                log_level="warning",
                ws=cfg["ws"],
                ws_per_message_deflate=False,
                backlog=4096,
            )
        )
        tasks = [asyncio.create_task(control()), asyncio.create_task(_loop_probe(stalls))]
        Path(cfg["creds"]).write_text(json.dumps(creds))
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(main())


def _trace_snapshot(snaps: list, cfg: dict):
    """tracemalloc: the first call takes the baseline, the second writes the growth since, by
    allocation site, to `<data_dir>/tracemalloc.txt`."""
    import gc
    import tracemalloc

    if not tracemalloc.is_tracing():
        return None
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if snaps:
        stats = snap.compare_to(snaps[0], "lineno")
        lines = [str(s) for s in stats[:30]]
        total = sum(s.size_diff for s in stats)
        lines.append(f"total growth: {total / 1024:.0f} KiB")
        Path(cfg["data_dir"], "tracemalloc.txt").write_text("\n".join(lines))
    return snap


# -- (a) event → client latency ---------------------------------------------------------------


async def run_clients(ws_port: int, http_port: int, creds: dict, args: argparse.Namespace) -> dict:
    import httpx
    import msgspec
    import websockets

    url = f"ws://127.0.0.1:{ws_port}/ws/subscribe?token={creds['token']}"
    rss0 = _rss_kib(creds["pid"])
    sockets = []
    arrivals: dict[int, dict[int, float]] = {}  # sample -> socket index -> time
    expect: dict[int, tuple[str, int, int]] = {}  # sample -> (key, t, n)
    key_of: dict[int, str] = {}
    viewers: dict[str, list[int]] = {}
    started = time.perf_counter()
    for _ in range(args.clients):
        ws = await websockets.connect(url, max_queue=None, ping_interval=None, compression=None)
        sockets.append(ws)
    connect_s = time.perf_counter() - started
    started = time.perf_counter()
    for i, ws in enumerate(sockets):
        k = i % args.keys
        await ws.send(
            json.dumps({"type": "subscribe", "id": 1, "metric": metric(k), "range_s": 60})
        )
    for i, ws in enumerate(sockets):
        snap = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 30))
        key_of[i] = snap["key"]
        viewers.setdefault(snap["key"], []).append(i)
    subscribe_s = time.perf_counter() - started
    await asyncio.sleep(1.0)
    rss1 = _rss_kib(creds["pid"])

    decoder = msgspec.json.Decoder()

    async def reader(i: int, ws) -> None:
        async for text in ws:
            now = time.perf_counter()
            msg = decoder.decode(text)
            if msg.get("type") != "delta":
                continue
            for sample, (key, t, n) in list(expect.items()):
                if key != msg["key"] or i in arrivals[sample]:
                    continue
                if any(r["t"] == t and r["n"] >= n for r in msg["rows"]):
                    arrivals[sample][i] = now

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
    latencies, spreads, delivered = [], [], []
    counts: dict[tuple[str, int], int] = {}
    load_before = loadavg()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        for sample in range(args.samples):
            k = random.randrange(args.keys)
            key = key_of[k]
            ts = int(time.time() * 1000)
            t = ts // 1000
            counts[(key, t)] = counts.get((key, t), 0) + 1
            arrivals[sample] = {}
            expect[sample] = (key, t, counts[(key, t)])
            sent = time.perf_counter()
            r = await http.post(
                "/v1/events",
                json=[{"event": f"e{k}", "ts": ts, "user_id": "u"}],
                headers={"Authorization": f"Bearer {creds['api_key']}"},
            )
            assert r.status_code in (200, 202), r.text
            want = len(viewers[key])
            deadline = sent + 5
            while len(arrivals[sample]) < want and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            got = arrivals[sample]
            expect.pop(sample)
            delivered.append(len(got) / want)
            if got:
                first, last = min(got.values()), max(got.values())
                latencies.append(first - sent)
                spreads.append(last - first)
            await asyncio.sleep(random.uniform(0.1, 0.4))
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    first_ms = [x * 1000 for x in latencies]
    last_ms = [(x + s) * 1000 for x, s in zip(latencies, spreads, strict=True)]
    return {
        "transport": args.transport,
        "clients": args.clients,
        "keys": args.keys,
        "samples": args.samples,
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "connect_s": round(connect_s, 2),
        "subscribe_s": round(subscribe_s, 2),
        "server_rss_before_mib": round(rss0 / 1024, 1),
        "server_rss_after_mib": round(rss1 / 1024, 1),
        "kib_per_connection": round((rss1 - rss0) / args.clients, 1),
        "post_to_first_subscriber_ms": _summary(first_ms),
        "post_to_last_subscriber_ms": _summary(last_ms),
        "fanout_spread_ms": _summary([x * 1000 for x in spreads]),
        "viewers_per_key": args.clients // args.keys,
        "delivered_fraction_min": round(min(delivered), 3),
    }


def run_latency(args: argparse.Namespace) -> dict:
    port = free_port()
    with work_dir("clickpulse-bench-push-") as work, pg_schema("bench_push") as (_, db_url):
        cfg = {
            "data_dir": work,
            "database_url": db_url,
            "port": port,
            "creds": os.path.join(work, "creds.json"),
            "push_port": free_port() if args.transport == "dedicated" else None,
            "max_phases": args.max_phases,
            "spread_ms": args.spread_ms,
            "unaligned": args.unaligned,
        }
        cfg_path = os.path.join(work, "cfg.json")
        Path(cfg_path).write_text(json.dumps(cfg))
        ws_port = cfg["push_port"] or port
        pin = [] if args.no_pin else ["taskset", "-c", "0"]
        if not args.no_pin:
            os.sched_setaffinity(0, {1})  # this process is the load generator: core 1
        argv = [*pin, sys.executable, __file__, "--serve", cfg_path]
        with server_process(argv, ready=creds_ready(cfg["creds"], ws_port)):
            creds = json.loads(Path(cfg["creds"]).read_text())
            return asyncio.run(run_clients(ws_port, port, creds, args))


# -- (b)/(c) the load generator -------------------------------------------------------------


class _WSClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one subscribe, parse server frames."""

    def __init__(self, host: str, port: int, path: str, subscribe: bytes, stats: dict):
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.subscribe = subscribe
        self.stats = stats
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def send_subscribe(self) -> None:
        self.transport.write(_frame(0x1, self.subscribe))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.stats["refused"] += 1
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
            self.stats["connected"] += 1
        stats = self.stats
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, head = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, head = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < head + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[head : head + n])
            del buf[: head + n]
            if opcode == 0x1:
                if payload.startswith(b'{"type":"delta"'):
                    if stats["recording"]:
                        _record_delta(payload, stats)
                elif payload.startswith(b'{"type":"snapshot"'):
                    stats["subscribed"] += 1
            elif opcode == 0x9:
                self.transport.write(_frame(0xA, payload))

    def connection_lost(self, exc) -> None:
        self.stats["lost"] += 1


def _record_delta(payload: bytes, stats: dict) -> None:
    """Lags of one received delta (ms): from its `"e"` (the server's deliver call) and from
    the start of the newest second among its rows (epoch seconds only)."""
    now_us = time.time() * 1e6
    stats["received"] += 1
    at = payload.rfind(b',"e":')
    if at >= 0:
        stats["emit"].append((now_us - int(payload[at + 5 : -1])) / 1000)
    newest, pos = 0, 0
    while True:
        pos = payload.find(b'"t":', pos)
        if pos < 0:
            break
        end = pos + 4
        while 48 <= payload[end] <= 57:
            end += 1
        newest = max(newest, int(payload[pos + 4 : end]))
        pos = end
    if newest > 1_000_000_000:  # an epoch second (the synthetic publisher's t is a counter)
        stats["second"].append((newest, (now_us - newest * 1e6) / 1000))


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def fanout_client(arg: str) -> None:
    """One load-generator process: `--fanout-client port,token,count,keys,source_ip,first`.
    Commands on stdin: `subscribe`, `record`, `report <label>`, `quit`."""
    _raise_nofile()
    port_s, token, count_s, keys_s, source, first_s = arg.split(",")
    port, count, keys, first = int(port_s), int(count_s), int(keys_s), int(first_s)
    try:  # the load generator's own cost per frame should stay below the server's
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stats = {
            "connected": 0,
            "subscribed": 0,
            "refused": 0,
            "lost": 0,
            "received": 0,
            "emit": [],
            "second": [],
            "recording": False,
        }
        path = f"/ws/subscribe?token={token}"
        clients = []
        for i in range(count):
            k = (first + i) % keys
            sub = json.dumps(
                {"type": "subscribe", "id": 1, "metric": metric(k), "range_s": 1}
            ).encode()
            for attempt in range(5):
                try:
                    _, proto = await loop.create_connection(
                        lambda sub=sub: _WSClient("127.0.0.1", port, path, sub, stats),
                        "127.0.0.1",
                        port,
                        local_addr=(source, 0),
                    )
                    clients.append(proto)
                    break
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            if i % 200 == 199:
                await asyncio.sleep(0)
        deadline = time.monotonic() + 60
        while stats["connected"] + stats["refused"] < len(clients):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        print(json.dumps({"connected": stats["connected"]}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        started = 0.0
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "subscribe":
                for i, c in enumerate(clients):
                    if c.upgraded:
                        c.send_subscribe()
                    if i % 100 == 99:
                        await asyncio.sleep(0.01)
                deadline = time.monotonic() + 120
                while stats["subscribed"] < stats["connected"] - stats["lost"]:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                print(json.dumps({"subscribed": stats["subscribed"]}), flush=True)
            elif line[0] == "record":
                stats["emit"], stats["second"], stats["received"] = [], [], 0
                stats["recording"] = True
                started = time.monotonic()
            elif line[0] == "report":
                stats["recording"] = False
                print(
                    json.dumps(
                        {
                            "label": line[1],
                            "seconds": time.monotonic() - started,
                            "received": stats["received"],
                            "lost": stats["lost"],
                            "emit": [round(x, 2) for x in stats["emit"]],
                            "second": [(t, round(x, 2)) for t, x in stats["second"]],
                        }
                    ),
                    flush=True,
                )
        for c in clients:
            c.transport.close()

    asyncio.run(run())


class _Feeder(threading.Thread):
    """(c) with the real poller: one event per key every `every_s` through /v1/events, so
    every key changes in every round."""

    def __init__(self, port: int, api_key: str, keys: int, every_s: float = 0.05):
        super().__init__(daemon=True)
        self.port, self.api_key, self.keys, self.every_s = port, api_key, keys, every_s
        self.stop = threading.Event()
        self.posted = 0

    def run(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as http:
            while not self.stop.wait(self.every_s):
                ts = int(time.time() * 1000)
                body = [{"event": f"e{k}", "ts": ts, "user_id": "u"} for k in range(self.keys)]
                with contextlib.suppress(httpx.HTTPError):
                    http.post("/v1/events", json=body, headers=headers)
                    self.posted += 1


def run_fanout(args: argparse.Namespace) -> dict:
    import websockets

    port = free_port(low=20000)  # below the ephemeral range the clients' sockets use
    with work_dir("clickpulse-bench-fanout-") as work, pg_schema("bench_push") as (_, db_url):
        cfg = {
            "data_dir": work,
            "database_url": db_url,
            "port": port,
            "creds": os.path.join(work, "creds.json"),
            "ctl_file": os.path.join(work, "ctl"),
            "stats_file": os.path.join(work, "stats.json"),
            "ws": args.ws,
            "tracemalloc": args.tracemalloc,
            "source": args.source,
            "tick_ms": args.tick_ms,
            "phases": args.phases,
            "max_phases": args.max_phases,
            "spread_ms": args.spread_ms,
            "unaligned": args.unaligned,
            "push_port": free_port(low=21000) if args.transport == "dedicated" else None,
        }
        ws_port = cfg["push_port"] or port  # where the clients connect
        ctl = Path(cfg["ctl_file"])
        ctl.write_text("0")
        cfg_path = os.path.join(work, "cfg.json")
        Path(cfg_path).write_text(json.dumps(cfg))
        _raise_nofile()
        pin = [] if args.no_pin else ["taskset", "-c", "0"]
        argv = [*pin, sys.executable, __file__, "--serve-fanout", cfg_path]
        procs: list[subprocess.Popen] = []
        with server_process(argv, ready=creds_ready(cfg["creds"], ws_port)):
            try:
                return _measure_fanout(args, cfg, ws_port, port, procs, websockets)
            finally:
                for p in procs:
                    with contextlib.suppress(Exception):
                        p.stdin.write("quit\n")
                        p.stdin.flush()
                for p in procs:
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()


def _measure_fanout(args, cfg, ws_port, http_port, procs, websockets) -> dict:
    creds = json.loads(Path(cfg["creds"]).read_text())
    pid = creds["pid"]
    ctl = Path(cfg["ctl_file"])

    async def warm() -> None:  # read every key's snapshot once (chDB buffers warm)
        url = f"ws://127.0.0.1:{ws_port}/ws/subscribe?token={creds['token']}"
        async with websockets.connect(url, compression=None) as ws:
            for k in range(args.keys):
                await ws.send(json.dumps({"type": "subscribe", "id": k, "metric": metric(k)}))
                while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "snapshot":
                    pass

    asyncio.run(warm())
    if args.tracemalloc:
        ctl.write_text("snap1")
    time.sleep(1.5)
    rss0 = _rss_kib(pid)
    per = args.connections // args.procs
    cpin = [] if args.no_pin else ["taskset", "-c", "1"]
    started = time.perf_counter()
    for j in range(args.procs):
        spec = f"{ws_port},{creds['token']},{per},{args.keys},127.0.0.{2 + j},{j * per}"
        procs.append(
            subprocess.Popen(
                [*cpin, sys.executable, __file__, "--fanout-client", spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )

    def each(command: str | None, reply: bool = True) -> list[dict]:
        if command:
            for p in procs:
                p.stdin.write(command + "\n")
                p.stdin.flush()
        return [json.loads(p.stdout.readline()) for p in procs] if reply else []

    connected = sum(r["connected"] for r in each(None))
    connect_s = time.perf_counter() - started
    time.sleep(2)
    rss_conn = _rss_kib(pid)
    started = time.perf_counter()
    subscribed = sum(r["subscribed"] for r in each("subscribe"))
    subscribe_s = time.perf_counter() - started
    time.sleep(3)
    rss_sub = _rss_kib(pid)
    if args.gc_freeze:
        ctl.write_text("freeze")
        time.sleep(0.5)
    if args.tracemalloc:  # allocation sites of the idle, subscribed connections
        ctl.write_text("snap2")
        report = Path(cfg["data_dir"], "tracemalloc.txt")
        deadline = time.monotonic() + 120
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        print(report.read_text() if report.exists() else "no tracemalloc report")
    poller = args.source == "poller"
    result: dict = {
        "transport": (
            "dedicated websockets.serve + broadcast()"
            if args.transport == "dedicated"
            else f"uvicorn ws={args.ws}"
        ),
        "source": (
            f"real poller, tick {args.tick_ms} ms, max_phases {args.max_phases}, "
            f"spread_ms {args.spread_ms}, {'unaligned' if args.unaligned else 'aligned'} rounds"
            if poller
            else f"synthetic publisher, {args.phases} slot(s) per period"
        ),
        "gc_freeze_after_subscribe": args.gc_freeze,
        "connections": connected,
        "subscribed": subscribed,
        "keys": args.keys,
        "client_procs": args.procs,
        "connect_s": round(connect_s, 1),
        "subscribe_s": round(subscribe_s, 1),
        "server_rss_idle_mib": round(rss0 / 1024, 1),
        "kib_per_connection_open": round((rss_conn - rss0) / max(connected, 1), 1),
        "kib_per_connection_subscribed": round((rss_sub - rss0) / max(connected, 1), 1),
    }
    per_s = 1000 / args.tick_ms if poller else args.burst_hz
    for label, rate in (("b", 1.0), ("c", per_s)):
        feeder = None
        if poller and label == "c":
            feeder = _Feeder(http_port, creds["api_key"], args.keys)
            feeder.start()
        elif not poller:
            ctl.write_text(str(rate))
        time.sleep(1.2)
        load_before = loadavg()
        cpu0 = _cpu_s(pid)
        window_from = time.time()
        each("record", reply=False)
        time.sleep(args.seconds)
        cpu1 = _cpu_s(pid)
        reports = each(f"report {label}")
        if feeder is not None:
            feeder.stop.set()
            feeder.join(10)
        ctl.write_text(f"stats {window_from}")
        time.sleep(1.5)
        ctl.write_text("0")
        emit = [x for r in reports for x in r["emit"]]
        by_second: dict[int, float] = {}  # second → when its last client got it
        for r in reports:
            for t, lag in r["second"]:
                by_second[t] = max(by_second.get(t, 0.0), lag)
        second = [lag for r in reports for _, lag in r["second"]]
        received = sum(r["received"] for r in reports)
        expected = subscribed * rate * args.seconds
        figures = {
            "updates_per_s_per_client": rate,
            "messages_per_s": round(received / args.seconds),
            "delivered_fraction": round(received / max(expected, 1), 3),
            "lag_from_emit_ms": _summary(emit),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / args.seconds),
            "lost_connections": sum(r["lost"] for r in reports),
            "load_average_before": load_before,
        }
        if label == "b" and second:
            figures["lag_from_second_start_ms"] = _summary(second) | {
                "p90": round(_pct(second, 90), 1)
            }
            # Per second of the window: the lag of its last delivery (the whole fan-out).
            figures["last_delivery_per_second_ms"] = _summary(list(by_second.values()))
        if poller:
            with contextlib.suppress(OSError, ValueError):
                figures["rounds"] = json.loads(Path(cfg["stats_file"]).read_text())
        result[label] = figures
    result["server_rss_end_mib"] = round(_rss_kib(pid) / 1024, 1)
    result["load_average_end"] = loadavg()
    return result


# -- (d) --scale: the poller's own cost, N live keys across M orgs ---------------------------

SCALE_METRICS = (
    ("SELECT count() AS n", None),
    ("SELECT count() AS n", ["country"]),
    ("SELECT sum(value) AS revenue, uniq(user_id) AS visitors", None),
    ("SELECT countIf(event = 'error') / count() AS rate", ["device"]),
)


def _scale_rows(org: int, second: int, per_second: int) -> list[dict[str, Any]]:
    return [
        {
            "org_id": org,
            "ts": second,
            "event": ("pageview", "purchase", "error")[i % 3],
            "user_id": f"u{i % 50}",
            "value": float(i % 7),
            "country": ("DE", "FR", "US", "BR")[i % 4],
            "device": ("desktop", "mobile")[i % 2],
        }
        for i in range(per_second)
    ]


def _scale_insert(ch: Any, rows: list[dict[str, Any]]) -> None:
    """Rows (epoch-second `ts`) → events_queue as ingest writes them (the MVs fill the rollups)."""
    import datetime as dt

    import pyarrow as pa

    from app.ingest.columns import ARROW_SCHEMA

    defaults = {"user_id": "u", "session_id": "s", "path": "/", "referrer": "", "browser": "x"}
    full = []
    for row in rows:
        ts = dt.datetime.fromtimestamp(row["ts"], dt.UTC)
        full.append({"os": "linux", **defaults, **row, "ts": ts, "received_at": ts, "props": []})
    ch.insert_sync("events_queue", pa.Table.from_pylist(full, schema=ARROW_SCHEMA))


def run_scale(args: argparse.Namespace) -> dict:
    """(d) In process, no sockets: one fresh chDB database, `--orgs` orgs with traffic, `--keys`
    live keys spread over them (4 shapes × filters), and the real Poller driven on the wall
    clock's grid (`--tick-ms`) for `--seconds` per mode. Each second `--active` of the orgs get
    `--rate` events (through events_queue, and reported to the poller as the writer would).
    Per mode: statements per round, the round's duration, the process's CPU seconds per wall
    second, and ClickHouse seconds per wall second (the poller's statement latencies, summed,
    over the wall time of the run)."""
    import tempfile

    from app.clickhouse import EmbeddedClickHouse
    from app.migrate import migrate_clickhouse, render_clickhouse
    from app.push.keys import make_key
    from app.push.poller import Poller, next_round

    data_dir = tempfile.mkdtemp(prefix="cp-scale-")
    root = EmbeddedClickHouse(database="default", data_dir=data_dir)
    ch = root.with_database("scale")
    migrate_clickhouse(ch, render_clickhouse(database="scale"))
    now = int(time.time())
    for second in range(now - 60, now):  # a minute of history for every org
        _scale_insert(
            ch, [r for org in range(1, args.orgs + 1) for r in _scale_rows(org, second, 20)]
        )
    specs = []
    countries = (None, "DE", "FR", "US", "BR")
    for i in range(args.keys):
        org = i % args.orgs + 1
        text, group_by = SCALE_METRICS[(i // args.orgs) % len(SCALE_METRICS)]
        country = countries[(i // (args.orgs * len(SCALE_METRICS))) % len(countries)]
        filters = [{"dimension": "country", "op": "=", "value": country}] if country else []
        filters += [{"dimension": "os", "op": "!=", "value": f"x{i}"}]  # every key distinct
        specs.append(
            make_key(text, org_id=org, database="scale", filters=filters, group_by=group_by)
        )
    assert len({s.key for s in specs}) == args.keys
    modes = {
        "per_key": {"batch": False, "poll_all_s": 0},
        "batched": {"batch": True, "poll_all_s": 0},
        "batched_skip_idle": {"batch": True, "poll_all_s": 1},
    }
    active = max(1, round(args.orgs * args.active))
    out: dict[str, Any] = {}

    async def one(mode: dict) -> dict:
        poller = Poller(ch, tick_ms=0, full_reread_s=30, **mode)
        for spec in specs:
            poller.acquire(spec)
        period = args.tick_ms / 1000
        slot, rounds, fed = None, 0, int(time.time())
        await poller.tick()  # warm: every key's first read
        q0, s0, skipped0 = poller.queries, poller.query_s, poller.skipped
        durations: list[float] = []
        cpu0 = sum(os.times()[:2])
        started = time.time()
        while time.time() - started < args.seconds:
            second = int(time.time())
            if second != fed:  # each new second: the active orgs' events, reported
                fed = second
                orgs = [1 + (second * 7 + j) % args.orgs for j in range(active)]
                _scale_insert(ch, [r for o in orgs for r in _scale_rows(o, second, args.rate)])
                poller.late.note({o: (second, second) for o in orgs})
            slot, delay = next_round(slot, time.time(), period)
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.perf_counter()
            await poller.tick()
            durations.append(time.perf_counter() - began)
            rounds += 1
            slot += 1
        wall = time.time() - started
        cpu = sum(os.times()[:2]) - cpu0
        return {
            "rounds": rounds,
            "statements_per_round": round((poller.queries - q0) / rounds, 2),
            "key_polls_skipped_per_round": round((poller.skipped - skipped0) / rounds, 2),
            "round_ms_p50": round(1000 * statistics.median(durations), 1),
            # The process's CPU (chDB runs in it) per wall second, event inserts included.
            "process_cpu_s_per_wall_s": round(cpu / wall, 3),
            # Summed statement latencies (queueing for the pool included) per wall second.
            "clickhouse_s_per_wall_s": round((poller.query_s - s0) / wall, 3),
            "ms_per_statement": round(
                1000 * (poller.query_s - s0) / max(poller.queries - q0, 1), 2
            ),
        }

    try:
        for name, mode in modes.items():
            out[name] = asyncio.run(one(mode))
    finally:
        root.close()
    return {
        "mode": "scale",
        "keys": args.keys,
        "orgs": args.orgs,
        "active_orgs_per_second": active,
        "events_per_active_org_per_s": args.rate,
        "tick_ms": args.tick_ms,
        "seconds_per_mode": args.seconds,
        "results": out,
    }


# -- (d) at the seed's scale: --scale --ingest N (real writer, zipf orgs, event → delta) -------

#: Per org: the four built-in metrics (app/querybuilder/builtin.py) and six custom ones with
#: filters and group-bys. The first custom one (`count()`, no filter) is the probe that tells
#: which of the org's events a delta already counts (event → delta).
SEED_CUSTOM = (
    ("SELECT count() AS n", [], None),
    ("SELECT count() AS n", [], ["country"]),
    (
        "SELECT sum(value) AS revenue, uniq(user_id) AS visitors",
        [{"dimension": "country", "op": "=", "value": "US"}],
        None,
    ),
    ("SELECT countIf(event = 'error') / count() AS rate", [], ["device"]),
    ("SELECT count() AS n", [{"dimension": "device", "op": "=", "value": "mobile"}], ["browser"]),
    (
        "SELECT uniq(user_id) AS distinct_users",
        [{"dimension": "os", "op": "!=", "value": "Linux"}],
        None,
    ),
)


def _seed_specs(
    keys: int, orgs: int, database: str, unique: bool = False
) -> tuple[list[Any], dict[str, int]]:
    """`keys` live keys over `orgs` orgs (keys // orgs each: the built-ins first, then the
    custom shapes, shared by every org or, with `unique`, each org's own), and {probe key: org}."""
    from app.push.keys import make_key
    from app.querybuilder.builtin import BUILTIN_METRICS

    shapes: list[tuple[str, list, list | None, int]] = [
        (m.text, [], None, m.window_seconds) for m in BUILTIN_METRICS.values()
    ]
    shapes += [(text, filters, group_by, 0) for text, filters, group_by in SEED_CUSTOM]
    per_org = max(1, keys // orgs)
    specs, probes = [], {}
    for org in range(1, orgs + 1):
        for j in range(per_org):
            text, filters, group_by, window = shapes[j % len(shapes)]
            if j >= len(shapes):  # more keys per org than shapes: distinct extra filters
                filters = [*filters, {"dimension": "path", "op": "!=", "value": f"/x{j}"}]
            if unique and j >= len(BUILTIN_METRICS):
                # Custom metrics no other org has (a value only this org filters on): they
                # cannot fan in and are read per org.
                filters = [*filters, {"dimension": "os", "op": "!=", "value": f"x{org}"}]
            spec = make_key(
                text,
                org_id=org,
                database=database,
                filters=filters,
                group_by=group_by,
                window_s=window,
            )
            specs.append(spec)
            if j == len(BUILTIN_METRICS):
                probes[spec.key] = org
    return specs, probes


def _weighted_pct(pairs: list[tuple[float, int]], p: float) -> float | None:
    """The p-th percentile of values weighted by counts (each event counts once)."""
    if not pairs:
        return None
    pairs = sorted(pairs)
    total = sum(n for _, n in pairs)
    want, seen = p / 100 * total, 0
    for value, n in pairs:
        seen += n
        if seen >= want:
            return value
    return pairs[-1][0]


def run_scale_seed(args: argparse.Namespace) -> dict:
    """(d) at the seed's scale, in process: the real EventWriter (WAL on) takes `--ingest`
    events/s (bench/ingest.py's Traffic: zipf over `--orgs` orgs) in 10 submissions a second
    stamped with the current time, its insert listener feeding the poller as the app wires it;
    `--keys` live keys (built-ins + custom metrics, `_seed_specs`) polled by the real Poller on
    its own loop (`--tick-ms`). First `ingest_only` (no poller: the baseline CPU), then each
    mode for `--seconds`. Event → delta: from `writer.submit` returning (the ack) to the
    poller emitting the org's probe-key delta whose count includes the event (in-process
    timestamps, same clock)."""
    import copy
    import tempfile
    from collections import Counter

    from app.clickhouse import EmbeddedClickHouse
    from app.config import Settings
    from app.ingest.writer import EventWriter
    from app.migrate import migrate_clickhouse, render_clickhouse
    from app.push.gcpolicy import LongLivedHeap
    from app.push.poller import Poller
    from bench.ingest import Traffic

    data_dir = tempfile.mkdtemp(prefix="cp-seed-")
    root = EmbeddedClickHouse(database="default", data_dir=data_dir)
    ch = root.with_database("scale")
    migrate_clickhouse(ch, render_clickhouse(database="scale"))
    if args.drop_projection:
        # The insert cost without rollup_1s' time-first projection (reads then scan by org).
        ch.command_sync("ALTER TABLE scale.rollup_1s DROP PROJECTION by_time")
    built = time.perf_counter()
    specs, probes = _seed_specs(args.keys, args.orgs, "scale", unique=args.unique_custom)
    compile_s = time.perf_counter() - built
    per_submit = max(1, args.ingest // 10)
    pool_n = min(max(per_submit * 20, 1000), 200_000)
    traffic = Traffic(orgs=args.orgs, seed=11)
    pool = traffic.columns(pool_n, start_ms=0, rate_per_s=max(args.ingest, 1), chunk=per_submit)
    pool_orgs = [Counter(c.org_id) for c in pool]
    settings = Settings.from_env(wal_dir=str(Path(data_dir, "wal")))
    modes = {
        "per_key": {"batch": False, "poll_all_s": 0},
        "batched": {"batch": True, "fan_in": False, "poll_all_s": 0},
        "batched_skip_idle": {"batch": True, "fan_in": False, "poll_all_s": 1},
        "fan_in": {"batch": True, "fan_in": True, "poll_all_s": 0},
        "fan_in_skip_idle": {"batch": True, "fan_in": True, "poll_all_s": 1},
    }
    wanted = [m for m in args.modes.split(",") if m and m != "none"] if args.modes else list(modes)
    out: dict[str, Any] = {}

    async def main() -> None:
        writer = EventWriter(ch, settings)
        await writer.start()
        # (org, second) → [(cumulative events acked, ack time)], and how many were delivered.
        acks: dict[tuple[int, int], list[tuple[int, float]]] = {}
        state = {"poller": None, "submitted": 0, "lat": [], "next": {}, "recording": False}

        async def feed(until: float) -> None:
            i = 0
            period = 0.1
            while time.time() < until:
                now = time.time()
                template = pool[i % len(pool)]
                counts = pool_orgs[i % len(pool)]
                i += 1
                c = copy.copy(template)
                ms = int(now * 1000)
                c.ts = [ms] * len(template)
                c.received_at = c.ts
                await writer.submit(c)
                acked = time.time()
                state["submitted"] += len(template)
                second = ms // 1000
                for org, n in counts.items():
                    entries = acks.setdefault((org, second), [])
                    entries.append(((entries[-1][0] if entries else 0) + n, acked))
                await asyncio.sleep(max(0.0, period - (time.time() - now)))

        async def emit(key: str, kind: str, text: str) -> None:
            org = probes.get(key)
            if org is None or kind != "d" or not state["recording"]:
                return
            emitted = time.time()
            for row in json.loads(text)["rows"]:
                t = row["t"]
                if isinstance(t, str):
                    import datetime as dt

                    t = int(dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())
                entries = acks.get((org, int(t)))
                if not entries:
                    continue
                done = state["next"].get((org, int(t)), 0)
                prev = entries[done - 1][0] if done else 0
                while done < len(entries) and entries[done][0] <= row["n"]:
                    cum, acked = entries[done]
                    state["lat"].append((emitted - acked, cum - prev))
                    prev = cum
                    done += 1
                state["next"][(org, int(t))] = done

        writer.insert_listeners.append(lambda ranges: _note(state, ranges))
        # Baseline: ingest alone.
        cpu0, t0 = sum(os.times()[:2]), time.time()
        await feed(t0 + args.seconds)
        wall = time.time() - t0
        out["ingest_only"] = {
            "events_per_s": round(state["submitted"] / wall),
            "process_cpu_s_per_wall_s": round((sum(os.times()[:2]) - cpu0) / wall, 3),
            "load_average": loadavg(),
        }
        for name in wanted:
            poller = Poller(
                ch,
                tick_ms=args.tick_ms,
                # As the app sets it: none where this process reports every insert (the
                # skip-idle modes: app/push/hub.py), the 30 s net where nothing is reported.
                full_reread_s=(
                    args.full_reread_s
                    if args.full_reread_s is not None
                    else 0
                    if modes[name].get("poll_all_s")
                    else 30
                ),
                emit=emit,
                lag_source=writer.oldest_pending_age_s,
                # As the hub passes it (app/push/gcpolicy.py): keys frozen out of full scans.
                heap=LongLivedHeap() if args.gc_freeze else None,
                **modes[name],
            )
            state["poller"] = poller
            for spec in specs:
                poller.acquire(spec)
            durations: list[float] = []
            tick = poller.tick

            async def timed(now: float | None = None, tick=tick, durations=durations) -> Any:
                began = time.perf_counter()
                result = await tick(now)
                durations.append(time.perf_counter() - began)
                return result

            poller.tick = timed
            warm_began = time.perf_counter()
            warm_done = True
            feeder = asyncio.create_task(feed(time.time() + args.warm_timeout + args.seconds + 5))
            try:
                await asyncio.wait_for(tick(), args.warm_timeout)  # every key's first read
            except TimeoutError:
                warm_done = False
            warm_s = time.perf_counter() - warm_began
            warm_statements = poller.queries
            durations.clear()
            state["lat"], state["next"], state["recording"] = [], {}, True
            acks.clear()
            q0, s0, skipped0, rows0 = poller.queries, poller.query_s, poller.skipped, poller.rows
            submitted0 = state["submitted"]
            load_before = loadavg()
            cpu0, t0 = sum(os.times()[:2]), time.time()
            poller.start()
            await asyncio.sleep(args.seconds)
            wall = time.time() - t0
            cpu = sum(os.times()[:2]) - cpu0
            rounds = len(durations)
            queries = poller.queries - q0
            window_acks = sum(e[-1][0] for e in acks.values() if e)
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            stop = asyncio.create_task(poller.stop())
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(stop), args.warm_timeout)
            state["recording"] = False
            lat = state["lat"]
            delivered = sum(n for _, n in lat)
            base = out["ingest_only"]["process_cpu_s_per_wall_s"]
            out[name] = {
                "warm_round_s": round(warm_s, 1),
                "warm_round_finished": warm_done,
                "warm_round_statements": warm_statements,
                "rounds_in_window": rounds,
                "rounds_per_s": round(rounds / wall, 2),
                "statements_per_round": round(queries / rounds, 1) if rounds else None,
                "statements_per_s": round(queries / wall, 1),
                "key_rows_per_round": round((poller.rows - rows0) / max(rounds, 1)),
                "key_polls_skipped_per_round": round(
                    (poller.skipped - skipped0) / max(rounds, 1), 1
                ),
                "round_ms": {
                    "p50": round(1000 * statistics.median(durations), 1) if durations else None,
                    "p99": round(1000 * _pct(durations, 99), 1) if durations else None,
                },
                "events_per_s": round((state["submitted"] - submitted0) / wall),
                "process_cpu_s_per_wall_s": round(cpu / wall, 3),
                # Polling's share: the process's CPU over the ingest-only baseline.
                "polling_cpu_s_per_wall_s": round(cpu / wall - base, 3),
                "statement_latency_s_per_wall_s": round((poller.query_s - s0) / wall, 2),
                "event_to_delta_ms": {
                    "p50": _ms(_weighted_pct(lat, 50)),
                    "p99": _ms(_weighted_pct(lat, 99)),
                    "max": _ms(max((x for x, _ in lat), default=None)),
                },
                # Events acked in the window whose delta was emitted before it ended.
                "events_delivered_fraction": round(delivered / max(window_acks, 1), 3),
                "load_average_before": load_before,
                "load_average_after": loadavg(),
            }
            print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
            state["poller"] = None
        await writer.stop()

    try:
        asyncio.run(main())
    finally:
        root.close()
    return {
        "mode": "scale-seed",
        "keys": len(specs),
        "batchable_keys": sum(1 for s in specs if s.batchable),
        "orgs": args.orgs,
        "ingest_events_per_s_target": args.ingest,
        "tick_ms": args.tick_ms,
        "seconds_per_mode": args.seconds,
        "key_compile_s": round(compile_s, 1),
        "results": out,
    }


def _note(state: dict, ranges: dict[int, tuple[int, int]]) -> None:
    """The writer's insert listener: report the inserted seconds to the running poller."""
    if state["poller"] is not None:
        state["poller"].late.note(ranges)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-fanout", help=argparse.SUPPRESS)
    parser.add_argument("--fanout-client", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="run (b) connections/memory/lag at 1 update/s and (c) fan-out msgs/s instead of (a)",
    )
    parser.add_argument(
        "--transport",
        choices=("asgi", "dedicated"),
        default="asgi",
        help="asgi: the Litestar/uvicorn route; dedicated: CLICKPULSE_PUSH_PORT (websockets)",
    )
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="(d) the poller's cost: --keys live keys over --orgs orgs, per-key vs batched",
    )
    parser.add_argument("--orgs", type=int, default=10, help="(d) orgs the keys spread over")
    parser.add_argument(
        "--active", type=float, default=0.2, help="(d) share of orgs with events each second"
    )
    parser.add_argument("--rate", type=int, default=50, help="(d) events per active org per second")
    parser.add_argument(
        "--ingest",
        type=int,
        default=0,
        help="(d) > 0: the seed-scale run — this many events/s through the real writer",
    )
    parser.add_argument(
        "--modes",
        default="",
        help="(d) --ingest: comma-separated modes to run ('none': ingest only)",
    )
    parser.add_argument(
        "--unique-custom",
        action="store_true",
        help="(d) --ingest: each org's custom metrics are its own (none shared with other orgs)",
    )
    parser.add_argument(
        "--full-reread-s",
        type=int,
        default=None,
        help="(d) --ingest: the poller's whole-range re-read period (default as the app: none "
        "where this process reports its inserts, the skip-idle modes; 30 s otherwise; 600 is "
        "the app's period where reports cross nodes over Redis)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="(d) --ingest: the poller without the hub's collection policy (keys stay in "
        "full GC scans; the app's CLICKPULSE_PUSH_GC_FREEZE=0)",
    )
    parser.add_argument(
        "--drop-projection",
        action="store_true",
        help="(d) --ingest: drop rollup_1s' by_time projection first (its share of the insert cost)",
    )
    parser.add_argument(
        "--warm-timeout", type=float, default=60, help="(d) --ingest: bound on a mode's first round"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not taskset the cores")
    # The poller (both modes).
    parser.add_argument("--max-phases", type=int, default=8, help="poller phases per round")
    parser.add_argument("--spread-ms", type=int, default=0, help="poller: pace phases over this")
    parser.add_argument(
        "--unaligned",
        action="store_true",
        help="rounds every tick from whenever the poller started (the old schedule)",
    )
    # (a)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=30)
    # (b)/(c)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--source", choices=("poller", "synthetic"), default="poller")
    parser.add_argument("--tick-ms", type=int, default=250, help="(b)/(c): the poller's tick")
    parser.add_argument("--burst-hz", type=float, default=10.0, help="synthetic (c): updates/s")
    parser.add_argument(
        "--phases",
        type=int,
        default=1,
        help="synthetic: spread each period's key publishes over this many equal slots",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() in the server once every client is subscribed (GC experiment)",
    )
    parser.add_argument("--ws", default="auto", help="uvicorn's WS implementation")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="print where idle connections' memory goes"
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    elif args.serve_fanout:
        serve_fanout(args.serve_fanout)
    elif args.fanout_client:
        fanout_client(args.fanout_client)
    else:
        started = time.time()
        if args.scale:
            result = run_scale_seed(args) if args.ingest else run_scale(args)
        else:
            result = run_fanout(args) if args.fanout else run_latency(args)
        result["command"] = " ".join(sys.argv[1:])
        result["wall_s"] = math.ceil(time.time() - started)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
