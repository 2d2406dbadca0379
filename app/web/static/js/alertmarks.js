// Alert firings as chart markers: each interval an alert of the chart's saved metric was firing
// (its `firing` event to its `resolved` event, from GET /alerts/{id}/events) is a shaded area
// on the time charts of that metric, like an annotation span (panels.js). Only the intervals:
// an alert judges its metric per second, a chart draws it per bucket (a count per minute), so
// a threshold line on a dashboard chart would sit on the wrong scale.
import { get } from "./api.js";
import { dateTime, zoneLabel } from "./time.js";

export const FIRING_COLOR = "#D55E00"; // Okabe–Ito vermillion: red-ish, distinct from the series
const EVENTS_PER_ALERT = 500; // the events API's page: the newest 500 transitions per alert

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

/**
 * Firing intervals from an alert's events (any order): [{from, to, group}] in epoch seconds,
 * oldest first; `to` is null while it still fires. A grouped alert's groups pair separately.
 */
export function firingIntervals(events) {
  const sorted = [...events].sort((a, b) => Date.parse(a.at) - Date.parse(b.at) || a.id - b.id);
  const open = new Map(); // group key → its open interval
  const out = [];
  for (const ev of sorted) {
    const group = ev.group_key ?? "";
    const t = Date.parse(ev.at) / 1000;
    if (ev.kind === "firing" && !open.has(group)) {
      const interval = { from: t, to: null, group: ev.group_key ? JSON.parse(ev.group_key) : null, value: ev.value };
      open.set(group, interval);
      out.push(interval);
    } else if (ev.kind === "resolved" && open.has(group)) {
      open.get(group).to = t;
      open.delete(group);
    }
  }
  return out;
}

/**
 * The firings of the alerts on `metricIds` (saved metrics): Map(metric id → [{alert, from, to,
 * group}]). Alerts with an inline metric belong to no chart. Errors reach the caller.
 */
export async function loadFirings(metricIds) {
  const wanted = new Set(metricIds.filter(Boolean).map(Number));
  const byMetric = new Map();
  if (!wanted.size) return byMetric;
  const alerts = (await get("/alerts")).filter((a) => wanted.has(a.metric_id));
  const answers = await Promise.all(alerts.map((a) => get(`/alerts/${a.id}/events?limit=${EVENTS_PER_ALERT}`)));
  alerts.forEach((alert, i) => {
    const list = byMetric.get(alert.metric_id) || [];
    for (const interval of firingIntervals(answers[i].events)) list.push({ alert: { id: alert.id, name: alert.name, severity: alert.severity }, ...interval });
    byMetric.set(alert.metric_id, list);
  });
  return byMetric;
}

function tip(f) {
  const group = f.group ? ` (${Object.entries(f.group).map(([k, v]) => `${k}=${v}`).join(", ")})` : "";
  const until = f.to === null ? "still firing" : dateTime(f.to * 1000);
  return `<b>${escapeHtml(f.alert.name)}${escapeHtml(group)}</b> fired<br>${escapeHtml(dateTime(f.from * 1000))} – ${escapeHtml(until)} (${escapeHtml(zoneLabel())})`;
}

/**
 * The firings within [fromS, toS) as one extra series (id "alert-firings", no data of its own):
 * shaded areas clipped to the window, a still-firing one up to `toS`. null when none.
 */
export function firingSeries(firings, fromS, toS) {
  const inRange = (firings || []).filter((f) => f.from < toS && (f.to === null || f.to >= fromS));
  if (!inRange.length) return null;
  const find = (p) => p.data?.firing || inRange.find((f) => f.alert.name === p.name);
  return {
    id: "alert-firings",
    name: "alert firings",
    type: "line",
    data: [],
    markArea: {
      animation: false,
      silent: false,
      itemStyle: { color: FIRING_COLOR, opacity: 0.18 },
      label: { show: false },
      tooltip: { trigger: "item", confine: true, formatter: (p) => (find(p) ? tip(find(p)) : escapeHtml(p.name ?? "")) },
      data: inRange.map((f) => [
        { xAxis: Math.max(f.from, fromS) * 1000, name: f.alert.name, firing: f },
        { xAxis: Math.min(f.to ?? toS, toS) * 1000 },
      ]),
    },
  };
}
