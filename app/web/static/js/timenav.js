// Time navigation of a page (the dashboard, the query builder's preview): zoom by drag into a
// fixed range (pushed to history, so Back returns), "Zoom out" / "Reset zoom", and the
// refresh interval of a range that is not live. The page keeps the state and the URL; this
// module asks it for changes through `host` (docs/ui.md, "Time navigation"):
//   host.state            { range, from, to, live, refresh, … } as in the URL
//   host.isLive           true while the page's charts update themselves (no refresh then)
//   host.setState(change, push, historyState)   apply, write the URL, redraw
//   host.restore()        re-read the URL (after history moved), redraw
//   host.reloadAll()         re-fetch the charts (a promise)
import { Refresher, refreshField } from "./refresh.js";
import { dateTime, zoneLabel } from "./time.js";
import { REFRESH, zoomOutRange } from "./timerange.js";
import { el } from "./ui.js";

const nowS = () => Math.floor(Date.now() / 1000);

export class TimeNav {
  constructor(host) {
    this.host = host;
    this.refresher = new Refresher(() => host.reloadAll());
    const field = refreshField((key) => host.setState({ refresh: key }));
    this.refreshNode = field.node;
    this.refreshSelect = field.select;
    this.zoomText = el("span", { class: "zoom-text" });
    this.zoomNote = el("span", { class: "zoom-note" });
    this.resetButton = el("button", { type: "button", id: "zoom-reset", text: "Reset zoom", onclick: () => this.reset() });
    this.bar = el(
      "div",
      { id: "zoom-bar", class: "zoom-bar", hidden: true },
      el("span", { role: "status" }, this.zoomText, this.zoomNote),
      el("button", { type: "button", id: "zoom-out", text: "Zoom out", title: "Twice the span, around its middle", onclick: () => this.zoomOut() }),
      this.resetButton,
    );
  }

  /** Put the refresh control before `refreshBefore` and the zoom bar after `barAfter`. */
  mount({ refreshBefore, refreshInto, barAfter }) {
    if (refreshBefore) refreshBefore.before(this.refreshNode);
    else refreshInto.append(this.refreshNode);
    barAfter.after(this.bar);
  }

  /** What the controls show and the refresh timer do, after every change of the state. */
  sync() {
    const s = this.host.state;
    const live = this.host.isLive;
    this.refreshSelect.value = s.refresh;
    this.refreshSelect.disabled = live;
    this.refreshSelect.title = live ? "Live charts update on their own: pause Live (or pick a fixed range) to refresh on a period" : "Re-fetch the charts on this period";
    this.refresher.set(live ? 0 : REFRESH[s.refresh]);
    const custom = s.range === "custom";
    this.bar.hidden = !custom;
    if (!custom) return;
    const zoom = history.state?.zoomBase !== undefined ? history.state : null;
    this.zoomText.textContent = `${zoom ? "Zoomed to" : "Range"} ${dateTime(s.from * 1000).slice(0, 16)} – ${dateTime(s.to * 1000).slice(0, 16)} (${zoneLabel()})`;
    this.zoomNote.textContent = zoom?.fromLive ? " · Live is off: a zoomed range is fixed in time." : "";
    this.resetButton.hidden = !zoom;
  }

  /** A drag selected [from, to): every chart of the page shows it. */
  zoomTo(from, to) {
    const s = this.host.state;
    const before = history.state?.zoomBase !== undefined ? history.state : { zoomBase: location.search, fromLive: this.host.isLive };
    this.host.setState({ range: "custom", from, to, live: s.range === "custom" ? s.live : false }, true, before);
  }

  zoomOut() {
    const s = this.host.state;
    const zoom = history.state?.zoomBase !== undefined ? history.state : null;
    this.host.setState(zoomOutRange(s.from, s.to, nowS()), true, zoom);
  }

  /** Back to the range before the first zoom (a new history entry, as Grafana does). */
  reset() {
    const base = history.state?.zoomBase;
    if (base === undefined) return;
    history.pushState(null, "", `${location.pathname}${base}`);
    this.host.restore();
  }
}
