// The audit log: who did what to what, newest first, filtered by person, action, target
// and time, paged back, and exported as CSV (the same filters, done by the relay).

import { fmtClock, h } from "../dom.js";
import { busy, fmtWhen } from "./ui.js";

const PAGE = 200;

export function renderAudit(root, model, { report, fetchRaw }) {
  const state = { rows: [], actions: [], more: false };

  root.replaceChildren(h("div", { class: "card" },
    h("header", {}, h("h2", {}, "Audit log"), h("span", { class: "muted" }, "every sign-in, change and signed statement"),
      h("div", { class: "spacer" }),
      h("button", { id: "audit-csv", onclick: (e) => exportCsv(e.currentTarget) }, "Export CSV")),
    h("form", { class: "inline-form filters", id: "audit-filters", onsubmit: (e) => { e.preventDefault(); load(); } },
      h("input", { id: "audit-actor", placeholder: "who", size: 12 }),
      h("select", { id: "audit-action" }, h("option", { value: "" }, "any action")),
      h("input", { id: "audit-target", placeholder: "on (unit, user, room)", size: 16 }),
      h("label", { class: "muted" }, "from ", h("input", { id: "audit-since", type: "date" })),
      h("label", { class: "muted" }, "to ", h("input", { id: "audit-until", type: "date" })),
      h("button", { type: "submit", id: "audit-apply" }, "Filter"),
      h("button", { type: "button", onclick: () => { document.getElementById("audit-filters").reset(); load(); } }, "Clear")),
    h("div", { id: "audit", class: "audit-rows" }),
    h("div", { class: "actions", style: "padding:8px 14px" }, h("button", { id: "audit-older", onclick: () => load(true) }, "Older"))));

  function query(extra = {}) {
    const q = new URLSearchParams();
    const val = (id) => document.getElementById(id).value.trim();
    if (val("audit-actor")) q.set("actor", val("audit-actor"));
    if (val("audit-action")) q.set("action", val("audit-action"));
    if (val("audit-target")) q.set("target", val("audit-target"));
    const day = (id, end) => {
      const v = val(id);
      if (!v) return null;
      const d = new Date(`${v}T00:00:00`);
      if (end) d.setDate(d.getDate() + 1);
      return d.getTime() * 1000;
    };
    if (day("audit-since", false)) q.set("since_us", String(day("audit-since", false)));
    if (day("audit-until", true)) q.set("until_us", String(day("audit-until", true)));
    for (const [k, v] of Object.entries(extra)) q.set(k, String(v));
    return q;
  }

  async function load(older = false) {
    try {
      const extra = { limit: PAGE };
      if (older && state.rows.length) extra.before_id = state.rows[state.rows.length - 1].id;
      const rows = await model.api("GET", `/api/admin/audit?${query(extra)}`);
      state.rows = older ? [...state.rows, ...rows] : rows;
      state.more = rows.length === PAGE;
      render();
      const actions = await model.api("GET", "/api/admin/audit/actions");
      if (actions.join() !== state.actions.join()) {
        state.actions = actions;
        const sel = document.getElementById("audit-action");
        if (document.activeElement !== sel) {
          const cur = sel.value;
          sel.replaceChildren(h("option", { value: "" }, "any action"), ...actions.map((a) => h("option", { value: a, selected: a === cur }, a.replace(/_/g, " "))));
        }
      }
    } catch (e) {
      report(`Could not read the audit log: ${e.message}`);
    }
  }

  function render() {
    document.getElementById("audit").replaceChildren(state.rows.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Who"), h("th", {}, "What"), h("th", {}, "On"), h("th", {}, "Detail"))),
      h("tbody", {}, state.rows.map((a) => h("tr", { "data-action": a.action, "data-id": a.id },
        h("td", { class: "mono muted nowrap", title: fmtWhen(a.at_us) }, `${new Date(a.at_us / 1000).toLocaleDateString()} ${fmtClock(a.at_us)}`),
        h("td", {}, a.actor), h("td", {}, a.action.replace(/_/g, " ")),
        h("td", { class: "mono" }, a.target || ""),
        h("td", { class: "muted detail", title: JSON.stringify(a.detail || {}) }, Object.keys(a.detail || {}).length ? JSON.stringify(a.detail) : "")))))
      : h("div", { class: "empty" }, "Nothing matches."));
    document.getElementById("audit-older").hidden = !state.more;
  }

  async function exportCsv(button) {
    await busy(button, async () => {
      const r = await fetchRaw(`/api/admin/audit.csv?${query()}`);
      if (!r.ok) throw new Error(`export failed: HTTP ${r.status}`);
      const blob = await r.blob();
      const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/)?.[1] || "scribelink-audit.csv";
      const a = h("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    }, report);
  }

  let pending = null;
  model.onChange(() => { // what the admin just did shows here without a reload
    if (root.contains(document.activeElement) && document.activeElement.tagName !== "BUTTON") return;
    clearTimeout(pending);
    pending = setTimeout(() => load(), 100);
  });
  load();
  return { load };
}
