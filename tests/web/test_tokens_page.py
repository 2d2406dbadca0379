"""The Tokens page (`/admin/tokens`, issue 12 item 8): create a token by keyboard only, see its
secret once, revoke it; non-admins are told they cannot manage tokens."""

from __future__ import annotations

from tests.web.conftest import api, login
from tests.web.test_accessibility import tab_to


async def test_admin_creates_and_revokes_a_token_by_keyboard(server, org, page):
    await login(page, server, org.admin_token)
    await page.goto(f"{server.url}/admin/tokens")
    await page.wait_for_function("() => document.body.dataset.ready === '1'")
    link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Tokens")
    assert await link.get_attribute("aria-current") == "page"
    await tab_to(page, page.get_by_role("textbox", name="User email"))
    await page.keyboard.type("ops@acme.test")
    await tab_to(page, page.get_by_role("combobox", name="Role"))
    await page.keyboard.press("ArrowDown")  # analyst
    await page.keyboard.press("ArrowDown")  # editor
    await tab_to(page, page.get_by_role("spinbutton", name="Lifetime in days"))
    await page.keyboard.type("7")
    await tab_to(page, page.get_by_role("button", name="Create token"))
    await page.keyboard.press("Enter")
    await page.get_by_role("status").filter(has_text="created for ops@acme.test").wait_for()
    secret_box = page.get_by_role("textbox", name="New token")
    secret = await secret_box.input_value()
    assert secret.startswith("cpt_") and len(secret) == 47
    assert await secret_box.evaluate("el => el === document.activeElement")  # ready to copy

    me = await api(server, secret, "GET", "/me")
    assert me.status_code == 200 and me.json()["role"] == "editor"
    listed = (await api(server, org.admin_token, "GET", "/tokens")).json()
    (created,) = [t for t in listed if t["email"] == "ops@acme.test"]
    row = page.locator(f"tr[data-token-id='{created['id']}']")
    assert await row.get_by_role("cell").nth(2).inner_text() == "editor"
    assert await row.get_by_role("cell").nth(5).inner_text() == "active"
    assert secret not in await page.locator("#token-table").inner_text()  # prefix only

    page.once("dialog", lambda dialog: dialog.accept())
    revoke = page.get_by_role("button", name=f"Revoke token {secret[:10]} of ops@acme.test")
    await tab_to(page, revoke, back=True)  # the table is above the form
    await page.keyboard.press("Enter")
    await page.get_by_role("status").filter(has_text="revoked").wait_for()
    await row.get_by_role("cell", name="revoked").wait_for()
    assert (await api(server, secret, "GET", "/me")).status_code == 401


async def test_a_viewer_is_told_only_admins_manage_tokens(server, org, page, pg_url):
    import psycopg
    from psycopg.rows import dict_row

    from app.credentials import create_user_token

    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        viewer = await create_user_token(conn, org.id, "v@acme.test", "viewer")
    await login(page, server, viewer)
    await page.goto(f"{server.url}/admin/tokens")
    await page.get_by_text("Only admins of this organisation").wait_for()
    assert await page.locator("#token-form").is_hidden()
