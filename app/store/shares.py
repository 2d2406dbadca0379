"""Public read-only dashboard links (`dashboard_shares`): created and revoked by an org admin,
looked up by the SHA-256 of the link's secret on every request through the link."""

from __future__ import annotations

from typing import Any

from app.credentials import SHARE_LINK_PREFIX, display_prefix, hash_secret, new_secret
from app.store.base import NotFound, Repo

_COLUMNS = "id, dashboard_id, prefix, frame_ancestors, created_at, expires_at, revoked_at"


class ShareRepo(Repo):
    async def create(
        self, org_id: int, dashboard_id: int, frame_ancestors: list[str], ttl_s: int | None
    ) -> tuple[dict[str, Any], str]:
        """A new link to one of the org's dashboards (NotFound if the org has no such
        dashboard); expires after `ttl_s` seconds (None = never). The row and the secret
        (returned once, never stored)."""
        secret = new_secret(SHARE_LINK_PREFIX)
        row = await self.fetchone(
            "INSERT INTO dashboard_shares "
            "(org_id, dashboard_id, prefix, token_hash, frame_ancestors, expires_at) "
            "SELECT d.org_id, d.id, %s, %s, %s, "
            "CASE WHEN %s::integer IS NULL THEN NULL "
            "ELSE now() + make_interval(secs => %s::integer) END "
            f"FROM dashboards d WHERE d.id = %s AND d.org_id = %s RETURNING {_COLUMNS}",
            (
                display_prefix(secret),
                hash_secret(secret),
                frame_ancestors,
                ttl_s,
                ttl_s,
                dashboard_id,
                org_id,
            ),
        )
        if row is None:
            raise NotFound("dashboard")
        return row, secret

    async def list(self, org_id: int, dashboard_id: int) -> list[dict[str, Any]]:
        """The dashboard's links (prefix only), revoked ones included, oldest first."""
        return await self.fetchall(
            f"SELECT {_COLUMNS} FROM dashboard_shares WHERE org_id = %s AND dashboard_id = %s "
            "ORDER BY id",
            (org_id, dashboard_id),
        )

    async def revoke(self, org_id: int, dashboard_id: int, share_id: int) -> str:
        """Revoke one link (idempotent); its token hash (to close its live sockets). NotFound
        if the org's dashboard has no such link."""
        row = await self.fetchone(
            "UPDATE dashboard_shares SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = %s AND org_id = %s AND dashboard_id = %s RETURNING token_hash",
            (share_id, org_id, dashboard_id),
        )
        if row is None:
            raise NotFound("share")
        return str(row["token_hash"])

    async def live(self, token_hash: str) -> dict[str, Any] | None:
        """The live link (not revoked, not expired) with this hash: id, org_id, dashboard_id,
        frame_ancestors; else None."""
        return await self.fetchone(
            "SELECT id, org_id, dashboard_id, frame_ancestors FROM dashboard_shares "
            "WHERE token_hash = %s AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > now())",
            (token_hash,),
        )

    async def live_hashes(self, token_hashes: list[str]) -> set[str]:
        """Which of `token_hashes` still name a live link (not revoked, not expired): one
        query for any number of them (the push tier's periodic re-check of open sockets)."""
        if not token_hashes:
            return set()
        rows = await self.fetchall(
            "SELECT token_hash FROM dashboard_shares WHERE token_hash = ANY(%s) "
            "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            (token_hashes,),
        )
        return {r["token_hash"] for r in rows}
