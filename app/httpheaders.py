"""Security headers on every HTTP answer, set in one place: a Litestar `before_send` hook,
which sees every response start the app sends — handlers, error answers, 404/405 of the
router, static files, the OpenAPI pages.

* `X-Content-Type-Options: nosniff` on everything: a browser never guesses a type we did
  not declare (a JSON error echoing user text can never be run as HTML or script).
* `Cache-Control: no-store` on every answer to a request that carried a credential
  (`Authorization`, `X-Api-Key`, or a `token`/`ticket` query parameter) — JSON, and also
  `/sql`'s CSV and Parquet, errors included: an org's data and error details stay out of
  browser, proxy and CDN caches. It replaces any other value. (Pages and static files are
  fetched without one; a page is `no-store` anyway.)
* A Content-Security-Policy on every HTML answer that does not set its own: scripts and
  everything else from this origin only, no inline script, no framing.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

# The UI's pages and the API docs page: no inline or foreign script. Inline *styles* are
# allowed: ECharts and Swagger UI style the elements they draw.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
_CREDENTIAL_PARAMS = ("token", "ticket")


def carries_credential(scope: Scope) -> bool:
    """True when the request presents a credential (header or query parameter)."""
    if any(name in _CREDENTIAL_HEADERS for name, _ in scope.get("headers", ())):
        return True
    query = scope.get("query_string", b"")
    if query and any(p.encode() in query for p in _CREDENTIAL_PARAMS):
        params = parse_qs(query.decode("latin-1"))
        return any(params.get(p) for p in _CREDENTIAL_PARAMS)
    return False


async def security_headers(message: Message, scope: Scope) -> None:
    """`before_send` hook: add the headers above to a response start."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "x-content-type-options" not in headers:
        headers["X-Content-Type-Options"] = "nosniff"
    content_type = headers.get("content-type") or ""
    if carries_credential(scope):
        headers["Cache-Control"] = "no-store"
    if content_type.lower().startswith("text/html") and "content-security-policy" not in headers:
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
