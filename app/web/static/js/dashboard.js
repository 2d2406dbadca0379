// /d/{id}: the dashboard's charts. Each chart loads its history over REST, then subscribes
// over /ws/subscribe and merges what arrives into its series in place (see docs/ui.md).
import { ApiError, get, qs, query } from "./api.js";
import { funnelOption, heatmapOption, rowObjects, SeriesStore, summarize, timeSeriesOption, topOption } from "./charts.js";
import { el, startPage } from "./ui.js";

export const RANGES = { "5m": 300, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };
const GRAN_S = { "1s": 1, "1m": 60, "1h": 3600, "1d": 86400 };
export const LIVE_EXACT_MAX_S = 600; // ≤ 10 min: 1 s buckets, push deltas merged point by point
const DRILL_DIMS = ["country", "device", "browser", "os", "event"];

const parseRange = (text) => Number(text.slice(0, -1)) * UNIT_S[text.slice(-1)];
const nowS = () => Math.floor(Date.now() / 1000);

/** The granularity that follows a range: ≤10 min → 1s, ≤2 d → 1m, ≤90 d → 1h, else 1d. */
export function granularityFor(spanS) {
  if (spanS <= LIVE_EXACT_MAX_S) return "1s";
  if (spanS <= 2 * 86400) return "1m";
  if (spanS <= 90 * 86400) return "1h";
  return "1d";
}

/** `now-<n><unit>`: the API keeps the last answer of a relative range for degradation. */
function relative(spanS) {
  for (const [unit, s] of [["d", 86400], ["h", 3600], ["m", 60]]) if (spanS % s === 0) return `now-${spanS / s}${unit}`;
  return `now-${spanS}s`;
}

function parseSegment(text) {
  const out = [];
  for (const part of text.split(/\s+AND\s+|;/i)) {
    const m = part.trim().match(/^([A-Za-z_][A-Za-z0-9_.]*)\s*(!=|=)\s*(.+)$/);
    if (!m) continue;
    const values = m[3].split(",").map((v) => v.trim().replace(/^'(.*)'$/, "$1"));
    if (values.length > 1) out.push({ dimension: m[1], op: m[2] === "=" ? "in" : "not_in", value: values });
    else out.push({ dimension: m[1], op: m[2], value: values[0] });
  }
  return out;
}

// -- state kept in the URL (so reload and the back button keep range, filters, comparison) ----

function readState() {
  const p = new URLSearchParams(location.search);
  let filters = [];
  try {
    filters = JSON.parse(p.get("f") || "[]");
  } catch {
    filters = [];
  }
  return {
    range: p.get("range") || "default",
    from: p.get("from") ? Number(p.get("from")) : null,
    to: p.get("to") ? Number(p.get("to")) : null,
    filters: Array.isArray(filters) ? filters : [],
    compare: p.get("compare") || "",
    segment: p.get("segment") || "",
    live: p.get("live") !== "0",
  };
}

function writeState(state, push = false) {
  const p = new URLSearchParams();
  if (state.range !== "default") p.set("range", state.range);
  if (state.range === "custom") {
    p.set("from", state.from);
    p.set("to", state.to);
  }
  if (state.filters.length) p.set("f", JSON.stringify(state.filters));
  if (state.compare) p.set("compare", state.compare);
  if (state.compare === "segment" && state.segment) p.set("segment", state.segment);
  if (!state.live) p.set("live", "0");
  const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

/** A compared series with no rows at all in the range is all zeros (docs/metric-language.md). */
function withMissingSeries(rows, compare) {
  if (!compare || !rows.length) return rows;
  const expected = compare === "previous_period" ? ["current", "previous"] : ["a", "b"];
  const present = new Set(rows.map((r) => r.series));
  const source = expected.find((e) => present.has(e));
  const extra = [];
  for (const missing of expected.filter((e) => !present.has(e))) {
    for (const r of rows) {
      if (r.series !== source) continue;
      const zero = { ...r, series: missing };
      for (const [k, v] of Object.entries(r)) if (typeof v === "number" && k !== "t") zero[k] = 0;
      extra.push(zero);
    }
  }
  return extra.length ? [...rows, ...extra] : rows;
}

// -- one chart ---------------------------------------------------------------------------------

class ChartView {
  constructor(dash, chart) {
    this.dash = dash;
    this.chart = chart;
    this.key = `chart-${chart.id}`;
    this.subId = null;
    this.tailTimer = null;
    this.lastTail = 0;
    this.generation = 0;
    this.status = el("span", { class: "chart-status muted", role: "status" });
    this.errorNode = el("p", { class: "error", role: "alert" });
    this.box = el("div", { class: "chart-box", role: "img", "aria-label": chart.title || `${chart.chart_type} chart` });
    this.values = el("div", { class: "drill-values" });
    this.card = el(
      "article",
      { class: "card chart-card", "data-chart-id": chart.id, "data-chart-type": chart.chart_type, "aria-labelledby": `${this.key}-title` },
      el("header", { class: "chart-head" }, el("h2", { id: `${this.key}-title`, text: chart.title || `Chart ${chart.id}` }), this.status),
      this.errorNode,
      this.box,
      this.values,
    );
    this.ec = null;
  }

  mount(grid) {
    grid.append(this.card);
    this.ec = echarts.init(this.box, null, { renderer: "canvas" });
    this.ec.on("click", (params) => this.onClick(params));
    new ResizeObserver(() => this.ec.resize()).observe(this.box);
  }

  // What this chart shows under the dashboard's current controls.
  get spanS() {
    const r = this.dash.state;
    if (r.range === "custom") return r.to - r.from;
    return r.range === "default" ? parseRange(this.chart.default_range) : RANGES[r.range];
  }
  get granularity() {
    const r = this.dash.state;
    if (r.range === "default" && this.chart.granularity !== "auto") return this.chart.granularity;
    return granularityFor(this.spanS);
  }
  get stepS() {
    return GRAN_S[this.granularity];
  }
  get drillPath() {
    const path = this.chart.options?.drilldown || (this.chart.dimension ? [this.chart.dimension, ...DRILL_DIMS] : []);
    return [...new Set(path)];
  }
  /** The chart's dimension after drilldown: the first of its path not already filtered. */
  get dimension() {
    const filtered = new Set(this.dash.state.filters.map((f) => f.dimension));
    return this.drillPath.find((d) => !filtered.has(d)) || null;
  }
  get kind() {
    const t = this.chart.chart_type;
    if (t === "funnel") return "funnel";
    if (t === "heatmap") return "heatmap";
    if (t === "bar" && this.dimension) return "top";
    return "series";
  }
  get compare() {
    const s = this.dash.state;
    if (s.compare === "previous_period") return "previous_period";
    if (s.compare === "segment" && s.segment) return { a: [], b: parseSegment(s.segment) };
    return this.chart.comparison || null;
  }
  get liveExact() {
    return this.kind === "series" && this.stepS === 1 && !this.compare && this.dash.isRelative;
  }
  get definition() {
    return this.chart.metric_inline;
  }
  get range() {
    const s = this.dash.state;
    if (s.range === "custom") return { from: String(s.from), to: String(s.to), start: s.from, end: s.to };
    const end = nowS();
    return { from: relative(this.spanS), to: undefined, start: end - this.spanS, end };
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** The chart's text alternative (role="img" + aria-label): title, plan and its numbers. */
  label(option, { throttle = false } = {}) {
    if (throttle && Date.now() - (this.labelledAt || 0) < 2000) return;
    this.labelledAt = Date.now();
    const title = this.chart.title || `Chart ${this.chart.id}`;
    this.box.setAttribute("aria-label", summarize(option, { title, context: this.describe().replaceAll(" · ", ", ") }));
  }

  setError(err) {
    this.errorNode.textContent = err ? (err instanceof ApiError ? `${err.message}` : String(err)) : "";
  }

  async fetchSeries(from, to) {
    const group = this.dimension || undefined;
    const filters = this.dash.state.filters;
    const compare = this.compare;
    if (this.chart.metric_id) {
      return get(
        `/metrics/${this.chart.metric_id}/history` +
          qs({
            from,
            to,
            granularity: this.granularity,
            filter: filters.length ? JSON.stringify(filters) : undefined,
            group_by: group,
            compare: compare ? (typeof compare === "string" ? compare : JSON.stringify(compare)) : undefined,
          }),
      );
    }
    return query("/query", { definition: this.definition, from, to, granularity: this.granularity, filters, group_by: group || null, compare });
  }

  async fetchOther(from, to) {
    const filters = this.dash.state.filters;
    const metric = this.chart.metric_id ? { metric_id: this.chart.metric_id } : { definition: this.definition };
    if (this.kind === "funnel") {
      const opts = this.chart.options || {};
      return query("/ui/data/funnel", { steps: opts.steps || ["pageview", "signup", "purchase"], window_seconds: opts.window_seconds || 3600, from, to, filters });
    }
    if (this.kind === "heatmap") {
      const axes = this.chart.options?.axes || this.dimension || "weekday_hour";
      return query("/ui/data/heatmap", { ...metric, from, to, axes, granularity: axes === "weekday_hour" ? "auto" : this.granularity, filters });
    }
    return query("/ui/data/top", { ...metric, dimension: this.dimension, n: this.chart.options?.n || 10, from, to, filters });
  }

  /** History (or the chart's whole answer) over REST; draws from scratch. */
  async load() {
    const gen = ++this.generation;
    this.unsubscribe();
    this.setError(null);
    this.setStatus("loading…");
    const { from, to, start, end } = this.range;
    let answer;
    try {
      answer = this.kind === "series" ? await this.fetchSeries(from, to) : await this.fetchOther(from, to);
    } catch (err) {
      if (gen !== this.generation) return;
      this.setStatus("");
      this.setError(err);
      this.ec.clear();
      this.box.setAttribute("aria-label", `${this.chart.title || `Chart ${this.chart.id}`}: not available (${err.message || err}).`);
      return;
    }
    if (gen !== this.generation) return;
    this.meta = answer.meta || {};
    this.dash.freshness.setCached(this.key, !!this.meta.stale, this.meta.age_s);
    if (!this.meta.stale) this.dash.freshness.touch();
    this.draw(answer, start, end);
    this.setStatus(this.describe());
    this.subscribe();
  }

  describe() {
    const m = this.meta || {};
    const parts = [];
    if (this.kind === "series" || (this.kind === "heatmap" && this.dimension)) parts.push(`${this.granularity} buckets`);
    if (m.table) parts.push(m.table);
    if (m.stale) parts.push(`cached, ${Math.round(m.age_s || 0)} s old`);
    if (this.dimension && this.kind !== "funnel") parts.push(`by ${this.dimension}`);
    return parts.join(" · ");
  }

  draw(answer, start, end) {
    const title = this.chart.title;
    if (this.kind === "series") {
      const labels = {};
      const cmp = this.compare;
      if (cmp && typeof cmp === "object") {
        labels.a = "all";
        labels.b = this.dash.state.segment || "segment B";
      }
      this.store = new SeriesStore({ dims: this.dimension ? [this.dimension] : [], stepS: this.stepS, labels });
      this.store.upsert(withMissingSeries(rowObjects(answer.columns, answer.rows), cmp));
      this.window = { start, end };
      const type = this.chart.chart_type === "bar" ? "bar" : "line";
      const option = timeSeriesOption(this.store, { type, title, from: start, to: end });
      if (this.liveExact) option.animation = false; // a point a second: gliding costs frames
      this.ec.setOption(option, { notMerge: true });
      this.label(option);
      this.renderValues([...new Set([...this.store.series.values()].map((s) => s.dims[this.dimension]))]);
    } else if (this.kind === "funnel") {
      const opt = funnelOption(answer.columns, answer.rows, { title });
      this.ec.setOption(opt, { notMerge: true });
      this.label(opt);
      this.renderValues([]);
    } else if (this.kind === "heatmap") {
      const dimension = this.chart.options?.axes || this.dimension;
      const opt = heatmapOption(answer.columns, answer.rows, { title, dimension });
      this.ec.setOption(opt, { notMerge: true });
      this.label(opt);
      this.renderValues([]);
    } else {
      const opt = topOption(answer.columns, answer.rows, { title, dimension: this.dimension });
      this.ec.setOption(opt, { notMerge: true });
      this.label(opt);
      this.renderValues(opt.series[0].data.filter((d) => !d.isOther).map((d) => d.dimValue));
    }
  }

  /** Keyboard path to drilldown: one button per dimension value shown. */
  renderValues(values) {
    this.values.replaceChildren();
    this.values.removeAttribute("role");
    this.values.removeAttribute("aria-label");
    const dim = this.dimension;
    if (!dim || this.kind === "funnel" || !values.length) return;
    this.values.setAttribute("role", "group");
    this.values.setAttribute("aria-label", `Drill into ${dim}`);
    this.values.append(el("span", { class: "muted", "aria-hidden": "true", text: `Drill into ${dim}: ` }));
    for (const v of values.filter((x) => x !== undefined).slice(0, 20)) {
      this.values.append(
        el("button", { type: "button", class: "chip", "data-drill": v, text: v === "" ? "(none)" : v, onclick: () => this.dash.drill(dim, v) }),
      );
    }
  }

  onClick(params) {
    const dim = this.dimension;
    if (!dim) return;
    if (this.kind === "top") {
      if (params.data && !params.data.isOther) this.dash.drill(dim, params.data.dimValue);
    } else if (this.kind === "series") {
      const s = this.store?.series.get(params.seriesId);
      if (s && s.dims[dim] !== undefined) this.dash.drill(dim, s.dims[dim]);
    } else if (this.kind === "heatmap" && this.chart.options?.axes !== "weekday_hour") {
      const values = this.ec.getOption().yAxis[0].data;
      const v = values[params.data[1]];
      if (v !== undefined) this.dash.drill(dim, v === "(none)" ? "" : v);
    }
  }

  // -- live ---------------------------------------------------------------------------------

  subscribe() {
    const push = this.dash.push;
    if (!push || !this.dash.state.live || !this.dash.isRelative) return;
    this.subId = `${this.key}-${this.generation}`;
    const params = { filters: this.dash.state.filters, range_s: this.liveExact ? this.spanS : 60 };
    if (this.chart.metric_id) params.metric_id = this.chart.metric_id;
    else if (this.definition && "text" in this.definition) params.metric = this.definition.text;
    else params.metric = this.definition;
    const dim = this.kind === "series" || this.kind === "top" ? this.dimension : null;
    if (dim) params.group_by = [dim];
    if (this.kind !== "series") params.group_by = dim ? [dim] : null;
    push.subscribe(this.subId, params, {
      onData: (type, points) => this.onLive(type, points),
      onError: (msg) => {
        this.pushError = msg.message || msg.code;
        this.setStatus(`${this.describe()} · live: ${this.pushError}`);
      },
    });
  }

  unsubscribe() {
    if (this.subId) this.dash.push?.unsubscribe(this.subId);
    this.subId = null;
    clearTimeout(this.tailTimer);
    this.tailTimer = null;
  }

  onLive(type, points) {
    if (!this.dash.state.live) return;
    this.pushError = null;
    if (this.liveExact && this.store) {
      // 1 s buckets: the pushed seconds ARE the points. Upsert (late seconds overwrite),
      // zero-fill seconds with no events, slide the window, and hand ECharts the new data.
      if (!points.length) return;
      this.store.upsert(points);
      this.advanceWindow();
      return;
    }
    if (type === "snapshot" || points.length === 0) return; // the REST load already has it
    this.scheduleTail();
  }

  /** Coalesce live renders to one per animation frame (deltas and the window tick). */
  advanceWindow() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.renderWindow();
    });
  }

  renderWindow() {
    const end = nowS() + 1;
    const start = end - this.spanS;
    const last = this.store.lastT();
    if (last !== null) this.store.fill(Math.max(start, this.window.start), Math.min(last, end));
    this.store.trim(start);
    this.window = { start, end };
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const series = this.store.seriesOptions(type);
    this.ec.setOption({ xAxis: { min: start * 1000, max: end * 1000 }, series });
    this.label({ series }, { throttle: true });
  }

  /** Longer ranges: the newest bucket(s) are re-read over REST (exact for uniq, ratios, …). */
  scheduleTail() {
    if (this.tailTimer) return;
    const minGap = this.kind === "series" && this.stepS <= 60 ? 2000 : 5000;
    const wait = Math.max(0, this.lastTail + minGap - Date.now());
    this.tailTimer = setTimeout(() => {
      this.tailTimer = null;
      this.refreshTail().catch(() => {});
    }, wait);
  }

  async refreshTail() {
    this.lastTail = Date.now();
    const gen = this.generation;
    if (this.kind !== "series" || !this.store) {
      const { from, to } = this.range;
      const answer = await this.fetchOther(from, to);
      if (gen !== this.generation) return;
      this.meta = answer.meta || {};
      this.dash.freshness.setCached(this.key, !!this.meta.stale, this.meta.age_s);
      const opt =
        this.kind === "funnel"
          ? funnelOption(answer.columns, answer.rows, { title: this.chart.title })
          : this.kind === "heatmap"
            ? heatmapOption(answer.columns, answer.rows, { title: this.chart.title, dimension: this.chart.options?.axes || this.dimension })
            : topOption(answer.columns, answer.rows, { title: this.chart.title, dimension: this.dimension });
      this.ec.setOption({ series: opt.series, xAxis: opt.xAxis, yAxis: opt.yAxis, visualMap: opt.visualMap });
      this.label(opt, { throttle: true });
      return;
    }
    const last = this.store.lastT() ?? nowS() - this.spanS;
    const from = Math.floor(last / this.stepS) * this.stepS;
    const answer = await this.fetchSeries(String(from), undefined);
    if (gen !== this.generation) return;
    this.dash.freshness.setCached(this.key, !!answer.meta?.stale, answer.meta?.age_s);
    if (!answer.meta?.stale) this.dash.freshness.touch();
    this.store.upsert(rowObjects(answer.columns, answer.rows));
    const end = nowS();
    this.store.trim(end - this.spanS);
    this.window = { start: end - this.spanS, end };
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const series = this.store.seriesOptions(type);
    this.ec.setOption({ xAxis: { min: this.window.start * 1000, max: end * 1000 }, series });
    this.label({ series }, { throttle: true });
  }

  dispose() {
    this.unsubscribe();
    this.dash.freshness.setCached(this.key, false);
  }
}

// -- the page ----------------------------------------------------------------------------------

class Dashboard {
  constructor(id, page) {
    this.id = id;
    this.push = page.push;
    this.freshness = page.freshness;
    this.state = readState();
    this.views = [];
  }

  get isRelative() {
    return this.state.range !== "custom";
  }

  async open() {
    let dashboard;
    try {
      dashboard = await get(`/dashboards/${this.id}`);
    } catch (err) {
      if (err.status === 404) {
        document.getElementById("not-found").hidden = false;
        document.title = "Not found · ClickPulse";
        return;
      }
      document.getElementById("dashboard").hidden = false;
      document.getElementById("dash-error").textContent = err.message;
      return;
    }
    this.dashboard = dashboard;
    if (dashboard.stale) this.freshness.setCached("dashboard", true, dashboard.age_s);
    document.getElementById("dashboard").hidden = false;
    document.getElementById("dash-title").textContent = dashboard.name;
    document.getElementById("dash-description").textContent = dashboard.description;
    document.title = `${dashboard.name} · ClickPulse`;
    const grid = document.getElementById("grid");
    if (!dashboard.charts.length) {
      grid.append(el("p", { class: "muted" }, "No charts yet. Add one from the ", el("a", { href: `/builder?dashboard=${this.id}`, text: "query builder" }), "."));
    }
    for (const chart of dashboard.charts) {
      const view = new ChartView(this, chart);
      view.mount(grid);
      this.views.push(view);
    }
    this.bindControls();
    this.renderControls();
    this.reloadAll();
    window.addEventListener("popstate", () => {
      this.state = readState();
      this.renderControls();
      this.reloadAll();
    });
    // Without a socket (push down), keep the tails fresh by asking every few seconds.
    setInterval(() => {
      if (!this.state.live || !this.isRelative) return;
      for (const v of this.views) {
        if (!this.push?.isOpen || v.pushError) {
          if (v.liveExact && v.store) v.refreshTail().catch(() => {});
          else v.scheduleTail();
        }
      }
    }, 5000);
    // The 1 s window keeps sliding between deltas — not while stalled: the charts stay at the
    // last update, as the badge and the stamp say.
    setInterval(() => {
      if (!this.state.live || !this.isRelative || this.freshness.stalled) return;
      for (const v of this.views) if (v.liveExact && v.store && v.window) v.advanceWindow();
    }, 1000);
  }

  reloadAll() {
    this.renderBreadcrumbs();
    return Promise.all(this.views.map((v) => v.load()));
  }

  setState(change, pushHistory = false) {
    Object.assign(this.state, change);
    writeState(this.state, pushHistory);
    this.renderControls();
    this.reloadAll();
  }

  drill(dimension, value) {
    const filters = [...this.state.filters.filter((f) => f.dimension !== dimension), { dimension, op: "=", value }];
    this.focusCrumb = true; // the pressed value button is replaced: keep the keyboard user's place
    this.setState({ filters }, true);
  }

  renderBreadcrumbs() {
    const nav = document.getElementById("breadcrumbs");
    const list = el("ol");
    const crumbs = [{ label: "All", filters: [] }];
    this.state.filters.forEach((f, i) => crumbs.push({ label: `${f.dimension} = ${Array.isArray(f.value) ? f.value.join(",") : f.value === "" ? "(none)" : f.value}`, filters: this.state.filters.slice(0, i + 1) }));
    crumbs.forEach((c, i) => {
      const last = i === crumbs.length - 1;
      list.append(
        el(
          "li",
          {},
          last
            ? el("span", { "aria-current": "location", tabindex: "-1", text: c.label })
            : el("button", {
                type: "button",
                class: "link",
                "data-crumb": i,
                text: c.label,
                onclick: () => {
                  this.focusCrumb = true;
                  this.setState({ filters: c.filters }, true);
                },
              }),
        ),
      );
    });
    nav.replaceChildren(list);
    nav.hidden = this.state.filters.length === 0;
    if (this.focusCrumb) {
      // Focus lands on where the user now is: the current crumb, or the title when back at "All".
      this.focusCrumb = false;
      (nav.hidden ? document.getElementById("dash-title") : list.lastElementChild.firstElementChild).focus();
    }
  }

  renderControls() {
    const s = this.state;
    document.getElementById("range").value = s.range;
    document.getElementById("custom-range").hidden = s.range !== "custom";
    document.getElementById("compare").value = s.compare;
    document.getElementById("segment-box").hidden = s.compare !== "segment";
    document.getElementById("segment").value = s.segment;
    const live = document.getElementById("live-toggle");
    live.setAttribute("aria-pressed", String(s.live));
    live.textContent = s.live ? "Live" : "Paused";
    live.disabled = !this.isRelative;
    this.freshness.setSocket(!s.live ? "paused" : this.push?.isOpen ? "live" : "connecting");
  }

  bindControls() {
    const toLocal = (s) => new Date((s - new Date().getTimezoneOffset() * 60) * 1000).toISOString().slice(0, 16);
    document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
    document.getElementById("range").addEventListener("change", (e) => {
      const value = e.target.value;
      if (value === "custom") {
        document.getElementById("custom-range").hidden = false;
        const end = nowS();
        document.getElementById("custom-from").value = toLocal(end - 86400);
        document.getElementById("custom-to").value = toLocal(end);
        return;
      }
      this.setState({ range: value, from: null, to: null });
    });
    document.getElementById("custom-apply").addEventListener("click", () => {
      const from = Math.floor(new Date(document.getElementById("custom-from").value).getTime() / 1000);
      const to = Math.floor(new Date(document.getElementById("custom-to").value).getTime() / 1000);
      if (!(from < to)) {
        document.getElementById("dash-error").textContent = "Custom range: From must be before To.";
        return;
      }
      document.getElementById("dash-error").textContent = "";
      this.setState({ range: "custom", from, to });
    });
    document.getElementById("compare").addEventListener("change", (e) => {
      if (e.target.value === "segment") {
        // The segment field follows in the tab order; focus is not moved on a select's change
        // (arrowing through the options must not throw the keyboard user elsewhere).
        document.getElementById("segment-box").hidden = false;
        return;
      }
      this.setState({ compare: e.target.value });
    });
    const applySegment = () => this.setState({ compare: "segment", segment: document.getElementById("segment").value.trim() });
    document.getElementById("segment-apply").addEventListener("click", applySegment);
    document.getElementById("segment").addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        applySegment();
      }
    });
    document.getElementById("live-toggle").addEventListener("click", () => this.setState({ live: !this.state.live }));
  }
}

const page = await startPage();
const id = Number(document.body.dataset.dashboardId);
const dash = new Dashboard(id, page);
window.clickpulse = Object.assign(window.clickpulse || {}, { dashboard: dash });
await dash.open();
document.body.dataset.ready = "1";
