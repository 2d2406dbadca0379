// The dashboard's grid and its editor (docs/ui.md, "Editing a dashboard"). The charts sit on
// a 12-column gridstack grid (npm, served from web/node_modules) at their saved layout; an
// editor or admin switches to Edit mode to move, resize, add, remove, rename and retype them,
// then saves the whole dashboard with its version (a 409 says who changed it meanwhile).
// On a phone the grid is one column in reading order, and panels are not dragged.
import { api, ApiError, get } from "./api.js";
import { currentUser, el } from "./ui.js";

export const COLUMNS = 12;
const CELL_PX = 70; // one grid row
const PHONE_PX = 700; // a grid narrower than this is one column (app.css' phone width)
const PER_ROW = 3; // the default layout: three charts a row, in reading order
export const CHART_TYPES = ["line", "bar", "heatmap", "funnel", "stat"];
const TYPE_NAMES = { line: "Line", bar: "Bar", heatmap: "Heatmap", funnel: "Funnel", stat: "Stat" };
// What a chart is saved with besides its layout (ChartIn in app/api/schemas.py).
const CHART_FIELDS = ["chart_type", "title", "metric_id", "metric_inline", "granularity", "default_range", "dimension", "comparison", "options"];

const defaultHeight = (type) => (type === "stat" ? 3 : 5);

function loadOnce(tag, attrs) {
  return new Promise((resolve, reject) => {
    const node = el(tag, attrs);
    node.addEventListener("load", resolve);
    node.addEventListener("error", () => reject(new Error(`could not load ${attrs.src || attrs.href}`)));
    document.head.append(node);
  });
}

let loading = null;
/** gridstack's script and style, and the grid's own style: loaded once, on the dashboard page. */
export function loadGridstack() {
  const v = new URL(import.meta.url).search;
  loading ||= Promise.all([
    loadOnce("script", { src: "/static/vendor/gridstack/gridstack-all.js" }),
    loadOnce("link", { rel: "stylesheet", href: "/static/vendor/gridstack/gridstack.min.css" }).then(() =>
      loadOnce("link", { rel: "stylesheet", href: `/static/app/css/grid.css${v}` }),
    ),
  ]);
  return loading;
}

/**
 * Every chart's box on the grid: its saved layout, or — for charts saved before the grid —
 * the next place in reading order (three a row) below the charts that have one.
 */
export function layoutsFor(charts) {
  let y = Math.max(0, ...charts.filter((c) => c.layout).map((c) => c.layout.y + c.layout.h));
  let column = 0;
  let rowHeight = 0;
  return charts.map((chart) => {
    if (chart.layout) return { ...chart.layout };
    const w = COLUMNS / PER_ROW;
    const h = defaultHeight(chart.chart_type);
    if (column + w > COLUMNS) {
      y += rowHeight;
      column = 0;
      rowHeight = 0;
    }
    const box = { x: column, y, w, h };
    column += w;
    rowHeight = Math.max(rowHeight, h);
    return box;
  });
}

/** "just now", "2 min ago", "3 h ago", "5 days ago". */
export function ago(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.max(1, Math.round(s / 60))} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  const days = Math.round(s / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

/** "Changed by alice@example.com 2 min ago" from a version_conflict error's `where`. */
export function conflictText(where) {
  const who = where?.updated_by ? where.updated_by.name || where.updated_by.email : "someone";
  const email = where?.updated_by?.name && where.updated_by.email ? ` (${where.updated_by.email})` : "";
  const when = where?.updated_at ? ` ${ago(where.updated_at)}` : "";
  return `Changed by ${who}${email}${when}.`;
}

/** A dashboard's grid; `editor` (an editor or admin) also gets Edit, Duplicate and Delete. */
export class DashboardGrid {
  constructor(dash) {
    this.dash = dash;
    this.node = document.getElementById("grid");
    this.entries = []; // { item, card, chart (as saved, or new), edit: {title, chart_type}, view }
    this.editing = false;
    this.metrics = null;
  }

  async mount() {
    await loadGridstack();
    const charts = this.dash.dashboard.charts;
    const boxes = layoutsFor(charts);
    // What is not a panel (the "No charts yet" note) goes above the grid.
    this.notes = [...this.node.children].filter((node) => !node.classList.contains("chart-card"));
    this.node.before(...this.notes);
    this.node.classList.add("grid-stack");
    this.dash.views.forEach((view, i) => {
      const item = this.item(boxes[i], view.card);
      this.entries.push({ item, card: view.card, chart: view.chart, view, edit: { title: view.chart.title, chart_type: view.chart.chart_type } });
    });
    this.grid = GridStack.init(
      {
        column: COLUMNS,
        cellHeight: CELL_PX,
        margin: 6,
        float: false,
        animate: false,
        staticGrid: true,
        columnOpts: { breakpoints: [{ w: PHONE_PX, c: 1 }], layout: "list" },
        draggable: { handle: ".chart-edit" },
        resizable: { handles: "se" },
        alwaysShowResizeHandle: true, // in edit mode every corner shows it can be dragged
      },
      this.node,
    );
    // ECharts draws at its box's size: redraw once a resize ends (and while it goes on).
    const redraw = (_e, item) => this.entries.find((x) => x.item === item)?.view?.ec?.resize();
    this.grid.on("resize", redraw);
    this.grid.on("resizestop", redraw);
    this.grid.on("change", () => this.markDirty());
  }

  item(box, card) {
    const item = el("div", { class: "grid-stack-item", "gs-x": box.x, "gs-y": box.y, "gs-w": box.w, "gs-h": box.h }, el("div", { class: "grid-stack-item-content" }));
    item.firstChild.append(card);
    this.node.append(item);
    return item;
  }

  get phone() {
    return this.grid.getColumn() !== COLUMNS;
  }

  /** Edit, Duplicate and Delete beside the title, for editors and admins only. */
  mountTools(head) {
    const name = this.dash.dashboard.name;
    this.tools = el(
      "span",
      { class: "dash-tools" },
      el("button", { type: "button", id: "edit-dashboard", text: "Edit", onclick: () => this.enter() }),
      el("button", { type: "button", id: "duplicate-dashboard", text: "Duplicate", "aria-label": `Duplicate the dashboard ${name}`, onclick: () => this.duplicate() }),
      el("button", { type: "button", id: "delete-dashboard", class: "danger", text: "Delete", "aria-label": `Delete the dashboard ${name}`, onclick: () => this.remove() }),
    );
    head.append(this.tools);
    this.bar = el("div", { id: "edit-bar", class: "edit-bar card", hidden: true, role: "region", "aria-label": "Editing the dashboard" });
    document.getElementById("controls").before(this.bar);
  }

  // -- edit mode -----------------------------------------------------------------------------

  enter() {
    if (this.editing) return;
    this.editing = true;
    this.dirty = false;
    document.body.classList.add("editing");
    this.tools.hidden = true;
    for (const entry of this.entries) this.decorate(entry);
    // A phone is one column: panels keep their place (no drag), the rest can be edited.
    this.grid.setStatic(this.phone);
    this.renderBar();
    this.bar.querySelector("#edit-save").focus();
  }

  markDirty() {
    if (!this.editing) return;
    this.dirty = true;
    const status = this.bar.querySelector("#edit-status");
    if (status && !status.dataset.conflict) status.textContent = "Unsaved changes.";
  }

  renderBar() {
    this.addForm = null;
    this.bar.hidden = false;
    this.bar.replaceChildren(
      el("strong", { text: "Editing" }),
      el("span", { class: "muted", text: this.phone ? "Rename, retype or remove panels; move and resize them on a wider screen." : "Drag a panel's top strip to move it, its lower-right corner to resize it." }),
      el("span", { class: "edit-actions" }, el("button", { type: "button", id: "edit-add", text: "Add panel", onclick: () => this.showAdd() }), el("button", { type: "button", id: "edit-cancel", text: "Cancel", onclick: () => this.cancel() }), el("button", { type: "button", id: "edit-save", class: "primary", text: "Save", onclick: () => this.save() })),
      el("p", { id: "edit-status", class: "edit-status", role: "status" }),
    );
  }

  /** The edit strip of one panel: a drag grip, its title, its type and Remove. */
  decorate(entry) {
    const label = entry.edit.title || `chart ${entry.chart.id ?? "(new)"}`;
    const title = el("input", { class: "edit-title", value: entry.edit.title, maxlength: 200, placeholder: "Title", "aria-label": `Title of ${label}` });
    title.addEventListener("input", () => {
      entry.edit.title = title.value;
      this.markDirty();
    });
    const type = el("select", { class: "edit-type", "aria-label": `Chart type of ${label}` }, ...CHART_TYPES.map((t) => el("option", { value: t, selected: t === entry.edit.chart_type, text: TYPE_NAMES[t] })));
    type.addEventListener("change", () => {
      entry.edit.chart_type = type.value;
      entry.card.dataset.editType = type.value;
      this.markDirty();
    });
    const remove = el("button", { type: "button", class: "edit-remove", text: "Remove", "aria-label": `Remove ${label}`, onclick: () => this.removePanel(entry) });
    // The grip: dragged with the mouse like the whole strip, and — focused — arrow keys move
    // the panel a cell, Shift+arrows resize it (a span, not a button: gridstack does not start
    // a drag on buttons).
    const grip = el("span", { class: "grip", role: "button", tabindex: "0", text: "⠿", "aria-label": `Move ${label}: arrow keys move it, Shift+arrow keys resize it`, onkeydown: (e) => this.nudge(entry, e) });
    entry.strip = el("div", { class: "chart-edit", title: this.phone ? "" : "Drag to move" }, grip, title, type, remove);
    entry.card.prepend(entry.strip);
  }

  /** Arrow keys on a panel's grip: move it one cell; with Shift, grow or shrink it. */
  nudge(entry, e) {
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const step = steps[e.key];
    const node = entry.item.gridstackNode;
    if (!step || !node || this.phone) return;
    e.preventDefault();
    const [dx, dy] = step;
    const change = e.shiftKey ? { w: Math.max(1, node.w + dx), h: Math.max(1, node.h + dy) } : { x: Math.max(0, node.x + dx), y: Math.max(0, node.y + dy) };
    this.grid.update(entry.item, change);
    entry.view?.ec?.resize();
    this.markDirty();
    const n = entry.item.gridstackNode;
    this.bar.querySelector("#edit-status").textContent = `${entry.edit.title || "Panel"}: column ${n.x + 1}, row ${n.y + 1}, ${n.w} wide, ${n.h} high.`;
  }

  removePanel(entry) {
    entry.removed = true;
    entry.view?.dispose();
    this.grid.removeWidget(entry.item, true);
    this.markDirty();
    this.bar.querySelector("#edit-add").focus();
  }

  async showAdd() {
    if (this.addForm) return this.addForm.querySelector("select").focus();
    const status = this.bar.querySelector("#edit-status");
    try {
      this.metrics ||= await get("/metrics");
    } catch (err) {
      status.textContent = `Saved metrics: ${err.message}`;
      return;
    }
    if (!this.metrics.length) {
      status.replaceChildren("No saved metrics yet: save one in the ", el("a", { href: `/builder?dashboard=${this.dash.id}`, text: "query builder" }), " first.");
      return;
    }
    const metric = el("select", { id: "add-metric" }, ...this.metrics.map((m) => el("option", { value: m.id, text: m.name })));
    const type = el("select", { id: "add-chart-type" }, ...CHART_TYPES.map((t) => el("option", { value: t, text: TYPE_NAMES[t] })));
    const title = el("input", { id: "add-title", maxlength: 200, placeholder: "Title (the metric's name)" });
    this.addForm = el(
      "form",
      { id: "add-panel", class: "add-panel", "aria-label": "Add a panel" },
      el("label", { for: "add-metric", text: "Metric" }),
      metric,
      el("label", { for: "add-chart-type", text: "as" }),
      type,
      el("label", { for: "add-title", text: "Title" }),
      title,
      el("button", { type: "submit", text: "Add" }),
    );
    this.addForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const chosen = this.metrics.find((m) => String(m.id) === metric.value);
      this.addPanel(chosen, type.value, title.value.trim() || chosen.name);
      this.addForm.remove();
      this.addForm = null;
    });
    status.before(this.addForm);
    metric.focus();
  }

  /** A new panel (drawn once saved): placed in the first free spot, three a row wide. */
  addPanel(metric, chartType, title) {
    const chart = { chart_type: chartType, title, metric_id: metric.id, default_range: "1h", options: chartType === "heatmap" ? { axes: "weekday_hour" } : {} };
    const card = el("article", { class: "card chart-card new-panel", "data-chart-type": chartType }, el("p", { class: "muted", text: `${metric.name}: drawn once the dashboard is saved.` }));
    const item = el("div", { class: "grid-stack-item" }, el("div", { class: "grid-stack-item-content" }, card));
    const entry = { item, card, chart, view: null, edit: { title, chart_type: chartType }, isNew: true };
    this.entries.push(entry);
    for (const note of this.notes.splice(0)) note.remove();
    this.decorate(entry);
    this.node.append(item);
    this.grid.makeWidget(item, { w: COLUMNS / PER_ROW, h: defaultHeight(chartType), autoPosition: true });
    this.markDirty();
    entry.strip.querySelector(".edit-title").focus();
  }

  /** The dashboard as it would be saved: every remaining panel with its edits and its box. */
  body(version) {
    const live = this.entries.filter((e) => !e.removed);
    const charts = live.map((entry) => {
      const chart = {};
      for (const field of CHART_FIELDS) if (entry.chart[field] !== undefined) chart[field] = entry.chart[field];
      chart.title = entry.edit.title.trim();
      chart.chart_type = entry.edit.chart_type;
      const node = entry.item.gridstackNode;
      // One column (a phone) is a view of the layout, not a layout: keep the saved boxes.
      if (!this.phone && node) chart.layout = { x: node.x, y: node.y, w: node.w, h: node.h };
      else if (entry.chart.layout) chart.layout = entry.chart.layout;
      return chart;
    });
    charts.sort((a, b) => (a.layout && b.layout ? a.layout.y - b.layout.y || a.layout.x - b.layout.x : 0));
    const d = this.dash.dashboard;
    return { name: d.name, description: d.description, charts, version };
  }

  async save(version = this.dash.dashboard.version) {
    const status = this.bar.querySelector("#edit-status");
    delete status.dataset.conflict;
    status.textContent = "Saving…";
    try {
      await api("PUT", `/dashboards/${this.dash.id}`, this.body(version));
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.code === "version_conflict") return this.showConflict(err, () => this.save(err.where.current_version));
      status.textContent = `Not saved: ${err.message}`;
      return;
    }
    this.dirty = false;
    status.textContent = "Saved.";
    location.reload(); // draws the new panels and types with the saved chart ids
  }

  /** "Changed by alice@… 2 min ago — Reload / Overwrite". */
  showConflict(err, overwrite) {
    const status = this.bar.querySelector("#edit-status");
    status.dataset.conflict = "1";
    status.replaceChildren(
      el("span", { class: "conflict-text", text: `${conflictText(err.where)} ` }),
      el("button", { type: "button", id: "conflict-reload", text: "Reload", title: "Discard your changes and show theirs", onclick: () => location.reload() }),
      " ",
      el("button", { type: "button", id: "conflict-overwrite", class: "danger", text: "Overwrite", title: "Save your version over theirs", onclick: overwrite }),
    );
    status.querySelector("#conflict-reload").focus();
  }

  cancel() {
    if (this.dirty && !confirm("Discard your changes to this dashboard?")) return;
    location.reload(); // the dashboard as saved
  }

  // -- the whole dashboard -------------------------------------------------------------------

  async duplicate() {
    try {
      const copy = await api("POST", `/dashboards/${this.dash.id}/duplicate`);
      location.assign(`/d/${copy.id}`);
    } catch (err) {
      document.getElementById("dash-error").textContent = `Not duplicated: ${err.message}`;
    }
  }

  async remove(version = this.dash.dashboard.version) {
    const d = this.dash.dashboard;
    if (version === d.version && !confirm(`Delete the dashboard “${d.name}” and its ${d.charts.length} charts?`)) return;
    const errorNode = document.getElementById("dash-error");
    try {
      await api("DELETE", `/dashboards/${this.dash.id}?version=${version}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.code === "version_conflict") {
        errorNode.replaceChildren(
          `Not deleted. ${conflictText(err.where)} `,
          el("button", { type: "button", text: "Reload", onclick: () => location.reload() }),
          " ",
          el("button", { type: "button", class: "danger", text: "Delete anyway", onclick: () => this.remove(err.where.current_version) }),
        );
        return;
      }
      errorNode.textContent = `Not deleted: ${err.message}`;
      return;
    }
    location.assign("/");
  }
}

/** The grid for `dash` (its charts already mounted); editing tools for editors and admins. */
export async function mountGrid(dash) {
  const grid = new DashboardGrid(dash);
  await grid.mount();
  try {
    const me = await currentUser();
    if (me.role === "editor" || me.role === "admin") grid.mountTools(document.querySelector(".dash-head"));
  } catch {
    // without /me the dashboard is shown read-only; the API refuses a viewer's edits anyway
  }
  return grid;
}
