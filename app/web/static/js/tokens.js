// /admin/tokens: the org's user tokens — list, create (the secret is shown once), revoke.
import { ApiError, api, get, post } from "./api.js";
import { dateTime, parseInstant } from "./time.js";
import { el, startPage } from "./ui.js";

await startPage();
const $ = (id) => document.getElementById(id);
// Dates as everywhere in the app: YYYY-MM-DD in the page's zone (time.js), not the locale's.
const day = (iso) => (iso ? dateTime(parseInstant(iso)).slice(0, 10) : "never");

function status(t) {
  if (t.revoked_at) return "revoked";
  if (t.expires_at && new Date(t.expires_at) <= new Date()) return "expired";
  return "active";
}

async function revoke(t) {
  if (!confirm(`Revoke token ${t.prefix}… of ${t.email}? Anything using it stops working.`)) return;
  try {
    await api("DELETE", `/tokens/${t.id}`);
    $("token-status").textContent = `Token ${t.prefix}… revoked.`;
  } catch (err) {
    $("token-status").textContent = `Could not revoke: ${err.message}`;
  }
  await load();
}

async function load() {
  let tokens;
  try {
    tokens = await get("/tokens");
  } catch (err) {
    if (err.status === 403) {
      $("forbidden").hidden = false;
      $("token-form").hidden = true;
      return;
    }
    throw err;
  }
  $("token-table").querySelector("tbody").replaceChildren(
    ...tokens.map((t) =>
      el(
        "tr",
        { "data-token-id": t.id },
        el("td", {}, el("code", { text: `${t.prefix}…` })),
        el("td", { text: t.email }),
        el("td", { text: t.role }),
        el("td", { text: day(t.created_at) }),
        el("td", { text: day(t.expires_at) }),
        el("td", { text: status(t) }),
        el(
          "td",
          {},
          t.revoked_at
            ? null
            : el("button", { type: "button", class: "link", text: "Revoke", "aria-label": `Revoke token ${t.prefix} of ${t.email}`, onclick: () => revoke(t) }),
        ),
      ),
    ),
  );
  $("token-table").hidden = tokens.length === 0;
}

$("token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("token-error").textContent = "";
  const body = { email: $("t-email").value.trim(), role: $("t-role").value };
  if ($("t-ttl").value) body.ttl_days = Number($("t-ttl").value);
  try {
    const created = await post("/tokens", body);
    $("new-token").hidden = false;
    $("t-secret").value = created.token;
    $("t-secret").focus();
    $("t-secret").select();
    $("token-status").textContent = `Token ${created.prefix}… created for ${created.email}.`;
    $("token-form").reset();
  } catch (err) {
    const where = err instanceof ApiError && err.where ? ` (${err.where.field || err.where.param || ""})` : "";
    $("token-error").textContent = `${err.message}${where}`;
  }
  await load();
});

await load();
document.body.dataset.ready = "1";
