// An enrolment code's QR, drawn in the page (the code holds its secret: it is never sent
// anywhere to be drawn). Encoding: the vendored uqr (js/vendor/uqr.js), error correction M,
// alphanumeric mode (every character of a code's text is in that set).

import { encode } from "../vendor/uqr.js";

const SVG = "http://www.w3.org/2000/svg";

/** The QR's modules (true = dark), without the quiet zone: {size, rows, version, mask}. */
export function qrMatrix(text, { ecc = "M", version, mask } = {}) {
  const opts = { ecc, border: 0, boostEcc: false };
  if (version !== undefined) Object.assign(opts, { minVersion: version, maxVersion: version });
  if (mask !== undefined) opts.maskPattern = mask;
  const r = encode(text, opts);
  return { size: r.size, rows: r.data.map((row) => row.map(Boolean)), version: r.version, mask: r.maskPattern };
}

/** An <svg> of the QR, `px` pixels a module, with the 4-module quiet zone scanners need. */
export function qrSvg(doc, text, { px = 4, label = "enrolment code QR" } = {}) {
  const { size, rows } = qrMatrix(text);
  const n = size + 8;
  const svg = doc.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${n} ${n}`);
  svg.setAttribute("width", String(n * px));
  svg.setAttribute("height", String(n * px));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const bg = doc.createElementNS(SVG, "rect");
  for (const [k, v] of Object.entries({ x: 0, y: 0, width: n, height: n, fill: "#fff" })) bg.setAttribute(k, String(v));
  svg.append(bg);
  let d = "";
  rows.forEach((row, y) => row.forEach((dark, x) => { if (dark) d += `M${x + 4} ${y + 4}h1v1h-1z`; }));
  const path = doc.createElementNS(SVG, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "#000");
  svg.append(path);
  return svg;
}
