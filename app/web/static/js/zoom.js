// Drag to zoom on a time chart, as in Grafana: press on the plot, drag sideways (the selection
// is shaded), release → `onZoom(fromS, toS)`. A click without a drag selects nothing and keeps
// its usual meaning (drilldown, tooltip). ECharts' brush component does the drawing: lineX,
// one selection at a time, taken as the chart's default cursor (no toolbox button to press).
import { theme } from "./charts.js";
import { MIN_SPAN_S } from "./timerange.js";

const handlers = new WeakMap(); // ECharts instance → its current onZoom

/** "#0072B2" + alpha → "rgba(0,114,178,alpha)" (the shading is the theme's accent, see-through). */
function tint(hex, alpha) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex.trim());
  if (!m) return `rgba(0,114,178,${alpha})`;
  return `rgba(${parseInt(m[1], 16)},${parseInt(m[2], 16)},${parseInt(m[3], 16)},${alpha})`;
}

/**
 * Arm drag-to-zoom on `ec` (a chart with one time x axis). Call it after every setOption that
 * replaces the whole option (notMerge drops the brush); calling it again is cheap and keeps one
 * listener per chart.
 */
export function armZoom(ec, onZoom) {
  const th = theme();
  ec.setOption({
    brush: {
      xAxisIndex: 0,
      brushType: "lineX",
      brushMode: "single",
      transformable: false,
      removeOnClick: true,
      brushStyle: { color: tint(th.accent, 0.18), borderColor: tint(th.accent, 0.7), borderWidth: 1 },
      // The series keep their colours: the shading alone shows the selection.
      inBrush: {},
      outOfBrush: { colorAlpha: 1 },
    },
  });
  ec.dispatchAction({ type: "takeGlobalCursor", key: "brush", brushOption: { brushType: "lineX", brushMode: "single" } });
  if (!handlers.has(ec)) {
    ec.on("brushEnd", (params) => {
      const range = params.areas?.[0]?.coordRange;
      ec.dispatchAction({ type: "brush", areas: [] }); // the shading goes when the charts reload
      if (!Array.isArray(range) || range.length !== 2) return;
      const from = Math.floor(Math.min(...range) / 1000);
      const to = Math.ceil(Math.max(...range) / 1000);
      if (Number.isFinite(from) && Number.isFinite(to) && to - from >= MIN_SPAN_S) handlers.get(ec)?.(from, to);
    });
  }
  handlers.set(ec, onZoom);
}
