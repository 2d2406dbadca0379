"""Client retries do not double-count (issue #13, 3): event ids and `Idempotency-Key`.

Over the real app, real PostgreSQL (keys), real chDB (every view) and, where named, Redis.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from app.config import Settings
from app.ingest.dedup import EventIdWindow
from app.ingest.idempotency import LocalIdempotencyStore, RedisIdempotencyStore
from app.ingest.writer import EventWriter
from tests.ingest.helpers import make_columns, now_ms, rows

TABLES = ("rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d")
GUARD_S = 60


def _counts(ch, org_id: int) -> dict[str, int]:
    """Events of one org as `events`, each rollup and each metrics_* view count them."""
    params = {"org": org_id}
    out = {
        "events": rows(ch, "SELECT count() FROM {db}.events WHERE org_id = {org:UInt32}", params)
    }
    for table in (*TABLES, "metrics_1s", "metrics_1m", "metrics_1h", "metrics_1d"):
        out[table] = rows(
            ch, f"SELECT sum(events) FROM {{db}}.{table} WHERE org_id = {{org:UInt32}}", params
        )
    return {k: int(v[0][0]) for k, v in out.items()}


def _batch(n: int, *, start: int = 0, id_field: str | None = "event_id") -> list[dict]:
    ts = now_ms() - 2_000
    out = []
    for i in range(start, start + n):
        event = {"event": "pageview", "user_id": f"u{i}", "ts": ts}
        if id_field:
            event[id_field] = f"id-{i}"
        out.append(event)
    return out


async def _post(client, org, body, **headers):
    return await client.post("/v1/events", json=body, headers={**org.ingest_headers, **headers})


@pytest.mark.parametrize("id_field", ["event_id", "uuid", "messageId"])
async def test_an_event_id_seen_before_is_not_stored_again(client, services, ch, org, id_field):
    first = await _post(client, org, _batch(10, id_field=id_field))
    assert first.json() == {"accepted": 10, "rejected": 0, "errors": []}
    # A retry after a lost answer, as SDKs re-batch it: old events plus new ones.
    again = await _post(client, org, _batch(15, id_field=id_field))
    assert again.status_code == 200
    assert again.json() == {"accepted": 15, "rejected": 0, "errors": [], "duplicates": 10}
    # Repeats inside one batch count once as well.
    twice = _batch(1, start=100, id_field=id_field) * 2
    assert (await _post(client, org, twice)).json()["duplicates"] == 1
    await services.writer.wait_inserted()
    assert set(_counts(ch, org.id).values()) == {16}
    stored = rows(ch, "SELECT uniqExact(event_id), countIf(event_id = '') FROM {db}.events")
    assert stored == [[16, 0]]


async def test_ids_are_per_org(client, services, ch, make_org):
    a, b = await make_org("a"), await make_org("b")
    for org in (a, b):
        assert (await _post(client, org, _batch(5))).json().get("duplicates", 0) == 0
    await services.writer.wait_inserted()
    assert _counts(ch, a.id)["events"] == _counts(ch, b.id)["events"] == 5


async def test_conflicting_and_oversized_ids_are_rejected_per_event(client, org):
    body = [
        {"event": "e", "event_id": "x", "uuid": "y"},  # two different ids
        {"event": "e", "event_id": "x", "uuid": "x", "messageId": "x"},  # the same id: fine
        {"event": "e", "event_id": "z" * 129},
        {"event": "e", "uuid": 7},
    ]
    r = await _post(client, org, body)
    assert r.status_code == 200
    got = r.json()
    assert got["accepted"] == 1 and got["rejected"] == 3
    assert [(e["index"], e["code"], e["field"]) for e in got["errors"]] == [
        (0, "invalid_value", "event_id"),
        (2, "too_long", "event_id"),
        (3, "invalid_type", "uuid"),
    ]


async def test_a_repeated_idempotency_key_gets_the_first_answer(client, services, ch, org):
    body = [*_batch(8, id_field=None), {"event": "bad name!"}]
    headers = {"Idempotency-Key": "req-1"}
    first = await _post(client, org, body, **headers)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = await _post(client, org, body, **headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    # Another body under the same key is a client bug: refused, nothing stored.
    other = await _post(client, org, _batch(3, start=50, id_field=None), **headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    await services.writer.wait_inserted()
    assert set(_counts(ch, org.id).values()) == {8}
    # The ids derived from the key are stored: what a retry that runs afresh is matched by.
    derived = rows(ch, "SELECT event_id FROM {db}.events ORDER BY user_id LIMIT 1")[0][0]
    assert derived.startswith("idem:") and derived.endswith(":0")


async def test_a_retry_that_runs_afresh_is_dropped_by_the_derived_ids(client, services, ch, org):
    # As after a crash between storing the events and recording the answer: the store has
    # no record (here: deleted), the request runs again.
    body = _batch(6, id_field=None)
    first = await _post(client, org, body, **{"Idempotency-Key": "k"})
    assert first.status_code == 200
    from app.ingest.idempotency import key_hash
    from app.ingest.routes import ingest_state

    await ingest_state(services).idempotency.abandon(org.id, key_hash("k"))
    again = await _post(client, org, body, **{"Idempotency-Key": "k"})
    assert again.json() == {"accepted": 6, "rejected": 0, "errors": [], "duplicates": 6}
    await services.writer.wait_inserted()
    assert set(_counts(ch, org.id).values()) == {6}


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9".encode(), "a\tb"])
async def test_a_malformed_idempotency_key_is_refused(client, org, key):
    r = await _post(client, org, _batch(1), **{"Idempotency-Key": key})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_idempotency_key"


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_the_store_claims_answers_and_releases(backend, tmp_path, redis_url):
    if backend == "local":
        store = LocalIdempotencyStore(str(tmp_path / "idem.sqlite3"), ttl_s=3600)
        redis = None
    else:
        import redis.asyncio as aioredis

        redis = aioredis.Redis.from_url(redis_url)
        store = RedisIdempotencyStore(redis, ttl_s=3600)
    try:
        assert (await store.begin(1, "k", "b1")).state == "new"
        assert (await store.begin(1, "k", "b1")).state == "busy"  # a concurrent duplicate
        assert (await store.begin(2, "k", "b1")).state == "new"  # keys are per org
        await store.finish(1, "k", "b1", b'{"accepted":1}')
        done = await store.begin(1, "k", "b1")
        assert (done.state, done.response) == ("done", b'{"accepted":1}')
        assert (await store.begin(1, "k", "b2")).state == "mismatch"
        await store.abandon(2, "k")
        assert (await store.begin(2, "k", "b1")).state == "new"
    finally:
        store.close()
        if redis is not None:
            await redis.aclose()


async def test_a_local_claim_of_a_previous_process_is_taken_over(tmp_path):
    path = str(tmp_path / "idem.sqlite3")
    crashed = LocalIdempotencyStore(path, ttl_s=3600)
    assert (await crashed.begin(1, "k", "b")).state == "new"
    # The process died before answering: the next one runs the request again.
    restarted = LocalIdempotencyStore(path, ttl_s=3600)
    assert (await restarted.begin(1, "k", "b")).state == "new"
    # A finished answer survives the restart.
    await restarted.finish(1, "k", "b", b"{}")
    assert (await LocalIdempotencyStore(path, ttl_s=3600).begin(1, "k", "b")).state == "done"
    crashed.close()
    restarted.close()


async def test_concurrent_copies_of_an_id_are_stored_once(ch, tmp_path):
    window = EventIdWindow(3600, 1000)
    first = await window.claim(1, ["a", "b"])
    second = asyncio.create_task(window.claim(1, ["b", "c"]))
    await asyncio.sleep(0.05)
    assert not second.done()  # waits for the outcome of "b"
    window.settle(first, stored=False)  # the first failed: "b" is the second's to store
    claim = await asyncio.wait_for(second, GUARD_S)
    assert (claim.keep, claim.duplicates) == ([0, 1], 0)
    window.settle(claim, stored=True)
    third = await window.claim(1, ["a", "b", "c", ""])
    assert (third.keep, third.duplicates) == ([0, 3], 2)


async def test_the_window_is_rebuilt_from_events_at_start(ch, tmp_path):
    cols = make_columns(5, org_id=9)
    cols.event_id = [f"e{i}" for i in range(5)]
    ch.insert_sync("events_queue", cols.to_arrow())
    writer = EventWriter(ch, Settings(wal_dir=str(tmp_path)))
    await writer.start()
    try:
        claim = await writer.event_ids.claim(9, ["e0", "e4", "e5"])
        assert (claim.keep, claim.duplicates) == ([2], 2)
        other_org = await writer.event_ids.claim(8, ["e0"])
        assert other_org.duplicates == 0
    finally:
        await writer.stop()


async def test_wal_off_a_retry_completes_an_insert_cut_short_instead_of_doubling(
    make_client, ch, org
):
    # WAL off, a keyed request whose INSERT failed half-way (rollup_1h refused it after
    # `events` had taken it; a crash inside the INSERT leaves the same), then the retry.
    async with make_client(wal_enabled=False) as (client, _services):
        ch.command_sync(
            f"ALTER TABLE {ch.database}.rollup_1h ADD CONSTRAINT no CHECK events > 1e12"
        )
        body = _batch(12, id_field=None)
        # The views run one after the other for this attempt: with parallel_view_processing,
        # which views commit before rollup_1h's refusal depends on thread timing (under load
        # `events` had not), and the half-way state is what this test is about.
        writer = _services.writer
        production = writer.insert_settings
        writer.insert_settings = {**production, "parallel_view_processing": 0}
        failed = await _post(client, org, body, **{"Idempotency-Key": "w1"})
        writer.insert_settings = production
        assert failed.status_code == 503
        partial = _counts(ch, org.id)
        assert partial["events"] == 12 and partial["rollup_1h"] == 0
        ch.command_sync(f"ALTER TABLE {ch.database}.rollup_1h DROP CONSTRAINT no")
        retry = await _post(client, org, body, **{"Idempotency-Key": "w1"})
        assert retry.status_code == 200
        assert retry.json() == {"accepted": 12, "rejected": 0, "errors": []}
    assert set(_counts(ch, org.id).values()) == {12}


def test_ingest_result_without_duplicates_keeps_its_shape():
    from app.ingest.schema import IngestResult

    assert msgspec.json.encode(IngestResult(1, 0, [])) == b'{"accepted":1,"rejected":0,"errors":[]}'
