"""The API docs page at `/schema`: Swagger UI from `web/node_modules/swagger-ui-dist` (npm,
installed with the UI's other browser dependencies), served by the app itself.

Litestar's own OpenAPI pages load their scripts, styles and favicon from public CDNs (which
also breaks offline installs) and start with an inline script, which a strict CSP forbids.
This page is a static shell: Swagger UI's bundle and stylesheet from `/static/vendor/swagger-ui/`,
and `/static/app/js/apidocs.js`, which starts it on the document at `/schema/openapi.json`.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath
from litestar.response import File

from app.web.pages import static_version, vendor_file, web_dir

# What may be fetched from the package: the bundle and its stylesheet, nothing else.
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
}


def swagger_dir() -> Any:
    return web_dir() / "node_modules" / "swagger-ui-dist"


class LocalSwaggerPlugin(OpenAPIRenderPlugin):
    """Renders `/schema` with Swagger UI served from this app (no CDN, no inline script)."""

    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        v = static_version()
        title = escape(str(openapi_schema.get("info", {}).get("title", "API")))
        spec_url = escape(self.get_openapi_json_route(request), quote=True)
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <title>{title} API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css?v={v}">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec_url}"></div>
  <script src="/static/vendor/swagger-ui/swagger-ui-bundle.js?v={v}"></script>
  <script src="/static/app/js/apidocs.js?v={v}"></script>
</body>
</html>
""".encode()


@get("/static/vendor/swagger-ui/{name:str}", include_in_schema=False)
async def swagger_asset(name: FromPath[str]) -> File | Response[str]:
    """One of SWAGGER_FILES from the npm package (503 with the fix when it is not installed)."""
    return vendor_file(swagger_dir(), name, SWAGGER_FILES, "Swagger UI")
