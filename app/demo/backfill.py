"""The demo's past: 30 days of the shop's traffic, written through the real ingest writer.

Through the writer (`EventWriter.submit`: WAL, micro-batches, INSERT into `events_queue`)
because the materialized views on `events_queue` fill `events` and every rollup, exactly as for
live events. Not through `build_columns`: a JSON round trip per event cost ~40 µs of CPU (82 s
for 30 days). Sessions (as `TrafficModel.session` makes them) are drawn a chunk at a time with
numpy and become `Columns` directly, with the handler's outputs: each shopper's user agent and
IP enriched once by its `Enricher`, no event ids, `value` 0.0 unless a purchase
(tests/demo/test_backfill.py compares a chunk with `build_columns` over the same JSON).

The shape (`rate_at`): a daily cycle (UTC), a weekly one (weekends lower), a launch spike (nine
days back: ×4 decaying over a day, signups, Hacker News referrals) and an incident (three days
back: 45 minutes in which most pageviews error, purchases almost stop). The live traffic follows
the same curve (`run_traffic(rate=…)`), so the history meets the present without a step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.demo.traffic import PAGES, PLANS, REFERRERS, USER_AGENTS
from app.ingest.columns import Columns
from app.ingest.enrich import Enricher

log = logging.getLogger("clickpulse.demo")

DAY_S = 86400
INCIDENT_S = 45 * 60
CHUNK_EVENTS = 100_000  # events per writer submission (about; whole sessions)
MAX_PENDING = 300_000  # wait for the writer beyond this many accepted, uninserted rows
# The demo's population (history and live): most come a few times a month, so a 30-day funnel
# converts like a shop's, not like 2,000 people who each visited a hundred times.
SHOPPERS = 50_000
# Session behaviour, as in `TrafficModel.session`.
CLICK_P = 0.25  # per pageview
CART_P = 0.15  # per session
PAGEVIEWS = (1, 8)  # per session, uniform
STEP_MS = (1, 40)  # between pageviews
ELEMENTS = ("cta", "nav", "card", "footer")
ERROR_CODES = ("500", "502", "TypeError", "timeout")
NORMAL = {"error_p": 0.03, "buy_p": 0.4, "signup_p": 0.01, "referrer": None}
# First octets left out of the shoppers' addresses (private, loopback, link-local, test nets).
NOT_PUBLIC = frozenset({10, 100, 127, 169, 172, 192, 198, 203})


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


def profile_at(t: float, moments: Moments | None) -> dict[str, Any]:
    """What sessions do at `t`: more signups after the launch, errors in the incident."""
    if moments is not None:
        if moments.incident_s <= t < moments.incident_s + INCIDENT_S:
            return {**NORMAL, "error_p": 0.6, "buy_p": 0.03}
        if moments.launch_s <= t < moments.launch_s + DAY_S:
            return {**NORMAL, "signup_p": 0.12, "referrer": "https://news.ycombinator.com/"}
    return NORMAL


def events_per_session(profile: dict[str, Any]) -> float:
    """The mean number of events of a session with `profile`."""
    pageviews = sum(PAGEVIEWS) / 2
    return (
        pageviews * (1 + CLICK_P + profile["error_p"])
        + CART_P * (1 + profile["buy_p"])
        + profile["signup_p"]
    )


@dataclass(frozen=True)
class Shoppers:
    """The simulated population, one entry per shopper, enriched once each."""

    user_id: np.ndarray
    user_agent: np.ndarray
    ip: np.ndarray
    plan: np.ndarray
    device: np.ndarray
    browser: np.ndarray
    os: np.ndarray
    country: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int, enricher: Enricher) -> Shoppers:
        """`size` shoppers with a weighted real user agent, a public IPv4 address and a plan;
        device/browser/OS/country are what `enricher` (the ingest handler's) says of them."""
        weights = np.array([w for w, _ in USER_AGENTS], dtype=float)
        agents = np.array([ua for _, ua in USER_AGENTS], dtype=object)
        agent_of = rng.choice(len(agents), size, p=weights / weights.sum())
        first = np.array([a for a in range(1, 224) if a not in NOT_PUBLIC])
        octets = zip(
            rng.choice(first, size).tolist(),
            rng.integers(0, 256, size).tolist(),
            rng.integers(0, 256, size).tolist(),
            rng.integers(1, 255, size).tolist(),
            strict=True,
        )
        ips = [f"{a}.{b}.{c}.{d}" for a, b, c, d in octets]
        parsed = [enricher.user_agent(ua) for ua in agents]
        return cls(
            user_id=np.array([f"user-{i:05d}" for i in range(size)], dtype=object),
            user_agent=agents[agent_of],
            ip=np.array(ips, dtype=object),
            plan=np.array(PLANS, dtype=object)[rng.integers(0, len(PLANS), size)],
            device=np.array([p[0] for p in parsed], dtype=object)[agent_of],
            browser=np.array([p[1] for p in parsed], dtype=object)[agent_of],
            os=np.array([p[2] for p in parsed], dtype=object)[agent_of],
            country=np.array([enricher.country(ip) for ip in ips], dtype=object),
        )


def _pick(rng: np.random.Generator, options: tuple | list, n: int) -> np.ndarray:
    return np.array(options, dtype=object)[rng.integers(0, len(options), n)]


def _filled(value: Any, n: int) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.full(n, value, dtype=object)


def session_rows(
    rng: np.random.Generator, shoppers: Shoppers, start_ms: np.ndarray, profile: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The events of one session per entry of `start_ms`, unordered, as row arrays: ts, event,
    shopper, session_id, path, referrer, value, props (as `keys`/`values`, n × 2, and `props`,
    how many of the two are set). `profile` holds one error_p, buy_p, signup_p and referrer
    (None: the usual mix) per session."""
    n = len(start_ms)
    shopper = rng.integers(0, len(shoppers.user_id), n)
    session_id = np.array([f"s-{x:012x}" for x in rng.integers(0, 1 << 48, n).tolist()], object)
    mixed = np.equal(profile["referrer"], None) | (rng.random(n) < 0.3)
    referrer = np.where(mixed, _pick(rng, REFERRERS, n), profile["referrer"])
    base_ms = start_ms - rng.integers(0, 901, n)
    # Pageviews: each session's steps, STEP_MS apart (`before` runs over all sessions and is
    # made relative to each session's first step).
    views = rng.integers(PAGEVIEWS[0], PAGEVIEWS[1] + 1, n)
    of = np.repeat(np.arange(n), views)
    first = np.cumsum(views) - views
    steps = rng.integers(STEP_MS[0], STEP_MS[1] + 1, len(of))
    before = np.cumsum(steps) - steps
    view_ts = base_ms[of] + before - before[first][of]
    end_ms = base_ms + np.add.reduceat(steps, first)
    view_path = _pick(rng, PAGES, len(of))
    entry = np.where(np.arange(len(of)) == first[of], referrer[of], "")
    clicked = rng.random(len(of)) < CLICK_P
    failed = rng.random(len(of)) < profile["error_p"][of]
    carted = rng.random(n) < CART_P
    bought = carted & (rng.random(n) < profile["buy_p"])
    signed = rng.random(n) < profile["signup_p"]
    plan = shoppers.plan[shopper]
    bought_n, clicked_n, failed_n = int(bought.sum()), int(clicked.sum()), int(failed.sum())
    # (session of each row, ts, event, path, referrer, value, props as ((key, values), ...))
    parts = [
        (of, view_ts, "pageview", view_path, entry, 0.0, (("plan", plan[of]),)),
        (of[clicked], view_ts[clicked] + 5, "click", view_path[clicked], "", 0.0,
         (("element", _pick(rng, ELEMENTS, clicked_n)),)),
        (of[failed], view_ts[failed] + 7, "error", view_path[failed], "", 0.0,
         (("code", _pick(rng, ERROR_CODES, failed_n)),)),
        (np.flatnonzero(carted), end_ms[carted], "add_to_cart", "/cart", "", 0.0, ()),
        (np.flatnonzero(bought), end_ms[bought] + 20, "purchase", "/checkout", "",
         np.round(rng.lognormal(3.6, 0.6, bought_n), 2),
         (("plan", plan[bought]), ("currency", "EUR"))),
        (np.flatnonzero(signed), end_ms[signed], "signup", "/pricing", "", 0.0, ()),
    ]  # fmt: skip
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ROW_FIELDS}
    for rows, ts, event, path, ref, value, props in parts:
        m = len(rows)
        keys = np.full((m, 2), None, dtype=object)
        values = np.full((m, 2), None, dtype=object)
        for i, (key, given) in enumerate(props):
            keys[:, i] = key
            values[:, i] = given
        cols["session"].append(rows)
        cols["ts"].append(ts)
        cols["event"].append(_filled(event, m))
        cols["path"].append(_filled(path, m))
        cols["referrer"].append(_filled(ref, m))
        cols["value"].append(np.full(m, value) if isinstance(value, float) else value)
        cols["keys"].append(keys)
        cols["values"].append(values)
        cols["props"].append(np.full(m, len(props)))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    session = out.pop("session")
    out["shopper"] = shopper[session]
    out["session_id"] = session_id[session]
    return out


ROW_FIELDS = ("session", "ts", "event", "path", "referrer", "value", "keys", "values", "props")


def to_columns(rows: dict[str, np.ndarray], shoppers: Shoppers, org_id: int) -> Columns:
    """`rows` (of `session_rows`, already ordered) as the ingest handler's `Columns`, with its
    enrichment per shopper; `received_at` is now, as for a request."""
    cols = Columns()
    n = len(rows["ts"])
    who = rows["shopper"]
    cols.org_id = [org_id] * n
    cols.ts = rows["ts"].tolist()
    cols.event = rows["event"].tolist()
    cols.user_id = shoppers.user_id[who].tolist()
    cols.session_id = rows["session_id"].tolist()
    cols.value = rows["value"].tolist()
    cols.path = rows["path"].tolist()
    cols.referrer = rows["referrer"].tolist()
    cols.country = shoppers.country[who].tolist()
    cols.device = shoppers.device[who].tolist()
    cols.browser = shoppers.browser[who].tolist()
    cols.os = shoppers.os[who].tolist()
    cols.received_at = [time.time_ns() // 1_000_000] * n
    present = np.arange(2) < rows["props"][:, None]  # row-major: key 1 then key 2 of each row
    cols.prop_keys = rows["keys"][present].tolist()
    cols.prop_values = rows["values"][present].tolist()
    cols.prop_counts = rows["props"].tolist()
    return cols


def simulated_rows(
    rng: np.random.Generator,
    shoppers: Shoppers,
    start_s: int,
    end_s: int,
    base_per_s: float,
    moments: Moments | None,
    step_s: int = 600,
    chunk_events: int = CHUNK_EVENTS,
) -> Iterator[dict[str, np.ndarray]]:
    """Row arrays (`session_rows`) in time order, about `chunk_events` each, from `start_s` to
    `end_s`: each `step_s` slice gets a Poisson number of sessions for `rate_at` × its length
    (whole sessions; events outside [`start_s`, `end_s`) are dropped)."""
    starts: list[np.ndarray] = []
    profiles: list[dict[str, Any]] = []
    expected_events = 0.0
    t = start_s
    while t < end_s:
        stop = min(end_s, t + step_s)
        middle = (t + stop) / 2
        profile = profile_at(middle, moments)
        expected = rate_at(middle, base_per_s, moments) * (stop - t)
        count = int(rng.poisson(expected / events_per_session(profile)))
        starts.append(rng.integers(t * 1000, stop * 1000, count))
        profiles.append(profile)
        expected_events += expected
        t = stop
        if expected_events >= chunk_events or t >= end_s:
            yield _ordered(session_rows(rng, shoppers, *_merge(starts, profiles)), start_s, end_s)
            starts, profiles, expected_events = [], [], 0.0


def _merge(
    starts: list[np.ndarray], profiles: list[dict[str, Any]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    sizes = [len(s) for s in starts]
    merged = {
        key: np.repeat(np.array([p[key] for p in profiles], dtype=object), sizes)
        for key in ("error_p", "buy_p", "signup_p", "referrer")
    }
    for key in ("error_p", "buy_p", "signup_p"):
        merged[key] = merged[key].astype(float)
    return np.concatenate(starts), merged


def _ordered(rows: dict[str, np.ndarray], start_s: int, end_s: int) -> dict[str, np.ndarray]:
    # Whole seconds [start_s, end_s): a session's events never fall outside the window promised.
    ts = rows["ts"]
    keep = np.flatnonzero((ts >= start_s * 1000) & (ts < end_s * 1000))
    order = keep[np.argsort(rows["ts"][keep], kind="stable")]
    return {k: v[order] for k, v in rows.items()}


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
    returns {events, seconds, from, to, moments}. Waits until every row is inserted (rollups
    filled)."""
    started = time.monotonic()
    end_s = int(time.time()) if end_s is None else end_s
    start_s = int(end_s - days * DAY_S)
    moments = Moments.before(end_s) if days >= 10 else None
    rng = np.random.default_rng(seed)
    shoppers = Shoppers.draw(rng, SHOPPERS, Enricher())
    total = 0
    for rows in simulated_rows(rng, shoppers, start_s, end_s, base_per_s, moments):
        columns = to_columns(rows, shoppers, org_id)
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
