"""The API docs page (/schema) in real Chromium: Swagger UI served by the app renders the
OpenAPI document under the strict CSP, and the browser asks no other host for anything."""

from __future__ import annotations

TIMEOUT_MS = 30_000  # hang guard only


async def test_docs_page_renders_offline_under_the_csp(server, page):
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    response = await page.goto(f"{server.url}/schema")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # Swagger UI drew the operations of the document (it ran: no inline script was needed).
    await page.locator(".opblock-summary-path", has_text="/dashboards").first.wait_for(
        timeout=TIMEOUT_MS
    )
    assert await page.locator(".opblock").count() > 10
    assert await page.locator("h1.title", has_text="ClickPulse").count() == 1
    outside = [url for url in requested if not url.startswith((server.url, "data:"))]
    assert outside == []
    assert f"{server.url}/schema/openapi.json" in requested
    refused = [line for line in page.console_log if "Content Security Policy" in line]
    assert refused == []
    assert not [line for line in page.console_log if line.startswith(("pageerror", "error"))]
