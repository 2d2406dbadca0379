// Time zone and time formatting shared by every page: charts (axes, tooltips, heatmap),
// chart headers and the alerts' history. One setting — the browser's zone or UTC — kept in
// localStorage and labelled wherever a time is shown (docs/ui.md, "Time zone").

const KEY = "clickpulse.tz";
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
export const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const listeners = new Set();

/** "local" (the browser's zone) or "UTC". */
export function timeZone() {
  return localStorage.getItem(KEY) === "UTC" ? "UTC" : "local";
}

/** Remember the zone and tell every listener (charts redraw their labels). */
export function setTimeZone(zone) {
  localStorage.setItem(KEY, zone === "UTC" ? "UTC" : "local");
  for (const fn of listeners) fn(timeZone());
}

export function onTimeZoneChange(fn) {
  listeners.add(fn);
}

export const isUTC = () => timeZone() === "UTC";

/** The zone's name as shown next to times: "UTC" or e.g. "Europe/Berlin" (else "UTC+01:00"). */
export function zoneLabel() {
  if (isUTC()) return "UTC";
  const name = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (name && name !== "UTC" && name !== "Etc/UTC") return name;
  return name ? "UTC" : offsetLabel(new Date());
}

function offsetLabel(date) {
  const off = -date.getTimezoneOffset();
  const sign = off < 0 ? "-" : "+";
  const a = Math.abs(off);
  return `UTC${sign}${String(Math.floor(a / 60)).padStart(2, "0")}:${String(a % 60).padStart(2, "0")}`;
}

/** The calendar parts of an epoch-ms instant in the chosen zone. */
export function parts(ms) {
  const d = new Date(ms);
  if (isUTC()) {
    return { y: d.getUTCFullYear(), mo: d.getUTCMonth(), d: d.getUTCDate(), h: d.getUTCHours(), mi: d.getUTCMinutes(), s: d.getUTCSeconds(), wd: (d.getUTCDay() + 6) % 7 };
  }
  return { y: d.getFullYear(), mo: d.getMonth(), d: d.getDate(), h: d.getHours(), mi: d.getMinutes(), s: d.getSeconds(), wd: (d.getDay() + 6) % 7 };
}

const two = (n) => String(n).padStart(2, "0");

/** "14:05", with seconds when `seconds`. */
export function clock(ms, seconds = false) {
  const p = parts(ms);
  return `${two(p.h)}:${two(p.mi)}${seconds ? `:${two(p.s)}` : ""}`;
}

/** "Dec 3". */
export function day(ms) {
  const p = parts(ms);
  return `${MONTHS[p.mo]} ${p.d}`;
}

/** "2026-12-03 14:05:09" — unambiguous, for tables (alert history). */
export function dateTime(ms) {
  const p = parts(ms);
  return `${p.y}-${two(p.mo + 1)}-${two(p.d)} ${two(p.h)}:${two(p.mi)}:${two(p.s)}`;
}

/**
 * A time-axis tick label for buckets of `stepS` seconds: clock times within a day (with the
 * date at midnight so the day is never lost), dates for coarser steps; never a bare number.
 */
export function axisLabel(ms, stepS) {
  const p = parts(ms);
  if (stepS >= 86400) return day(ms);
  if (stepS >= 3600) return p.h === 0 && p.mi === 0 ? day(ms) : `${day(ms)} ${clock(ms)}`;
  if (p.h === 0 && p.mi === 0 && p.s === 0) return day(ms);
  return clock(ms, stepS < 60);
}

/** A bucket for a tooltip: "Dec 3, 14:05–14:06 (UTC)" — the bucket's whole span and the zone. */
export function bucketLabel(ms, stepS) {
  const end = ms + stepS * 1000;
  const zone = zoneLabel();
  if (stepS >= 86400) return `${day(ms)} (${zone})`;
  return `${day(ms)}, ${clock(ms, stepS < 60)}–${clock(end, stepS < 60)} (${zone})`;
}

/** An ISO 8601 instant from the API → epoch ms; digits below the millisecond are cut, never
 *  rounded up (".999999" must not show as the next second). */
export function parseInstant(text) {
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
}

/** datetime-local input value for an epoch-seconds instant in the chosen zone. */
export function toInput(epochS) {
  const p = parts(epochS * 1000);
  return `${p.y}-${two(p.mo + 1)}-${two(p.d)}T${two(p.h)}:${two(p.mi)}`;
}

/** datetime-local input value → epoch seconds, read in the chosen zone. */
export function fromInput(value) {
  if (!value) return NaN;
  if (isUTC()) return Math.floor(Date.parse(`${value}:00Z`) / 1000);
  return Math.floor(new Date(value).getTime() / 1000);
}

/** The weekday (0 = Mon) and hour in the chosen zone of a UTC weekday/hour cell of the week. */
export function shiftWeekHour(weekdayUtc, hourUtc) {
  if (isUTC()) return [weekdayUtc, hourUtc];
  // A Monday 00:00 UTC reference; the offset of "now" is used (DST moves it by an hour twice a year).
  const ref = Date.UTC(2024, 0, 1 + weekdayUtc, hourUtc); // 2024-01-01 is a Monday
  const shift = -new Date().getTimezoneOffset() * 60000;
  const d = new Date(ref + shift);
  return [(d.getUTCDay() + 6) % 7, d.getUTCHours()];
}

/** A span in words: "last 5 minutes", "last hour", "last 30 days" (chart headers). */
export function spanWords(spanS) {
  if (spanS === 86400) return "last 24 hours";
  const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  for (const [s, w] of units) {
    if (spanS % s === 0 && spanS >= s) {
      const n = spanS / s;
      return n === 1 ? `last ${w}` : `last ${n} ${w}s`;
    }
  }
  return `last ${spanS} seconds`;
}
