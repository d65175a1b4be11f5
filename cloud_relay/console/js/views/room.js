// The scribe's layout and the room pane: the room's head, a consent card while the session
// waits for consent, the transport (play, live, seek, speed, volume, how far behind live,
// level), the timeline canvas and its legend, and the panes for events and sessions.
// `updateLive` refreshes the parts that move every frame.

import { $, fmtClock, fmtDur, h } from "../dom.js";
import { SPEEDS } from "../player.js";
import { stateText } from "../roomstate.js";

const db = (v) => (v > 0 ? 20 * Math.log10(v) : -90);
const meterPct = (v) => Math.max(0, Math.min(100, ((db(v) + 60) / 60) * 100));

/** The two columns: rooms on the left (a strip on top when narrow), the room pane on the right. */
export function renderLayout(view) {
  $("nav").replaceChildren();
  view.replaceChildren(
    h("aside", { class: "rooms", "aria-label": "Your rooms" }, h("div", { class: "pane-title" }, "Your rooms"), h("div", { id: "room-list", class: "room-list" }),
      h("div", { class: "spacer" }),
      h("div", { id: "forged", class: "forged-list" }),
      h("div", { class: "rooms-foot muted" }, "Press ", h("kbd", {}, "?"), " for shortcuts")),
    h("section", { class: "room-view", id: "room-view" }),
  );
}

/**
 * The pane for `room` (or a prompt to choose one). Handlers: onPlay, onLive, onSeekBy(ds),
 * onSpeed(v), onVolume(v), onTimelineClick(event), onTimelineHover(event or null).
 */
export function renderRoomPane(pane, room, on, { speed, volume }) {
  if (!room) {
    pane.replaceChildren(h("div", { class: "empty" }, "Choose a room."));
    return;
  }
  const speedSel = h("select", { id: "speed", title: "Replay speed, pitch kept ([ and ])", "aria-label": "Replay speed", onchange: (e) => on.onSpeed(Number(e.target.value)) },
    ...SPEEDS.map((v) => h("option", { value: String(v), selected: v === speed }, `${v}×`)));
  pane.replaceChildren(
    h("div", { class: "room-head" },
      h("h1", {}, room.room),
      h("span", { class: "state-pill", id: "room-state" }),
      h("span", { class: "muted mono unit-id" }, room.id),
      h("div", { class: "spacer" }),
      h("div", { class: "facts", id: "facts" })),
    h("div", { id: "consent", class: "consent", hidden: true }),
    h("div", { class: "transport" },
      h("button", { class: "play", id: "play", title: "Play / pause (Space)", "aria-label": "Play or pause", onclick: on.onPlay }, "▶"),
      h("div", { class: "clockbox" }, h("div", { class: "clock", id: "clock" }, "0:00"), h("div", { class: "mode", id: "mode" }, "stopped")),
      h("button", { id: "golive", onclick: on.onLive, title: "Back to live (L)" }, "● Live ", h("kbd", {}, "L")),
      h("button", { onclick: () => on.onSeekBy(-15), title: "Back 15 s (Shift+←)" }, "−15 s"),
      h("button", { onclick: () => on.onSeekBy(15), title: "Forward 15 s (Shift+→)" }, "+15 s"),
      h("span", { class: "behind mono", id: "behind", "aria-live": "off" }, ""),
      h("div", { class: "spacer" }),
      h("label", { class: "ctl" }, "Speed ", speedSel),
      h("label", { class: "ctl" }, "Volume ", h("input", { type: "range", id: "volume", min: "0", max: "1", step: "0.05", value: String(volume),
        "aria-label": "Volume", title: "Volume (- and =)", oninput: (e) => on.onVolume(Number(e.target.value)) })),
      h("div", { class: "meterbox" },
        h("div", { class: "meter", id: "meter" }, h("div", { class: "rms" }), h("div", { class: "peak" })),
        h("span", { class: "muted mono meter-label", id: "meter-db" }, "—")),
      h("span", { class: "muted mono", id: "buffer", title: "Jitter buffer depth" }, "")),
    h("div", { class: "timeline-wrap" },
      h("canvas", { class: "timeline", id: "timeline", onclick: on.onTimelineClick, onmousemove: on.onTimelineHover,
        onmouseleave: () => on.onTimelineHover(null) }),
      h("div", { class: "legend" },
        h("span", {}, h("i", { style: "background:var(--audio)" }), "received live"),
        h("span", {}, h("i", { style: "background:var(--backfill)" }), "backfilled"),
        h("span", {}, h("i", { style: "background:var(--paused);opacity:.55" }), "privacy pause"),
        h("span", {}, h("i", { style: "background:var(--danger);opacity:.7" }), "gap (lost)"),
        h("span", {}, h("i", { style: "background:var(--cue)" }), "cue"),
        h("span", { class: "spacer" }),
        h("span", { class: "hint" }, "Click the timeline to seek"))),
    h("div", { class: "lower" },
      h("section", { "aria-label": "Cues and events" }, h("div", { class: "pane-title" }, "Cues and events"), h("div", { id: "events" })),
      h("section", { "aria-label": "Sessions" }, h("div", { class: "pane-title" }, "Sessions"), h("div", { id: "archive" }))),
  );
}

/** The consent card of session `s` (shown while it waits for consent). */
export function renderConsent(el, s, onConsent) {
  if (!el) return;
  const waiting = s && !s.close && s.consent === "pending";
  el.hidden = !waiting;
  if (!waiting) {
    el.replaceChildren();
    return;
  }
  const sent = s.consentSent;
  el.replaceChildren(
    h("div", {},
      h("strong", {}, "Waiting for consent — nothing is recorded yet"),
      h("div", { class: "muted" }, "The physician double-presses the button when the patient agrees. Or, after the consent read-back, confirm it here:")),
    h("div", { class: "spacer" }),
    ...(sent ? [h("span", { class: "muted", id: "consent-sent" }, `Sent: ${sent === "given" ? "the patient agreed" : "the patient declined"} — waiting for the unit`)]
      : [h("button", { class: "primary", id: "consent-given", onclick: () => onConsent(s, true) }, "The patient agreed"),
        h("button", { id: "consent-declined", onclick: () => onConsent(s, false) }, "The patient declined")]));
}

/**
 * What moves: the state pill, session facts, play button, mode, clock, behind-live, level
 * meter and buffer depth. `v`: {info, session, player, rejected, forged, canGoLive}.
 */
export function updateLive({ info, session: s, player: p, rejected, forged, canGoLive }) {
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
      if (s.close) bits.push(h("span", {}, h("b", {}, s.complete ? "Complete" : "Closed"), ` (${s.close.reason.replace(/_/g, " ")})`));
      const others = s.recipients.filter((r) => r.kind === "scribe").length;
      bits.push(h("span", { title: "Devices the unit sealed this session to" }, "Sealed to ", h("b", {}, `${others} device${others === 1 ? "" : "s"}`)));
    }
    if (rejected) bits.push(h("span", { class: "state-offline" }, `${rejected} frames rejected`));
    if (forged) bits.push(h("span", { class: "forged", id: "forged-count" }, `${forged} forged item${forged === 1 ? "" : "s"} refused`));
    const sig = JSON.stringify(bits.map((b) => b.textContent));
    if (facts.dataset.sig !== sig) {
      facts.dataset.sig = sig;
      facts.replaceChildren(...bits);
    }
  }
  const mine = p.session === s && p.mode !== "stopped";
  const playing = mine && !p.paused;
  const btn = $("play");
  if (btn) btn.textContent = playing ? "❚❚" : "▶";
  const mode = $("mode");
  if (mode) {
    mode.textContent = !mine ? (p.mode !== "stopped" ? "other room" : "stopped") : p.paused ? "paused" : p.mode === "live" ? "● live" : `replay ${p.speed}×`;
    mode.className = `mode ${mine ? p.mode : "stopped"}`;
  }
  const clock = $("clock");
  if (clock && s) clock.textContent = fmtDur(mine ? p.positionS : s.durationS);
  const behind = $("behind");
  if (behind) {
    const b = mine ? p.behindS : 0;
    const text = b >= 1 ? `${Math.round(b)} s behind live` : "";
    if (behind.textContent !== text) behind.textContent = text;
  }
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

/** The speed and volume controls, from the player (after a shortcut changed them). */
export function updateControls(player) {
  const sp = $("speed");
  if (sp && sp.value !== String(player.speed)) sp.value = String(player.speed);
  const vol = $("volume");
  if (vol && Number(vol.value) !== player.volume) vol.value = String(player.volume);
}
