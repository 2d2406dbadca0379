// A public dashboard link (/s/{token}): the dashboard's charts as saved, read-only, no login.
// The link in the address is the only credential. The page reads the link's own endpoints once,
// then stays live over /ws/subscribe?token=<link> (push.js): the socket may subscribe only to
// its charts (`chart_id`; the server computes their keys). One-second charts merge the pushed
// seconds point by point; longer ones re-read the link's data when a delta says they changed
// (at most every TAIL_GAP_S). Without a socket the page polls every POLL_S (each read counts
// against the link's rate limit). Drawn like the dashboard page: units (format.js), the range
// header, the open bucket (charts.js), times in the user's zone (time.js). See docs/ui.md.
import { funnelOption, heatmapOption, replaceOption, rowObjects, SeriesStore, summarize, timeSeriesOption, topOption } from "./charts.js";
import { isRate, normalizeUnit, rateBasis, unitName } from "./format.js";
import { PushClient } from "./push.js";
import { clock, onTimeZoneChange, spanWords, zoneLabel } from "./time.js";
import { el } from "./ui.js";

const POLL_S = 15;
const TAIL_GAP_S = 10; // one read is every chart of the dashboard, against the link's rate limit
const LIVE_EXACT_MAX_S = 600; // as the dashboard page: ≤ 10 min of 1 s buckets are merged point by point
const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };
const GRAN_WORDS = { 1: "second", 60: "minute", 3600: "hour", 86400: "day" };
const token = location.pathname.split("/")[2];
const id = Number(document.body.dataset.dashboardId);
const base = `/s/${encodeURIComponent(token)}/dashboards/${id}`;
const nowS = () => Math.floor(Date.now() / 1000);

async function read(path) {
  const res = await fetch(path, { credentials: "omit" });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(body?.error?.message || `HTTP ${res.status}`), { status: res.status });
  return body;
}

/** One shared chart: its card, its last answer, and (1 s charts) the series merged live. */
class SharedChartView {
  constructor(chart) {
    this.chart = chart;
    this.unit = normalizeUnit(chart.unit);
    this.spanS = Number(chart.default_range.slice(0, -1)) * UNIT_S[chart.default_range.slice(-1)];
    this.box = el("div", { class: "chart-box", role: "img", "aria-label": chart.title });
    this.error = el("p", { class: "error", role: "alert" });
    this.status = el("span", { class: "chart-status muted", role: "status" });
    const title = el("h2", { id: `chart-${chart.id}-title`, text: chart.title || `Chart ${chart.id}` });
    this.card = el(
      "article",
      { class: "card chart-card", "data-chart-id": chart.id, "data-chart-kind": chart.kind, "aria-labelledby": `chart-${chart.id}-title` },
      el("header", { class: "chart-head" }, title, this.status),
      this.error,
      this.box,
    );
    this.answer = null;
    this.store = null;
    this.frame = null;
  }

  mount(grid) {
    grid.append(this.card);
    this.ec = echarts.init(this.box, null, { renderer: "canvas" });
    new ResizeObserver(() => this.ec.resize()).observe(this.box);
  }

  get stepS() {
    return this.answer?.meta?.granularity_s || 60;
  }
  /** A series of 1 s buckets over ≤ 10 minutes, uncompared: the pushed seconds ARE its points. */
  get liveExact() {
    const columns = this.answer?.columns || [];
    return this.chart.kind === "series" && this.stepS === 1 && this.spanS <= LIVE_EXACT_MAX_S && !columns.includes("series");
  }
  /** Counts and sums per bucket are rates; averages, quantiles and ratios are not. */
  get isRate() {
    const gaps = this.answer?.meta?.gap_outputs || [];
    return isRate(this.unit) && !(this.store?.outputs || []).some((o) => gaps.includes(o));
  }
  /** The bucket still filling: the current one (1 s buckets: the second before it too). */
  openFrom(stepS = this.stepS) {
    const now = nowS();
    return Math.floor(now / stepS) * stepS - (stepS === 1 ? 1 : 0);
  }

  /** The header, as on the dashboard page: "Last 5 minutes · per second · by country". */
  describe() {
    const kind = this.chart.kind;
    const parts = [spanWords(this.spanS)];
    const byTime = kind === "series" || (kind === "heatmap" && this.chart.axes !== "weekday_hour");
    if (byTime) parts.push(this.isRate ? rateBasis(this.stepS) : `each ${GRAN_WORDS[this.stepS] || `${this.stepS} s`}`);
    if (kind === "heatmap" && this.chart.axes === "weekday_hour") parts.push(`by weekday and hour, ${zoneLabel()}`);
    const dim = kind === "heatmap" ? (this.chart.axes !== "weekday_hour" ? this.chart.axes : null) : this.chart.dimension;
    if (dim && kind !== "funnel") parts.push(`by ${dim}`);
    if (this.answer?.meta?.stale) parts.push(`cached, ${Math.round(this.answer.meta.age_s || 0)} s old`);
    const text = parts.join(" · ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  axisName() {
    return [unitName(this.unit), this.isRate ? rateBasis(this.stepS) : ""].filter(Boolean).join(" ");
  }

  /** A REST answer of /data: draws from scratch. */
  setAnswer(data) {
    if (data.error) {
      this.error.textContent = data.error.message;
      return;
    }
    this.error.textContent = "";
    this.answer = data;
    if (this.chart.kind === "series") {
      this.store = new SeriesStore({ dims: this.chart.dimension ? [this.chart.dimension] : [], stepS: this.stepS });
      this.store.upsert(rowObjects(data.columns, data.rows));
      if (this.liveExact && this.store.lastT() !== null) this.store.fill(nowS() - this.spanS + 1, nowS() + 1);
    }
    this.draw();
  }

  draw() {
    if (!this.answer) return;
    const { chart, unit } = this;
    const { columns, rows } = this.answer;
    const stepS = this.stepS;
    let option;
    if (chart.kind === "funnel") option = funnelOption(columns, rows, { title: chart.title, mainLabel: "all" });
    else if (chart.kind === "heatmap") {
      const byTime = chart.axes !== "weekday_hour";
      option = heatmapOption(columns, rows, { title: chart.title, dimension: chart.axes, unit, stepS, openFrom: byTime ? this.openFrom(stepS) : null });
    } else if (chart.kind === "top") option = topOption(columns, rows, { title: chart.title, dimension: chart.dimension, unit });
    else {
      const type = chart.chart_type === "bar" ? "bar" : "line";
      const end = this.liveExact ? nowS() + 1 : this.answer.meta?.time_to;
      const start = this.liveExact ? end - this.spanS : this.answer.meta?.time_from;
      option = timeSeriesOption(this.store, { type, title: chart.title, from: start, to: end, stepS, unit, axisName: this.axisName(), openFrom: this.openFrom(), width: this.box.clientWidth });
      if (this.liveExact) option.animation = false; // a point a second: gliding costs frames
    }
    replaceOption(this.ec, option);
    this.status.textContent = this.describe();
    this.label(option);
  }

  /** The chart's text alternative: title, header and its numbers (live: at most every 2 s). */
  label(option, { throttle = false } = {}) {
    if (throttle && Date.now() - (this.labelledAt || 0) < 2000) return;
    this.labelledAt = Date.now();
    this.box.setAttribute("aria-label", summarize(option, { title: this.chart.title, context: this.describe().replaceAll(" · ", ", "), unit: this.unit }));
  }

  /** Pushed seconds of a 1 s chart: merged, the window slid, drawn once per animation frame. */
  merge(points) {
    if (!this.store || !points.length) return;
    this.store.upsert(points);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.slide();
    });
  }

  slide() {
    const end = nowS() + 1;
    const start = end - this.spanS;
    if (this.store.lastT() !== null) this.store.fill(start, end);
    this.store.trim(start);
    const type = this.chart.chart_type === "bar" ? "bar" : "line";
    const series = this.store.seriesOptions(type, { openFrom: this.openFrom() });
    this.ec.setOption({ xAxis: { min: start * 1000, max: end * 1000 }, series }, { replaceMerge: ["series"] });
    this.label({ series }, { throttle: true });
  }
}

class SharedPage {
  constructor(dashboard) {
    this.dashboard = dashboard;
    this.views = dashboard.charts.map((chart) => new SharedChartView(chart));
    this.byId = new Map(this.views.map((v) => [v.chart.id, v]));
    this.updatedAt = null;
    this.mode = "connecting"; // live | polling | connecting | unavailable
    this.lastRead = 0;
    this.tailTimer = null;
  }

  async start() {
    const grid = document.getElementById("grid");
    for (const v of this.views) v.mount(grid);
    // The editors' layout (x, y, w, h on the dashboard's 12-column grid), as the dashboard shows it.
    const placed = this.views.filter((v) => v.chart.layout);
    if (placed.length) {
      grid.classList.add("grid-placed");
      for (const v of placed) {
        const { x, y, w, h } = v.chart.layout;
        v.card.style.setProperty("--grid-column", `${x + 1} / span ${w}`);
        v.card.style.setProperty("--grid-row", `${y + 1} / span ${h}`);
      }
    }
    await this.refresh();
    this.connect();
    // Polling only while the socket is not open (it failed, or the server has no push tier).
    setInterval(() => {
      if (!this.dead && !this.push?.isOpen && Date.now() - this.lastRead >= POLL_S * 1000) this.refresh();
    }, 1000);
    // 1 s charts slide every second even when no delta came (an empty second is 0).
    setInterval(() => {
      if (this.push?.isOpen) for (const v of this.views) if (v.liveExact && v.store) v.slide();
    }, 1000);
    document.addEventListener("theme", () => this.views.forEach((v) => v.draw()));
    onTimeZoneChange(() => {
      this.views.forEach((v) => v.draw());
      this.stamp();
    });
  }

  /** Every chart of the link again (one request for the whole dashboard). */
  async refresh() {
    this.lastRead = Date.now();
    try {
      const answer = await read(`${base}/data`);
      for (const c of answer.charts) this.byId.get(c.chart_id)?.setAnswer(c);
      document.getElementById("dash-error").textContent = "";
      this.touch();
    } catch (err) {
      // A re-read refused for a moment (the org's concurrent-query quota, the link's rate
      // limit) keeps what is drawn: the stamp's time says how fresh it is, the next change or
      // poll reads again. Only a first read's failure or a dead link is shown.
      if (err.status !== 404 && this.updatedAt !== null) return console.warn("shared: re-read failed", err);
      document.getElementById("dash-error").textContent = err.status === 404 ? "This link is no longer valid." : err.message;
      if (err.status === 404) {
        // Revoked or expired: stop asking (each unknown link counts against this address).
        this.dead = true;
        this.push?.close();
        this.setMode("unavailable");
      }
    }
  }

  connect() {
    if (!this.views.some((v) => v.chart.live)) return this.setMode("polling");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.push = new PushClient({
      url: `${proto}//${location.host}/ws/subscribe?token=${encodeURIComponent(token)}`,
      onStatus: (status) => {
        if (this.dead) return;
        this.setMode(status === "live" ? "live" : "polling");
        // Refused or given up: one read says whether the link itself is dead (and shows it).
        if (status === "unavailable") this.refresh();
      },
    });
    for (const v of this.views) {
      if (!v.chart.live) continue;
      const range_s = v.liveExact ? v.spanS : 60;
      this.push.subscribe(`chart-${v.chart.id}`, { chart_id: v.chart.id, range_s }, {
        onData: (type, points) => this.onLive(v, type, points),
        onError: (msg) => (v.status.textContent = `${v.describe()} · live: ${msg.message || msg.code}`),
      });
    }
    this.push.connect();
  }

  onLive(view, type, points) {
    this.touch();
    if (view.liveExact) return view.merge(points);
    if (type !== "snapshot" && points.length) this.scheduleTail();
  }

  /** A longer chart's newest bucket changed: re-read the link's data, at most every TAIL_GAP_S. */
  scheduleTail() {
    if (this.tailTimer) return;
    const wait = Math.max(0, this.lastRead + TAIL_GAP_S * 1000 - Date.now());
    this.tailTimer = setTimeout(() => {
      this.tailTimer = null;
      this.refresh();
    }, wait);
  }

  setMode(mode) {
    this.mode = mode;
    document.body.dataset.live = mode;
    this.stamp();
  }

  touch() {
    this.updatedAt = Date.now();
    this.stamp();
  }

  /** "Live · updated 14:05:09 Europe/Berlin": the user's zone (or UTC), never the locale's format. */
  stamp() {
    const node = document.getElementById("updated-at");
    const what = { live: "Live", polling: `Refreshed every ${POLL_S} s`, connecting: "Connecting…", unavailable: "Not live" }[this.mode];
    const when = this.updatedAt ? ` · updated ${clock(this.updatedAt, true)} ${zoneLabel()}` : "";
    node.textContent = `${what}${when}`;
    node.dataset.state = this.mode;
  }
}

async function main() {
  const section = document.getElementById("dashboard");
  if (!section) return; // the link is dead: the page says so
  const dashboard = await read(base);
  section.hidden = false;
  document.getElementById("dash-title").textContent = dashboard.name;
  document.getElementById("dash-description").textContent = dashboard.description;
  document.title = `${dashboard.name} · ClickPulse`;
  const page = new SharedPage(dashboard);
  window.clickpulse = Object.assign(window.clickpulse || {}, { shared: page });
  await page.start();
}

main()
  .catch((err) => {
    const e = document.getElementById("dash-error");
    if (e) e.textContent = err.status === 404 ? "This link is no longer valid." : err.message;
  })
  .finally(() => (document.body.dataset.ready = "1"));
