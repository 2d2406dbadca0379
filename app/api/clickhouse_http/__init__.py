"""The ClickHouse HTTP interface for analysts: enough of ClickHouse's HTTP protocol that
ClickHouse clients (clickhouse-connect, BI tools) query ClickPulse unchanged, with an analyst
token as the password, on its own port (`CLICKPULSE_CLICKHOUSE_HTTP_PORT`; docs/analysts.md).

Every statement takes the path of `POST /sql` (app/api/analyst_sql.py): the analysts' compiler
and tenant guard, the org's query slot, row budget and limits. protocol.py holds ClickHouse's
conventions, facts.py what the server says about itself, routes.py the handlers, server.py the
listener.
"""

from app.api.clickhouse_http.routes import create_clickhouse_http_app
from app.api.clickhouse_http.server import ClickHouseHttpServer

__all__ = ["ClickHouseHttpServer", "create_clickhouse_http_app"]
