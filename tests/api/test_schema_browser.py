"""The schema browser `/catalog/*` (app/api/schema_browser.py): the org's event names, property
names and top values from its data, with exact counts; another org's names never appear;
hostile property keys are values; quotas and the cache apply like any read."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from app.querybuilder import TenantGuardError
from app.querybuilder.browse import compile_top_values
from app.querybuilder.execute import check_compiled

HOSTILE_KEYS = ["it's", "back`tick", "naïve ключ", "x') OR 1=1 --", 'dq"uote']


def seed(ch: Any, rows: list[dict[str, Any]]) -> None:
    """Insert events with `props` through events_queue (the MVs fill `events` and the rollups)."""
    names = ["org_id", "ts", "event", "user_id", "session_id", "value", "path", "referrer",
             "country", "device", "browser", "os", "props", "received_at"]  # fmt: skip
    now = datetime.now(UTC)
    defaults = {"event": "pageview", "user_id": "u", "session_id": "s", "value": 0.0,
                "path": "/", "referrer": "", "country": "DE", "device": "desktop",
                "browser": "firefox", "os": "linux", "props": {}, "received_at": now}  # fmt: skip
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for row in rows:
        full = {**defaults, **row}
        full["ts"] = datetime.fromtimestamp(full["ts"], UTC)
        full["props"] = list(full["props"].items())
        for n in names:
            cols[n].append(full[n])
    ts = pa.timestamp("ms", tz="UTC")
    types = {"org_id": pa.uint32(), "value": pa.float64(), "ts": ts, "received_at": ts,
             "props": pa.map_(pa.string(), pa.string())}  # fmt: skip
    ch.insert_sync(
        "events_queue",
        pa.table({n: pa.array(v, type=types.get(n, pa.string())) for n, v in cols.items()}),
    )


@pytest.fixture
def shop(api_services, org, other_org):
    t = int(time.time()) - 120
    rows = (
        [{"org_id": org.id, "ts": t, "props": {"plan": "pro", "it's": "a'b"}}] * 3
        + [{"org_id": org.id, "ts": t, "props": {"plan": "free"}, "country": "FR"}] * 2
        + [{"org_id": org.id, "ts": t, "event": "signup", "props": {"plan": "pro"}}]
        + [{"org_id": org.id, "ts": t, "event": "checkout", "props": {k: k for k in HOSTILE_KEYS}}]
        # a week and a day ago: outside the default 7-day window
        + [{"org_id": org.id, "ts": t - 8 * 86400, "event": "ancient"}]
        # org B: markers that must never show for org A
        + [
            {
                "org_id": other_org.id,
                "ts": t,
                "event": "b_secret_event",
                "props": {"b_secret_prop": "b_secret_value", "plan": "b_plan"},
            }
        ]
        * 9  # fmt: skip
    )
    seed(api_services.ch.inner, rows)
    return org


async def get(api, url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await api.get(url, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_events_properties_and_values_with_exact_counts(api, shop):
    h = shop.h("viewer")  # any role reads the schema
    body = await get(api, "/catalog/events", h)
    assert body["columns"] == ["event", "total"]
    assert body["rows"] == [["pageview", 5], ["checkout", 1], ["signup", 1]]
    assert body["meta"]["table"] == "rollup_1h"

    body = await get(api, "/catalog/events", h, range="9d")
    assert ["ancient", 1] in body["rows"]

    body = await get(api, "/catalog/properties", h)
    assert body["columns"] == ["property", "total"]
    assert body["rows"][:2] == [["plan", 6], ["it's", 4]]
    assert sorted(r[0] for r in body["rows"][2:]) == sorted(k for k in HOSTILE_KEYS if k != "it's")
    assert (await get(api, "/catalog/properties", h, event="signup"))["rows"] == [["plan", 1]]

    body = await get(api, "/catalog/values", h, property="plan")
    assert body["columns"] == ["value", "total"]
    assert body["rows"] == [["pro", 4], ["free", 2]]
    body = await get(api, "/catalog/values", h, property="plan", event="pageview")
    assert body["rows"] == [["pro", 3], ["free", 2]]
    body = await get(api, "/catalog/values", h, column="country")
    assert body["rows"] == [["DE", 5], ["FR", 2]]
    assert body["meta"]["table"] == "rollup_1h"
    body = await get(api, "/catalog/values", h, column="path", event="signup")
    assert body["rows"] == [["/", 1]]
    assert body["meta"]["table"] == "events"


async def test_hostile_property_keys_are_values_not_sql(api, shop):
    h = shop.h("viewer")
    for key in HOSTILE_KEYS:
        body = await get(api, "/catalog/values", h, property=key)
        expected = [["a'b", 3], ["it's", 1]] if key == "it's" else [[key, 1]]
        assert body["rows"] == expected, key
    # An event name with quotes is a value too: nothing matches, nothing breaks.
    body = await get(api, "/catalog/properties", h, event="x' OR '1'='1")
    assert body["rows"] == []


async def test_another_orgs_names_and_values_never_appear(api, shop, other_org):
    h = shop.h("viewer")
    seen = []
    seen += (await get(api, "/catalog/events", h))["rows"]
    seen += (await get(api, "/catalog/properties", h))["rows"]
    seen += (await get(api, "/catalog/values", h, property="plan"))["rows"]
    seen += (await get(api, "/catalog/values", h, property="b_secret_prop"))["rows"]
    seen += (await get(api, "/catalog/properties", h, event="b_secret_event"))["rows"]
    assert not [r for r in seen if str(r[0]).startswith("b_")]
    assert (await get(api, "/catalog/values", h, property="b_secret_prop"))["rows"] == []
    # Org B sees its own (the same routes answer per token).
    theirs = await get(api, "/catalog/events", other_org.h("viewer"))
    assert theirs["rows"] == [["b_secret_event", 9]]


async def test_compiled_for_one_org_cannot_be_run_as_another(api_services, org, other_org):
    now = int(time.time())
    compiled = compile_top_values(
        org_id=org.id, database=api_services.ch.database, time_from=now - 3600, time_to=now,
        prop="plan",
    )  # fmt: skip
    check_compiled(compiled, api_services.ch.database)
    forged = msgspec.structs.replace(compiled, params={**compiled.params, "org_id": other_org.id})
    with pytest.raises(TenantGuardError):
        check_compiled(forged, api_services.ch.database)


async def test_language_lists_the_compilers_functions(api, org):
    body = await get(api, "/catalog/language", org.h("viewer"))
    assert "countIf" in body["functions"] and "quantile" in body["functions"]
    assert "uniq" in body["functions"] and "sleep" not in body["functions"]
    assert "country" in body["columns"] and "org_id" not in body["columns"]
    assert "value" not in body["string_columns"]


async def test_refusals(api, org):
    h = org.h("viewer")
    assert (await api.get("/catalog/events")).status_code == 401
    assert (await api.get("/catalog/language")).status_code == 401
    r = await api.get("/catalog/events", params={"range": "60d"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_range"
    r = await api.get("/catalog/values", params={"column": "org_id"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_column"
    r = await api.get("/catalog/values", params={"column": "value"}, headers=h)
    assert r.status_code == 422
    r = await api.get("/catalog/values", headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_arguments"
    r = await api.get("/catalog/values", params={"property": "a\u200bb"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invisible_character"
    r = await api.get("/catalog/events", params={"range": "1m"}, headers=h)
    assert r.status_code == 400


async def test_answers_are_cached_and_charged(api, api_services, shop):
    h = shop.h("viewer")
    before = api_services.ch.query_count
    first = await get(api, "/catalog/events", h)
    assert first["meta"]["cached"] is False and first["meta"]["rows_read"] >= 1
    ran = api_services.ch.query_count
    assert ran > before
    again = await get(api, "/catalog/events", h)
    assert again["meta"]["cached"] is True and again["rows"] == first["rows"]
    assert api_services.ch.query_count == ran
