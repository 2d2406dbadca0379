"""User tokens (issue 12 item 8): failed-attempt throttle, negative cache, default lifetime,
and the admin API `/tokens`."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import Authenticator, FailureThrottle
from app.credentials import USER_TOKEN_PREFIX, hash_secret, new_secret
from app.errors import ApiError
from tests.api.conftest import FakeClock, pg_exec


def _unknown() -> dict[str, str]:
    return {"Authorization": f"Bearer {new_secret(USER_TOKEN_PREFIX)}"}


@pytest.fixture
def api_settings() -> dict[str, Any]:
    return {"auth_fail_max": 5, "auth_fail_window_s": 60.0}


async def test_failed_attempts_are_throttled_per_address_with_429_and_retry_after(
    api, api_services, org
):
    assert (await api.get("/me", headers=org.h("admin"))).status_code == 200  # cached: known
    lookups = api_services.auth.lookups
    for _ in range(5):
        r = await api.get("/me", headers=_unknown())
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
    assert api_services.auth.lookups == lookups + 5
    for headers in (_unknown(), org.h("viewer")):  # even a real, not yet seen token waits
        r = await api.get("/me", headers=headers)
        assert r.status_code == 429
        assert r.json()["error"] == {
            "code": "too_many_failed_attempts",
            "message": r.json()["error"]["message"],
            "where": {"header": "Authorization"},
        }
        assert 1 <= int(r.headers["retry-after"]) <= 60
    assert api_services.auth.lookups == lookups + 5  # throttled: PostgreSQL not asked
    # A token this address already proved is not locked out by the attacker next to it.
    assert (await api.get("/me", headers=org.h("admin"))).status_code == 200


async def test_unknown_and_malformed_tokens_cost_no_repeated_lookup(api, api_services, org):
    api_services.auth.throttle.max_failures = 0  # off: this test counts lookups only
    lookups = api_services.auth.lookups
    unknown = _unknown()
    for _ in range(3):
        assert (await api.get("/me", headers=unknown)).status_code == 401
    assert api_services.auth.lookups == lookups + 1  # then answered from the negative cache
    for bad in ("cpt_short", "cpt_" + "!" * 43, "cpt_" + "a" * 44, "cpt_" + "a" * 42 + "."):
        r = await api.get("/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
    assert api_services.auth.lookups == lookups + 1  # not the shape we issue: never looked up


class _Tokens:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.lookups = 0

    async def principal(self, token_hash: str) -> dict[str, Any] | None:
        self.lookups += 1
        return self.rows.get(token_hash)


class _Store:
    def __init__(self) -> None:
        self.tokens = _Tokens()


async def test_negative_cache_expires_and_is_cleared_when_the_token_is_created():
    store, clock = _Store(), FakeClock()
    auth = Authenticator(store, negative_s=2.0, throttle=FailureThrottle(0, 60.0), clock=clock)
    token = new_secret(USER_TOKEN_PREFIX)
    for _ in range(2):
        with pytest.raises(Exception) as exc:
            await auth.principal(token)
        assert exc.value.status == 401
    assert store.tokens.lookups == 1
    # Written a moment later by another path (e.g. a restore): refused at most negative_s...
    store.tokens.rows[hash_secret(token)] = {"org_id": 3, "user_id": 4, "role": "viewer"}
    clock.advance(2.0)
    assert (await auth.principal(token)).org_id == 3
    assert store.tokens.lookups == 2
    # ...and not at all when this app creates it (POST /tokens calls created()).
    other = new_secret(USER_TOKEN_PREFIX)
    with pytest.raises(ApiError, match="unknown"):
        await auth.principal(other)
    store.tokens.rows[hash_secret(other)] = {"org_id": 5, "user_id": 6, "role": "admin"}
    auth.created(hash_secret(other))
    assert (await auth.principal(other)).org_id == 5


def test_failure_throttle_windows_keys_and_bound():
    clock = FakeClock(100.0)
    throttle = FailureThrottle(3, 10.0, max_entries=4, clock=clock)
    a, b = ("addr:1.2.3.4", "prefix:cpt_aaaaaa"), ("addr:5.6.7.8", "prefix:cpt_aaaaaa")
    for _ in range(3):
        assert throttle.retry_after(a) is None
        throttle.failed(a)
    assert throttle.retry_after(a) == 10
    # Same token prefix from another address: blocked by the prefix key.
    assert throttle.retry_after(b) == 10
    assert throttle.retry_after(("addr:5.6.7.8", "prefix:cpt_bbbbbb")) is None
    clock.advance(7.5)
    assert throttle.retry_after(a) == 3  # rounded up, never 0
    clock.advance(2.5)
    assert throttle.retry_after(a) is None  # the window is over
    for i in range(10):  # bounded: old keys are forgotten first
        throttle.failed((f"addr:{i}",))
    assert len(throttle._windows) == 4


async def test_tokens_api_lists_creates_and_revokes(api, api_services, org, other_org, pg_url):
    created = await api.post(
        "/tokens", json={"email": "new@acme.test", "role": "editor"}, headers=org.h()
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body.pop("token")
    assert secret.startswith("cpt_") and body["prefix"] == secret[:10]
    assert (body["email"], body["role"], body["revoked_at"]) == ("new@acme.test", "editor", None)
    (lifetime,) = await pg_exec(
        pg_url,
        "SELECT expires_at - created_at = interval '90 days' AS ok FROM user_tokens WHERE id = %s",
        (body["id"],),
    )
    assert lifetime["ok"] is True  # CLICKPULSE_TOKEN_TTL_DAYS default
    me = await api.get("/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["org_id"] == org.id and me.json()["role"] == "editor"

    listed = (await api.get("/tokens", headers=org.h())).json()
    assert [t["email"] for t in listed][-1] == "new@acme.test"
    assert all(t["token"] is None for t in listed)  # never shown again
    assert secret not in str(listed) and hash_secret(secret) not in str(listed)
    assert {t["id"] for t in listed}.isdisjoint(
        t["id"] for t in (await api.get("/tokens", headers=other_org.h())).json()
    )

    # Another org's id is 404, exactly like a missing one; nothing is revoked.
    for headers, token_id in ((other_org.h(), body["id"]), (org.h(), 2**31 - 1)):
        r = await api.delete(f"/tokens/{token_id}", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    assert (await api.get("/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 200

    assert (await api.delete(f"/tokens/{body['id']}", headers=org.h())).status_code == 204
    # Immediate on this node, despite the lookup cache.
    assert (await api.get("/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
    assert (await api.delete(f"/tokens/{body['id']}", headers=org.h())).status_code == 204
    (row,) = [
        t for t in (await api.get("/tokens", headers=org.h())).json() if t["id"] == body["id"]
    ]
    assert row["revoked_at"] is not None


async def test_tokens_api_refuses_non_admins_and_bad_bodies(api, org):
    for role in ("viewer", "editor"):
        assert (await api.get("/tokens", headers=org.h(role))).status_code == 403
        r = await api.post("/tokens", json={"email": "x@y.z", "role": "admin"}, headers=org.h(role))
        assert r.status_code == 403
    for bad in (
        {"email": "x@y.z", "role": "owner"},
        {"email": "not-an-email", "role": "viewer"},
        {"email": "x@y.z", "role": "viewer", "ttl_days": 0},
        {"email": "x@y.z", "role": "viewer", "org_id": 1},
        {"role": "viewer"},
    ):
        r = await api.post("/tokens", json=bad, headers=org.h())
        assert r.status_code == 400, bad
        assert r.json()["error"]["code"] == "invalid_request"
    r = await api.post(
        "/tokens",
        json={"email": "short@acme.test", "role": "viewer", "ttl_days": 1},
        headers=org.h(),
    )
    assert r.status_code == 201
    assert r.json()["expires_at"] is not None


async def test_token_ttl_zero_means_no_expiry(make_org, pg_url, monkeypatch):
    import psycopg

    from app.credentials import create_user_token

    org = await make_org()
    monkeypatch.setenv("CLICKPULSE_TOKEN_TTL_DAYS", "0")
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        forever = await create_user_token(conn, org.id, "f@acme.test", "viewer")
        default = await create_user_token(conn, org.id, "d@acme.test", "viewer", ttl_days=30)
    rows = await pg_exec(
        pg_url,
        "SELECT token_hash, expires_at - created_at AS life FROM user_tokens "
        "WHERE token_hash = ANY(%s)",
        ([hash_secret(forever), hash_secret(default)],),
    )
    lives = {r["token_hash"]: r["life"] for r in rows}
    assert lives[hash_secret(forever)] is None
    assert lives[hash_secret(default)].days == 30
