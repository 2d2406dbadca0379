// Duplicate and Delete for the org's saved metrics, for editors and admins, shown beside each
// metric of the builder's Data panel (datapanel.js): a delete asks first; one still used by a
// chart or an alert is refused with the API's words, and a 409 from a concurrent change says who
// made it. docs/ui.md, "Query builder".
import { api, ApiError, get, post } from "./api.js";
import { conflictText } from "./grid.js";
import { el } from "./ui.js";

/**
 * A function that gives a saved metric's Duplicate/Delete buttons (null for viewers);
 * `status`: where refusals are said; `refresh()`: re-reads the list after a change.
 */
export async function savedMetricTools(status, refresh) {
  const me = await get("/me").catch(() => null);
  if (!me || !(me.role === "editor" || me.role === "admin")) return () => null;

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

  return (m) =>
    el(
      "span",
      { class: "row-tools" },
      el("button", { type: "button", class: "link", text: "Duplicate", "aria-label": `Duplicate ${m.name}`, onclick: () => duplicate(m) }),
      el("button", { type: "button", class: "link", text: "Delete", "aria-label": `Delete ${m.name}`, onclick: () => remove(m) }),
    );
}
