"""Credentials: ingest API keys and user API tokens.

Both are 256-bit random secrets shown once; only their SHA-256 is stored. A fast hash is
right here (unlike passwords): the secret has full entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "cpk_"
USER_TOKEN_PREFIX = "cpt_"
SHARE_LINK_PREFIX = "cps_"  # a public read-only dashboard link (app/api/shares.py)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <token>` value (scheme in any case, spaces
    around the token dropped); None when absent, empty or of another scheme. HTTP auth and both
    WebSocket transports read the header through this."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def new_secret(prefix: str) -> str:
    """A fresh secret such as `cpk_<43 url-safe chars>`."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """What may be shown to recognise a secret without revealing it."""
    return secret[:10]


async def create_org(conn, name: str) -> int:
    """Insert an org and return its id (conn: psycopg async connection with dict rows)."""
    row = await (
        await conn.execute("INSERT INTO orgs (name) VALUES (%s) RETURNING id", (name,))
    ).fetchone()
    return row["id"]


async def create_api_key(conn, org_id: int, name: str = "") -> str:
    """Create an ingest key for the org and return the secret (shown once)."""
    secret = new_secret(API_KEY_PREFIX)
    await conn.execute(
        "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s)",
        (org_id, name, display_prefix(secret), hash_secret(secret)),
    )
    return secret


async def create_user_token(
    conn, org_id: int, email: str, role: str, ttl_days: int | None = None
) -> str:
    """Ensure the user and their membership with `role` in the org; return a new API token
    that expires after `ttl_days` (default CLICKPULSE_TOKEN_TTL_DAYS, 90; 0 = never)."""
    if ttl_days is None:
        from app.config import Settings

        ttl_days = Settings.from_env().token_ttl_days
    user = await (
        await conn.execute(
            "INSERT INTO users (email) VALUES (%s) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
            (email,),
        )
    ).fetchone()
    await conn.execute(
        "INSERT INTO org_members (org_id, user_id, role) VALUES (%s, %s, %s) "
        "ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        (org_id, user["id"], role),
    )
    secret = new_secret(USER_TOKEN_PREFIX)
    await conn.execute(
        "INSERT INTO user_tokens (org_id, user_id, prefix, token_hash, expires_at) "
        "VALUES (%s, %s, %s, %s, CASE WHEN %s > 0 THEN now() + make_interval(days => %s) END)",
        (org_id, user["id"], display_prefix(secret), hash_secret(secret), ttl_days, ttl_days),
    )
    return secret


async def add_site(conn, org_id: int, domain: str) -> None:
    """Map a Plausible site's `domain` (normalized) to a new ingest key of the org, named after
    it (its limits and revocation are the key's). A domain mapped already raises
    psycopg.errors.UniqueViolation: one site, one org."""
    secret = new_secret(API_KEY_PREFIX)
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s) "
                "RETURNING id",
                (org_id, f"site {domain}", display_prefix(secret), hash_secret(secret)),
            )
        ).fetchone()
        await conn.execute(
            "INSERT INTO ingest_sites (domain, api_key_id) VALUES (%s, %s)", (domain, row["id"])
        )


async def remove_site(conn, domain: str) -> bool:
    """Unmap a site and revoke its key; False when the domain was not mapped."""
    async with conn.transaction():
        row = await (
            await conn.execute(
                "DELETE FROM ingest_sites WHERE domain = %s RETURNING api_key_id", (domain,)
            )
        ).fetchone()
        if row is None:
            return False
        await conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s",
            (row["api_key_id"],),
        )
    return True
