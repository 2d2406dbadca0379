// ECharts options for the four chart types, and the series store that merges history and
// live points in place (the chart is created once; updates are setOption with new data).
// Long because every chart type's option and its text alternative belong together.
//
// What a chart must not say falsely (docs/ui.md, "Reading a chart"): the bucket that is still
// filling is drawn open (dashed, hollow end point; a faded bar), empty buckets of
// non-additive outputs are gaps, times are in the zone of time.js and labelled, numbers are in
// the metric's unit (format.js).

import { formatValue, normalizeUnit } from "./format.js";
import { OTHER, PALETTE, SEQUENTIAL } from "./palette.js";
import { axisLabel, bucketLabel, isUTC, shiftWeekHour, WEEKDAYS, zoneLabel } from "./time.js";

export { OTHER, PALETTE, SEQUENTIAL };
const OVERLAY = new Set(["previous", "b"]);
const SERIES_LABEL = { current: "", previous: "previous period", a: "A", b: "B" };
export const OPEN_SUFFIX = "#open"; // id suffix of the dashed segment that ends at the open bucket

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const num = (v) => (isNumber(v) ? v : typeof v === "string" && v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v);

/**
 * Draw `option` in place of everything `ec` showed (setOption with notMerge).
 *
 * A full replace disposes the chart's tooltip view; if the pointer is over the chart, the
 * previous render left ECharts a timer that re-shows the tooltip from that view and throws
 * ("Cannot set properties of null") once it is gone. Hiding the tooltip first clears the
 * position the timer reads, so it does nothing. Every full redraw goes through here.
 */
export function replaceOption(ec, option) {
  ec.dispatchAction({ type: "hideTip" });
  ec.setOption(option, { notMerge: true });
}

/** Blank the chart (an error is shown instead), for the same reason as replaceOption. */
export function clearChart(ec) {
  ec.dispatchAction({ type: "hideTip" });
  ec.clear();
}

/** Chart colours from the page's CSS custom properties, so a theme switch reaches the charts. */
export function theme() {
  const cs = typeof document !== "undefined" ? getComputedStyle(document.documentElement) : null;
  const v = (name, fallback) => (cs && cs.getPropertyValue(name).trim()) || fallback;
  return {
    fg: v("--fg", "#1b1f24"),
    muted: v("--muted", "#57606a"),
    grid: v("--grid", "#e4e7eb"),
    bg: v("--card-bg", "#ffffff"),
    accent: v("--accent", "#0072B2"),
  };
}

/** Time series keyed by (series, dims…, output) → Map(t → value); merges rows in place. */
export class SeriesStore {
  constructor({ dims = [], stepS = 1, labels = {} } = {}) {
    this.dims = dims;
    this.stepS = stepS;
    this.labels = labels; // compare series label overrides: {a: "all", b: "country=FR"}
    this.series = new Map(); // key → {key, name, overlay, dims, output, points: Map}
    this.outputs = null;
    this.gapOutputs = new Set(); // outputs whose empty buckets are gaps (the API sent null)
  }

  clear() {
    this.series.clear();
  }

  outputsOf(row) {
    if (this.outputs) return this.outputs;
    const skip = new Set(["t", "series", ...this.dims]);
    this.outputs = Object.keys(row).filter((k) => !skip.has(k));
    return this.outputs;
  }

  /** rows: objects {t, [series], dims…, outputs…}. Returns the number of points written. */
  upsert(rows) {
    let written = 0;
    for (const row of rows) {
      const outputs = this.outputsOf(row).filter((o) => row[o] === null || isNumber(num(row[o])));
      const bucket = Math.floor(row.t / this.stepS) * this.stepS;
      for (const output of outputs) {
        const dimValues = this.dims.map((d) => row[d]);
        const key = JSON.stringify([row.series ?? "", ...dimValues, output]);
        let s = this.series.get(key);
        if (!s) {
          const seriesName = row.series ? this.labels[row.series] ?? SERIES_LABEL[row.series] ?? row.series : "";
          const parts = [seriesName, ...dimValues.map((v) => (v === "" ? "(none)" : v))];
          if (this.outputsOf(row).length > 1 || parts.every((p) => p === "")) parts.push(output);
          s = {
            key,
            name: parts.filter((p) => p !== "").join(" · "),
            overlay: OVERLAY.has(row.series),
            dims: Object.fromEntries(this.dims.map((d, i) => [d, dimValues[i]])),
            output,
            points: new Map(),
          };
          this.series.set(key, s);
        }
        if (row[output] === null) this.gapOutputs.add(output);
        s.points.set(bucket, row[output] === null ? null : num(row[output]));
        written += 1;
      }
    }
    return written;
  }

  /** Fill missing buckets between `from` and `to` as the API's WITH FILL does: 0 for counts,
   *  a gap (null) for outputs that have no value without events (p95, averages, ratios). */
  fill(from, to) {
    for (const s of this.series.values()) {
      if (s.overlay) continue;
      const empty = this.gapOutputs.has(s.output) ? null : 0;
      for (let t = Math.ceil(from / this.stepS) * this.stepS; t < to; t += this.stepS) {
        if (!s.points.has(t)) s.points.set(t, empty);
      }
    }
  }

  trim(from) {
    for (const s of this.series.values()) for (const t of s.points.keys()) if (t < from) s.points.delete(t);
  }

  lastT() {
    let last = null;
    for (const s of this.series.values()) for (const t of s.points.keys()) if (last === null || t > last) last = t;
    return last;
  }

  /**
   * ECharts series. `openFrom` (epoch s): buckets starting at or after it are still filling —
   * a line stops at the last complete bucket and a dashed segment (same name and colour, id
   * `<key>#open`) leads to the open point; an open bar is faded. Overlays (previous period)
   * are complete and drawn whole.
   */
  seriesOptions(type, { openFrom = null } = {}) {
    const out = [];
    [...this.series.values()].forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      const points = [...s.points.entries()].sort((a, b) => a[0] - b[0]).map(([t, v]) => [t * 1000, v]);
      const openAt = openFrom === null || s.overlay ? points.length : points.findIndex((p) => p[0] >= openFrom * 1000);
      const split = openAt < 0 ? points.length : openAt;
      const common = { name: s.name, type, color, emphasis: { focus: "series" } };
      if (type === "bar") {
        out.push({
          ...common,
          id: s.key,
          itemStyle: s.overlay ? { opacity: 0.55, borderType: "dashed", borderColor: color, borderWidth: 1 } : undefined,
          data: points.map((p, j) => (j >= split ? { value: p, open: true, itemStyle: { opacity: 0.35, borderType: "dashed", borderColor: color, borderWidth: 1 } } : p)),
        });
        return;
      }
      const line = { showSymbol: false, symbolSize: 4, connectNulls: false };
      out.push({
        ...common,
        ...line,
        id: s.key,
        lineStyle: s.overlay ? { type: "dashed", width: 1.5 } : { width: 2 },
        itemStyle: s.overlay ? { opacity: 0.6 } : undefined,
        data: points.slice(0, split),
      });
      if (split < points.length) {
        const tail = points.slice(Math.max(0, split - 1));
        out.push({
          ...common,
          ...line,
          id: `${s.key}${OPEN_SUFFIX}`,
          showSymbol: true,
          lineStyle: { type: "dashed", width: 2, opacity: 0.7 },
          itemStyle: { opacity: 0.7 },
          data: tail.map((p, j) => (j === tail.length - 1 && p[0] >= openFrom * 1000 ? { value: p, open: true, symbol: "emptyCircle", symbolSize: 7 } : { value: p, symbol: "none" })),
        });
      }
    });
    return out;
  }
}

const AXIS_NAME_GAP = 6;

function base(title) {
  const th = theme();
  return {
    color: PALETTE,
    // The container's aria-label is ours (summarize(), kept current by the page); ECharts'
    // generated description would overwrite it on every render.
    aria: { enabled: false },
    useUTC: isUTC(),
    backgroundColor: "transparent",
    textStyle: { color: th.fg },
    animationDuration: 0, // no grow-in on load; updates (live merges) still glide
    animationDurationUpdate: 300,
    title: title ? { show: false, text: title } : undefined,
    tooltip: { trigger: "axis", confine: true },
    grid: { left: 8, right: 16, top: 26, bottom: 8, containLabel: true },
  };
}

function valueAxis(unit, name) {
  const th = theme();
  return {
    type: "value",
    scale: false,
    name,
    nameLocation: "end",
    nameGap: AXIS_NAME_GAP,
    // Left-aligned over the labels: never clipped by the card, however long.
    nameTextStyle: { align: "left", color: th.muted, padding: [0, 0, 0, -4] },
    axisLabel: { color: th.muted, formatter: (v) => formatValue(v, unit, { short: true }), hideOverlap: true },
    splitLine: { lineStyle: { color: th.grid } },
  };
}

/** Tick labels that suit the span: clock times within two days, dates beyond; never "3".
 *  About one label per 90 px of width, so they never crowd. */
function timeAxis(from, to, stepS, width = 420) {
  const th = theme();
  const span = to - from;
  const labelStep = span <= 600 ? 1 : span <= 2 * 86400 ? 60 : 86400;
  return {
    type: "time",
    min: from * 1000,
    max: to * 1000,
    minInterval: stepS * 1000,
    splitNumber: Math.max(2, Math.min(10, Math.floor(width / 90))),
    axisLabel: { color: th.muted, hideOverlap: true, formatter: (v) => axisLabel(v, labelStep) },
    axisLine: { lineStyle: { color: th.grid } },
    splitLine: { show: false },
  };
}

function timeTooltip(unit, stepS) {
  return {
    trigger: "axis",
    confine: true,
    formatter: (params) => {
      const list = [].concat(params);
      if (!list.length) return "";
      const t = list[0].value?.[0] ?? list[0].data?.value?.[0];
      const seen = new Set();
      const lines = [];
      let open = false;
      // An open segment's first point repeats its series' last complete one: shown once.
      for (const p of [...list].sort((a, b) => String(a.seriesId).endsWith(OPEN_SUFFIX) - String(b.seriesId).endsWith(OPEN_SUFFIX))) {
        if (seen.has(p.seriesName)) continue;
        seen.add(p.seriesName);
        const v = Array.isArray(p.value) ? p.value[1] : p.data?.value?.[1];
        if (p.data && p.data.open) open = true;
        lines.push(`${p.marker}${escapeHtml(p.seriesName || "value")}: <b>${escapeHtml(formatValue(v, unit))}</b>`);
      }
      const head = `${escapeHtml(bucketLabel(t, stepS))}${open ? " · <i>incomplete, still filling</i>" : ""}`;
      return [head, ...lines].join("<br>");
    },
  };
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

/**
 * A time series chart. `stepS` the bucket size, `unit` the metric's unit, `axisName` the
 * y axis' name (unit and rate basis), `openFrom` the start of the open bucket (null: none).
 */
export function timeSeriesOption(store, { type = "line", title, from, to, stepS = store.stepS, unit, axisName = "", openFrom = null, width }) {
  const th = theme();
  const multi = store.series.size > 1;
  return {
    ...base(title),
    tooltip: timeTooltip(unit, stepS),
    // right: half a "13:29:00" label, so a tick near the end is never cut at the edge
    grid: { left: 8, right: 28, top: 26, bottom: multi ? 30 : 8, containLabel: true },
    legend: { type: "scroll", bottom: 0, show: multi, textStyle: { color: th.fg }, pageTextStyle: { color: th.fg } },
    xAxis: timeAxis(from, to, stepS, width),
    yAxis: valueAxis(unit, axisName),
    series: store.seriesOptions(type, { openFrom }),
  };
}

/** The colour scale's top: the 95th percentile of the non-empty cells, so one hot cell does not
 *  turn every other cell into the bottom colour (cells above it show the top colour). */
export function heatScaleMax(values) {
  const nz = values.filter((v) => v > 0).sort((a, b) => a - b);
  if (!nz.length) return 1;
  const p95 = nz[Math.min(nz.length - 1, Math.floor(nz.length * 0.95))];
  return Math.max(1, p95);
}

/** Rows `weekday, hour, value…` (168 cells) or `t, dim, value…` → heatmap option. */
export function heatmapOption(columns, rows, { title, dimension, unit, stepS = 3600, openFrom = null }) {
  const th = theme();
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  let data;
  let xAxis;
  let yAxis;
  const weekdayHour = "weekday" in idx && "hour" in idx;
  const valueCol = columns.find((c) => !["weekday", "hour", "t", dimension].includes(c));
  const vi = idx[valueCol];
  let tooltip;
  if (weekdayHour) {
    // The API's cells are UTC; they are moved to the chosen zone's weekday and hour.
    xAxis = { type: "category", name: `hour (${zoneLabel()})`, data: [...Array(24).keys()].map((h) => String(h).padStart(2, "0")) };
    yAxis = { type: "category", data: WEEKDAYS, inverse: true };
    data = rows.map((r) => {
      const [wd, h] = shiftWeekHour(r[idx.weekday] - 1, r[idx.hour]);
      return [h, wd, num(r[vi]) ?? 0];
    });
    tooltip = (p) => `${WEEKDAYS[p.data[1]]} ${String(p.data[0]).padStart(2, "0")}:00–${String(p.data[0] + 1).padStart(2, "0")}:00 (${escapeHtml(zoneLabel())})<br>${escapeHtml(valueCol)}: <b>${escapeHtml(formatValue(p.data[2], unit))}</b>`;
  } else {
    const times = [...new Set(rows.map((r) => r[idx.t]))].sort((a, b) => a - b);
    const values = [...new Set(rows.map((r) => r[idx[dimension]]))].sort();
    const ti = new Map(times.map((t, i) => [t, i]));
    const yi = new Map(values.map((v, i) => [v, i]));
    const span = times.length ? times[times.length - 1] - times[0] : 0;
    const labelStep = span <= 600 ? 1 : span <= 2 * 86400 ? 60 : 86400;
    xAxis = { type: "category", name: zoneLabel(), data: times.map((t) => axisLabel(t * 1000, labelStep)) };
    yAxis = { type: "category", data: values.map((v) => (v === "" ? "(none)" : v)) };
    data = rows.map((r) => {
      const cell = [ti.get(r[idx.t]), yi.get(r[idx[dimension]]), num(r[vi]) ?? 0];
      // The bucket still filling is faded, as on the time series.
      return openFrom !== null && r[idx.t] >= openFrom ? { value: cell, open: true, itemStyle: { opacity: 0.45 } } : cell;
    });
    tooltip = (p) => {
      const v = p.data.value || p.data;
      return `${escapeHtml(bucketLabel(times[v[0]] * 1000, stepS))}${p.data.open ? " · <i>incomplete</i>" : ""}<br>${escapeHtml(yAxis.data[v[1]])}: <b>${escapeHtml(formatValue(v[2], unit))}</b>`;
    };
  }
  const cellValues = data.map((d) => (Array.isArray(d) ? d[2] : d.value[2]) || 0);
  const max = heatScaleMax(cellValues);
  return {
    ...base(title),
    tooltip: { trigger: "item", position: "top", confine: true, formatter: tooltip },
    grid: { left: 8, right: 16, top: 8, bottom: 58, containLabel: true },
    xAxis: { ...xAxis, nameLocation: "middle", nameGap: 24, nameTextStyle: { color: th.muted }, axisLabel: { color: th.muted, hideOverlap: true }, splitArea: { show: false } },
    yAxis: { ...yAxis, axisLabel: { color: th.muted }, splitArea: { show: false } },
    visualMap: {
      min: 0,
      max,
      calculable: true,
      orient: "horizontal",
      left: "center",
      bottom: 0,
      itemHeight: 120,
      itemWidth: 10,
      textStyle: { color: th.muted },
      formatter: (v) => formatValue(v, unit, { short: true }),
      inRange: { color: [...SEQUENTIAL] },
    },
    series: [{ id: "heat", name: valueCol, type: "heatmap", data, itemStyle: { borderColor: th.bg, borderWidth: 1 }, emphasis: { itemStyle: { borderColor: th.fg, borderWidth: 1 } } }],
  };
}

const users = (n) => `${formatValue(n)} ${n === 1 ? "user" : "users"}`;
const pct = (v) => (v === null || v === undefined ? "–" : `${Number((v * 100).toFixed(1))}%`);

function funnelData(columns, rows) {
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  return rows.map((r) => ({
    name: `${r[idx.step]}. ${r[idx.step_name]}`,
    value: num(r[idx.users]) ?? 0,
    step: r[idx.step],
    conversion: r[idx.conversion],
    conversionTotal: r[idx.conversion_total],
  }));
}

/**
 * Rows `step, step_name, users, conversion, conversion_total` → funnel option. With
 * `compared` ({label, columns, rows}) a second funnel stands to the right, same steps.
 */
export function funnelOption(columns, rows, { title, compared = null, mainLabel = "this period" }) {
  const th = theme();
  const one = (id, name, data, left, width, faded, short = false) => ({
    id,
    name,
    type: "funnel",
    sort: "none",
    gap: 2,
    top: compared ? 28 : 8,
    bottom: 8,
    left,
    width,
    minSize: "12%",
    itemStyle: faded ? { opacity: 0.55, borderType: "dashed", borderColor: th.fg, borderWidth: 1 } : { borderColor: th.bg, borderWidth: 1 },
    // Crisp labels: plain text beside the funnel, no outline over the fill.
    label: { show: true, position: "right", color: th.fg, fontSize: 12, formatter: (p) => `${short ? "" : `${p.name}: `}${users(p.value)}${p.data.step > 1 ? ` · ${pct(p.data.conversion)}` : ""}` },
    labelLine: { show: true, length: 8, lineStyle: { color: th.grid } },
    data,
  });
  const series = [];
  const titles = [];
  if (compared) {
    series.push(one("funnel", mainLabel, funnelData(columns, rows), "1%", "20%", false));
    // The compared funnel's steps stand level with the first one's: its labels omit the names.
    series.push(one("funnel-compared", compared.label, funnelData(compared.columns, compared.rows), "56%", "20%", true, true));
    titles.push({ text: mainLabel, left: "1%", top: 0, textStyle: { fontSize: 12, color: th.fg, fontWeight: 600 } });
    titles.push({ text: compared.label, left: "56%", top: 0, textStyle: { fontSize: 12, color: th.fg, fontWeight: 600 } });
  } else {
    series.push(one("funnel", title || "funnel", funnelData(columns, rows), "4%", "48%", false));
  }
  return {
    ...base(title),
    title: titles.length ? titles : undefined,
    tooltip: {
      trigger: "item",
      formatter: (p) =>
        `${escapeHtml(p.seriesName)}<br>${escapeHtml(p.name)}<br>${users(p.value)}<br>step conversion ${pct(p.data.conversion)}<br>of first step ${pct(p.data.conversionTotal)}`,
    },
    series,
  };
}

/**
 * Rows `dim, is_other, value…` (top-N) → bar option with one category per value. With
 * `compared` ({label, values: Map(dim value → number)}) a second, dashed and faded bar per
 * category; "other" is not compared (its members differ between the two).
 */
export function topOption(columns, rows, { title, dimension, unit, compared = null, mainLabel = "" }) {
  const th = theme();
  const label = columns[0];
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  const valueCol = columns.find((c) => c !== label && c !== "is_other");
  const cats = rows.map((r) => (r[idx[label]] === "" ? "(none)" : r[idx[label]]));
  const series = [
    {
      id: "top",
      name: mainLabel || valueCol,
      type: "bar",
      color: PALETTE[0],
      data: rows.map((r) => ({
        value: num(r[idx[valueCol]]) ?? 0,
        dimValue: r[idx[label]],
        isOther: !!r[idx.is_other],
        itemStyle: r[idx.is_other] ? { color: OTHER } : undefined,
      })),
    },
  ];
  if (compared) {
    series.push({
      id: "top-compared",
      name: compared.label,
      type: "bar",
      color: PALETTE[1],
      itemStyle: { opacity: 0.6, borderType: "dashed", borderColor: PALETTE[1], borderWidth: 1 },
      data: rows.map((r) => ({ value: r[idx.is_other] ? null : compared.values.get(r[idx[label]]) ?? 0, dimValue: r[idx[label]], isOther: !!r[idx.is_other] })),
    });
  }
  return {
    ...base(title),
    tooltip: {
      trigger: "axis",
      axisPointer: { type: "shadow" },
      confine: true,
      formatter: (params) => {
        const list = [].concat(params);
        const head = escapeHtml(list[0]?.name ?? "");
        return [head, ...list.map((p) => `${p.marker}${escapeHtml(p.seriesName)}: <b>${escapeHtml(p.data?.isOther && p.seriesId === "top-compared" ? "not compared" : formatValue(p.data?.value, unit))}</b>`)].join("<br>");
      },
    },
    legend: { show: !!compared, top: 0, right: 8, textStyle: { color: th.fg } },
    grid: { left: 8, right: 16, top: 26, bottom: 8, containLabel: true },
    // The dimension is in the header ("by country"); an axis name would crowd the labels.
    dimensionName: dimension,
    xAxis: { type: "category", data: cats, axisLabel: { interval: 0, rotate: cats.length > 6 ? 30 : 0, color: th.muted, hideOverlap: true } },
    yAxis: valueAxis(unit, ""),
    series,
  };
}

/** {columns, rows} (arrays) → row objects. */
export function rowObjects(columns, rows) {
  return rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
}

const cellValue = (d) => (d && typeof d === "object" && !Array.isArray(d) ? d.value : d);
const pointOf = (p) => (Array.isArray(p) ? p : p && Array.isArray(p.value) ? p.value : null);

/**
 * A text alternative for a chart (its container's aria-label, role="img"): what it shows and
 * the numbers a sighted user reads off it, computed from the ECharts option that was drawn.
 */
export function summarize(option, { title = "", context = "", unit = null, note = "" } = {}) {
  const fmt = (v) => formatValue(v, unit);
  const all = option.series || [];
  const opens = new Map(all.filter((s) => String(s.id || "").endsWith(OPEN_SUFFIX)).map((s) => [s.name, s]));
  const series = all.filter((s) => !String(s.id || "").endsWith(OPEN_SUFFIX));
  const head = context ? `${title} (${context})` : title;
  const first = series[0];
  let body;
  if (!first || !all.some((s) => (s.data || []).length)) {
    body = "no data";
  } else if (first.type === "funnel") {
    const pctText = (v) => (v === null || v === undefined ? "" : ` (${(v * 100).toFixed(1)}% of the previous step)`);
    body = series
      .map((s, k) => `${k ? `${s.name}: ` : ""}funnel: ${s.data.map((d, i) => `${d.name} ${formatValue(d.value)} users${i ? pctText(d.conversion) : ""}`).join("; ")}`)
      .join(". ");
  } else if (first.type === "heatmap") {
    const xs = [].concat(option.xAxis || [])[0]?.data || [];
    const ys = [].concat(option.yAxis || [])[0]?.data || [];
    let sum = 0;
    let top = null;
    for (const raw of first.data) {
      const d = cellValue(raw);
      sum += d[2] || 0;
      if (!top || d[2] > top[2]) top = d;
    }
    body = `heatmap of ${first.name} by ${ys.length} rows × ${xs.length} columns: total ${fmt(sum)}`;
    if (top && top[2] > 0) body += `, highest ${fmt(top[2])} at ${ys[top[1]]} ${xs[top[0]]}`;
  } else if ([].concat(option.xAxis || [])[0]?.type === "category") {
    const cats = [].concat(option.xAxis)[0].data || [];
    const values = first.data.map(cellValue);
    const shown = cats.slice(0, 10).map((c, i) => `${c} ${fmt(values[i])}`);
    body = `bar chart of ${first.name} by ${option.dimensionName || [].concat(option.xAxis)[0].name || "category"}: ${shown.join(", ")}${cats.length > 10 ? ", …" : ""}`;
    for (const s of series.slice(1)) {
      const vs = s.data.map(cellValue);
      body += `; ${s.name}: ${cats.slice(0, 10).map((c, i) => `${c} ${fmt(vs[i])}`).join(", ")}`;
    }
  } else {
    const parts = series.slice(0, 4).map((s) => {
      let sum = 0;
      let last = null;
      const points = (s.data || []).map(pointOf).filter(Boolean);
      const open = opens.get(s.name);
      const openPoint = open ? pointOf(open.data[open.data.length - 1]) : null;
      if (openPoint) points.push(openPoint);
      for (const p of points) {
        if (p[1] === null || p[1] === undefined) continue;
        sum += p[1];
        last = p[1];
      }
      return `${s.name || "value"} total ${fmt(sum)}, latest ${fmt(last)}${openPoint ? " (incomplete)" : ""}`;
    });
    const more = series.length > 4 ? `; and ${series.length - 4} more series` : "";
    body = `${first.type === "bar" ? "bars" : "lines"} over time, ${series.length} series: ${parts.join("; ")}${more}`;
  }
  return `${head ? `${head}: ` : ""}${body}${note ? `. ${note}` : ""}.`;
}

export { normalizeUnit };
