"""Operator ceilings on per-org quotas (issue 12 item 4): an org admin may only lower its limits
within the ceilings, and nothing stored in `orgs.limits` takes effect above them."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient
from psycopg.types.json import Jsonb

from app.config import Settings
from app.limits import Limiter, OrgLimits
from tests.api.conftest import build_services, make_app, pg_exec

DEFAULTS = {
    "rate_per_s": 50.0,
    "burst": 100,
    "concurrent_queries": 4,
    "rows_per_minute": 500_000_000,
}


def defaults_settings(base: Settings) -> dict:
    # build_services raises the request rate for tests; these tests want the shipped defaults.
    return {"base": base, "limit_rate_per_s": 50.0, "limit_burst": 100}


async def test_admin_cannot_raise_limits_above_the_default_ceilings(
    ch, pg_url, app_settings, make_org
):
    services = build_services(ch, pg_url, **defaults_settings(app_settings))
    org = await make_org()
    async with AsyncTestClient(app=make_app(services)) as api:
        r = await api.get("/org/limits", headers=org.h("admin"))
        assert r.status_code == 200
        assert r.json() == {"overrides": {}, "effective": DEFAULTS, "ceilings": DEFAULTS}
        # What the attacker sent in the issue, one field at a time, then each just above.
        for field, value, ceiling in [
            ("concurrent_queries", 64, 4),
            ("rows_per_minute", 10**18, 500_000_000),
            ("concurrent_queries", 5, 4),
            ("rate_per_s", 50.5, 50.0),
            ("burst", 101, 100),
            ("rows_per_minute", 500_000_001, 500_000_000),
        ]:
            r = await api.put("/org/limits", json={field: value}, headers=org.h("admin"))
            assert r.status_code == 422, (field, value, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_limits"
            assert error["where"] == {"field": f"limits.{field}", "ceiling": ceiling}
            assert f"at most {ceiling:g}" in error["message"]
        # A refused PUT stores nothing; another field in the same body is refused too.
        r = await api.put(
            "/org/limits",
            json={"rate_per_s": 5, "concurrent_queries": 64},
            headers=org.h("admin"),
        )
        assert r.status_code == 422
        assert (await api.get("/org/limits", headers=org.h("admin"))).json()["overrides"] == {}
        # Lowering, and asking for exactly the ceiling, are fine.
        r = await api.put(
            "/org/limits",
            json={"concurrent_queries": 4, "rows_per_minute": 1000, "rate_per_s": 2},
            headers=org.h("admin"),
        )
        assert r.status_code == 200, r.text
        assert r.json()["effective"] == {
            "rate_per_s": 2.0,
            "burst": 100,
            "concurrent_queries": 4,
            "rows_per_minute": 1000,
        }
        assert r.json()["ceilings"] == DEFAULTS


async def test_operator_ceilings_let_an_admin_raise_up_to_them(ch, pg_url, app_settings, make_org):
    services = build_services(
        ch,
        pg_url,
        **defaults_settings(app_settings),
        limit_max_concurrent_queries=16,
        limit_max_rows_per_minute=10**12,
    )
    org = await make_org()
    async with AsyncTestClient(app=make_app(services)) as api:
        r = await api.put(
            "/org/limits",
            json={"concurrent_queries": 16, "rows_per_minute": 10**12},
            headers=org.h("admin"),
        )
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["concurrent_queries"] == 16
        assert r.json()["effective"]["rows_per_minute"] == 10**12
        assert r.json()["ceilings"] == {
            **DEFAULTS,
            "concurrent_queries": 16,
            "rows_per_minute": 10**12,
        }
        r = await api.put("/org/limits", json={"concurrent_queries": 17}, headers=org.h("admin"))
        assert r.status_code == 422
        assert r.json()["error"]["where"] == {"field": "limits.concurrent_queries", "ceiling": 16}
        # The ceilings left unset are the defaults.
        r = await api.put("/org/limits", json={"burst": 101}, headers=org.h("admin"))
        assert r.status_code == 422
        assert r.json()["error"]["where"]["ceiling"] == 100


async def test_stored_oversized_overrides_are_clamped(ch, pg_url, app_settings, make_org):
    """Overrides written before ceilings existed (or by hand in PostgreSQL) take effect only up
    to the ceilings: the effective limits shown and enforced are clamped."""
    services = build_services(ch, pg_url, **defaults_settings(app_settings))
    org, other = await make_org(), await make_org()
    stored = {"concurrent_queries": 64, "rows_per_minute": 10**18, "rate_per_s": 1e9, "burst": 2}
    await pg_exec(pg_url, "UPDATE orgs SET limits = %s WHERE id = %s", (Jsonb(stored), org.id))
    async with AsyncTestClient(app=make_app(services)) as api:
        r = await api.get("/org/limits", headers=org.h("admin"))
        assert r.status_code == 200
        assert r.json()["overrides"] == stored
        # Lower values still apply (burst 2); the others stop at the ceilings.
        assert r.json()["effective"] == {**DEFAULTS, "burst": 2}
        # Enforced, not only shown: the 5th concurrent query of this org waits, then 429.
        limiter = services.limiter
        limiter.queue_wait_s = 0.01
        held = [limiter.query_slot(org.id) for _ in range(4)]
        for slot in held:
            await slot.__aenter__()
        try:
            with pytest.raises(Exception) as exc:
                async with limiter.query_slot(org.id):
                    pass
            assert exc.value.status == 429
            assert exc.value.where == {
                "limit": "concurrent_queries",
                "value": 4,
                "retry_after_s": 1,
            }
            # Another org is unaffected.
            async with limiter.query_slot(other.id) as limits:
                assert limits.concurrent_queries == 4
        finally:
            for slot in held:
                await slot.__aexit__(None, None, None)
        # And a stored rows budget of 1e18 is the ceiling's 500M: spent → 429.
        await limiter.record_rows(org.id, 500_000_000)
        with pytest.raises(Exception) as exc:
            async with limiter.query_slot(org.id):
                pass
        assert exc.value.where["limit"] == "rows_per_minute"
        assert exc.value.where["value"] == 500_000_000


async def test_limiter_clamps_overrides_to_its_ceilings():
    defaults = OrgLimits(rate_per_s=10, burst=20, concurrent_queries=2, rows_per_minute=100)
    ceilings = OrgLimits(rate_per_s=20, burst=40, concurrent_queries=8, rows_per_minute=1000)

    async def load(org_id: int) -> dict:
        return {"concurrent_queries": 64, "rows_per_minute": 500, "rate_per_s": 15, "cpu": 9}

    limiter = Limiter(defaults, ceilings=ceilings, load_overrides=load)
    assert await limiter.limits_for(1) == OrgLimits(
        rate_per_s=15, burst=20, concurrent_queries=8, rows_per_minute=500
    )
    # Without ceilings, the defaults are the ceilings.
    assert Limiter(defaults, load_overrides=load).ceilings == defaults


@pytest.mark.parametrize(
    "overrides",
    [
        {"limit_max_concurrent_queries": 3},  # below the default (4)
        {"limit_max_rows_per_minute": 0},
        {"limit_max_rate_per_s": -1.0},
    ],
)
def test_settings_refuse_a_ceiling_below_its_default(overrides):
    with pytest.raises(ValueError, match="CLICKPULSE_LIMIT_MAX_"):
        Settings(**overrides)


def test_ceilings_from_env(monkeypatch):
    monkeypatch.setenv("CLICKPULSE_LIMIT_MAX_CONCURRENT_QUERIES", "32")
    monkeypatch.setenv("CLICKPULSE_LIMIT_MAX_RATE_PER_S", "75.5")
    s = Settings.from_env()
    assert (s.limit_max_concurrent_queries, s.limit_max_rate_per_s) == (32, 75.5)
    assert s.limit_max_burst is None and s.limit_max_rows_per_minute is None
