// Clinic IT view: unit health from each unit's retained status, room and scribe
// assignments (editable), archive retention, and the audit log. No audio, no keys.

import { fmtClock, h } from "./dom.js";
import { stateText } from "./roomstate.js";
import { renderUpdatesPanel } from "./updates.js";

const REFRESH_MS = 2000;

/** `api(method, path, body)`: the relay's HTTP API with the admin's token. */
export function renderAdmin(root, { api }) {
  const state = { health: null, users: [], audit: [], edits: new Map(), names: new Map(), error: "" };

  root.replaceChildren(h("div", { class: "admin", id: "admin" },
    h("div", { class: "kpis", id: "kpis" }),
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "Units"), h("span", { class: "muted" }, "health from each unit's retained status; refreshed every 2 s"),
        h("div", { class: "spacer" }), h("span", { class: "error", id: "admin-error" })),
      h("div", { id: "units" })),
    h("div", { class: "two-col" },
      h("div", { class: "card" }, h("header", {}, h("h2", {}, "Rooms and scribes"), h("span", { class: "muted" }, "who hears which room")), h("div", { id: "assign" })),
      h("div", { class: "card" }, h("header", {}, h("h2", {}, "Audit log"), h("span", { class: "muted" }, "latest 200")), h("div", { id: "audit", style: "max-height:420px;overflow-y:auto" }))),
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "Updates"), h("span", { class: "muted" }, "signed releases, offered between encounters; what each unit runs and reports")),
      h("div", { id: "updates", style: "padding:10px 14px" })),
  ));
  const updates = renderUpdatesPanel(document.getElementById("updates"), { api });

  const lvl = (dbfs) => {
    if (dbfs === undefined || dbfs === null) return h("span", { class: "muted" }, "—");
    const pct = Math.max(0, Math.min(100, ((dbfs + 60) / 60) * 100));
    return h("span", {}, h("span", { class: "lvl" }, h("span", { style: `width:${pct}%` })), h("span", { class: "mono" }, `${Number(dbfs).toFixed(0)} dBFS`));
  };

  function renderKpis() {
    const hl = state.health;
    if (!hl) return;
    const units = hl.units;
    const online = units.filter((u) => u.state !== "offline").length;
    const spool = units.reduce((a, u) => a + Number(((u.status || {}).spool || {}).seconds || 0), 0);
    const errs = units.filter((u) => (u.status || {}).last_error).length;
    const gb = (hl.archive.bytes / 1e6).toFixed(1);
    document.getElementById("kpis").replaceChildren(
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Units online"), h("div", { class: "v" }, `${online} / ${units.length}`)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Broker link"), h("div", { class: `v ${hl.broker ? "state-live" : "state-offline"}` }, hl.broker ? "Connected" : "Down")),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Audio waiting on units"), h("div", { class: "v" }, `${spool.toFixed(0)} s`)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Units reporting errors"), h("div", { class: `v ${errs ? "state-paused" : ""}` }, errs)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, `Sealed archive · keeps ${hl.archive.retention_days} d`), h("div", { class: "v" }, `${hl.archive.sessions} sessions · ${gb} MB`)),
    );
  }

  function renderUnits() {
    const hl = state.health;
    if (!hl) return;
    const rows = hl.units.map((u) => {
      const st = u.status || {};
      const spool = st.spool || {};
      const dsp = st.dsp || {};
      const bad = [...(dsp.dead_channels || []).map((c) => `ch${c} dead`), ...(dsp.clipping_channels || []).map((c) => `ch${c} clipping`)];
      return h("tr", { "data-unit": u.id },
        h("td", {}, h("span", { class: `dot ${u.state}`, style: "display:inline-block;margin-right:8px" }), h("b", {}, u.room || "—")),
        h("td", { class: "mono" }, u.id),
        h("td", { class: `state-${u.state}` }, stateText(u)),
        h("td", {}, st.link || (st.online === false ? "lost" : "—")),
        h("td", { class: "mono" }, spool.chunks === undefined ? "—" : `${spool.chunks} · ${Number(spool.seconds || 0).toFixed(1)} s`),
        h("td", {}, lvl(dsp.level_dbfs), bad.length ? h("div", { class: "state-paused" }, bad.join(", ")) : null),
        h("td", {}, st.puck ? (st.puck.connected ? "connected" : h("span", { class: "state-paused" }, "unplugged")) : h("span", { class: "muted" }, "—")),
        h("td", { class: st.last_error ? "state-paused" : "muted", style: "max-width:280px" }, st.last_error || "none"),
        h("td", { class: "muted mono" }, u.status_age_s === null ? "never" : u.status_age_s < 90 ? `${u.status_age_s.toFixed(0)} s ago` : fmtClock(Date.now() * 1000 - u.status_age_s * 1e6)),
      );
    });
    document.getElementById("units").replaceChildren(rows.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Room", "Unit", "State", "Link", "Spool", "Mic level", "Puck", "Last error", "Status"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("div", { class: "empty" }, "No units yet. Units appear when they first connect or when added here."));
  }

  function renderAssign() {
    const hl = state.health;
    if (!hl) return;
    const scribes = state.users.filter((u) => u.role === "scribe");
    const rows = hl.units.map((u) => {
      const chosen = state.edits.get(u.id) || new Set(u.scribes);
      const name = state.names.has(u.id) ? state.names.get(u.id) : (u.room || "");
      const dirty = state.edits.has(u.id) || state.names.has(u.id);
      return h("tr", { "data-unit": u.id },
        h("td", {}, h("input", { class: "room-name", value: name, "aria-label": `Room name for ${u.id}`, "data-room": u.id, oninput: (e) => {
          state.names.set(u.id, e.target.value);
          const btn = document.querySelector(`#assign button[data-save="${u.id}"]`);
          if (btn) { btn.disabled = false; btn.className = "primary"; }
        } }), h("div", { class: "muted mono" }, u.id)),
        h("td", {}, h("div", { class: "scribe-pick" }, scribes.map((s) => h("label", { title: s.has_key ? "key registered" : "has not signed in to the console yet" },
          h("input", { type: "checkbox", "data-scribe": s.id, checked: chosen.has(s.id), onchange: (e) => {
            const set = new Set(state.edits.get(u.id) || u.scribes);
            if (e.target.checked) set.add(s.id); else set.delete(s.id);
            state.edits.set(u.id, set);
            renderAssign();
          } }), s.name, s.has_key ? "" : h("span", { class: "muted" }, " (no key)"))))),
        h("td", {}, h("div", { class: "actions" },
          dirty ? h("button", { onclick: () => { state.edits.delete(u.id); state.names.delete(u.id); renderAssign(); } }, "Undo") : null,
          h("button", { class: dirty ? "primary" : "", disabled: !dirty, "data-save": u.id, onclick: () => save(u.id) }, "Save"))));
    });
    document.getElementById("assign").replaceChildren(h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Room"), h("th", {}, "Scribes"), h("th", {}, ""))), h("tbody", {}, rows)));
  }

  async function save(unit) {
    try {
      if (state.names.has(unit)) {
        await api("POST", "/api/admin/units", { id: unit, room: state.names.get(unit).trim() || null });
        state.names.delete(unit);
      }
      if (state.edits.has(unit)) await api("PUT", "/api/admin/assignments", { unit, scribes: [...state.edits.get(unit)] });
      state.edits.delete(unit);
      document.activeElement?.blur();
      await refresh();
      renderAssign();
    } catch (e) {
      document.getElementById("admin-error").textContent = e.message;
    }
  }

  function renderAudit() {
    document.getElementById("audit").replaceChildren(h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Who"), h("th", {}, "What"), h("th", {}, "On"))),
      h("tbody", {}, state.audit.map((a) => h("tr", {},
        h("td", { class: "mono muted" }, fmtClock(a.at_us)), h("td", {}, a.actor), h("td", {}, a.action.replace(/_/g, " ")),
        h("td", { class: "muted" }, h("span", { class: "mono" }, a.target || ""), Object.keys(a.detail || {}).length ? h("span", { class: "muted" }, ` ${JSON.stringify(a.detail)}`) : ""))))));
  }

  async function refresh() {
    try {
      const [health, users, audit] = await Promise.all([api("GET", "/api/admin/health"), api("GET", "/api/admin/users"), api("GET", "/api/admin/audit?limit=200")]);
      state.health = health;
      state.users = users;
      state.audit = audit;
      document.getElementById("admin-error").textContent = "";
    } catch (e) {
      document.getElementById("admin-error").textContent = `Could not refresh: ${e.message}`;
      return;
    }
    renderKpis();
    renderUnits();
    if (!document.activeElement || !document.getElementById("assign").contains(document.activeElement)) renderAssign();
    renderAudit();
    await updates.refresh();
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
}
