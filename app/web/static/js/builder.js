// /builder: write a metric (text or form), see the compiler's error at its position, preview
// it, save it, add it to a dashboard.
import { ApiError, get, post, put, query } from "./api.js";
import { replaceOption, rowObjects, SeriesStore, summarize, timeSeriesOption } from "./charts.js";
import { DataPanel, wireInsertEvent } from "./datapanel.js";
import { createMetricEditor, Vocabulary } from "./editor.js";
import { granularityFor, parseAbsolute, parseRefresh } from "./timerange.js";
import { TimeNav } from "./timenav.js";
import { savedMetricTools } from "./savedmetrics.js";
import { el, startPage } from "./ui.js";
import { armZoom } from "./zoom.js";

await startPage();

const $ = (id) => document.getElementById(id);
// The metric text lives in a CodeMirror editor (editor.js); the Data panel inserts into it.
const vocabulary = await new Vocabulary().load(get);
const editor = createMetricEditor({
  parent: $("metric-editor"),
  doc: $("metric-editor").dataset.initial,
  labelledBy: "metric-label",
  describedBy: "metric-error metric-keys",
  vocabulary,
  onRun: () => run(),
  onChange: () => {
    renderMirror(null);
    schedule();
  },
});
const errorNode = $("metric-error");
const preview = echarts.init($("preview"), null, { renderer: "canvas" });
new ResizeObserver(() => preview.resize()).observe($("preview"));
const PREVIEW = { "5m": [300, "1s"], "1h": [3600, "1m"], "24h": [86400, "1m"], "7d": [7 * 86400, "1h"] };
let mode = "text";
let savedMetric = null;

// -- the preview's range in the URL (range, from/to after a zoom, refresh; `dashboard` is kept) --

function readState() {
  const p = new URLSearchParams(location.search);
  const absolute = p.get("range") === "custom" ? parseAbsolute(p.get("from"), p.get("to")) : null;
  const range = absolute ? "custom" : Object.hasOwn(PREVIEW, p.get("range") ?? "") ? p.get("range") : "1h";
  return { range, from: absolute?.from ?? null, to: absolute?.to ?? null, live: false, refresh: parseRefresh(p.get("refresh")) };
}

function writeState(push, historyState) {
  const p = new URLSearchParams(location.search);
  for (const key of ["range", "from", "to", "refresh"]) p.delete(key);
  if (state.range !== "1h") p.set("range", state.range);
  if (state.range === "custom") {
    p.set("from", state.from);
    p.set("to", state.to);
  }
  if (state.refresh !== "off") p.set("refresh", state.refresh);
  const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
  if (push) history.pushState(historyState, "", url);
  else history.replaceState(state.range === "custom" ? history.state : null, "", url);
}

/** The preview's range select: the fixed choices, and the zoomed range while one shows. */
function renderRange() {
  const select = $("preview-range");
  select.querySelector('option[value="custom"]')?.remove();
  if (state.range === "custom") select.append(el("option", { value: "custom", text: "Zoomed (see below)" }));
  select.value = state.range;
  nav.sync();
}

let state = readState();
const nav = new TimeNav({
  get state() {
    return state;
  },
  isLive: false,
  setState(change, push = false, historyState = null) {
    Object.assign(state, change);
    writeState(push, historyState);
    renderRange();
    return run();
  },
  restore() {
    state = readState();
    renderRange();
    return run();
  },
  reloadAll: () => run(),
});
nav.mount({ refreshBefore: $("run"), barAfter: $("preview-range").closest(".row") });
window.addEventListener("popstate", () => nav.host.restore());

// -- the error marker -------------------------------------------------------------------------

/** 0-based offset of a 1-based (line, column) in `text`. */
export function offsetOf(text, line, column) {
  const lines = text.split("\n");
  let offset = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  return Math.min(text.length, offset + Math.max(0, column - 1));
}

/** Underline [start, end) of the text (the editor's error mark), or clear it. */
function renderMirror(mark) {
  if (mark) editor.showError(mark.start, mark.end);
  else editor.clearError();
}

function clearError() {
  errorNode.replaceChildren();
  renderMirror(null);
}

/** Show an ApiError from the compiler: message + line/column, and underline the token. */
function showError(err) {
  const where = err.where || {};
  errorNode.replaceChildren();
  if (mode === "text" && where.line) {
    const text = editor.text();
    const start = where.offset ?? offsetOf(text, where.line, where.column || 1);
    let length = 1;
    if (where.token && text.startsWith(where.token, start)) length = where.token.length;
    else if (where.token) length = Math.max(1, Math.min(where.token.length, text.length - start));
    renderMirror({ start, end: start + length });
    const jump = el("button", {
      type: "button",
      class: "link",
      id: "error-position",
      "data-line": where.line,
      "data-column": where.column,
      "data-offset": start,
      text: `line ${where.line}, column ${where.column}`,
      onclick: () => editor.select(start, start + length),
    });
    errorNode.append(jump, `: ${err.message}`, where.token ? ` (near “${where.token}”)` : "");
  } else {
    renderMirror(null);
    const field = where.field || where.param;
    errorNode.append(`${err.message}${field ? ` (${field})` : ""}`);
  }
}

// -- form mode --------------------------------------------------------------------------------

const quote = (v) => `'${String(v).replaceAll("'", "''")}'`;

function filterRow(f = { dimension: "country", op: "=", value: "" }) {
  const dims = ["event", "country", "device", "browser", "os", "path", "referrer", "user_id"];
  const ops = ["=", "!=", "in", "like"];
  const row = el(
    "div",
    { class: "row filter-row" },
    el("label", { class: "sr-only", text: "Dimension" }),
    el("select", { class: "fd", "aria-label": "Filter dimension" }, ...dims.map((d) => el("option", { selected: d === f.dimension, text: d }))),
    el("select", { class: "fo", "aria-label": "Filter operator" }, ...ops.map((o) => el("option", { selected: o === f.op, text: o }))),
    el("input", { class: "fv", "aria-label": "Filter value", value: Array.isArray(f.value) ? f.value.join(",") : f.value, placeholder: "value (a,b for in)" }),
    el("button", { type: "button", class: "link", "aria-label": "Remove filter", text: "remove", onclick: () => (row.remove(), formChanged()) }),
  );
  row.addEventListener("input", formChanged);
  row.addEventListener("change", formChanged);
  return row;
}

function readForm() {
  const agg = $("f-agg").value;
  const output = { name: $("f-name").value.trim() || "value_out", agg };
  if (agg !== "count") output.column = $("f-column").value || (agg === "uniq" ? "user_id" : "value");
  if (agg === "quantile") output.param = Number($("f-param").value);
  const event = $("f-event").value.trim();
  if (event) output.where = [{ dimension: "event", op: "=", value: event }];
  const filters = [...document.querySelectorAll("#f-filters .filter-row")]
    .map((r) => {
      const op = r.querySelector(".fo").value;
      const raw = r.querySelector(".fv").value.trim();
      return { dimension: r.querySelector(".fd").value, op, value: op === "in" ? raw.split(",").map((s) => s.trim()) : raw };
    })
    .filter((f) => f.value !== "" && !(Array.isArray(f.value) && f.value.every((v) => v === "")));
  const group = $("f-group").value;
  return { outputs: [output], filters, group_by: group ? [group] : [] };
}

function condText(f) {
  if (f.op === "in") return `${f.dimension} IN (${f.value.map(quote).join(", ")})`;
  if (f.op === "like") return `${f.dimension} LIKE ${quote(f.value)}`;
  return `${f.dimension} ${f.op} ${quote(f.value)}`;
}

/** The metric-language text equivalent to a form (the server compiles both to one model). */
export function formToText(form) {
  const selects = form.outputs.map((o) => {
    const cond = (o.where || []).map(condText).join(" AND ");
    let call;
    if (o.agg === "count") call = cond ? `countIf(${cond})` : "count()";
    else if (o.agg === "quantile") call = cond ? `quantileIf(${o.param})(${o.column}, ${cond})` : `quantile(${o.param})(${o.column})`;
    else call = cond ? `${o.agg}If(${o.column}, ${cond})` : `${o.agg}(${o.column})`;
    return `${call} AS ${o.name}`;
  });
  let text = `SELECT ${selects.join(", ")}`;
  if (form.filters.length) text += `\nWHERE ${form.filters.map(condText).join(" AND ")}`;
  if (form.group_by.length) text += `\nGROUP BY ${form.group_by.join(", ")}`;
  return text;
}

function formChanged() {
  const form = readForm();
  $("form-json").textContent = JSON.stringify(form, null, 2);
  $("form-text").textContent = formToText(form);
  $("f-param").disabled = $("f-agg").value !== "quantile";
  $("f-column").disabled = $("f-agg").value === "count";
  schedule();
}

for (const id of ["f-name", "f-agg", "f-column", "f-param", "f-event", "f-group"]) {
  $(id).addEventListener("input", formChanged);
  $(id).addEventListener("change", formChanged);
}
$("f-add-filter").addEventListener("click", () => {
  $("f-filters").append(filterRow());
  formChanged();
});
$("form-to-text").addEventListener("click", () => {
  editor.setText(formToText(readForm()));
  setMode("text");
});

function setMode(next) {
  mode = next;
  $("tab-text").setAttribute("aria-selected", String(next === "text"));
  $("tab-form").setAttribute("aria-selected", String(next === "form"));
  $("pane-text").hidden = next !== "text";
  $("pane-form").hidden = next !== "form";
  if (next === "form") formChanged();
  else schedule();
}
$("tab-text").addEventListener("click", () => setMode("text"));
$("tab-form").addEventListener("click", () => setMode("form"));
for (const tab of ["tab-text", "tab-form"]) {
  $(tab).addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const other = tab === "tab-text" ? "tab-form" : "tab-text";
      $(other).focus();
      $(other).click();
    }
  });
}

// -- compile + preview --------------------------------------------------------------------------

const definition = () => (mode === "text" ? { text: editor.text() } : readForm());
let timer = null;
let seq = 0;

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(run, 400);
}

async function run() {
  const mine = ++seq;
  const custom = state.range === "custom";
  const [span, granularity] = custom ? [state.to - state.from, granularityFor(state.to - state.from)] : PREVIEW[state.range];
  $("preview-meta").textContent = "compiling…";
  let answer;
  try {
    const range = custom ? { from: String(state.from), to: String(state.to) } : { from: `now-${span}s` };
    answer = await query("/query", { definition: definition(), ...range, granularity });
  } catch (err) {
    if (mine !== seq) return;
    $("preview-meta").textContent = "";
    if (err instanceof ApiError) showError(err);
    $("preview").setAttribute("aria-label", "Preview chart: not available, the metric does not compile.");
    document.body.dataset.preview = "error";
    return;
  }
  if (mine !== seq) return;
  clearError();
  const rows = rowObjects(answer.columns, answer.rows);
  const first = rows[0] || {};
  const dims = answer.columns.filter((c) => c !== "t" && c !== "series" && typeof first[c] === "string");
  const store = new SeriesStore({ dims, stepS: answer.meta?.granularity_s || 1 });
  store.upsert(rows);
  const now = Math.floor(Date.now() / 1000);
  const end = custom ? state.to : now;
  const step = answer.meta?.granularity_s || 1;
  // The bucket of "now" is still filling: drawn open (dashed), as on the dashboards.
  const open = end >= now ? Math.floor(now / step) * step : null;
  const option = timeSeriesOption(store, { type: "line", from: end - span, to: end, stepS: step, openFrom: open });
  replaceOption(preview, option);
  armZoom(preview, (from, to) => nav.zoomTo(from, to));
  const m = answer.meta || {};
  const plan = [m.table, m.granularity && `${m.granularity} buckets`, m.stale && "cached"].filter(Boolean);
  $("preview-meta").textContent = plan.join(" · ");
  $("preview").setAttribute("aria-label", summarize(option, { title: "Preview chart", context: plan.join(", ") }));
  document.body.dataset.preview = "ok";
}

$("preview-range").addEventListener("change", (e) => {
  if (e.target.value !== "custom") nav.host.setState({ range: e.target.value, from: null, to: null });
});
$("run").addEventListener("click", run);

// -- save, add to a dashboard ---------------------------------------------------------------------

$("save-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = $("save-status");
  status.textContent = "saving…";
  try {
    savedMetric = await post("/metrics", { name: $("save-name").value.trim(), definition: definition() });
  } catch (err) {
    status.textContent = "";
    if (err instanceof ApiError && err.where?.line) showError(err);
    else errorNode.textContent = err.message;
    return;
  }
  status.replaceChildren(`Saved as metric ${savedMetric.id} (“${savedMetric.name}”).`);
  status.dataset.metricId = savedMetric.id;
  panel.showMetrics();
  await showAddForm();
});

async function showAddForm() {
  const dashboards = await get("/dashboards");
  const select = $("add-dashboard");
  const wanted = new URLSearchParams(location.search).get("dashboard");
  select.replaceChildren(
    ...dashboards.map((d) => el("option", { value: d.id, selected: String(d.id) === wanted, text: d.name })),
    el("option", { value: "new", text: "A new dashboard" }),
  );
  $("add-form").hidden = false;
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = $("add-status");
  const chart = { chart_type: $("add-type").value, title: savedMetric.name, metric_id: savedMetric.id, default_range: "1h" };
  if (chart.chart_type === "heatmap") chart.options = { axes: "weekday_hour" };
  try {
    let id = $("add-dashboard").value;
    if (id === "new") {
      id = (await post("/dashboards", { name: savedMetric.name, charts: [chart] })).id;
    } else {
      const d = await get(`/dashboards/${id}`);
      const charts = d.charts.map(({ id: _id, position: _p, ...rest }) => rest);
      await put(`/dashboards/${id}`, { name: d.name, description: d.description, charts: [...charts, chart], version: d.version });
    }
    status.replaceChildren("Added. ", el("a", { href: `/d/${id}`, text: "Open the dashboard" }));
  } catch (err) {
    status.textContent = err.message;
  }
});

// -- the Data panel: the org's events, properties, top values and saved metrics ------------------

const panel = new DataPanel($("data-panel"), {
  insert: (text) => {
    setMode("text");
    editor.insert(text);
  },
  load: (metric) => {
    const def = metric.definition || {};
    editor.setText(typeof def.text === "string" ? def.text : formToText({ outputs: [], filters: [], group_by: [], ...def }));
    $("save-name").value = metric.name;
    setMode("text");
    run();
    savedMetric = metric; // "Add to dashboard" adds the opened metric
    showAddForm();
  },
  stringColumns: vocabulary.stringColumns,
  tools: await savedMetricTools($("data-metrics-status"), () => panel.showMetrics()),
});
wireInsertEvent(panel);
panel.start();

renderMirror(null);
renderRange();
schedule();
document.body.dataset.ready = "1";
