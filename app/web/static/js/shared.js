// A public dashboard link (/s/{token}): the dashboard's charts as saved, read-only, no login.
// The link in the address is the only credential; the page asks only the link's own endpoints
// and redraws every REFRESH_S seconds (each request counts against the link's rate limit).
import { funnelOption, heatmapOption, rowObjects, SeriesStore, summarize, timeSeriesOption, topOption } from "./charts.js";
import { el } from "./ui.js";

const REFRESH_S = 15;
const token = location.pathname.split("/")[2];
const id = Number(document.body.dataset.dashboardId);
const base = `/s/${encodeURIComponent(token)}/dashboards/${id}`;

async function read(path) {
  const res = await fetch(path, { credentials: "omit" });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(body?.error?.message || `HTTP ${res.status}`), { status: res.status });
  return body;
}

function draw(view, data) {
  if (data.error) {
    view.error.textContent = data.error.message;
    return;
  }
  view.error.textContent = "";
  const meta = data.meta || {};
  const chart = view.chart;
  const stepS = meta.granularity_s || 60;
  let option;
  if (chart.kind === "funnel") option = funnelOption(data.columns, data.rows, { title: chart.title, mainLabel: "all" });
  else if (chart.kind === "heatmap") option = heatmapOption(data.columns, data.rows, { title: chart.title, dimension: chart.axes, stepS });
  else if (chart.kind === "top") option = topOption(data.columns, data.rows, { title: chart.title, dimension: chart.dimension });
  else {
    const store = new SeriesStore({ dims: chart.dimension ? [chart.dimension] : [], stepS });
    store.upsert(rowObjects(data.columns, data.rows));
    const type = chart.chart_type === "bar" ? "bar" : "line";
    option = timeSeriesOption(store, { type, title: chart.title, from: meta.time_from, to: meta.time_to, stepS, width: view.box.clientWidth });
  }
  view.ec.setOption(option, { notMerge: true });
  view.box.setAttribute("aria-label", summarize(option, { title: view.chart.title }));
}

async function main() {
  const section = document.getElementById("dashboard");
  if (!section) return; // the link is dead: the page says so
  const dashboard = await read(base);
  section.hidden = false;
  document.getElementById("dash-title").textContent = dashboard.name;
  document.getElementById("dash-description").textContent = dashboard.description;
  document.title = `${dashboard.name} · ClickPulse`;
  const grid = document.getElementById("grid");
  const views = dashboard.charts.map((chart) => {
    const box = el("div", { class: "chart-box", role: "img", "aria-label": chart.title });
    const error = el("p", { class: "error", role: "alert" });
    const title = el("h2", { id: `chart-${chart.id}-title`, text: chart.title || `Chart ${chart.id}` });
    const card = el("article", { class: "card chart-card", "data-chart-id": chart.id, "data-chart-kind": chart.kind, "aria-labelledby": `chart-${chart.id}-title` }, el("header", { class: "chart-head" }, title), error, box);
    grid.append(card);
    const view = { chart, box, error, ec: echarts.init(box, null, { renderer: "canvas" }) };
    new ResizeObserver(() => view.ec.resize()).observe(box);
    return view;
  });
  const refresh = async () => {
    try {
      const answer = await read(`${base}/data`);
      const byId = new Map(answer.charts.map((c) => [c.chart_id, c]));
      for (const v of views) if (byId.has(v.chart.id)) draw(v, byId.get(v.chart.id));
      document.getElementById("dash-error").textContent = "";
      document.getElementById("updated-at").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      document.getElementById("dash-error").textContent = err.status === 404 ? "This link is no longer valid." : err.message;
    }
  };
  await refresh();
  setInterval(refresh, REFRESH_S * 1000);
  document.addEventListener("theme", refresh);
}

main()
  .catch((err) => {
    const e = document.getElementById("dash-error");
    if (e) e.textContent = err.status === 404 ? "This link is no longer valid." : err.message;
  })
  .finally(() => (document.body.dataset.ready = "1"));
