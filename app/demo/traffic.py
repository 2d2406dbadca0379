"""Synthetic but realistic traffic for the demo: users with sessions browsing a shop.

Each simulated user has a device (a real user-agent string) and a public IP address, so the
server's own enrichment decides browser, OS, device class and country. Sessions walk a small
site map; some add to cart and buy (with a price in `value`), a few hit errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import msgspec

log = logging.getLogger("clickpulse.demo")

USER_AGENTS = [
    # (weight, user agent)
    (
        30,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        12,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    ),
    (
        20,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (
        18,
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    ),
    (
        4,
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ),
    (6, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    (
        5,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    ),
    (
        3,
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    ),
    (
        2,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
]
PAGES = [
    "/",
    "/pricing",
    "/products",
    "/products/shoes",
    "/products/bags",
    "/products/hats",
    "/blog",
    "/blog/launch",
    "/docs",
    "/docs/getting-started",
    "/cart",
    "/checkout",
    "/about",
]
REFERRERS = [
    "",
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://twitter.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
]
PLANS = ["free", "free", "free", "pro", "team"]
# What the demo says it sends (printed at start; keep in step with `TrafficModel.session`).
EVENTS_SENT = (
    "pageview (path, referrer), click (element), add_to_cart, purchase (value in EUR), "
    "signup, error (code)"
)


@dataclass
class SimUser:
    user_id: str
    user_agent: str
    ip: str
    plan: str


def _public_ip(rng: random.Random) -> str:
    while True:
        a = rng.randint(1, 223)
        if a not in (10, 100, 127, 169, 172, 192, 198, 203):
            return f"{a}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


class TrafficModel:
    """Generates events for a population of users; deterministic for a given seed."""

    def __init__(self, users: int = 2000, seed: int | None = None):
        self.rng = random.Random(seed)
        weights = [w for w, _ in USER_AGENTS]
        agents = [ua for _, ua in USER_AGENTS]
        self.users = [
            SimUser(
                user_id=f"user-{i:05d}",
                user_agent=self.rng.choices(agents, weights)[0],
                ip=_public_ip(self.rng),
                plan=self.rng.choice(PLANS),
            )
            for i in range(users)
        ]

    def session(
        self,
        now_ms: int,
        *,
        error_p: float = 0.03,
        buy_p: float = 0.4,
        signup_p: float = 0.01,
        referrer: str | None = None,
    ) -> Iterator[dict]:
        """The events of one visit, timestamps spread over the last few seconds. `error_p`
        (per pageview), `buy_p` (per cart) and `signup_p` (per visit) change its behaviour
        (the backfill's incident and launch); `referrer` overrides where visitors come from."""
        rng = self.rng
        user = rng.choice(self.users)
        session_id = f"s-{rng.getrandbits(48):012x}"
        base = {
            "user_id": user.user_id,
            "session_id": session_id,
            "user_agent": user.user_agent,
            "ip": user.ip,
        }
        if referrer is None or rng.random() < 0.3:
            referrer = rng.choice(REFERRERS)
        ts = now_ms - rng.randint(0, 900)
        for step in range(rng.randint(1, 8)):
            path = rng.choice(PAGES)
            yield {
                **base,
                "event": "pageview",
                "ts": ts,
                "path": path,
                "referrer": referrer if step == 0 else "",
                "props": {"plan": user.plan},
            }
            if rng.random() < 0.25:
                yield {
                    **base,
                    "event": "click",
                    "ts": ts + 5,
                    "path": path,
                    "props": {"element": rng.choice(["cta", "nav", "card", "footer"])},
                }
            if rng.random() < error_p:
                yield {
                    **base,
                    "event": "error",
                    "ts": ts + 7,
                    "path": path,
                    "props": {"code": rng.choice(["500", "502", "TypeError", "timeout"])},
                }
            ts += rng.randint(1, 40)
        if rng.random() < 0.15:
            yield {**base, "event": "add_to_cart", "ts": ts, "path": "/cart"}
            if rng.random() < buy_p:
                price = round(rng.lognormvariate(3.6, 0.6), 2)
                yield {
                    **base,
                    "event": "purchase",
                    "ts": ts + 20,
                    "path": "/checkout",
                    "value": price,
                    "props": {"plan": user.plan, "currency": "EUR"},
                }
        if rng.random() < signup_p:
            yield {**base, "event": "signup", "ts": ts, "path": "/pricing"}

    def batch(self, target_events: int) -> list[dict]:
        """About `target_events` events, whole sessions only."""
        now_ms = int(time.time() * 1000)
        events: list[dict] = []
        while len(events) < target_events:
            events.extend(self.session(now_ms))
        return events


async def run_traffic(
    base_url: str,
    api_key: str,
    events_per_s: float = 40.0,
    tick_s: float = 0.25,
    seed: int | None = None,
    rate: Callable[[float], float] | None = None,
    users: int = 2000,
) -> None:
    """Post generated events to `/v1/events` forever (until cancelled), about `events_per_s`,
    or `rate(now)` events per second when given (the demo's daily and weekly curve)."""
    model = TrafficModel(users=users, seed=seed)
    encoder = msgspec.json.Encoder()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        carry = 0.0
        while True:
            started = time.monotonic()
            carry += (events_per_s if rate is None else rate(time.time())) * tick_s
            # Traffic is bursty: vary the tick's volume around the mean.
            want = int(carry * model.rng.uniform(0.5, 1.5))
            if want > 0:
                batch = model.batch(want)
                # Whole sessions overshoot a small rate: the excess is owed to later ticks
                # (bounded), so the mean rate holds at any setting.
                carry = max(-50.0, carry - len(batch))
                try:
                    response = await client.post(
                        "/v1/events", content=encoder.encode(batch), headers=headers
                    )
                    if response.status_code >= 300:
                        log.warning(
                            "demo traffic: %s %s", response.status_code, response.text[:200]
                        )
                except httpx.HTTPError as exc:
                    log.warning("demo traffic: %s", exc)
            await asyncio.sleep(max(0.0, tick_s - (time.monotonic() - started)))
