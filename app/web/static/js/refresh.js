// The refresh-interval control of a non-live range: re-fetch the page's charts every period.
// While the tab is hidden nothing is fetched (a hidden dashboard must not spend the org's query
// quota); a period that ended meanwhile fetches once as soon as the tab is visible again.
import { REFRESH, REFRESH_WORDS } from "./timerange.js";
import { el } from "./ui.js";

export class Refresher {
  /** `fire()` re-fetches; its promise is awaited so a slow fetch never overlaps the next. */
  constructor(fire) {
    this.fire = fire;
    this.periodS = 0;
    this.timer = null;
    this.missed = false;
    this.busy = false;
    this.fired = 0; // re-fetches started (tests read it)
    this.skipped = 0; // periods that ended while the tab was hidden (tests read it)
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.missed) {
        this.missed = false;
        this.tick();
      }
    });
  }

  /** Re-fetch every `periodS` seconds from now on; 0 stops. */
  set(periodS) {
    if (periodS === this.periodS) return;
    this.periodS = periodS;
    clearInterval(this.timer);
    this.timer = null;
    this.missed = false;
    if (periodS > 0) this.timer = setInterval(() => this.tick(), periodS * 1000);
  }

  async tick() {
    if (document.visibilityState === "hidden") {
      this.missed = true;
      this.skipped += 1;
      return;
    }
    if (this.busy || !this.periodS) return;
    this.busy = true;
    this.fired += 1;
    try {
      await this.fire();
    } catch {
      // each chart shows its own error; the next period tries again
    } finally {
      this.busy = false;
    }
  }
}

/** The "Refresh" select (id `refresh`); `onChange(key)` gets one of REFRESH's keys. */
export function refreshField(onChange) {
  const select = el("select", { id: "refresh", title: "Re-fetch the charts of a range that is not live" }, ...Object.keys(REFRESH).map((key) => el("option", { value: key, text: REFRESH_WORDS[key] })));
  select.addEventListener("change", () => onChange(select.value));
  return { node: el("span", { class: "field refresh-field" }, el("label", { for: "refresh", text: "Refresh" }), select), select };
}
