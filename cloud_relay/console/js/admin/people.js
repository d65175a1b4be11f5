// People: scribes, techs and admins. Invite one (a one-time link sets their password: the
// admin never knows it), change a role, reset a password (every sign-in ends), disable,
// sign out everywhere, remove; and each person's devices -- approving a pending one and
// revoking one are signed by the clinic authority in this page.

import { h } from "../dom.js";
import { ask, busy, fmtRel, fmtWhen, show } from "./ui.js";

const ROLES = ["scribe", "tech", "admin"];

export function renderPeople(root, model, { report, note, me }) {
  root.replaceChildren(
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "People"), h("span", { class: "muted" }, "scribes, field techs and clinic admins"),
        h("div", { class: "spacer" }),
        h("form", { class: "inline-form", id: "person-add", onsubmit: (e) => { e.preventDefault(); invite(e.submitter); } },
          h("input", { id: "person-new-id", placeholder: "user id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", size: 14 }),
          h("input", { id: "person-new-name", placeholder: "name", required: true, size: 18 }),
          h("select", { id: "person-new-role" }, ROLES.map((r) => h("option", { value: r }, r))),
          h("button", { class: "primary", type: "submit", id: "person-add-button" }, "Invite"))),
      h("div", { id: "people" })),
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "Devices waiting for approval"), h("span", { class: "muted" }, "a scribe's new browser or client: check the label with them before approving")),
      h("div", { id: "pending-devices" })),
  );

  const link = (path) => `${(model.relay && model.relay.public_url) || location.origin}${path}`;

  function stateOf(p) {
    if (p.disabled) return h("span", { class: "state-offline" }, "disabled");
    if (p.invite) return h("span", { class: "state-paused" }, `${p.invite.kind === "reset" ? "password reset" : "invited"}, link valid ${fmtRel(p.invite.expires_us)}`);
    if (!p.has_password) return h("span", { class: "state-paused" }, "no password yet");
    return h("span", { class: "state-live" }, "active");
  }

  function devicesOf(p) {
    if (!p.devices.length) return h("span", { class: "muted" }, p.role === "scribe" ? "none yet" : "—");
    return h("ul", { class: "devices" }, p.devices.map((d) => h("li", { "data-device": d.device },
      h("span", { class: d.revoked ? "state-offline" : d.endorsed ? "state-live" : "state-paused" }, d.revoked ? "revoked" : d.endorsed ? "endorsed" : "pending"),
      " ", d.label, h("span", { class: "muted mono" }, ` ${d.device}${d.kind === "robot" ? " · robot" : ""}`),
      d.endorsed_by && d.endorsed_by !== "authority" && !d.revoked ? h("span", { class: "muted" }, ` (vouched by ${d.endorsed_by})`) : null,
      !d.revoked ? h("button", { class: "link", "data-action": "revoke-device", onclick: (e) => revokeDevice(p, d, e.currentTarget) }, "revoke") : null)));
  }

  function render() {
    const rows = model.people.map((p) => h("tr", { "data-user": p.id, class: p.disabled ? "disabled" : "" },
      h("td", {}, h("b", {}, p.name), h("div", { class: "muted mono" }, p.id)),
      h("td", {}, h("select", { "data-action": "role", "aria-label": `role of ${p.id}`, onchange: (e) => role(p, e.target) }, ROLES.map((r) => h("option", { value: r, selected: r === p.role }, r)))),
      h("td", {}, stateOf(p)),
      h("td", { class: "muted" }, p.last_login_us ? fmtWhen(p.last_login_us) : "never"),
      h("td", {}, devicesOf(p)),
      h("td", { class: "mono" }, p.units.length ? p.units.join(", ") : h("span", { class: "muted" }, "—")),
      h("td", {}, h("div", { class: "actions" },
        h("button", { "data-action": "reset", onclick: (e) => reset(p, e.currentTarget) }, p.has_password ? "Reset password" : "New link"),
        p.disabled ? h("button", { "data-action": "enable", onclick: (e) => act(p, "enable", e.currentTarget) }, "Enable")
          : h("button", { "data-action": "disable", disabled: p.id === me, onclick: (e) => disable(p, e.currentTarget) }, "Disable"),
        h("button", { "data-action": "signout", onclick: (e) => act(p, "signout", e.currentTarget) }, "Sign out"),
        h("button", { "data-action": "remove", class: "danger", disabled: p.id === me, onclick: (e) => remove(p, e.currentTarget) }, "Remove")))));
    document.getElementById("people").replaceChildren(h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Person", "Role", "Account", "Last sign-in", "Devices", "Hears", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
    const pending = model.pendingDevices.map((d) => h("tr", { "data-device": d.device },
      h("td", {}, d.user), h("td", {}, d.label), h("td", { class: "mono" }, d.device), h("td", {}, d.kind),
      h("td", { class: "muted" }, fmtRel(d.created_us)),
      h("td", {}, h("div", { class: "actions" }, h("button", { class: "primary", "data-action": "approve", onclick: (e) => approve(d, e.currentTarget) }, "Approve")))));
    document.getElementById("pending-devices").replaceChildren(pending.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Scribe", "Label", "Device", "Kind", "Registered", ""].map((t) => h("th", {}, t)))), h("tbody", {}, pending))
      : h("div", { class: "empty" }, "No device is waiting."));
  }

  async function showLink(title, got) {
    await show(title, h("div", {},
      h("p", {}, "Send this link to them (it works once). They choose their own password; nobody else learns it."),
      h("div", { class: "mono code-text", id: "invite-link" }, link(got.invite_path)),
      h("p", { class: "muted" }, got.expires_us ? `Valid until ${fmtWhen(got.expires_us)}.` : "")), { id: "invite-dialog", wide: true });
  }

  async function invite(button) {
    const id = document.getElementById("person-new-id");
    const name = document.getElementById("person-new-name");
    const role = document.getElementById("person-new-role").value;
    const got = await busy(button, () => model.api("POST", "/api/admin/users", { id: id.value.trim(), name: name.value.trim(), role }), report);
    if (!got) return;
    id.value = "";
    name.value = "";
    await model.refresh();
    await showLink(`${got.id} invited as ${got.role}`, got);
  }

  async function role(p, select) {
    const to = select.value;
    const ok = await ask(`Make ${p.id} ${to === "admin" ? "an admin" : `a ${to}`}?`, h("p", {}, `From ${p.role} to ${to}. Their current sign-ins end; the change is in the audit log.`), [{ label: "Change role", value: true, primary: true }]);
    if (ok !== true) { select.value = p.role; return; }
    await busy(null, async () => {
      await model.api("PUT", `/api/admin/users/${encodeURIComponent(p.id)}/role`, { role: to });
      note(`${p.id} is now ${to}.`);
    }, report);
    await model.refresh();
  }

  async function reset(p, button) {
    if (p.has_password) {
      const ok = await ask(`Reset ${p.id}'s password?`, h("p", {}, "Their password stops working now and every sign-in of theirs ends (their live stream too). You get a one-time link for them to choose a new one."), [{ label: "Reset", value: true, danger: true }]);
      if (ok !== true) return;
    }
    const got = await busy(button, () => model.api("POST", `/api/admin/users/${encodeURIComponent(p.id)}/${p.has_password ? "reset" : "invite"}`), report);
    if (!got) return;
    await model.refresh();
    await showLink(`New password link for ${p.id}`, got);
  }

  async function disable(p, button) {
    const live = p.devices.filter((d) => d.endorsed && !d.revoked).map((d) => d.device);
    const box = h("input", { type: "checkbox", id: "disable-revoke", checked: live.length > 0, disabled: !live.length });
    const ok = await ask(`Disable ${p.id}?`, h("div", {},
      h("p", {}, "They cannot sign in, and every sign-in of theirs ends now."),
      h("label", {}, box, ` Also revoke their ${live.length} endorsed device(s), signed by the clinic authority (units stop sealing to them)`),
      p.units.length ? h("p", { class: "state-paused" }, `They still hear ${p.units.join(", ")}: assign those rooms to others.`) : null),
    [{ label: "Disable", value: true, danger: true }]);
    if (ok !== true) return;
    await busy(button, async () => {
      await model.api("POST", `/api/admin/users/${encodeURIComponent(p.id)}/disable`);
      if (box.checked && live.length) await model.revokeDevices(live);
      note(`${p.id} disabled${box.checked && live.length ? " and their devices revoked" : ""}.`);
      await model.refresh();
    }, report);
  }

  async function act(p, what, button) {
    await busy(button, async () => {
      await model.api("POST", `/api/admin/users/${encodeURIComponent(p.id)}/${what}`);
      note(what === "signout" ? `Every sign-in of ${p.id} ended.` : `${p.id} enabled.`);
      await model.refresh();
    }, report);
  }

  async function remove(p, button) {
    const ok = await ask(`Remove ${p.id}?`, h("p", {}, "Their account goes; the audit log keeps what they did. Rooms they hear must be assigned to others and their devices revoked first."), [{ label: "Remove", value: true, danger: true }]);
    if (ok !== true) return;
    await busy(button, async () => {
      await model.api("DELETE", `/api/admin/users/${encodeURIComponent(p.id)}`);
      note(`${p.id} removed.`);
      await model.refresh();
    }, report);
  }

  async function revokeDevice(p, d, button) {
    const ok = await ask(`Revoke ${d.label}?`, h("p", {}, `${p.id}'s device ${d.device}: units stop sealing sessions to it, and receivers stop trusting its replies. Signed by the clinic authority.`), [{ label: "Revoke", value: true, danger: true }]);
    if (ok !== true) return;
    await busy(button, async () => {
      await model.revokeDevices([d.device]);
      note(`Device ${d.device} revoked.`);
      await model.refresh();
    }, report);
  }

  async function approve(d, button) {
    await busy(button, async () => {
      await model.approveDevice(d.device);
      note(`${d.user}'s device "${d.label}" endorsed by the clinic authority.`);
      await model.refresh();
    }, report);
  }

  model.onChange(() => { if (!root.contains(document.activeElement) || document.activeElement.tagName === "BUTTON") render(); });
  render();
}
