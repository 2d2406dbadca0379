"""The browser UI: HTML shells rendered with jinja2, the UI's JS/CSS, and ECharts from npm
(`web/node_modules`, never a CDN).

Pages carry no data and need no credential: the user token lives in the browser and every API
call sends it as `Authorization: Bearer`, so a page for an id of another org renders the shell
and the API's 404 becomes "not found". The pages (`/login`, `/`, `/d/{id}`, `/builder`, `/a`,
`/admin/tokens`) are listed in docs/ui.md, section "Pages". The one exception is `/s/{token}`, a
public dashboard link: its page is answered only for a live link (else 404) and carries that
link's `frame-ancestors` (app/api/shares.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import File
from litestar.static_files import create_static_files_router
from markupsafe import Markup

from app.api.shares import frame_ancestors_csp, live_share
from app.deps import ServicesDep, client_address
from app.errors import ApiError
from app.httpheaders import CONTENT_SECURITY_POLICY

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"


def web_dir() -> Path:
    """The npm project holding the browser dependencies (`web/` at the repository root)."""
    return Path(os.environ.get("CLICKPULSE_WEB_DIR") or HERE.parents[1] / "web")


def echarts_path() -> Path:
    return web_dir() / "node_modules" / "echarts" / "dist" / "echarts.min.js"


#: npm packages the browser imports by bare name (the metric editor, CodeMirror 6, and what it
#: imports), mapped to their ES module files by the builder page's import map: no bundler.
BROWSER_MODULES = (
    "@codemirror/autocomplete",
    "@codemirror/commands",
    "@codemirror/lang-sql",
    "@codemirror/language",
    "@codemirror/state",
    "@codemirror/streamparser",
    "@codemirror/view",
    "@lezer/common",
    "@lezer/highlight",
    "@lezer/lr",
    "@marijn/find-cluster-break",
    "crelt",
    "style-mod",
    "w3c-keyname",
)


@cache
def browser_module_files() -> dict[str, tuple[Path, str]]:
    """Bare name → (its ES module file, its version), read from each package.json; a package
    that is not installed is left out (its import fails in the browser, nothing else does)."""
    found = {}
    for name in BROWSER_MODULES:
        root = web_dir() / "node_modules" / name
        try:
            meta = json.loads((root / "package.json").read_text())
        except (OSError, ValueError):
            continue
        entry = meta.get("module") or meta.get("main") or "index.js"
        found[name] = (root / entry, f"{meta.get('version', '0')}/{entry.removeprefix('./')}")
    return found


@cache
def import_map() -> Markup:
    """The `<script type="importmap">` text: each bare name → /static/vendor/npm/<name>/<version>/<file>."""
    imports = {
        name: f"/static/vendor/npm/{name}/{tail}"
        for name, (_path, tail) in browser_module_files().items()
    }
    # Markup: a script's text is not HTML (entities would not be decoded); the JSON holds only
    # package names and paths, never `<`.
    return Markup(json.dumps({"imports": imports}, sort_keys=True))


def import_map_csp() -> str:
    """The page CSP, also allowing exactly this inline import map (by its SHA-256)."""
    digest = base64.b64encode(hashlib.sha256(str(import_map()).encode()).digest()).decode()
    return CONTENT_SECURITY_POLICY.replace(
        "script-src 'self'", f"script-src 'self' 'sha256-{digest}'", 1
    )


# The browser may keep pages for a minute and static files until the version changes.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",  # /login?token=… must never leak through Referer
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@cache
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def static_version() -> str:
    """A hash of the static files: part of their URLs, so a deploy is never half-cached."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def render(
    template: str, *, status: int = 200, csp: str | None = None, **context: object
) -> Response[str]:
    html = _env().get_template(template).render(v=static_version(), **context)
    headers = (
        SECURITY_HEADERS if csp is None else {**SECURITY_HEADERS, "Content-Security-Policy": csp}
    )
    return Response(
        html, status_code=status, media_type="text/html; charset=utf-8", headers=headers
    )


@get("/login", include_in_schema=False)
async def login_page() -> Response[str]:
    return render("login.html", page="login", title="Sign in")


@get("/", include_in_schema=False)
async def dashboards_page() -> Response[str]:
    return render("dashboards.html", page="dashboards", title="Dashboards")


@get("/d/{dashboard_id:int}", include_in_schema=False)
async def dashboard_page(dashboard_id: FromPath[int]) -> Response[str]:
    return render("dashboard.html", page="dashboard", title="Dashboard", dashboard_id=dashboard_id)


@get("/s/{token:str}", include_in_schema=False)
async def shared_page(
    request: Request, services: ServicesDep, token: FromPath[str]
) -> Response[str]:
    """A public link's read-only dashboard; 404 for an unknown, revoked or expired link."""
    try:
        share = await live_share(services, token, client_address(request))
    except ApiError as exc:
        if exc.status != 404:
            raise
        return render("shared.html", status=404, page="shared", title="Not found", dashboard_id=0)
    return render(
        "shared.html",
        csp=frame_ancestors_csp(share["frame_ancestors"]),
        page="shared",
        title="Shared dashboard",
        dashboard_id=share["dashboard_id"],
    )


@get("/builder", include_in_schema=False)
async def builder_page() -> Response[str]:
    return render(
        "builder.html",
        csp=import_map_csp(),
        page="builder",
        title="Query builder",
        import_map=import_map(),
    )


@get("/a", include_in_schema=False)
async def alerts_page() -> Response[str]:
    return render("alerts.html", page="alerts", title="Alerts", alert_id=None)


@get("/a/channels", include_in_schema=False)
async def channels_page() -> Response[str]:
    return render("channels.html", page="channels", title="Notification channels")


@get("/a/{alert_id:int}", include_in_schema=False)
async def alert_page(alert_id: FromPath[int]) -> Response[str]:
    return render("alerts.html", page="alerts", title="Alert", alert_id=alert_id)


@get("/admin/tokens", include_in_schema=False)
async def tokens_page() -> Response[str]:
    return render("tokens.html", page="tokens", title="Tokens")


@get("/static/vendor/echarts.min.js", include_in_schema=False)
async def echarts_js() -> File | Response[str]:
    path = echarts_path()
    if not path.is_file():
        return Response(
            f"/* ECharts is not installed at {path}: run `npm ci --prefix web` (make does) */",
            status_code=503,
            media_type="application/javascript",
        )
    return File(
        path,
        content_disposition_type="inline",
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@get("/static/vendor/npm/{path:path}", include_in_schema=False)
async def browser_module(path: FromPath[str]) -> File:
    """A file of the import map, and nothing else under node_modules (404)."""
    wanted = path.lstrip("/")
    for name, (file, tail) in browser_module_files().items():
        if wanted == f"{name}/{tail}" and file.is_file():
            return File(
                file,
                content_disposition_type="inline",
                media_type="text/javascript",
                headers={
                    "Cache-Control": "public, max-age=31536000, immutable",  # versioned URL
                    "X-Content-Type-Options": "nosniff",
                },
            )
    raise NotFoundException("not a browser module of this app")


# gridstack (npm), the dashboard editor's grid (app/web/static/js/grid.js loads it): these two
# files of its dist/ folder, and nothing else of node_modules, are served.
GRIDSTACK_FILES = {
    "gridstack-all.js": "application/javascript",
    "gridstack.min.css": "text/css",
}


def vendor_file(
    folder: Path, name: str, files: dict[str, str], package: str
) -> File | Response[str]:
    """`name` from `folder` of an npm package if it is one of `files` (name -> media type): 404
    for anything else, 503 naming the fix when the package is not installed."""
    media_type = files.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    path = folder / name
    if not path.is_file():
        return Response(
            f"/* {package} is not installed at {path}: run `npm ci --prefix web` (make does) */",
            status_code=503,
            media_type=media_type,
        )
    return File(
        path,
        content_disposition_type="inline",
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@get("/static/vendor/gridstack/{name:str}", include_in_schema=False)
async def gridstack_asset(name: FromPath[str]) -> File | Response[str]:
    """One of GRIDSTACK_FILES from the npm package."""
    folder = web_dir() / "node_modules" / "gridstack" / "dist"
    return vendor_file(folder, name, GRIDSTACK_FILES, "gridstack")


static_router = create_static_files_router(
    path="/static/app",
    directories=[STATIC_DIR],
    include_in_schema=False,
    cache_control=None,
    name="ui-static",
)
