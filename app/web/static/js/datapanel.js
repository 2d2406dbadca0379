// The builder's "Data" panel: the org's events with their counts → an event's properties (and
// the string columns) → a property's top values; clicking a name or value inserts it into the
// metric editor. Below, the org's saved metrics: clicking one loads it. Reads GET /catalog/* and
// GET /metrics; text only (names come from the org's data).
import { get } from "./api.js";
import { PROP_KEY, quoteString } from "./editor.js";
import { el } from "./ui.js";

const count = (n) => Number(n).toLocaleString("en-US");

/** A clickable row: `name` with its count; `onclick` runs on click. */
function item(name, total, { label, onclick, current = false, cls = "" }) {
  return el(
    "li",
    {},
    el(
      "button",
      { type: "button", class: `data-item ${cls}`.trim(), "aria-label": label, "aria-current": current ? "true" : null, onclick },
      el("span", { class: "data-name", text: name }),
      total === null ? null : el("span", { class: "data-count", text: count(total) }),
    ),
  );
}

/** Mark the button of `list` showing `name` as the current one (the others not). */
function markCurrent(list, name) {
  for (const b of list.querySelectorAll("button")) {
    if (b.querySelector(".data-name").textContent === name) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

export class DataPanel {
  /**
   * `root`: the panel element; `insert(text)`: into the editor; `load(metric)`: open a saved
   * metric; `stringColumns`: columns whose top values are listed (GET /catalog/language).
   */
  constructor(root, { insert, load, stringColumns = [], tools = () => null }) {
    this.root = root;
    this.tools = tools; // a saved metric's Duplicate/Delete (savedmetrics.js), null for viewers
    this.insert = insert;
    this.load = load;
    this.stringColumns = stringColumns;
    this.event = null;
    this.field = null; // {column} | {property}
    this.events = root.querySelector("#data-events");
    this.fields = root.querySelector("#data-fields");
    this.values = root.querySelector("#data-values");
    this.metrics = root.querySelector("#data-metrics");
  }

  async start() {
    await Promise.all([this.showEvents(), this.showMetrics()]);
    this.root.dataset.ready = "1";
  }

  async showEvents() {
    const body = await get("/catalog/events").catch(() => ({ rows: [] }));
    this.events.replaceChildren(
      ...body.rows.map(([name, total]) =>
        item(name, total, {
          label: `Event ${name}, ${count(total)} events: show its properties`,
          current: name === this.event,
          onclick: () => this.pickEvent(name),
        }),
      ),
    );
    if (!body.rows.length) this.events.append(el("li", { class: "muted", text: "No events in the last 7 days." }));
  }

  async pickEvent(name) {
    this.event = name;
    this.field = null;
    markCurrent(this.events, name);
    this.root.querySelector("#data-event-name").textContent = name;
    this.root.querySelector("#data-insert-event").hidden = false;
    this.values.replaceChildren();
    this.root.querySelector("#data-values-head").hidden = true;
    const body = await get(`/catalog/properties?${new URLSearchParams({ event: name })}`).catch(() => ({ rows: [] }));
    if (this.event !== name) return;
    this.root.querySelector("#data-fields-head").hidden = false;
    this.fields.replaceChildren(
      ...body.rows.map(([key, total]) =>
        item(`props['${key}']`, total, {
          label: `Property ${key}, on ${count(total)} events: show its top values`,
          onclick: () => this.pickField({ property: key }, `props['${key}']`),
        }),
      ),
      // `event` is the picked event itself: its "top values" would be that one name.
      ...this.stringColumns.filter((c) => c !== "event").map((column) =>
        item(column, null, { label: `Column ${column}: show its top values`, cls: "data-column", onclick: () => this.pickField({ column }, column) }),
      ),
    );
  }

  async pickField(field, shown) {
    this.field = field;
    markCurrent(this.fields, shown);
    const head = this.root.querySelector("#data-values-head");
    head.hidden = false;
    this.root.querySelector("#data-field-name").textContent = shown;
    const insertable = field.column || PROP_KEY.test(field.property);
    const button = this.root.querySelector("#data-insert-field");
    button.hidden = !insertable;
    button.onclick = () => this.insert(shown);
    const params = new URLSearchParams({ ...field, event: this.event });
    const body = await get(`/catalog/values?${params}`).catch(() => ({ rows: [] }));
    if (this.field !== field) return;
    this.values.replaceChildren(
      ...body.rows.map(([value, total]) =>
        item(value, total, {
          label: `Insert ${insertable ? `${shown} = ` : ""}${quoteString(value)} (${count(total)} events)`,
          onclick: () => this.insert(insertable ? `${shown} = ${quoteString(value)}` : quoteString(value)),
        }),
      ),
    );
    if (!body.rows.length) this.values.append(el("li", { class: "muted", text: "No values." }));
  }

  async showMetrics() {
    const metrics = await get("/metrics").catch(() => []);
    this.metrics.replaceChildren(
      ...metrics.map((m) => {
        const row = item(m.name, null, { label: `Open metric ${m.name}`, cls: "data-metric", onclick: () => this.load(m) });
        const tools = this.tools(m);
        if (tools) row.append(tools);
        return row;
      }),
    );
    if (!metrics.length) this.metrics.append(el("li", { class: "muted", text: "No saved metrics yet." }));
  }
}

/** Wire the panel's "insert event" button (the picked event as `event = '…'`). */
export function wireInsertEvent(panel) {
  panel.root.querySelector("#data-insert-event").addEventListener("click", () => {
    if (panel.event !== null) panel.insert(`event = ${quoteString(panel.event)}`);
  });
}
