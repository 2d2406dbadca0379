"""The `clickpulse` command: migrate, serve, demo, create-org, bridge, sql."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from app.config import Settings
from app.credentials import create_api_key, create_org, create_user_token, hash_secret

log = logging.getLogger("clickpulse")
# The demo's mean rate, live and history alike (so the history meets the present without a
# step): 30 days at this rate is ~1.2 million events, backfilled in ~25 s (docs/benchmarks.md).
DEMO_EVENTS_PER_S = 0.5


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "host", None):
        overrides["host"] = args.host
    return Settings.from_env(**overrides)


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.db import resolve_database_url
    from app.migrate import MigrationError
    from app.runtime import migrate_all, open_clickhouse

    settings = _settings(args)
    try:
        reports = migrate_all(settings, open_clickhouse(settings), resolve_database_url(settings))
    except MigrationError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    for name, report in reports.items():
        for migration in report.applied:
            print(f"{name}: applied {migration}")
        print(f"{name}: {len(report.applied)} applied, {len(report.skipped)} already applied")
    return 0


async def _ensure_demo_org(database_url: str, data_dir: str) -> dict:
    """The demo org and its credentials, created once and kept in the data dir across restarts."""
    path = Path(data_dir) / "demo-credentials.json"
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        if path.exists():
            saved = json.loads(path.read_text())
            row = await (
                await conn.execute(
                    "SELECT 1 FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                    (hash_secret(saved["api_key"]),),
                )
            ).fetchone()
            if row:
                return saved
        org_id = await create_org(conn, "Demo Shop")
        saved = {
            "org_id": org_id,
            "api_key": await create_api_key(conn, org_id, "demo traffic"),
            "user_token": await create_user_token(conn, org_id, "demo@clickpulse.local", "admin"),
        }
    path.write_text(json.dumps(saved, indent=2))
    os.chmod(path, 0o600)
    return saved


def _server_class():
    """uvicorn's Server, except that it does not re-raise the stop signal once stopped.

    uvicorn stops gracefully on SIGINT/SIGTERM (the lifespan stops every part, the writer
    inserts what it holds) and then raises the signal again for its default handler: for
    SIGTERM that kills the process (exit -15) before `atexit` stops the embedded PostgreSQL.
    Here the signal only asks for the stop; the process then exits 0 through the normal path.
    """
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {
                sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


async def _serve(
    settings: Settings, *, demo: bool, events_per_s: float, history_days: float = 0
) -> None:
    import uvicorn

    from app.clickhouse import close_embedded
    from app.observability import logformat
    from app.runtime import build_services
    from app.server import create_app

    if demo:
        print(f"ClickPulse demo: starting on {os.path.abspath(settings.data_dir)} …", flush=True)
    services = build_services(settings)
    credentials = None
    if demo:
        credentials = await _ensure_demo_org(services.database_url, settings.data_dir)
    server = _server_class()(
        uvicorn.Config(
            create_app(services),
            host=settings.host,
            port=settings.port,
            # uvicorn's loggers in the process's format (CLICKPULSE_LOG_FORMAT).
            log_config=logformat.uvicorn_log_config(settings.log_format),
            # The demo's terminal is for the person trying it: no line per request.
            log_level="warning" if demo else "info",
            access_log=not demo,
            # DESIGN.md: compression roughly halves push throughput and triples memory per
            # connection; live deltas are small JSON, so the push tier runs without it.
            ws_per_message_deflate=False,
        )
    )
    serving = asyncio.create_task(server.serve())
    traffic = None
    if credentials:
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            traffic = await _start_demo(
                services,
                settings,
                credentials,
                events_per_s=events_per_s,
                history_days=history_days,
            )
            asyncio.create_task(_cancel_on_exit(server, traffic))
    try:
        await serving
    finally:
        if traffic:
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
        # The lifespan has stopped every part; release ClickHouse last.
        services.ch.close()
        close_embedded()


async def _cancel_on_exit(server: Any, task: asyncio.Task) -> None:
    """Stop the demo traffic as soon as the server starts stopping (not after: its requests
    would fail and log while the server shuts down)."""
    while not server.should_exit and not task.done():
        await asyncio.sleep(0.2)
    task.cancel()


async def _start_demo(
    services: Any,
    settings: Settings,
    credentials: dict,
    *,
    events_per_s: float,
    history_days: float,
) -> asyncio.Task:
    """Backfill the history once per data dir, start the live traffic, and print what to open
    (the login URL last, on a line of its own)."""
    from app.demo.backfill import SHOPPERS, Moments, backfill, rate_at
    from app.demo.traffic import EVENTS_SENT, run_traffic

    path = Path(settings.data_dir) / "demo-credentials.json"
    saved = credentials.get("history")
    now_s = int(time.time())
    moments = None
    if saved and saved.get("launch") is not None:
        moments = Moments(launch_s=saved["launch"], incident_s=saved["incident"])
    elif not saved and history_days >= 10:
        moments = Moments.before(now_s)  # what backfill(end_s=now_s) places
    # Live traffic first: the history ends where it begins, with no hole while backfilling.
    base = f"http://{settings.host}:{settings.port}"
    traffic = asyncio.create_task(
        run_traffic(
            base,
            credentials["api_key"],
            events_per_s,
            rate=lambda t: rate_at(t, events_per_s, moments),
            users=SHOPPERS,
        )
    )
    if history_days > 0 and not saved:
        print(
            f"Backfilling {history_days:g} days of history through the ingest writer …", flush=True
        )
        done = await backfill(
            services.writer,
            credentials["org_id"],
            days=history_days,
            base_per_s=events_per_s,
            end_s=now_s,
        )
        credentials["history"] = {
            "events": done["events"],
            "from": done["from"],
            "to": done["to"],
            "launch": moments.launch_s if moments else None,
            "incident": moments.incident_s if moments else None,
        }
        path.write_text(json.dumps(credentials, indent=2))
        print(
            f"  {done['events']:,} events in {done['seconds']:.1f} s (every rollup filled)",
            flush=True,
        )
    elif saved:
        print(f"History: {saved['events']:,} events, kept from the first run.", flush=True)
    key = credentials["api_key"]
    print(
        f"Live traffic: about {rate_at(time.time(), events_per_s, moments):.1f} events/s now "
        f"(it follows the time of day), from {SHOPPERS:,} simulated shoppers:\n"
        f"  {EVENTS_SENT}\n"
        f"API docs:    {base}/schema\n"
        f"Ingest key:  {key}\n"
        f"Send one:    curl -H 'Authorization: Bearer {key}' "
        f'-d \'[{{"event":"pageview","path":"/"}}]\' {base}/v1/events\n'
        f"Data dir:    {os.path.abspath(settings.data_dir)} (kept across restarts)\n"
        "Press Ctrl-C to stop.\n\n"
        "Open ClickPulse (signs you in as the demo admin):\n\n"
        f"    {base}/login?token={credentials['user_token']}\n",
        flush=True,
    )
    return traffic


def _run_until_stopped(coro) -> int:
    # SIGINT/SIGTERM stop the server (lifespan: the writer flushes first) and `_serve` returns;
    # a failed startup raises SystemExit (non-zero) out of here. A Ctrl-C before the server
    # captures signals (while migrating) is a KeyboardInterrupt: nothing is running yet.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    print("ClickPulse stopped.", flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_until_stopped(_serve(_settings(args), demo=False, events_per_s=0))


def cmd_demo(args: argparse.Namespace) -> int:
    # What is worth reading is printed; library INFO lines (pgserver's initdb output,
    # migrations, uvicorn's startup) would bury the login URL.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("httpx", "httpcore", "pgserver"):  # set to INFO by their own packages
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    return _run_until_stopped(
        _serve(
            _settings(args),
            demo=True,
            events_per_s=args.events_per_s,
            history_days=args.history_days,
        )
    )


def cmd_create_org(args: argparse.Namespace) -> int:
    from app.db import migrate, resolve_database_url

    settings = _settings(args)
    url = resolve_database_url(settings)
    migrate(url)

    async def create() -> dict:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            org_id = await create_org(conn, args.name)
            return {
                "org_id": org_id,
                "api_key": await create_api_key(conn, org_id, "created by CLI"),
                "user_token": await create_user_token(conn, org_id, args.admin_email, "admin"),
            }

    print(json.dumps(asyncio.run(create()), indent=2))
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    """Run the Kafka → chDB bridge on the data dir until SIGTERM/SIGINT (docs/ingest.md)."""
    import signal

    from app.clickhouse import close_embedded
    from app.ingest.kafka import CRASH_AFTER_INSERT_ENV, KafkaBridge
    from app.migrate import migrate_clickhouse, render_clickhouse
    from app.runtime import open_clickhouse

    settings = _settings(args)
    if not settings.kafka_brokers:
        print("clickpulse bridge needs KAFKA_BOOTSTRAP (the broker list)", file=sys.stderr)
        return 2
    if settings.clickhouse_url:
        print(
            "clickpulse bridge is for embedded chDB; a ClickHouse server consumes the topic "
            "with its Kafka engine",
            file=sys.stderr,
        )
        return 2
    ch = open_clickhouse(settings)
    try:
        # The embedded rendering (Null events_queue); PostgreSQL is not needed here.
        migrate_clickhouse(
            ch,
            render_clickhouse(database=ch.database, events_ttl_days=settings.events_ttl_days),
        )
        # Tests only: exit right after the k-th INSERT, before its commit (the crash window).
        crash_after = int(os.environ.get(CRASH_AFTER_INSERT_ENV) or 0)
        bridge = KafkaBridge(ch, settings, crash_after_insert=crash_after)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: bridge.request_stop())
        bridge.run()
        log.info(
            "bridge stopped: %d rows in %d inserts, %d commits, %d replayed ranges",
            bridge.rows_written,
            bridge.inserts,
            bridge.commits,
            bridge.replayed_ranges,
        )
    finally:
        ch.close()
        close_embedded()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `clickpulse` console script."""
    parser = argparse.ArgumentParser(prog="clickpulse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir", help="data directory (default: $CLICKPULSE_DATA_DIR or ./data)"
        )
        return p

    common(
        sub.add_parser("migrate", help="apply ClickHouse and PostgreSQL migrations")
    ).set_defaults(func=cmd_migrate)
    for name, func, helptext in [
        ("serve", cmd_serve, "run the web server"),
        ("demo", cmd_demo, "run everything embedded, with a demo org and live traffic"),
    ]:
        p = common(sub.add_parser(name, help=helptext))
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        if name == "demo":
            p.add_argument(
                "--events-per-s",
                type=float,
                default=DEMO_EVENTS_PER_S,
                help="mean traffic rate (live and history), events/s",
            )
            p.add_argument(
                "--history-days",
                type=float,
                default=30,
                help="days of history written on the first run (0 = none)",
            )
        p.set_defaults(func=func)
    p = common(
        sub.add_parser("create-org", help="create an org with an ingest key and an admin token")
    )
    p.add_argument("name")
    p.add_argument("--admin-email", default="admin@example.com")
    p.set_defaults(func=cmd_create_org)
    common(
        sub.add_parser(
            "bridge",
            help="consume the Kafka events topic into embedded chDB (exactly once) until SIGTERM",
        )
    ).set_defaults(func=cmd_bridge)

    from app.analyst_access.cli import add_parser as add_analysts_parser

    add_analysts_parser(sub, common)

    from app.sql_command import add_parser as add_sql_parser

    add_sql_parser(sub, common)

    from app.site_command import add_parser as add_sites_parser

    add_sites_parser(sub, common)

    args = parser.parse_args(argv)
    from app.config import LOG_FORMATS, log_format_from_env
    from app.observability import logformat

    log_format = log_format_from_env()
    if log_format not in LOG_FORMATS:
        parser.error(f"CLICKPULSE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    # Redaction first, before anything logs (the server installs it too), then the format.
    logformat.configure(log_format)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
