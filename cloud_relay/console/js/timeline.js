// The session timeline canvas: audio received live or backfilled, privacy pauses, declared
// gaps, cue markers, the playhead and the hover time. Geometry is pure (timelineGeom);
// drawing reads the theme's colours from CSS.

import { cssVar, fmtDur } from "./dom.js";

const PAD_PX = 8;
const TICK_STEPS_S = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800];
const RUN_JOIN_S = 0.25; // chunks closer than this draw as one run

/** Seconds <-> pixels for a canvas `width` px wide showing session `s` (or nothing yet). */
export function timelineGeom(width, s) {
  const span = Math.max(30, s ? s.durationS * 1.03 : 30, ...(s ? s.events.map((e) => e.t_s * 1.03) : []));
  return {
    w: width, span,
    x: (t) => PAD_PX + (t / span) * (width - 2 * PAD_PX),
    t: (x) => ((x - PAD_PX) / (width - 2 * PAD_PX)) * span,
  };
}

/** Seconds between ticks: at most 12 ticks across the span. */
export const tickStep = (span) => TICK_STEPS_S.find((v) => span / v <= 12) || 3600;

/** Privacy pauses as [from_s, to_s]; one still open ends at `openEndS`. */
export function pauseBands(events, openEndS) {
  let pauseAt = null;
  const bands = [];
  for (const e of events) {
    if (e.kind === "privacy_pause") pauseAt = e.t_s;
    if (e.kind === "privacy_resume" && pauseAt !== null) { bands.push([pauseAt, e.t_s]); pauseAt = null; }
  }
  if (pauseAt !== null) bands.push([pauseAt, Math.max(pauseAt, openEndS)]);
  return bands;
}

/**
 * Draw. `view`: {session, cueOpen(cueId) -> bool, player, hoverT (s or null), nowUs}.
 */
export function drawTimeline(c, { session: s, cueOpen, player: p, hoverT, nowUs }) {
  const dpr = window.devicePixelRatio || 1;
  const W = c.clientWidth;
  const H = c.clientHeight;
  if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
    c.width = Math.round(W * dpr);
    c.height = Math.round(H * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.fillStyle = cssVar("--panel");
  g.fillRect(0, 0, W, H);
  const geo = timelineGeom(W, s);
  const top = 22;
  const bot = H - 14;
  g.fillStyle = cssVar("--panel-2");
  g.fillRect(geo.x(0), top, geo.x(geo.span) - geo.x(0), bot - top);
  // ticks
  g.fillStyle = cssVar("--muted");
  g.font = "11px ui-monospace, monospace";
  const step = tickStep(geo.span);
  g.strokeStyle = cssVar("--line");
  for (let t = 0; t <= geo.span; t += step) {
    const x = Math.round(geo.x(t)) + 0.5;
    g.beginPath(); g.moveTo(x, top - 4); g.lineTo(x, bot); g.stroke();
    if (x + 34 < W) g.fillText(fmtDur(t), x + 3, 12);
  }
  if (!s) return;
  // received audio: live and backfilled runs
  const colors = { live: cssVar("--audio"), archive: cssVar("--backfill"), backfill: cssVar("--backfill") };
  let run = null;
  const flush = () => {
    if (!run) return;
    g.fillStyle = colors[run.via] || colors.live;
    g.fillRect(geo.x(run.t0), top + 8, Math.max(1, geo.x(run.t1) - geo.x(run.t0)), bot - top - 16);
    run = null;
  };
  for (let q = 0; q <= s.maxSeq; q++) {
    const ch = s.chunks.get(q);
    if (!ch) { flush(); continue; }
    const t0 = (ch.captureUs - s.startedUs) / 1e6;
    const t1 = t0 + ch.n / s.sampleRate;
    if (run && run.via === ch.via && t0 - run.t1 < RUN_JOIN_S) run.t1 = t1;
    else { flush(); run = { via: ch.via, t0, t1 }; }
  }
  flush();
  // privacy pauses
  g.fillStyle = cssVar("--paused");
  g.globalAlpha = 0.45;
  const openEnd = s.close ? s.durationS : (nowUs - s.startedUs) / 1e6;
  for (const [a, b] of pauseBands(s.events, openEnd)) g.fillRect(geo.x(a), top, Math.max(2, geo.x(b) - geo.x(a)), bot - top);
  g.globalAlpha = 1;
  // gaps
  g.fillStyle = cssVar("--danger");
  for (const gp of s.gaps) {
    const a = s.timeOfSeq(gp.first_seq);
    const b = s.timeOfSeq(gp.last_seq) + s.chunkMs / 1000;
    g.globalAlpha = 0.7;
    g.fillRect(geo.x(a), top + 4, Math.max(2, geo.x(b) - geo.x(a)), bot - top - 8);
  }
  g.globalAlpha = 1;
  // cues
  for (const e of s.events) {
    if (e.kind !== "cue") continue;
    const x = Math.round(geo.x(e.t_s)) + 0.5;
    g.strokeStyle = g.fillStyle = cueOpen(e.cue_id) ? cssVar("--cue") : cssVar("--muted");
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
    g.beginPath(); g.moveTo(x, top - 2); g.lineTo(x + 9, top + 3); g.lineTo(x, top + 8); g.fill();
    g.lineWidth = 1;
  }
  // playhead
  if (p.session === s && p.mode !== "stopped") {
    const x = Math.round(geo.x(p.positionS)) + 0.5;
    g.strokeStyle = g.fillStyle = cssVar("--accent");
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(x, top - 6); g.lineTo(x, H - 4); g.stroke();
    g.beginPath(); g.arc(x, top - 6, 4, 0, 2 * Math.PI); g.fill();
    g.lineWidth = 1;
  }
  if (hoverT !== null && hoverT !== undefined) {
    const x = Math.round(geo.x(hoverT)) + 0.5;
    g.strokeStyle = cssVar("--faint");
    g.setLineDash([3, 3]);
    g.beginPath(); g.moveTo(x, top); g.lineTo(x, bot); g.stroke();
    g.setLineDash([]);
    g.fillStyle = cssVar("--text");
    g.fillText(fmtDur(hoverT), Math.min(x + 4, W - 40), H - 2);
  }
}
