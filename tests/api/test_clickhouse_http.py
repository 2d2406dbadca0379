"""The ClickHouse HTTP interface with the real `clickhouse-connect` client, unmodified.

The app runs with `clickhouse_http_port=0` (its own listener on a free port, started by the
lifespan); the client runs on a thread (`asyncio.to_thread`) while the test's event loop
serves it. Real chDB, PostgreSQL (tokens, roles, limits); events go in through events_queue.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import clickhouse_connect
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError
from litestar.testing import AsyncTestClient

from app.querybuilder.catalog import ANALYST_TABLES, low_cardinality_columns
from tests.api.conftest import build_services, make_app
from tests.api.test_sql import OTHER_MARKER, _analyst, _seed
from tests.pipeline.events import queue_batch
from tests.querybuilder.test_analyst_sql import REFUSED
from tests.querybuilder.test_oracles import (
    _FAILS_ON_MARKER,
    _GUESS_PLACEMENTS,
    _GUESSES,
    _PLACEMENTS,
    MARKER,
)

EXPECTED_PATHS = [("/p0", 14), ("/p1", 13), ("/p2", 13)]  # 40 events of _seed, path i % 3


@pytest.fixture
async def served(ch, pg_url, app_settings):
    """(REST client, services, port of the ClickHouse interface)."""
    services = build_services(ch, pg_url, base=app_settings, clickhouse_http_port=0)
    async with AsyncTestClient(app=make_app(services)) as api:
        yield api, services, services.clickhouse_http.port


@pytest.fixture
async def seeded(ch, org, other_org):
    _seed(ch, org.id, 40)
    _seed(ch, other_org.id, 25, path_of=lambda i: OTHER_MARKER, value=7777.0)
    return org, other_org


def _password(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def _client(port: int, password: str, **kwargs: Any):
    return await asyncio.to_thread(
        clickhouse_connect.get_client,
        host="127.0.0.1",
        port=port,
        username="jane.doe",
        password=password,
        **kwargs,
    )


async def _call(fn, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _refused(fn, *args, **kwargs) -> DatabaseError:
    with pytest.raises(DatabaseError) as info:
        await _call(fn, *args, **kwargs)
    return info.value


def _http(port: int, path: str, body: bytes | None = None, headers=None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read()


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


async def test_connects_and_answers_what_clickhouse_connect_asks_on_connect(
    served, org, pg_url, ch
):
    _, _, port = served
    client = await _client(
        port, _password(await _analyst(pg_url, org.id)), database=ch.database, session_id="s-7"
    )
    version, timezone = ch.query_sync("SELECT version(), timezone()").rows[0]
    assert client.server_version == version
    assert str(client.server_tz) in (timezone, "UTC")
    # The settings it discovered: every one read-only, so it sends none.
    assert client.server_settings["readonly"].value == "1"
    assert all(s.readonly == 1 for s in client.server_settings.values())
    assert client.protocol_version == 0  # the Native probe answered without block info
    assert await _call(client.ping) is True
    assert await _call(client.command, "SELECT 1") == 1
    assert await _call(client.command, "SELECT version(), timezone()") == [version, timezone]
    status, _, body = await _call(_http, port, "/ping")
    assert (status, body) == (200, b"Ok.\n")


async def test_query_query_df_query_arrow_and_command_return_the_orgs_exact_values(
    served, seeded, pg_url
):
    org, other = seeded
    _, _, port = served
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    sql = "SELECT path, count() AS n FROM events GROUP BY path ORDER BY path"

    result = await _call(client.query, sql)
    assert result.column_names == ("path", "n")
    assert result.result_rows == [list(row) for row in EXPECTED_PATHS] or result.result_rows == [
        tuple(row) for row in EXPECTED_PATHS
    ]
    assert result.summary["read_rows"] == "40"  # the org's own rows, what it is charged
    df = await _call(client.query_df, sql)
    assert list(zip(df["path"], df["n"], strict=True)) == EXPECTED_PATHS
    table = await _call(client.query_arrow, sql)
    assert list(zip(*table.to_pydict().values(), strict=True)) == EXPECTED_PATHS
    assert await _call(client.command, "SELECT count() FROM events") == 40
    assert await _call(client.command, "SELECT sum(value) FROM events") == 39  # 0+1+2 per 3

    # Client-side binding (%s, %(name)s) sends literals: it works; server-side `{p:String}`
    # binding is refused with our message (no query parameters).
    bound = await _call(
        client.query, "SELECT count() FROM events WHERE path = %(p)s", parameters={"p": "/p1"}
    )
    assert bound.result_rows == [(13,)]
    error = await _refused(
        client.query, "SELECT count() FROM events WHERE path = {p:String}", parameters={"p": "/p1"}
    )
    assert error.code == 456 and "query parameters ({name:Type}) are not supported" in str(error)

    theirs = await _client(port, _password(await _analyst(pg_url, other.id)))
    assert (await _call(theirs.query, sql)).result_rows == [(OTHER_MARKER, 25)]
    assert await _call(theirs.command, "SELECT count() FROM events") == 25


async def test_formats_are_written_by_clickhouse(served, seeded, pg_url):
    org, _ = seeded
    _, _, port = served
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    sql = "SELECT path, count() AS n FROM events GROUP BY path ORDER BY path"
    tsv = await _call(client.raw_query, sql, fmt="TSVWithNamesAndTypes")
    assert tsv.decode().splitlines() == ["path\tn", "String\tUInt64"] + [
        f"{p}\t{n}" for p, n in EXPECTED_PATHS
    ]
    data = json.loads(await _call(client.raw_query, sql, fmt="JSON"))
    assert [(r["path"], r["n"]) for r in data["data"]] == EXPECTED_PATHS
    assert (await _call(client.raw_query, sql, fmt="CSV")).decode().splitlines() == [
        f'"{p}",{n}' for p, n in EXPECTED_PATHS
    ]
    parquet = pq.read_table(io.BytesIO(await _call(client.raw_query, sql, fmt="Parquet")))
    paths = [p.decode() if isinstance(p, bytes) else p for p in parquet.column("path").to_pylist()]
    assert list(zip(paths, parquet.column("n").to_pylist(), strict=True)) == EXPECTED_PATHS
    rb = await _call(client.raw_query, "SELECT 7 AS x", fmt="RowBinaryWithNamesAndTypes")
    assert rb == b"\x01\x01x\x05UInt8\x07"
    # The format from default_format, and ClickHouse's headers on the answer.
    token = _password(await _analyst(pg_url, org.id))
    auth = {"Authorization": "Basic " + base64.b64encode(f"jane:{token}".encode()).decode()}
    status, headers, body = await _call(
        _http, port, "/?default_format=JSONEachRow&query_id=q-1&session_id=s-1",
        b"SELECT count() AS n FROM events", auth,
    )  # fmt: skip
    assert (status, body) == (200, b'{"n":40}\n')
    assert headers["x-clickhouse-format"] == "JSONEachRow"
    assert headers["x-clickhouse-query-id"] == "q-1"
    assert headers["x-clickhouse-server-display-name"] == "clickpulse"
    assert '"read_rows":"40"' in headers["x-clickhouse-summary"]
    assert headers["x-clickhouse-timezone"]
    # The query in the URL (GET), the password as X-ClickHouse-Key, TSV by default.
    status, headers, body = await _call(
        _http, port, "/?query=SELECT%20count()%20FROM%20events", None,
        {"X-ClickHouse-User": "jane", "X-ClickHouse-Key": token},
    )  # fmt: skip
    assert (status, body, headers["x-clickhouse-format"]) == (200, b"40\n", "TabSeparated")


async def test_tables_are_listed_from_the_catalog_only(served, seeded, pg_url, api_services, ch):
    org, _ = seeded
    _, services, port = served
    database = services.ch.database
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    shown = sorted(ANALYST_TABLES)
    assert [r[0] for r in (await _call(client.query, "SHOW TABLES")).result_rows] == shown
    assert (await _call(client.query, "SHOW DATABASES")).result_rows == [(database,)]
    listed = await _call(
        client.query,
        "SELECT name, engine, total_rows FROM system.tables "
        "WHERE database = currentDatabase() ORDER BY name",
    )
    assert [r[0] for r in listed.result_rows] == shown
    assert {r[2] for r in listed.result_rows} == {None}  # never another org's row counts
    like = await _call(client.query, "SHOW TABLES LIKE 'rollup_detail%'")
    assert [r[0] for r in like.result_rows] == sorted(
        t for t in shown if "detail_" in t and t.startswith("rollup")
    )
    # DESCRIBE and system.columns: the columns an analyst's SELECT * returns, with their types.
    real = ch.query_sync(f"DESCRIBE TABLE {ch.table('events')}").dicts()
    plain = set(low_cardinality_columns()["events"])
    expected = [(c["name"], "String" if c["name"] in plain else c["type"]) for c in real]
    described = await _call(client.query, "DESCRIBE TABLE events")
    assert [(r[0], r[1]) for r in described.result_rows] == expected
    columns = await _call(
        client.query,
        "SELECT name, type FROM system.columns WHERE table = 'events' ORDER BY position",
    )
    assert [tuple(r) for r in columns.result_rows] == expected
    star = await _call(client.query, "SELECT * FROM events LIMIT 1")
    assert list(star.column_names) == [name for name, _ in expected]
    # Tables that are not ours are neither listed nor described.
    assert "events_queue" not in shown
    error = await _refused(client.query, "DESCRIBE TABLE events_queue")
    assert error.code == 60 and "unknown table 'events_queue'" in str(error)
    error = await _refused(client.query, "SELECT * FROM system.processes")
    assert error.code == 60 and "system.processes is not one of your tables" in str(error)
    error = await _refused(client.query, "SHOW GRANTS")
    assert error.code == 164


async def test_refused_statements_raise_database_error_with_our_message(served, org, pg_url):
    _, _, port = served
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    error = await _refused(client.command, "DROP TABLE events")
    assert error.code == 164 and "only SELECT queries can run here, not DROP" in str(error)
    error = await _refused(client.command, "INSERT INTO events (path) VALUES ('x')")
    assert error.code == 164
    # clickhouse-connect's insert: DESCRIBE works, the INSERT (Native data in the body) not.
    error = await _refused(client.insert, "events", [["/x"]], column_names=["path"])
    assert error.code == 164 and "only SELECT queries can run here" in str(error)
    error = await _refused(client.query, "SELECT nosuchcolumn FROM events")
    assert error.code == 47 and "unknown column or alias (at 'nosuchcolumn')" in str(error)
    error = await _refused(client.query, "SELECT dictGet('d', 'x', 1)")
    assert error.code == 46 and "dictGet" in str(error)
    error = await _refused(client.query, "SELECT 1; SELECT 2")
    assert error.code == 62
    # A setting changed from what system.settings shows: refused like a read-only user.
    token = _password(await _analyst(pg_url, org.id))
    auth = {"X-ClickHouse-Key": token}
    status, headers, body = await _call(_http, port, "/?max_result_rows=5", b"SELECT 1", auth)
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "164")
    assert body.startswith(b"Code: 164. DB::Exception: Cannot modify 'max_result_rows'")
    status, _, body = await _call(_http, port, "/?database=system", b"SELECT 1", auth)
    assert status == 404 and body.startswith(b"Code: 81.")
    status, _, body = await _call(_http, port, "/", b"SELECT 1 FORMAT XML", auth)
    assert status == 400 and body.startswith(b"Code: 73.")
    # A query id that is not a plain id is not echoed (it would be a header injection).
    status, headers, body = await _call(
        _http, port, "/?query_id=a%0D%0AX-Evil:%201", b"SELECT 1", auth
    )
    assert status == 200 and body == b"1\n" and "x-evil" not in headers
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-clickhouse-query-id"])
    form = {**auth, "Content-Type": "multipart/form-data; boundary=x"}
    status, _, body = await _call(_http, port, "/", b"--x--", form)
    assert status == 400 and body.startswith(b"Code: 456.")
    # Everything else answers in ClickHouse's convention too; a GET without query is "Ok.".
    status, headers, body = await _call(_http, port, "/play", None, auth)
    assert status == 404 and body.startswith(b"Code: ") and "x-clickhouse-exception-code" in headers
    status, _, body = await _call(_http, port, "/", None, {})
    assert (status, body) == (200, b"Ok.\n")


async def test_wrong_or_missing_token_and_wrong_role_are_refused(served, org, pg_url):
    _, services, port = served
    with pytest.raises(DatabaseError) as info:
        await _client(port, "cpt_" + "x" * 43)
    assert info.value.code == 516 and "Authentication failed" in str(info.value)
    with pytest.raises(DatabaseError) as info:
        await _client(port, org.api_key)  # an ingest key is no analyst token
    assert info.value.code == 516
    with pytest.raises(DatabaseError) as info:
        await _client(port, _password(org.h("viewer")))
    assert info.value.code == 497 and "analyst, admin" in str(info.value)
    status, headers, body = await _call(_http, port, "/", b"SELECT 1")
    assert status == 401 and headers["x-clickhouse-exception-code"] == "194"
    admin = await _client(port, _password(org.h("admin")))
    assert await _call(admin.command, "SELECT 2") == 2
    # Guessing tokens is throttled like the API (CLICKPULSE_AUTH_FAIL_MAX per address).
    wrong = {"X-ClickHouse-Key": "cpt_" + "y" * 43}
    for _ in range(services.settings.auth_fail_max):
        await _call(_http, port, "/", b"SELECT 1", wrong)
    status, headers, body = await _call(_http, port, "/", b"SELECT 1", wrong)
    assert (status, headers["x-clickhouse-exception-code"]) == (429, "516")
    assert b"too many failed authentication attempts" in body and int(headers["retry-after"]) >= 1


async def test_the_orgs_quota_applies(served, seeded, pg_url):
    org, _ = seeded
    api, _, port = served
    r = await api.put("/org/limits", json={"rows_per_minute": 30}, headers=org.h("admin"))
    assert r.status_code == 200
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    error = await _refused(client.query, "SELECT sum(value) FROM events")
    assert "the query reads 40 of your org's rows; the budget is 30 a minute" in str(error)
    assert await _call(client.command, "SELECT 1") == 1


async def test_hostile_sql_through_every_client_method_never_shows_another_org(
    served, seeded, pg_url, ch
):
    org, _ = seeded
    _, services, port = served
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    database = services.ch.database
    extra = [
        "SELECT count() AS n FROM events WHERE path = '/other-org-secret'",
        "SELECT * FROM events ORDER BY ts",
        "SELECT path FROM events WHERE user_id IN (SELECT user_id FROM events WHERE value >= 7777)",
        "SELECT groupArray(path) AS p FROM events",
        "SELECT count() FROM events WHERE path = '1'' OR org_id = 2 --'",
        "SELECT * FROM system.tables",
        "SELECT * FROM system.columns",
        "SELECT name FROM system.tables WHERE name IN (SELECT path FROM events)",
        f"SELECT * FROM {database}.events",
        "SHOW TABLES FROM system",
        "DESCRIBE TABLE system.users",
        "SELECT * FROM events SETTINGS additional_table_filters = {'events': '1'}",
    ]
    corpus = [s.replace("{db}", database) for s, _ in REFUSED] + extra
    # The whole corpus through query (Native) and raw_query (TSV); every third statement and
    # the extra ones also through query_arrow, command and query_df (same path, slower).
    every = [client.query, client.raw_query]
    some = [client.query_arrow, client.command, client.query_df]
    answered = refused = 0
    for index, sql in enumerate(corpus):
        methods = every + (some if index % 3 == 0 or sql in extra else [])
        for method in methods:
            try:
                result = await _call(method, sql)
                shown = repr(getattr(result, "result_rows", result))
                if method == client.query_df:
                    shown = result.to_csv()
                answered += 1
            except DatabaseError as exc:
                shown = str(exc)
                refused += 1
                # Only the client itself refuses without a code (an empty statement).
                assert exc.code or isinstance(exc, ProgrammingError), (sql, shown)
            assert OTHER_MARKER not in shown, (sql, method, shown[:300])
            assert "7777" not in shown and "15554" not in shown, (sql, method, shown[:300])
    assert refused >= len(REFUSED) * 2 and answered >= len(extra)


async def test_clickhouse_down_is_a_503_in_clickhouse_convention(served, org, pg_url):
    _, services, port = served
    auth = {"X-ClickHouse-Key": _password(await _analyst(pg_url, org.id))}
    services.ch.down = True  # before the server's facts were ever read
    status, headers, body = await _call(_http, port, "/", b"SELECT 1", auth)
    assert (status, headers["x-clickhouse-exception-code"]) == (503, "210")
    assert body.startswith(b"Code: 210. DB::Exception: ClickHouse did not answer")
    services.ch.down = False
    assert (await _call(_http, port, "/", b"SELECT 1", auth))[::2] == (200, b"1\n")
    services.ch.down = True  # now while a statement runs (its row count fails)
    status, headers, body = await _call(_http, port, "/", b"SELECT count() FROM events", auth)
    assert (status, headers["x-clickhouse-exception-code"], headers["retry-after"]) == (
        503,
        "210",
        "5",
    )
    assert b"Connection refused" not in body  # never ClickHouse's own text


async def test_oracle_answers_through_the_client_do_not_change_when_another_org_gets_a_marker(
    served, ch, org, other_org, pg_url
):
    """Org A's answers and errors — values, codes, messages, rows read — are the same before
    and after org B inserts rows that would make A's expressions fail (the corpus of
    tests/querybuilder/test_oracles.py, through clickhouse-connect)."""
    _, _, port = served
    base = (int(time.time()) // 60 - 3) * 60 * 1000
    rows = [
        {"org_id": org.id, "ts": base + i * 1000, "event": ("pageview", "purchase")[i % 2],
         "user_id": str(10 + i), "value": 1.0 + i % 50, "path": f"/p{i % 7}",
         "country": ("DE", "FR", "US")[i % 3], "props": {"k": str(i)}}
        for i in range(30)
    ]  # fmt: skip
    other = [{**row, "org_id": other_org.id} for row in rows]
    ch.insert_sync("events_queue", queue_batch(rows + other))
    client = await _client(port, _password(await _analyst(pg_url, org.id)))
    probes = [
        placement.format(e=expression)
        for index, placement in enumerate(_PLACEMENTS)
        for expression in _FAILS_ON_MARKER[index :: len(_PLACEMENTS)]
    ] + [
        placement.format(e=guess)
        for index, placement in enumerate(_GUESS_PLACEMENTS)
        for guess in _GUESSES[index % 2 :: 2]
    ]

    async def answers() -> list[tuple]:
        out = []
        for sql in probes:
            try:
                result = await _call(client.query, sql)
                out.append((result.result_rows, result.summary["read_rows"]))
            except DatabaseError as exc:
                out.append((exc.code, str(exc)))
        return out

    before = await answers()
    markers = [
        {"org_id": other_org.id, "ts": base + 30_000, "event": "zz" + MARKER,
         "user_id": MARKER, "path": "/" + MARKER, "country": "ZZ", "props": {"k": MARKER},
         "value": value}
        for value in (0.0, 1e15)
    ]  # fmt: skip
    ch.insert_sync("events_queue", queue_batch(markers))
    after = await answers()
    assert after == before
    assert "SECRET" not in repr(after)
    assert sum(1 for answer in before if isinstance(answer[0], list)) >= len(probes) // 2
