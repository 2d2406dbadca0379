"""`POST /sql` over HTTP: roles, formats, isolation between orgs, hostile SQL, quotas.

Real PostgreSQL (tokens, roles, org limits) and real chDB; events go in through events_queue
(the materialized views fill `events` and every rollup, as in production).
"""

from __future__ import annotations

import io
import time

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.rows import dict_row

from app.credentials import create_user_token
from tests.api.conftest import pg_exec
from tests.pipeline.events import queue_batch
from tests.querybuilder.test_analyst_sql import REFUSED

OTHER_MARKER = "/other-org-secret"


async def _analyst(pg_url: str, org_id: int) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        token = await create_user_token(conn, org_id, f"analyst-{org_id}@example.com", "analyst")
    return {"Authorization": f"Bearer {token}"}


def _seed(ch, org_id: int, count: int, *, path_of=lambda i: f"/p{i % 3}", value=1.0) -> None:
    """`count` events of one org over the last minutes: pageview/purchase, countries DE/FR."""
    base = (int(time.time()) // 60 - 3) * 60
    rows = [
        {
            "org_id": org_id,
            "ts": base * 1000 + i * 1000,
            "event": "purchase" if i % 4 == 0 else "pageview",
            "user_id": f"u{org_id}-{i % 5}",
            "session_id": f"s{i % 7}",
            "value": value * (i % 3),
            "path": path_of(i),
            "country": "DE" if i % 2 else "FR",
        }
        for i in range(count)
    ]
    ch.insert_sync("events_queue", queue_batch(rows))


@pytest.fixture
async def seeded(ch, org, other_org):
    _seed(ch, org.id, 40)
    _seed(ch, other_org.id, 25, path_of=lambda i: OTHER_MARKER, value=7777.0)
    return org, other_org


async def _sql(api, headers, sql, fmt="json"):
    return await api.post("/sql", json={"sql": sql, "format": fmt}, headers=headers)


async def test_analysts_and_admins_run_sql_viewers_and_editors_do_not(api, org, pg_url):
    analyst = await _analyst(pg_url, org.id)
    for headers, status in (
        (analyst, 200),
        (org.h("admin"), 200),
        (org.h("viewer"), 403),
        (org.h("editor"), 403),
        ({}, 401),
    ):
        r = await _sql(api, headers, "SELECT 1 AS one")
        assert r.status_code == status, (headers, r.text)
        if status == 200:
            assert r.json()["data"] == [{"one": 1}]
    forbidden = (await _sql(api, org.h("viewer"), "SELECT 1")).json()["error"]
    assert forbidden["code"] == "forbidden"
    assert forbidden["where"] == {"required_role": ["analyst", "admin"]}
    # An analyst reads like a viewer, and writes nothing.
    assert (await api.get("/dashboards", headers=analyst)).status_code == 200
    assert (await api.get("/me", headers=analyst)).json()["role"] == "analyst"
    r = await api.post("/dashboards", json={"name": "d", "charts": []}, headers=analyst)
    assert r.status_code == 403
    assert (await api.get("/api-keys", headers=analyst)).status_code == 403


async def test_the_role_check_of_postgres_accepts_analyst_only_among_new_roles(org, pg_url):
    await _analyst(pg_url, org.id)
    rows = await pg_exec(pg_url, "SELECT role FROM org_members WHERE org_id = %s", (org.id,))
    assert "analyst" in {r["role"] for r in rows}
    with pytest.raises(psycopg.errors.CheckViolation):
        await pg_exec(
            pg_url,
            "UPDATE org_members SET role = 'superuser' WHERE org_id = %s",
            (org.id,),
        )


async def test_each_org_sees_only_its_rows_through_ctes_joins_and_windows(api, seeded, pg_url):
    org, other = seeded
    sql = """
        WITH buyers AS (SELECT DISTINCT user_id FROM events WHERE event = 'purchase')
        SELECT e.country AS country, count() AS views, sum(e.value) AS value,
               rank() OVER (ORDER BY count() DESC, e.country) AS place
        FROM events AS e JOIN buyers AS b USING (user_id)
        WHERE e.event = 'pageview'
        GROUP BY e.country ORDER BY e.country
    """

    def expected(org_id: int, count: int, value: float) -> list[dict]:
        events = [
            ("purchase" if i % 4 == 0 else "pageview", f"u{org_id}-{i % 5}",
             "DE" if i % 2 else "FR", value * (i % 3))
            for i in range(count)
        ]  # fmt: skip
        buyers = {u for e, u, _, _ in events if e == "purchase"}
        per: dict[str, list[float]] = {}
        for e, u, c, v in events:
            if e == "pageview" and u in buyers:
                per.setdefault(c, [0, 0.0])
                per[c][0] += 1
                per[c][1] += v
        ranked = sorted(per.items(), key=lambda item: (-item[1][0], item[0]))
        place = {c: i + 1 for i, (c, _) in enumerate(ranked)}
        return [
            {"country": c, "views": n, "value": v, "place": place[c]}
            for c, (n, v) in sorted(per.items())
        ]

    mine = await _sql(api, await _analyst(pg_url, org.id), sql)
    assert mine.status_code == 200, mine.text
    assert mine.json()["data"] == expected(org.id, 40, 1.0)
    theirs = await _sql(api, await _analyst(pg_url, other.id), sql)
    assert theirs.json()["data"] == expected(other.id, 25, 7777.0)
    rollup = await _sql(
        api,
        await _analyst(pg_url, org.id),
        "SELECT r.n AS raw, m.n AS rolled FROM (SELECT count() AS n FROM events) AS r "
        "CROSS JOIN (SELECT sum(events) AS n FROM metrics_1m) AS m",
    )
    assert rollup.json()["data"] == [{"raw": 40, "rolled": 40}]


async def test_formats_and_headers(api, seeded, pg_url):
    org, _ = seeded
    headers = await _analyst(pg_url, org.id)
    sql = "SELECT path, count() AS n FROM events GROUP BY path ORDER BY path"
    expected = [("/p0", 14), ("/p1", 13), ("/p2", 13)]

    r = await _sql(api, headers, sql, "json")
    assert r.headers["content-type"].startswith("application/json")
    assert [(row["path"], row["n"]) for row in r.json()["data"]] == expected
    assert int(r.headers["x-rows-read"]) >= 40

    r = await _sql(api, headers, sql, "csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="result.csv"' in r.headers["content-disposition"]
    assert r.text.splitlines() == ['"path","n"'] + [f'"{p}",{n}' for p, n in expected]

    r = await _sql(api, headers, sql, "parquet")
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content)).to_pydict()
    paths = [p.decode() if isinstance(p, bytes) else p for p in table["path"]]
    assert list(zip(paths, table["n"], strict=True)) == expected

    r = await api.post("/sql", json={"sql": sql, "format": "xml"}, headers=headers)
    assert r.status_code == 400
    r = await api.post("/sql", json={"sql": sql, "org_id": 2}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


async def test_refused_sql_is_422_with_the_position(api, org, pg_url):
    headers = await _analyst(pg_url, org.id)
    r = await _sql(api, headers, "SELECT count()\nFROM events\nWHERE dictGet('d', 'x', 1) = 0")
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "unknown_function"
    assert error["where"] == {
        "token": "dictGet",
        "line": 3,
        "column": 7,
        "offset": len("SELECT count()\nFROM events\nWHERE "),
        "field": "sql",
    }
    r = await _sql(api, headers, "SELECT nosuchcolumn FROM events")
    assert r.status_code == 422
    failed = r.json()["error"]
    assert failed["code"] == "query_failed" and "nosuchcolumn" in failed["message"]
    assert failed["where"]["clickhouse_code"] == 47


async def test_hostile_sql_never_5xx_and_never_shows_another_org(api, api_services, seeded, pg_url):
    org, other = seeded
    headers = await _analyst(pg_url, org.id)
    database = api_services.ch.database
    extra = [
        "SELECT count() AS n FROM events WHERE path = '/other-org-secret'",
        "SELECT * FROM events ORDER BY ts",
        "SELECT * FROM metrics_1m UNION ALL SELECT * FROM metrics_1m",
        "SELECT path FROM events WHERE user_id IN (SELECT user_id FROM events WHERE value >= 7777)",
        "SELECT e.path, f.path FROM events AS e FULL JOIN events AS f ON e.ts = f.ts LIMIT 100",
        "SELECT groupArray(path) AS p FROM events",
        "SELECT count() FROM events WHERE path = '1'' OR org_id = 2 --'",
        "SELECT count() FROM events /* SETTINGS readonly = 0 */",
    ]
    statuses = []
    for sql in [s for s, _ in REFUSED] + extra:
        r = await _sql(api, headers, sql.replace("{db}", database), "csv")
        statuses.append(r.status_code)
        assert r.status_code in (200, 422), (sql[:80], r.status_code, r.text[:300])
        assert OTHER_MARKER not in r.text, (sql[:80], r.text[:300])
        if r.status_code == 200:  # the other org's values are 7777 and 15554, ours 0..2
            assert "7777" not in r.text and "15554" not in r.text, (sql[:80], r.text[:300])
        if r.status_code == 422:
            error = r.json()["error"]
            assert error["code"] and error["message"]
    assert statuses.count(422) >= len(REFUSED) and statuses.count(200) >= 6


async def test_quota_rows_per_minute_caps_and_charges_analyst_queries(api, seeded, pg_url):
    org, _ = seeded
    headers = await _analyst(pg_url, org.id)
    r = await api.put("/org/limits", json={"rows_per_minute": 30}, headers=org.h("admin"))
    assert r.status_code == 200
    # The org has 40 rows: more than a whole minute's budget, so it can never run (422), and
    # nothing is charged — the count is of the org's own rows, made before the query runs.
    r = await _sql(api, headers, "SELECT sum(value) FROM events")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "query_too_expensive"
    assert r.json()["error"]["where"] == {"limit": "rows_per_minute", "rows": 40}
    r = await _sql(api, headers, "SELECT 1")
    assert r.status_code == 200 and r.headers["x-rows-read"] == "0"
    r = await api.put("/org/limits", json={"rows_per_minute": 100}, headers=org.h("admin"))
    assert r.status_code == 200
    for _ in range(2):
        r = await _sql(api, headers, "SELECT sum(value) FROM events")
        assert r.status_code == 200 and r.headers["x-rows-read"] == "40"
    # 80 charged, 20 left: this one fits a whole minute, so it may retry then.
    r = await _sql(api, headers, "SELECT count() FROM events")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["where"] == {"limit": "rows_per_minute", "rows": 40}
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_the_openapi_document_describes_the_endpoint(api):
    r = await api.get("/schema/openapi.json")
    assert r.status_code == 200
    operation = r.json()["paths"]["/sql"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body.get("$ref", "").endswith("SqlIn") or "sql" in str(body)


async def test_oracle_answers_over_http_do_not_change_when_another_org_gets_a_marker(
    api, ch, org, other_org, pg_url
):
    """Org A's /sql and /query answers — status, body, X-Rows-Read, meta.rows_read — are the
    same before and after org B inserts rows that would make A's expressions fail
    (tests/querybuilder/test_oracles.py has the full corpus)."""
    _seed(ch, org.id, 40)
    _seed(ch, other_org.id, 25)
    headers = await _analyst(pg_url, org.id)
    probes = [
        "SELECT count() AS n FROM events WHERE toUInt64(replaceAll(path, '/p', '')) >= 0",
        "SELECT sum(intDiv(100, toUInt64(value) + 1)) AS s FROM events",
        "SELECT count() AS n FROM events WHERE match('abc', event)",
        "SELECT count() AS n FROM metrics_1m WHERE toUInt64(if(country = 'ZZ', event, '1')) > 0",
        "SELECT count() AS n FROM events WHERE toUInt64(if(user_id = 'zz((SECRET', user_id, '1')) > 0",
    ]
    metric = {
        "definition": {"text": "SELECT count() AS n WHERE country = 'DE'"},
        "from": "now-10m",
        "to": "now",
        "granularity": "1m",
    }

    async def answers(since: str) -> list[tuple]:
        out = []
        for sql in probes:
            r = await _sql(api, headers, sql)
            out.append((r.status_code, r.text, r.headers.get("x-rows-read")))
        # A new range each time (not cached): the answer and its rows_read are computed again.
        r = await api.post("/query", json={**metric, "from": since}, headers=org.h("viewer"))
        body = r.json()
        assert body["meta"]["cached"] is False
        nonzero = [row for row in body["rows"] if row[1]]
        out.append((r.status_code, body["meta"]["rows_read"], nonzero))
        return out

    before = await answers("now-10m")
    marker = "zz((SECRET"
    ch.insert_sync(
        "events_queue",
        queue_batch(
            [
                {
                    "org_id": other_org.id,
                    "ts": (int(time.time()) - 120) * 1000,
                    "event": marker,
                    "user_id": marker,
                    "path": "/" + marker,
                    "country": "ZZ",
                    "value": -1.0,
                }
            ]
        ),
    )
    after = await answers("now-11m")
    assert after == before
    assert "SECRET" not in repr(after)
    assert all(status == 200 for status, *_ in before), before
