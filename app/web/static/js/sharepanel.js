// The dashboard page's "Share" control (org admins): public read-only links to this dashboard —
// create (optional expiry, the origins allowed to embed it), copy the URL, list, revoke.
import { api, get, post } from "./api.js";
import { el } from "./ui.js";

const EXPIRY = [["", "Never"], [String(86400), "1 day"], [String(7 * 86400), "7 days"], [String(30 * 86400), "30 days"]];

function status(link) {
  if (link.revoked_at) return "revoked";
  if (link.expires_at && new Date(link.expires_at) <= new Date()) return "expired";
  return link.expires_at ? `expires ${new Date(link.expires_at).toLocaleString()}` : "no expiry";
}

/** Mount the control into `host` for dashboard `id`; the caller checked the admin role. */
export function mountSharePanel(host, id) {
  const base = `/dashboards/${id}/shares`;
  const expiry = el("select", { id: "share-expiry" }, EXPIRY.map(([v, t]) => el("option", { value: v, text: t })));
  const ancestors = el("input", { id: "share-ancestors", placeholder: "https://intranet.example.com", size: "30" });
  const url = el("input", { id: "share-url", readonly: true, size: "60", "aria-label": "New link" });
  const copy = el("button", { type: "button", id: "share-copy", text: "Copy" });
  const made = el("p", { class: "share-made", hidden: true }, url, " ", copy);
  const error = el("p", { class: "error", role: "alert" });
  const list = el("ul", { id: "share-list", class: "share-list" });
  const create = el("button", { type: "button", id: "share-create", text: "Create link" });

  async function refresh() {
    const links = await get(base);
    list.replaceChildren(
      ...links.map((link) =>
        el(
          "li",
          { "data-share-id": link.id },
          el("code", { text: `${link.prefix}…` }),
          ` · ${status(link)} · embed: ${link.frame_ancestors.length ? link.frame_ancestors.join(" ") : "nowhere"} `,
          link.revoked_at
            ? null
            : el("button", {
                type: "button",
                class: "link",
                text: "Revoke",
                "aria-label": `Revoke link ${link.prefix}`,
                onclick: async () => {
                  await api("DELETE", `${base}/${link.id}`);
                  await refresh();
                },
              }),
        ),
      ),
    );
    if (!links.length) list.append(el("li", { class: "muted", text: "No links yet." }));
  }

  create.addEventListener("click", async () => {
    error.textContent = "";
    const body = { frame_ancestors: ancestors.value.split(/[\s,]+/).filter(Boolean) };
    if (expiry.value) body.expires_in_s = Number(expiry.value);
    try {
      const link = await post(base, body);
      url.value = link.url;
      made.hidden = false;
      url.select();
      await refresh();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  copy.addEventListener("click", async () => {
    url.select();
    try {
      await navigator.clipboard.writeText(url.value);
      copy.textContent = "Copied";
    } catch {
      document.execCommand?.("copy");
    }
  });

  const panel = el(
    "details",
    { id: "share", class: "share-panel" },
    el("summary", { text: "Share" }),
    el("p", { class: "muted", text: "A public read-only link: anyone with it sees this dashboard's charts as saved, without signing in." }),
    el("span", { class: "field" }, el("label", { for: "share-expiry", text: "Expires" }), expiry),
    " ",
    el("span", { class: "field" }, el("label", { for: "share-ancestors", text: "May be embedded by" }), ancestors),
    " ",
    create,
    error,
    made,
    list,
  );
  panel.addEventListener("toggle", () => panel.open && refresh().catch((err) => (error.textContent = err.message)));
  host.append(panel);
  return panel;
}
