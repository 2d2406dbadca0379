"""The alerts API: 422 validation, history paging, "test now" without side effects."""

from __future__ import annotations

from tests.alerts.conftest import (
    SETTLE_S,
    alert_body,
    base_second,
    create_alert,
    events_of,
    h,
    pg_rows,
    series_events,
    state_of,
)


async def test_validation_is_422_naming_the_field(env, org):
    cases = [
        ({"metric_inline": {"text": "SELECT bogus(x) AS y"}}, "metric_inline.text"),
        ({"metric_inline": {"text": "SELECT count() FROM events"}}, "metric_inline.text"),
        ({"metric_inline": {"text": "SELECT topK(3)(path) AS p"}}, "metric_inline.text"),
        ({"metric_inline": {"text": "SELECT count() AS n GROUP BY os"}}, "metric_inline.text"),
        ({"comparator": "=="}, "comparator"),
        ({"comparator": "!="}, "comparator"),
        ({"for_seconds": -5}, "for_seconds"),
        ({"for_seconds": 0}, "for_seconds"),
        ({"for_seconds": 10**7}, "for_seconds"),
        ({"resolve_after_seconds": -1}, "resolve_after_seconds"),
        ({"threshold": "high"}, "threshold"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": "file:///etc/passwd"}, "webhook_url"),
        ({"webhook_url": "http://"}, "webhook_url"),
        ({"filters": [{"dimension": "nope", "value": "x"}]}, None),
    ]
    for over, field in cases:
        r = await env.http.post("/alerts", json=alert_body(**over), headers=h(org))
        assert r.status_code == 422, (over, r.text)
        error = r.json()["error"]
        assert error["message"], error
        if field is not None:
            assert error["where"]["field"] == field, (over, error)
    r = await env.http.post("/alerts", content=b"{not json", headers=h(org))
    assert r.status_code == 400
    assert (await env.http.get("/alerts", headers=h(org))).json() == []
    assert env.evaluator.alerts == {}


async def test_saved_metric_alert_and_edits_are_followed(env, org, pg_url):
    r = await env.http.post(
        "/metrics",
        json={"name": "errors", "definition": {"text": "SELECT countIf(event = 'err') AS e"}},
        headers=h(org),
    )
    assert r.status_code == 201, r.text
    metric_id = r.json()["id"]
    body = alert_body(metric_id=metric_id)
    del body["metric_inline"]
    r = await env.http.post("/alerts", json=body, headers=h(org))
    assert r.status_code == 201, r.text
    a = r.json()
    base = base_second()
    await env.post(org.api_key, series_events(base, [10, 10, 10]))
    await env.tick(base + SETTLE_S - 1)
    await env.tick_through(base + SETTLE_S, base + 2 + SETTLE_S)
    assert await state_of(pg_url, a["id"]) == ("firing", base + 2)
    # a PUT keeps the state (no second firing) and applies the new threshold
    r = await env.http.put(
        f"/alerts/{a['id']}", json=body | {"threshold": 100, "version": 1}, headers=h(org)
    )
    assert r.status_code == 200 and r.json()["state"] == "firing"
    assert env.evaluator.alerts[a["id"]].machine.rule.threshold == 100


async def test_events_history_is_paged_newest_first(env, org, make_org, pg_url):
    a = await create_alert(env, org)
    for i in range(7):
        await pg_rows(
            pg_url,
            "INSERT INTO alert_events (alert_id, org_id, kind, value, threshold, at) "
            "VALUES (%s, %s, %s, %s, 5, to_timestamp(%s))",
            (a["id"], org.id, "firing" if i % 2 == 0 else "resolved", i, 1_700_000_000 + i),
        )
    seen, before = [], None
    while True:
        url = f"/alerts/{a['id']}/events?limit=3" + (f"&before={before}" if before else "")
        r = await env.http.get(url, headers=h(org))
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [e["value"] for e in page["events"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    first = (await env.http.get(f"/alerts/{a['id']}/events", headers=h(org))).json()["events"][0]
    assert first["kind"] == "firing" and first["at"].startswith("2023-11-14T22:13:26")
    assert first["delivery"] == "none"
    # another org sees no such alert
    other = await make_org("globex")
    r = await env.http.get(f"/alerts/{a['id']}/events", headers=h(other))
    assert r.status_code == 404
    r = await env.http.post(f"/alerts/{a['id']}/test", headers=h(other))
    assert r.status_code == 404
    r = await env.http.get(f"/alerts/{a['id']}/events?limit=0", headers=h(org))
    assert r.status_code == 400


async def test_test_endpoint_shows_what_would_happen_without_side_effects(env, org, pg_url):
    a = await create_alert(env, org, threshold=5, for_seconds=3)
    base = base_second(60)
    await env.post(org.api_key, series_events(base, [10, 10, 10, 10, 0]))
    now = base + 3 + SETTLE_S  # second base+3 is the newest complete one
    r = await env.http.post(f"/alerts/{a['id']}/test?now={now}", headers=h(org))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["complete_until"] == base + 4 and out["table"] == "rollup_1s"
    by_t = {s["t"]: s for s in out["seconds"]}
    assert by_t[base - 1] == {
        "t": base - 1,
        "value": 0,
        "no_data": False,
        "breaching": False,
        "breach_run": 0,
        "clear_run": by_t[base - 1]["clear_run"],
        "state": "ok",
    }
    assert [by_t[base + i]["breach_run"] for i in range(4)] == [1, 2, 3, 4]
    assert [by_t[base + i]["state"] for i in range(4)] == [
        "pending",
        "pending",
        "firing",
        "firing",
    ]
    assert out["resulting_state"] == "firing" and out["would_fire"] is True
    assert out["stored_state"] == "ok"
    assert out["current"] == {"value": 10, "breach_run": 4, "clear_run": 0, "no_data_run": 0}
    # nothing happened
    assert await events_of(pg_url, a["id"]) == []
    assert (await state_of(pg_url, a["id"]))[0] == "ok"
    r = await env.http.post(f"/alerts/{a['id']}/test?now={now - 3600}", headers=h(org))
    assert r.status_code == 422


async def test_roles(env, org, pg_url):
    import psycopg
    from psycopg.rows import dict_row

    from app.credentials import create_user_token

    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        viewer = await create_user_token(conn, org.id, "v@acme.test", "viewer")
    vh = {"Authorization": f"Bearer {viewer}"}
    r = await env.http.post("/alerts", json=alert_body(), headers=vh)
    assert r.status_code == 403
    a = await create_alert(env, org)
    assert (await env.http.get(f"/alerts/{a['id']}/events", headers=vh)).status_code == 200
    assert (await env.http.post(f"/alerts/{a['id']}/test", headers=vh)).status_code == 200
    r = await env.http.post(
        "/alerts/backtest",
        json={k: v for k, v in alert_body().items() if k != "name"} | {"from": "now-2m"},
        headers=vh,
    )
    assert r.status_code == 200, r.text


async def test_antiflap_anomaly_and_group_fields_are_validated_with_the_field(env, org):
    anomaly = {"kind": "anomaly", "anomaly": {"baseline": "hour"}}
    no_threshold = {"comparator": None, "threshold": None}
    cases = [
        ({"recovery_threshold": 9}, "recovery_threshold"),  # > threshold 5 with ">"
        ({"comparator": "<", "recovery_threshold": 1}, "recovery_threshold"),
        ({"keep_firing_seconds": -1}, "keep_firing_seconds"),
        ({"keep_firing_seconds": 86401}, "keep_firing_seconds"),
        ({"threshold": None}, "threshold"),
        ({"comparator": None}, "comparator"),
        ({"anomaly": {"baseline": "hour"}}, "anomaly"),  # a threshold alert with a band
        ({"kind": "anomaly"} | no_threshold, "anomaly"),
        (anomaly, "comparator"),  # an anomaly alert with a threshold
        (anomaly | no_threshold | {"recovery_threshold": 1}, "recovery_threshold"),
        (anomaly | no_threshold | {"anomaly": {"baseline": "day"}}, "anomaly.baseline"),
        (anomaly | no_threshold | {"anomaly": {"sensitivity": 0}}, "anomaly.sensitivity"),
        (
            anomaly | no_threshold | {"anomaly": {"sensitivity": 2, "recovery_sensitivity": 3}},
            "anomaly.recovery_sensitivity",
        ),
        (anomaly | no_threshold | {"anomaly": {"min_band": -1}}, "anomaly.min_band"),
        (anomaly | no_threshold | {"anomaly": {"x": 1}}, "anomaly"),  # message: unknown `x`
        (anomaly | no_threshold | {"group_by": ["country"]}, "group_by"),
        ({"group_by": ["nope"]}, "group_by"),
        ({"group_by": ["country", "os", "device"]}, "group_by"),
        ({"group_by": ["country"], "max_groups": 0}, "max_groups"),
        ({"group_by": ["country"], "max_groups": 101}, "max_groups"),
    ]
    for over, field in cases:
        body = {k: v for k, v in (alert_body() | over).items() if v is not None}
        r = await env.http.post("/alerts", json=body, headers=h(org))
        assert r.status_code == 422, (over, r.text)
        error = r.json()["error"]
        assert error["where"]["field"] == field, (over, error)
    assert (await env.http.get("/alerts", headers=h(org))).json() == []
    # the valid ones are stored and read back as sent
    r = await env.http.post(
        "/alerts",
        json=alert_body(recovery_threshold=3, keep_firing_seconds=30, group_by=["country"]),
        headers=h(org),
    )
    assert r.status_code == 201, r.text
    a = r.json()
    assert (a["kind"], a["recovery_threshold"], a["keep_firing_seconds"]) == ("threshold", 3, 30)
    assert (a["group_by"], a["max_groups"], a["anomaly"]) == (["country"], 20, None)
    body = {k: v for k, v in alert_body(**anomaly).items() if k not in ("comparator", "threshold")}
    r = await env.http.post("/alerts", json=body, headers=h(org))
    assert r.status_code == 201, r.text
    assert r.json()["anomaly"] == {
        "baseline": "hour",
        "sensitivity": 4.0,
        "recovery_sensitivity": None,
        "direction": "both",
        "min_band": 0.0,
    }
    assert r.json()["threshold"] is None
    # /test is for single-series threshold alerts: the others are pointed at the backtest
    r = await env.http.post(f"/alerts/{r.json()['id']}/test", headers=h(org))
    assert r.status_code == 422 and "backtest" in r.json()["error"]["message"]
