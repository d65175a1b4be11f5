// The admin view's first screen: what needs attention (alerts: units offline, spools
// filling, dead mics, certificates expiring, unit alarms), a few numbers, each unit's
// health, fleet updates (js/updates.js draws that card's body), and the sealed archive's
// retention and purge.

import { h } from "../dom.js";
import { ask, busy, fmtRel } from "./ui.js";

const KIND = {
  unit_offline: "offline", spool_filling: "spool filling", mic_dead: "mic dead",
  cert_expiring: "certificate", unit_alarm: "alarm",
};

export function renderOverview(root, model, { report, note }) {
  root.replaceChildren(
    h("div", { class: "kpis", id: "kpis" }),
    h("div", { class: "card" }, h("header", {}, h("h2", {}, "Alerts"), h("span", { class: "muted" }, "what needs clinic IT now")), h("div", { id: "alerts" })),
    h("div", { class: "card" }, h("header", {}, h("h2", {}, "Unit health"), h("span", { class: "muted" }, "from each unit's retained status")), h("div", { id: "health" })),
    h("div", { class: "card" },
      h("header", {}, h("h2", {}, "Updates"), h("span", { class: "muted" }, "signed releases, offered between encounters; what each unit runs and reports")),
      h("div", { id: "updates", style: "padding:10px 14px" })),
    h("div", { class: "card" }, h("header", {}, h("h2", {}, "Sealed archive"), h("span", { class: "muted" }, "the relay keeps sealed sessions for replay; it cannot open them")), h("div", { id: "archive" })),
  );

  function render() {
    const hl = model.health;
    if (!hl) return;
    const units = model.fleet.filter((u) => !u.revoked_us);
    const online = units.filter((u) => u.state !== "offline").length;
    const spool = units.reduce((a, u) => a + Number(((u.status || {}).spool || {}).seconds || 0), 0);
    const crit = model.alerts.filter((a) => a.severity === "critical").length;
    const mb = (model.archive.bytes / 1e6).toFixed(1);
    document.getElementById("kpis").replaceChildren(
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Units online"), h("div", { class: "v" }, `${online} / ${units.length}`)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Broker link"), h("div", { class: `v ${hl.broker ? "state-live" : "state-offline"}` }, hl.broker ? "Connected" : "Down")),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Audio waiting on units"), h("div", { class: "v" }, `${spool.toFixed(0)} s`)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, "Alerts"), h("div", { class: `v ${crit ? "state-paused" : ""}`, id: "kpi-alerts" }, model.alerts.length)),
      h("div", { class: "kpi" }, h("div", { class: "k" }, `Sealed archive · keeps ${model.archive.retention_days} d`), h("div", { class: "v" }, `${model.archive.sessions} sessions · ${mb} MB`)),
    );
    const rows = model.alerts.map((a) => h("tr", { "data-alert": a.kind, "data-unit": a.unit },
      h("td", {}, h("span", { class: `chip ${a.severity === "critical" ? "bad" : "warn"}` }, a.severity)),
      h("td", {}, KIND[a.kind] || a.kind), h("td", {}, h("b", {}, a.room || "—"), h("span", { class: "muted mono" }, ` ${a.unit}`)),
      h("td", {}, a.message), h("td", { class: "muted" }, a.since_us ? fmtRel(a.since_us) : "")));
    document.getElementById("alerts").replaceChildren(rows.length ? h("table", { class: "list" }, h("tbody", {}, rows))
      : h("div", { class: "empty" }, "Nothing needs attention."));
    const health = model.fleet.filter((u) => !u.revoked_us).map((u) => {
      const st = u.status || {};
      const spool = st.spool || {};
      const mics = st.mics || {};
      const bad = [...(mics.dead || []).map((c) => `ch${c} dead`), ...(mics.clipping || []).map((c) => `ch${c} clipping`)];
      return h("tr", { "data-unit": u.id },
        h("td", {}, h("span", { class: `dot ${u.state}`, style: "display:inline-block;margin-right:8px" }), h("b", {}, u.room || "—"), h("span", { class: "muted mono" }, ` ${u.id}`)),
        h("td", {}, st.link || (st.online === false ? "lost" : "—")),
        h("td", { class: "mono" }, spool.records === undefined ? "—" : `${spool.records} · ${Number(spool.seconds || 0).toFixed(1)} s`),
        h("td", {}, bad.length ? h("span", { class: "state-paused" }, bad.join(", ")) : h("span", { class: "muted" }, "ok")),
        h("td", {}, st.puck ? (st.puck.connected ? "connected" : h("span", { class: "state-paused" }, "unplugged")) : h("span", { class: "muted" }, "—")),
        h("td", { class: st.last_error ? "state-paused" : "muted" }, st.last_error || "none"),
        h("td", { class: "muted" }, u.status_at_us ? fmtRel(u.status_at_us) : "never"));
    });
    document.getElementById("health").replaceChildren(health.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Unit", "Link", "Spool", "Mics", "Puck", "Last error", "Status"].map((t) => h("th", {}, t)))), h("tbody", {}, health))
      : h("div", { class: "empty" }, "No units yet."));
    const arc = document.getElementById("archive");
    if (arc.contains(document.activeElement) && document.activeElement.tagName !== "BUTTON") return;
    arc.replaceChildren(h("div", { class: "inline-form", style: "padding:10px 14px" },
      h("span", {}, `${model.archive.sessions} sessions, ${model.archive.items} sealed items, ${mb} MB`),
      model.archive.oldest_opened_us ? h("span", { class: "muted" }, ` · oldest ${fmtRel(model.archive.oldest_opened_us)}`) : null,
      h("div", { class: "spacer" }),
      h("label", {}, "Keep sessions ", h("input", { id: "retention-days", type: "number", min: "0.1", step: "0.5", value: model.archive.retention_days, style: "width:6em" }), " days"),
      h("button", { id: "retention-save", onclick: (e) => saveRetention(e.currentTarget) }, "Save"),
      h("button", { id: "purge-now", class: "danger", onclick: (e) => purge(e.currentTarget) }, "Purge older now")));
  }

  async function saveRetention(button) {
    const days = Number(document.getElementById("retention-days").value);
    await busy(button, async () => {
      await model.api("PUT", "/api/admin/archive/retention", { days });
      note(`The archive now keeps sessions ${days} days.`);
      await model.refresh();
    }, report);
  }

  async function purge(button) {
    const days = model.archive.retention_days;
    if (await ask("Purge the archive now?", h("p", {}, `Sealed sessions that ended more than ${days} days ago are deleted now (the hourly purge would do the same).`), [{ label: "Purge", value: true, danger: true }]) !== true) return;
    await busy(button, async () => {
      const r = await model.api("POST", "/api/admin/archive/purge", {});
      note(`${r.sessions} session(s) purged.`);
      await model.refresh();
    }, report);
  }

  model.onChange(render);
  render();
  return { updates: document.getElementById("updates") };
}
