"""`POST /sql`: analysts' read-only SQL over their org's tables (docs/api.md, docs/schema.md).

The SQL goes to the querybuilder (`compile_analyst_sql`: parsed, every table read isolated
behind the org guard, re-verified), runs under the org's quotas (a concurrency slot, and at
most the rows left in its per-minute budget) with read-only execution limits, and comes back
as ClickHouse wrote it in the requested format, streamed in chunks. The result is complete
before the first byte is sent (it is bounded by `max_result_rows` / `max_result_bytes`), so a
failing query is always a clean error answer, never a truncated 200.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from typing import Literal

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody
from litestar.response import Stream

from app.clickhouse import ClickHouseError
from app.clickhouse.public_errors import public_error
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError
from app.openapi import api_doc
from app.querybuilder.analyst import (
    DEFAULT_LIMITS,
    OUTPUT_FORMATS,
    AnalystSqlError,
    RowBudgetExceeded,
    compile_analyst_sql,
    run_analyst,
)

log = logging.getLogger("clickpulse.sql")

SQL_ROLES = ("analyst", "admin")
MAX_SQL_BODY_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
# ClickHouse error codes that mean "this query is too expensive": rows/bytes to read, time,
# memory, result size. (The row budget itself is checked on the org's own rows before the
# query runs: run.RowBudgetExceeded.)
_LIMIT_CODES = {158, 159, 160, 241, 307, 396}
# Codes (and no code at all) that mean ClickHouse could not be reached.
_UNAVAILABLE_CODES = {None, 209, 210}


# What each `format` answers (app/querybuilder/analyst/run.py OUTPUT_FORMATS): ClickHouse's
# JSON format, CSV with a header row, or a Parquet file.
SUCCESS_CONTENT = {
    "application/json": {
        "type": "object",
        "description": "ClickHouse's JSON format: `meta` (name, type per column), `data` "
        "(one object per row), `rows`, `statistics`.",
        "properties": {
            "meta": {"type": "array", "items": {"type": "object"}},
            "data": {"type": "array", "items": {"type": "object"}},
            "rows": {"type": "integer"},
        },
        "required": ["meta", "data", "rows"],
    },
    "text/csv": {"type": "string", "description": "CSV with a header row."},
    "application/vnd.apache.parquet": {"type": "string", "format": "binary"},
}


class SqlIn(msgspec.Struct, forbid_unknown_fields=True):
    """One query and the format of its answer."""

    sql: str
    format: Literal["json", "csv", "parquet"] = "json"


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


def _over_budget(exc: RowBudgetExceeded, per_minute: int, now: float) -> ApiError:
    """A query over what is left of the minute's row budget: 429 until the next minute when a
    whole minute's budget would do, else 422 (it can never run)."""
    if exc.visible_rows <= per_minute:
        wait = max(1, math.ceil(60 - now % 60))
        return ApiError(
            429,
            "rate_limited",
            f"the query reads {exc.visible_rows} of your org's rows and {exc.budget} are left "
            f"of this minute's {per_minute}; retry after {wait} s",
            {"limit": "rows_per_minute", "rows": exc.visible_rows},
            {"Retry-After": str(wait)},
        )
    return ApiError(
        422,
        "query_too_expensive",
        f"the query reads {exc.visible_rows} of your org's rows; the budget is {per_minute} "
        "a minute: narrow it to fewer rows",
        {"limit": "rows_per_minute", "rows": exc.visible_rows},
    )


class SqlController(Controller):
    path = "/sql"
    tags = ["sql"]
    dependencies = AUTH
    request_max_body_size = MAX_SQL_BODY_BYTES

    @post(
        "/",
        status_code=200,
        opt=api_doc(
            success=SUCCESS_CONTENT,
            success_headers={
                "X-Rows-Read": "Rows ClickHouse read for this query (charged to the quota).",
                "Content-Disposition": "`attachment; filename=result.csv|parquet` (not for json).",
            },
        ),
    )
    async def run_sql(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[SqlIn]
    ) -> Stream:
        """Run one read-only SELECT over this org's tables and views (docs/schema.md).

        Roles analyst and admin. Refused SQL → 422 with `where.line/column/token`; limits →
        422 `query_too_expensive`; quotas → 429.
        """
        principal.require_any(*SQL_ROLES)
        org_id = principal.org_id
        database = services.ch.database
        try:
            query = compile_analyst_sql(data.sql, org_id, database=database)
        except AnalystSqlError as exc:
            raise ApiError(422, exc.code, exc.message, {**exc.where, "field": "sql"}) from None
        output = OUTPUT_FORMATS[data.format]
        limiter = services.limiter
        async with limiter.query_slot(org_id) as limits:
            budget = max(1, limits.rows_per_minute - await limiter.rows_used(org_id))
            try:
                result = await asyncio.wait_for(
                    run_analyst(services.ch, query, data.format, max_rows_to_read=budget),
                    DEFAULT_LIMITS.max_execution_time_s + 5,
                )
            except TimeoutError:
                raise ApiError(
                    422,
                    "query_too_expensive",
                    f"the query ran longer than {DEFAULT_LIMITS.max_execution_time_s} s",
                    {"limit": "max_execution_time"},
                ) from None
            except RowBudgetExceeded as exc:
                refusal = _over_budget(exc, limits.rows_per_minute, limiter.clock())
                if refusal.status == 429:
                    limiter.throttled(org_id, "rows_per_minute")
                raise refusal from None
            except ClickHouseError as exc:
                raise self._failed(services, exc, data.sql) from None
        services.degradation.ok("clickhouse")
        if result.rows_read:
            await limiter.record_rows(org_id, result.rows_read)
        headers = {}
        if result.rows_read is not None:
            headers["X-Rows-Read"] = str(result.rows_read)
        if data.format != "json":
            headers["Content-Disposition"] = f'attachment; filename="result.{output.suffix}"'
        log.info(
            "org %s ran SQL over %s: %d bytes, %s rows read",
            org_id,
            ",".join(query.tables) or "-",
            len(result.data),
            result.rows_read,
        )
        return Stream(_chunks(result.data), media_type=output.media_type, headers=headers)

    @staticmethod
    def _failed(services: ServicesDep, exc: ClickHouseError, text: str) -> ApiError:
        code = exc.code
        if code in _UNAVAILABLE_CODES:
            services.degradation.failed("clickhouse", public_error(code, str(exc)).message)
            return ApiError(
                503,
                "clickhouse_unavailable",
                "ClickHouse did not answer; try again shortly",
                None,
                {"Retry-After": "5"},
            )
        # Never ClickHouse's own text: it quotes the values it failed on (public_errors).
        shown = public_error(code, str(exc), text)
        if code in _LIMIT_CODES:
            return ApiError(
                422,
                "query_too_expensive",
                "the query exceeded its limits: " + shown.message,
                {"clickhouse_code": code},
            )
        return ApiError(
            422,
            "query_failed",
            shown.message,
            {"clickhouse_code": code, "field": "sql", **shown.where},
        )
