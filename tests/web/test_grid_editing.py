"""Dashboard editing on the grid, in real Chromium (docs/ui.md, "Editing a dashboard"): a real
mouse drag on gridstack's resize handle and on a panel's strip, rename, retype, add, remove and
save, the same layout after a reload; a concurrent edit in another tab gives the 409 message
with that editor's name; viewers get no edit controls; a phone shows one column."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from app.credentials import create_user_token
from tests.web.conftest import api, login

NODES = """() => Object.fromEntries([...document.querySelectorAll('#grid .grid-stack-item')].map((item) => {
  const n = item.gridstackNode;
  const title = item.querySelector('.edit-title')?.value ?? item.querySelector('.chart-head h2')?.textContent;
  return [title, [n.x, n.y, n.w, n.h]];
}))"""
EC_SIZE = """(title) => {
  const card = [...document.querySelectorAll('article.chart-card')].find((c) => c.querySelector('h2')?.textContent === title);
  const box = card.querySelector('.chart-box');
  const inst = echarts.getInstanceByDom(box);
  return {ec: [inst.getWidth(), inst.getHeight()], box: [box.clientWidth, box.clientHeight]};
}"""
VIEWS = {"text": "SELECT countIf(event = 'pageview') AS page_views"}


async def user_token(pg_url: str, org_id: int, email: str, role: str) -> str:
    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        return await create_user_token(conn, org_id, email, role)


async def make_metric(server, token: str, name: str) -> int:
    r = await api(server, token, "POST", "/metrics", {"name": name, "definition": VIEWS})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def make_dashboard(server, token: str, charts: list[dict[str, Any]]) -> int:
    r = await api(server, token, "POST", "/dashboards", {"name": "Shop", "charts": charts})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def open_dashboard(page, server, dash_id: int) -> None:
    await page.goto(f"{server.url}/d/{dash_id}")
    await page.locator("body[data-ready='1'] #grid.grid-stack-static").wait_for(state="attached")


def item(page, title: str):
    """The grid cell of the panel titled `title` (its heading, or in edit mode its title field)."""
    heading = page.locator(f"h2:text-is('{title}')")
    field = page.locator(f".edit-title[aria-label='Title of {title}']")
    return page.locator(".grid-stack-item").filter(has=heading.or_(field))


async def drag(page, locator, dx: float, dy: float) -> None:
    """A real mouse drag: press on the element's centre, move in steps, release."""
    await locator.hover()
    box = await locator.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + dx / 2, y + dy / 2, steps=8)
    await page.mouse.move(x + dx, y + dy, steps=8)
    await page.mouse.up()


async def grid_step(page) -> tuple[float, float]:
    """One column's width and one row's height on the page, in px."""
    return await page.evaluate(
        "() => [document.getElementById('grid').getBoundingClientRect().width / 12, 70]"
    )


async def test_edit_resize_move_rename_retype_add_remove_save(server, org, pg_url, page):
    views = await make_metric(server, org.admin_token, "views")
    await make_metric(server, org.admin_token, "signups")
    # Saved before the grid: no layout, so the browser gives the default (three a row).
    dash_id = await make_dashboard(
        server,
        org.admin_token,
        [
            {"chart_type": "line", "title": "Views", "metric_id": views},
            {"chart_type": "bar", "title": "Bars", "metric_id": views},
            {"chart_type": "stat", "title": "Total", "metric_id": views},
        ],
    )
    editor = await user_token(pg_url, org.id, f"ed-{org.id}@example.com", "editor")
    await login(page, server, editor)
    await open_dashboard(page, server, dash_id)
    assert await page.evaluate(NODES) == {
        "Views": [0, 0, 4, 5],
        "Bars": [4, 0, 4, 5],
        "Total": [8, 0, 4, 3],
    }
    await page.wait_for_function(f"() => ({EC_SIZE})('Views').ec[0] > 0")
    before = await page.evaluate(EC_SIZE, "Views")

    await page.get_by_role("button", name="Edit", exact=True).click()
    bar = page.get_by_role("region", name="Editing the dashboard")
    await bar.wait_for()
    assert await page.locator("#grid.grid-stack-static").count() == 0

    # Remove "Bars": its place frees up.
    await page.get_by_role("button", name="Remove Bars").click()
    assert await item(page, "Bars").count() == 0

    # Resize "Views" by dragging its lower-right handle two columns right and two rows down.
    col, row = await grid_step(page)
    await drag(page, item(page, "Views").locator(".ui-resizable-se"), 2 * col, 2 * row)
    nodes = await page.evaluate(NODES)
    assert nodes["Views"] == [0, 0, 6, 7], nodes

    # Move "Total" by its strip: to the right, then it floats up to the top row.
    await drag(page, item(page, "Total").locator(".chart-edit .grip"), -2 * col, 0)
    nodes = await page.evaluate(NODES)
    assert nodes["Total"] == [6, 0, 4, 3], nodes

    # Rename "Views" and make it a bar chart.
    await page.get_by_label("Title of Views").fill("Views per minute")
    await page.get_by_label("Chart type of Views").select_option("bar")

    # Add a panel: a saved metric as a stat.
    await page.get_by_role("button", name="Add panel").click()
    await page.get_by_label("Metric", exact=True).select_option(label="signups")
    await page.get_by_label("as", exact=True).select_option("stat")
    await page.get_by_label("Title", exact=True).fill("Signups")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.locator(".edit-title[aria-label='Title of Signups']").wait_for()
    edited = await page.evaluate(NODES)
    assert set(edited) == {"Views per minute", "Total", "Signups"}

    await bar.get_by_role("button", name="Save").click()
    await page.wait_for_function("() => !document.body.classList.contains('editing')")
    await page.locator("body[data-ready='1'] #grid.grid-stack-static").wait_for(state="attached")

    # The API has what was drawn, in reading order; the reloaded page draws the same layout.
    saved = (await api(server, org.admin_token, "GET", f"/dashboards/{dash_id}")).json()
    got = {c["title"]: [c["layout"][k] for k in "xywh"] for c in saved["charts"]}
    assert got == edited
    assert got["Views per minute"] == [0, 0, 6, 7] and got["Total"] == [6, 0, 4, 3]
    assert [c["title"] for c in saved["charts"]][:2] == ["Views per minute", "Total"]
    types = {c["title"]: c["chart_type"] for c in saved["charts"]}
    assert types == {"Views per minute": "bar", "Total": "stat", "Signups": "stat"}
    assert saved["updated_by"]["email"] == f"ed-{org.id}@example.com"
    assert await page.evaluate(NODES) == edited
    await page.reload()
    await page.locator("body[data-ready='1'] #grid.grid-stack-static").wait_for(state="attached")
    assert await page.evaluate(NODES) == edited
    assert await page.locator("article[data-chart-type='bar'] h2").all_inner_texts() == [
        "Views per minute"
    ]
    # ECharts was redrawn at the panel's new size (wider and taller than before).
    await page.wait_for_function(
        f"() => {{ const s = ({EC_SIZE})('Views per minute'); return s.ec[0] === s.box[0] && s.ec[1] === s.box[1]; }}"
    )
    after = await page.evaluate(EC_SIZE, "Views per minute")
    assert after["ec"][0] > before["ec"][0] * 1.3 and after["ec"][1] > before["ec"][1]


async def test_a_concurrent_edit_shows_who_changed_it(server, org, pg_url, page, browser):
    views = await make_metric(server, org.admin_token, "views")
    dash_id = await make_dashboard(
        server, org.admin_token, [{"chart_type": "line", "title": "Views", "metric_id": views}]
    )
    mine = await user_token(pg_url, org.id, f"me-{org.id}@example.com", "editor")
    alice = await user_token(pg_url, org.id, f"alice-{org.id}@example.com", "editor")
    await login(page, server, mine)
    await open_dashboard(page, server, dash_id)
    await page.get_by_role("button", name="Edit", exact=True).click()
    # By keyboard: Shift+→ twice widens the panel, → moves it a column.
    grip = page.get_by_role(
        "button", name="Move Views: arrow keys move it, Shift+arrow keys resize it"
    )
    await grip.focus()
    for key in ("Shift+ArrowRight", "Shift+ArrowRight", "ArrowRight"):
        await page.keyboard.press(key)
    assert (await page.evaluate(NODES))["Views"] == [1, 0, 6, 5]
    assert "column 2, row 1, 6 wide, 5 high" in await page.locator("#edit-status").inner_text()
    await page.get_by_label("Title of Views").fill("My title")

    # Alice, in another tab of her own, saves first.
    other = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = await other.new_page()
        await login(tab, server, alice)
        await open_dashboard(tab, server, dash_id)
        await tab.get_by_role("button", name="Edit", exact=True).click()
        await tab.get_by_label("Title of Views").fill("Alice's title")
        await tab.get_by_role("button", name="Save").click()
        await tab.wait_for_function("() => !document.body.classList.contains('editing')")
        await tab.locator('h2:text-is("Alice\'s title")').wait_for()
    finally:
        await other.close()

    await page.get_by_role("button", name="Save").click()
    status = page.locator("#edit-status[data-conflict]")
    await status.wait_for()
    text = await status.inner_text()
    assert f"Changed by alice-{org.id}@example.com just now." in text, text
    assert await status.get_by_role("button", name="Reload").is_visible()
    # Still editing, my change kept; Overwrite saves it over Alice's.
    assert await page.get_by_label("Title of Views").input_value() == "My title"
    await status.get_by_role("button", name="Overwrite").click()
    await page.locator("h2:text-is('My title')").wait_for()
    saved = (await api(server, org.admin_token, "GET", f"/dashboards/{dash_id}")).json()
    assert saved["version"] == 3 and saved["charts"][0]["title"] == "My title"
    assert saved["charts"][0]["layout"] == {"x": 1, "y": 0, "w": 6, "h": 5}
    assert saved["updated_by"]["email"] == f"me-{org.id}@example.com"


async def test_viewer_has_no_edit_controls_and_a_phone_one_column(server, org, pg_url, browser):
    views = await make_metric(server, org.admin_token, "views")
    charts = [
        {"chart_type": "line", "title": "A", "metric_id": views, "layout": {"x": 0, "y": 0, "w": 8, "h": 5}},
        {"chart_type": "stat", "title": "B", "metric_id": views, "layout": {"x": 8, "y": 0, "w": 4, "h": 3}},
        {"chart_type": "bar", "title": "C", "metric_id": views, "layout": {"x": 0, "y": 5, "w": 12, "h": 4}},
    ]  # fmt: skip
    dash_id = await make_dashboard(server, org.admin_token, charts)
    viewer = await user_token(pg_url, org.id, f"viewer2-{org.id}@example.com", "viewer")
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await context.new_page()
        await login(page, server, viewer)
        await open_dashboard(page, server, dash_id)
        assert await page.evaluate(NODES) == {
            "A": [0, 0, 8, 5],
            "B": [8, 0, 4, 3],
            "C": [0, 5, 12, 4],
        }
        await page.get_by_text("Log out").wait_for()
        for name in ("Edit", "Duplicate the dashboard Shop", "Delete the dashboard Shop"):
            assert await page.get_by_role("button", name=name, exact=True).count() == 0
        assert await page.locator(".dash-tools, #edit-bar, .chart-edit").count() == 0
        assert await page.locator(".ui-resizable-handle:visible").count() == 0
    finally:
        await context.close()

    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = await phone.new_page()
        await login(page, server, org.admin_token)
        await open_dashboard(page, server, dash_id)
        # One column, in reading order, nothing wider than the screen.
        boxes = [
            await page.locator(f"article:has(h2:text-is('{t}'))").bounding_box() for t in "ABC"
        ]
        assert len({round(b["x"]) for b in boxes}) == 1
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        # Edit mode on a phone: rename and remove, no dragging.
        await page.get_by_role("button", name="Edit", exact=True).click()
        await page.get_by_label("Title of A").wait_for()
        assert await page.locator("#grid.grid-stack-static").count() == 1
        assert await page.locator(".ui-resizable-handle:visible").count() == 0
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        await phone.close()


async def test_duplicate_and_delete_dashboards_and_metrics(server, org, page):
    views = await make_metric(server, org.admin_token, "views")
    layout = {"x": 2, "y": 0, "w": 10, "h": 6}
    dash_id = await make_dashboard(
        server,
        org.admin_token,
        [{"chart_type": "line", "title": "Views", "metric_id": views, "layout": layout}],
    )
    await login(page, server, org.admin_token)
    page.on("dialog", lambda d: d.accept())

    # On the dashboard page: Duplicate opens the copy, with the same layout.
    await open_dashboard(page, server, dash_id)
    await page.get_by_role("button", name="Duplicate the dashboard Shop").click()
    await page.wait_for_url(lambda url: not url.endswith(f"/d/{dash_id}"))
    await page.locator("body[data-ready='1'] #grid.grid-stack-static").wait_for(state="attached")
    assert await page.locator("#dash-title").inner_text() == "Shop (copy)"
    assert await page.evaluate(NODES) == {"Views": [2, 0, 10, 6]}
    copy_id = int(page.url.rsplit("/", 1)[1])

    # Delete it (after confirming): back to the list, which no longer has it.
    await page.get_by_role("button", name="Delete the dashboard Shop (copy)").click()
    await page.wait_for_url(f"{server.url}/")
    listed = (await api(server, org.admin_token, "GET", "/dashboards")).json()
    assert [d["id"] for d in listed] == [dash_id]

    # On the list: duplicate, then delete the copy.
    await page.get_by_role("button", name="Duplicate Shop", exact=True).click()
    await page.get_by_role("link", name="Shop (copy)").wait_for()
    await page.get_by_role("button", name="Delete Shop (copy)").click()
    await page.get_by_role("link", name="Shop (copy)").wait_for(state="detached")
    assert [
        d["name"] for d in (await api(server, org.admin_token, "GET", "/dashboards")).json()
    ] == ["Shop"]
    assert copy_id not in [d["id"] for d in listed]

    # Saved metrics in the query builder: duplicate, delete the copy; one in use is refused.
    await page.goto(f"{server.url}/builder")
    saved = page.get_by_role("region", name="Saved metrics")
    await saved.get_by_role("button", name="Duplicate views").click()
    await saved.get_by_text("views (copy)").wait_for()
    await saved.get_by_role("button", name="Delete views (copy)").click()
    await saved.get_by_text("views (copy)").wait_for(state="detached")
    await saved.get_by_role("button", name="Delete views", exact=True).click()
    await saved.get_by_text("used by a chart or an alert").wait_for()
    names = [m["name"] for m in (await api(server, org.admin_token, "GET", "/metrics")).json()]
    assert names == ["views"]
