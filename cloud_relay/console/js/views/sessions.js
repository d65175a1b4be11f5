// "Sessions": the archive of a room (or a search across rooms and days), grouped by day with
// dates, each with its length, events and state; Open where this device can open it, and in
// plain words why not where it cannot (no Open button there).

import { fmtClock, fmtDur, h } from "../dom.js";

const DAY = { weekday: "short", day: "numeric", month: "short", year: "numeric" };

/** "Today", "Yesterday", or the date, for a time in µs. */
export function dayLabel(us, nowMs = Date.now()) {
  const d = new Date(us / 1000);
  const today = new Date(nowMs);
  const days = Math.round((new Date(today.toDateString()) - new Date(d.toDateString())) / 86400000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  return d.toLocaleDateString([], DAY);
}

/** Sessions by day, newest day first, keeping the list's order inside a day. */
export function byDay(list, nowMs = Date.now()) {
  const groups = [];
  for (const x of list) {
    const label = dayLabel(x.started_us || x.opened_us, nowMs);
    const g = groups[groups.length - 1];
    if (g && g.label === label) g.items.push(x);
    else groups.push({ label, items: [x] });
  }
  return groups;
}

export class SessionList {
  /** `onOpen(unit, session)`, `onSearch({unit, day})`. */
  constructor(onOpen, onSearch) {
    this.onOpen = onOpen;
    this.onSearch = onSearch;
    this.sig = ""; // what the list shows now: rebuilt only when this changes
  }

  /**
   * `v`: {unitId, list, selected, local(session) -> SessionState, why(row) -> text or null,
   * rooms: [{id, room}], search: {unit, day, list, error} or null}.
   */
  render(el, v) {
    if (!el) return;
    const list = v.search ? v.search.list : v.list;
    const sig = JSON.stringify([v.selected, v.unitId, v.search && [v.search.unit, v.search.day, v.search.error], list.map((x) => {
      const s = v.local(x.session);
      return [x.session, x.closed_us, s ? Math.floor(s.durationS) : x.audio_max_seq, s ? s.events.length : x.events, s?.complete, v.why(x)];
    })]);
    if (sig === this.sig && el.childElementCount) return;
    this.sig = sig;
    el.replaceChildren(this.form(v), this.table(v, list));
  }

  form(v) {
    const room = h("select", { id: "search-room", "aria-label": "Room" },
      h("option", { value: "" }, "This room"),
      h("option", { value: "*" }, "All rooms"),
      ...v.rooms.map((r) => h("option", { value: r.id }, r.room)));
    const day = h("input", { type: "date", id: "search-day", "aria-label": "Day" });
    if (v.search) {
      room.value = v.search.unit === null ? "*" : v.search.unit || "";
      day.value = v.search.day || "";
    }
    const go = (e) => {
      e.preventDefault();
      const unit = room.value === "*" ? null : room.value || v.unitId;
      this.onSearch(room.value === "" && !day.value ? {} : { unit, day: day.value || null });
    };
    return h("form", { class: "search", onsubmit: go },
      room, day, h("button", { type: "submit", id: "search-go" }, "Find"),
      v.search ? h("button", { type: "button", onclick: () => this.onSearch({}) }, "Clear") : null,
      v.search?.error ? h("span", { class: "error" }, v.search.error) : null);
  }

  table(v, list) {
    if (!list.length) {
      return h("div", { class: "empty" }, v.search ? "No sessions sealed for you match." : "No archived sessions sealed for you in this room.");
    }
    const rows = [];
    for (const g of byDay(list)) {
      rows.push(h("tr", { class: "day" }, h("th", { colspan: 4 }, g.label)));
      for (const x of g.items) {
        const s = v.local(x.session);
        const len = s ? s.durationS : x.audio_max_seq === null || x.audio_max_seq === undefined ? 0 : ((x.audio_max_seq + 1) * (x.chunk_ms || 40)) / 1000;
        const cur = x.session === v.selected;
        const why = v.why(x);
        const state = !x.closed_us ? h("span", { class: "tag seen" }, "open")
          : s?.complete ? h("span", { class: "tag" }, "complete") : null;
        rows.push(h("tr", { "data-session": x.session, class: why ? "unopenable" : "" },
          h("td", { class: "nowrap" }, x.started_us ? fmtClock(x.started_us) : "—", " ", state,
            v.search && x.room ? h("div", { class: "muted" }, x.room) : null),
          h("td", { class: "mono" }, fmtDur(len)),
          h("td", { class: "mono" }, s ? s.events.length : x.events),
          h("td", {}, cur ? h("span", { class: "muted" }, "showing")
            : why ? h("div", { class: "why", "data-why": "1" }, why)
              : h("div", { class: "actions" }, h("button", { onclick: () => this.onOpen(x.unit, x.session) }, "Open")))));
      }
    }
    return h("table", { class: "list sessions" },
      h("thead", {}, h("tr", {}, h("th", {}, "Started"), h("th", {}, "Length"), h("th", {}, "Events"), h("th", {}, ""))),
      h("tbody", {}, rows));
  }
}
