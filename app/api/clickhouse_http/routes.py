"""The ClickHouse HTTP interface's routes: `GET /ping`, and `GET|POST /` running one
statement for the analyst whose token is the password.

Each statement: credentials → principal (role analyst or admin, the org's request rate) →
URL parameters checked → FORMAT taken off → client probes rewritten (querybuilder
analyst/system.py) → `run_org_sql`, the path `POST /sql` takes (compile, guard, slot, budget,
limits) → the bytes ClickHouse wrote, with ClickHouse's headers. Every failure is answered in
ClickHouse's error convention (protocol.py), with our own words.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Litestar, Request, Response, get, route
from litestar.exceptions import HTTPException

from app.api.analyst_sql import run_org_sql
from app.api.clickhouse_http.facts import FactsCache
from app.api.clickhouse_http.protocol import (
    ProtocolError,
    check_params,
    credentials,
    error_body,
    refusal,
    statement,
    summary,
)
from app.api.sql import MAX_SQL_BODY_BYTES, SQL_ROLES
from app.clickhouse import ClickHouseError, PoolBusy
from app.credentials import USER_TOKEN_PREFIX
from app.errors import ApiError
from app.querybuilder.analyst import AnalystSqlError, output_format
from app.querybuilder.analyst.system import rewrite_statement
from app.services import Services

log = logging.getLogger("clickpulse.clickhouse_http")

DISPLAY_NAME = "clickpulse"
_TEXT = "text/plain; charset=UTF-8"


def _from_api_error(exc: ApiError) -> ProtocolError:
    """Our API's answers (auth, roles, quotas, limits, failures) as ClickHouse errors."""
    headers = dict(exc.headers or {})
    where = exc.where or {}
    if exc.status == 401:
        return ProtocolError(516, "Authentication failed: " + exc.message, 403)
    if exc.status == 403:
        return ProtocolError(497, exc.message, 403)
    if exc.code == "too_many_failed_attempts":
        return ProtocolError(516, exc.message, 429, headers=headers)
    if exc.status == 429:
        code = 201 if where.get("limit") == "rows_per_minute" else 202
        return ProtocolError(code, exc.message, 429, headers=headers)
    if exc.status == 503:
        return ProtocolError(210, exc.message, 503, headers=headers)
    if exc.code == "query_too_expensive":
        return ProtocolError(int(where.get("clickhouse_code") or 396), exc.message, 500)
    if exc.code == "query_failed":
        return ProtocolError(int(where.get("clickhouse_code") or 1002), exc.message, 500)
    return ProtocolError(1002, exc.message, exc.status if exc.status >= 400 else 500)


def create_clickhouse_http_app(services: Services) -> Litestar:
    """The ASGI app of the interface, over this process's `services` (no lifespan of its own:
    the main app's starts and stops the services)."""
    facts = FactsCache(services.ch)

    def answer_error(error: ProtocolError, query_id: str = "") -> Response[bytes]:
        return Response(
            content=error_body(error, facts.version),
            status_code=error.status,
            media_type=_TEXT,
            headers={
                **error.headers,
                "X-ClickHouse-Exception-Code": str(error.code),
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            },
        )

    def on_protocol_error(_: Request, exc: ProtocolError) -> Response[bytes]:
        return answer_error(exc)

    def on_http_error(_: Request, exc: HTTPException) -> Response[bytes]:
        return answer_error(ProtocolError(1002, str(exc.detail)[:200], exc.status_code))

    def on_error(request: Request, exc: Exception) -> Response[bytes]:
        log.exception("ClickHouse HTTP request failed: %s", request.url.path)
        return answer_error(ProtocolError(1002, "internal error", 500))

    @get("/ping", media_type=_TEXT, sync_to_thread=False)
    def ping() -> bytes:
        """ClickHouse's health check."""
        return b"Ok.\n"

    @route("/", http_method=["GET", "POST"], media_type=_TEXT)
    async def run_statement(request: Request) -> Response[bytes]:
        """One statement for the analyst whose token is the password (module docstring)."""
        params = {k: v for k, v in request.query_params.items()}
        body = await request.body() if request.method == "POST" else b""
        if request.method == "GET" and "query" not in params:
            return Response(b"Ok.\n", status_code=200, media_type=_TEXT)
        query_id = ""
        try:
            token = credentials(request.headers, params)
            if token is None:
                raise ProtocolError(194, "a password (your analyst token) is required", 401)
            if not token.startswith(USER_TOKEN_PREFIX) or len(token) > 200:
                raise ProtocolError(516, "Authentication failed: the password is not a token", 403)
            client = request.client.host if request.client else ""
            principal = await services.auth.principal(token, client)
            principal.require_any(*SQL_ROLES)
            await services.limiter.check_rate(principal.org_id)
            if request.headers.get("content-encoding", "identity").lower() != "identity":
                if "query" not in params:  # what clients send for INSERT data
                    raise ProtocolError(
                        164,
                        "only SELECT queries can run here; compressed request bodies "
                        "(INSERT data) are not accepted",
                        403,
                    )
                body = b""  # data for the statement in the URL (an INSERT): refused below
            found = statement(params, body, request.headers.get("content-type", ""))
            query_id = found.query_id
            check_params(params, services.ch.database)
            text = rewrite_statement(found.sql, await facts.get())
            started = time.perf_counter()
            _, result = await run_org_sql(services, principal.org_id, text, found.fmt)
        except AnalystSqlError as exc:
            return answer_error(refusal(exc.code, str(exc)), query_id)
        except ApiError as exc:
            return answer_error(_from_api_error(exc), query_id)
        except ProtocolError as exc:
            return answer_error(exc, query_id)
        except (ClickHouseError, PoolBusy):  # reading the server's facts, before any statement
            unavailable = ProtocolError(
                210,
                "ClickHouse did not answer; try again shortly",
                503,
                headers={"Retry-After": "5"},
            )
            return answer_error(unavailable, query_id)
        log.info(
            "org %s ran SQL over the ClickHouse interface: %s, %d bytes, %s rows read",
            principal.org_id,
            found.fmt,
            len(result.data),
            result.rows_read,
        )
        known = await facts.get()
        return Response(
            content=result.data,
            status_code=200,  # not POST's default 201: ClickHouse answers 200
            media_type=output_format(found.fmt).media_type,
            headers={
                "X-ClickHouse-Format": found.fmt,
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": known.timezone,
                "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
                "X-ClickHouse-Summary": summary(
                    result.rows_read, len(result.data), time.perf_counter() - started
                ),
            },
        )

    handlers: dict[Any, Any] = {
        ProtocolError: on_protocol_error,
        HTTPException: on_http_error,
        Exception: on_error,
    }
    return Litestar(
        route_handlers=[ping, run_statement],
        exception_handlers=handlers,
        request_max_body_size=MAX_SQL_BODY_BYTES,
        openapi_config=None,
    )
