// /a and /a/{id}: alert definitions (create/edit) and an alert's history. Both keep up live:
// an `alert` message on the page's push socket updates the state in place at once, then the
// list (or the alert and its history) is re-read, so states the evaluator does not push
// (pending) and messages missed while the socket was down are corrected too.
import { ApiError, api, get, post, put } from "./api.js";
import { formatValue } from "./format.js";
import { dateTime, parseInstant, zoneLabel } from "./time.js";
import { el, startPage } from "./ui.js";

const page = await startPage();
const $ = (id) => document.getElementById(id);
const alertId = document.body.dataset.alertId ? Number(document.body.dataset.alertId) : null;
let current = null;

function cond(a) {
  const what = a.kind === "anomaly" ? `outside its ${a.anomaly.baseline} band` : `${a.comparator} ${a.threshold}`;
  const per = a.group_by?.length ? ` per ${a.group_by.join(", ")}` : "";
  return `${what} for ${a.for_seconds} s${per}`;
}

async function loadList() {
  const [alerts, metrics] = await Promise.all([get("/alerts"), get("/metrics")]);
  const select = $("a-metric");
  select.replaceChildren(el("option", { value: "", text: "Inline metric (below)" }), ...metrics.map((m) => el("option", { value: m.id, text: m.name })));
  if (alertId) return;
  const body = $("alert-table").querySelector("tbody");
  body.replaceChildren(
    ...alerts.map((a) =>
      el(
        "tr",
        { "data-alert-id": a.id },
        el("td", {}, el("a", { href: `/a/${a.id}`, text: a.name })),
        el("td", { text: cond(a) }),
        el("td", { text: a.severity }),
        el("td", {}, stateBadge(a.enabled ? a.state : "disabled"), ...(a.silenced ? [silencedBadge(a.silenced)] : [])),
      ),
    ),
  );
  $("alert-table").hidden = alerts.length === 0;
}

function silencedBadge(s) {
  const until = dateTime(parseInstant(s.ends_at));
  return el("span", { class: "badge badge-silenced", title: `${s.reason} (until ${until})`, text: "silenced" });
}

/** The value of a datetime-local input for `date` (local time, minutes). */
function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function showSilence(a) {
  const s = a.silenced;
  $("silence").hidden = false;
  $("silence-state").replaceChildren(
    ...(s
      ? [silencedBadge(s), ` Notifications are silenced until ${dateTime(parseInstant(s.ends_at))}: ${s.reason}${s.metric_id ? " (a silence of its metric)" : ""}. It is still evaluated and its history recorded.`]
      : ["Notifications are sent."]),
  );
  $("s-end").hidden = !s || Boolean(s.metric_id);
  if (!$("s-until").value) $("s-until").value = localInput(new Date(Date.now() + 3600 * 1000));
}

async function refreshSilence() {
  current = await get(`/alerts/${alertId}`);
  showSilence(current);
}

$("silence-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("silence-error").textContent = "";
  try {
    const until = new Date($("s-until").value).toISOString();
    await post("/alerts/silences", { alert_id: alertId, until, reason: $("s-reason").value.trim() });
    $("s-reason").value = "";
    await refreshSilence();
  } catch (err) {
    $("silence-error").textContent = err.message;
  }
});

$("s-end").addEventListener("click", async () => {
  $("silence-error").textContent = "";
  try {
    await api("DELETE", `/alerts/silences/${current.silenced.id}`);
    await refreshSilence();
  } catch (err) {
    $("silence-error").textContent = err.message;
  }
});

function stateBadge(state) {
  return el("span", { class: `state state-${state}`, "data-state": state, text: state });
}

function statusText(a) {
  return `State: ${a.state}${a.last_value !== null && a.last_value !== undefined ? ` · last value ${a.last_value}` : ""}`;
}

function historyRow(ev) {
  return el("tr", {}, el("td", { text: dateTime(parseInstant(ev.at || ev.created_at || ev.ts)) }), el("td", { text: ev.delivery === "silenced" ? `${ev.state || ev.kind} (silenced)` : ev.state || ev.kind }), el("td", { text: ev.value === null || ev.value === undefined ? "" : formatValue(ev.value) }));
}

function fill(a) {
  $("a-name").value = a.name;
  $("a-metric").value = a.metric_id ?? "";
  $("a-text").value = a.metric_inline?.text ?? "";
  $("a-comparator").value = a.comparator;
  $("a-threshold").value = a.threshold;
  $("a-for").value = a.for_seconds;
  $("a-resolve").value = a.resolve_after_seconds ?? "";
  $("a-severity").value = a.severity;
  $("a-webhook").value = a.webhook_url ?? "";
  $("a-enabled").checked = a.enabled;
}

function read() {
  const metricId = $("a-metric").value;
  const body = {
    name: $("a-name").value.trim(),
    comparator: $("a-comparator").value,
    threshold: Number($("a-threshold").value),
    for_seconds: Number($("a-for").value),
    severity: $("a-severity").value,
    enabled: $("a-enabled").checked,
  };
  if (metricId) body.metric_id = Number(metricId);
  else body.metric_inline = { text: $("a-text").value };
  if ($("a-resolve").value) body.resolve_after_seconds = Number($("a-resolve").value);
  if ($("a-webhook").value.trim()) body.webhook_url = $("a-webhook").value.trim();
  // The form does not edit channels: a save keeps the alert's (a PUT replaces the whole alert).
  if (current) body.channel_ids = current.channel_ids ?? [];
  if (current) {
    // Fields this form does not show (anti-flapping, anomaly band, group-by) are kept as stored.
    for (const k of ["kind", "anomaly", "recovery_threshold", "keep_firing_seconds", "group_by", "max_groups"]) {
      if (current[k] !== null && current[k] !== undefined) body[k] = current[k];
    }
    if (current.kind === "anomaly") {
      delete body.comparator;
      delete body.threshold;
    }
  }
  return body;
}

async function loadAlert() {
  try {
    current = await get(`/alerts/${alertId}`);
  } catch (err) {
    if (err.status === 404) {
      $("not-found").hidden = false;
      $("alert-form").hidden = true;
      return;
    }
    throw err;
  }
  $("alerts-title").textContent = `Alert: ${current.name}`;
  $("form-title").textContent = "Edit alert";
  $("a-submit").textContent = "Save changes";
  fill(current);
  $("alert-status").textContent = statusText(current);
  $("alert-status").dataset.state = current.state;
  showSilence(current);
  $("history").hidden = false;
  await loadHistory();
}

async function loadHistory() {
  try {
    const events = await get(`/alerts/${alertId}/events`);
    const rows = Array.isArray(events) ? events : events.events || [];
    // Times in the zone chosen on the dashboards (time.js), named in the column header.
    $("history-table").querySelector("thead th").textContent = `When (${zoneLabel()})`;
    $("history-table").querySelector("tbody").replaceChildren(...rows.map(historyRow));
    $("history-note").textContent = rows.length ? "" : "It has not fired yet.";
  } catch (err) {
    $("history-note").textContent = err.status === 404 || err.status === 405 ? "History is not available on this server yet." : `History: ${err.message}`;
  }
}

// The field an API error names (`where.field`), marked invalid next to the message by Save.
const FIELDS = {
  name: "a-name",
  metric_id: "a-metric",
  metric_inline: "a-text",
  comparator: "a-comparator",
  threshold: "a-threshold",
  for_seconds: "a-for",
  resolve_after_seconds: "a-resolve",
  severity: "a-severity",
  webhook_url: "a-webhook",
  enabled: "a-enabled",
};

function clearInvalid() {
  for (const node of document.querySelectorAll("#alert-form [aria-invalid]")) {
    node.removeAttribute("aria-invalid");
    node.removeAttribute("aria-errormessage");
  }
}

$("alert-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("alert-error").textContent = "";
  $("alert-saved").textContent = "";
  clearInvalid();
  const body = read();
  try {
    if (current) {
      current = await put(`/alerts/${current.id}`, { ...body, version: current.version });
      $("alerts-title").textContent = `Alert: ${current.name}`;
      $("alert-status").textContent = statusText(current);
      $("alert-saved").textContent = "Saved.";
    } else {
      const created = await post("/alerts", body);
      location.assign(`/a/${created.id}`);
    }
  } catch (err) {
    const where = err instanceof ApiError && err.where ? ` (${err.where.field || err.where.param || ""}${err.where.line ? ` line ${err.where.line}, column ${err.where.column}` : ""})` : "";
    $("alert-error").textContent = `${err.message}${where}`;
    const field = err instanceof ApiError && err.where ? FIELDS[err.where.field] || (err.where.line ? "a-text" : null) : null;
    if (field) {
      $(field).setAttribute("aria-invalid", "true");
      $(field).setAttribute("aria-errormessage", "alert-error");
    }
  }
});

// -- live: the org's alert messages on this page's socket ------------------------------------

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    try {
      if (alertId) await refreshAlert();
      else await loadList();
    } catch (err) {
      console.warn("alerts: refresh failed", err);
    }
  }, 500);
}

/** The stored state and history of the open alert; the form (maybe being edited) is left alone. */
async function refreshAlert() {
  if (!current) return;
  const fresh = await get(`/alerts/${alertId}`);
  current = { ...current, state: fresh.state, last_value: fresh.last_value, state_since: fresh.state_since };
  $("alert-status").textContent = statusText(current);
  $("alert-status").dataset.state = current.state;
  await loadHistory();
}

function onAlert(msg) {
  const a = msg.alert || msg;
  const id = Number(a.alert_id ?? a.id);
  const state = a.state || msg.state;
  if (!id || !state) return;
  if (alertId) {
    if (id !== alertId || !current) return;
    current = { ...current, state, last_value: a.value ?? current.last_value };
    $("alert-status").textContent = statusText(current);
    $("alert-status").dataset.state = state;
    $("history-table").querySelector("tbody").prepend(historyRow({ at: a.at, kind: state, value: a.value }));
    $("history-note").textContent = "";
  } else {
    const cell = document.querySelector(`#alert-table tr[data-alert-id="${id}"] td:last-child`);
    if (cell && cell.textContent !== "disabled") cell.replaceChildren(stateBadge(state));
  }
  refreshSoon();
}

// Transitions the evaluator does not push (pending, resolved → ok) show within this long.
setInterval(() => document.visibilityState === "visible" && refreshSoon(), 15000);
if (page.push) {
  page.push.on("alert", onAlert);
  page.push.on("open", () => page.push.opens > 1 && refreshSoon()); // messages missed while down
}

await loadList();
if (alertId) await loadAlert();
document.body.dataset.ready = "1";
