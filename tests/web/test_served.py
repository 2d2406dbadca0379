"""The UI's pages and assets as the server sends them, without a browser: security headers,
ECharts and the app's scripts served locally."""

from __future__ import annotations


async def test_pages_are_served_with_their_security_headers(client):
    for path in ("/login", "/", "/d/1", "/builder", "/a", "/a/3"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
    r = await client.get("/static/vendor/echarts.min.js")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert len(r.content) > 500_000  # the real library, from web/node_modules
    r = await client.get("/static/app/js/dashboard.js")
    assert r.status_code == 200 and "SeriesStore" in r.text


async def test_the_builders_import_map_is_allowed_by_hash_and_serves_only_its_files(client):
    import base64
    import hashlib
    import json
    import re

    r = await client.get("/builder")
    inline = re.search(r'<script type="importmap">(.*?)</script>', r.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in r.headers["content-security-policy"]
    imports = json.loads(inline)["imports"]
    assert {"@codemirror/view", "@codemirror/state", "@codemirror/autocomplete"} <= set(imports)
    for url in imports.values():
        served = await client.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].startswith("text/javascript")
        assert "export" in served.text
    # Nothing else under node_modules: other files, other versions, other packages, traversal.
    view = imports["@codemirror/view"]
    for url in (
        view.replace("dist/index.js", "package.json"),
        view.replace("/6.", "/5."),
        "/static/vendor/npm/echarts/5.6.0/dist/echarts.js",
        "/static/vendor/npm/@codemirror/view/../../../../package.json",
    ):
        assert (await client.get(url)).status_code == 404, url
    # Other pages carry no import map and no hash.
    r = await client.get("/a")
    assert "importmap" not in r.text and "sha256-" not in r.headers["content-security-policy"]


async def test_the_nav_marks_the_section_a_page_belongs_to(client):
    import re

    sections = {
        "/": "Dashboards",
        "/d/1": "Dashboards",
        "/builder": "Query builder",
        "/a": "Alerts",
        "/a/3": "Alerts",
        "/a/channels": "Alerts",  # channels are part of alerting
        "/admin/tokens": "Tokens",
    }
    for path, section in sections.items():
        r = await client.get(path)
        assert r.status_code == 200, path
        current = re.findall(r'<a href="[^"]*" aria-current="page">([^<]+)</a>', r.text)
        assert current == [section], (path, current)
