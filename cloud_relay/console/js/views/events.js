// "Cues and events" of the shown session: cues (open ones with their replies, answered ones
// with who answered how), consent, privacy pauses, start and end, declared gaps, newest
// first; and why there is nothing to show when a session cannot be shown.

import { fmtClock, fmtDur, h } from "../dom.js";
import { REPLY_WORDS } from "../state.js";

const LABEL = {
  privacy_pause: "paused", privacy_resume: "resumed", session_start: "started", session_end: "ended", consent: "consent",
};
const CONSENT = {
  given: (e) => `Consent recorded${e.by === "scribe" ? " (you or another scribe confirmed the read-back)" : e.by === "physician" ? " (the physician's double press)" : ""}: recording`,
  declined: (e) => `Consent declined${e.by === "scribe" ? " (confirmed by a scribe)" : e.by === "physician" ? " (the physician)" : ""}: nothing is recorded`,
  pending: () => "Waiting for consent: nothing is recorded until it is given",
};
const DETAIL = {
  privacy_pause: () => "Physician paused recording for privacy",
  privacy_resume: () => "Recording resumed",
  session_start: () => "Session started",
  session_end: (e) => `Session ended${e.reason ? ` (${e.reason.replace(/_/g, " ")})` : ""}`,
  consent: (e) => (CONSENT[e.state] || (() => `Consent: ${e.state}`))(e),
};

/** Why there is no session to show: none yet, refused, not openable here, or still opening. */
export function renderNoSession(el, { openSession, why }) {
  el.replaceChildren(h("div", { class: "empty", id: "no-session" }, !openSession
    ? "No session yet. The room's audio appears here when the unit starts one."
    : why || "Opening the session…"));
}

/** Who replied to a cue, in words. */
export function repliesText(cue) {
  return cue.replies.map((r) => `${REPLY_WORDS[r.reply] || r.reply} — ${r.scribe}${r.label ? ` (${r.label})` : ""}${r.kind !== "person" ? ", a recorder: not shown to the physician" : ""}`).join(" · ");
}

/** `cueOf(cueId)`: the store's cue record. Handlers: onReplay(cue), onReply(cue, reply). */
export function renderEvents(el, s, cueOf, { onReplay, onReply }) {
  const rows = [];
  const items = [...s.events.map((e) => ({ t: e.t_s, e })), ...s.gaps.map((g) => ({ t: s.timeOfSeq(g.first_seq), g }))]
    .sort((a, b) => b.t - a.t);
  for (const it of items) {
    if (it.g) {
      const g = it.g;
      const secs = Math.min(1e6, (g.last_seq - g.first_seq + 1) * s.chunkMs / 1000);
      rows.push(h("tr", {}, h("td", { class: "mono" }, fmtDur(it.t)), h("td", {}, h("span", { class: "tag gap" }, "gap")),
        h("td", { class: "detail" }, `${secs.toFixed(1)} s lost on the unit (${g.reason.replace(/_/g, " ")})`), h("td", {})));
      continue;
    }
    const e = it.e;
    if (e.kind === "cue") {
      const c = cueOf(e.cue_id);
      const open = c && !c.acked;
      const said = c && c.replies.length ? repliesText(c) : c && c.sent ? `${REPLY_WORDS[c.sent]} — sent from here` : "";
      rows.push(h("tr", { class: open ? "open-cue" : "", "data-cue": e.cue_id, "data-acked": c && c.acked ? "1" : "0" },
        h("td", { class: "mono" }, fmtDur(e.t_s)),
        h("td", {}, h("span", { class: `tag ${open ? "cue" : "seen"}` }, open ? "cue" : "seen ✓")),
        h("td", { class: "detail" }, open ? "Clarification requested — waiting for you" : `Clarification requested · ${fmtClock(e.at_us)}`,
          said ? h("div", { class: "muted replies" }, said) : null),
        h("td", {}, h("div", { class: "actions" },
          h("button", { onclick: () => onReplay(c), class: "replay-cue" }, "Replay 15 s"),
          open ? h("button", { class: "cue-ack", onclick: () => onReply(c, "seen") }, "Seen") : null))));
    } else {
      const tag = e.kind.startsWith("privacy") ? "pause" : e.kind === "consent" ? `consent ${e.state}` : "";
      const detail = DETAIL[e.kind]?.(e) || "";
      rows.push(h("tr", { "data-kind": e.kind }, h("td", { class: "mono" }, fmtDur(e.t_s)), h("td", {}, h("span", { class: `tag ${tag}` }, LABEL[e.kind] || e.kind)),
        h("td", { class: "detail" }, `${detail} · ${fmtClock(e.at_us)}`), h("td", {})));
    }
  }
  el.replaceChildren(rows.length
    ? h("table", { class: "list events" },
      h("thead", {}, h("tr", {}, h("th", {}, "At"), h("th", {}, "What"), h("th", {}, ""), h("th", {}, ""))), h("tbody", {}, rows))
    : h("div", { class: "empty" }, "No events yet."));
}
