"""Prometheus metrics (app/observability): scraped from the metrics port of a served app and
parsed by prometheus_client's parser; every value checked moves by the exact amount the test
caused through the real app (ingest over HTTP, WebSockets, poll rounds, alerts, quotas)."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import numpy as np
import pytest
import websockets

from app.observability.metrics import OrgTopN, RowHistogram, Telemetry
from tests.alerts.conftest import SETTLE_S, base_second, create_alert, series_events
from tests.observability.conftest import SCRAPE_TOKEN, metrics_url, parse, scrape
from tests.push.conftest import drain, recv, send

STOP_GUARD_S = 20  # hang guard only; nothing asserts on time


async def post(node, api_key: str, events, status: int = 200) -> dict:
    r = await node.http.post(
        "/v1/events", json=events, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert r.status_code == status, r.text
    return r.json()


def delta(after, before, name: str, **labels: str) -> float:
    return after.get_value(name, **labels) - before.get_value(name, **labels)


async def test_ingest_counters_move_by_exact_amounts(make_node, org):
    async with make_node() as node:
        before = await scrape(node)
        ts = int((time.time() - 120) * 1000)  # two minutes old: lag between 60 s and 300 s
        body = await post(
            node,
            org.api_key,
            [
                {"event": "page", "ts": ts},
                {"event": "page", "ts": ts + 1},
                {"event": "buy", "ts": ts + 2, "value": 3},
                {"event": 5},  # invalid_type
                {"ts": ts},  # missing_field
            ],
        )
        assert (body["accepted"], body["rejected"]) == (3, 2)
        await node.services.writer.wait_inserted()
        after = await scrape(node)

        assert delta(after, before, "clickpulse_ingest_events_accepted_total") == 3
        assert after.get_value("process_resident_memory_bytes") > 0  # the standard series too
        rejected = "clickpulse_ingest_events_rejected_total"
        assert delta(after, before, rejected, reason="invalid_type") == 1
        assert delta(after, before, rejected, reason="missing_field") == 1
        assert sum(after.series(rejected).values()) - sum(before.series(rejected).values()) == 2
        # The writer inserted exactly those rows, each observed once per lag histogram.
        assert delta(after, before, "clickpulse_writer_batch_rows_sum") == 3
        batches = delta(after, before, "clickpulse_writer_batch_rows_count")
        assert batches >= 1
        assert delta(after, before, "clickpulse_writer_insert_duration_seconds_count") == batches
        lag = "clickpulse_pipeline_lag_seconds_bucket"
        assert delta(after, before, "clickpulse_pipeline_lag_seconds_count") == 3
        assert delta(after, before, lag, le="60.0") == 0
        assert delta(after, before, lag, le="300.0") == 3
        accept = "clickpulse_ingest_accept_to_insert_seconds_count"
        assert delta(after, before, accept) == 3

        # A retried batch (same ids): stored once, the repeat counted as duplicates.
        ids = [{"event": "page", "event_id": f"id-{i}"} for i in range(2)]
        await post(node, org.api_key, ids)
        assert (await post(node, org.api_key, ids))["duplicates"] == 2
        # A wrong key, and a batch of nothing valid: whole requests refused, by code.
        await post(node, "cpk_" + "x" * 43, [{"event": "page"}], status=401)
        await post(node, org.api_key, [{"event": 1}], status=400)
        await node.services.writer.wait_inserted()
        last = await scrape(node)
        assert delta(last, after, "clickpulse_ingest_events_accepted_total") == 2
        assert delta(last, after, "clickpulse_ingest_events_duplicate_total") == 2
        assert delta(last, after, rejected, reason="invalid_type") == 1
        refused = "clickpulse_ingest_requests_refused_total"
        assert delta(last, after, refused, code="invalid_api_key") == 1
        assert delta(last, after, refused, code="no_valid_events") == 1
        assert sum(last.series(refused).values()) - sum(after.series(refused).values()) == 2
        assert delta(last, after, "clickpulse_writer_batch_rows_sum") == 2


async def test_rate_limited_events_count_under_their_reason_and_org(make_node, org):
    async with make_node(ingest_rate_per_s=1) as node:
        before = await scrape(node)
        # The first batch is admitted from a full bucket and leaves ~1,000 s of debt.
        await post(node, org.api_key, [{"event": "page"}] * 1000)
        body = await post(node, org.api_key, [{"event": "page"}] * 7, status=429)
        assert body["error"]["code"] == "rate_limited"
        after = await scrape(node)
    rejected = "clickpulse_ingest_events_rejected_total"
    assert delta(after, before, rejected, reason="rate_limited") == 7
    assert delta(after, before, "clickpulse_ingest_events_accepted_total") == 1000
    assert (
        delta(after, before, "clickpulse_ingest_requests_refused_total", code="rate_limited") == 1
    )
    assert delta(after, before, "clickpulse_throttled_total", limit="ingest_rate") == 1
    assert after.series("clickpulse_org_throttled_total") == {
        frozenset({("org_id", str(org.id))}): 1.0
    }


async def test_only_the_scrape_token_opens_the_metrics(make_node, make_org):
    a, b = await make_org("a"), await make_org("b")
    async with make_node(limit_rate_per_s=0.001, limit_burst=1) as node:
        # Org a is throttled, so the scrape holds a per-org series naming it.
        for _ in range(2):
            await node.http.get("/dashboards", headers=a.admin_headers)
        assert (await scrape(node)).series("clickpulse_org_throttled_total") == {
            frozenset({("org_id", str(a.id))}): 1.0
        }
        url = metrics_url(node)
        basic = base64.b64encode(f"prometheus:{SCRAPE_TOKEN}".encode()).decode()
        wrong_basic = base64.b64encode(f"{SCRAPE_TOKEN}:x".encode()).decode()
        async with httpx.AsyncClient() as http:
            for headers in (
                {},
                b.admin_headers,  # another org's admin token
                a.admin_headers,  # the org's own admin token
                b.ingest_headers,
                {"Authorization": f"Bearer {SCRAPE_TOKEN}x"},
                {"Authorization": f"Bearer {SCRAPE_TOKEN[:-1]}"},
                {"Authorization": f"Basic {wrong_basic}"},  # the token as user name
                {"Authorization": "Basic !!!"},
                {"Authorization": SCRAPE_TOKEN},  # no scheme
            ):
                r = await http.get(url, headers=headers)
                assert r.status_code == 401, headers
                assert "clickpulse_" not in r.text and str(a.id) not in r.text
                assert r.headers["www-authenticate"].startswith("Bearer")
            r = await http.get(url, headers={"Authorization": f"Basic {basic}"})
            assert r.status_code == 200 and "clickpulse_org_throttled_total" in r.text
            bearer = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
            r = await http.head(url, headers=bearer)
            assert r.status_code == 200 and r.content == b""
            assert int(r.headers["content-length"]) > 0  # what a GET would carry
            r = await http.post(url, headers=bearer)
            assert r.status_code == 405 and "clickpulse_" not in r.text
            r = await http.get(url.replace("/metrics", "/metrics/x"), headers=bearer)
            assert r.status_code == 404 and "clickpulse_" not in r.text
        # The app's own port has no Prometheus page: /metrics there is the org's definitions.
        r = await node.http.get("/metrics", headers=b.admin_headers)
        assert r.status_code == 200 and "clickpulse_" not in r.text


async def test_per_org_series_are_capped_to_the_top_orgs(make_node, make_org):
    orgs = [await make_org(f"o{i}") for i in range(3)]
    async with make_node(limit_rate_per_s=0.001, limit_burst=1, metrics_top_orgs=2) as node:
        for org, throttled in zip(orgs, (3, 2, 1), strict=True):
            statuses = [
                (await node.http.get("/dashboards", headers=org.admin_headers)).status_code
                for _ in range(throttled + 1)
            ]
            assert statuses == [200] + [429] * throttled
        limiter = node.services.limiter
        async with (
            limiter.query_slot(orgs[2].id),
            limiter.query_slot(orgs[2].id),
            limiter.query_slot(orgs[1].id),
            limiter.query_slot(orgs[0].id),
        ):
            during = await scrape(node)
        after = await scrape(node)
    assert during.get_value("clickpulse_throttled_total", limit="rate_per_s") == 6
    assert during.series("clickpulse_org_throttled_total") == {
        frozenset({("org_id", str(orgs[0].id))}): 3.0,
        frozenset({("org_id", str(orgs[1].id))}): 2.0,
    }
    assert during.get_value("clickpulse_query_slots_in_use") == 4
    slots = during.series("clickpulse_org_query_slots_in_use")
    assert slots[frozenset({("org_id", str(orgs[2].id))})] == 2.0 and len(slots) == 2
    assert after.get_value("clickpulse_query_slots_in_use") == 0
    assert after.series("clickpulse_org_query_slots_in_use") == {}


async def test_no_per_org_series_when_the_cap_is_zero(make_node, org):
    async with make_node(limit_rate_per_s=0.001, limit_burst=1, metrics_top_orgs=0) as node:
        for _ in range(2):
            await node.http.get("/dashboards", headers=org.admin_headers)
        samples = await scrape(node)
    assert samples.get_value("clickpulse_throttled_total", limit="rate_per_s") == 1
    assert [name for name, _ in samples if name.startswith("clickpulse_org_")] == []


async def test_wal_and_writer_gauges_follow_the_backlog(make_node, org):
    async with make_node(writer_max_delay_ms=3_600_000, writer_max_rows=1_000_000) as node:
        writer = node.services.writer
        await post(node, org.api_key, [{"event": "page"}] * 3)
        held = await scrape(node)
        assert held.get_value("clickpulse_writer_pending_rows") == 3
        assert held.get_value("clickpulse_wal_pending_bytes") == writer.wal.pending_bytes > 0
        assert held.get_value("clickpulse_wal_oldest_segment_age_seconds") > 0
        await writer.wait_inserted()
        flushed = await scrape(node)
    assert flushed.get_value("clickpulse_writer_pending_rows") == 0
    assert flushed.get_value("clickpulse_wal_pending_bytes") == 0
    assert flushed.get_value("clickpulse_wal_oldest_segment_age_seconds") == 0
    # One segment, one INSERT of its three rows.
    assert flushed.get_value("clickpulse_writer_batch_rows_count") == 1
    assert flushed.get_value("clickpulse_writer_batch_rows_sum") == 3
    assert flushed.get_value("clickpulse_writer_batch_rows_bucket", le="10.0") == 1


async def test_websockets_frames_and_poll_rounds(make_node, org):
    async with make_node(push_port=0) as node:
        before = await scrape(node)
        asgi = await node.connect(org.admin_token)
        dedicated_port = node.services.dedicated.port
        direct = await websockets.connect(
            f"ws://127.0.0.1:{dedicated_port}/ws/subscribe?token={org.admin_token}"
        )
        received = 0
        await send(asgi, {"type": "subscribe", "id": 1, "builtin": "page_views", "range_s": 60})
        assert (await recv(asgi))["type"] == "snapshot"
        received += 1
        for ws in (asgi, direct):
            received += len(await drain(ws)) + 1  # + the pong
        open_ = await scrape(node)
        poller = node.services.push.poller
        queries = poller.queries
        for _ in range(3):
            await poller.tick()
        for ws in (asgi, direct):
            received += len(await drain(ws)) + 1
        rounds = await scrape(node)
        await asgi.close()
        await direct.close()
        deadline = time.monotonic() + STOP_GUARD_S
        while node.services.push.conns:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        closed = await scrape(node)
    conns = "clickpulse_push_connections"
    assert open_.get_value(conns, transport="asgi") == 1
    assert open_.get_value(conns, transport="dedicated") == 1
    assert open_.get_value("clickpulse_push_live_keys") == 1
    frames = "clickpulse_push_frames_sent_total"
    assert delta(closed, before, frames) == received
    assert delta(rounds, open_, "clickpulse_push_poll_round_duration_seconds_count") == 3
    ran = poller.queries - queries
    assert ran >= 3  # the subscribed key is read every round
    assert delta(rounds, open_, "clickpulse_push_poll_round_queries_sum") == ran
    assert closed.get_value(conns, transport="asgi") == 0
    assert closed.get_value(conns, transport="dedicated") == 0


async def test_alert_evaluations_are_counted(make_node, org):
    async with make_node(alert_settle_ms=1500) as node:
        base = base_second()
        await create_alert(node, org, threshold=5, for_seconds=3)
        await post(node, org.api_key, series_events(base, [0, 10, 10, 10, 10]))
        await node.services.writer.wait_inserted()
        evaluator, poller = node.services.alerts, node.services.push.poller
        # The first tick places the new alert's cursor at its last complete second, base - 3.
        await poller.tick(now=float(base))
        before = await scrape(node)
        for second in range(base - 1, base + 4):  # completes base - 2 and base - 1, then one each
            await poller.tick(now=float(second + SETTLE_S))
        after = await scrape(node)
    assert delta(after, before, "clickpulse_alert_evaluations_total") == 6  # base - 2 … base + 3
    assert after.get_value("clickpulse_alert_evaluations_total") == evaluator.evaluated_seconds
    # ok → pending at s1, pending → firing at s3.
    assert delta(after, before, "clickpulse_alert_transitions_total") == 2
    assert after.get_value("clickpulse_alerts_active") == 1


async def test_an_ingest_only_process_has_no_push_series(make_node, org):
    async with make_node(roles=("ingest",)) as node:
        await post(node, org.api_key, [{"event": "page"}])
        samples = await scrape(node)
    names = {name for name, _ in samples}
    assert samples.get_value("clickpulse_ingest_events_accepted_total") == 1
    assert "clickpulse_wal_pending_bytes" in names
    assert not any(n.startswith(("clickpulse_push_connections", "clickpulse_alert")) for n in names)


# -- the parts, alone ----------------------------------------------------------------------


def test_row_histogram_puts_each_value_in_its_le_bucket():
    histogram = RowHistogram("x_seconds", "doc", (1, 2, 5))
    histogram.observe_many(np.array([0.0, 1.0, 1.5, 2.0, 5.0, 5.5, 100.0]))
    histogram.observe_many(np.array([]))
    (family,) = histogram.collect()
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("x_seconds_bucket", "1.0")] == 2  # 0 and 1: a bound is in its own bucket
    assert values[("x_seconds_bucket", "2.0")] == 4
    assert values[("x_seconds_bucket", "5.0")] == 5
    assert values[("x_seconds_bucket", "+Inf")] == 7
    assert values[("x_seconds_count", None)] == 7
    assert values[("x_seconds_sum", None)] == 115.0


def test_top_orgs_rank_by_the_last_window_and_keep_cumulative_values():
    now = [0.0]
    top = OrgTopN(2, clock=lambda: now[0])
    top.inc(1, 100)  # a burst long ago
    now[0] = 400.0
    top.inc(2, 3)
    top.inc(3, 2)
    # Org 1's burst is in the previous window: still ranked.
    assert top.exposed() == [(1, 100), (2, 3)]
    now[0] = 1000.0  # two windows later: only recent activity ranks
    top.inc(3, 1)
    top.inc(2, 1)
    top.inc(3, 1)
    assert top.exposed() == [(3, 4), (2, 4)]
    assert top.totals == {1: 100, 2: 4, 3: 4}


def test_a_telemetry_has_a_registry_of_its_own():
    one, two = Telemetry(), Telemetry()
    one.events_accepted.inc(5)
    assert (
        parse(one.exposition().decode()).get_value("clickpulse_ingest_events_accepted_total") == 5
    )
    assert (
        parse(two.exposition().decode()).get_value("clickpulse_ingest_events_accepted_total") == 0
    )


@pytest.mark.parametrize("secret", ["", "Bearer", "Basic", "Basic Og==", "Digest abc"])
def test_presented_secret_refuses_malformed_headers(secret):
    from app.observability.exposition import presented_secret

    assert presented_secret(secret) is None
