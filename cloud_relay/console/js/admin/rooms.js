// Rooms: the clinic's exam rooms, each with the units in it. Add, rename, remove an empty one.

import { h } from "../dom.js";
import { ask, busy } from "./ui.js";

export function renderRooms(root, model, { report, note }) {
  root.replaceChildren(h("div", { class: "card" },
    h("header", {}, h("h2", {}, "Rooms"), h("span", { class: "muted" }, "exam rooms and the units in them"),
      h("div", { class: "spacer" }),
      h("form", { class: "inline-form", id: "room-add", onsubmit: (e) => { e.preventDefault(); add(e.submitter); } },
        h("input", { id: "room-new-name", placeholder: "room name, e.g. Exam 3", required: true, maxlength: 128 }),
        h("button", { class: "primary", type: "submit", id: "room-add-button" }, "Add room"))),
    h("div", { id: "rooms" })));

  function render() {
    const rows = model.rooms.map((r) => h("tr", { "data-room": r.name },
      h("td", {}, h("b", {}, r.name)),
      h("td", { class: "mono" }, r.units.length ? r.units.join(", ") : h("span", { class: "muted" }, "no unit yet")),
      h("td", {}, h("div", { class: "actions" },
        h("button", { "data-action": "rename", onclick: (e) => rename(r, e.currentTarget) }, "Rename"),
        h("button", { "data-action": "remove", disabled: r.units.length > 0, title: r.units.length ? "move its units first" : "", onclick: (e) => remove(r, e.currentTarget) }, "Remove")))));
    document.getElementById("rooms").replaceChildren(rows.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Room"), h("th", {}, "Units"), h("th", {}, ""))), h("tbody", {}, rows))
      : h("div", { class: "empty" }, "No rooms yet: add the clinic's exam rooms, then their units."));
  }

  async function add(button) {
    const input = document.getElementById("room-new-name");
    await busy(button, async () => {
      await model.api("POST", "/api/admin/rooms", { name: input.value.trim() });
      note(`Room ${input.value.trim()} added.`);
      input.value = "";
      await model.refresh();
    }, report);
  }

  async function rename(r, button) {
    const input = h("input", { id: "room-rename", value: r.name, maxlength: 128 });
    if (await ask(`Rename ${r.name}`, input, [{ label: "Rename", value: true, primary: true }]) !== true) return;
    await busy(button, async () => {
      await model.api("PATCH", `/api/admin/rooms/${encodeURIComponent(r.name)}`, { name: input.value.trim() });
      await model.refresh();
    }, report);
  }

  async function remove(r, button) {
    if (await ask(`Remove ${r.name}?`, h("p", {}, "The room has no units; it is removed from the list."), [{ label: "Remove", value: true, danger: true }]) !== true) return;
    await busy(button, async () => {
      await model.api("DELETE", `/api/admin/rooms/${encodeURIComponent(r.name)}`);
      await model.refresh();
    }, report);
  }

  model.onChange(() => { if (!root.contains(document.activeElement) || document.activeElement.tagName === "BUTTON") render(); });
  render();
}
