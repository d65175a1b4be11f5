// What shows instead of the desk while this browser may not hear anything yet: waiting for
// the clinic (or another of the scribe's devices) to approve it, or refusing a relay that
// names another clinic authority than the one this browser trusts.

import { fmtClock, h } from "../dom.js";

/** This device waits for its endorsement: what to compare, and who can approve it. */
export function renderWaiting(el, { label, fingerprint, pendingSince }) {
  el.replaceChildren(h("section", { class: "gate", id: "waiting-approval" },
    h("h1", {}, "Waiting for the clinic to approve this device"),
    h("p", {}, "This browser made its own keys; they never leave it. Before any room's audio is sealed to it, "
      + "your clinic's admin approves it — or you approve it from a device you already use (it asks there)."),
    h("dl", {},
      h("dt", {}, "This device"), h("dd", { id: "waiting-label" }, label),
      h("dt", {}, "Its code"), h("dd", { class: "mono code", id: "waiting-code" }, fingerprint.slice(0, 19)),
      pendingSince ? [h("dt", {}, "Waiting since"), h("dd", {}, fmtClock(pendingSince))] : null),
    h("p", { class: "muted" }, "Check that the code shown where you approve it is the same. This page carries on by itself once it is approved.")));
}

/** Nothing is played: the relay names no authority, or another one than the one pinned here. */
export function renderBlocked(el, { changed = null, none = false }) {
  if (none) {
    el.replaceChildren(h("section", { class: "gate", id: "no-authority" },
      h("h1", {}, "This relay has no clinic authority yet"),
      h("p", {}, "Your clinic's admin registers it. This page tries again every few seconds.")));
    return;
  }
  el.replaceChildren(h("section", { class: "gate blocked", id: "authority-changed", role: "alert" },
    h("h1", {}, "Stopped: the relay names another clinic authority"),
    h("p", {}, "This browser trusts the clinic authority it met first. The relay now names a different one, "
      + "so nothing will be played or acknowledged here: a relay that could swap it could choose who hears your rooms."),
    h("dl", {},
      h("dt", {}, "Trusted here"), h("dd", { class: "mono" }, changed.pinned.fingerprint),
      h("dt", {}, "Named by the relay"), h("dd", { class: "mono" }, changed.offered.fingerprint || "?")),
    h("p", {}, "Call your clinic's IT. Only if they confirm the clinic really changed its authority, clear this site's data in the browser and sign in again.")));
}
