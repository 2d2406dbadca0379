// The org's saved metrics on /builder: each with Duplicate and Delete for editors and admins
// (a delete asks first; one still used by a chart or an alert is refused, and a 409 from a
// concurrent change says who made it). docs/ui.md, "Query builder".
import { api, ApiError, get, post } from "./api.js";
import { conflictText } from "./grid.js";
import { el } from "./ui.js";

/** Fill `section` with the org's saved metrics; answers a function that re-reads them. */
export function mountSavedMetrics(section) {
  const list = el("ul", { class: "list saved-metrics" });
  const status = el("p", { class: "error", role: "alert" });
  section.replaceChildren(el("h2", { id: "saved-metrics-title", text: "Saved metrics" }), list, status);
  section.setAttribute("aria-labelledby", "saved-metrics-title");
  let canEdit = false;

  async function refresh() {
    const metrics = await get("/metrics");
    const items = metrics.map((m) =>
      el(
        "li",
        { "data-metric-id": m.id },
        el("span", { class: "metric-name", text: m.name }),
        m.updated_by ? el("span", { class: "muted", text: ` · changed by ${m.updated_by.name || m.updated_by.email}` }) : null,
        canEdit ? el("span", { class: "row-tools" }, el("button", { type: "button", class: "link", text: "Duplicate", "aria-label": `Duplicate ${m.name}`, onclick: () => duplicate(m) }), el("button", { type: "button", class: "link", text: "Delete", "aria-label": `Delete ${m.name}`, onclick: () => remove(m) })) : null,
      ),
    );
    if (!items.length) items.push(el("li", { class: "muted", text: "None yet: save the metric above." }));
    list.replaceChildren(...items);
  }

  async function duplicate(m) {
    status.textContent = "";
    try {
      await post(`/metrics/${m.id}/duplicate`);
    } catch (err) {
      status.textContent = `Not duplicated: ${err.message}`;
    }
    await refresh();
  }

  async function remove(m, version = m.version) {
    if (version === m.version && !confirm(`Delete the metric “${m.name}”?`)) return;
    status.textContent = "";
    try {
      await api("DELETE", `/metrics/${m.id}?version=${version}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.code === "version_conflict") {
        status.replaceChildren(`“${m.name}” was not deleted. ${conflictText(err.where)} `, el("button", { type: "button", text: "Delete anyway", onclick: () => remove(m, err.where.current_version) }));
        return;
      }
      status.textContent = `“${m.name}” was not deleted: ${err.message}`;
    }
    await refresh();
  }

  get("/me")
    .then((me) => (canEdit = me.role === "editor" || me.role === "admin"))
    .catch(() => {})
    .finally(() => refresh().catch((err) => (status.textContent = err.message)));
  return refresh;
}
