"""Security headers on every answer (app/httpheaders.py) and the API docs page served from the
app's own assets (app/web/apidocs.py), over the real app."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from app.httpheaders import CONTENT_SECURITY_POLICY
from app.web.apidocs import swagger_dir


async def test_nosniff_on_every_kind_of_answer(client, org):
    answers = {
        "html page": await client.get("/login"),
        "authenticated json": await client.get("/dashboards", headers=org.admin_headers),
        "401 error": await client.get("/dashboards"),
        "404 of the router": await client.get("/no/such/route"),
        "405": await client.delete("/login"),
        "400 error": await client.post("/query", content=b"{", headers=org.admin_headers),
        "static file": await client.get("/static/app/js/api.js"),
        "vendor file": await client.get("/static/vendor/echarts.min.js"),
        "docs page": await client.get("/schema"),
        "openapi json": await client.get("/schema/openapi.json"),
        "health": await client.get("/healthz"),
        "ingest": await client.post(
            "/v1/events", json=[{"event": "x"}], headers=org.ingest_headers
        ),
    }
    for what, response in answers.items():
        assert response.headers.get("x-content-type-options") == "nosniff", (
            what,
            response.status_code,
            dict(response.headers),
        )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/dashboards", 200),
        ("GET", "/metrics", 200),
        ("GET", "/dashboards/999999", 404),  # an error answer to an authenticated request
        ("POST", "/query", 400),
    ],
)
async def test_no_store_on_authenticated_json(client, org, method, path, status):
    response = await client.request(method, path, headers=org.admin_headers, content=b"{")
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"


async def test_no_store_when_the_credential_is_in_the_query_or_an_ingest_key(client, org):
    response = await client.get(f"/dashboards?token={org.admin_token}")
    assert response.headers["cache-control"] == "no-store"
    response = await client.post("/v1/events", json=[{"event": "x"}], headers=org.ingest_headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("fmt", "media"), [("csv", "text/csv"), ("parquet", "application/")])
async def test_no_store_on_authenticated_sql_results_in_every_format(client, org, fmt, media):
    response = await client.post(
        "/sql", json={"sql": "SELECT 1 AS one", "format": fmt}, headers=org.admin_headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media)
    assert response.headers["cache-control"] == "no-store"


async def test_anonymous_json_and_static_files_keep_their_caching(client):
    assert "cache-control" not in (await client.get("/healthz")).headers
    echarts = await client.get("/static/vendor/echarts.min.js")
    assert echarts.headers["cache-control"] == "public, max-age=86400"


@pytest.mark.parametrize("path", ["/login", "/", "/d/1", "/builder", "/a", "/a/3", "/schema"])
async def test_every_html_page_has_a_strict_csp(client, path):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", response.text, re.S)
    assert scripts, path
    # The one inline script a page may hold is the builder's import map (CodeMirror's modules),
    # allowed by its exact hash, never by 'unsafe-inline'.
    maps = [body for attrs, body in scripts if 'type="importmap"' in attrs]
    assert len(maps) == (1 if path == "/builder" else 0), path
    script_src = "'self'"
    for body in maps:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        script_src += f" 'sha256-{digest}'"
    expected = CONTENT_SECURITY_POLICY.replace("script-src 'self'", f"script-src {script_src}")
    assert csp == expected
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == script_src
    assert "unsafe-inline" not in directives["script-src"]
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    # Every other <script> is empty, with a same-origin src.
    for attrs, body in scripts:
        if 'type="importmap"' in attrs:
            continue
        assert body.strip() == "", (path, body[:80])
        src = re.search(r'src="([^"]+)"', attrs).group(1)
        assert src.startswith("/static/"), (path, src)


async def test_the_docs_page_references_no_other_host(client):
    page = (await client.get("/schema")).text
    urls = [u for u in re.findall(r'(?:src|href)="([^"]+)"', page) if u != "data:,"]
    assert urls, page
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
    assert "http://" not in page and "https://" not in page
    # Every asset it names is served by the app itself.
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert 'data-spec-url="/schema/openapi.json"' in page
    spec = (await client.get("/schema/openapi.json")).json()
    assert spec["info"]["title"] == "ClickPulse"


async def test_litestar_cdn_pages_are_gone(client):
    for path in ("/schema/redoc", "/schema/swagger", "/schema/elements", "/schema/rapidoc"):
        assert (await client.get(path)).status_code == 404, path


async def test_only_the_two_swagger_files_are_served(client):
    assert (await client.get("/static/vendor/swagger-ui/index.html")).status_code == 404
    assert (await client.get("/static/vendor/swagger-ui/package.json")).status_code == 404
    css = await client.get("/static/vendor/swagger-ui/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.content == (swagger_dir() / "swagger-ui.css").read_bytes()
