"""`clickpulse sql --org N [--format json|csv|parquet] [QUERY]`: an org's read-only SQL.

The same path as `POST /sql` (docs/schema.md): the query is compiled by the querybuilder for
that org (every table read isolated behind the org guard, re-verified before it runs) and run
read-only with the same execution limits; the output goes to stdout exactly as ClickHouse
wrote it, errors to stderr. The query is the argument, or stdin when there is none. This is an
operator's command: it runs on the configured ClickHouse directly, without the API's per-org
quotas, and does not look the org up in PostgreSQL.

Exit status: 0 answered, 1 ClickHouse refused or failed, 2 the query (or `--org`) is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import BinaryIO, TextIO

from app.clickhouse import ClickHouse, ClickHouseError
from app.clickhouse.public_errors import public_error
from app.querybuilder.analyst import (
    OUTPUT_FORMATS,
    AnalystSqlError,
    compile_analyst_sql,
    run_analyst_sync,
)
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.guard import check_org_id


def run_sql(ch: ClickHouse, org_id: int, text: str, output: str, out: BinaryIO, err: TextIO) -> int:
    """Compile and run `text` for `org_id` on `ch`; write the result to `out`. Exit status."""
    try:
        check_org_id(org_id)
    except TenantGuardError as exc:
        print(f"invalid --org: {exc}", file=err)
        return 2
    try:
        query = compile_analyst_sql(text, org_id, database=ch.database)
    except AnalystSqlError as exc:
        print(f"refused ({exc.code}): {exc}", file=err)
        return 2
    try:
        result = run_analyst_sync(ch, query, output)
    except ClickHouseError as exc:
        shown = public_error(exc.code, str(exc), text)
        print(f"query failed: {shown.message}", file=err)
        return 1
    out.write(result.data)
    out.flush()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """The `clickpulse sql` command (see the module docstring)."""
    from app.clickhouse import close_embedded
    from app.config import Settings
    from app.runtime import open_clickhouse

    settings = Settings.from_env(**({"data_dir": args.data_dir} if args.data_dir else {}))
    text = args.query if args.query is not None else sys.stdin.read()
    ch = open_clickhouse(settings)
    try:
        return run_sql(ch, args.org, text, args.format, sys.stdout.buffer, sys.stderr)
    finally:
        ch.close()
        close_embedded()  # chDB's own teardown at exit is not safe with it still open


def add_parser(
    sub: argparse._SubParsersAction,
    common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """Register `clickpulse sql` on the CLI's subcommands."""
    p = common(
        sub.add_parser(
            "sql",
            help="run one read-only SELECT over an org's tables (docs/schema.md)",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    p.add_argument("--org", type=int, required=True, help="the org whose rows the query sees")
    p.add_argument("--format", choices=sorted(OUTPUT_FORMATS), default="json")
    p.add_argument("query", nargs="?", help="the SELECT (read from stdin when left out)")
    p.set_defaults(func=cmd_sql)
