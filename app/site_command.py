"""`clickpulse sites add DOMAIN --org N` / `clickpulse sites remove DOMAIN`: which org a
Plausible site's events (`POST /api/event`, keyed by nothing but the site's domain) belong to.

An operator's command, not an org admin's API: a domain carries no proof of ownership, so
letting any org claim any domain would let one org take another's traffic (docs/ingest.md,
"Plausible"). `add` creates an ingest key named after the site and maps the domain to it;
`remove` deletes the mapping and revokes that key. Exit status: 0 done, 1 refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import psycopg
from psycopg.rows import dict_row

from app.credentials import add_site, remove_site
from app.ingest.formats.plausible import MAX_DOMAIN, normalize_domain


def cmd_sites(args: argparse.Namespace) -> int:
    """Run `sites add|remove` against the configured PostgreSQL (migrated first)."""
    from app.config import Settings
    from app.db import migrate, resolve_database_url

    domain = normalize_domain(args.domain)
    if not domain or len(domain) > MAX_DOMAIN or "," in domain:
        print(f"not a site domain: {args.domain!r}", file=sys.stderr)
        return 1
    if args.action == "add" and args.org is None:
        print("sites add needs --org N", file=sys.stderr)
        return 1
    settings = Settings.from_env(**({"data_dir": args.data_dir} if args.data_dir else {}))
    url = resolve_database_url(settings)
    migrate(url)

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            if args.action == "remove":
                if not await remove_site(conn, domain):
                    print(f"{domain} is not mapped", file=sys.stderr)
                    return 1
                print(f"{domain}: removed, its key revoked")
                return 0
            try:
                await add_site(conn, args.org, domain)
            except psycopg.errors.UniqueViolation:
                print(f"{domain} is mapped already (remove it first)", file=sys.stderr)
                return 1
            except psycopg.errors.ForeignKeyViolation:
                print(f"no org {args.org}", file=sys.stderr)
                return 1
            print(f"{domain}: events to POST /api/event go to org {args.org}")
            return 0

    return asyncio.run(run())


def add_parser(sub: argparse._SubParsersAction, common: Callable) -> None:
    """Register `sites add|remove` on the CLI's subparsers."""
    p = common(sub.add_parser("sites", help="map a Plausible site's domain to an org"))
    p.add_argument("action", choices=("add", "remove"))
    p.add_argument("domain")
    p.add_argument("--org", type=int, help="the org (for add)")
    p.set_defaults(func=cmd_sites)
