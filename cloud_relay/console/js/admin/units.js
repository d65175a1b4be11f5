// Units: every exam-room unit with its health, room, software version, transport
// certificate and enrolment; pre-registering one, making its enrolment code (with a QR for
// the tech), moving it between rooms, revoking it, enrolling it again; and the techs'
// requests for one-time tokens (unlock, factory reset, trust change) waiting for approval.

import { h } from "../dom.js";
import { stateText } from "../roomstate.js";
import { qrSvg } from "./qr.js";
import { ask, busy, fmtRel, fmtWhen, show } from "./ui.js";

const CODE_TTL_S = 3600;

export function renderUnits(root, model, { report, note }) {
  root.replaceChildren(
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "Units"), h("span", { class: "muted" }, "exam-room units: health, software, certificate, enrolment"),
        h("div", { class: "spacer" }),
        h("form", { class: "inline-form", id: "unit-add", onsubmit: (e) => { e.preventDefault(); add(e.submitter); } },
          h("input", { id: "unit-new-id", placeholder: "unit id, e.g. exam-3-unit", required: true, pattern: "[A-Za-z0-9._-]{1,64}", size: 22 }),
          h("select", { id: "unit-new-room" }),
          h("button", { class: "primary", type: "submit", id: "unit-add-button" }, "Pre-register"))),
      h("div", { id: "units" })),
    h("div", { class: "card", id: "requests-card" },
      h("header", {}, h("h2", {}, "Techs' requests"), h("span", { class: "muted" }, "one-time tokens to unlock, reset or re-trust a unit: approve only what you expect")),
      h("div", { id: "requests" })),
  );

  function roomOptions(select, current) {
    if (document.activeElement === select) return;
    const names = model.rooms.map((r) => r.name);
    select.replaceChildren(h("option", { value: "" }, "no room yet"), ...names.map((n) => h("option", { value: n, selected: n === current }, n)));
  }

  function certText(u) {
    if (!u.cert_not_after_us) return h("span", { class: "muted" }, "—");
    const days = (u.cert_not_after_us / 1e3 - Date.now()) / 86400000;
    return h("span", { class: days < 30 ? "state-paused" : "", title: `certificate ${u.cert_serial || ""}` }, `expires ${fmtWhen(u.cert_not_after_us)}`);
  }

  function enrolText(u) {
    if (u.revoked_us) return h("span", { class: "state-offline revoked" }, `revoked ${fmtRel(u.revoked_us)} by ${u.revoked_by}`);
    if (u.enrolled_us) return h("span", {}, `enrolled ${fmtRel(u.enrolled_us)}`, h("span", { class: "muted" }, ` by ${u.enrolled_by}`));
    if (u.codes.length) return h("span", { class: "state-paused" }, `code waiting, valid ${fmtRel(u.codes[u.codes.length - 1].expires_us)}`);
    return h("span", { class: "muted" }, "not enrolled");
  }

  function render() {
    roomOptions(document.getElementById("unit-new-room"), "");
    const rows = model.fleet.map((u) => h("tr", { "data-unit": u.id, class: u.revoked_us ? "revoked" : "" },
      h("td", {}, h("span", { class: `dot ${u.state}`, style: "display:inline-block;margin-right:8px" }), h("b", {}, u.room || "—")),
      h("td", { class: "mono" }, u.id),
      h("td", { class: `state-${u.state}` }, stateText(u)),
      h("td", { class: "mono" }, u.version || h("span", { class: "muted" }, "—")),
      h("td", {}, certText(u)),
      h("td", { class: "enrolment" }, enrolText(u)),
      h("td", {}, u.scribes.length ? u.scribes.join(", ") : h("span", { class: "muted" }, "nobody")),
      h("td", {}, h("div", { class: "actions" },
        h("button", { "data-action": "code", title: "a one-time code (and QR) for the tech who installs it", onclick: (e) => code(u, e.currentTarget) }, u.enrolled_us || u.revoked_us ? "Re-enrol" : "Enrolment code"),
        h("button", { "data-action": "move", onclick: (e) => move(u, e.currentTarget) }, "Move"),
        u.revoked_us ? null : h("button", { "data-action": "revoke", class: "danger", onclick: (e) => revoke(u, e.currentTarget) }, "Revoke"))),
    ));
    document.getElementById("units").replaceChildren(rows.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Room", "Unit", "State", "Software", "Certificate", "Enrolment", "Scribes", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("div", { class: "empty" }, "No units yet: pre-register one, then make its enrolment code for the tech."));
    const reqs = model.requests.map((r) => h("tr", { "data-request": r.id },
      h("td", { class: "mono" }, r.unit), h("td", {}, r.action.replace(/_/g, " ")), h("td", {}, r.requested_by),
      h("td", { class: "muted" }, fmtRel(r.requested_us)),
      h("td", {}, h("div", { class: "actions" },
        h("button", { class: "primary", "data-action": "approve", onclick: (e) => approve(r, e.currentTarget) }, "Approve"),
        h("button", { "data-action": "decline", onclick: (e) => decline(r, e.currentTarget) }, "Decline")))));
    document.getElementById("requests").replaceChildren(reqs.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Unit", "Action", "Tech", "Asked", ""].map((t) => h("th", {}, t)))), h("tbody", {}, reqs))
      : h("div", { class: "empty" }, "No requests waiting."));
  }

  async function add(button) {
    const id = document.getElementById("unit-new-id");
    const room = document.getElementById("unit-new-room").value;
    await busy(button, async () => {
      await model.api("POST", "/api/admin/units", { id: id.value.trim(), room: room || null });
      note(`Unit ${id.value.trim()} registered${room ? ` in ${room}` : ""}. Make its enrolment code when the tech is ready.`);
      id.value = "";
      await model.refresh();
    }, report);
  }

  async function code(u, button) {
    let room = u.room;
    if (!room) {
      const pick = h("select", { id: "code-room" }, model.rooms.map((r) => h("option", { value: r.name }, r.name)));
      if (!model.rooms.length) return report("Add a room first (Rooms tab): an enrolment code names the unit's room.");
      if (await ask(`Which room is ${u.id} in?`, pick, [{ label: "Continue", value: true, primary: true }]) !== true) return;
      room = pick.value;
    }
    const got = await busy(button, () => model.enrolmentCode(u.id, room, CODE_TTL_S), report);
    if (!got) return;
    await model.refresh();
    await show(`Enrolment code for ${u.id}`, h("div", { class: "enrol-code", id: "enrol-code" },
      h("p", {}, `Room ${got.room} · relay ${got.relay} · works once, until ${fmtWhen(got.expires_us)}.`),
      h("div", { class: "enrol-code-row" },
        h("div", { class: "qr", id: "enrol-qr" }, qrSvg(document, got.text, { px: 3 })),
        h("div", {},
          h("div", { class: "mono code-text", id: "enrol-code-text" }, got.text),
          h("p", { class: "muted" }, "The tech runs `scripts/provision enroll --code …` with this code, or scans the QR. It carries a secret: hand it to the tech, do not post it. It was made in this browser; the relay holds only a hash of its proof."),
          h("button", { onclick: () => window.print() }, "Print")))), { id: "enrol-dialog", wide: true });
  }

  async function move(u, button) {
    const pick = h("select", { id: "move-room" }, h("option", { value: "" }, "no room"), model.rooms.map((r) => h("option", { value: r.name, selected: r.name === u.room }, r.name)));
    if (await ask(`Move ${u.id}`, h("label", {}, "to room ", pick), [{ label: "Move", value: true, primary: true }]) !== true) return;
    await busy(button, async () => {
      await model.api("PATCH", `/api/admin/units/${encodeURIComponent(u.id)}`, { room: pick.value });
      await model.refresh();
    }, report);
  }

  async function revoke(u, button) {
    const ok = await ask(`Revoke ${u.id}?`, h("div", {},
      h("p", {}, `${u.id}${u.room ? ` (${u.room})` : ""} will be refused by the broker, and sessions its keys sign from now on will not be played by anyone.`),
      h("p", { class: "muted" }, "To use it again, enrol it with a new code (its keys are made anew).")),
    [{ label: "Revoke", value: true, danger: true }]);
    if (ok !== true) return;
    await busy(button, async () => {
      const r = await model.revokeUnit(u.id);
      note(`${u.id} revoked (revocation list ${r.serial}${r.crl_updated ? "; broker revocation list updated" : ""}).`);
      await model.refresh();
    }, report);
  }

  async function approve(r, button) {
    await busy(button, async () => {
      await model.approveRequest(r.id);
      note(`Approved: ${r.action.replace(/_/g, " ")} on ${r.unit} for ${r.requested_by} (one use, 1 h).`);
      await model.refresh();
    }, report);
  }

  async function decline(r, button) {
    await busy(button, async () => {
      await model.api("DELETE", `/api/admin/token-requests/${encodeURIComponent(r.id)}`);
      await model.refresh();
    }, report);
  }

  model.onChange(() => { if (!root.contains(document.activeElement) || document.activeElement.tagName === "BUTTON") render(); });
  render();
}
