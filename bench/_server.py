"""What the benchmarks share to start the app under test on loopback.

* `pg_schema(prefix)`: a throwaway PostgreSQL schema (created, then dropped with everything in
  it) in `DATABASE_URL` (default the test server), and the URL that selects it;
* `work_dir(prefix)`: a scratch directory (the server's chDB data, ~60 MB) removed on exit;
* `free_port()` / `port_open()`;
* `server_process(argv, ready=...)`: the server subprocess, waited for (bounded) and stopped;
* `creds_ready(path, port)`: the usual readiness test — the server wrote its credentials file
  (it creates its org after migrating) and its port accepts connections;
* `create_org_credentials(database_url, ...)`: run in the server process — an org, its ingest
  key and a user token, as JSON-ready dict.

Each benchmark's server process builds `Settings` itself (they differ per bench) and writes the
credentials file once its org exists; the bench process starts it with `server_process`.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def database_url() -> str:
    """The PostgreSQL server the benchmarks use (`DATABASE_URL`, default the test server)."""
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def free_port(low: int | None = None) -> int:
    """A free TCP port on 127.0.0.1; with `low`, one in [low, 32000) — below the ephemeral
    range, for servers whose many client sockets take ephemeral ports."""
    for _ in range(100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", random.randrange(low, 32000) if low else 0))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise SystemExit("no free port")


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def app_healthy(port: int) -> bool:
    """True when the app on 127.0.0.1:`port` answers /healthz with 200."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def schema_url(base: str, schema: str) -> str:
    """`base` with the PostgreSQL search_path set to `schema`."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def work_dir(prefix: str) -> Iterator[str]:
    """A fresh directory under the system temp dir, removed with its content on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as path:
        yield path


@contextmanager
def pg_schema(prefix: str) -> Iterator[tuple[str, str]]:
    """A fresh schema `<prefix>_<random>`; yields (server URL, URL selecting the schema) and
    drops the schema with everything in it on exit."""
    import psycopg

    base = database_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield base, schema_url(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def creds_ready(path: str | Path, port: int) -> Callable[[], bool]:
    """Readiness: the credentials file exists and `port` accepts connections."""
    return lambda: os.path.exists(path) and port_open(port)


@contextmanager
def server_process(
    argv: list[str], *, ready: Callable[[], bool], timeout_s: float = 120.0, **popen: Any
) -> Iterator[subprocess.Popen]:
    """Start `argv`, wait until `ready()` (SystemExit if the process exits first or after
    `timeout_s`), yield it; terminate it on exit (killed if it does not stop within 30 s)."""
    server = subprocess.Popen(argv, **popen)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if server.poll() is not None:
                raise SystemExit(f"the server exited during startup (code {server.returncode})")
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not start within {timeout_s:.0f} s")
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


async def create_org_credentials(
    database_url: str,
    name: str,
    *,
    email: str,
    role: str = "viewer",
    api_key: bool = True,
) -> dict[str, Any]:
    """In the server process, after migrating: an org, its ingest key (unless `api_key` is
    False) and a `role` user token; with the server's pid (for /proc readings)."""
    import psycopg
    from psycopg.rows import dict_row

    from app.credentials import create_api_key, create_org, create_user_token

    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        org_id = await create_org(conn, name)
        creds: dict[str, Any] = {"org_id": org_id, "pid": os.getpid()}
        if api_key:
            creds["api_key"] = await create_api_key(conn, org_id, "bench")
        creds["token"] = await create_user_token(conn, org_id, email, role)
    return creds
