// Light or dark: a classic (non-module) script loaded in <head>, so the theme is on <html>
// before the first paint (a module script runs after it: the page would flash light). The CSP
// allows it (script-src 'self': no inline script).
//
// The user's choice — "system" (follow prefers-color-scheme), "light" or "dark" — is kept per
// user in localStorage (`clickpulse.theme:<org>:<user>`; `clickpulse.me` names the signed-in
// user, written by ui.js once GET /me answered). <html data-theme> is always the effective
// theme ("light" | "dark"); app.css defines the colour variables (--bg, --fg, --muted, --grid,
// --accent, --card-bg, …) for both. Whenever the effective theme changes (the toggle, the
// system's setting, another user signing in) a bubbling `theme` event is dispatched on <html>
// (heard on document and window too), detail {theme, choice}: charts re-read the variables.
(function () {
  "use strict";
  const ME = "clickpulse.me";
  const CHOICES = ["system", "light", "dark"];
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const root = document.documentElement;

  function storageKey() {
    let me = null;
    try {
      me = localStorage.getItem(ME);
    } catch {
      me = null;
    }
    return `clickpulse.theme:${me || "anonymous"}`;
  }

  let unstored = null; // the choice when localStorage refuses it (private mode): this page only

  function choice() {
    let value = unstored;
    try {
      value = localStorage.getItem(storageKey());
    } catch {
      value = unstored;
    }
    return CHOICES.includes(value) ? value : "system";
  }

  function effective(which) {
    if (which === "light" || which === "dark") return which;
    return media && media.matches ? "dark" : "light";
  }

  function apply() {
    const which = choice();
    const theme = effective(which);
    const changed = root.dataset.theme !== theme;
    root.dataset.theme = theme;
    root.dataset.themeChoice = which;
    const select = document.getElementById("theme-choice");
    if (select) select.value = which;
    if (changed) root.dispatchEvent(new CustomEvent("theme", { bubbles: true, detail: { theme, choice: which } }));
    return theme;
  }

  function set(which) {
    if (!CHOICES.includes(which)) return apply();
    try {
      if (which === "system") localStorage.removeItem(storageKey());
      else localStorage.setItem(storageKey(), which);
    } catch {
      unstored = which;
    }
    return apply();
  }

  /** Name the signed-in user ("org:user"; null when signed out): their choice applies. */
  function setUser(id) {
    try {
      if (id) localStorage.setItem(ME, id);
      else localStorage.removeItem(ME);
    } catch {
      // no storage: the anonymous choice applies
    }
    return apply();
  }

  window.ClickPulseTheme = { apply, set, setUser, choice, current: () => root.dataset.theme };
  apply();
  if (media) {
    const follow = () => apply();
    if (media.addEventListener) media.addEventListener("change", follow);
    else media.addListener(follow);
  }
  // Another tab changed the choice or the user.
  window.addEventListener("storage", (e) => {
    if (e.key === ME || (e.key && e.key.startsWith("clickpulse.theme:"))) apply();
  });
  document.addEventListener("DOMContentLoaded", () => {
    const select = document.getElementById("theme-choice");
    if (!select) return;
    select.value = choice();
    select.addEventListener("change", () => set(select.value));
  });
})();
