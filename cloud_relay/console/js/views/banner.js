// The cue banner: the oldest open cue, until it is acknowledged.

import { fmtClock, fmtDur, h } from "../dom.js";

/** `open`: open cues, oldest first. Handlers: onReplay(cue), onAck(cue). */
export function renderBanner(el, open, { onReplay, onAck }) {
  if (!open.length) {
    el.hidden = true;
    el.replaceChildren();
    delete el.dataset.cue;
    return;
  }
  const c = open[0];
  el.hidden = false;
  el.dataset.cue = c.key;
  el.replaceChildren(
    h("div", { class: "cue-icon" }, "!"),
    h("div", {},
      h("strong", {}, `Cue from ${c.room}`),
      h("div", { class: "muted" }, `The physician asked for a clarification at ${fmtClock(c.at_us)} · ${fmtDur(c.t_s)} into the session`
        + (open.length > 1 ? ` · ${open.length - 1} more waiting` : ""))),
    h("div", { class: "spacer" }),
    h("button", { onclick: () => onReplay(c), id: "banner-replay" }, "Replay 15 s before ", h("kbd", {}, "R")),
    h("button", { class: "cue-ack", onclick: () => onAck(c), id: "banner-ack" }, "Acknowledge ", h("kbd", {}, "A")),
  );
}
