// What a dashboard shows beside its charts: the stat panel's number (and its sparkline), a
// chart's data as a table and as CSV, and the org's annotations as chart markers
// (docs/ui.md, "Stat panels", "Table view and CSV", "Annotations").

import { theme } from "./charts.js";
import { formatValue, unitName } from "./format.js";
import { bucketLabel, dateTime, zoneLabel } from "./time.js";

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const ANNOTATION_COLOR = "#D55E00"; // Okabe–Ito vermillion: apart from the series' palette

// -- stat panel ---------------------------------------------------------------------------------

/**
 * A `compare=previous_period` answer → the stat: the first output's total over the range (the
 * previous period's likewise), or for outputs that are not additive (the API's `gap_outputs`:
 * averages, quantiles, ratios) the latest non-empty bucket of each. `points` is the current
 * series for the sparkline, `change` the relative change (null when the previous one is 0).
 */
export function statOf(answer) {
  const cols = answer.columns;
  const ti = cols.indexOf("t");
  const si = cols.indexOf("series");
  const output = cols.find((c) => c !== "t" && c !== "series");
  const vi = cols.indexOf(output);
  const additive = !((answer.meta || {}).gap_outputs || []).includes(output);
  const pick = (which) => {
    const rows = answer.rows.filter((r) => (si < 0 ? which === "current" : (r[si] ?? "current") === which)).sort((a, b) => a[ti] - b[ti]);
    const values = rows.map((r) => (r[vi] === null ? null : Number(r[vi])));
    if (additive) return { value: values.reduce((a, v) => a + (v || 0), 0), points: rows.map((r, i) => [r[ti] * 1000, values[i]]) };
    const present = values.filter((v) => v !== null);
    return { value: present.length ? present[present.length - 1] : null, points: rows.map((r, i) => [r[ti] * 1000, values[i]]) };
  };
  const cur = pick("current");
  const prev = pick("previous");
  const change = cur.value !== null && prev.value !== null && prev.value !== 0 ? (cur.value - prev.value) / Math.abs(prev.value) : null;
  return { output, additive, value: cur.value, previous: prev.value, change, points: cur.points };
}

/** "+50%", "−33.3%", "±0%"; "new" when the previous period had none; "–" when unknown. */
export function changeText(stat) {
  if (stat.change === null) return stat.previous === 0 && stat.value ? "new" : "–";
  const pct = Number((Math.abs(stat.change) * 100).toFixed(1));
  if (pct === 0) return "±0%";
  return `${stat.change > 0 ? "+" : "−"}${pct}%`;
}

/** The stat's text: number, unit (a currency's code) and change, for the DOM and its label. */
export function statText(stat, unit) {
  return { number: formatValue(stat.value, unit), unit: unitName(unit), change: changeText(stat), previous: formatValue(stat.previous, unit) };
}

/** The sparkline: the current period's buckets, no axes. */
export function sparklineOption(stat, { from, to, stepS, unit }) {
  const th = theme();
  return {
    aria: { enabled: false },
    animation: false,
    backgroundColor: "transparent",
    grid: { left: 0, right: 0, top: 4, bottom: 4 },
    tooltip: { trigger: "axis", confine: true, formatter: (ps) => { const p = [].concat(ps)[0]; return p ? `${escapeHtml(bucketLabel(p.value[0], stepS))}<br><b>${escapeHtml(formatValue(p.value[1], unit))}</b>` : ""; } },
    xAxis: { type: "time", min: from * 1000, max: to * 1000, show: false },
    yAxis: { type: "value", show: false, min: 0 },
    series: [{ id: "spark", name: stat.output, type: "line", showSymbol: false, color: th.accent, lineStyle: { width: 2 }, areaStyle: { opacity: 0.15 }, connectNulls: false, data: stat.points }],
  };
}

// -- table and CSV ------------------------------------------------------------------------------

/** A cell as the table and the CSV show it: `t` (epoch s) as ISO 8601 UTC, null as empty. */
export function cellText(column, value) {
  if (value === null || value === undefined) return "";
  if (column === "t" && typeof value === "number") return new Date(value * 1000).toISOString().replace(".000Z", "Z");
  return String(value);
}

function csvField(text) {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** `{columns, rows}` → CSV (RFC 4180, CRLF), the same columns and rows as the API's answer. */
export function toCsv(answer) {
  const lines = [answer.columns.map(csvField).join(",")];
  for (const row of answer.rows) lines.push(row.map((v, i) => csvField(cellText(answer.columns[i], v))).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

/** Save `text` as a file (a download, no server round trip). */
export function download(text, filename, type = "text/csv;charset=utf-8") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A file name from a chart's title: letters, digits, - and _ only. */
export const fileName = (title) => `${String(title || "chart").replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80) || "chart"}.csv`;

export const TABLE_MAX_ROWS = 500;

/** The answer as a table (text nodes only: values are never markup). */
export function dataTable(el, answer, caption) {
  const rows = answer.rows.slice(0, TABLE_MAX_ROWS);
  const table = el(
    "table",
    { class: "data-table" },
    el("caption", { class: "muted", text: `${caption}${answer.rows.length > rows.length ? ` — first ${rows.length} of ${answer.rows.length} rows (the CSV has all)` : ""}` }),
    el("thead", {}, el("tr", {}, answer.columns.map((c) => el("th", { scope: "col", text: c === "t" ? "t (UTC)" : c })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v, i) => el("td", { text: cellText(answer.columns[i], v) }))))),
  );
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption }, table);
}

// -- annotations --------------------------------------------------------------------------------

const epochMs = (iso) => Date.parse(iso);

function annotationTip(a) {
  const when = a.end ? `${dateTime(epochMs(a.time))} – ${dateTime(epochMs(a.end))}` : dateTime(epochMs(a.time));
  const tags = a.tags.length ? `<br>${a.tags.map(escapeHtml).join(", ")}` : "";
  return `<b>${escapeHtml(a.title)}</b><br>${escapeHtml(when)} (${escapeHtml(zoneLabel())})${tags}`;
}

/**
 * The org's annotations within [fromS, toS) as one extra series (id "annotations", no data of
 * its own): points as vertical lines (markLine), spans as shaded areas (markArea), each with its
 * title as a label and a tooltip. Titles reach the canvas as text and the tooltip escaped.
 */
export function annotationSeries(annotations, fromS, toS) {
  const th = theme();
  const inRange = annotations.filter((a) => epochMs(a.time) < toS * 1000 && epochMs(a.end || a.time) >= fromS * 1000);
  if (!inRange.length) return null;
  const short = (t) => (t.length > 24 ? `${t.slice(0, 23)}…` : t);
  // ECharts may hand the formatters a copy of an item without our fields: the name finds it.
  const byName = new Map(inRange.map((a) => [a.title, a]));
  const find = (p) => p.data?.annotation || byName.get(p.name);
  const label = (p) => short(find(p)?.title ?? p.name ?? "");
  const tooltip = { trigger: "item", confine: true, formatter: (p) => (find(p) ? annotationTip(find(p)) : escapeHtml(p.name ?? "")) };
  return {
    id: "annotations",
    name: "annotations",
    type: "line",
    data: [],
    silent: false,
    markLine: {
      symbol: ["none", "none"],
      animation: false,
      lineStyle: { color: ANNOTATION_COLOR, type: "dashed", width: 1.5 },
      label: { color: th.fg, position: "insideEndTop", fontSize: 11, formatter: label },
      tooltip,
      data: inRange.filter((a) => !a.end).map((a) => ({ xAxis: epochMs(a.time), name: a.title, annotation: a })),
    },
    markArea: {
      animation: false,
      itemStyle: { color: ANNOTATION_COLOR, opacity: 0.12 },
      label: { color: th.fg, position: "insideTop", fontSize: 11, formatter: label },
      tooltip,
      data: inRange.filter((a) => a.end).map((a) => [{ xAxis: Math.max(epochMs(a.time), fromS * 1000), name: a.title, annotation: a }, { xAxis: Math.min(epochMs(a.end), toS * 1000) }]),
    },
  };
}
