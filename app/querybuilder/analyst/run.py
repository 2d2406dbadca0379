"""Running a compiled analyst query: prove the guard again on the exact text, then the facade.

`run_analyst` does not trust the `AnalystQuery` it is given: it re-parses `query.sql`, checks
every table read is an isolated, guarded read of `query.org_id`'s rows under the analyst policy
(`guard.verify_tenant_guard`, the metric compiler's guard), that the `org_id` parameter is that
org, and only then asks the ClickHouse facade for the output — read-only, with a time limit,
result limits that throw instead of truncating silently, and a cap on rows read (the caller
passes what is left of the org's per-minute budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import sqlglot

from app.clickhouse import ClickHouse, RawResult
from app.querybuilder.errors import TenantGuardError
from app.querybuilder.guard import ANALYST_POLICY, verify_tenant_guard


class AnalystQuery(msgspec.Struct, frozen=True):
    """One guarded analyst SELECT, ready for `run_analyst`.

    `params` holds exactly `org_id` (the tenant, from the credential); `tables` are the tables
    and views the query reads, for logs and answers.
    """

    sql: str
    params: dict[str, int]
    org_id: int
    database: str
    tables: list[str]
    #: Counts the org's rows the query's reads cover (`guard.visible_rows_query`): what the
    #: org is told it read and is charged for; None when it reads no table.
    visible_rows_sql: str | None = None


@dataclass(frozen=True, slots=True)
class AnalystLimits:
    """Execution limits of one analyst query (ClickHouse settings, applied per query)."""

    max_execution_time_s: int = 30
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 256 * 1024 * 1024
    max_memory_usage: int = 2 * 1024**3


DEFAULT_LIMITS = AnalystLimits()


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """How a result is written (ClickHouse format) and served (media type, file suffix)."""

    clickhouse: str
    media_type: str
    suffix: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "json": OutputFormat("JSON", "application/json", "json"),
    "csv": OutputFormat("CSVWithNames", "text/csv; charset=utf-8", "csv"),
    "parquet": OutputFormat("Parquet", "application/vnd.apache.parquet", "parquet"),
}

_BINARY = "application/octet-stream"
_TSV = "text/tab-separated-values; charset=UTF-8"
_CSV = "text/csv; charset=UTF-8"
_JSON = "application/json; charset=UTF-8"
#: ClickHouse's own format names, for the ClickHouse HTTP interface (app/api/clickhouse_http):
#: each with the media type ClickHouse serves it with. The facade's RAW_FORMATS allows them.
PROTOCOL_FORMATS: dict[str, OutputFormat] = {
    name: OutputFormat(name, media, "bin")
    for name, media in {
        "TabSeparated": _TSV,
        "TabSeparatedWithNames": _TSV,
        "TabSeparatedWithNamesAndTypes": _TSV,
        "CSV": _CSV,
        "CSVWithNames": _CSV,
        "CSVWithNamesAndTypes": _CSV,
        "JSON": _JSON,
        "JSONCompact": _JSON,
        "JSONEachRow": "application/x-ndjson; charset=UTF-8",
        "JSONCompactEachRow": "application/x-ndjson; charset=UTF-8",
        "Native": _BINARY,
        "RowBinary": _BINARY,
        "RowBinaryWithNames": _BINARY,
        "RowBinaryWithNamesAndTypes": _BINARY,
        "Arrow": _BINARY,
        "ArrowStream": _BINARY,
        "Parquet": _BINARY,
    }.items()
}
_ARROW = {"Arrow", "ArrowStream"}


def output_format(output: str) -> OutputFormat:
    """The format of `output`: one of OUTPUT_FORMATS' short names (json, csv, parquet) or a
    ClickHouse format name of PROTOCOL_FORMATS (KeyError for anything else)."""
    found = OUTPUT_FORMATS.get(output)
    return found if found is not None else PROTOCOL_FORMATS[output]


# ClickHouse's JSON quotes 64-bit integers by default (for JavaScript); counts are UInt64, and
# analysts' tools read numbers, so they come unquoted (the facade's own JSON does the same).
_JSON_NUMBERS = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "output_format_json_quote_decimals": 0,
}


def execution_settings(limits: AnalystLimits, output: str) -> dict[str, Any]:
    """The ClickHouse settings one analyst query runs with.

    No `max_rows_to_read`: ClickHouse counts every row of a granule it reads, other orgs' rows
    sharing the org's first and last granules included, so a limit on it would answer
    differently depending on another org's data. The row budget is checked against the
    org's own rows instead (`RowBudgetExceeded`). The output carries no statistics for the
    same reason (its `rows_read` is ClickHouse's count).
    """
    settings: dict[str, Any] = {
        "max_execution_time": limits.max_execution_time_s,
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": limits.max_memory_usage,
        "output_format_write_statistics": 0,
    }
    if output == "json":
        settings.update(_JSON_NUMBERS)
    if output in _ARROW:  # strings as Arrow strings, not binary (what pyarrow users expect)
        settings["output_format_arrow_string_as_string"] = 1
    # Last, so a server applying settings in order accepts the limits above before
    # read-only mode forbids changing settings.
    settings["readonly"] = 1
    return settings


class RowBudgetExceeded(Exception):
    """The query's reads cover more of the org's rows than it may read now."""

    def __init__(self, visible_rows: int, budget: int):
        super().__init__(f"the query reads {visible_rows} rows; {budget} are left")
        self.visible_rows = visible_rows
        self.budget = budget


def check_analyst_query(query: AnalystQuery, database: str) -> None:
    """Raise TenantGuardError unless `query.sql` provably reads only `query.org_id`'s rows."""
    if query.database != database:
        raise TenantGuardError(f"query compiled for database {query.database!r}, not {database!r}")
    try:
        trees = [t for t in sqlglot.parse(query.sql, dialect="clickhouse") if t is not None]
    except Exception as exc:  # noqa: BLE001 - any failure to re-read our own SQL fails closed
        raise TenantGuardError(f"analyst SQL does not parse: {exc}") from None
    if len(trees) != 1:
        raise TenantGuardError("analyst SQL must be exactly one statement")
    verify_tenant_guard(
        trees[0],
        query.org_id,
        database=database,
        params=dict(query.params),
        policy=ANALYST_POLICY,
    )
    if set(query.params) != {"org_id"}:
        raise TenantGuardError("analyst SQL binds parameters other than org_id")
    if query.visible_rows_sql is not None:
        verify_tenant_guard(
            sqlglot.parse_one(query.visible_rows_sql, dialect="clickhouse"),
            query.org_id,
            database=database,
            params=dict(query.params),
            policy=ANALYST_POLICY,
        )


def _count_settings(limits: AnalystLimits) -> dict[str, Any]:
    return {"max_execution_time": limits.max_execution_time_s, "readonly": 1}


def _within_budget(visible: int, budget: int | None) -> int:
    if budget is not None and visible > budget:
        raise RowBudgetExceeded(visible, budget)
    return visible


def run_analyst_sync(
    ch: ClickHouse,
    query: AnalystQuery,
    output: str = "json",
    *,
    limits: AnalystLimits = DEFAULT_LIMITS,
    max_rows_to_read: int | None = None,
) -> RawResult:
    """Verify the guard on the final SQL, count the org's rows its reads cover (refused with
    `RowBudgetExceeded` above `max_rows_to_read`), then run it read-only with `limits`; the
    output is in `output` (`output_format`: json, csv, parquet or a ClickHouse format name)
    and its `rows_read` is that count."""
    fmt = output_format(output)
    check_analyst_query(query, ch.database)
    visible = 0
    if query.visible_rows_sql is not None:
        counted = ch.query_sync(
            query.visible_rows_sql, params=dict(query.params), settings=_count_settings(limits)
        )
        visible = _within_budget(int(counted.scalar() or 0), max_rows_to_read)
    result = ch.query_raw_sync(
        query.sql,
        params=dict(query.params),
        settings=execution_settings(limits, output),
        fmt=fmt.clickhouse,
    )
    result.rows_read = visible
    return result


async def run_analyst(
    ch: ClickHouse,
    query: AnalystQuery,
    output: str = "json",
    *,
    limits: AnalystLimits = DEFAULT_LIMITS,
    max_rows_to_read: int | None = None,
) -> RawResult:
    """`run_analyst_sync` off the event loop (verification is cheap and runs inline)."""
    fmt = output_format(output)
    check_analyst_query(query, ch.database)
    visible = 0
    if query.visible_rows_sql is not None:
        counted = await ch.query(
            query.visible_rows_sql,
            params=dict(query.params),
            settings=_count_settings(limits),
            org_id=query.org_id,  # the verified tenant: its lane in the fair pool
        )
        visible = _within_budget(int(counted.scalar() or 0), max_rows_to_read)
    result = await ch.query_raw(
        query.sql,
        params=dict(query.params),
        settings=execution_settings(limits, output),
        fmt=fmt.clickhouse,
        org_id=query.org_id,  # the verified tenant: its lane in the fair pool
    )
    result.rows_read = visible
    return result
