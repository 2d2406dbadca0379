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
import time
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from app.credentials import USER_TOKEN_PREFIX, hash_secret
from app.errors import ApiError
from app.store import StoreUnavailable

# Rank on the viewer < editor < admin ladder; an analyst ranks as a viewer there.
ROLES = {"viewer": 0, "analyst": 0, "editor": 1, "admin": 2}
REFRESH_AT = 0.75  # of fresh_s: from this age on, a cached lookup is renewed in the background


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


def _unauthorized(message: str) -> ApiError:
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
        clock: Any = time.monotonic,
    ):
        self.store = store
        self.fresh_s = fresh_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._refreshing: dict[str, asyncio.Task] = {}
        self._generation = 0  # forget() invalidates lookups already running

    async def principal(self, token: str) -> Principal:
        token_hash = hash_secret(token)
        now = self.clock()
        cached = self._cache.get(token_hash)
        if cached is not None and now - cached[1] < self.fresh_s:
            if now - cached[1] >= self.fresh_s * REFRESH_AT:
                self._refresh(token_hash)
            return cached[0]
        try:
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
            raise _unauthorized("the token is unknown, revoked or expired")
        principal = Principal(org_id=row["org_id"], user_id=row["user_id"], role=row["role"])
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[token_hash] = (principal, now)
        return principal

    def forget(self) -> None:
        self._cache.clear()
        self._generation += 1

    def _refresh(self, token_hash: str) -> None:
        """Look the token up again in the background (one lookup per token at a time)."""
        if token_hash in self._refreshing:
            return
        task = asyncio.ensure_future(self._lookup_again(token_hash, self._generation))
        self._refreshing[token_hash] = task
        task.add_done_callback(lambda t: self._refreshed(token_hash, t))

    def _refreshed(self, token_hash: str, task: asyncio.Task) -> None:
        self._refreshing.pop(token_hash, None)
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


async def provide_principal(request: Request, services: NamedDependency[Any]) -> Principal:
    """The Litestar dependency: authenticate, then charge the org's request-rate bucket."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(USER_TOKEN_PREFIX) or len(token) > 200:
        raise _unauthorized("expected Authorization: Bearer cpt_<token>")
    principal = await services.auth.principal(token)
    await services.limiter.check_rate(principal.org_id)
    return principal
