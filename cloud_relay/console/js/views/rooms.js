// The room list, in natural order (Exam 2 before Exam 10): each assigned room with its state,
// an open-cue badge, its shortcut number, and which one you are hearing.

import { h } from "../dom.js";
import { stateText } from "../roomstate.js";

export class RoomList {
  constructor(onSelect) {
    this.onSelect = onSelect;
    this.sig = ""; // what the list shows now: rebuilt only when this changes
  }

  /** `rooms`: [{id, room, info (roomInfo), openCues (count), hearing}], in the order shown. */
  render(el, rooms, selectedUnit) {
    if (!el) return;
    // rebuild only on change, so a click never lands on a node being replaced
    const sig = JSON.stringify([selectedUnit, rooms.map((r) => [r.id, r.room, stateText(r.info), r.openCues, r.hearing])]);
    if (sig === this.sig && el.childElementCount) return;
    this.sig = sig;
    if (!rooms.length) {
      el.replaceChildren(h("div", { class: "empty" }, "No rooms are assigned to you yet. Ask clinic IT."));
      return;
    }
    el.replaceChildren(...rooms.map((r, i) => h("button", {
      class: `room-item ${r.id === selectedUnit ? "selected" : ""} ${r.hearing ? "hearing" : ""}`,
      "data-unit": r.id, "data-state": r.info.state, "aria-current": r.id === selectedUnit ? "true" : null,
      onclick: () => this.onSelect(r.id),
    },
    h("span", { class: `dot ${r.info.state}` }),
    h("span", { class: "name" }, r.room, r.hearing ? h("span", { class: "hearing-mark", title: "You are hearing this room" }, "hearing") : null),
    r.openCues ? h("span", { class: "badge", title: "Open cues" }, r.openCues) : h("span", { class: "key" }, i < 9 ? i + 1 : ""),
    h("span", { class: `sub state-${r.info.state}` }, stateText(r.info)))));
  }
}
