"""`clickpulse sites add|remove`: the operator maps a Plausible site's domain to an org."""

from __future__ import annotations

import asyncio

import psycopg

from app.cli import main


def _sites(pg_url: str) -> list[tuple]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT s.domain, k.org_id, k.name, k.revoked_at IS NOT NULL FROM ingest_sites s "
            "JOIN api_keys k ON k.id = s.api_key_id ORDER BY s.domain"
        ).fetchall()


async def _cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)  # the command runs its own event loop


async def test_add_and_remove_a_site(make_org, pg_url, monkeypatch, capsys):
    org = await make_org("shop")
    monkeypatch.setenv("DATABASE_URL", pg_url)
    assert await _cli(["sites", "add", " Shop.Example. ", "--org", str(org.id)]) == 0
    assert _sites(pg_url) == [("shop.example", org.id, "site shop.example", False)]
    # Taken already, no such org, no --org, not a domain: refused, nothing changed.
    assert await _cli(["sites", "add", "shop.example", "--org", str(org.id)]) == 1
    assert await _cli(["sites", "add", "other.example", "--org", "999999"]) == 1
    assert await _cli(["sites", "add", "other.example"]) == 1
    assert await _cli(["sites", "add", "a.example,b.example", "--org", str(org.id)]) == 1
    assert _sites(pg_url) == [("shop.example", org.id, "site shop.example", False)]
    assert await _cli(["sites", "remove", "shop.example"]) == 0
    assert await _cli(["sites", "remove", "shop.example"]) == 1
    assert _sites(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        revoked = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM api_keys WHERE name = 'site shop.example'"
        ).fetchall()
    assert revoked == [(True,)]  # the site's key no longer works anywhere
    err = capsys.readouterr().err
    assert "mapped already" in err and "no org 999999" in err and "needs --org" in err
