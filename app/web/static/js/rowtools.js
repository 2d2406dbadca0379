// Duplicate and Delete beside an object in a list (the dashboards on /, the saved metrics in the
// builder's Data panel), for editors and admins. A delete asks first; a 409 from a concurrent
// change says who made it and offers "Delete anyway" at the version it names; other refusals
// are said in `status` with the API's words. docs/ui.md, "Editing a dashboard".
import { api, ApiError, post } from "./api.js";
import { conflictText } from "./grid.js";
import { el } from "./ui.js";

/**
 * The Duplicate/Delete buttons of `item` ({id, name, version}) under `path` (e.g. "/metrics"):
 * `confirmText` asks before deleting, `notDeleted(err)` words any other refusal, `status`
 * shows what went wrong, `refresh()` re-reads the list after a change.
 */
export function rowTools(item, { path, confirmText, notDeleted, status, refresh }) {
  async function duplicate() {
    status.textContent = "";
    try {
      await post(`${path}/${item.id}/duplicate`);
    } catch (err) {
      status.textContent = `Not duplicated: ${err.message}`;
    }
    await refresh();
  }

  async function remove(version = item.version) {
    if (version === item.version && !confirm(confirmText)) return;
    status.textContent = "";
    try {
      await api("DELETE", `${path}/${item.id}?version=${version}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.code === "version_conflict") {
        status.replaceChildren(`“${item.name}” was not deleted. ${conflictText(err.where)} `, el("button", { type: "button", text: "Delete anyway", onclick: () => remove(err.where.current_version) }));
        return;
      }
      status.textContent = notDeleted(err);
    }
    await refresh();
  }

  return el(
    "span",
    { class: "row-tools" },
    el("button", { type: "button", class: "link", text: "Duplicate", "aria-label": `Duplicate ${item.name}`, onclick: () => duplicate() }),
    el("button", { type: "button", class: "link", text: "Delete", "aria-label": `Delete ${item.name}`, onclick: () => remove() }),
  );
}
