// The cue banner: the oldest open cue (in any room), until a person replies to it from any
// device. Replies: seen, got it, please repeat, see me after the visit; each reaches the
// physician's puck as its own light pattern.

import { fmtClock, fmtDur, h } from "../dom.js";

/** `open`: open cues, oldest first. `shownUnit`: the room on screen. Handlers: onReplay(cue), onReply(cue, reply), onGo(cue). */
export function renderBanner(el, open, { onReplay, onReply, onGo }, shownUnit = null) {
  if (!open.length) {
    el.hidden = true;
    el.replaceChildren();
    delete el.dataset.cue;
    return;
  }
  const c = open[0];
  el.hidden = false;
  el.dataset.cue = c.key;
  el.dataset.unit = c.unit;
  const robot = c.replies.filter((r) => r.kind !== "person");
  el.replaceChildren(
    h("div", { class: "cue-icon" }, "!"),
    h("div", { class: "cue-text" },
      h("strong", {}, `Cue from ${c.room}`),
      h("div", { class: "muted" }, `The physician asked for a clarification at ${fmtClock(c.at_us)} · ${fmtDur(c.t_s)} into the session`
        + (open.length > 1 ? ` · ${open.length - 1} more waiting` : "")
        + (robot.length ? " · a recorder noted it (that does not tell the physician)" : ""))),
    h("div", { class: "spacer" }),
    h("div", { class: "cue-actions" },
      c.unit !== shownUnit ? h("button", { onclick: () => onGo(c), id: "banner-go" }, `Go to ${c.room}`) : null,
      h("button", { onclick: () => onReplay(c), id: "banner-replay" }, "Replay 15 s ", h("kbd", {}, "R")),
      h("button", { class: "cue-ack", onclick: () => onReply(c, "seen"), id: "banner-ack", title: "The puck shows “seen”" }, "Seen ", h("kbd", {}, "A")),
      h("button", { class: "reply", onclick: () => onReply(c, "got_it"), id: "banner-got-it" }, "Got it ", h("kbd", {}, "G")),
      h("button", { class: "reply", onclick: () => onReply(c, "repeat"), id: "banner-repeat" }, "Please repeat ", h("kbd", {}, "P")),
      h("button", { class: "reply", onclick: () => onReply(c, "see_me"), id: "banner-see-me" }, "See me after ", h("kbd", {}, "M"))),
  );
}
