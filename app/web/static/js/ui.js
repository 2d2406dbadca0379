// Shared page chrome: DOM helper, toasts, the freshness badge, the org's alert toasts,
// the signed-in user, logout. Never innerHTML with data: text only.
import { get, getToken, logout, toLogin } from "./api.js";
import { PushClient } from "./push.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function toast(message, { kind = "info", link = null, linkText = "Details", timeoutMs = 15000 } = {}) {
  const box = document.getElementById("toasts");
  if (!box) return null;
  const close = el("button", { type: "button", class: "link", "aria-label": "Dismiss", text: "×" });
  const node = el(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" || kind === "critical" ? "alert" : "status" },
    el("span", { class: "toast-text", text: message }),
    link ? el("a", { href: link, text: linkText }) : null,
    close,
  );
  close.addEventListener("click", () => node.remove());
  box.append(node);
  if (timeoutMs) setTimeout(() => node.remove(), timeoutMs);
  return node;
}

/** The freshness badge: the worst of (cached answer from the API, pipeline stale, socket state). */
export class Freshness {
  constructor(node = document.getElementById("freshness")) {
    this.node = node;
    this.socket = "connecting"; // connecting | live | reconnecting | unavailable | paused
    this.lagMs = null; // from push `stale {lag_ms}`; null when live
    this.cached = new Map(); // chart key → age_s of a stale (cached) API answer
    this.render();
  }
  setSocket(state) {
    this.socket = state;
    this.render();
  }
  setStale(lagMs) {
    this.lagMs = lagMs;
    this.render();
  }
  setCached(key, stale, ageS) {
    if (stale) this.cached.set(key, ageS || 0);
    else this.cached.delete(key);
    this.render();
  }
  state() {
    if (this.cached.size) {
      const age = Math.max(...this.cached.values());
      return ["cached", `cached data · ${fmtAge(age)} old`, "ClickHouse did not answer; showing the last cached result"];
    }
    if (this.socket === "paused") return ["paused", "paused", "Live updates are paused"];
    if (this.lagMs !== null) {
      return ["stale", `stale · ${(this.lagMs / 1000).toFixed(1)} s behind`, "The real-time pipeline is behind; numbers may be incomplete"];
    }
    if (this.socket === "live") return ["live", "live", "Receiving live updates"];
    if (this.socket === "unavailable") return ["offline", "live updates unavailable", "The push service cannot be reached"];
    if (this.socket === "reconnecting") return ["offline", "reconnecting…", "Reconnecting to live updates"];
    return ["connecting", "connecting…", "Connecting to live updates"];
  }
  render() {
    if (!this.node) return;
    const [state, text, title] = this.state();
    this.node.dataset.state = state;
    this.node.className = `badge badge-${state}`;
    this.node.textContent = text;
    this.node.title = title;
  }
}

export function fmtAge(seconds) {
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

function alertToast(msg) {
  if (msg.silenced) return; // a silenced alert's page updates, but nobody is interrupted
  const a = msg.alert || msg;
  const id = a.alert_id ?? a.id;
  const state = a.state || msg.state || "firing";
  const name = a.name || a.alert_name || `alert ${id}`;
  const value = a.value ?? msg.value;
  const kind = state === "firing" ? (a.severity === "critical" ? "critical" : "warning") : "info";
  const text = `${name} ${state === "firing" ? "is firing" : state}${value !== undefined && value !== null ? ` (value ${value})` : ""}`;
  toast(text, { kind, link: id ? `/a/${id}` : null, linkText: "Alert history", timeoutMs: 30000 });
}

/** Every signed-in page: check the token, wire logout, open the org's push socket for alerts. */
export async function startPage({ push = true } = {}) {
  if (!getToken()) {
    toLogin();
    throw new Error("not signed in");
  }
  document.getElementById("logout")?.addEventListener("click", logout);
  const freshness = new Freshness();
  let client = null;
  if (push) {
    client = new PushClient({ onStatus: (s) => freshness.setSocket(s) });
    client.on("alert", alertToast);
    // The pipeline's lag: the whole hub (no key) or a key of one of our subscriptions.
    const stale = new Map();
    const update = () => freshness.setStale(stale.size ? Math.max(...stale.values()) : null);
    client.on("stale", (m) => (stale.set(m.key ?? "*", m.lag_ms ?? 0), update()));
    client.on("live", (m) => (m.key === undefined ? stale.clear() : stale.delete(m.key), update()));
    client.connect();
    window.clickpulse = Object.assign(window.clickpulse || {}, { push: client, freshness });
  }
  get("/me")
    .then((me) => {
      const who = document.getElementById("whoami");
      if (who) who.textContent = `org ${me.org_id} · ${me.role}`;
    })
    .catch(() => {});
  return { freshness, push: client };
}
