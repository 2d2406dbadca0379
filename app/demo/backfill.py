"""The demo's past: 30 days of the shop's traffic, written through the real ingest path.

Why through the ingest path: the rollups (1 s, 1 min, 1 h, 1 day and the detail rollups) are
filled by materialized views on `events_queue`, so events must enter there exactly as live
ones do. Each simulated request is encoded as JSON and goes through `build_columns` (the
handler's validation and enrichment: user agent → device/browser/os, IP → country) and then
`EventWriter.submit` (WAL, micro-batches, INSERT into `events_queue`); only the HTTP hop and
the past-skew limit (`CLICKPULSE_INGEST_MAX_PAST_SKEW_S`, 7 days) are left out.

The shape (`rate_at`): a daily cycle (quiet at night, peak in the afternoon, UTC), a weekly one
(weekends lower), a launch spike (nine days back: traffic ×4 decaying over a day, many
signups, referrals from Hacker News) and an incident (three days back: 45 minutes in which
most pageviews error and purchases almost stop). The live traffic follows the same curve
(`run_traffic(shape=rate_at)`), so the history meets the present without a step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from app.demo.traffic import TrafficModel
from app.ingest.enrich import Enricher
from app.ingest.parse import RequestContext, build_columns

log = logging.getLogger("clickpulse.demo")

DAY_S = 86400
INCIDENT_S = 45 * 60
CHUNK_EVENTS = 50_000  # events per writer submission (one simulated bulk request)
MAX_PENDING = 200_000  # wait for the writer beyond this many accepted, uninserted rows
# The demo's population (history and live): most come a few times a month, so a 30-day funnel
# converts like a shop's, not like 2,000 people who each visited a hundred times.
SHOPPERS = 50_000


@dataclass(frozen=True)
class Moments:
    """When the launch and the incident happened, for a history ending at `end_s`."""

    launch_s: int
    incident_s: int

    @classmethod
    def before(cls, end_s: int) -> Moments:
        """The launch at 09:00 UTC nine days back, the incident at 14:00 UTC three days back
        (whole hours: the spike and the incident look the same in every run)."""
        launch_day = (end_s - 9 * DAY_S) // DAY_S * DAY_S
        incident_day = (end_s - 3 * DAY_S) // DAY_S * DAY_S
        return cls(launch_s=launch_day + 9 * 3600, incident_s=incident_day + 14 * 3600)


def daily_factor(t: float) -> float:
    """Time of day (UTC): ~0.3 at 04:00, ~1.7 at 16:00."""
    hour = (t % DAY_S) / 3600
    return 1.0 + 0.7 * math.cos(2 * math.pi * (hour - 16) / 24)


def weekly_factor(t: float) -> float:
    """Saturday and Sunday are quieter (epoch day 0 was a Thursday)."""
    weekday = (int(t // DAY_S) + 3) % 7  # 0 = Monday
    return 0.6 if weekday >= 5 else 1.0


def rate_at(t: float, base_per_s: float, moments: Moments | None = None) -> float:
    """Events per second at epoch second `t`: base × daily × weekly (× launch)."""
    rate = base_per_s * daily_factor(t) * weekly_factor(t)
    if moments is not None and t >= moments.launch_s:
        rate *= 1.0 + 3.0 * math.exp(-(t - moments.launch_s) / (8 * 3600))
    return rate


def profile_at(t: float, moments: Moments | None) -> dict[str, float]:
    """What sessions do at `t`: more signups after the launch, errors in the incident."""
    if moments is None:
        return {}
    if moments.incident_s <= t < moments.incident_s + INCIDENT_S:
        return {"error_p": 0.6, "buy_p": 0.03}
    if moments.launch_s <= t < moments.launch_s + DAY_S:
        return {"signup_p": 0.12, "referrer": "https://news.ycombinator.com/"}
    return {}


def simulated_requests(
    model: TrafficModel,
    start_s: int,
    end_s: int,
    base_per_s: float,
    moments: Moments | None,
    step_s: int = 600,
) -> Any:
    """Lists of events (dicts), about CHUNK_EVENTS each, from `start_s` to `end_s` in time
    order; each `step_s` slice gets a Poisson-ish share of `rate_at` spread over whole sessions."""
    rng = model.rng
    chunk: list[dict] = []
    t = start_s
    while t < end_s:
        stop = min(end_s, t + step_s)
        middle = (t + stop) / 2
        expected = rate_at(middle, base_per_s, moments) * (stop - t)
        want = max(0, round(rng.gauss(expected, math.sqrt(expected) if expected > 0 else 0)))
        profile = profile_at(middle, moments)
        made = 0
        while made < want:
            ts_ms = int(rng.uniform(t, stop) * 1000)
            for event in model.session(ts_ms, **profile):
                if event["ts"] < end_s * 1000:
                    chunk.append(event)
                    made += 1
        if len(chunk) >= CHUNK_EVENTS:
            yield chunk
            chunk = []
        t = stop
    if chunk:
        yield chunk


async def backfill(
    writer: Any,
    org_id: int,
    *,
    days: float = 30,
    base_per_s: float = 1.0,
    end_s: int | None = None,
    seed: int | None = 7,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write `days` of history ending at `end_s` (default: now) for `org_id` through `writer`;
    returns {events, seconds, moments}. Waits until every row is inserted (rollups filled)."""
    started = time.monotonic()
    end_s = int(time.time()) if end_s is None else end_s
    start_s = int(end_s - days * DAY_S)
    moments = Moments.before(end_s) if days >= 10 else None
    model = TrafficModel(users=SHOPPERS, seed=seed)
    enricher = Enricher()
    encode = msgspec.json.encode
    total = 0
    for events in simulated_requests(model, start_s, end_s, base_per_s, moments):
        now_ms = time.time_ns() // 1_000_000
        ctx = RequestContext(
            org_id=org_id,
            now_ms=now_ms,
            min_ts_ms=start_s * 1000,
            max_ts_ms=now_ms,
            max_event_bytes=32768,
            user_agent="",
            client_ip="127.0.0.1",
        )
        columns, errors = build_columns(
            [(i, encode(e)) for i, e in enumerate(events)], ctx, enricher
        )
        if errors:  # the generator makes only valid events; say so loudly if not
            raise ValueError(f"backfill: {len(errors)} events refused, first: {errors[0]}")
        if writer.pending_rows > MAX_PENDING:
            await writer.wait_inserted()
        await writer.submit(columns)
        total += len(columns)
        if progress is not None:
            progress(total)
    await writer.wait_inserted()
    return {
        "events": total,
        "seconds": time.monotonic() - started,
        "from": start_s,
        "to": end_s,
        "moments": moments,
    }
