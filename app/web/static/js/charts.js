// ECharts options for the four chart types, and the series store that merges history and
// live points in place (the chart is created once; updates are setOption with new data).

import { OTHER, PALETTE, SEQUENTIAL } from "./palette.js";

export { OTHER, PALETTE, SEQUENTIAL };
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const OVERLAY = new Set(["previous", "b"]);
const SERIES_LABEL = { current: "", previous: "previous period", a: "A", b: "B" };

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const num = (v) => (isNumber(v) ? v : typeof v === "string" && v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v);

/** Time series keyed by (series, dims…, output) → Map(t → value); merges rows in place. */
export class SeriesStore {
  constructor({ dims = [], stepS = 1, labels = {} } = {}) {
    this.dims = dims;
    this.stepS = stepS;
    this.labels = labels; // compare series label overrides: {a: "all", b: "country=FR"}
    this.series = new Map(); // key → {key, name, overlay, dims, output, points: Map}
    this.outputs = null;
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
        s.points.set(bucket, row[output] === null ? null : num(row[output]));
        written += 1;
      }
    }
    return written;
  }

  /** Fill missing buckets between `from` and `to` with 0 (as the API's WITH FILL does). */
  fill(from, to) {
    for (const s of this.series.values()) {
      if (s.overlay) continue;
      for (let t = Math.ceil(from / this.stepS) * this.stepS; t < to; t += this.stepS) {
        if (!s.points.has(t)) s.points.set(t, 0);
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

  seriesOptions(type) {
    return [...this.series.values()].map((s) => ({
      id: s.key,
      name: s.name,
      type,
      showSymbol: false,
      symbolSize: 4,
      connectNulls: false,
      lineStyle: s.overlay ? { type: "dashed", width: 1.5 } : { width: 2 },
      itemStyle: s.overlay ? { opacity: 0.6 } : undefined,
      emphasis: { focus: "series" },
      data: [...s.points.entries()].sort((a, b) => a[0] - b[0]).map(([t, v]) => [t * 1000, v]),
    }));
  }
}

function base(title) {
  return {
    color: PALETTE,
    // The container's aria-label is ours (summarize(), kept current by the page); ECharts'
    // generated description would overwrite it on every render.
    aria: { enabled: false },
    animationDuration: 0, // no grow-in on load; updates (live merges) still glide
    animationDurationUpdate: 300,
    title: title ? { show: false, text: title } : undefined,
    tooltip: { trigger: "axis", confine: true },
    grid: { left: 48, right: 16, top: 32, bottom: 28, containLabel: true },
  };
}

export function timeSeriesOption(store, { type = "line", title, from, to }) {
  return {
    ...base(title),
    legend: { type: "scroll", top: 0, show: store.series.size > 1 },
    xAxis: { type: "time", min: from * 1000, max: to * 1000 },
    yAxis: { type: "value", scale: false },
    series: store.seriesOptions(type),
  };
}

/** Rows `weekday, hour, value…` (168 cells) or `t, dim, value…` → heatmap option. */
export function heatmapOption(columns, rows, { title, dimension }) {
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  let data;
  let xAxis;
  let yAxis;
  const weekdayHour = "weekday" in idx && "hour" in idx;
  const valueCol = columns.find((c) => !["weekday", "hour", "t", dimension].includes(c));
  const vi = idx[valueCol];
  if (weekdayHour) {
    xAxis = { type: "category", name: "hour (UTC)", data: [...Array(24).keys()].map((h) => String(h).padStart(2, "0")) };
    yAxis = { type: "category", data: WEEKDAYS, inverse: true };
    data = rows.map((r) => [r[idx.hour], r[idx.weekday] - 1, num(r[vi]) ?? 0]);
  } else {
    const times = [...new Set(rows.map((r) => r[idx.t]))].sort((a, b) => a - b);
    const values = [...new Set(rows.map((r) => r[idx[dimension]]))].sort();
    const ti = new Map(times.map((t, i) => [t, i]));
    const yi = new Map(values.map((v, i) => [v, i]));
    xAxis = { type: "category", data: times.map((t) => new Date(t * 1000).toLocaleString()) };
    yAxis = { type: "category", data: values.map((v) => (v === "" ? "(none)" : v)) };
    data = rows.map((r) => [ti.get(r[idx.t]), yi.get(r[idx[dimension]]), num(r[vi]) ?? 0]);
  }
  const max = Math.max(1, ...data.map((d) => d[2] || 0));
  return {
    ...base(title),
    tooltip: { position: "top", confine: true },
    grid: { left: 48, right: 16, top: 16, bottom: 56, containLabel: true },
    xAxis: { ...xAxis, splitArea: { show: true } },
    yAxis: { ...yAxis, splitArea: { show: true } },
    visualMap: {
      min: 0,
      max,
      calculable: true,
      orient: "horizontal",
      left: "center",
      bottom: 0,
      itemHeight: 80,
      inRange: { color: [...SEQUENTIAL] },
    },
    series: [{ id: "heat", name: valueCol, type: "heatmap", data, emphasis: { itemStyle: { borderColor: "#000" } } }],
  };
}

/** Rows `step, step_name, users, conversion, conversion_total` → funnel option. */
export function funnelOption(columns, rows, { title }) {
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  const data = rows.map((r) => ({
    name: `${r[idx.step]}. ${r[idx.step_name]}`,
    value: num(r[idx.users]) ?? 0,
    step: r[idx.step],
    conversion: r[idx.conversion],
    conversionTotal: r[idx.conversion_total],
  }));
  const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
  return {
    ...base(title),
    tooltip: {
      trigger: "item",
      formatter: (p) => `${p.name}<br>${p.value} users<br>step conversion ${pct(p.data.conversion)}<br>of first step ${pct(p.data.conversionTotal)}`,
    },
    series: [
      {
        id: "funnel",
        name: title || "funnel",
        type: "funnel",
        sort: "none",
        gap: 2,
        left: "10%",
        width: "80%",
        minSize: "8%",
        label: { show: true, position: "inside", formatter: (p) => `${p.name}: ${p.value} (${pct(p.data.conversion)})`, color: "#fff", textBorderColor: "#000", textBorderWidth: 2 },
        data,
      },
    ],
  };
}

/** Rows `dim, is_other, value…` (top-N) → bar option with one category per value. */
export function topOption(columns, rows, { title, dimension }) {
  const label = columns[0];
  const idx = Object.fromEntries(columns.map((c, i) => [c, i]));
  const valueCol = columns.find((c) => c !== label && c !== "is_other");
  const cats = rows.map((r) => (r[idx[label]] === "" ? "(none)" : r[idx[label]]));
  return {
    ...base(title),
    tooltip: { trigger: "item", confine: true },
    xAxis: { type: "category", data: cats, name: dimension, axisLabel: { interval: 0, rotate: cats.length > 6 ? 30 : 0 } },
    yAxis: { type: "value" },
    series: [
      {
        id: "top",
        name: valueCol,
        type: "bar",
        data: rows.map((r) => ({
          value: num(r[idx[valueCol]]) ?? 0,
          dimValue: r[idx[label]],
          isOther: !!r[idx.is_other],
          itemStyle: r[idx.is_other] ? { color: OTHER } : undefined,
        })),
      },
    ],
  };
}

/** {columns, rows} (arrays) → row objects. */
export function rowObjects(columns, rows) {
  return rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])));
}

const fmt = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4))));
const cellValue = (d) => (d && typeof d === "object" && !Array.isArray(d) ? d.value : d);

/**
 * A text alternative for a chart (its container's aria-label, role="img"): what it shows and
 * the numbers a sighted user reads off it, computed from the ECharts option that was drawn.
 */
export function summarize(option, { title = "", context = "" } = {}) {
  const series = option.series || [];
  const head = context ? `${title} (${context})` : title;
  const first = series[0];
  let body;
  if (!first || !series.some((s) => (s.data || []).length)) {
    body = "no data";
  } else if (first.type === "funnel") {
    const pct = (v) => (v === null || v === undefined ? "" : ` (${(v * 100).toFixed(1)}% of the previous step)`);
    body = `funnel: ${first.data.map((d, i) => `${d.name} ${fmt(d.value)} users${i ? pct(d.conversion) : ""}`).join("; ")}`;
  } else if (first.type === "heatmap") {
    const xs = [].concat(option.xAxis || [])[0]?.data || [];
    const ys = [].concat(option.yAxis || [])[0]?.data || [];
    let sum = 0;
    let top = null;
    for (const d of first.data) {
      sum += d[2] || 0;
      if (!top || d[2] > top[2]) top = d;
    }
    body = `heatmap of ${first.name} by ${ys.length} rows × ${xs.length} columns: total ${fmt(sum)}`;
    if (top && top[2] > 0) body += `, highest ${fmt(top[2])} at ${ys[top[1]]} ${xs[top[0]]}`;
  } else if ([].concat(option.xAxis || [])[0]?.type === "category") {
    const cats = [].concat(option.xAxis)[0].data || [];
    const values = first.data.map(cellValue);
    const shown = cats.slice(0, 10).map((c, i) => `${c} ${fmt(values[i])}`);
    body = `bar chart of ${first.name} by ${[].concat(option.xAxis)[0].name || "category"}: ${shown.join(", ")}${cats.length > 10 ? ", …" : ""}`;
  } else {
    const parts = series.slice(0, 4).map((s) => {
      let sum = 0;
      let last = null;
      for (const p of s.data || []) {
        if (p[1] === null || p[1] === undefined) continue;
        sum += p[1];
        last = p[1];
      }
      return `${s.name || "value"} total ${fmt(sum)}, latest ${fmt(last)}`;
    });
    const more = series.length > 4 ? `; and ${series.length - 4} more series` : "";
    body = `${first.type === "bar" ? "bars" : "lines"} over time, ${series.length} series: ${parts.join("; ")}${more}`;
  }
  return `${head ? `${head}: ` : ""}${body}.`;
}
