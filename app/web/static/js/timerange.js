// The time range and refresh period as URL parameters, shared by the dashboard and the query
// builder: what a value may be, and the default a bad one falls back to (docs/ui.md, "Time
// navigation"). Pure functions: no DOM, so both pages (and node --check) can load them.

/** The granularity that follows a range: ≤10 min → 1s, ≤2 d → 1m, ≤90 d → 1h, else 1d. */
export function granularityFor(spanS) {
  if (spanS <= 600) return "1s";
  if (spanS <= 2 * 86400) return "1m";
  if (spanS <= 90 * 86400) return "1h";
  return "1d";
}

/** The refresh periods offered (seconds); "off" re-fetches nothing. */
export const REFRESH = { off: 0, "5s": 5, "10s": 10, "30s": 30, "1m": 60, "5m": 300, "15m": 900 };
export const REFRESH_WORDS = { off: "Off", "5s": "5 s", "10s": "10 s", "30s": "30 s", "1m": "1 min", "5m": "5 min", "15m": "15 min" };

/** A `refresh=` value → one of REFRESH's keys ("off" for anything else). */
export function parseRefresh(text) {
  return Object.hasOwn(REFRESH, text ?? "") ? text : "off";
}

// A zoom narrower than this is a slip of the mouse, not a range (and one 1 s bucket at least).
export const MIN_SPAN_S = 2;
const MAX_EPOCH_S = 4102444800; // 2100-01-01: beyond it a "from" is a typo (or milliseconds)

/** `from`/`to` URL values → whole epoch seconds, or null unless both are and from < to. */
export function parseAbsolute(fromText, toText) {
  const valid = (t) => typeof t === "string" && /^\d{1,10}$/.test(t) && Number(t) <= MAX_EPOCH_S;
  if (!valid(fromText) || !valid(toText)) return null;
  const from = Number(fromText);
  const to = Number(toText);
  return to - from >= MIN_SPAN_S ? { from, to } : null;
}

const FILTER_OPS = new Set(["=", "!=", "in", "not_in"]);
const isText = (v) => typeof v === "string" && v.length <= 1000;

/** An `f=` value (JSON) → the filters in it that have the API's shape; anything else is dropped. */
export function parseFilters(text) {
  let value;
  try {
    value = JSON.parse(text || "[]");
  } catch {
    return [];
  }
  if (!Array.isArray(value)) return [];
  return value.filter(
    (f) =>
      f && typeof f === "object" && typeof f.dimension === "string" && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(f.dimension) && FILTER_OPS.has(f.op) && (isText(f.value) || (Array.isArray(f.value) && f.value.length > 0 && f.value.every(isText))),
  );
}

/** Grafana's "zoom out": the span doubled around its middle, never past `nowS`. */
export function zoomOutRange(from, to, nowS) {
  const span = Math.max(MIN_SPAN_S, to - from) * 2;
  let end = Math.round((from + to) / 2 + span / 2);
  if (end > nowS) end = nowS;
  return { from: end - span, to: end };
}
