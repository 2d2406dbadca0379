// /a and /a/{id}: alert definitions (create/edit) and an alert's history.
import { ApiError, api, get, post, put } from "./api.js";
import { el, startPage } from "./ui.js";

await startPage();
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
        el(
          "td",
          {},
          el("span", { class: `state state-${a.state}`, text: a.enabled ? a.state : "disabled" }),
          ...(a.silenced ? [silencedBadge(a.silenced)] : []),
        ),
      ),
    ),
  );
  $("alert-table").hidden = alerts.length === 0;
}

function silencedBadge(s) {
  const until = new Date(s.ends_at).toLocaleString();
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
      ? [silencedBadge(s), ` Notifications are silenced until ${new Date(s.ends_at).toLocaleString()}: ${s.reason}${s.metric_id ? " (a silence of its metric)" : ""}. It is still evaluated and its history recorded.`]
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
  $("alert-status").textContent = `State: ${current.state}${current.last_value !== null ? ` · last value ${current.last_value}` : ""}`;
  showSilence(current);
  $("history").hidden = false;
  try {
    const events = await get(`/alerts/${alertId}/events`);
    const rows = Array.isArray(events) ? events : events.events || [];
    $("history-table").querySelector("tbody").replaceChildren(
      ...rows.map((ev) =>
        el("tr", {}, el("td", { text: new Date(ev.at || ev.created_at || ev.ts).toLocaleString() }), el("td", { text: ev.delivery === "silenced" ? `${ev.state || ev.kind} (silenced)` : ev.state || ev.kind }), el("td", { text: ev.value ?? "" })),
      ),
    );
    $("history-note").textContent = rows.length ? "" : "It has not fired yet.";
  } catch (err) {
    $("history-note").textContent = err.status === 404 || err.status === 405 ? "History is not available on this server yet." : `History: ${err.message}`;
  }
}

$("alert-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("alert-error").textContent = "";
  const body = read();
  try {
    if (current) {
      current = await put(`/alerts/${current.id}`, { ...body, version: current.version });
      $("alert-status").textContent = "Saved.";
    } else {
      const created = await post("/alerts", body);
      location.assign(`/a/${created.id}`);
    }
  } catch (err) {
    const where = err instanceof ApiError && err.where ? ` (${err.where.field || err.where.param || ""}${err.where.line ? ` line ${err.where.line}, column ${err.where.column}` : ""})` : "";
    $("alert-error").textContent = `${err.message}${where}`;
  }
});

await loadList();
if (alertId) await loadAlert();
document.body.dataset.ready = "1";
