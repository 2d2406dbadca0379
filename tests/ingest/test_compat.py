"""The PostHog, Segment and Plausible routes over the real app (chDB, PostgreSQL): every path
and body encoding, keys and their conflicts, limits, malformed bodies, CORS, roles."""

from __future__ import annotations

import base64
import gzip
import json
import random
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg.rows import dict_row

from app.credentials import add_site, remove_site
from tests.ingest.helpers import now_ms, rows

POSTHOG_PATHS = ["/capture", "/batch", "/e", "/i/v0/e"]
SEGMENT_PATHS = ["/v1/track", "/v1/page", "/v1/screen", "/v1/identify", "/v1/batch"]


def _ph(key: str, n: int = 1, **extra) -> dict:
    return {
        "api_key": key,
        "batch": [
            {"event": "click", "distinct_id": f"u{i}", "properties": {"k": i}, **extra}
            for i in range(n)
        ],
    }


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def _count(services, ch, org_id: int) -> int:
    await services.writer.wait_inserted()
    return rows(ch, "SELECT count() FROM {db}.events WHERE org_id = {o:UInt32}", {"o": org_id})[0][
        0
    ]


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "where"}
    return body


async def test_posthog_paths_with_and_without_slash_and_every_encoding(client, services, ch, org):
    sent = 0
    for path in POSTHOG_PATHS:
        for p in (path, path + "/"):
            r = await client.post(p, json=_ph(org.api_key))
            assert r.status_code == 200, (p, r.text)
            assert r.json() == {"accepted": 1, "rejected": 0, "errors": []}
            sent += 1
    single = {"event": "$pageview", "token": org.api_key, "properties": {"$pathname": "/x"}}
    bodies = [
        ("json object", json.dumps(single).encode(), {}),
        ("json array", json.dumps([single, single]).encode(), {}),
        (
            "gzip header",
            gzip.compress(json.dumps(_ph(org.api_key, 3)).encode()),
            {"Content-Encoding": "gzip"},
        ),
        (
            "gzip-js (magic bytes only, text/plain)",
            gzip.compress(json.dumps(_ph(org.api_key, 2)).encode()),
            {"Content-Type": "text/plain"},
        ),
        (
            "form base64",
            b"data=" + quote(base64.b64encode(json.dumps(_ph(org.api_key, 4)).encode())).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        (
            "form base64, '+' unescaped, no padding",
            b"data="
            + base64.b64encode(json.dumps([single] * 5).encode() + b"  ").rstrip(b"=")
            + b"&compression=base64",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        (
            "form raw JSON",
            b"data=" + quote(json.dumps(single)).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    for name, body, headers in bodies:
        r = await client.post("/e/?ip=1&ver=1.0", content=body, headers=headers)
        assert r.status_code == 200, (name, r.text)
        sent += r.json()["accepted"]
    assert sent == 8 + 1 + 2 + 3 + 2 + 4 + 5 + 1
    assert await _count(services, ch, org.id) == sent
    assert rows(
        ch,
        "SELECT count() FROM {db}.events WHERE org_id = {o:UInt32} AND event = 'pageview' "
        "AND path = '/x'",
        {"o": org.id},
    ) == [[1 + 2 + 5 + 1]]


async def test_posthog_validation_is_the_v1_events_one(client, services, ch, org):
    body = {
        "api_key": org.api_key,
        "batch": [
            {"event": "ok", "distinct_id": "u"},
            {"event": "bad name!", "distinct_id": "u"},
            {"event": "old", "distinct_id": "u", "timestamp": "2001-01-01T00:00:00Z"},
            {"event": "long", "distinct_id": "x" * 129},
            "not an event",
            {"event": "big", "properties": {f"p{i}": i for i in range(51)}},
        ],
    }
    r = await client.post("/batch/", json=body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["accepted"], result["rejected"]) == (1, 5)
    assert [(e["index"], e["code"]) for e in result["errors"]] == [
        (1, "invalid_format"),
        (2, "ts_out_of_range"),
        (3, "too_long"),
        (4, "invalid_type"),
        (5, "too_long"),
    ]
    # Every event refused: 400, nothing stored.
    r = await client.post("/batch/", json={"api_key": org.api_key, "batch": ["x", 1]})
    assert _error(r, 400, "no_valid_events")["error"]["where"]["rejected"] == 2
    assert await _count(services, ch, org.id) == 1


async def test_an_sdk_uuid_or_message_id_stores_a_retried_batch_once(client, services, ch, org):
    ids = [str(uuid.uuid4()) for _ in range(5)]
    ph = {"api_key": org.api_key, "batch": [{"event": "e", "uuid": i} for i in ids]}
    assert (await client.post("/batch/", json=ph)).json()["accepted"] == 5
    again = await client.post("/batch/", json=ph)
    assert again.json() == {"accepted": 5, "rejected": 0, "errors": [], "duplicates": 5}
    message_ids = [f"msg-{i}" for i in range(3)]
    seg = {"batch": [{"type": "track", "event": "s", "messageId": m} for m in message_ids]}
    for _ in range(2):
        r = await client.post("/v1/batch", json=seg, headers=_basic(org.api_key))
        assert r.status_code == 200, r.text
    assert r.json()["duplicates"] == 3
    assert await _count(services, ch, org.id) == 8


async def test_keys_decide_the_org_and_conflicting_keys_are_refused(client, services, ch, make_org):
    a, b = await make_org("a"), await make_org("b")
    bearer_b = {"Authorization": f"Bearer {b.api_key}"}
    # A's key in the body, B's in the header: neither decides; refused before either is used.
    r = await client.post("/batch/", json=_ph(a.api_key), headers=bearer_b)
    _error(r, 401, "conflicting_api_keys")
    # B's token inside one event of A's batch.
    mixed = _ph(a.api_key, 2)
    mixed["batch"][1]["properties"]["token"] = b.api_key
    _error(await client.post("/e/", json=mixed), 401, "conflicting_api_keys")
    # Segment: Basic auth user vs writeKey in the body, and a writeKey per message.
    seg = {"writeKey": a.api_key, "batch": [{"type": "track", "event": "x", "userId": "u"}]}
    r = await client.post("/v1/batch", json=seg, headers=_basic(b.api_key))
    body = _error(r, 401, "conflicting_api_keys")
    assert body["code"] == "conflicting_api_keys"  # Segment's SDKs read these two
    assert body["message"] == body["error"]["message"]
    seg["batch"][0]["writeKey"] = b.api_key
    seg.pop("writeKey")
    r = await client.post("/v1/batch", json=seg, headers=_basic(a.api_key))
    _error(r, 401, "conflicting_api_keys")
    # The same key twice is one key.
    r = await client.post("/batch/", json=_ph(b.api_key), headers=bearer_b)
    assert r.status_code == 200, r.text
    # No key anywhere; an unreadable Authorization header; a key of no org.
    _error(await client.post("/capture", json={"event": "x"}), 401, "missing_api_key")
    r = await client.post("/v1/track", json={"event": "x"}, headers={"Authorization": "Basic %%%"})
    _error(r, 401, "missing_api_key")
    _error(await client.post("/e", json=_ph("cpk_" + "Z" * 43)), 401, "invalid_api_key")
    assert await _count(services, ch, a.id) == 0
    assert await _count(services, ch, b.id) == 1


async def test_segment_calls_each_path(client, services, ch, org):
    messages = {
        "/v1/track": {"event": "Signed Up", "userId": "u1", "properties": {"plan": "x"}},
        "/v1/page": {
            "anonymousId": "anon",
            "name": "Home",
            "properties": {"url": "https://s.test/a?b"},
        },
        "/v1/screen": {"userId": 7, "name": "Settings"},
        "/v1/identify": {"userId": "u1", "traits": {"email_domain": "s.test"}},
        "/v1/batch": {
            "batch": [{"type": "page", "userId": "u2", "context": {"page": {"path": "/p"}}}]
        },
    }
    for path, body in messages.items():
        r = await client.post(path, json={**body, "writeKey": org.api_key})
        assert r.status_code == 200, (path, r.text)
        assert r.json()["accepted"] == 1
    await services.writer.wait_inserted()
    assert rows(
        ch,
        "SELECT event, user_id, path, props['plan'], props['name'], props['email_domain'] "
        "FROM {db}.events WHERE org_id = {o:UInt32} ORDER BY event, user_id",
        {"o": org.id},
    ) == [
        ["Signed Up", "u1", "", "x", "", ""],
        ["identify", "u1", "", "", "", "s.test"],
        ["pageview", "anon", "/a", "", "Home", ""],
        ["pageview", "u2", "/p", "", "", ""],
        ["screen", "7", "", "", "Settings", ""],
    ]
    # A batch message of an unknown type is refused alone.
    r = await client.post(
        "/v1/batch",
        json={"batch": [{"type": "track", "event": "a"}, {"type": "weird"}, {"event": "b"}]},
        headers=_basic(org.api_key),
    )
    assert r.status_code == 200, r.text
    assert [(e["index"], e["code"], e["field"]) for e in r.json()["errors"]] == [
        (1, "invalid_type", "event"),
        (2, "invalid_type", "event"),
    ]


async def test_limits_bound_every_encoding(make_client, org, ch):
    async with make_client(ingest_max_body_bytes=50_000, ingest_max_events=10) as (
        client,
        services,
    ):
        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
        assert len(bomb) < 50_000
        for headers in ({"Content-Encoding": "gzip"}, {}):
            r = await client.post(
                "/batch/", content=bomb, headers={**_basic(org.api_key), **headers}
            )
            _error(r, 413, "body_too_large")
        r = await client.post(
            "/v1/batch", content=gzip.compress(b" " * 60_000), headers=_basic(org.api_key)
        )
        _error(r, 413, "body_too_large")
        r = await client.post("/e", content=b"x" * 60_000)
        _error(r, 413, "body_too_large")
        _error(await client.post("/e", json=_ph(org.api_key, 11)), 413, "too_many_events")
        deep = b'{"api_key":"k","batch":' + b"[" * 100 + b"]" * 100 + b"}"
        _error(await client.post("/e", content=deep), 400, "invalid_request")
        assert await _count(services, ch, org.id) == 0


async def test_malformed_bodies_are_400_in_the_one_error_shape(client, org):
    cases = [
        (
            b"data=%%%not-base64***",
            {"Content-Type": "application/x-www-form-urlencoded"},
            "malformed_base64",
        ),
        (b"data=" + base64.b64encode(b"{nope"), {}, "malformed_json"),
        (b"{not json", {}, "malformed_json"),
        (b"\x1f\x8bnot really gzip", {}, "malformed_gzip"),
        (gzip.compress(b'{"event":"x"}')[:-6], {}, "malformed_gzip"),
        (b'{"event":"x"}', {"Content-Encoding": "br"}, "unsupported_encoding"),
        (b"", {}, "empty_batch"),
        (b"data=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"}, "malformed_form"),
    ]
    for body, headers, code in cases:
        for path in ("/e/", "/v1/batch", "/api/event"):
            r = await client.post(path, content=body, headers={**_basic(org.api_key), **headers})
            _error(r, 400, code)
    for path in ("/e/", "/v1/batch"):
        r = await client.post(path, content=b'{"batch":[]}', headers=_basic(org.api_key))
        _error(r, 400, "empty_batch")
    r = await client.post("/e/?compression=lz64", content=b"data=abc", headers=_basic(org.api_key))
    _error(r, 400, "unsupported_compression")
    # Random bytes, raw and gzipped, on every route: never a 5xx, always the error shape.
    rng = random.Random(17)
    for _ in range(12):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        for body in (junk, gzip.compress(junk), b"data=" + base64.b64encode(junk)):
            for path in (*POSTHOG_PATHS, *SEGMENT_PATHS, "/api/event"):
                r = await client.post(path, content=body, headers=_basic(org.api_key))
                assert r.status_code < 500, (path, body, r.text)
                if r.status_code >= 400:
                    assert "error" in r.json()


async def test_plausible_sites_map_to_an_org_and_follow_its_key(
    client, services, ch, make_org, pg_url
):
    a, b = await make_org("a"), await make_org("b")
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await add_site(conn, a.id, "a.test")
        await add_site(conn, b.id, "b.test")
        with pytest.raises(psycopg.errors.UniqueViolation):
            await add_site(conn, b.id, "a.test")  # one site, one org
    event = {"name": "pageview", "url": "https://a.test/x", "domain": "a.test"}
    r = await client.post("/api/event", json=event)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    # A comma list counts the event in each site's org (unknown sites ignored).
    r = await client.post("/api/event", json={**event, "domain": "a.test, B.test.,nobody.test"})
    assert r.status_code == 202, r.text
    _error(
        await client.post("/api/event", json={**event, "domain": "nobody.test"}),
        401,
        "unknown_site",
    )
    _error(await client.post("/api/event", json={"name": "pageview"}), 400, "missing_domain")
    _error(await client.post("/api/event", json=[event]), 400, "invalid_body")
    # A key in the body is not how Plausible authenticates: the site decides, not the key.
    r = await client.post("/api/event", json={**event, "api_key": b.api_key, "token": b.api_key})
    assert r.status_code == 202, r.text
    assert await _count(services, ch, a.id) == 3
    assert await _count(services, ch, b.id) == 1
    # Removing the site revokes its key: refused (once the cached lookup expires).
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        assert await remove_site(conn, "a.test") is True
        assert await remove_site(conn, "a.test") is False
    services.extras["ingest_sites"].invalidate()
    _error(await client.post("/api/event", json=event), 401, "unknown_site")


async def test_cors_lets_pages_post_without_credentials(client, org):
    r = await client.options(
        "/e/",
        headers={
            "Origin": "https://shop.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in r.headers
    ok = await client.post("/e/", json=_ph(org.api_key), headers={"Origin": "https://shop.test"})
    refused = await client.post("/api/event", json={"domain": "x"}, headers={"Origin": "https://o"})
    for r in (ok, refused):
        assert r.headers["access-control-allow-origin"] == "*"
    # Our own API is not opened to other origins by this.
    r = await client.post("/v1/events", json=[{"event": "x"}], headers=org.ingest_headers)
    assert "access-control-allow-origin" not in r.headers


async def test_only_the_ingest_role_serves_these_routes(make_client, org):
    async with make_client(roles=("api",)) as (client, _):
        for path in (*POSTHOG_PATHS, *SEGMENT_PATHS, "/api/event"):
            assert (await client.post(path, json=_ph(org.api_key))).status_code == 404, path
    async with make_client(roles=("ingest",)) as (client, _):
        r = await client.post("/i/v0/e/", json=_ph(org.api_key))
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("skew_s", [-3600, 30])
async def test_timestamps_of_every_spelling(client, services, ch, org, skew_s):
    ts = now_ms() + skew_s * 1000
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(ts / 1000, UTC)
    spellings = [
        iso.isoformat(),
        iso.isoformat().replace("+00:00", "Z"),
        iso.replace(tzinfo=None).isoformat(),
        ts,
        ts / 1000,
    ]
    body = {"api_key": org.api_key, "batch": [{"event": "t", "timestamp": s} for s in spellings]}
    r = await client.post("/batch", json=body)
    assert r.json()["accepted"] == 5, r.text
    await services.writer.wait_inserted()
    stored = rows(
        ch,
        "SELECT toUnixTimestamp64Milli(ts) FROM {db}.events WHERE org_id = {o:UInt32}",
        {"o": org.id},
    )
    assert all(abs(row[0] - ts) <= 1 for row in stored), (stored, ts)
