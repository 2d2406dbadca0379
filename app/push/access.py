"""Who may hold a push socket, whatever the transport: `authorise` at connect (a user token, a
single-use ticket or a public dashboard link), then re-check every open socket's credential so
a revoked one is closed (4401) within the auth cache's time, as its HTTP requests would be
refused. A link's socket is scoped to its dashboard's charts (`SharePrincipal`, hub.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.credentials import SHARE_LINK_PREFIX, USER_TOKEN_PREFIX, hash_secret
from app.errors import ApiError
from app.push import protocol
from app.tickets import TicketStore

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("clickpulse.push")


@dataclass(frozen=True)
class SharePrincipal:
    """A socket opened with a public dashboard link: a viewer of the link's org that may only
    subscribe to the live keys of that dashboard's saved charts (by `chart_id`)."""

    org_id: int
    share_id: int
    dashboard_id: int
    user_id: int = 0
    role: str = "viewer"


class SocketAccess:
    """The hub's credential checks; `conns()` gives the sockets open now."""

    def __init__(self, services: Services, conns: Callable[[], Iterable[Any]]):
        self.services = services
        self._conns = conns
        s = services.settings
        self.settings = s
        self.tickets = TicketStore(
            services.redis, ttl_s=s.ws_ticket_ttl_s, namespace=services.ch.database
        )
        self._revalidator: asyncio.Task[None] | None = None
        self.revalidations = 0  # credential re-check rounds that reached PostgreSQL

    def start(self) -> None:
        """Start re-checking open sockets' tokens in the background."""
        if self._revalidator is None:
            self._revalidator = asyncio.create_task(self._revalidate_loop(), name="push-revalidate")

    async def stop(self) -> None:
        if self._revalidator is not None:
            self._revalidator.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._revalidator
            self._revalidator = None

    async def authorise(
        self, token: str | None, ticket: str | None = None, client: str | None = None
    ) -> tuple[Any, str, int, str]:
        """(principal, token hash, 0, "") for a valid ticket, user token or live dashboard
        link (a `SharePrincipal`), else (None, "", close code, reason). A ticket is redeemed (used up) here, and the socket
        is then bound to the token that asked for the ticket. `client` is the peer address,
        for the failed-attempt throttle."""
        code, reason = protocol.CLOSE_UNAUTHORIZED, "unauthorized"
        auth = self.services.auth
        try:
            if ticket:
                token_hash = await self.tickets.redeem(ticket)
                if token_hash is None:
                    return None, "", code, "unknown, used or expired ticket"
                return await auth.for_hash(token_hash), token_hash, 0, ""
            if token and token.startswith(USER_TOKEN_PREFIX) and len(token) <= 200:
                return await auth.principal(token, client), hash_secret(token), 0, ""
            if token and token.startswith(SHARE_LINK_PREFIX):
                return await self._share(token, client), hash_secret(token), 0, ""
        except Exception as exc:  # ApiError: 401 unknown/revoked, 429 throttled, 503 store down
            status = getattr(exc, "status", 401)
            if status == 503:
                code, reason = protocol.CLOSE_TRY_LATER, "config store unavailable"
            elif status == 429:
                code, reason = protocol.CLOSE_FLOOD, "too many failed attempts"
            elif not isinstance(exc, ApiError):
                log.warning("push authorisation failed: %s", exc)
                code, reason = protocol.CLOSE_TRY_LATER, "could not check the credential"
        return None, "", code, reason

    async def _share(self, token: str, client: str | None) -> SharePrincipal:
        """The link's principal: the same check as every `/s/{token}` request (PostgreSQL row,
        failed-attempt throttle, the link's rate limit counts this connect); ApiError if not."""
        from app.api.shares import live_share  # the link rules live with the link's routes

        share = await live_share(self.services, token, client or "")
        return SharePrincipal(
            org_id=share["org_id"], share_id=share["id"], dashboard_id=share["dashboard_id"]
        )

    async def revalidate(self) -> int:
        """Re-check the credential of every open socket (one PostgreSQL query for all distinct
        user tokens, one for all distinct links) and close those whose token was revoked,
        expired or lost its membership, or whose link was revoked or expired, with 4401.
        Returns how many sockets were closed. If PostgreSQL cannot answer, nothing is closed
        (revocations apply once it is back)."""
        by_hash: dict[str, list[Any]] = {}
        by_link: dict[str, list[Any]] = {}
        for conn in self._conns():
            if conn.close_code is None and conn.token_hash:
                held = by_link if conn.share is not None else by_hash
                held.setdefault(conn.token_hash, []).append(conn)
        closed = 0
        if by_hash:
            live = await self.services.auth.live_hashes(set(by_hash))
            if live is not None:
                self.revalidations += 1
                closed += _close_dead(by_hash, live, "token revoked")
        if by_link:
            links = await self._live_links(set(by_link))
            if links is not None:
                closed += _close_dead(by_link, links, "link revoked or expired")
        return closed

    async def _live_links(self, token_hashes: set[str]) -> set[str] | None:
        from app.store import StoreUnavailable

        try:
            return await self.services.store.shares.live_hashes(sorted(token_hashes))
        except StoreUnavailable:
            return None

    def close_token(self, token_hash: str) -> int:
        """Close this process's sockets opened with the token `token_hash` (it was just
        revoked here); other nodes close theirs at their next `revalidate`."""
        closed = 0
        for conn in list(self._conns()):
            if conn.token_hash == token_hash and conn.close_code is None:
                conn.close(protocol.CLOSE_UNAUTHORIZED, "token revoked")
                closed += 1
        return closed

    async def _revalidate_loop(self) -> None:
        # As often as the auth cache is trusted: a revoked token's socket lives no longer than
        # one of its HTTP requests would be answered.
        interval = max(self.settings.auth_cache_s, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.revalidate()
            except Exception:
                log.exception("push: re-checking socket credentials failed")

    async def credential_live(self, conn: Any) -> bool:
        """Whether the socket's token still authenticates (through the auth cache; a store
        outage keeps it, as for HTTP requests); a link's socket: whether the link is live."""
        if conn.share is not None:
            links = await self._live_links({conn.token_hash})
            return links is None or conn.token_hash in links
        try:
            await self.services.auth.for_hash(conn.token_hash)
        except ApiError as exc:
            return exc.status != 401
        return True


def _close_dead(by_hash: dict[str, list[Any]], live: set[str], reason: str) -> int:
    """Close (4401) the sockets of every hash not in `live`; how many were closed."""
    closed = 0
    for token_hash, conns in by_hash.items():
        if token_hash not in live:
            for conn in conns:
                conn.close(protocol.CLOSE_UNAUTHORIZED, reason)
                closed += 1
    return closed
