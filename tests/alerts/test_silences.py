"""Silences: an alert (or every alert of a saved metric) muted until a time keeps being
evaluated and its events recorded, but nothing is sent; ending the silence resumes sending.
Another org's silences and alerts are unreachable (docs/alerts.md, "Silences")."""

from __future__ import annotations

import time
from datetime import datetime

import msgspec

from tests.alerts.conftest import (
    SETTLE_S,
    Receiver,
    alert_body,
    base_second,
    create_alert,
    events_of,
    h,
    series_events,
    state_of,
    ws_connect,
    ws_drain,
)


async def create_silence(env, org, **body) -> dict:
    body.setdefault("until", int(time.time()) + 3600)
    body.setdefault("reason", "deploy")
    r = await env.http.post("/alerts/silences", json=body, headers=h(org))
    assert r.status_code == 201, r.text
    return r.json()


async def saved_metric(env, org) -> int:
    r = await env.http.post(
        "/metrics",
        json={"name": "errors", "definition": {"text": "SELECT countIf(event = 'err') AS e"}},
        headers=h(org),
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_a_silenced_alert_records_events_but_sends_nothing(env, org, pg_url):
    async with Receiver() as rx:
        ch = (
            await env.http.post(
                "/alerts/channels",
                json={"kind": "webhook", "name": "hook", "url": rx.url},
                headers=h(org),
            )
        ).json()
        a = await create_alert(
            env, org, threshold=5, for_seconds=2, channel_ids=[ch["id"]], webhook_url=rx.url
        )
        silence = await create_silence(env, org, alert_id=a["id"], reason="maintenance window")
        assert silence["active"] is True and silence["alert_id"] == a["id"]
        shown = (await env.http.get(f"/alerts/{a['id']}", headers=h(org))).json()["silenced"]
        assert shown["id"] == silence["id"] and shown["reason"] == "maintenance window"
        assert shown["metric_id"] is None

        ws = await ws_connect(env, org.admin_token)
        base = base_second()
        await env.post(org.api_key, series_events(base, [10, 10, 0, 0, 0]))
        await env.tick(base + SETTLE_S - 1)
        await env.tick_through(base + SETTLE_S, base + 3 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert rx.calls == []
        # evaluation went on: fired and resolved, both recorded, both muted by the silence
        assert (await state_of(pg_url, a["id"]))[0] == "resolved"
        events = await events_of(pg_url, a["id"])
        assert [(e["kind"], e["delivery"], e["delivery_attempts"]) for e in events] == [
            ("firing", "silenced", 0),
            ("resolved", "silenced", 0),
        ]
        r = await env.http.get(f"/alerts/{a['id']}/events", headers=h(org))
        assert [e["silenced_by"] for e in r.json()["events"]] == [silence["id"]] * 2
        assert [e["deliveries"] for e in r.json()["events"]] == [[], []]
        # the org's pages still learn the state, flagged so that no toast pops up
        pushed = [m for m in await ws_drain(ws) if m["type"] == "alert"]
        assert [(m["state"], m["silenced"]) for m in pushed] == [
            ("firing", True),
            ("resolved", True),
        ]

        # the silence ends: the next event is sent again (to the channel and the webhook_url)
        r = await env.http.delete(f"/alerts/silences/{silence['id']}", headers=h(org))
        assert r.status_code == 204
        assert (await env.http.get(f"/alerts/{a['id']}", headers=h(org))).json()["silenced"] is None
        base2 = base + 10
        await env.post(org.api_key, series_events(base2, [10, 10]))
        await env.tick_through(base + 4 + SETTLE_S, base2 + 1 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert [c["json"]["state"] for c in rx.calls] == ["firing", "firing"]
        pushed = [m for m in await ws_drain(ws) if m["type"] == "alert"]
        assert [(m["state"], m["silenced"]) for m in pushed] == [("firing", False)]
        await ws.close()
    events = await events_of(pg_url, a["id"])
    assert events[-1]["kind"] == "firing" and events[-1]["delivery"] == "delivered"
    # a deleted silence leaves the muted events muted, without a dangling reference
    assert [e["delivery"] for e in events] == ["silenced", "silenced", "delivered"]


async def test_a_metric_silence_mutes_every_alert_of_that_metric_only(env, org, pg_url):
    metric_id = await saved_metric(env, org)
    async with Receiver() as rx:
        on_metric = []
        for name in ("a", "b"):
            body = alert_body(name=name, metric_id=metric_id, threshold=5, for_seconds=2)
            del body["metric_inline"]
            r = await env.http.post("/alerts", json=body | {"webhook_url": rx.url}, headers=h(org))
            assert r.status_code == 201, r.text
            on_metric.append(r.json())
        inline = await create_alert(
            env, org, name="inline", threshold=5, for_seconds=2, webhook_url=rx.url
        )
        silence = await create_silence(env, org, metric_id=metric_id)
        listed = (await env.http.get("/alerts", headers=h(org))).json()
        assert {a["name"]: (a["silenced"] or {}).get("metric_id") for a in listed} == {
            "a": metric_id,
            "b": metric_id,
            "inline": None,
        }
        base = base_second()
        await env.post(org.api_key, series_events(base, [10, 10]))
        await env.tick(base + SETTLE_S - 1)
        await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert [c["json"]["alert_id"] for c in rx.calls] == [inline["id"]]
    for a in on_metric:
        [event] = await events_of(pg_url, a["id"])
        assert (event["kind"], event["delivery"]) == ("firing", "silenced")
        assert event["id"] and (await state_of(pg_url, a["id"]))[0] == "firing"
    r = await env.http.get("/alerts/silences", headers=h(org))
    assert [s["id"] for s in r.json()] == [silence["id"]]


async def test_a_silence_that_has_ended_or_not_begun_mutes_nothing(env, org, pg_url):
    async with Receiver() as rx:
        a = await create_alert(env, org, threshold=5, for_seconds=2, webhook_url=rx.url)
        now = int(time.time())
        later = await create_silence(env, org, alert_id=a["id"], starts=now + 600, until=now + 900)
        assert later["active"] is False
        base = base_second()
        await env.post(org.api_key, series_events(base, [10, 10]))
        await env.tick(base + SETTLE_S - 1)
        await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert len(rx.calls) == 1
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "delivered"


async def test_silence_validation_and_tenancy(env, org, make_org):
    a = await create_alert(env, org)
    metric_id = await saved_metric(env, org)
    now = int(time.time())
    cases = [
        ({"alert_id": a["id"], "until": now - 10}, "invalid_time", "until"),
        ({"alert_id": a["id"], "until": "yesterday"}, "invalid_time", "until"),
        ({"alert_id": a["id"], "until": now + 400 * 86400}, "invalid_time", "until"),
        (
            {"alert_id": a["id"], "metric_id": metric_id, "until": now + 60},
            "invalid_field",
            "alert_id",
        ),
        ({"until": now + 60}, "invalid_field", "alert_id"),
        ({"alert_id": a["id"], "until": now + 60, "reason": ""}, "invalid_field", "reason"),
        ({"alert_id": a["id"], "until": now + 60, "reason": "x" * 501}, "invalid_field", "reason"),
        ({"alert_id": 999_999, "until": now + 60}, "unknown_alert", "alert_id"),
        ({"alert_id": 2**40, "until": now + 60}, "unknown_alert", "alert_id"),
        ({"metric_id": 999_999, "until": now + 60}, "unknown_metric", "metric_id"),
        ({"alert_id": a["id"], "until": now + 60, "bogus": 1}, "invalid_field", None),
    ]
    for over, code, field in cases:
        body = {"reason": "r"} | over
        r = await env.http.post("/alerts/silences", json=body, headers=h(org))
        assert r.status_code == 422, (over, r.text)
        error = r.json()["error"]
        assert error["code"] == code, (over, error)
        if field is not None:
            assert error["where"] == {"field": field}, (over, error)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 120))
    mine = await create_silence(env, org, alert_id=a["id"], until=iso)
    ends = datetime.fromisoformat(mine["ends_at"].replace("Z", "+00:00"))
    assert ends.timestamp() == now + 120

    other = await make_org("globex")
    # another org's alert and metric cannot be silenced: the answer of an id that does not exist
    for ref, code in (("alert_id", "unknown_alert"), ("metric_id", "unknown_metric")):
        value = a["id"] if ref == "alert_id" else metric_id
        r = await env.http.post(
            "/alerts/silences",
            json={ref: value, "until": now + 60, "reason": "r"},
            headers=h(other),
        )
        assert r.status_code == 422
        assert r.json()["error"] == {
            "code": code,
            "message": f"no {ref.removesuffix('_id')} with id {value}",
            "where": {"field": ref},
        }
    r = await env.http.delete(f"/alerts/silences/{mine['id']}", headers=h(other))
    assert r.status_code == 404
    assert msgspec.json.decode(r.content)["error"]["message"] == "no such silence"
    assert (await env.http.get("/alerts/silences", headers=h(other))).json() == []
    r = await env.http.get("/alerts/silences", headers=h(org))
    assert [s["id"] for s in r.json()] == [mine["id"]]
    r = await env.http.delete(f"/alerts/silences/{2**62}", headers=h(org))
    assert r.status_code == 404
