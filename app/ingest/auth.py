"""Ingest API keys: `Authorization: Bearer cpk_…` → the org, with a short in-process cache.

Keys are looked up by their SHA-256 in PostgreSQL (`api_keys.key_hash`). Every answer —
found, revoked, or unknown — is cached for `ingest_key_cache_ttl_s` (default 5 s), so a
busy sender costs PostgreSQL one query per key every few seconds. The cost of the cache is
staleness, bounded by the TTL: a key revoked on another node stops working within that time,
and `invalidate()` makes it immediate in this process (the API that revokes keys calls it).
Concurrent misses for the same key share one query.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.credentials import hash_secret
from app.errors import ApiError

_LOOKUP = """
SELECT k.org_id, k.revoked_at IS NOT NULL AS revoked, o.limits
FROM api_keys k JOIN orgs o ON o.id = k.org_id
WHERE k.key_hash = %s
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the ingest path needs to know about a key."""

    org_id: int
    revoked: bool
    rate_per_s: float | None  # the org's `limits.ingest_rate_per_s`, if set


def bearer_secret(authorization: str | None) -> str:
    """The secret of an `Authorization: Bearer …` header; 401 when absent or malformed."""
    if not authorization:
        raise ApiError(
            401,
            "missing_api_key",
            "send the org's ingest key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(
            401,
            "missing_api_key",
            "the Authorization header must be 'Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return secret


def _rate_of(limits: Any) -> float | None:
    if not isinstance(limits, dict):
        return None
    rate = limits.get("ingest_rate_per_s")
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else None


class ApiKeyCache:
    """Key hash → `ApiKey | None`, cached for `ttl_s`, at most `max_entries` (LRU)."""

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[ApiKey | None]] = {}
        self.lookups = 0  # PostgreSQL queries made (for tests and metrics)

    def invalidate(self, key_hash: str | None = None) -> None:
        """Forget one key (by its hash) or, with no argument, every key."""
        if key_hash is None:
            self._entries.clear()
        else:
            self._entries.pop(key_hash, None)

    async def get(self, pg: Any, secret: str) -> ApiKey | None:
        """The key for `secret`, or None if no such key exists."""
        key_hash = hash_secret(secret)
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(key_hash)
            return entry[1]
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            key = await self._query(pg, key_hash)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._inflight.pop(key_hash, None)
        future.set_result(key)
        if self.ttl_s > 0:
            self._entries[key_hash] = (time.monotonic() + self.ttl_s, key)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return key

    async def _query(self, pg: Any, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        async with pg.connection() as conn:
            row = await (await conn.execute(_LOOKUP, (key_hash,))).fetchone()
        if row is None:
            return None
        return ApiKey(
            org_id=row["org_id"], revoked=row["revoked"], rate_per_s=_rate_of(row["limits"])
        )

    async def authenticate(self, pg: Any, authorization: str | None) -> ApiKey:
        """The valid key named by the Authorization header; ApiError 401 otherwise."""
        secret = bearer_secret(authorization)
        try:
            key = await self.get(pg, secret)
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(
                503,
                "auth_unavailable",
                "the API key could not be checked right now; retry shortly",
                headers={"Retry-After": "1"},
            ) from exc
        if key is None:
            raise ApiError(
                401,
                "invalid_api_key",
                "unknown API key",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if key.revoked:
            raise ApiError(
                401,
                "revoked_api_key",
                "this API key has been revoked; create a new one for the org",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return key
