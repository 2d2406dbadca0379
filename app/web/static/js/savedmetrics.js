// Duplicate and Delete for the org's saved metrics, for editors and admins, shown beside each
// metric of the builder's Data panel (datapanel.js; the buttons are rowtools.js'). A metric
// still used by a chart or an alert is refused with the API's words. docs/ui.md, "Query builder".
import { rowTools } from "./rowtools.js";
import { currentUser } from "./ui.js";

/**
 * A function that gives a saved metric's Duplicate/Delete buttons (null for viewers);
 * `status`: where refusals are said; `refresh()`: re-reads the list after a change.
 */
export async function savedMetricTools(status, refresh) {
  const me = await currentUser().catch(() => null);
  if (!me || !(me.role === "editor" || me.role === "admin")) return () => null;
  return (m) =>
    rowTools(m, {
      path: "/metrics",
      confirmText: `Delete the metric “${m.name}”?`,
      notDeleted: (err) => `“${m.name}” was not deleted: ${err.message}`,
      status,
      refresh,
    });
}
