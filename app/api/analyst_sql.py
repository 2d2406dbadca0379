"""One analyst SQL statement for an org, under its quotas: the one path of `POST /sql`
(app/api/sql.py) and the ClickHouse HTTP interface (app/api/clickhouse_http).

The SQL is compiled by the querybuilder (`compile_analyst_sql`: every table read isolated
behind the org guard, re-verified), then runs in one of the org's query slots, with at most the
rows left of its per-minute budget and the read-only execution limits; the org is charged the
rows its reads covered. Refusals raise `AnalystSqlError`; limits, quotas and ClickHouse
failures raise `ApiError` whose message never carries ClickHouse's own text (public_errors).
"""

from __future__ import annotations

import asyncio
import math

from app.clickhouse import ClickHouseError, RawResult
from app.clickhouse.public_errors import public_error
from app.deps import ServicesDep
from app.errors import ApiError
from app.querybuilder.analyst import (
    DEFAULT_LIMITS,
    AnalystQuery,
    RowBudgetExceeded,
    compile_analyst_sql,
    run_analyst,
)

# ClickHouse error codes that mean "this query is too expensive": rows/bytes to read, time,
# memory, result size. (The row budget itself is checked on the org's own rows before the
# query runs: run.RowBudgetExceeded.)
LIMIT_CODES = {158, 159, 160, 241, 307, 396}
# Codes (and no code at all) that mean ClickHouse could not be reached.
UNAVAILABLE_CODES = {None, 209, 210}


def over_budget(exc: RowBudgetExceeded, per_minute: int, now: float) -> ApiError:
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


def failed(services: ServicesDep, exc: ClickHouseError, text: str) -> ApiError:
    """The answer to a ClickHouse failure: 503 unreachable, 422 over a limit or failed, with
    our own words for it (`public_error`), never ClickHouse's text."""
    code = exc.code
    if code in UNAVAILABLE_CODES:
        services.degradation.failed("clickhouse", public_error(code, str(exc)).message)
        return ApiError(
            503,
            "clickhouse_unavailable",
            "ClickHouse did not answer; try again shortly",
            None,
            {"Retry-After": "5"},
        )
    shown = public_error(code, str(exc), text)
    if code in LIMIT_CODES:
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


async def run_org_sql(
    services: ServicesDep, org_id: int, text: str, output: str
) -> tuple[AnalystQuery, RawResult]:
    """Compile `text` for `org_id` and run it under the org's quotas; the output in `output`
    (a short name of OUTPUT_FORMATS or a ClickHouse format of PROTOCOL_FORMATS)."""
    query = compile_analyst_sql(text, org_id, database=services.ch.database)
    limiter = services.limiter
    async with limiter.query_slot(org_id) as limits:
        budget = max(1, limits.rows_per_minute - await limiter.rows_used(org_id))
        try:
            result = await asyncio.wait_for(
                run_analyst(services.ch, query, output, max_rows_to_read=budget),
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
            refusal = over_budget(exc, limits.rows_per_minute, limiter.clock())
            if refusal.status == 429:
                limiter.throttled(org_id, "rows_per_minute")
            raise refusal from None
        except ClickHouseError as exc:
            raise failed(services, exc, text) from None
    services.degradation.ok("clickhouse")
    if result.rows_read:
        await limiter.record_rows(org_id, result.rows_read)
    return query, result
