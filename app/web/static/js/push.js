// The live socket: one WebSocket per page to /ws/subscribe?ticket=…, many subscriptions on it.
// The ticket (POST /ws/ticket: single use, 30 s) keeps the long-lived token out of the URL.
// Reconnects with backoff and resubscribes each subscription with `since` (the last second it
// saw, epoch ms) so the server sends only the missed seconds.
//
// Watchdog: an open socket is not proof of a live server (a frozen process keeps its TCP
// connections). Any frame counts as a sign of life; after IDLE_PING_MS without one the client
// pings (the server answers pong), and a ping unanswered for STALL_MS makes it "stalled"
// (onWatch) until the next frame. So a frozen server shows within IDLE_PING_MS + STALL_MS.
import { getToken, post } from "./api.js";

export const IDLE_PING_MS = 2000;
export const STALL_MS = 4000;
const WATCH_MS = 500;

/** Rows of a snapshot/delta as objects {t (epoch s), col: value, …}, whatever the framing. */
export function pointsOf(msg) {
  let rows = msg.rows ?? msg.points ?? msg.data ?? msg.seconds ?? [];
  if (!Array.isArray(rows)) rows = Object.values(rows);
  const columns = msg.columns;
  return rows.map((row) => {
    let obj = row;
    if (Array.isArray(row) && Array.isArray(columns)) {
      obj = {};
      columns.forEach((c, i) => (obj[c] = row[i]));
    }
    obj = { ...obj };
    let t = obj.t ?? obj.ts ?? obj.time;
    if (typeof t === "string") t = Date.parse(t) / 1000;
    if (t > 1e11) t = t / 1000; // epoch ms → s
    obj.t = Math.floor(t);
    return obj;
  });
}

export class PushClient {
  constructor({ onStatus = () => {}, onWatch = () => {}, onFrame = () => {}, url = null } = {}) {
    this.onStatus = onStatus;
    this.onWatch = onWatch; // (stalled: boolean) when the watchdog's verdict changes
    this.onFrame = onFrame; // (Date.now()) on every frame: fresh as of then
    this.lastFrameAt = null; // Date.now() of the last frame received (any type)
    this.pingSentAt = null; // an unanswered ping, when one is out
    this.stalled = false;
    this.lastWatch = 0;
    this.url = url;
    this.subs = new Map(); // id → {params, handlers, lastT}
    this.listeners = new Map(); // type → Set(fn)
    this.ws = null;
    this.opened = false;
    this.failures = 0;
    this.closedByUs = false;
    this.timer = null;
    this.received = {}; // message counts by type (for the status line and tests)
    this.opens = 0; // sockets opened so far (> 1: reconnected; what was pushed meanwhile is lost)
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }

  emit(type, msg) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(msg);
      } catch (err) {
        console.error(err);
      }
    }
  }

  async connect() {
    if (!getToken() && !this.url) return; // a given url carries its own credential (a shared link)
    let url = this.url;
    if (!url) {
      let ticket;
      try {
        ({ ticket } = await post("/ws/ticket", undefined, { redirect: false }));
      } catch (err) {
        if (this.closedByUs) return;
        if (err.status === 401) {
          this.onStatus("unavailable");
          return; // the token was refused: do not hammer
        }
        this.failures += 1;
        this.onStatus("reconnecting");
        this.scheduleReconnect();
        return;
      }
      if (this.closedByUs) return;
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      url = `${proto}//${location.host}/ws/subscribe?ticket=${encodeURIComponent(ticket)}`;
    }
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.opened = true;
      this.failures = 0;
      this.opens += 1;
      this.heard();
      this.onStatus("live");
      this.emit("open", { opens: this.opens });
      for (const [id, sub] of this.subs) this.sendSubscribe(id, sub);
      clearInterval(this.watcher);
      this.lastWatch = Date.now();
      this.watcher = setInterval(() => this.watch(), WATCH_MS);
    });
    ws.addEventListener("message", (ev) => {
      this.heard();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.dispatch(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      clearInterval(this.watcher);
      this.ws = null;
      this.setStalled(false); // a closed socket is "reconnecting", not stalled
      if (this.closedByUs) return;
      if (ev.code === 4401) {
        this.onStatus("unavailable");
        return; // the token was refused: do not hammer
      }
      this.failures += 1;
      this.onStatus(this.failures > 3 && !this.opened ? "unavailable" : "reconnecting");
      this.scheduleReconnect();
    });
  }

  /** A frame (or the open): the server is alive as of now. */
  heard() {
    this.lastFrameAt = Date.now();
    this.pingSentAt = null;
    this.onFrame(this.lastFrameAt); // first: the badge redrawn below shows the new age
    this.setStalled(false);
  }

  setStalled(stalled) {
    if (stalled === this.stalled) return;
    this.stalled = stalled;
    this.onWatch(stalled);
  }

  watch() {
    const now = Date.now();
    // Our own timers were held back (a background tab, a busy page): the server is not to
    // blame for that gap, so the current ping's clock restarts.
    const slept = now - this.lastWatch > WATCH_MS * 4;
    this.lastWatch = now;
    if (!this.isOpen) return;
    if (slept && !this.stalled) this.pingSentAt = null;
    if (this.pingSentAt === null && now - this.lastFrameAt >= IDLE_PING_MS) {
      this.pingSentAt = now;
      this.send({ type: "ping" });
    }
    if (this.pingSentAt !== null && now - this.pingSentAt >= STALL_MS) this.setStalled(true);
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const delay = Math.min(15000, 500 * 2 ** Math.min(this.failures, 5)) * (0.75 + Math.random() / 2);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  close() {
    this.closedByUs = true;
    clearInterval(this.watcher);
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  send(msg) {
    if (this.isOpen) this.ws.send(JSON.stringify(msg));
  }

  /** params: {metric | metric_id, filters, group_by, range_s}; handlers: {onData, onError, onStale}. */
  subscribe(id, params, handlers) {
    const sub = { params, handlers, lastT: null };
    this.subs.set(String(id), sub);
    this.sendSubscribe(String(id), sub);
  }

  sendSubscribe(id, sub) {
    const msg = { type: "subscribe", id, ...sub.params };
    if (sub.lastT !== null) msg.since = sub.lastT * 1000;
    this.send(msg);
  }

  unsubscribe(id) {
    if (this.subs.delete(String(id))) this.send({ type: "unsubscribe", id: String(id) });
  }

  dispatch(msg) {
    const type = msg.type;
    this.received[type] = (this.received[type] || 0) + 1;
    const byId = msg.id !== undefined && msg.id !== null ? this.subs.get(String(msg.id)) : null;
    // Snapshots answer one subscription (by id) and name its key; deltas, per-key stale/live
    // are sent once per key and go to every subscription on that key.
    let targets = byId ? [byId] : [];
    if (!byId && msg.key !== undefined) targets = [...this.subs.values()].filter((s) => s.key === msg.key);
    if (type === "snapshot" || type === "resume" || type === "delta") {
      if (byId && msg.key !== undefined) byId.key = msg.key;
      const points = pointsOf(msg);
      for (const sub of targets) {
        for (const p of points) if (sub.lastT === null || p.t > sub.lastT) sub.lastT = p.t;
        sub.handlers.onData?.(type, points, msg);
      }
    } else if (type === "error") {
      if (byId) byId.handlers.onError?.(msg);
      else this.emit("error", msg);
    } else if (type === "stale" || type === "live") {
      for (const sub of targets) sub.handlers.onStale?.(type === "stale" ? msg.lag_ms ?? 0 : null);
      this.emit(type, msg);
    } else {
      this.emit(type, msg); // alert, pong, …
    }
  }
}
