// Numbers with their unit: a metric's `unit` ({kind: count | currency | percent | duration |
// bytes, currency: "EUR", base: "s" | "ms"}) drives axes (short), tooltips and stat numbers
// (precise); see docs/ui.md, "Units and numbers".

const BYTE_UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

/** A metric's unit, completed with defaults; anything unknown is a plain count. */
export function normalizeUnit(unit) {
  const u = unit && typeof unit === "object" ? unit : {};
  const kind = ["count", "currency", "percent", "duration", "bytes"].includes(u.kind) ? u.kind : "count";
  return { kind, currency: kind === "currency" ? String(u.currency || "USD").toUpperCase() : null, base: u.base === "ms" ? "ms" : "s" };
}

/** At most `sig` significant digits, no float noise (0.08888888888888889 → 0.0889). */
export function round(v, sig = 3) {
  if (!Number.isFinite(v) || v === 0) return v;
  if (Math.abs(v) >= 10 ** sig) return Math.round(v);
  return Number(v.toPrecision(sig));
}

function plain(v, sig) {
  const r = round(v, sig);
  return Number.isInteger(r) ? r.toLocaleString("en-US") : r.toLocaleString("en-US", { maximumSignificantDigits: sig });
}

function compact(v) {
  const a = Math.abs(v);
  for (const [n, s] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) if (a >= n) return `${round(v / n, 3)}${s}`;
  return String(round(v, 3));
}

function duration(seconds, sig) {
  const a = Math.abs(seconds);
  if (a === 0) return "0 s";
  if (a < 1e-3) return `${round(seconds * 1e6, sig)} µs`;
  if (a < 1) return `${round(seconds * 1e3, sig)} ms`;
  if (a < 120) return `${round(seconds, sig)} s`;
  if (a < 7200) return `${round(seconds / 60, sig)} min`;
  if (a < 172800) return `${round(seconds / 3600, sig)} h`;
  return `${round(seconds / 86400, sig)} d`;
}

function bytes(v, sig) {
  let i = 0;
  let x = v;
  while (Math.abs(x) >= 1024 && i < BYTE_UNITS.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${round(x, sig)} ${BYTE_UNITS[i]}`;
}

function currency(v, code, short) {
  try {
    if (short && Math.abs(v) >= 1e4) {
      return new Intl.NumberFormat("en-US", { style: "currency", currency: code, notation: "compact", maximumSignificantDigits: 3 }).format(v);
    }
    if (short && Number.isInteger(v)) {
      return new Intl.NumberFormat("en-US", { style: "currency", currency: code, maximumFractionDigits: 0 }).format(v); // ticks: $500, not $500.00
    }
    return new Intl.NumberFormat("en-US", { style: "currency", currency: code, maximumFractionDigits: 2 }).format(v);
  } catch {
    return `${plain(v, 6)} ${code}`; // an unknown code: the number and the code as given
  }
}

/**
 * `v` in `unit`. `short` for axis ticks (1.2k, €12K, 25%), otherwise precise (tooltips, stat
 * numbers): counts keep their digits, fractions 3 significant digits. null/NaN → "–".
 */
export function formatValue(v, unit, { short = false } = {}) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "–";
  const x = Number(v);
  const u = normalizeUnit(unit);
  switch (u.kind) {
    case "currency":
      return currency(x, u.currency, short);
    case "percent":
      return `${round(x * 100, short ? 2 : 3)}%`;
    case "duration":
      return duration(u.base === "ms" ? x / 1000 : x, short ? 2 : 3);
    case "bytes":
      return bytes(x, short ? 2 : 3);
    default:
      return short ? compact(x) : plain(x, Number.isInteger(x) ? 21 : 3);
  }
}

/** The unit for an axis name: a currency's code ("EUR"); other units are in every tick label
 *  already (25%, 1.5 s, 3 MB) and a count has none. */
export function unitName(unit) {
  const u = normalizeUnit(unit);
  return u.kind === "currency" ? u.currency : "";
}

/** A bucket size as a rate basis: "per second", "per minute", "per hour", "per day". */
export function rateBasis(stepS) {
  return { 1: "per second", 60: "per minute", 3600: "per hour", 86400: "per day" }[stepS] || `per ${stepS} s`;
}

/** Counts and sums depend on the bucket size; their axis says the rate basis. */
export const isRate = (unit) => ["count", "currency", "bytes"].includes(normalizeUnit(unit).kind);
