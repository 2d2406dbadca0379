"""Orgs (their quotas), ingest API keys and user tokens."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from app.credentials import (
    API_KEY_PREFIX,
    create_user_token,
    display_prefix,
    hash_secret,
    new_secret,
)
from app.store.base import NotFound, Repo


class OrgRepo(Repo):
    async def get_limits(self, org_id: int) -> dict[str, Any]:
        row = await self.fetchone("SELECT limits FROM orgs WHERE id = %s", (org_id,))
        if row is None:
            raise NotFound("org")
        return row["limits"] or {}

    async def set_limits(self, org_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        row = await self.fetchone(
            "UPDATE orgs SET limits = %s WHERE id = %s RETURNING limits", (Jsonb(limits), org_id)
        )
        if row is None:
            raise NotFound("org")
        return row["limits"]


class ApiKeyRepo(Repo):
    _COLUMNS = "id, name, prefix, created_at, revoked_at"

    async def list(self, org_id: int) -> list[dict[str, Any]]:
        return await self.fetchall(
            f"SELECT {self._COLUMNS} FROM api_keys WHERE org_id = %s ORDER BY id", (org_id,)
        )

    async def create(self, org_id: int, name: str) -> tuple[dict[str, Any], str]:
        """The new key's row and its secret (returned once, never stored)."""
        secret = new_secret(API_KEY_PREFIX)
        row = await self.fetchone(
            "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s) "
            f"RETURNING {self._COLUMNS}",
            (org_id, name, display_prefix(secret), hash_secret(secret)),
        )
        assert row is not None
        return row, secret

    async def lookup(self, key_hash: str) -> dict[str, Any] | None:
        """org_id, revoked and the org's limits of the key with this hash (ingest auth)."""
        return await self.fetchone(
            "SELECT k.org_id, k.revoked_at IS NOT NULL AS revoked, o.limits "
            "FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.key_hash = %s",
            (key_hash,),
        )

    async def lookup_site(self, domain: str) -> dict[str, Any] | None:
        """Like `lookup`, for the key a Plausible site's domain is mapped to (ingest_sites)."""
        return await self.fetchone(
            "SELECT k.org_id, k.revoked_at IS NOT NULL AS revoked, o.limits "
            "FROM ingest_sites s JOIN api_keys k ON k.id = s.api_key_id "
            "JOIN orgs o ON o.id = k.org_id WHERE s.domain = %s",
            (domain,),
        )

    async def revoke(self, org_id: int, key_id: int) -> None:
        row = await self.fetchone(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = %s AND org_id = %s RETURNING id",
            (key_id, org_id),
        )
        if row is None:
            raise NotFound("api_key")


class TokenRepo(Repo):
    async def principal(self, token_hash: str) -> dict[str, Any] | None:
        """org_id, user_id and role of a live token (not revoked, not expired), else None."""
        return await self.fetchone(
            "SELECT t.org_id, t.user_id, m.role FROM user_tokens t "
            "JOIN org_members m ON m.org_id = t.org_id AND m.user_id = t.user_id "
            "WHERE t.token_hash = %s AND t.revoked_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at > now())",
            (token_hash,),
        )

    async def live_hashes(self, token_hashes: list[str]) -> set[str]:
        """Which of `token_hashes` still name a live token (not revoked, not expired, member):
        one query for any number of them (the push tier's periodic re-check)."""
        if not token_hashes:
            return set()
        rows = await self.fetchall(
            "SELECT t.token_hash FROM user_tokens t "
            "JOIN org_members m ON m.org_id = t.org_id AND m.user_id = t.user_id "
            "WHERE t.token_hash = ANY(%s) AND t.revoked_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at > now())",
            (token_hashes,),
        )
        return {r["token_hash"] for r in rows}

    _COLUMNS = (
        "t.id, t.prefix, u.email, coalesce(m.role, '') AS role, t.created_at, t.expires_at, "
        "t.revoked_at"
    )

    async def list(self, org_id: int) -> list[dict[str, Any]]:
        """The org's user tokens (prefix only), oldest first."""
        return await self.fetchall(
            f"SELECT {self._COLUMNS} FROM user_tokens t JOIN users u ON u.id = t.user_id "
            "LEFT JOIN org_members m ON m.org_id = t.org_id AND m.user_id = t.user_id "
            "WHERE t.org_id = %s ORDER BY t.id",
            (org_id,),
        )

    async def create(
        self, org_id: int, email: str, role: str, ttl_days: int
    ) -> tuple[dict[str, Any], str]:
        """A new token for the user `email` in the org, who becomes (or stays) a member with
        `role`; it expires after `ttl_days` (0 = never). The row and the secret (returned
        once, never stored)."""
        async with self.conn() as conn, conn.transaction():
            secret = await create_user_token(conn, org_id, email, role, ttl_days)
            created = await (
                await conn.execute(
                    f"SELECT {self._COLUMNS} FROM user_tokens t JOIN users u ON u.id = t.user_id "
                    "LEFT JOIN org_members m ON m.org_id = t.org_id AND m.user_id = t.user_id "
                    "WHERE t.token_hash = %s",
                    (hash_secret(secret),),
                )
            ).fetchone()
        assert created is not None
        return created, secret

    async def revoke(self, org_id: int, token_id: int) -> str:
        """Revoke one of the org's tokens (idempotent); its hash (to drop cached lookups).
        NotFound for a missing id and for another org's."""
        row = await self.fetchone(
            "UPDATE user_tokens SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = %s AND org_id = %s RETURNING token_hash",
            (token_id, org_id),
        )
        if row is None:
            raise NotFound("token")
        return row["token_hash"]
