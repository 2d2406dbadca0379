"""Ingest keys (issue 12 item 8): failed attempts throttled per address and key prefix, keys
not shaped like ours refused without a PostgreSQL lookup."""

from __future__ import annotations

from app.credentials import API_KEY_PREFIX, new_secret


async def _post(client, key: str):
    return await client.post(
        "/v1/events", json=[{"event": "a"}], headers={"Authorization": f"Bearer {key}"}
    )


async def test_failed_key_attempts_are_throttled_without_lookups(make_client, org):
    from app.ingest.routes import ingest_state

    async with make_client(auth_fail_max=5, auth_fail_window_s=60.0) as (client, services):
        assert (await _post(client, org.api_key)).status_code == 200  # known good from now on
        keys = ingest_state(services).keys
        lookups = keys.lookups
        for bad in ("cpk_nope", "cpt_" + "a" * 43, API_KEY_PREFIX + "a" * 42 + "="):
            r = await _post(client, bad)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", bad
        assert keys.lookups == lookups  # never looked up: not the shape of our keys
        for _ in range(2):  # well-formed but unknown: looked up once each, 401
            r = await _post(client, new_secret(API_KEY_PREFIX))
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert keys.lookups == lookups + 2
        r = await _post(client, new_secret(API_KEY_PREFIX))  # the 6th failure in the window
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "too_many_failed_attempts"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert keys.lookups == lookups + 2  # throttled before PostgreSQL was asked
        # The org's real key, already known good, is not locked out by the failures.
        assert (await _post(client, org.api_key)).status_code == 200
