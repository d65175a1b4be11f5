// Clinic IT's view: the clinic authority (unlocked in this page to sign), then tabs for
// the overview (alerts, health, fleet updates, archive), units, rooms, people, who hears
// which room, the audit log and the API. Each tab is its own module in js/admin/; they share
// one AdminModel (the relay's admin API). No audio, no scribe keys.

import { h } from "./dom.js";
import { renderApiDocs } from "./admin/apidocs.js";
import { renderAssign } from "./admin/assign.js";
import { renderAudit } from "./admin/audit.js";
import { renderAuthorityPanel } from "./admin/authority_panel.js";
import { AdminModel } from "./admin/model.js";
import { renderOverview } from "./admin/overview.js";
import { renderPeople } from "./admin/people.js";
import { renderRooms } from "./admin/rooms.js";
import { renderUnits } from "./admin/units.js";
import { renderUpdatesPanel } from "./updates.js";

const REFRESH_MS = 3000;
const TABS = [
  ["overview", "Overview"], ["units", "Units"], ["rooms", "Rooms"], ["people", "People"],
  ["assign", "Who hears what"], ["audit", "Audit log"], ["api", "API"],
];

/** `api(method, path, body)`: the relay's API with the admin's token; `fetchRaw(path)`: a
 * GET with the token whose body is not JSON (the audit CSV); `me`: the admin's user id. */
export function renderAdmin(root, { api, fetchRaw = (path) => fetch(path), me = "" }) {
  const model = new AdminModel(api);
  const panes = Object.fromEntries(TABS.map(([id]) => [id, h("div", { class: "tab-pane", id: `tab-${id}`, hidden: id !== "overview" })]));
  const tabButtons = TABS.map(([id, label]) => h("button", { "data-tab": id, class: id === "overview" ? "active" : "", onclick: () => select(id) }, label,
    id === "overview" ? h("span", { class: "tab-count", id: "tab-alerts" }) : null,
    id === "people" ? h("span", { class: "tab-count", id: "tab-pending" }) : null));
  root.replaceChildren(h("div", { class: "admin", id: "admin" },
    h("div", { id: "authority" }),
    h("div", { class: "admin-messages" },
      h("span", { class: "note", id: "admin-note", role: "status" }),
      h("span", { class: "error", id: "admin-error", role: "alert" })),
    h("nav", { class: "nav admin-tabs", id: "admin-tabs" }, tabButtons),
    ...Object.values(panes)));

  let noteTimer = null;
  const note = (text) => {
    document.getElementById("admin-error").textContent = "";
    document.getElementById("admin-note").textContent = text;
    clearTimeout(noteTimer);
    noteTimer = setTimeout(() => { document.getElementById("admin-note").textContent = ""; }, 20000);
  };
  const report = (text) => {
    document.getElementById("admin-note").textContent = "";
    document.getElementById("admin-error").textContent = text;
  };
  const ctx = { report, note, fetchRaw, me };

  renderAuthorityPanel(document.getElementById("authority"), model, ctx);
  const overview = renderOverview(panes.overview, model, ctx);
  renderUnits(panes.units, model, ctx);
  renderRooms(panes.rooms, model, ctx);
  renderPeople(panes.people, model, ctx);
  renderAssign(panes.assign, model, ctx);
  renderAudit(panes.audit, model, ctx);
  const updates = renderUpdatesPanel(overview.updates, { api });
  const docs = renderApiDocs(panes.api, model, ctx);

  function select(id) {
    for (const b of tabButtons) b.classList.toggle("active", b.dataset.tab === id);
    for (const [k, pane] of Object.entries(panes)) pane.hidden = k !== id;
    if (id === "api") docs.load();
    if (id === "overview") updates.refresh();
  }

  model.onChange(() => {
    const n = model.alerts.length;
    document.getElementById("tab-alerts").textContent = n ? String(n) : "";
    const p = model.pendingDevices.length + model.requests.length;
    document.getElementById("tab-pending").textContent = p ? String(p) : "";
  });

  let failing = false;
  async function refresh() {
    try {
      await model.refresh();
      if (failing) report("");
      failing = false;
    } catch (e) {
      failing = true;
      report(`Could not refresh: ${e.message}`);
    }
    if (!panes.overview.hidden) await updates.refresh();
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
  return { model, select };
}
