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

/** The freshness badge and the "updated N s ago" stamp: the worst of (cached answer from the
 *  API, paused, the push watchdog's "stalled", pipeline stale, socket state). Both are drawn
 *  from one `lastUpdate` (the last push frame or REST answer), once a second, so they agree;
 *  <body data-freshness> carries the state for the charts (dimmed when stalled). */
export class Freshness {
  constructor(node = document.getElementById("freshness"), stamp = document.getElementById("updated-at")) {
    this.node = node;
    this.stamp = stamp;
    this.socket = "connecting"; // connecting | live | reconnecting | unavailable | paused
    this.stalled = false; // the push watchdog heard nothing within its bound
    this.lastUpdate = null; // Date.now() of the last sign of fresh data
    this.lagMs = null; // from push `stale {lag_ms}`; null when live
    this.cached = new Map(); // chart key → age_s of a stale (cached) API answer
    this.render();
    this.ticker = setInterval(() => this.render(), 1000);
  }
  setSocket(state) {
    this.socket = state;
    this.render();
  }
  setStalled(stalled) {
    this.stalled = stalled;
    this.render();
  }
  /** Fresh data arrived (a REST answer, a push frame) at `at` (ms). */
  touch(at = Date.now()) {
    if (this.lastUpdate === null || at > this.lastUpdate) this.lastUpdate = at;
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
  /** Whole seconds since the last update (null before any). */
  ageS(now = Date.now()) {
    return this.lastUpdate === null ? null : Math.max(0, Math.floor((now - this.lastUpdate) / 1000));
  }
  state(age = this.ageS()) {
    const since = age === null ? "" : ` · last update ${fmtAge(age)} ago`;
    if (this.cached.size) {
      const old = Math.max(...this.cached.values());
      return ["cached", `cached data · ${fmtAge(old)} old`, "ClickHouse did not answer; showing the last cached result"];
    }
    if (this.socket === "paused") return ["paused", "paused", "Live updates are paused"];
    if (this.stalled && this.socket === "live") {
      return ["stalled", `stalled${since}`, "The server has not answered for several seconds; the numbers are frozen at the last update"];
    }
    if (this.lagMs !== null) {
      return ["stale", `stale · ${(this.lagMs / 1000).toFixed(1)} s behind`, "The real-time pipeline is behind; numbers may be incomplete"];
    }
    if (this.socket === "live") return ["live", "live", "Receiving live updates"];
    if (this.socket === "unavailable") return ["offline", "live updates unavailable", "The push service cannot be reached"];
    if (this.socket === "reconnecting") return ["offline", `reconnecting…${since}`, "Reconnecting to live updates"];
    return ["connecting", "connecting…", "Connecting to live updates"];
  }
  render() {
    const age = this.ageS();
    const [state, text, title] = this.state(age);
    if (document.body) document.body.dataset.freshness = state;
    if (this.stamp) {
      this.stamp.hidden = age === null;
      if (age !== null) {
        const text = `updated ${fmtAge(age)} ago`;
        if (this.stamp.textContent !== text) this.stamp.textContent = text;
        this.stamp.dateTime = new Date(this.lastUpdate).toISOString();
        this.stamp.dataset.ageS = String(age);
      }
    }
    if (!this.node) return;
    this.node.dataset.state = state;
    this.node.className = `badge badge-${state}`;
    // Only a changed text is written: the badge is a polite live region. The ticking age is
    // aria-hidden (the stamp carries it too), so a screen reader hears "stalled" once, not
    // every second.
    if (this.node.textContent !== text) {
      const cut = text.indexOf(" · last update");
      const [head, tail] = cut < 0 ? [text, ""] : [text.slice(0, cut), text.slice(cut)];
      const first = this.node.firstChild;
      const age = this.node.querySelector("span[aria-hidden]");
      if (tail && first?.nodeType === Node.TEXT_NODE && first.data === head && age) age.textContent = tail;
      else if (tail) this.node.replaceChildren(head, el("span", { "aria-hidden": "true", text: tail }));
      else this.node.textContent = text;
    }
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

let mine = null;
/**
 * Who is signed in (GET /me: org_id, user_id, role), read once per page and shared by every
 * module that asks; a failed read is not kept, so the next caller asks again.
 */
export function currentUser() {
  mine ||= get("/me").catch((err) => {
    mine = null;
    throw err;
  });
  return mine;
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
    client = new PushClient({
      onStatus: (s) => freshness.setSocket(s),
      onWatch: (stalled) => freshness.setStalled(stalled),
      onFrame: (at) => freshness.touch(at), // the badge and the stamp read it once a second
    });
    client.on("alert", alertToast);
    // The pipeline's lag: the whole hub (no key) or a key of one of our subscriptions.
    const stale = new Map();
    const update = () => freshness.setStale(stale.size ? Math.max(...stale.values()) : null);
    client.on("stale", (m) => (stale.set(m.key ?? "*", m.lag_ms ?? 0), update()));
    client.on("live", (m) => (m.key === undefined ? stale.clear() : stale.delete(m.key), update()));
    client.connect();
    window.clickpulse = Object.assign(window.clickpulse || {}, { push: client, freshness });
  }
  currentUser()
    .then((me) => {
      const who = document.getElementById("whoami");
      if (who) who.textContent = `org ${me.org_id} · ${me.role}`;
      window.ClickPulseTheme?.setUser(`${me.org_id}:${me.user_id}`); // their theme choice applies
    })
    .catch(() => {});
  return { freshness, push: client };
}
