// /a/channels: the org's notification channels (docs/alerts.md, "Channels") — list, create
// (webhook, Slack-compatible, email), rotate a signing secret (shown once), delete (refused
// while alerts notify it: the answer names them). Alerts pick them in their form (/a). Editors
// write; a viewer's write shows the API's 403 message.
import { api, get, post } from "./api.js";
import { el, startPage } from "./ui.js";

const $ = (id) => document.getElementById(id);
const KIND_WORDS = { webhook: "Webhook", slack: "Slack", email: "Email" };

/** What a channel sends to, as the API shows it (a URL's host only, an email's recipients). */
export function target(ch) {
  const s = ch.settings || {};
  if (ch.kind === "email") return `${(s.to || []).join(", ")} via ${s.host}:${s.port}`;
  return s.url_hint || "";
}

function showSecret(ch) {
  const box = $("channel-secret");
  box.hidden = false;
  box.replaceChildren(
    el("p", {}, el("strong", { text: `Signing secret of “${ch.name}”` }), " — shown this once: copy it to the receiver, which verifies X-ClickPulse-Signature with it."),
    el("code", { id: "channel-secret-value", text: ch.secret }),
    " ",
    el("button", { type: "button", class: "link", text: "Hide", onclick: () => (box.hidden = true) }),
  );
}

await startPage();
const section = $("channels");
let channels = [];
let alertNames = new Map();
const usedBy = (ids) => (ids.length ? ids.map((id) => alertNames.get(id) || `alert ${id}`).join(", ") : "—");

function render() {
  const rows = channels.map((ch) =>
    el(
      "tr",
      { "data-channel-id": ch.id },
      el("td", { text: ch.name }),
      el("td", { text: KIND_WORDS[ch.kind] || ch.kind }),
      el("td", { class: "mono-cell", text: target(ch) }),
      el("td", { text: usedBy(ch.alert_ids) }),
      el(
        "td",
        { class: "row-actions" },
        // An email is not signed: only webhooks have a secret to rotate.
        ch.kind !== "email" && el("button", { type: "button", class: "link", text: "Rotate secret", "aria-label": `Rotate the secret of ${ch.name}`, onclick: () => rotate(ch) }),
        ch.kind !== "email" && " ",
        el("button", { type: "button", class: "link", text: "Delete", "aria-label": `Delete channel ${ch.name}`, onclick: () => remove(ch) }),
      ),
    ),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "No channels yet." })));
  $("channel-table").querySelector("tbody").replaceChildren(...rows);
}

async function reload() {
  const [list, alerts] = await Promise.all([get("/alerts/channels"), get("/alerts")]);
  channels = list;
  alertNames = new Map(alerts.map((a) => [a.id, a.name]));
  render();
}

async function act(work) {
  $("channel-error").textContent = "";
  try {
    await work();
  } catch (err) {
    $("channel-error").textContent = err.message;
  }
}

const rotate = (ch) =>
  act(async () => {
    showSecret(await post(`/alerts/channels/${ch.id}/secret`));
    await reload();
  });

const remove = (ch) =>
  act(async () => {
    if (!confirm(`Delete the channel “${ch.name}”?`)) return;
    try {
      await api("DELETE", `/alerts/channels/${ch.id}?version=${ch.version}`);
    } catch (err) {
      if (err.status !== 409) throw err;
      await reload(); // who uses it now
      const now = channels.find((c) => c.id === ch.id);
      throw new Error(`“${ch.name}” is in use: ${usedBy(now ? now.alert_ids : [])} notify it. Remove it from them first.`);
    }
    await reload();
  });

const showKind = () => {
  const email = $("c-kind").value === "email";
  section.querySelector('[data-channel="email"]').hidden = !email;
  section.querySelector('[data-channel="url"]').hidden = email;
};
$("c-kind").addEventListener("change", showKind);
showKind();

$("channel-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act(async () => {
    const kind = $("c-kind").value;
    const body = { kind, name: $("c-name").value.trim() };
    if (kind === "email") {
      Object.assign(body, {
        host: $("c-host").value.trim(),
        port: Number($("c-port").value || 587),
        security: $("c-security").value,
        from: $("c-from").value.trim(),
        to: $("c-to").value.split(",").map((s) => s.trim()).filter(Boolean),
      });
      if ($("c-username").value.trim()) body.username = $("c-username").value.trim();
      if ($("c-password").value) body.password = $("c-password").value;
    } else {
      body.url = $("c-url").value.trim();
    }
    const created = await post("/alerts/channels", body);
    if (kind !== "email") showSecret(created); // an email is not signed
    $("channel-form").reset();
    showKind();
    await reload();
  });
});

await reload();
document.body.dataset.ready = "1";
