"""The metric editor (CodeMirror 6) and the builder's Data panel in real Chromium: completion
of the org's real event names (never another org's), Ctrl+Enter runs the preview, the
compiler's error underlined at its position, the panel's events/properties/top values with
their counts, a saved metric opened from the panel, the phone layout."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import api, login, post_events

OPTIONS = ".cm-tooltip-autocomplete li"


async def seed(server, org, other) -> None:
    await post_events(
        server,
        org.api_key,
        [{"event": "everest_signup", "props": {"plan": "pro"}}] * 3
        + [{"event": "everest_signup", "props": {"plan": "free"}}]
        + [{"event": "evaluation_started", "props": {"source": "ads"}}] * 2
        + [{"event": "pageview", "path": "/pricing"}] * 4,
    )
    await post_events(server, other.api_key, [{"event": "evil_b_marker", "props": {"b_k": "x"}}])


async def open_builder(page, server, token) -> Any:
    await login(page, server, token)
    await page.goto(f"{server.url}/builder")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    await page.wait_for_function("() => document.body.dataset.preview === 'ok'")
    return page.get_by_label("Metric", exact=True)


async def doc(editor) -> str:
    """The editor's text, line by line (inner_text adds the layout's trailing newlines)."""
    return await editor.evaluate(
        "el => [...el.querySelectorAll('.cm-line')].map(l => l.textContent).join('\\n')"
    )


async def option_labels(page) -> list[str]:
    await page.locator(OPTIONS).first.wait_for()
    return await page.locator(f"{OPTIONS} .cm-completionLabel").all_text_contents()


async def test_autocomplete_suggests_the_orgs_real_event_names(server, org, make_org, page):
    other = await make_org("other")
    await seed(server, org, other)
    editor = await open_builder(page, server, org.admin_token)

    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.type("SELECT count() AS n WHERE event = ev")
    await page.keyboard.press("Control+Space")
    labels = await option_labels(page)
    assert "everest_signup" in labels and "evaluation_started" in labels
    assert "evil_b_marker" not in labels  # org B's event never completes for org A
    # The counts are shown next to the names.
    detail = page.locator(OPTIONS).filter(has_text="everest_signup").locator(".cm-completionDetail")
    assert await detail.text_content() == "event · 4 in 7 d"

    # Choosing one inserts it as a string literal; the definition compiles and previews.
    await page.locator(OPTIONS).filter(has_text="everest_signup").click()
    assert await doc(editor) == "SELECT count() AS n WHERE event = 'everest_signup'"

    # Inside a string, the names complete without a second quote.
    await page.keyboard.type(" OR event = 'eva")
    await page.keyboard.press("Control+Space")
    assert "evaluation_started" in await option_labels(page)
    # CodeMirror ignores Enter for `interactionDelay` (75 ms) after a list opens, so that a
    # list popping up under a typist's Enter does not take it: a user reads the list first.
    await page.wait_for_timeout(300)
    await page.keyboard.press("Enter")
    text = "SELECT count() AS n WHERE event = 'everest_signup' OR event = 'evaluation_started'"
    assert await doc(editor) == text

    # Ctrl+Enter runs the preview: the request is observed, with the editor's text.
    async with page.expect_request(lambda r: r.url.endswith("/query")) as caught:
        await page.keyboard.press("Control+Enter")
    request = await caught.value
    assert request.post_data_json["definition"] == {"text": text}
    # The preview answers the new text: 4 + 2 events.
    await page.wait_for_function(
        "() => { const i = echarts.getInstanceByDom(document.getElementById('preview'));"
        " const series = i && i.getOption().series || [];"
        " return series.reduce((n, s) => n + (s.id.endsWith('#open') ? s.data.slice(1) : s.data)"
        ".reduce((m, d) => m + ((d.value || d)[1] || 0), 0), 0) === 6; }"
    )

    # Columns and functions complete too (the compiler's allow-list).
    await page.keyboard.press("Control+A")
    await page.keyboard.type("SELECT quan")
    await page.keyboard.press("Control+Space")
    assert "quantile" in await option_labels(page)


async def test_an_invalid_definition_is_underlined_at_its_position(server, org, page):
    editor = await open_builder(page, server, org.admin_token)
    await editor.fill("SELECT count() AS v\nWHERE contry = 'DE'")
    mark = page.locator("#error-mark")
    await mark.wait_for()
    assert await mark.text_content() == "contry"
    assert await mark.get_attribute("data-offset") == "26"
    assert await editor.get_attribute("aria-invalid") == "true"
    position = page.locator("#error-position")
    assert await position.get_attribute("data-line") == "2"
    assert await position.get_attribute("data-column") == "7"
    # Clicking the position selects the token in the editor.
    await position.click()
    selected = await page.evaluate("() => getSelection().toString()")
    assert selected == "contry"
    # An edit clears the mark.
    await page.keyboard.type("country")
    await page.wait_for_function("() => document.body.dataset.preview === 'ok'")
    assert await mark.count() == 0
    assert await editor.get_attribute("aria-invalid") is None


async def test_data_panel_lists_events_properties_and_top_values(server, org, make_org, page):
    other = await make_org("other")
    await seed(server, org, other)
    r = await api(server, org.admin_token, "POST", "/metrics",
                  {"name": "Signups", "definition": {"text": "SELECT count() AS signups WHERE event = 'everest_signup'"}})  # fmt: skip
    assert r.status_code == 201, r.text
    editor = await open_builder(page, server, org.admin_token)
    panel = page.get_by_role("complementary", name="Data")
    await page.wait_for_function(
        "() => document.getElementById('data-panel').dataset.ready === '1'"
    )

    events = panel.get_by_role("list", name="Events").get_by_role("button")
    rows = [(await b.locator(".data-name").text_content(), await b.locator(".data-count").text_content())
            for b in await events.all()]  # fmt: skip
    assert rows == [("everest_signup", "4"), ("pageview", "4"), ("evaluation_started", "2")]

    await panel.get_by_role(
        "button", name="Event everest_signup, 4 events: show its properties"
    ).click()
    props = panel.get_by_role("list", name="Properties")
    await props.get_by_role(
        "button", name="Property plan, on 4 events: show its top values"
    ).click()
    values = panel.get_by_role("list", name="Top values").get_by_role("button")
    await values.first.wait_for()
    got = [(await b.locator(".data-name").text_content(), await b.locator(".data-count").text_content())
           for b in await values.all()]  # fmt: skip
    assert got == [("pro", "3"), ("free", "1")]

    # Clicking a value inserts a condition at the cursor.
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.type("SELECT count() AS n WHERE ")
    await values.first.click()
    assert await doc(editor) == "SELECT count() AS n WHERE props['plan'] = 'pro'"
    await page.wait_for_function("() => document.body.dataset.preview === 'ok'")

    # A column's top values too, of the picked event.
    await panel.get_by_role("button", name="Event pageview, 4 events: show its properties").click()
    await props.get_by_role("button", name="Column path: show its top values").click()
    await panel.get_by_role("button", name="Insert path = '/pricing' (4 events)").wait_for()
    assert "evil_b_marker" not in await panel.inner_text()

    # Saved metrics are listed; clicking one loads it into the editor.
    await panel.get_by_role("button", name="Open metric Signups").click()
    assert await doc(editor) == "SELECT count() AS signups WHERE event = 'everest_signup'"
    assert await page.get_by_label("Save as metric").input_value() == "Signups"


async def test_phone_editor_usable_panel_below_no_sideways_scroll(server, org, browser):
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    try:
        editor = await open_builder(page, server, org.admin_token)
        await editor.fill("SELECT count() AS n")
        await page.wait_for_function("() => document.body.dataset.preview === 'ok'")
        layout = await page.evaluate(
            """() => {
              const box = (s) => document.querySelector(s).getBoundingClientRect();
              return {scroll: document.documentElement.scrollWidth, width: innerWidth,
                      editor: box('#metric-editor'), panel: box('#data-panel')};
            }"""
        )
        assert layout["scroll"] <= layout["width"]
        assert layout["editor"]["width"] >= 300
        assert layout["panel"]["top"] >= layout["editor"]["bottom"]
    finally:
        await context.close()
