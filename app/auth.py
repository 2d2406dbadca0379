"""Who is calling: user tokens (`Authorization: Bearer cpt_…`) → `Principal(org_id, user_id, role)`.

The token is looked up by its SHA-256 in `user_tokens` joined with `org_members` (the role);
revoked, expired, unknown or malformed → 401. The org id of every request comes from here and
nowhere else. Roles are ordered: viewer (read) < editor (write dashboards, metrics, alerts) <
admin (also API keys and org limits); too low → 403. `analyst` reads like a viewer and may also
run SQL (`POST /sql`, which admins may run too): a capability beside the ladder, checked with
`require_any`.

Lookups are cached in process for `fresh_s` seconds (so a revocation takes effect within that
time); a token used in the last quarter of that time is looked up again in the background, so
busy tokens never make a request wait for PostgreSQL. If PostgreSQL is unreachable, a principal seen in the last `stale_s` seconds keeps working,
so dashboards already read can be served from cache while the config store is down.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.credentials import USER_TOKEN_PREFIX, hash_secret
from app.errors import ApiError
from app.store import StoreUnavailable

# Rank on the viewer < editor < admin ladder; an analyst ranks as a viewer there.
ROLES = {"viewer": 0, "analyst": 0, "editor": 1, "admin": 2}
REFRESH_AT = 0.75  # of fresh_s: from this age on, a cached lookup is renewed in the background
# Every secret this app issues is prefix + secrets.token_urlsafe(32): 43 url-safe characters.
# Anything else cannot be a credential of ours, so it is refused without asking PostgreSQL.
_SECRET_BODY = re.compile(r"[A-Za-z0-9_-]{43}")


def well_formed(secret: str, prefix: str) -> bool:
    """Whether `secret` has the shape of a credential issued with `prefix`."""
    return (
        len(secret) == len(prefix) + 43
        and secret.startswith(prefix)
        and _SECRET_BODY.fullmatch(secret, len(prefix)) is not None
    )


class FailureThrottle:
    """Failed authentications counted per key (a client address, a token prefix) in fixed
    windows of `window_s`; a key with `max_failures` in its current window is blocked until
    the window ends. In process, at most `max_entries` keys (the oldest windows go first)."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_entries: int = 100_000,
        clock: Any = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (start, n)

    def retry_after(self, keys: tuple[str, ...]) -> int | None:
        """Seconds until every blocked key among `keys` is free again; None if none is."""
        if self.max_failures <= 0:
            return None
        now = self.clock()
        wait = 0.0
        for key in keys:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.window_s:
                continue
            if window[1] >= self.max_failures:
                wait = max(wait, window[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, keys: tuple[str, ...]) -> None:
        """Count one failed attempt against each of `keys`."""
        now = self.clock()
        for key in keys:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.window_s:
                self._windows[key] = (now, 1)
                self._windows.move_to_end(key)
            else:
                self._windows[key] = (window[0], window[1] + 1)
        while len(self._windows) > self.max_entries:
            self._windows.popitem(last=False)


def throttle_keys(client: str | None, secret: str) -> tuple[str, ...]:
    """The throttle's keys for one attempt: the client address and the secret's first 10
    characters (the prefix shown in listings, never enough to use the secret)."""
    return (f"addr:{client or '?'}", f"prefix:{secret[:10]}")


def too_many_failures(retry_after: int, header: str = "Authorization") -> ApiError:
    """429 for a client (or token prefix) past its failed-attempt budget."""
    return ApiError(
        429,
        "too_many_failed_attempts",
        f"too many failed authentication attempts; retry in {retry_after} s",
        {"header": header},
        {"Retry-After": str(retry_after)},
    )


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: int
    user_id: int
    role: str

    def require(self, role: str) -> None:
        """Raise 403 unless this principal has at least `role` on the viewer < editor < admin
        ladder (for roles beside it, such as analyst, use `require_any`)."""
        if role == "analyst":
            raise ValueError("analyst is not a rung of the ladder; use require_any")
        if ROLES[self.role] < ROLES[role]:
            raise ApiError(
                403,
                "forbidden",
                f"this needs the {role} role; the token's role is {self.role}",
                {"required_role": role},
            )

    def require_any(self, *roles: str) -> None:
        """Raise 403 unless this principal's role is one of `roles`."""
        if self.role not in roles:
            raise ApiError(
                403,
                "forbidden",
                f"this needs one of the roles {', '.join(roles)}; the token's role is {self.role}",
                {"required_role": list(roles)},
            )


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, {"header": "Authorization"}, {"WWW-Authenticate": "Bearer"}
    )


class Authenticator:
    def __init__(
        self,
        store: Any,
        *,
        fresh_s: float = 5.0,
        stale_s: float = 900.0,
        max_entries: int = 10_000,
        negative_s: float = 2.0,
        throttle: FailureThrottle | None = None,
        clock: Any = time.monotonic,
    ):
        self.store = store
        self.fresh_s = fresh_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self.negative_s = negative_s
        self.throttle = throttle or FailureThrottle(30, 60.0, clock=clock)
        self.clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        # Hashes PostgreSQL said were unknown, revoked or expired -> when that answer expires.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._refreshing: dict[str, asyncio.Task] = {}
        self._generation = 0  # forget() invalidates lookups already running
        self.lookups = 0  # PostgreSQL lookups made (for tests and metrics)

    async def principal(self, token: str, client: str | None = None) -> Principal:
        """The principal of `token` (401 unknown/revoked/expired, 429 throttled, 503 store
        down and the token not seen lately). `client` is the caller's address, for the
        failed-attempt throttle."""
        token_hash = hash_secret(token)
        now = self.clock()
        # A token with a cached answer is never throttled (the address may be shared with an
        # attacker); everything else pays for its failures.
        if token_hash not in self._cache:
            keys = throttle_keys(client, token)
            retry_after = self.throttle.retry_after(keys)
            if retry_after is not None:
                raise too_many_failures(retry_after)
            unknown_until = self._unknown.get(token_hash)
            if unknown_until is not None and now >= unknown_until:
                del self._unknown[token_hash]
                unknown_until = None
            if unknown_until is not None or not well_formed(token, USER_TOKEN_PREFIX):
                self.throttle.failed(keys)
                raise unauthorized("the token is unknown, revoked or expired")
            try:
                return await self.for_hash(token_hash)
            except ApiError as exc:
                if exc.status == 401:
                    self.throttle.failed(keys)
                raise
        return await self.for_hash(token_hash)

    async def for_hash(self, token_hash: str) -> Principal:
        """The principal of the token with this hash, through the cache (no throttle: callers
        hold something that names the token already, e.g. a WebSocket ticket or a socket)."""
        now = self.clock()
        cached = self._cache.get(token_hash)
        if cached is not None and now - cached[1] < self.fresh_s:
            if now - cached[1] >= self.fresh_s * REFRESH_AT:
                self._refresh(token_hash)
            return cached[0]
        try:
            self.lookups += 1
            row = await self.store.tokens.principal(token_hash)
        except StoreUnavailable as exc:
            if cached is not None and now - cached[1] < self.stale_s:
                return cached[0]
            raise ApiError(
                503,
                "store_unavailable",
                "the configuration store is unavailable; try again shortly",
                headers={"Retry-After": "5"},
            ) from exc
        if row is None:
            self._cache.pop(token_hash, None)
            self._remember_unknown(token_hash, now)
            raise unauthorized("the token is unknown, revoked or expired")
        principal = Principal(org_id=row["org_id"], user_id=row["user_id"], role=row["role"])
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[token_hash] = (principal, now)
        return principal

    def _remember_unknown(self, token_hash: str, now: float) -> None:
        if self.negative_s <= 0:
            return
        self._unknown[token_hash] = now + self.negative_s
        self._unknown.move_to_end(token_hash)
        while len(self._unknown) > self.max_entries:
            self._unknown.popitem(last=False)

    def created(self, token_hash: str) -> None:
        """A token with this hash now exists: drop any negative answer for it. (A secret this
        app generates has 256 random bits, so nobody can have presented it before; this is
        for hashes written another way, e.g. restored rows.)"""
        self._unknown.pop(token_hash, None)

    def revoked(self, token_hash: str) -> None:
        """The token is revoked: stop trusting its cached lookup in this process at once."""
        self._cache.pop(token_hash, None)
        task = self._refreshing.pop(token_hash, None)
        if task is not None:
            task.cancel()

    async def live_hashes(self, token_hashes: set[str]) -> set[str] | None:
        """Which of `token_hashes` are still live, in one PostgreSQL query; None when the
        store cannot answer (then nothing is known to be revoked). Dead ones leave the cache."""
        try:
            live = await self.store.tokens.live_hashes(sorted(token_hashes))
        except StoreUnavailable:
            return None
        for token_hash in token_hashes - live:
            self.revoked(token_hash)
        return live

    def forget(self) -> None:
        self._cache.clear()
        self._unknown.clear()
        self._generation += 1

    def _refresh(self, token_hash: str) -> None:
        """Look the token up again in the background (one lookup per token at a time)."""
        if token_hash in self._refreshing:
            return
        task = asyncio.ensure_future(self._lookup_again(token_hash, self._generation))
        self._refreshing[token_hash] = task
        task.add_done_callback(lambda t: self._refreshed(token_hash, t))

    def _refreshed(self, token_hash: str, task: asyncio.Task) -> None:
        if self._refreshing.get(token_hash) is task:
            del self._refreshing[token_hash]
        if not task.cancelled():
            task.exception()  # nobody awaits it; the next request sees the outcome

    async def _lookup_again(self, token_hash: str, generation: int) -> None:
        started = self.clock()  # the entry's age counts from before the lookup
        try:
            row = await self.store.tokens.principal(token_hash)
        except StoreUnavailable:
            return  # the entry expires as usual; then the stale path decides
        if generation != self._generation or token_hash not in self._cache:
            return
        if row is None:  # revoked or expired meanwhile
            self._cache.pop(token_hash, None)
            return
        principal = Principal(org_id=row["org_id"], user_id=row["user_id"], role=row["role"])
        self._cache[token_hash] = (principal, started)
