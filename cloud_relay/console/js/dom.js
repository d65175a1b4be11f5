// Page helpers: the h() element builder, lookups, time formatting and the page clock.
// Nothing here keeps state.

export const $ = (id) => document.getElementById(id);

/** h("button", {class: "x", onclick: fn}, "text", child): a DOM element, children flattened. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's style-src
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Seconds as m:ss, or h:mm:ss past the hour. */
export function fmtDur(s) {
  s = Math.max(0, s);
  const m = Math.floor(s / 60);
  const r = Math.floor(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(r).padStart(2, "0")}`
    : `${m}:${String(r).padStart(2, "0")}`;
}

/** A wall-clock time (µs since the epoch) as HH:MM:SS, 24 h. */
export const fmtClock = (us) => new Date(us / 1000).toLocaleTimeString([], {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** A theme colour (a CSS custom property on :root), for the canvas. */
export const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Wall clock with sub-millisecond resolution; the pure modules take it as an argument.
export const nowMs = () => performance.timeOrigin + performance.now();
export const nowUs = () => nowMs() * 1000;
