"""Ingest API keys: `Authorization: Bearer cpk_…` → the org, with a short in-process cache.

Keys are looked up by their SHA-256 in PostgreSQL (`api_keys.key_hash`). Every answer —
found, revoked, or unknown — is cached for `ingest_key_cache_ttl_s` (default 5 s), so a
busy sender costs PostgreSQL one query per key every few seconds. The cost of the cache is
staleness, bounded by the TTL: a key revoked on another node stops working within that time,
and `invalidate()` makes it immediate in this process (the API that revokes keys calls it).
Concurrent misses for the same key share one query.

PostgreSQL down (docs/ingest.md): lookups go through the store (its deadline and circuit
breaker), and a key found in the last `stale_s` seconds keeps working from its last lookup.
Failed attempts are throttled per client address and key prefix like user tokens (app/auth.py),
and a key not shaped like ours is refused without a lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.auth import FailureThrottle, throttle_keys, too_many_failures, well_formed
from app.credentials import API_KEY_PREFIX, hash_secret
from app.errors import ApiError


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
    """Key hash → `ApiKey | None`, fresh for `ttl_s`, kept as a fallback for `stale_s`, at most
    `max_entries` (LRU)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        stale_s: float = 900.0,
        max_entries: int = 10_000,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self.throttle = throttle or FailureThrottle(30, 60.0)
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[ApiKey | None]] = {}
        self.lookups = 0  # PostgreSQL queries made (for tests and metrics)
        self.stale_served = 0  # answers from a stale entry while PostgreSQL was unavailable

    def invalidate(self, key_hash: str | None = None) -> None:
        """Forget one key (by its hash) or, with no argument, every key."""
        if key_hash is None:
            self._entries.clear()
        else:
            self._entries.pop(key_hash, None)

    def _cache_key(self, secret: str) -> str:
        return hash_secret(secret)

    def _known_good(self, key_hash: str) -> bool:
        entry = self._entries.get(key_hash)
        return entry is not None and entry[1] is not None and not entry[1].revoked

    async def get(self, store: Any, secret: str) -> ApiKey | None:
        """The key for `secret`, or None if no such key exists. While PostgreSQL cannot
        answer, a key found in the last `stale_s` seconds is answered from its last lookup
        (a revocation made meanwhile applies once PostgreSQL is back)."""
        key_hash = self._cache_key(secret)
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and now - entry[0] < self.ttl_s:
            self._entries.move_to_end(key_hash)
            return entry[1]
        try:
            return await self._lookup(store, key_hash)
        except Exception:
            entry = self._entries.get(key_hash)
            if entry is not None and entry[1] is not None and now - entry[0] < self.stale_s:
                self.stale_served += 1
                return entry[1]
            raise

    async def _lookup(self, store: Any, key_hash: str) -> ApiKey | None:
        """One query per key at a time: concurrent misses share it."""
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            key = await self._query(store, key_hash)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._inflight.pop(key_hash, None)
        future.set_result(key)
        self._entries[key_hash] = (time.monotonic(), key)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return key

    async def _query(self, store: Any, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        row = await store.api_keys.lookup(key_hash)
        if row is None:
            return None
        return ApiKey(
            org_id=row["org_id"], revoked=row["revoked"], rate_per_s=_rate_of(row["limits"])
        )

    async def authenticate(
        self, store: Any, authorization: str | None, client: str | None = None
    ) -> ApiKey:
        """The valid key named by the Authorization header; ApiError 401 otherwise, 429 when
        `client` (or the key's prefix) is past its failed-attempt budget."""
        secret = bearer_secret(authorization)
        keys = throttle_keys(client, secret)
        # A key already known good is never throttled (an attacker may share the address).
        if not self._known_good(hash_secret(secret)):
            retry_after = self.throttle.retry_after(keys)
            if retry_after is not None:
                raise too_many_failures(retry_after)
        if not well_formed(secret, API_KEY_PREFIX):
            self.throttle.failed(keys)
            raise _invalid_key()
        try:
            key = await self.get(store, secret)
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
            self.throttle.failed(keys)
            raise _invalid_key()
        if key.revoked:
            self.throttle.failed(keys)
            raise ApiError(
                401,
                "revoked_api_key",
                "this API key has been revoked; create a new one for the org",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return key


def _invalid_key() -> ApiError:
    return ApiError(
        401,
        "invalid_api_key",
        "unknown API key",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class SiteKeyCache(ApiKeyCache):
    """The key a Plausible site's domain is mapped to (`ingest_sites`), cached like keys.

    A domain is public (every page of the site shows it), so an unknown one is not a failed
    secret and is not throttled; it is refused, and the refusal cached for the TTL."""

    def _cache_key(self, secret: str) -> str:
        return secret  # the domain itself: nothing secret to keep out of memory

    async def _query(self, store: Any, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        row = await store.api_keys.lookup_site(key_hash)
        if row is None:
            return None
        return ApiKey(
            org_id=row["org_id"], revoked=row["revoked"], rate_per_s=_rate_of(row["limits"])
        )

    async def for_domain(self, store: Any, domain: str) -> ApiKey | None:
        """The live key of `domain`; None when it is not mapped or its key is revoked.
        ApiError 503 when PostgreSQL cannot say (and no recent answer is kept)."""
        try:
            key = await self.get(store, domain)
        except Exception as exc:
            raise ApiError(
                503,
                "auth_unavailable",
                "the site could not be looked up right now; retry shortly",
                headers={"Retry-After": "1"},
            ) from exc
        return None if key is None or key.revoked else key
