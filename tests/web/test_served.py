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
