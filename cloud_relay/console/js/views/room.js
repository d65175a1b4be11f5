// The scribe's layout and the room pane: the room's head, the transport (play, live, seek,
// level), the timeline canvas and its legend, and the panes for events and sessions.
// `updateLive` refreshes the parts that move every frame.

import { $, fmtClock, fmtDur, h } from "../dom.js";
import { stateText } from "../roomstate.js";

const db = (v) => (v > 0 ? 20 * Math.log10(v) : -90);
const meterPct = (v) => Math.max(0, Math.min(100, ((db(v) + 60) / 60) * 100));

/** The two columns: rooms on the left, the room pane on the right. */
export function renderLayout(view, keyNotice) {
  $("nav").replaceChildren();
  view.replaceChildren(
    h("aside", { class: "rooms", "aria-label": "Your rooms" }, h("div", { class: "pane-title" }, "Your rooms"), h("div", { id: "room-list" }),
      h("div", { class: "spacer" }),
      keyNotice ? h("div", { class: "notice", id: "key-notice" }, keyNotice) : null,
      h("div", { class: "rooms-foot muted" }, "Press ", h("kbd", {}, "?"), " for shortcuts")),
    h("section", { class: "room-view", id: "room-view" }),
  );
}

/**
 * The pane for `room` (or a prompt to choose one). Handlers: onPlay, onLive, onSeekBy(ds),
 * onTimelineClick(event), onTimelineHover(event or null).
 */
export function renderRoomPane(pane, room, on) {
  if (!room) {
    pane.replaceChildren(h("div", { class: "empty" }, "Choose a room."));
    return;
  }
  pane.replaceChildren(
    h("div", { class: "room-head" },
      h("h1", {}, room.room),
      h("span", { class: "state-pill", id: "room-state" }),
      h("span", { class: "muted mono" }, room.id),
      h("div", { class: "spacer" }),
      h("div", { class: "facts", id: "facts" })),
    h("div", { class: "transport" },
      h("button", { class: "play", id: "play", title: "Play / pause (Space)", onclick: on.onPlay }, "▶"),
      h("div", {}, h("div", { class: "clock", id: "clock" }, "0:00"), h("div", { class: "mode", id: "mode" }, "stopped")),
      h("button", { id: "golive", onclick: on.onLive, title: "Back to live (L)" }, "● Live ", h("kbd", {}, "L")),
      h("button", { onclick: () => on.onSeekBy(-15), title: "Back 15 s (Shift+←)" }, "−15 s"),
      h("button", { onclick: () => on.onSeekBy(15), title: "Forward 15 s (Shift+→)" }, "+15 s"),
      h("div", { class: "spacer" }),
      h("span", { class: "muted" }, "Level"),
      h("div", { class: "meter", id: "meter" }, h("div", { class: "rms" }), h("div", { class: "peak" })),
      h("span", { class: "muted mono meter-label", id: "meter-db" }, "—"),
      h("span", { class: "muted mono", id: "buffer", title: "Jitter buffer depth / target" }, "")),
    h("div", { class: "timeline-wrap" },
      h("canvas", { class: "timeline", id: "timeline", onclick: on.onTimelineClick, onmousemove: on.onTimelineHover,
        onmouseleave: () => on.onTimelineHover(null) }),
      h("div", { class: "legend" },
        h("span", {}, h("i", { style: "background:var(--audio)" }), "received live"),
        h("span", {}, h("i", { style: "background:var(--backfill)" }), "backfilled from archive"),
        h("span", {}, h("i", { style: "background:var(--paused);opacity:.55" }), "privacy pause"),
        h("span", {}, h("i", { style: "background:var(--danger);opacity:.7" }), "gap (lost)"),
        h("span", {}, h("i", { style: "background:var(--cue)" }), "cue"),
        h("span", { class: "spacer" }),
        h("span", {}, "Click the timeline to seek · ", h("kbd", {}, "?"), " shortcuts"))),
    h("div", { class: "lower" },
      h("section", {}, h("div", { class: "pane-title" }, "Cues and events"), h("div", { id: "events" })),
      h("section", {}, h("div", { class: "pane-title" }, "Sessions in this room"), h("div", { id: "archive" }))),
  );
}

/**
 * What moves: the state pill, session facts, play button, mode, clock, level meter and
 * buffer depth. `v`: {info (roomInfo or null), session, player, rejected (frames), canGoLive}.
 */
export function updateLive({ info, session: s, player: p, rejected, canGoLive }) {
  const pill = $("room-state");
  if (info && pill) {
    pill.textContent = stateText(info);
    pill.className = `state-pill state-${info.state}`;
  }
  const facts = $("facts");
  if (facts) {
    const bits = [];
    if (s) {
      bits.push(h("span", {}, "Session ", h("b", { class: "mono" }, s.session.slice(0, 8))));
      bits.push(h("span", {}, "Started ", h("b", {}, fmtClock(s.startedUs))));
      bits.push(h("span", {}, "Recorded ", h("b", {}, fmtDur(s.durationS))));
      if (s.close) bits.push(h("span", {}, h("b", {}, "Closed"), ` (${s.close.reason})`));
    }
    if (rejected) bits.push(h("span", { class: "state-offline" }, `${rejected} frames rejected`));
    facts.replaceChildren(...bits);
  }
  const mine = p.session === s && p.mode !== "stopped";
  const playing = mine && !p.paused;
  const btn = $("play");
  if (btn) btn.textContent = playing ? "❚❚" : "▶";
  const mode = $("mode");
  if (mode) {
    mode.textContent = !mine ? "stopped" : p.paused ? "paused" : p.mode === "live" ? "● live" : "replay";
    mode.className = `mode ${p.mode}`;
  }
  const clock = $("clock");
  if (clock && s) clock.textContent = fmtDur(mine ? p.positionS : s.durationS);
  const meter = $("meter");
  if (meter) {
    const on = playing ? p.level : { rms: 0, peak: 0 };
    meter.firstChild.style.width = `${meterPct(on.rms * Math.SQRT2)}%`;
    meter.lastChild.style.left = `${meterPct(on.peak)}%`;
    $("meter-db").textContent = playing ? `${db(on.rms).toFixed(0)} dBFS` : "—";
    $("buffer").textContent = playing && p.mode === "live" ? `buffer ${Math.round((p.stats.buffered / (s?.sampleRate || 16000)) * 1000)} ms` : "";
  }
  const live = $("golive");
  if (live) live.disabled = !canGoLive;
}
