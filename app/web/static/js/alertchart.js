// The alert editor's chart: the values the alert judges over the backtest's range (its
// `series`, or for an anomaly alert its `band`), the firing threshold and the recovery
// threshold as horizontal lines, the anomaly band as a shaded band, and the intervals the
// backtest says it would have fired in as shaded areas (POST /alerts/backtest, docs/alerts.md).
import { rowObjects, SeriesStore, summarize, theme, timeSeriesOption } from "./charts.js";
import { FIRING_COLOR } from "./alertmarks.js";
import { dateTime } from "./time.js";

const THRESHOLD_COLOR = "#CC79A7"; // Okabe–Ito reddish purple: apart from the series' blue
const BAND_COLOR = "#009E73"; // Okabe–Ito bluish green

/** The intervals a backtest would have fired in: [{from, to}] (epoch s; `to` its end when it
 *  still fires at the end of the range), from its transitions into and out of `firing`. */
export function backtestFirings(answer) {
  const out = [];
  const open = new Map(); // a grouped alert's group (or "") → its open interval
  for (const ev of answer.events || []) {
    const key = ev.group ? JSON.stringify(ev.group) : "";
    if (ev.kind === "firing" && !open.has(key)) {
      const interval = { from: ev.t, to: null, group: ev.group || null };
      open.set(key, interval);
      out.push(interval);
    } else if (ev.kind === "resolved" && open.has(key)) {
      open.get(key).to = ev.t;
      open.delete(key);
    }
  }
  for (const interval of out) if (interval.to === null) interval.to = answer.to;
  return out;
}

/** The next "round" number at or above `x` (1, 2, 2.5, 5 × a power of ten); 0 for x ≤ 0. */
export function niceUp(x) {
  if (!(x > 0)) return 0;
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((n) => n >= x * (1 - 1e-12));
}

/** How many times it would have fired (`firing` events, every group's). */
export const firingCount = (answer) => (answer.events || []).filter((e) => e.kind === "firing").length;

/** The series the chart draws: [{t, value}] from `series` (threshold) or `band` (anomaly). */
function points(answer) {
  const s = answer.series || answer.band;
  if (!s) return [];
  return s.t.map((t, i) => ({ t, value: s.value[i] }));
}

/**
 * The chart's option. `alert` is the body the backtest was asked with (its threshold,
 * recovery threshold, kind); `unit` the metric's unit (or undefined).
 */
export function editorOption(answer, alert, { unit, width } = {}) {
  const th = theme();
  const step = answer.resolution_s;
  const rows = points(answer);
  const store = new SeriesStore({ stepS: step });
  store.upsert(rowObjects(["t", "value"], rows.map((p) => [p.t, p.value])));
  const perSecond = step > 1 && answer.series && (answer.approximation || "").includes("count/60");
  const option = timeSeriesOption(store, { type: "line", from: answer.from, to: answer.to, stepS: step, unit, axisName: perSecond ? "per second (minute mean)" : "", width });
  for (const s of option.series) s.id = String(s.id).endsWith("#open") ? "values#open" : "values";
  const lines = [];
  if (alert.kind !== "anomaly" && alert.threshold !== undefined && alert.threshold !== null) {
    lines.push({ name: "threshold", yAxis: alert.threshold, lineStyle: { color: THRESHOLD_COLOR, type: "solid", width: 2 }, label: { formatter: `threshold ${alert.comparator} ${alert.threshold}`, color: th.fg, backgroundColor: th.bg, padding: [1, 4], position: "insideEndTop" } });
    if (alert.recovery_threshold !== undefined && alert.recovery_threshold !== null) {
      lines.push({ name: "recovery", yAxis: alert.recovery_threshold, lineStyle: { color: THRESHOLD_COLOR, type: "dashed", width: 1.5 }, label: { formatter: `recovers past ${alert.recovery_threshold}`, color: th.fg, backgroundColor: th.bg, padding: [1, 4], position: "insideEndBottom" } });
    }
  }
  const extra = [];
  if (lines.length) {
    extra.push({ id: "thresholds", name: "thresholds", type: "line", data: [], markLine: { symbol: ["none", "none"], animation: false, silent: true, data: lines } });
  }
  const band = answer.band;
  if (band) {
    const ms = band.t.map((t) => t * 1000);
    const lower = ms.map((t, i) => [t, band.lower[i]]);
    const width = ms.map((t, i) => [t, band.lower[i] === null || band.upper[i] === null ? null : band.upper[i] - band.lower[i]]);
    // The band is drawn as its lower edge (invisible) with its width stacked on top, shaded.
    extra.push({ id: "band-lower", name: "band", type: "line", stack: "band", data: lower, symbol: "none", lineStyle: { opacity: 0 }, tooltip: { show: false }, silent: true, z: 1 });
    extra.push({ id: "band", name: "expected band", type: "line", stack: "band", data: width, symbol: "none", lineStyle: { opacity: 0 }, areaStyle: { color: BAND_COLOR, opacity: 0.2 }, tooltip: { show: false }, silent: true, z: 1 });
  }
  const firings = backtestFirings(answer);
  if (firings.length) {
    extra.push({
      id: "would-fire",
      name: "would have fired",
      type: "line",
      data: [],
      markArea: {
        animation: false,
        itemStyle: { color: FIRING_COLOR, opacity: 0.3 },
        label: { show: false },
        tooltip: { trigger: "item", formatter: (p) => `would have fired: ${p.data?.when || ""}` },
        data: firings.map((f) => [{ xAxis: f.from * 1000, when: `${dateTime(f.from * 1000)} – ${dateTime(f.to * 1000)}` }, { xAxis: Math.max(f.to, f.from + step) * 1000 }]),
      },
      // A firing of a few minutes is a sliver on a day's chart: its start is marked as well.
      markLine: {
        symbol: ["none", "triangle"],
        symbolSize: 7,
        animation: false,
        silent: true,
        lineStyle: { color: FIRING_COLOR, type: "solid", width: 1.5 },
        label: { show: false },
        data: firings.map((f) => ({ xAxis: f.from * 1000 })),
      },
    });
  }
  option.series = [...option.series, ...extra];
  // The axis reaches the lines and the band even where the data stays far from them.
  const marks = [...lines.map((l) => l.yAxis), ...(band ? band.upper.concat(band.lower) : [])].filter((v) => typeof v === "number");
  if (marks.length) {
    const top = Math.max(...marks);
    const bottom = Math.min(...marks);
    const axis = Array.isArray(option.yAxis) ? option.yAxis[0] : option.yAxis;
    axis.max = (v) => niceUp(Math.max(v.max, top) * 1.05);
    axis.min = (v) => Math.min(0, -niceUp(-Math.min(v.min, bottom) * 1.05));
  }
  option.legend = { ...option.legend, show: false };
  option.grid = { ...option.grid, bottom: 8 };
  return option;
}

/** The chart's text alternative: the series summary and what the backtest says. */
export function editorSummary(option, text) {
  // The judged values only: the lines and areas are in `text` (and their names would make the
  // chart a second element labelled "threshold" for assistive technology and tests alike).
  const values = { ...option, series: option.series.filter((s) => String(s.id).startsWith("values")) };
  return summarize(values, { title: "Backtest chart", note: text });
}
