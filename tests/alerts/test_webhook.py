"""Webhooks: delivered to a real local receiver; failing or slow receivers are retried with a
timeout in the background and never hold up evaluation; the outcome is recorded."""

from __future__ import annotations

import asyncio

from tests.alerts.conftest import (
    SETTLE_S,
    Receiver,
    base_second,
    create_alert,
    events_of,
    series_events,
    state_of,
)


async def run_fire_and_resolve(env, org, url: str) -> tuple[dict, int]:
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=2, webhook_url=url)
    await env.post(org.api_key, series_events(base, [10, 10, 0, 0, 0]))
    await env.tick(base + SETTLE_S - 1)
    return a, base


async def test_webhook_delivered_with_the_event(env, org, pg_url):
    async with Receiver() as rx:
        a, base = await run_fire_and_resolve(env, org, rx.url)
        await env.tick_through(base + SETTLE_S, base + 4 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert [c["json"]["state"] for c in rx.calls] == ["firing", "resolved"]
        fired = rx.calls[0]
        assert fired["request"].startswith("POST /hook ")
        assert fired["headers"]["content-type"] == "application/json"
        body = fired["json"]
        assert body["alert_id"] == a["id"] and body["org_id"] == org.id
        assert body["alert_name"] == "errors high" and body["value"] == 10
        assert body["threshold"] == 5 and body["comparator"] == ">" and body["t"] == base + 1
        events = await events_of(pg_url, a["id"])
        assert body["event_id"] == events[0]["id"]
        assert [(e["delivery"], e["delivery_attempts"]) for e in events] == [
            ("delivered", 1),
            ("delivered", 1),
        ]


async def test_failing_webhook_is_retried_then_recorded(env, org, pg_url):
    async with Receiver(status=500) as rx:
        a, base = await run_fire_and_resolve(env, org, rx.url)
        await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
        await env.evaluator.sender.drain()
        assert len(rx.calls) == 3  # the first attempt + alert_webhook_retries=2
        [event] = await events_of(pg_url, a["id"])
        assert event["delivery"] == "failed" and event["delivery_attempts"] == 3
        assert event["delivery_error"] == "HTTP 500"
        assert (await state_of(pg_url, a["id"]))[0] == "firing"


async def test_slow_webhook_never_blocks_evaluation(env, org, pg_url):
    async with Receiver(delay_s=30) as rx:  # never answers within the 0.3 s timeout
        a, base = await run_fire_and_resolve(env, org, rx.url)
        await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
        # fired; its webhook is still in flight while evaluation carries on to the resolve
        assert env.evaluator.sender.pending == 1
        await env.tick_through(base + 2 + SETTLE_S, base + 3 + SETTLE_S)
        assert (await state_of(pg_url, a["id"]))[0] == "resolved"
        kinds = [e["kind"] for e in await events_of(pg_url, a["id"])]
        assert kinds == ["firing", "resolved"]
        assert env.evaluator.sender.pending >= 1
        await asyncio.wait_for(env.evaluator.sender.drain(), 30)
        events = await events_of(pg_url, a["id"])
        assert all(e["delivery"] == "failed" for e in events)
        assert all(e["delivery_error"].startswith("timed out") for e in events)
        assert all(e["delivery_attempts"] == 3 for e in events)


async def test_undelivered_webhooks_are_resent_after_a_restart(make_env, org, pg_url):
    async with Receiver(delay_s=30) as slow:
        async with make_env(alert_webhook_timeout_s=30) as env:
            a, base = await run_fire_and_resolve(env, org, slow.url)
            await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
            assert env.evaluator.sender.pending == 1
        # stopped mid-delivery: the event stays pending in the store
        [event] = await events_of(pg_url, a["id"])
        assert event["delivery"] == "pending"
    async with Receiver() as rx:
        from tests.alerts.conftest import pg_rows

        await pg_rows(pg_url, "UPDATE alerts SET webhook_url = %s", (rx.url,))
        async with make_env() as env:
            await env.evaluator.sender.drain()
            assert [c["json"]["event_id"] for c in rx.calls] == [event["id"]]
            [event] = await events_of(pg_url, a["id"])
            assert event["delivery"] == "delivered"
