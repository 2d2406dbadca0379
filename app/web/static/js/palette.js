// The default colours: the ONE place they are written. charts.js hands them to ECharts for every
// chart type; tests/web/test_accessibility.py reads these literals and checks them under
// simulated protanopia, deuteranopia and tritanopia (docs/ui.md, "Colours").

// Series (categorical): Okabe–Ito. Every pair of the 8 stays ≥ 10.9 ΔE2000 apart under each
// simulated dichromacy (Machado et al. 2009, severity 1; the test's threshold is 10).
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];

// The "other" bar of a top-N chart: neutral grey, apart from the first series colour.
export const OTHER = "#999999";

// Heatmap ramp, low → high: viridis stops. Lightness increases monotonically, so the order
// survives every colour-vision deficiency and greyscale.
export const SEQUENTIAL = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
