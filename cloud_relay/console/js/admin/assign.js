// Who hears which room: per unit, the scribes the clinic authority assigns. Saving signs a
// new assignment in this page; the unit checks the signature and seals only to those
// scribes' endorsed devices (the relay cannot add anyone).

import { h } from "../dom.js";
import { busy, fmtRel } from "./ui.js";

export function renderAssign(root, model, { report, note }) {
  const edits = new Map(); // unit -> Set of scribe ids, until saved

  root.replaceChildren(h("div", { class: "card" },
    h("header", {}, h("h2", {}, "Rooms and scribes"), h("span", { class: "muted" }, "who hears which room: signed by the clinic authority when saved")),
    h("div", { id: "assign" })));

  function render() {
    const scribes = model.scribes.filter((s) => !s.disabled);
    const live = (s) => s.devices.filter((d) => d.endorsed && !d.revoked).length;
    const rows = model.fleet.filter((u) => !u.revoked_us).map((u) => {
      const chosen = edits.get(u.id) || new Set(u.scribes);
      const dirty = edits.has(u.id);
      return h("tr", { "data-unit": u.id },
        h("td", {}, h("b", {}, u.room || "—"), h("div", { class: "muted mono" }, u.id)),
        h("td", {}, h("div", { class: "scribe-pick" }, scribes.map((s) => h("label", { title: live(s) ? `${live(s)} endorsed device(s)` : "no endorsed device yet: nothing can be sealed to them" },
          h("input", { type: "checkbox", "data-scribe": s.id, checked: chosen.has(s.id), onchange: (e) => {
            const set = new Set(edits.get(u.id) || u.scribes);
            if (e.target.checked) set.add(s.id); else set.delete(s.id);
            edits.set(u.id, set);
            render();
          } }), s.name, live(s) ? "" : h("span", { class: "muted" }, " (no device)"))))),
        h("td", {}, h("div", { class: "actions" },
          dirty ? h("button", { onclick: () => { edits.delete(u.id); render(); } }, "Undo") : null,
          h("button", { class: dirty ? "primary" : "", disabled: !dirty, "data-save": u.id, title: model.authority ? "" : "unlock the clinic authority to sign", onclick: (e) => save(u.id, e.currentTarget) }, "Sign and save"))));
    });
    document.getElementById("assign").replaceChildren(rows.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Room"), h("th", {}, "Scribes"), h("th", {}, ""))), h("tbody", {}, rows))
      : h("div", { class: "empty" }, "No units to assign yet."));
  }

  async function save(unit, button) {
    await busy(button, async () => {
      const scribes = [...edits.get(unit)];
      await model.assign(unit, scribes);
      edits.delete(unit);
      note(`${unit}: ${scribes.length ? scribes.join(", ") : "nobody"} assigned (signed ${fmtRel(Date.now() * 1000)}).`);
      await model.refresh();
    }, report);
  }

  model.onChange(() => { if (!root.contains(document.activeElement) || document.activeElement.tagName === "BUTTON") render(); });
  render();
}
