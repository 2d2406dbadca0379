"""POST /v1/events over the real app, real PostgreSQL (keys) and real chDB (every MV attached)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest

from app.ingest import invalidate_api_key
from tests.ingest.helpers import (
    CHROME_WINDOWS_UA,
    GB_IP,
    GOOGLEBOT_UA,
    IPHONE_UA,
    now_ms,
    rows,
    scalar,
)

ROLLUPS = ("rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d")


def _totals(ch, table: str, org_id: int) -> tuple[int, float, int]:
    """(events, value sum, distinct users) of one org in a rollup table."""
    events, value_sum, users = rows(
        ch,
        f"SELECT sum(events), sum(value_sum), uniqCombinedMerge(users) "
        f"FROM {{db}}.{table} WHERE org_id = {{org:UInt32}}",
        {"org": org_id},
    )[0]
    return events, value_sum, users


async def _post(client, org, body, **headers):
    return await client.post("/v1/events", json=body, headers={**org.ingest_headers, **headers})


async def test_events_reach_raw_table_and_every_rollup_per_org(client, services, ch, make_org):
    org_a, org_b = await make_org("a"), await make_org("b")
    ts = now_ms() - 5_000  # one second bucket, inside the skew window
    batch_a = [
        {"event": "pageview", "user_id": f"a-user-{i % 40}", "ts": ts, "path": f"/p/{i % 3}"}
        for i in range(300)
    ] + [
        {"event": "purchase", "user_id": f"a-user-{i}", "ts": ts, "value": 10.25 + i}
        for i in range(20)
    ]
    batch_b = [{"event": "pageview", "user_id": f"b-user-{i}", "ts": ts} for i in range(7)]

    for org, batch in ((org_a, batch_a), (org_b, batch_b)):
        r = await _post(client, org, batch)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": len(batch), "rejected": 0, "errors": []}

    await services.writer.wait_inserted()  # 200 = in the WAL; wait for the INSERT
    expected_sum_a = sum(10.25 + i for i in range(20))
    assert rows(
        ch,
        "SELECT org_id, count(), sum(value), uniqExact(user_id) FROM {db}.events "
        "GROUP BY org_id ORDER BY org_id",
    ) == [[org_a.id, 320, expected_sum_a, 40], [org_b.id, 7, 0, 7]]
    for table in ROLLUPS:
        events, value_sum, users = _totals(ch, table, org_a.id)
        assert events == 320, table
        assert value_sum == pytest.approx(expected_sum_a), table
        assert abs(users - 40) <= 1, table  # HyperLogLog: exact-ish at this cardinality
        events, value_sum, users = _totals(ch, table, org_b.id)
        assert (events, value_sum) == (7, 0), table
        assert abs(users - 7) <= 1, table
        # Per event name, too: the rollups are keyed by event.
        assert rows(
            ch,
            f"SELECT event, sum(events) FROM {{db}}.{table} WHERE org_id = {{o:UInt32}} "
            "GROUP BY event ORDER BY event",
            {"o": org_a.id},
        ) == [["pageview", 300], ["purchase", 20]]
    # Org B's users never show up in org A's rows, and the other way round.
    assert (
        scalar(
            ch,
            "SELECT count() FROM {db}.events WHERE org_id = {o:UInt32} AND user_id LIKE 'b-%'",
            {"o": org_a.id},
        )
        == 0
    )
    assert (
        scalar(
            ch,
            "SELECT count() FROM {db}.events WHERE org_id = {o:UInt32} AND user_id LIKE 'a-%'",
            {"o": org_b.id},
        )
        == 0
    )


async def test_ndjson_by_content_type_and_by_sniffing(client, services, ch, org):
    body = b'{"event": "a", "user_id": "1"}\n\n{"event": "b"}\n{not json\n{"event": "c"}\n'
    r = await client.post(
        "/v1/events",
        content=body,
        headers={**org.ingest_headers, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["accepted"], result["rejected"]) == (3, 1)
    # NDJSON indexes are 0-based line numbers: the blank line counts.
    assert result["errors"][0]["index"] == 3
    assert result["errors"][0]["code"] == "invalid_json"

    # No NDJSON content type (e.g. curl -d): a body starting with an object is NDJSON.
    r = await client.post(
        "/v1/events",
        content=b'{"event": "d"}\n{"event": "e"}',
        headers={**org.ingest_headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    await services.writer.wait_inserted()  # 200 = in the WAL; wait for the INSERT
    assert rows(ch, "SELECT event FROM {db}.events ORDER BY event") == [
        ["a"],
        ["b"],
        ["c"],
        ["d"],
        ["e"],
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'[{"event": "a"}, {"event": ', "malformed_json"),
        (b"[1, 2", "malformed_json"),
        (b'"hello"', "invalid_body"),
        (b"[]", "empty_batch"),
        (b"", "empty_batch"),
    ],
)
async def test_bodies_that_are_not_batches_are_400(client, ch, org, body, code):
    r = await client.post(
        "/v1/events",
        content=body,
        headers={**org.ingest_headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert scalar(ch, "SELECT count() FROM {db}.events") == 0


async def test_bad_events_get_reasons_and_good_ones_are_stored(client, services, ch, org):
    now = now_ms()
    batch = [
        {"event": "good", "user_id": "ok-0"},  # 0
        {"event": 42},  # 1 wrong type
        {"user_id": "no-name"},  # 2 missing event
        {"event": "good", "user_id": "ok-3", "path": "/" + "x" * 40_000},  # 3 oversize event
        {"event": "good", "ts": now - 8 * 24 * 3600 * 1000},  # 4 too old
        {"event": "good", "ts": now + 3600 * 1000},  # 5 in the future
        {"event": "good", "user_id": "ok-6", "ts": "2020-01-01T00:00:00"},  # 6 no offset
        {"event": "good", "user_id": "ok-7", "evnt": "typo"},  # 7 unknown field
        {"event": "bad name!"},  # 8 charset
        {"event": "x" * 65},  # 9 too long
        {"event": "good", "value": "12"},  # 10 value not a number
        {"event": "good", "ip": "not-an-ip"},  # 11 bad ip
        {"event": "good", "props": {f"k{i}": i for i in range(51)}},  # 12 too many props
        {"event": "good", "props": {"nested": {"a": 1}}},  # 13 nested prop
        "not an object",  # 14
        {"event": "good", "user_id": 7, "ts": now - 1000, "value": 2.5},  # 15 valid
        {
            "event": "good",
            "user_id": "ok-16",
            "ts": None,
            "props": {"plan": "pro", "seats": 3, "trial": True, "ratio": 0.5},
        },  # 16 valid
    ]
    r = await _post(client, org, batch)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["accepted"] == 3
    assert result["rejected"] == len(batch) - 3
    by_index = {e["index"]: e for e in result["errors"]}
    expected = {
        1: ("invalid_type", "event"),
        2: ("missing_field", "event"),
        3: ("event_too_large", None),
        4: ("ts_out_of_range", "ts"),
        5: ("ts_out_of_range", "ts"),
        6: ("invalid_format", "ts"),
        7: ("unknown_field", "evnt"),
        8: ("invalid_format", "event"),
        9: ("too_long", "event"),
        10: ("invalid_type", "value"),
        11: ("invalid_format", "ip"),
        12: ("too_long", "props"),
        13: ("invalid_type", "props"),
        14: ("invalid_type", None),
    }
    assert {i: (e["code"], e["field"]) for i, e in by_index.items()} == expected
    assert all(e["message"] for e in result["errors"])

    await services.writer.wait_inserted()  # 200 = in the WAL; wait for the INSERT
    stored = rows(
        ch,
        "SELECT user_id, value, props FROM {db}.events WHERE org_id = {o:UInt32} ORDER BY user_id",
        {"o": org.id},
    )
    assert stored == [
        ["7", 2.5, {}],
        ["ok-0", 0, {}],
        ["ok-16", 0, {"plan": "pro", "ratio": "0.5", "seats": "3", "trial": "true"}],
    ]
    assert scalar(ch, "SELECT sum(events) FROM {db}.rollup_1m") == 3


async def test_rfc3339_and_epoch_ms_timestamps(client, services, ch, org):
    ts = now_ms() - 60_000
    iso = datetime.fromtimestamp(ts / 1000, tz=UTC)
    r = await _post(
        client,
        org,
        [{"event": "a", "ts": ts}, {"event": "b", "ts": iso.isoformat()}],
    )
    assert r.status_code == 200, r.text
    await services.writer.wait_inserted()  # 200 = in the WAL; wait for the INSERT
    assert rows(ch, "SELECT toUnixTimestamp64Milli(ts) FROM {db}.events ORDER BY event") == [
        [ts],
        [ts],
    ]


async def test_all_events_rejected_is_400_with_the_per_event_reasons(client, ch, org):
    r = await _post(client, org, [{"event": 1}, {"nope": True}])
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "no_valid_events"
    assert error["where"]["accepted"] == 0
    assert error["where"]["rejected"] == 2
    assert [e["index"] for e in error["where"]["errors"]] == [0, 1]


async def test_org_id_in_an_event_cannot_redirect_it(client, services, ch, make_org):
    mine, victim = await make_org("mine"), await make_org("victim")
    r = await _post(
        client,
        mine,
        [{"event": "a", "org_id": victim.id}, {"event": "b", "user_id": "kept"}],
    )
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == [
        {
            "index": 0,
            "code": "forbidden_field",
            "message": "org_id is decided by the API key and must not be sent",
            "field": "org_id",
        }
    ]
    await services.writer.wait_inserted()  # 200 = in the WAL; wait for the INSERT
    assert rows(ch, "SELECT org_id, event FROM {db}.events") == [[mine.id, "b"]]


async def test_batch_over_the_event_limit_is_413(make_client, ch, org):
    async with make_client(ingest_max_events=5) as (client, _):
        r = await _post(client, org, [{"event": "a"}] * 6)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_many_events"
        assert r.json()["error"]["where"] == {"limit": 5, "count": 6}
        assert (await _post(client, org, [{"event": "a"}] * 5)).status_code == 200
    assert scalar(ch, "SELECT count() FROM {db}.events") == 5


async def test_body_over_the_byte_limit_is_413(make_client, ch, org):
    async with make_client(ingest_max_body_bytes=1_000) as (client, _):
        r = await _post(client, org, [{"event": "a", "path": "/" + "x" * 500}] * 3)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
    assert scalar(ch, "SELECT count() FROM {db}.events") == 0


async def test_missing_and_unknown_keys_are_401(client, ch, org):
    r = await client.post("/v1/events", json=[{"event": "a"}])
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    r = await client.post(
        "/v1/events", json=[{"event": "a"}], headers={"Authorization": "Bearer cpk_nope"}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = await client.post(
        "/v1/events", json=[{"event": "a"}], headers={"Authorization": f"Basic {org.api_key}"}
    )
    assert r.status_code == 401
    assert scalar(ch, "SELECT count() FROM {db}.events") == 0


async def _revoke_all_keys(pg_url: str, org_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE org_id = %s", (org_id,))


async def test_revoked_key_is_401_once_the_cache_is_invalidated(client, services, ch, org, pg_url):
    assert (await _post(client, org, [{"event": "a"}])).status_code == 200
    await _revoke_all_keys(pg_url, org.id)
    invalidate_api_key(services)  # what the key-revoking API does in this process
    r = await _post(client, org, [{"event": "b"}])
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_api_key"
    assert "revoked" in r.json()["error"]["message"]
    await services.writer.wait_inserted()
    assert rows(ch, "SELECT event FROM {db}.events") == [["a"]]


async def test_revoked_key_is_401_without_a_cache(make_client, ch, org, pg_url):
    async with make_client(ingest_key_cache_ttl_s=0) as (client, _):
        assert (await _post(client, org, [{"event": "a"}])).status_code == 200
        await _revoke_all_keys(pg_url, org.id)
        r = await _post(client, org, [{"event": "b"}])
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "revoked_api_key"


async def test_key_lookups_are_cached(client, services, org):
    from app.ingest.routes import ingest_state

    for _ in range(3):
        assert (await _post(client, org, [{"event": "a"}])).status_code == 200
    assert ingest_state(services).keys.lookups == 1


async def test_rate_limit_is_429_with_retry_after(make_client, ch, make_org):
    async with make_client(ingest_rate_per_s=1) as (client, _):
        org, other = await make_org("limited"), await make_org("other")
        # A full bucket admits one batch (debt allowed), then the org must wait.
        assert (await _post(client, org, [{"event": "a"}] * 3)).status_code == 200
        r = await _post(client, org, [{"event": "b"}])
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # Buckets are per org.
        assert (await _post(client, other, [{"event": "c"}])).status_code == 200
    assert rows(ch, "SELECT event, count() FROM {db}.events GROUP BY event ORDER BY event") == [
        ["a", 3],
        ["c", 1],
    ]


async def test_org_limit_overrides_the_default_rate(make_client, pg_url, make_org):
    org = await make_org("vip")
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE orgs SET limits = '{\"ingest_rate_per_s\": 1000}'::jsonb WHERE id = %s",
            (org.id,),
        )
    async with make_client(ingest_rate_per_s=1) as (client, _):
        for _ in range(3):
            assert (await _post(client, org, [{"event": "a"}] * 10)).status_code == 200


async def test_enrichment_from_headers_and_event_overrides(make_client, ch, org):
    async with make_client(ingest_trust_forwarded_for=True) as (client, _):
        r = await _post(
            client,
            org,
            [
                {"event": "from-headers"},
                {"event": "override", "user_agent": GOOGLEBOT_UA, "ip": "127.0.0.1"},
                {"event": "desktop", "user_agent": CHROME_WINDOWS_UA},
            ],
            **{"User-Agent": IPHONE_UA, "X-Forwarded-For": f"10.0.0.1, {GB_IP}"},
        )
        assert r.status_code == 200, r.text
    assert rows(
        ch, "SELECT event, country, device, browser, os FROM {db}.events ORDER BY event"
    ) == [
        ["desktop", "GB", "desktop", "Chrome", "Windows"],
        ["from-headers", "GB", "mobile", "Mobile Safari", "iOS"],
        ["override", "", "bot", "Googlebot", ""],
    ]
    assert rows(
        ch,
        "SELECT country, device, browser, os, sum(events) FROM {db}.rollup_1m "
        "WHERE event = 'from-headers' GROUP BY ALL",
    ) == [["GB", "mobile", "Mobile Safari", "iOS", 1]]


async def test_forwarded_for_is_ignored_unless_trusted(client, services, ch, org):
    r = await _post(
        client, org, [{"event": "a"}, {"event": "b", "ip": GB_IP}], **{"X-Forwarded-For": GB_IP}
    )
    assert r.status_code == 200, r.text
    await services.writer.wait_inserted()
    assert rows(ch, "SELECT event, country FROM {db}.events ORDER BY event") == [
        ["a", ""],
        ["b", "GB"],
    ]


async def test_failed_insert_is_retried_from_the_wal_and_stored_once(client, services, ch, org):
    services.writer.table = "no_such_table"  # every INSERT now fails in ClickHouse
    r = await _post(client, org, [{"event": "a"}, {"event": "b"}])
    assert r.status_code == 200, r.text  # acknowledged: the rows are in the WAL
    while services.writer.failed_flushes < 2:  # it keeps retrying (with backoff)
        await asyncio.sleep(0.05)
    assert services.writer.pending_rows == 2
    assert services.writer.oldest_pending_age_s() > 0
    services.writer.table = "events_queue"  # ClickHouse is back
    await asyncio.wait_for(services.writer.wait_inserted(), 60)
    assert rows(ch, "SELECT event FROM {db}.events ORDER BY event") == [["a"], ["b"]]
    assert services.writer.pending_rows == 0
    assert services.writer.oldest_pending_age_s() == 0


async def test_wal_off_failed_insert_is_503_and_not_accepted(make_client, ch, org):
    async with make_client(wal_enabled=False) as (client, services):
        services.writer.table = "no_such_table"  # every INSERT now fails in ClickHouse
        r = await _post(client, org, [{"event": "a"}])
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "storage_unavailable"
        assert "Retry-After" in r.headers
        services.writer.table = "events_queue"
        assert (await _post(client, org, [{"event": "b"}])).status_code == 200
        # WAL off: 200 means inserted, no waiting needed.
        assert rows(ch, "SELECT event FROM {db}.events") == [["b"]]


async def test_backpressure_is_503_with_retry_after_and_nothing_accepted(make_client, ch, org):
    async with make_client(writer_max_pending_rows=3, writer_max_delay_ms=3_600_000) as (
        client,
        services,
    ):
        assert (await _post(client, org, [{"event": "a"}] * 3)).status_code == 200
        r = await _post(client, org, [{"event": "b"}])
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "ingest_overloaded"
        assert r.headers["Retry-After"] == "1"
        await services.writer.wait_inserted()
        assert (await _post(client, org, [{"event": "c"}])).status_code == 200
    assert rows(ch, "SELECT event, count() FROM {db}.events GROUP BY event ORDER BY event") == [
        ["a", 3],
        ["c", 1],
    ]


LONE_SURROGATE_MESSAGE = (
    "not valid JSON: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
    "pair), which is not Unicode text"
)


async def test_a_lone_surrogate_rejects_its_event_not_the_array(client, services, ch, org):
    # As raw bytes: the escapes must reach the server exactly as written.
    body = (
        b'[{"event": "a", "path": "/\\\\ud800"},'  # an escaped backslash: plain text, fine
        b' {"event": "b\\ud800"},'  # lone high surrogate
        b' {"event": "c", "props": {"k": "\\udc00x"}},'  # lone low surrogate
        b' {"event": "d", "path": "/\\ud83d\\ude00"},'  # a valid pair: an emoji
        b' {"event": "e", "path": "\\uD800\\u0041"},'  # high surrogate + a non-surrogate
        b' {"event": "f", "path": "\\\\\\ud800"}]'  # escaped backslash, then a lone surrogate
    )
    r = await client.post(
        "/v1/events",
        content=body,
        headers={**org.ingest_headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["accepted"], result["rejected"]) == (2, 4)
    assert [(e["index"], e["code"], e["message"]) for e in result["errors"]] == [
        (i, "invalid_json", LONE_SURROGATE_MESSAGE) for i in (1, 2, 4, 5)
    ]
    await services.writer.wait_inserted()
    assert rows(ch, "SELECT event, path FROM {db}.events ORDER BY event") == [
        ["a", "/\\ud800"],
        ["d", "/\U0001f600"],
    ]


async def test_a_lone_surrogate_in_ndjson_has_the_same_reason(client, org):
    r = await client.post(
        "/v1/events",
        content=b'{"event": "a"}\n{"event": "b\\ud800"}\n',
        headers={**org.ingest_headers, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == [
        {"index": 1, "code": "invalid_json", "message": LONE_SURROGATE_MESSAGE, "field": None}
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"event": "a\\ud800"}, {"event": ',  # a surrogate and truncated: still the batch's fault
        b'[{"event": "a\\ud800"} {"event": "b"}]',  # missing comma
        b'[{"event": "a\\ud800"}]]',  # trailing garbage
    ],
)
async def test_a_lone_surrogate_does_not_excuse_a_malformed_array(client, org, body):
    r = await client.post(
        "/v1/events",
        content=body,
        headers={**org.ingest_headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"


async def test_an_array_of_only_lone_surrogates_is_400_no_valid_events(client, org):
    r = await client.post(
        "/v1/events",
        content=b'[{"event": "\\ud800"}, {"event": "\\udfff"}]',
        headers={**org.ingest_headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "no_valid_events"
    assert [e["index"] for e in error["where"]["errors"]] == [0, 1]
