// "Cues and events" of the shown session: cues (open ones with their actions), privacy
// pauses, start and end, and declared gaps, newest first.

import { fmtClock, fmtDur, h } from "../dom.js";

const LABEL = { privacy_pause: "paused", privacy_resume: "resumed", session_start: "started", session_end: "ended" };
const DETAIL = {
  privacy_pause: () => "Physician paused recording for privacy",
  privacy_resume: () => "Recording resumed",
  session_start: () => "Session started",
  session_end: (e) => `Session ended${e.reason ? ` (${e.reason})` : ""}`,
};

/** Why there is no session to show: none yet, sealed for another key, or still opening. */
export function renderNoSession(el, { openSession, unreadable }) {
  el.replaceChildren(h("div", { class: "empty" }, !openSession
    ? "No session yet. The room's audio appears here when the unit starts one."
    : unreadable
      ? "This session was sealed before this browser's key was registered, so it cannot be opened here. The unit starts a new session for this key within seconds."
      : "Opening the session…"));
}

/** `cueOf(cueId)`: the store's cue record. Handlers: onReplay(cue), onAck(cue). */
export function renderEvents(el, s, cueOf, { onReplay, onAck }) {
  const rows = [];
  const items = [...s.events.map((e) => ({ t: e.t_s, e })), ...s.gaps.map((g) => ({ t: s.timeOfSeq(g.first_seq), g }))]
    .sort((a, b) => b.t - a.t);
  for (const it of items) {
    if (it.g) {
      const g = it.g;
      rows.push(h("tr", {}, h("td", { class: "mono" }, fmtDur(it.t)), h("td", {}, h("span", { class: "tag gap" }, "gap")),
        h("td", { class: "muted detail" }, `${((g.last_seq - g.first_seq + 1) * s.chunkMs / 1000).toFixed(1)} s lost on the unit (${g.reason.replace(/_/g, " ")})`), h("td", {})));
      continue;
    }
    const e = it.e;
    if (e.kind === "cue") {
      const c = cueOf(e.cue_id);
      const open = c && !c.acked;
      rows.push(h("tr", { class: open ? "open-cue" : "", "data-cue": e.cue_id },
        h("td", { class: "mono" }, fmtDur(e.t_s)),
        h("td", {}, h("span", { class: `tag ${open ? "cue" : "seen"}` }, open ? "cue" : "seen ✓")),
        h("td", { class: "muted detail" }, open ? "Clarification requested — waiting for you" : `Clarification requested · ${fmtClock(e.at_us)}`),
        h("td", {}, h("div", { class: "actions" },
          h("button", { onclick: () => onReplay(c), class: "replay-cue" }, "Replay 15 s"),
          open ? h("button", { class: "cue-ack", onclick: () => onAck(c) }, "Acknowledge") : null))));
    } else {
      const tag = e.kind.startsWith("privacy") ? "pause" : "";
      const detail = DETAIL[e.kind]?.(e) || "";
      rows.push(h("tr", {}, h("td", { class: "mono" }, fmtDur(e.t_s)), h("td", {}, h("span", { class: `tag ${tag}` }, LABEL[e.kind] || e.kind)),
        h("td", { class: "muted detail" }, `${detail} · ${fmtClock(e.at_us)}`), h("td", {})));
    }
  }
  el.replaceChildren(rows.length
    ? h("table", { class: "list fixed" },
      h("colgroup", {}, h("col", { style: "width:64px" }), h("col", { style: "width:84px" }), h("col", {}), h("col", { style: "width:210px" })),
      h("thead", {}, h("tr", {}, h("th", {}, "At"), h("th", {}, "What"), h("th", {}, ""), h("th", {}, ""))), h("tbody", {}, rows))
    : h("div", { class: "empty" }, "No events yet."));
}
