"""`POST /sql`: analysts' read-only SQL over their org's tables (docs/api.md, docs/schema.md).

The SQL goes to the querybuilder (`compile_analyst_sql`: parsed, every table read isolated
behind the org guard, re-verified), runs under the org's quotas (a concurrency slot, and at
most the rows left in its per-minute budget) with read-only execution limits — the one path
of app/api/analyst_sql.py, shared with the ClickHouse HTTP interface — and comes back
as ClickHouse wrote it in the requested format, streamed in chunks. The result is complete
before the first byte is sent (it is bounded by `max_result_rows` / `max_result_bytes`), so a
failing query is always a clean error answer, never a truncated 200.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody
from litestar.response import Stream

from app.api.analyst_sql import run_org_sql
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError
from app.openapi import api_doc
from app.querybuilder.analyst import OUTPUT_FORMATS, AnalystSqlError

log = logging.getLogger("clickpulse.sql")

SQL_ROLES = ("analyst", "admin")
MAX_SQL_BODY_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
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
        try:
            query, result = await run_org_sql(services, org_id, data.sql, data.format)
        except AnalystSqlError as exc:
            raise ApiError(422, exc.code, exc.message, {**exc.where, "field": "sql"}) from None
        output = OUTPUT_FORMATS[data.format]
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
