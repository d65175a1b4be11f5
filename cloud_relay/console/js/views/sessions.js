// "Sessions in this room": the room's archived sessions sealed for this scribe, with their
// length and events (from what is decoded here when it is), and a way to open each.

import { fmtClock, fmtDur, h } from "../dom.js";

export class SessionList {
  constructor(onOpen) {
    this.onOpen = onOpen; // (unitId, session)
    this.sig = ""; // what the list shows now: rebuilt only when this changes
  }

  /** `list`: the relay's session list; `local(session)`: the decoded SessionState, if any. */
  render(el, unitId, list, selectedSession, local) {
    if (!el) return;
    const sig = JSON.stringify([selectedSession, list.map((x) => {
      const s = local(x.session);
      return [x.session, x.closed_us, s ? Math.floor(s.durationS) : x.audio_max_seq, s ? s.events.length : x.events];
    })]);
    if (sig === this.sig && el.childElementCount) return;
    this.sig = sig;
    if (!list.length) {
      el.replaceChildren(h("div", { class: "empty" }, "No archived sessions sealed for you in this room."));
      return;
    }
    el.replaceChildren(h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Started"), h("th", {}, "Length"), h("th", {}, "Events"), h("th", {}, ""))),
      h("tbody", {}, list.map((x) => {
        const s = local(x.session);
        const len = s ? s.durationS : x.audio_max_seq === null ? 0 : ((x.audio_max_seq + 1) * (x.chunk_ms || 40)) / 1000;
        const cur = x.session === selectedSession;
        return h("tr", { "data-session": x.session },
          h("td", {}, x.started_us ? fmtClock(x.started_us) : "—", x.closed_us ? "" : h("span", { class: "tag seen", style: "margin-left:8px" }, "open")),
          h("td", { class: "mono" }, fmtDur(len)),
          h("td", { class: "mono" }, s ? s.events.length : x.events),
          h("td", {}, h("div", { class: "actions" }, cur ? h("span", { class: "muted" }, "showing")
            : h("button", { onclick: () => this.onOpen(unitId, x.session) }, "Open"))));
      }))));
  }
}
