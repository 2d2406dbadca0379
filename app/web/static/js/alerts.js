// /a and /a/{id}: alert definitions (create/edit) and an alert's history. Both keep up live:
// an `alert` message on the page's push socket updates the state in place at once, then the
// list (or the alert and its history) is re-read, so states the evaluator does not push
// (pending) and messages missed while the socket was down are corrected too.
// The form edits every kind of alert; while it is edited, the backtest over the chosen range
// is drawn next to it (alertchart.js). The channels it picks are made on /a/channels.
import { editorOption, editorSummary, firingCount } from "./alertchart.js";
import { clearChart, replaceOption } from "./charts.js";
import { ApiError, api, get, post, put, query } from "./api.js";
import { formatValue } from "./format.js";
import { dateTime, fromInput, onTimeZoneChange, parseInstant, toInput, zoneLabel } from "./time.js";
import { el, startPage } from "./ui.js";

const page = await startPage();
const $ = (id) => document.getElementById(id);
const alertId = document.body.dataset.alertId ? Number(document.body.dataset.alertId) : null;
let current = null;
let alertsById = new Map();
let metrics = [];
let channels = [];

function cond(a) {
  const what = a.kind === "anomaly" ? `outside its ${a.anomaly.baseline} band` : `${a.comparator} ${a.threshold}`;
  const per = a.group_by?.length ? ` per ${a.group_by.join(", ")}` : "";
  return `${what} for ${a.for_seconds} s${per}`;
}

async function loadList() {
  const [alerts, metricList] = await Promise.all([get("/alerts"), get("/metrics")]);
  metrics = metricList;
  alertsById = new Map(alerts.map((a) => [a.id, a]));
  const select = $("a-metric");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "Inline metric (below)" }), ...metrics.map((m) => el("option", { value: m.id, text: m.name })));
  select.value = chosen;
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

/** "silenced until <end>" in the zone of time.js (named in the tooltip), with the reason. */
function silencedBadge(s) {
  const until = dateTime(parseInstant(s.ends_at));
  return el("span", { class: "badge badge-silenced", title: `${s.reason} (until ${until}, ${zoneLabel()})`, "data-ends-at": s.ends_at, text: `silenced until ${until}` });
}

function showSilence(a) {
  const s = a.silenced;
  $("silence").hidden = false;
  $("silence-state").replaceChildren(
    ...(s
      ? [silencedBadge(s), ` Notifications are silenced until ${dateTime(parseInstant(s.ends_at))}: ${s.reason}${s.metric_id ? " (a silence of its metric)" : ""}. It is still evaluated and its history recorded.`]
      : ["Notifications are sent."]),
  );
  $("s-end").hidden = !s;
  $("s-end").textContent = s && s.metric_id ? "End the metric's silence" : "End silence";
  // A silence of every alert of the metric needs a saved metric.
  $("s-scope").querySelector('[value="metric"]').disabled = !a.metric_id;
  if (!a.metric_id) $("s-scope").value = "alert";
  // The end is typed in the page's zone (time.js: the browser's, or UTC), which the label names.
  document.querySelector('label[for="s-until"]').textContent = `Silence until… (${zoneLabel()})`;
  if (!$("s-until").value) $("s-until").value = toInput(Math.floor(Date.now() / 1000) + 3600);
}

async function refreshSilence() {
  current = await get(`/alerts/${alertId}`);
  showSilence(current);
}

$("silence-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("silence-error").textContent = "";
  try {
    const end = fromInput($("s-until").value);
    if (!Number.isFinite(end)) throw new Error("Choose when the silence ends.");
    const until = new Date(end * 1000).toISOString();
    const scope = $("s-scope").value === "metric" ? { metric_id: current.metric_id } : { alert_id: alertId };
    await post("/alerts/silences", { ...scope, until, reason: $("s-reason").value.trim() });
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

/** One delivery attempt: "Ops hook (webhook) #1 delivered 200". */
function deliveryText(d) {
  const code = d.response_code ? ` ${d.response_code}` : "";
  return `${d.channel_name} (${d.channel_kind}) #${d.attempt} ${d.status}${code}${d.error ? `: ${d.error}` : ""}`;
}

function historyRow(ev) {
  const group = ev.group_key ? ` ${Object.entries(JSON.parse(ev.group_key)).map(([k, v]) => `${k}=${v}`).join(", ")}` : "";
  const attempts = ev.deliveries || [];
  const delivery = el("td", { class: "delivery" }, ev.delivery ? `${ev.delivery}${ev.delivery_error && !attempts.length ? `: ${ev.delivery_error}` : ""}` : "");
  if (attempts.length) delivery.append(el("ul", { class: "deliveries" }, ...attempts.map((d) => el("li", { "data-status": d.status, text: deliveryText(d) }))));
  return el(
    "tr",
    { "data-event-id": ev.id ?? "" },
    el("td", { text: dateTime(parseInstant(ev.at || ev.created_at || ev.ts)) }),
    el("td", { text: `${ev.delivery === "silenced" ? `${ev.state || ev.kind} (silenced)` : ev.state || ev.kind}${group}` }),
    el("td", { text: ev.value === null || ev.value === undefined ? "" : formatValue(ev.value) }),
    delivery,
  );
}

const numberOrEmpty = (v) => (v === null || v === undefined ? "" : v);

function showKind() {
  // The inline metric is the metric only when no saved one is chosen.
  for (const node of [$("a-text"), document.querySelector('label[for="a-text"]')]) node.hidden = Boolean($("a-metric").value);
  const kind = $("a-kind").value;
  for (const grid of document.querySelectorAll("#alert-form [data-kind]")) grid.hidden = grid.dataset.kind !== kind;
}

function renderChannelPicks(chosen = null) {
  const box = $("a-channels");
  const picked = new Set(chosen ?? [...box.querySelectorAll("input:checked")].map((i) => Number(i.value)));
  if (!channels.length) {
    box.replaceChildren(el("span", { class: "muted" }, "none yet: ", el("a", { href: "/a/channels", text: "add a channel" })));
    return;
  }
  box.replaceChildren(
    ...channels.map((ch) => {
      const input = el("input", { type: "checkbox", value: ch.id, id: `a-channel-${ch.id}` });
      input.checked = picked.has(ch.id);
      return el("label", { for: `a-channel-${ch.id}` }, input, ` ${ch.name} (${ch.kind})`);
    }),
  );
}

function fill(a) {
  $("a-name").value = a.name;
  $("a-metric").value = a.metric_id ?? "";
  $("a-text").value = a.metric_inline?.text ?? "";
  $("a-kind").value = a.kind || "threshold";
  $("a-comparator").value = a.comparator ?? ">";
  $("a-threshold").value = numberOrEmpty(a.threshold);
  $("a-recovery").value = numberOrEmpty(a.recovery_threshold);
  $("a-group-by").value = (a.group_by || []).join(", ");
  $("a-max-groups").value = a.max_groups ?? 20;
  const an = a.anomaly || {};
  $("a-baseline").value = an.baseline || "week";
  $("a-direction").value = an.direction || "both";
  $("a-sensitivity").value = an.sensitivity ?? 4;
  $("a-recovery-sensitivity").value = numberOrEmpty(an.recovery_sensitivity);
  $("a-min-band").value = an.min_band ?? 0;
  $("a-for").value = a.for_seconds;
  $("a-resolve").value = a.resolve_after_seconds ?? "";
  $("a-keep").value = a.keep_firing_seconds ?? 0;
  $("a-severity").value = a.severity;
  $("a-webhook").value = a.webhook_url ?? "";
  $("a-enabled").checked = a.enabled;
  renderChannelPicks(a.channel_ids || []);
  showKind();
}

/** The form as an alert body (POST/PUT /alerts, and POST /alerts/backtest with a range). */
function read() {
  const metricId = $("a-metric").value;
  const kind = $("a-kind").value;
  const body = {
    name: $("a-name").value.trim(),
    kind,
    for_seconds: Number($("a-for").value),
    keep_firing_seconds: Number($("a-keep").value || 0),
    severity: $("a-severity").value,
    enabled: $("a-enabled").checked,
    channel_ids: [...$("a-channels").querySelectorAll("input:checked")].map((i) => Number(i.value)),
  };
  if (metricId) body.metric_id = Number(metricId);
  else body.metric_inline = { text: $("a-text").value };
  if (kind === "anomaly") {
    body.anomaly = {
      baseline: $("a-baseline").value,
      direction: $("a-direction").value,
      sensitivity: Number($("a-sensitivity").value),
      min_band: Number($("a-min-band").value || 0),
    };
    if ($("a-recovery-sensitivity").value !== "") body.anomaly.recovery_sensitivity = Number($("a-recovery-sensitivity").value);
  } else {
    body.comparator = $("a-comparator").value;
    body.threshold = $("a-threshold").value === "" ? null : Number($("a-threshold").value);
    if ($("a-recovery").value !== "") body.recovery_threshold = Number($("a-recovery").value);
    body.group_by = $("a-group-by").value.split(",").map((s) => s.trim()).filter(Boolean);
    body.max_groups = Number($("a-max-groups").value || 20);
  }
  if ($("a-resolve").value) body.resolve_after_seconds = Number($("a-resolve").value);
  if ($("a-webhook").value.trim()) body.webhook_url = $("a-webhook").value.trim();
  // Fields this form does not show (the alert's own filters) are kept as stored.
  if (current?.filters?.length) body.filters = current.filters;
  return body;
}

// -- the backtest under the form ------------------------------------------------------------------

const btChart = echarts.init($("bt-chart"), null, { renderer: "canvas" });
new ResizeObserver(() => btChart.resize()).observe($("bt-chart"));
const RANGE_WORDS = { 3600: "1 h", 86400: "24 h", 604800: "7 d" };
let btTimer = null;
let btSeq = 0;

/** Ask for the backtest of the form as it is, 400 ms after the last change. */
function backtestSoon() {
  clearTimeout(btTimer);
  btTimer = setTimeout(runBacktest, 400);
}

async function runBacktest() {
  const mine = ++btSeq;
  const span = Number($("bt-range").value);
  const body = read();
  delete body.name; // optional in a backtest; an empty one would be refused
  delete body.enabled;
  delete body.channel_ids; // who is notified does not change when it fires
  document.body.dataset.backtest = "running";
  $("bt-summary").textContent = "Backtesting…";
  let answer;
  try {
    answer = await query("/alerts/backtest", { ...body, from: `now-${span}s` });
  } catch (err) {
    if (mine !== btSeq) return;
    const where = err instanceof ApiError && err.where?.field ? ` (${err.where.field})` : "";
    $("bt-summary").textContent = `No backtest: ${err.message}${where}`;
    $("bt-note").textContent = "";
    clearChart(btChart);
    document.body.dataset.backtest = "error";
    return;
  }
  if (mine !== btSeq) return;
  const n = firingCount(answer);
  const text = `Would have fired ${n} ${n === 1 ? "time" : "times"} in the last ${RANGE_WORDS[span]}`;
  $("bt-summary").textContent = `${text}.`;
  $("bt-summary").dataset.count = String(n);
  const unit = body.metric_id ? metrics.find((m) => m.id === body.metric_id)?.unit : undefined;
  const option = editorOption(answer, body, { unit, width: $("bt-chart").clientWidth });
  replaceOption(btChart, option);
  const notes = [`${answer.resolution_s} s buckets of ${answer.table}`, answer.no_data_points ? `${answer.no_data_points} without data` : ""];
  if (answer.refused_groups) notes.push(`${answer.refused_groups} groups over the cap`);
  $("bt-note").textContent = [notes.filter(Boolean).join(", "), answer.approximation || ""].filter(Boolean).join(". ");
  $("bt-chart").setAttribute("aria-label", editorSummary(option, text));
  document.body.dataset.backtest = "ok";
}

for (const node of document.querySelectorAll("#alert-form input, #alert-form select, #alert-form textarea")) {
  if (["a-name", "a-severity", "a-webhook", "a-enabled"].includes(node.id) || node.closest("#a-channels")) continue;
  node.addEventListener(node.tagName === "SELECT" || node.type === "checkbox" ? "change" : "input", backtestSoon);
}
$("a-kind").addEventListener("change", showKind);
$("a-metric").addEventListener("change", showKind);
onTimeZoneChange(() => document.body.dataset.backtest === "ok" && runBacktest());
document.addEventListener("theme", () => document.body.dataset.backtest === "ok" && runBacktest());

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
  recovery_threshold: "a-recovery",
  keep_firing_seconds: "a-keep",
  group_by: "a-group-by",
  max_groups: "a-max-groups",
  "anomaly.baseline": "a-baseline",
  "anomaly.direction": "a-direction",
  "anomaly.sensitivity": "a-sensitivity",
  "anomaly.recovery_sensitivity": "a-recovery-sensitivity",
  "anomaly.min_band": "a-min-band",
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
    $("history-table").querySelector("tbody").prepend(historyRow({ id: a.event_id, at: a.at, kind: state, value: a.value }));
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

const [, channelList] = await Promise.all([loadList(), get("/alerts/channels")]);
channels = channelList;
renderChannelPicks([]);
if (alertId) await loadAlert();
showKind();
if (!$("alert-form").hidden) runBacktest();
document.body.dataset.ready = "1";
