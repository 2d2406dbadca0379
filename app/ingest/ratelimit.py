"""Per-org ingest rate limit: a token bucket counted in events, in process.

Each org's bucket holds up to one second of its rate and refills continuously. A request is
admitted when the bucket holds at least `min(n, capacity)` tokens and then takes all `n`,
possibly going into debt: so a batch bigger than one second's allowance is still admitted
once (from a full bucket), and the debt delays the org's next requests. A refused request
is told how long to wait (Retry-After). Limits are per process: with N app nodes an org may
send up to N× its rate (a shared Redis bucket is the scaled deployment's follow-up).
"""

from __future__ import annotations

import math
import time


class RateLimiter:
    """Token buckets keyed by org id."""

    def __init__(self, default_rate_per_s: float) -> None:
        self.default_rate_per_s = default_rate_per_s
        self._buckets: dict[int, tuple[float, float]] = {}  # org -> (tokens, updated_at)

    def acquire(self, org_id: int, events: int, rate_per_s: float | None = None) -> float:
        """Take `events` tokens; 0.0 when admitted, else the seconds to wait before retrying."""
        rate = self.default_rate_per_s if rate_per_s is None else rate_per_s
        if rate <= 0:  # 0 (or less) means unlimited
            return 0.0
        now = time.monotonic()
        capacity = rate
        tokens, updated = self._buckets.get(org_id, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * rate)
        needed = min(events, capacity)
        if tokens < needed:
            self._buckets[org_id] = (tokens, now)
            return (needed - tokens) / rate
        self._buckets[org_id] = (tokens - events, now)
        return 0.0

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """Retry-After is whole seconds; never 0 (that would invite an immediate retry)."""
        return str(max(1, math.ceil(wait_s)))
