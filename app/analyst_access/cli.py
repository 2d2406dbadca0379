"""`clickpulse analysts grant|revoke`: print (or, with --apply, run) the access-control DDL.

Printing is the default so an operator can review the statements or feed them to their own
tooling; `--apply` runs them through the ClickHouse facade, which needs a ClickHouse server
(`CLICKPULSE_CLICKHOUSE_URL`, connected as a user allowed to manage access): chDB has no
writable access storage.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable

from app.analyst_access.grants import (
    AnalystAccess,
    GrantError,
    Limits,
    Password,
    analyst_relations,
    apply_statements,
    grant_statements,
    plan_access,
    revoke_statements,
    validate_cluster,
)
from app.config import Settings


def _org(raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None


def add_parser(
    sub: argparse._SubParsersAction,
    common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """Register `analysts grant` and `analysts revoke` under the `clickpulse` command."""
    analysts = sub.add_parser(
        "analysts", help="ClickHouse users that see only their org (server mode)"
    )
    actions = analysts.add_subparsers(dest="analysts_command", required=True)

    def shared(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        common(p)
        p.add_argument("--org", type=_org, required=True, help="org id")
        p.add_argument(
            "--cluster", help="ON CLUSTER name (default: $CLICKPULSE_CLICKHOUSE_CLUSTER)"
        )
        p.add_argument(
            "--interserver-secret",
            action="store_true",
            help="the cluster's remote_servers has a <secret>: shards run Distributed "
            "queries as the analyst, so row policies go on the *_local tables only",
        )
        p.add_argument(
            "--apply", action="store_true", help="run the statements (ClickHouse server only)"
        )
        return p

    grant = shared(actions.add_parser("grant", help="create or refresh an analyst's access"))
    grant.add_argument("--user", required=True, help="ClickHouse user name")
    secret = grant.add_mutually_exclusive_group()
    secret.add_argument("--password-sha256", metavar="HEX", help="SHA-256 hex of the password")
    secret.add_argument(
        "--password-env", metavar="VAR", help="read the password from this environment variable"
    )
    for f in dataclasses.fields(Limits):
        grant.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int,
            default=f.default,
            help=f"(default {f.default})",
        )
    grant.set_defaults(func=cmd_grant)

    revoke = shared(actions.add_parser("revoke", help="drop an analyst, or all of an org's access"))
    revoke.add_argument("--user", help="drop this ClickHouse user")
    revoke.add_argument(
        "--keep-user", action="store_true", help="only take the org's role from --user"
    )
    revoke.add_argument(
        "--drop-org",
        action="store_true",
        help="drop the org's role, row policies, profile and quota (every analyst of the org)",
    )
    revoke.set_defaults(func=cmd_revoke)


def _access(args: argparse.Namespace, settings: Settings, cluster: str | None) -> AnalystAccess:
    from app.migrate import render_clickhouse

    database = settings.clickhouse_database
    # The same variant `clickpulse migrate` applied: the table set differs with a cluster
    # (Distributed over *_local) and with Kafka (error tables).
    migrations = render_clickhouse(
        database=database,
        events_ttl_days=settings.events_ttl_days,
        cluster=cluster,
        kafka_brokers=settings.kafka_brokers if settings.clickhouse_url else None,
        kafka_topic=settings.kafka_topic,
    )
    limits = None
    if hasattr(args, "max_execution_time"):
        limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    return plan_access(
        database=database,
        org=args.org,
        relations=analyst_relations(migrations, database),
        limits=limits,
        interserver_secret=args.interserver_secret,
    )


def _emit(statements: list[str], args: argparse.Namespace, settings: Settings) -> int:
    if not args.apply:
        for statement in statements:
            print(statement + ";")
        return 0
    if not settings.clickhouse_url:
        print(
            "--apply needs a ClickHouse server (set CLICKPULSE_CLICKHOUSE_URL): chDB has no "
            "writable access storage. Without --apply the statements are printed.",
            file=sys.stderr,
        )
        return 2
    from app.clickhouse import connect

    ch = connect(database=settings.clickhouse_database, url=settings.clickhouse_url)
    try:
        done = apply_statements(
            ch.command_sync, statements, on_done=lambda s: print(s + ";", flush=True)
        )
    finally:
        ch.close()
    print(f"applied {done} statements", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, build: Callable[[AnalystAccess, str | None], list[str]]) -> int:
    try:
        settings = Settings.from_env(**({"data_dir": args.data_dir} if args.data_dir else {}))
    except ValueError as exc:  # a malformed CLICKPULSE_* variable
        print(f"analysts {args.analysts_command}: {exc}", file=sys.stderr)
        return 2
    try:
        cluster = validate_cluster(args.cluster or settings.clickhouse_cluster)
        statements = build(_access(args, settings, cluster), cluster)
        return _emit(statements, args, settings)
    except GrantError as exc:
        print(f"analysts {args.analysts_command}: {exc}", file=sys.stderr)
        return 2


def cmd_grant(args: argparse.Namespace) -> int:
    """`clickpulse analysts grant`: the statements giving --user read access to --org."""

    def build(access: AnalystAccess, cluster: str | None) -> list[str]:
        password = None
        if args.password_sha256:
            password = Password.from_sha256_hex(args.password_sha256)
        elif args.password_env:
            value = os.environ.get(args.password_env)
            if not value:
                raise GrantError(f"environment variable {args.password_env} is unset or empty")
            password = Password.from_plaintext(value)
        return grant_statements(access, user=args.user, password=password, cluster=cluster)

    return _run(args, build)


def cmd_revoke(args: argparse.Namespace) -> int:
    """`clickpulse analysts revoke`: the statements undoing a grant."""

    def build(access: AnalystAccess, cluster: str | None) -> list[str]:
        return revoke_statements(
            access,
            user=args.user,
            keep_user=args.keep_user,
            drop_org=args.drop_org,
            cluster=cluster,
        )

    return _run(args, build)
