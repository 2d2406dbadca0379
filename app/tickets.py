"""Short-lived, single-use WebSocket tickets (`POST /ws/ticket`), so a browser never puts its
long-lived token in a URL (URLs end up in logs, history and proxies).

A ticket is `cpw_` + 32 random url-safe characters, valid for `ttl_s` seconds and redeemable
once. It stands for the token that asked for it: the socket it opens is checked against that
token's revocation like any other. Stored as its SHA-256 → the token's hash: in Redis when
`REDIS_URL` is set (`SET … EX`, redeemed with `GETDEL`, so any node redeems it exactly once),
else in process (bounded).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import Any

from app.credentials import hash_secret

TICKET_PREFIX = "cpw_"
MAX_LOCAL_TICKETS = 100_000


class TicketStore:
    """Issue and redeem tickets; `redis` is a `redis.asyncio.Redis` or None."""

    def __init__(
        self, redis: Any, *, ttl_s: float, namespace: str = "", clock: Any = time.monotonic
    ):
        self.redis = redis
        self.ttl_s = ttl_s
        self.namespace = namespace
        self.clock = clock
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def _key(self, ticket_hash: str) -> str:
        return f"cp:wst:{self.namespace}:{ticket_hash}"

    async def issue(self, token_hash: str) -> str:
        """A new ticket standing for the token with `token_hash`."""
        ticket = TICKET_PREFIX + secrets.token_urlsafe(24)
        ticket_hash = hash_secret(ticket)
        if self.redis is not None:
            await self.redis.set(
                self._key(ticket_hash), token_hash, px=max(int(self.ttl_s * 1000), 1)
            )
            return ticket
        now = self.clock()
        while self._local and (
            len(self._local) >= MAX_LOCAL_TICKETS or next(iter(self._local.values()))[0] <= now
        ):
            self._local.popitem(last=False)
        self._local[ticket_hash] = (now + self.ttl_s, token_hash)
        return ticket

    async def redeem(self, ticket: str) -> str | None:
        """The token hash the ticket stands for, once; None if unknown, used or expired."""
        if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 100:
            return None
        ticket_hash = hash_secret(ticket)
        if self.redis is not None:
            value = await self.redis.getdel(self._key(ticket_hash))
            if value is None:
                return None
            return value.decode() if isinstance(value, bytes) else str(value)
        entry = self._local.pop(ticket_hash, None)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]
