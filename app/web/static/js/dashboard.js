// /d/{id}: the dashboard's charts. Each chart loads its history over REST, then subscribes
// over /ws/subscribe and merges what arrives into its series in place (see docs/ui.md).
// Long because one chart's life — controls, load, comparison, live merge, open bucket — is
// one class whose parts share its state; the formats live in time.js and format.js.
import { api, ApiError, get, qs, query } from "./api.js";
import { clearChart, funnelOption, heatmapOption, replaceOption, rowObjects, SeriesStore, summarize, timeSeriesOption, topOption } from "./charts.js";
import { isRate, normalizeUnit, rateBasis, unitName } from "./format.js";
import { annotationSeries, dataTable, download, fileName, sparklineOption, statOf, statText, toCsv } from "./panels.js";
import { firingSeries, loadFirings } from "./alertmarks.js";
import { dateTime, fromInput, onTimeZoneChange, parseInstant, setTimeZone, timeZone, toInput, zoneLabel } from "./time.js";
import { mountGrid } from "./grid.js";
import { mountSharePanel } from "./sharepanel.js";
import { granularityFor, parseAbsolute, parseFilters, parseRefresh } from "./timerange.js";
import { TimeNav } from "./timenav.js";
import { armZoom } from "./zoom.js";
import { currentUser, el, startPage } from "./ui.js";

export const RANGES = { "5m": 300, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };
const GRAN_S = { "1s": 1, "1m": 60, "1h": 3600, "1d": 86400 };
export const LIVE_EXACT_MAX_S = 600; // ≤ 10 min: 1 s buckets, push deltas merged point by point
const DRILL_DIMS = ["country", "device", "browser", "os", "event"];
const PLURAL = { country: "countries", device: "devices", browser: "browsers", os: "operating systems", event: "events", city: "cities", region: "regions" };
const GRAN_WORDS = { 1: "second", 60: "minute", 3600: "hour", 86400: "day" };

// spanWords lives in time.js (the shared page's headers use it too); re-exported here.
export { spanWords } from "./time.js";
import { spanWords } from "./time.js";

const parseRange = (text) => Number(text.slice(0, -1)) * UNIT_S[text.slice(-1)];
const nowS = () => Math.floor(Date.now() / 1000);

export { granularityFor }; // timerange.js: the builder's preview follows the same rule

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
// A value the page cannot show (an unknown range, from ≥ to, a filter of the wrong shape) falls
// back to its default: a hand-edited or truncated link still opens the dashboard.

function readState() {
  const p = new URLSearchParams(location.search);
  const absolute = p.get("range") === "custom" ? parseAbsolute(p.get("from"), p.get("to")) : null;
  const range = absolute ? "custom" : Object.hasOwn(RANGES, p.get("range") ?? "") ? p.get("range") : "default";
  const compare = ["previous_period", "segment"].includes(p.get("compare")) ? p.get("compare") : "";
  return {
    range,
    from: absolute?.from ?? null,
    to: absolute?.to ?? null,
    filters: parseFilters(p.get("f")),
    compare,
    segment: compare === "segment" ? (p.get("segment") || "").slice(0, 1000) : "",
    live: p.get("live") !== "0",
    refresh: parseRefresh(p.get("refresh")),
  };
}

/** The state into the address; `historyState` goes with a pushed entry (a zoom's way back). */
function writeState(state, push = false, historyState = null) {
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
  if (state.refresh !== "off") p.set("refresh", state.refresh);
  const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
  if (push) history.pushState(historyState, "", url);
  else history.replaceState(state.range === "custom" ? history.state : null, "", url);
}

/**
 * A compared series with no rows at all in the range is all zeros (docs/metric-language.md).
 * A range where NO series has a row comes back as the server's fill alone — rows without a
 * series label — which stand for every series' empty buckets.
 */
function withMissingSeries(rows, compare) {
  if (!compare || !rows.length) return rows;
  const expected = compare === "previous_period" ? ["current", "previous"] : ["a", "b"];
  const labelled = rows.filter((r) => expected.includes(r.series));
  const present = new Set(labelled.map((r) => r.series));
  const template = labelled.length ? labelled.filter((r) => r.series === labelled[0].series) : rows;
  const extra = [];
  for (const missing of expected.filter((e) => !present.has(e))) {
    for (const r of template) {
      const zero = { ...r, series: missing };
      for (const [k, v] of Object.entries(r)) if (typeof v === "number" && k !== "t") zero[k] = 0;
      extra.push(zero);
    }
  }
  return [...labelled, ...extra];
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
    this.noteNode = el("p", { class: "chart-note muted" });
    this.box = el("div", { class: "chart-box", role: "img", "aria-label": chart.title || `${chart.chart_type} chart` });
    this.values = el("div", { class: "drill-values" });
    this.titleNode = el("h2", { id: `${this.key}-title`, text: chart.title || `Chart ${chart.id}` });
    this.statNode = el("div", { class: "stat", hidden: chart.chart_type !== "stat" });
    this.tableNode = el("div", { class: "chart-table", hidden: true });
    const name = chart.title || `chart ${chart.id}`;
    this.tableToggle = el("button", { type: "button", class: "chip", "aria-pressed": "false", "aria-label": `Show ${name} as a table`, text: "Table", onclick: () => this.toggleTable() });
    this.csvButton = el("button", { type: "button", class: "chip", "aria-label": `Download the data of ${name} as CSV`, text: "CSV", onclick: () => this.exportCsv() });
    this.card = el(
      "article",
      { class: "card chart-card", "data-chart-id": chart.id, "data-chart-type": chart.chart_type, "aria-labelledby": `${this.key}-title` },
      el("header", { class: "chart-head" }, this.titleNode, this.status, el("span", { class: "chart-tools" }, this.tableToggle, this.csvButton)),
      this.errorNode,
      this.noteNode,
      this.statNode,
      this.box,
      this.tableNode,
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
    if (t === "stat") return "stat";
    if (t === "bar" && this.dimension) return "top";
    return "series";
  }
  get compare() {
    const s = this.dash.state;
    if (s.compare === "previous_period") return "previous_period";
    if (s.compare === "segment" && s.segment) return { a: [], b: parseSegment(s.segment) };
    return this.chart.comparison || null;
  }
  /** The compared series' name: "previous period" or the segment as typed. */
  get compareLabel() {
    const cmp = this.compare;
    if (!cmp) return "";
    if (cmp === "previous_period") return "previous period";
    return this.dash.state.segment || "segment B";
  }
  get liveExact() {
    return this.kind === "series" && this.stepS === 1 && !this.compare && this.dash.isRelative;
  }
  get definition() {
    return this.chart.metric_inline;
  }
  /** The metric's unit: the saved metric's, or the chart's `options.unit` for an inline one. */
  get unit() {
    return normalizeUnit(this.chart.options?.unit || this.dash.metricUnits.get(this.chart.metric_id));
  }
  get range() {
    const s = this.dash.state;
    if (s.range === "custom") return { from: String(s.from), to: String(s.to), start: s.from, end: s.to };
    const end = nowS();
    return { from: relative(this.spanS), to: undefined, start: end - this.spanS, end };
  }
  /** The start of the bucket still filling (epoch s), or null when the range ended. One-second
   *  buckets: the second before is open too (its last events may still be on their way). */
  openFrom(stepS = this.stepS) {
    const now = nowS();
    const end = this.dash.isRelative ? now + 1 : this.dash.state.to;
    if (end <= now) return null;
    return Math.floor(now / stepS) * stepS - (stepS === 1 ? 1 : 0);
  }

  /** The title: the chart's, following a drilldown to another dimension; "(live)" only when
   *  the chart is drawn second by second. */
  get displayTitle() {
    let title = this.chart.title || `Chart ${this.chart.id}`;
    if (!this.liveExact) title = title.replace(/\s*\(live\)\s*$/i, "");
    const dim = this.dimension;
    if (dim && this.chart.dimension && dim !== this.chart.dimension) {
      const filters = this.dash.state.filters.map((f) => `${f.dimension} = ${Array.isArray(f.value) ? f.value.join(",") : f.value === "" ? "(none)" : f.value}`).join(", ");
      const what = this.kind === "top" ? `Top ${PLURAL[dim] || dim}` : `${this.outputName || "value"} by ${dim}`;
      title = `${what} (${filters})`;
    }
    return title;
  }
  get outputName() {
    return this.store?.outputs?.[0] || null;
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** The chart's text alternative (role="img" + aria-label): title, plan and its numbers. */
  label(option, { throttle = false } = {}) {
    if (throttle && Date.now() - (this.labelledAt || 0) < 2000) return;
    this.labelledAt = Date.now();
    this.box.setAttribute("aria-label", summarize(option, { title: this.displayTitle, context: this.describe().replaceAll(" · ", ", "), unit: this.unit, note: this.noteNode.textContent }));
  }

  setError(err) {
    this.errorNode.textContent = err ? (err instanceof ApiError ? `${err.message}` : String(err)) : "";
  }

  async fetchSeries(from, to, { compare = this.compare } = {}) {
    const group = this.dimension || undefined;
    const filters = this.dash.state.filters;
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
    return query("/query", { definition: this.definition, from, to, granularity: this.granularity, filters, group_by: group || null, compare: compare || null });
  }

  async fetchOther(from, to, { filters = this.dash.state.filters, n } = {}) {
    const metric = this.chart.metric_id ? { metric_id: this.chart.metric_id } : { definition: this.definition };
    if (this.kind === "funnel") {
      const opts = this.chart.options || {};
      return query("/ui/data/funnel", { steps: opts.steps || ["pageview", "signup", "purchase"], window_seconds: opts.window_seconds || 3600, from, to, filters });
    }
    if (this.kind === "heatmap") {
      const axes = this.chart.options?.axes || this.dimension || "weekday_hour";
      return query("/ui/data/heatmap", { ...metric, from, to, axes, granularity: axes === "weekday_hour" ? "auto" : this.granularity, filters });
    }
    return query("/ui/data/top", { ...metric, dimension: this.dimension, n: n || this.chart.options?.n || 10, from, to, filters });
  }

  /**
   * The comparison of a top-N or funnel chart (the API compares time series only): the same
   * query again over the previous period (the answer's own window moved back by its length)
   * or with the segment's filters; a top-N compares the categories it shows, exactly.
   */
  async fetchCompared(answer) {
    const cmp = this.compare;
    if (!cmp || (this.kind !== "top" && this.kind !== "funnel")) return null;
    const meta = answer.meta || {};
    const { start, end } = this.range;
    const from = meta.time_from ?? start;
    const to = meta.time_to ?? end;
    const filters = [...this.dash.state.filters];
    let range = [String(from), String(to)];
    if (cmp === "previous_period") range = [String(from - (to - from)), String(from)];
    else filters.push(...cmp.b);
    if (this.kind === "funnel") return { label: this.compareLabel, ...(await this.fetchOther(range[0], range[1], { filters })) };
    const idx = answer.columns.indexOf("is_other");
    const cats = answer.rows.filter((r) => !r[idx]).map((r) => r[0]);
    const values = new Map();
    if (cats.length) {
      filters.push({ dimension: this.dimension, op: "in", value: cats });
      const other = await this.fetchOther(range[0], range[1], { filters, n: cats.length });
      const vi = other.columns.findIndex((c) => c !== other.columns[0] && c !== "is_other");
      for (const r of other.rows) if (!r[other.columns.indexOf("is_other")]) values.set(r[0], Number(r[vi]));
    }
    return { label: this.compareLabel, values };
  }

  /** History (or the chart's whole answer) over REST; draws from scratch. */
  async load() {
    const gen = ++this.generation;
    this.unsubscribe();
    this.setError(null);
    this.setStatus("loading…");
    this.titleNode.textContent = this.displayTitle;
    this.noteNode.textContent = this.kind === "heatmap" && this.compare ? `Heatmaps are not compared: switch Compare off or look at the line charts for the ${this.compareLabel}.` : "";
    this.noteNode.hidden = !this.noteNode.textContent;
    const { from, to, start, end } = this.range;
    let answer;
    let compared = null;
    try {
      answer = await this.fetchData(from, to);
      compared = await this.fetchCompared(answer);
    } catch (err) {
      if (gen !== this.generation) return;
      this.setStatus("");
      this.setError(err);
      clearChart(this.ec);
      this.box.setAttribute("aria-label", `${this.displayTitle}: not available (${err.message || err}).`);
      return;
    }
    if (gen !== this.generation) return;
    this.meta = answer.meta || {};
    this.dash.freshness.setCached(this.key, !!this.meta.stale, this.meta.age_s);
    this.compared = compared;
    if (!this.meta.stale) this.dash.freshness.touch();
    this.draw(answer, start, end);
    if (!this.tableNode.hidden) this.renderTable(answer);
    this.titleNode.textContent = this.displayTitle;
    this.setStatus(this.describe());
    this.status.title = this.plan();
    this.subscribe();
  }

  /** The header: range and granularity in words ("last hour · per minute · by country"). */
  describe() {
    const m = this.meta || {};
    const s = this.dash.state;
    const parts = [];
    if (s.range === "custom") parts.push(`${dateTime(s.from * 1000).slice(0, 16)} – ${dateTime(s.to * 1000).slice(0, 16)} ${zoneLabel()}`);
    else parts.push(spanWords(this.spanS));
    if (this.kind === "series" || (this.kind === "heatmap" && this.dimension)) {
      const step = m.granularity_s || this.stepS;
      parts.push(this.isRate ? rateBasis(step) : `each ${GRAN_WORDS[step] || `${step} s`}`);
    }
    if (this.kind === "heatmap" && !this.dimension) parts.push(`by weekday and hour, ${zoneLabel()}`);
    if (this.dimension && this.kind !== "funnel") parts.push(`by ${this.dimension}`);
    if (m.stale) parts.push(`cached, ${Math.round(m.age_s || 0)} s old`);
    const text = parts.join(" · ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  /** The query plan for the curious (the header's tooltip): table and bucket size. */
  plan() {
    const m = this.meta || {};
    return [m.table && `from ${m.table}`, m.granularity_s && `${m.granularity_s} s buckets`, m.reason].filter(Boolean).join(", ");
  }

  /** Counts and sums per bucket are rates ("per minute"); averages, quantiles and ratios
   *  (the API's `gap_outputs`) and percentages or durations are not. */
  get isRate() {
    const gaps = (this.meta || {}).gap_outputs || [];
    const outputs = this.store?.outputs || [];
    return isRate(this.unit) && !outputs.some((o) => gaps.includes(o));
  }

  /** The y axis' name: the unit and, for counts and sums, the rate basis ("EUR per hour"). */
  axisName(stepS) {
    const unit = unitName(this.unit);
    const basis = this.isRate ? rateBasis(stepS) : "";
    return [unit, basis].filter(Boolean).join(" ");
  }

  seriesOption(start, end) {
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const stepS = this.stepS;
    return timeSeriesOption(this.store, { type, title: this.chart.title, from: start, to: end, stepS, unit: this.unit, axisName: this.axisName(stepS), openFrom: this.openFrom(), width: this.box.clientWidth });
  }

  draw(answer, start, end) {
    const title = this.chart.title;
    const unit = this.unit;
    if (this.kind === "series") {
      const labels = {};
      const cmp = this.compare;
      if (cmp && typeof cmp === "object") {
        labels.a = "all";
        labels.b = this.compareLabel;
      }
      this.store = new SeriesStore({ dims: this.dimension ? [this.dimension] : [], stepS: this.stepS, labels });
      this.store.upsert(withMissingSeries(rowObjects(answer.columns, answer.rows), cmp));
      // 1 s: the seconds up to now at once (the answer may be a second or two old), so the
      // open ones are drawn open from the first frame, as every redraw does.
      if (this.liveExact && this.store.lastT() !== null) this.store.fill(start, nowS() + 1);
      const m = answer.meta || {};
      // The previous period is the answer's window moved back by its length (whole buckets).
      this.shiftS = m.time_from != null && m.time_to != null ? m.time_to - m.time_from : this.spanS;
      this.window = { start, end };
      const option = this.seriesOption(start, end);
      if (this.liveExact) option.animation = false; // a point a second: gliding costs frames
      replaceOption(this.ec, { ...option, series: [...option.series, ...this.markerSeries()] });
      armZoom(this.ec, (from, to) => this.dash.timeNav.zoomTo(from, to));
      this.label(option);
      this.renderValues([...new Set([...this.store.series.values()].map((s) => s.dims[this.dimension]))]);
    } else if (this.kind === "stat") {
      this.drawStat(answer, start, end);
      this.renderValues([]);
    } else if (this.kind === "funnel") {
      const opt = funnelOption(answer.columns, answer.rows, { title, compared: this.compared, mainLabel: this.compared && this.compare === "previous_period" ? "this period" : "all" });
      replaceOption(this.ec, opt);
      this.label(opt);
      this.renderValues([]);
    } else if (this.kind === "heatmap") {
      const opt = this.heatOption(answer);
      replaceOption(this.ec, opt);
      this.label(opt);
      this.renderValues([]);
    } else {
      const opt = topOption(answer.columns, answer.rows, { title, dimension: this.dimension, unit, compared: this.compared, mainLabel: this.compared ? (this.compare === "previous_period" ? "this period" : "all") : "" });
      replaceOption(this.ec, opt);
      this.label(opt);
      this.renderValues(opt.series[0].data.filter((d) => !d.isOther).map((d) => d.dimValue));
    }
  }

  /** The chart's answer as the API gives it (what the table and the CSV show). */
  fetchData(from, to) {
    if (this.kind === "series") return this.fetchSeries(from, to);
    if (this.kind === "stat") return this.fetchSeries(from, to, { compare: "previous_period" });
    return this.fetchOther(from, to);
  }

  /** A stat panel: the number in the metric's unit, its change against the previous period
   *  and the current period's sparkline (panels.js says which number). */
  drawStat(answer, start, end) {
    const stat = statOf(answer);
    const text = statText(stat, this.unit);
    const what = stat.additive ? `total, ${spanWords(this.spanS)}` : `latest ${GRAN_WORDS[this.stepS] || "bucket"}`;
    const dir = !stat.change ? "flat" : stat.change > 0 ? "up" : "down";
    const parts = [
      el("span", { class: "stat-value", text: text.number }),
      text.unit && el("span", { class: "stat-unit", text: text.unit }),
      el("span", { class: `stat-change stat-${dir}`, text: text.change }),
      el("span", { class: "stat-caption muted", text: `${what} · previous period ${text.previous}` }),
    ];
    this.statNode.replaceChildren(...parts.filter(Boolean));
    replaceOption(this.ec, sparklineOption(stat, { from: start, to: end, stepS: this.stepS, unit: this.unit }));
    this.box.setAttribute("aria-label", `${this.displayTitle}: ${text.number}${text.unit ? ` ${text.unit}` : ""} (${what}), ${text.change} against the previous period (${text.previous}).`);
  }

  /** The org's annotations in this chart's window, as an extra series (none: no series). */
  markerSeries() {
    if (this.kind !== "series" || !this.window) return [];
    const marks = annotationSeries(this.dash.annotations, this.window.start, this.window.end);
    const firings = firingSeries(this.dash.firings.get(this.chart.metric_id), this.window.start, this.window.end);
    return [marks, firings].filter(Boolean);
  }

  /** Redraw the markers alone (the annotations changed; the data did not). */
  drawAnnotations() {
    if (this.kind !== "series" || !this.store || !this.window) return;
    const drawn = this.ec.getOption(); // none while the chart shows an error (cleared)
    if (!drawn) return;
    // (a series removed by an earlier replaceMerge is a null hole in getOption's array)
    const series = (drawn.series || []).filter((x) => x && x.id !== "annotations" && x.id !== "alert-firings");
    this.ec.setOption({ series: [...series, ...this.markerSeries()] }, { replaceMerge: ["series"] });
  }

  async toggleTable() {
    const show = this.tableNode.hidden;
    this.tableToggle.setAttribute("aria-pressed", String(show));
    this.tableNode.hidden = !show;
    this.box.hidden = show;
    if (!show) return;
    this.tableNode.replaceChildren(el("p", { class: "muted", text: "loading…" }));
    try {
      const { from, to } = this.range;
      this.renderTable(await this.fetchData(from, to));
    } catch (err) {
      this.tableNode.replaceChildren(el("p", { class: "error", role: "alert", text: err.message || String(err) }));
    }
  }

  renderTable(answer) {
    this.tableNode.replaceChildren(dataTable(el, answer, `${this.displayTitle}: ${answer.rows.length} rows, times in UTC`));
  }

  /** The chart's data, read again from the API, as a CSV download. */
  async exportCsv() {
    try {
      const { from, to } = this.range;
      download(toCsv(await this.fetchData(from, to)), fileName(this.displayTitle));
    } catch (err) {
      this.setError(err);
    }
  }

  heatOption(answer) {
    const dimension = this.chart.options?.axes || this.dimension;
    const byTime = dimension && dimension !== "weekday_hour";
    const stepS = (answer.meta || {}).granularity_s || this.stepS;
    return heatmapOption(answer.columns, answer.rows, { title: this.chart.title, dimension, unit: this.unit, stepS, openFrom: byTime ? this.openFrom(stepS) : null });
  }

  /** Keyboard path to drilldown: one button per dimension value shown, in the bars' order. */
  renderValues(values) {
    const dim = this.dimension;
    const shown = !dim || this.kind === "funnel" ? [] : values.filter((x) => x !== undefined).slice(0, 20);
    const current = [...this.values.querySelectorAll("button")].map((b) => b.dataset.drill);
    if (current.length === shown.length && current.every((v, i) => v === String(shown[i])) && this.values.dataset.dim === dim) return; // unchanged: keep focus
    this.values.replaceChildren();
    this.values.removeAttribute("role");
    this.values.removeAttribute("aria-label");
    this.values.dataset.dim = dim || "";
    if (!shown.length) return;
    this.values.setAttribute("role", "group");
    this.values.setAttribute("aria-label", `Drill into ${dim}`);
    this.values.append(el("span", { class: "muted", "aria-hidden": "true", text: `Drill into ${dim}: ` }));
    for (const v of shown) {
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
      const s = this.store?.series.get(String(params.seriesId).replace(/#open$/, ""));
      if (s && s.dims[dim] !== undefined) this.dash.drill(dim, s.dims[dim]);
    } else if (this.kind === "heatmap" && this.chart.options?.axes !== "weekday_hour") {
      const values = this.ec.getOption().yAxis[0].data;
      const cell = params.data.value || params.data;
      const v = values[cell[1]];
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
    // Seconds without events are 0 up to now: the newest two are drawn open (dashed), so a
    // quiet or late second never reads as a drop.
    if (this.store.lastT() !== null) this.store.fill(Math.max(start, this.window.start), end);
    this.store.trim(start);
    this.window = { start, end };
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const series = this.store.seriesOptions(type, { openFrom: this.openFrom() });
    this.ec.setOption({ xAxis: { min: start * 1000, max: end * 1000 }, series: [...series, ...this.markerSeries()] }, { replaceMerge: ["series"] });
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

  /**
   * The newest bucket(s) again. Previous-period comparison: the tail's own "previous period"
   * would be the minutes just before it (current values), so the current series is re-read
   * without comparison and the previous one over the same buckets moved back by the answer's
   * window length, then moved forward onto them.
   */
  async fetchTailRows(from) {
    const cmp = this.compare;
    if (cmp !== "previous_period") {
      const answer = await this.fetchSeries(String(from), undefined);
      return [answer, withMissingSeries(rowObjects(answer.columns, answer.rows), cmp)];
    }
    const shift = this.shiftS || this.spanS;
    const to = Math.floor(nowS() / this.stepS) * this.stepS + this.stepS;
    const [cur, prev] = await Promise.all([
      this.fetchSeries(String(from), String(to), { compare: null }),
      this.fetchSeries(String(from - shift), String(to - shift), { compare: null }),
    ]);
    const rows = [
      ...rowObjects(cur.columns, cur.rows).map((r) => ({ series: "current", ...r })),
      ...rowObjects(prev.columns, prev.rows).map((r) => ({ series: "previous", ...r, t: r.t + shift })),
    ];
    return [cur.meta?.stale ? cur : prev, rows];
  }

  async refreshTail() {
    this.lastTail = Date.now();
    const gen = this.generation;
    if (this.kind === "stat") {
      const { from, to, start, end } = this.range;
      const answer = await this.fetchData(from, to);
      if (gen !== this.generation) return;
      this.dash.freshness.setCached(this.key, !!answer.meta?.stale, answer.meta?.age_s);
      this.drawStat(answer, start, end);
      return;
    }
    if (this.kind !== "series" || !this.store) {
      const { from, to } = this.range;
      const answer = await this.fetchOther(from, to);
      const compared = await this.fetchCompared(answer);
      if (gen !== this.generation) return;
      this.meta = answer.meta || {};
      this.compared = compared;
      this.dash.freshness.setCached(this.key, !!this.meta.stale, this.meta.age_s);
      const mainLabel = compared ? (this.compare === "previous_period" ? "this period" : "all") : "";
      const opt =
        this.kind === "funnel"
          ? funnelOption(answer.columns, answer.rows, { title: this.chart.title, compared, mainLabel: mainLabel || "all" })
          : this.kind === "heatmap"
            ? this.heatOption(answer)
            : topOption(answer.columns, answer.rows, { title: this.chart.title, dimension: this.dimension, unit: this.unit, compared, mainLabel });
      this.ec.setOption({ series: opt.series, xAxis: opt.xAxis, yAxis: opt.yAxis, visualMap: opt.visualMap }, { replaceMerge: ["series"] });
      this.label(opt, { throttle: true });
      // The drill buttons follow the bars they stand for.
      if (this.kind === "top") this.renderValues(opt.series[0].data.filter((d) => !d.isOther).map((d) => d.dimValue));
      return;
    }
    const last = this.store.lastT() ?? nowS() - this.spanS;
    const from = Math.floor(last / this.stepS) * this.stepS;
    const [answer, rows] = await this.fetchTailRows(from);
    if (gen !== this.generation) return;
    this.dash.freshness.setCached(this.key, !!answer.meta?.stale, answer.meta?.age_s);
    if (!answer.meta?.stale) this.dash.freshness.touch();
    this.store.upsert(rows);
    const end = nowS();
    this.store.trim(end - this.spanS);
    this.window = { start: end - this.spanS, end };
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const series = this.store.seriesOptions(type, { openFrom: this.openFrom() });
    this.ec.setOption({ xAxis: { min: this.window.start * 1000, max: end * 1000 }, series: [...series, ...this.markerSeries()] }, { replaceMerge: ["series"] });
    this.label({ series }, { throttle: true });
    if (this.dimension) this.renderValues([...new Set([...this.store.series.values()].map((s) => s.dims[this.dimension]))]);
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
    this.mounted = false; // the grid is placed and the charts have started loading
    this.metricUnits = new Map(); // saved metric id → its unit
    this.annotations = [];
    this.firings = new Map(); // saved metric id → its alerts' firing intervals (alertmarks.js)
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
    if (dashboard.charts.some((c) => c.metric_id)) {
      try {
        for (const m of await get("/metrics")) this.metricUnits.set(m.id, m.unit);
      } catch {
        // units are presentation: the charts still draw (as counts) without them
      }
    }
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
    this.timeNav = new TimeNav(this);
    this.timeNav.mount({ refreshBefore: document.getElementById("live-toggle"), barAfter: document.getElementById("controls") });
    // The panels' places on the grid and, for editors, the editor (grid.js); without it
    // (gridstack not installed) the charts still draw, flowing in a plain CSS grid.
    // Controls work from the first frame: a range or comparison chosen while the grid mounts
    // is kept in the state (and the URL), and the charts load with it once the grid is placed.
    this.bindControls();
    this.renderControls();
    this.grid = await mountGrid(this).catch((err) => (document.getElementById("dash-error").textContent = `Layout: ${err.message}`));
    this.mounted = true;
    this.reloadAll();
    currentUser()
      .then((me) => me.role === "admin" && mountSharePanel(document.querySelector(".dash-head"), this.id))
      .catch(() => {}); // sharing is an admin's extra: the dashboard works without it
    window.addEventListener("popstate", () => this.restore());
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
    // The 1 s window keeps sliding between deltas (not while stalled: the charts stay at the
    // last update, as the badge and the stamp say); a coarser chart re-reads its tail when a
    // bucket closes, so the one drawn open is drawn complete and the next one open.
    setInterval(() => {
      if (!this.state.live || !this.isRelative || this.freshness.stalled) return;
      for (const v of this.views) {
        if (v.liveExact && v.store && v.window) v.advanceWindow();
        else if (v.kind === "series" && v.store) {
          const open = v.openFrom();
          if (v.drawnOpen !== undefined && open !== v.drawnOpen) v.scheduleTail();
          v.drawnOpen = open;
        }
      }
    }, 1000);
    setInterval(() => {
      if (this.state.live && this.isRelative) this.loadAnnotations();
    }, 30_000);
    this.push?.on("alert", () => this.loadFirings()); // a firing or resolving shows at once
    onTimeZoneChange(() => {
      this.renderControls();
      this.reloadAll();
    });
    // A theme change (theme.js' `theme` event, bubbling from <html>: the toggle or the
    // system's colour scheme) redraws the charts with the new CSS custom properties.
    document.addEventListener("theme", () => this.reloadAll());
  }

  /** Charts update themselves (pushed deltas, tails): a refresh period has nothing to do. */
  get isLive() {
    return this.state.live && this.isRelative;
  }

  /** The URL changed under the page (Back, "Reset zoom"): show what it says now. */
  restore() {
    this.state = readState();
    this.renderControls();
    this.reloadAll();
  }

  reloadAll() {
    this.renderBreadcrumbs();
    this.loadAnnotations();
    this.loadFirings();
    return Promise.all(this.views.map((v) => v.load()));
  }

  /** The firings of the alerts on this dashboard's saved metrics, drawn as markers. */
  async loadFirings() {
    try {
      this.firings = await loadFirings(this.views.map((v) => v.chart.metric_id));
    } catch (err) {
      console.warn("alert firings:", err); // the charts draw without them
    }
    for (const v of this.views) v.drawAnnotations();
  }

  /** The org's annotations over the widest range a chart shows: markers and the panel. */
  async loadAnnotations() {
    const s = this.state;
    const to = s.range === "custom" ? s.to : nowS() + 60;
    const from = s.range === "custom" ? s.from : nowS() - Math.max(3600, ...this.views.map((v) => v.spanS));
    try {
      this.annotations = await get(`/annotations${qs({ from: String(from), to: String(to) })}`);
      this.annotationError = "";
    } catch (err) {
      this.annotationError = `Annotations: ${err.message}`; // the charts draw without them
    }
    for (const v of this.views) v.drawAnnotations();
    this.renderAnnotations();
  }

  renderAnnotations() {
    if (!this.annotationPanel) {
      this.annotationList = el("ul", { class: "annotation-list" });
      this.annotationStatus = el("p", { class: "error", role: "alert" });
      this.annotationHead = el("h2", { id: "annotations-title" });
      this.annotationPanel = el("section", { id: "annotations", class: "card annotations", "aria-labelledby": "annotations-title" }, this.annotationHead, this.annotationStatus, this.annotationList);
      document.getElementById("grid").after(this.annotationPanel);
    }
    this.annotationHead.textContent = `Annotations (${zoneLabel()})`;
    this.annotationStatus.textContent = this.annotationError || "";
    const when = (a) => `${dateTime(parseInstant(a.time))}${a.end ? ` – ${dateTime(parseInstant(a.end))}` : ""}`;
    const items = this.annotations.map((a) =>
      el(
        "li",
        { "data-annotation-id": a.id },
        el("time", { datetime: a.time, text: when(a) }),
        el("span", { class: "annotation-title", text: a.title }),
        a.tags.length ? el("span", { class: "muted", text: a.tags.join(", ") }) : null,
        el("button", { type: "button", class: "link", text: "Delete", "aria-label": `Delete annotation ${a.title}`, onclick: () => this.deleteAnnotation(a) }),
      ),
    );
    if (!items.length) items.push(el("li", { class: "muted", text: "None in this range: POST /annotations marks deploys and incidents (see the API docs)." }));
    this.annotationList.replaceChildren(...items);
  }

  async deleteAnnotation(a) {
    try {
      await api("DELETE", `/annotations/${a.id}`);
    } catch (err) {
      this.annotationError = `Annotations: ${err.message}`;
      this.renderAnnotations();
      return;
    }
    await this.loadAnnotations();
  }

  setState(change, pushHistory = false, historyState = null) {
    Object.assign(this.state, change);
    writeState(this.state, pushHistory, historyState);
    this.renderControls();
    if (this.mounted) this.reloadAll(); // (before: the load after the grid's mount reads it)
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
    if (s.range === "custom") {
      // The fields say which range shows (from the URL or a zoom), ready to be edited.
      document.getElementById("custom-from").value = toInput(s.from);
      document.getElementById("custom-to").value = toInput(s.to);
    }
    document.getElementById("compare").value = s.compare;
    document.getElementById("segment-box").hidden = s.compare !== "segment";
    document.getElementById("segment").value = s.segment;
    const live = document.getElementById("live-toggle");
    live.setAttribute("aria-pressed", String(s.live));
    live.textContent = s.live ? "Live" : "Paused";
    live.disabled = !this.isRelative;
    document.getElementById("tz").value = timeZone();
    document.getElementById("tz-local").textContent = `Browser (${Intl.DateTimeFormat().resolvedOptions().timeZone || "local"})`;
    this.freshness.setSocket(!s.live ? "paused" : this.push?.isOpen ? "live" : "connecting");
    this.timeNav.sync();
  }

  bindControls() {
    document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
    document.getElementById("range").addEventListener("change", (e) => {
      const value = e.target.value;
      if (value === "custom") {
        document.getElementById("custom-range").hidden = false;
        const end = nowS();
        document.getElementById("custom-from").value = toInput(end - 86400);
        document.getElementById("custom-to").value = toInput(end);
        return;
      }
      this.setState({ range: value, from: null, to: null });
    });
    document.getElementById("custom-apply").addEventListener("click", () => {
      const from = fromInput(document.getElementById("custom-from").value);
      const to = fromInput(document.getElementById("custom-to").value);
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
    document.getElementById("tz").addEventListener("change", (e) => setTimeZone(e.target.value));
  }
}

const page = await startPage();
const id = Number(document.body.dataset.dashboardId);
const dash = new Dashboard(id, page);
window.clickpulse = Object.assign(window.clickpulse || {}, { dashboard: dash });
await dash.open();
document.body.dataset.ready = "1";
