"""Per-org ingest rate limit: a token bucket counted in events, in process.

Each org's bucket holds up to one second of its rate and refills continuously. A request is
admitted when the bucket holds at least `min(n, capacity)` tokens and then takes all `n`,
possibly going into debt: so a batch bigger than one second's allowance is still admitted
once (from a full bucket), and the debt delays the org's next requests. A refused request
is told how long to wait (Retry-After).

`RateLimiter` keeps the buckets in process (with N app nodes an org may send up to N× its
rate); `RedisRateLimiter` (used when `REDIS_URL` is set) keeps them in Redis, updated by one
Lua script per request, so all nodes share one bucket per org.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger("clickpulse.ingest.ratelimit")


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


# Token bucket in Redis, shared by every node: KEYS[1] = the org's bucket;
# ARGV = rate (events/s), capacity, events. Time is the Redis server's (nodes' clocks may
# differ). Answers the seconds to wait as a string ("0" = admitted; Lua numbers would be
# truncated to integers in the reply).
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local events = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local needed = math.min(events, capacity)
local wait = 0
if tokens < needed then
  wait = (needed - tokens) / rate
else
  tokens = tokens - events
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
-- kept until the bucket would be full again (+1 s), then a missing key means full
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """The same token bucket, held in Redis so N nodes share one per-org limit.

    `acquire` is async here. If Redis fails, the request is judged by this node's in-process
    bucket instead (logged): ingest stays available, the limit is then per node.
    """

    def __init__(self, redis: object, default_rate_per_s: float, *, prefix: str = "cp:ingest:rl:"):
        self.redis = redis
        self.default_rate_per_s = default_rate_per_s
        self.prefix = prefix
        self.fallback = RateLimiter(default_rate_per_s)
        self._script = redis.register_script(_BUCKET_LUA)  # type: ignore[attr-defined]
        self.redis_errors = 0

    async def acquire(self, org_id: int, events: int, rate_per_s: float | None = None) -> float:
        """Take `events` tokens; 0.0 when admitted, else the seconds to wait."""
        rate = self.default_rate_per_s if rate_per_s is None else rate_per_s
        if rate <= 0:
            return 0.0
        try:
            reply = await self._script(keys=[f"{self.prefix}{org_id}"], args=[rate, rate, events])
        except Exception as exc:  # redis.RedisError, connection errors
            self.redis_errors += 1
            log.warning("ingest rate limit: Redis failed (%s); using this node's bucket", exc)
            return self.fallback.acquire(org_id, events, rate)
        return float(reply.decode() if isinstance(reply, bytes) else reply)
