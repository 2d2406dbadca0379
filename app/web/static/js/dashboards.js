// /: the org's dashboards; create one, or the starter dashboard (one chart of each type);
// editors and admins also duplicate and delete them (a delete asks first).
import { get, post } from "./api.js";
import { rowTools } from "./rowtools.js";
import { currentUser, el, startPage } from "./ui.js";

await startPage();
const me = await currentUser().catch(() => null);
const canEdit = me?.role === "editor" || me?.role === "admin";

const STARTER = {
  name: "Overview",
  description: "Page views live, revenue, top countries, activity by hour, the purchase funnel.",
  charts: [
    { chart_type: "line", title: "Page views (live)", metric_inline: { text: "SELECT countIf(event = 'pageview') AS page_views" }, default_range: "5m" },
    { chart_type: "line", title: "Revenue", metric_inline: { text: "SELECT sumIf(value, event = 'purchase') AS revenue" }, default_range: "1h", options: { unit: { kind: "currency", currency: "EUR" } } },
    { chart_type: "bar", title: "Top countries", metric_inline: { text: "SELECT count() AS events_n" }, default_range: "1h", dimension: "country" },
    { chart_type: "line", title: "Errors per device", metric_inline: { text: "SELECT countIf(event = 'error') AS errors" }, default_range: "1h", dimension: "device" },
    { chart_type: "heatmap", title: "Activity by weekday and hour", metric_inline: { text: "SELECT count() AS events_n" }, default_range: "7d", options: { axes: "weekday_hour" } },
    {
      chart_type: "funnel",
      title: "Purchase funnel",
      metric_inline: { text: "SELECT count() AS events_n" },
      default_range: "24h",
      options: { steps: ["pageview", "add_to_cart", "purchase"], window_seconds: 3600 },
    },
  ],
};

const list = document.getElementById("dashboard-list");
const errorNode = document.getElementById("list-error");

async function refresh() {
  const dashboards = await get("/dashboards");
  list.replaceChildren(
    ...dashboards.map((d) =>
      el(
        "li",
        { "data-dashboard-id": d.id },
        el("a", { href: `/d/${d.id}`, text: d.name }),
        el("span", { class: "muted", text: ` · ${d.chart_count} charts${d.description ? ` · ${d.description}` : ""}` }),
        canEdit ? rowTools(d, { path: "/dashboards", confirmText: `Delete the dashboard “${d.name}” and its ${d.chart_count} charts?`, notDeleted: (err) => `Not deleted: ${err.message}`, status: errorNode, refresh }) : null,
      ),
    ),
  );
  document.getElementById("empty").hidden = dashboards.length > 0;
}

async function create(body) {
  errorNode.textContent = "";
  try {
    const d = await post("/dashboards", body);
    location.assign(`/d/${d.id}`);
  } catch (err) {
    errorNode.textContent = err.message;
  }
}

document.getElementById("new-dashboard").addEventListener("submit", (e) => {
  e.preventDefault();
  create({ name: document.getElementById("new-name").value.trim(), charts: [] });
});
document.getElementById("starter").addEventListener("click", () => create(STARTER));
refresh().catch((err) => (errorNode.textContent = err.message));
document.body.dataset.ready = "1";
