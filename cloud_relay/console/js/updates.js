// Clinic IT view, fleet updates: each unit's version, update state and last health, the
// refusals units reported (with their reason), offering an uploaded release to a unit, the
// units of some rooms or a percentage of the fleet, and diagnostics bundles sealed to the
// admin's own key. The relay's API: cloud_relay/updates.py; docs/updates.md.

import { fmtClock, h } from "./dom.js";

const TROUBLE = new Set(["refused", "rolled_back", "failed"]);

const mb = (n) => `${(Number(n || 0) / 1e6).toFixed(1)} MB`;
const when = (us) => (us ? fmtClock(us) : "—");

function updateText(u) {
  const up = u.update || {};
  if (up.trial) return `on trial (${up.trial})`;
  if (up.state && up.to) return `${up.state.replace(/_/g, " ")} ${up.to}`;
  return up.state ? up.state.replace(/_/g, " ") : "—";
}

function healthText(u) {
  const hl = u.health || (u.last_report && u.last_report.detail && u.last_report.detail.health);
  if (!hl) return h("span", { class: "muted" }, "—");
  const ok = hl.state === "pass";
  return h("span", { class: ok ? "state-live" : "state-paused", title: hl.reason || "" },
    `${ok ? "passed" : hl.state}${hl.version ? ` on ${hl.version}` : ""}${hl.reason ? `: ${hl.reason}` : ""}`);
}

/** The updates card's body; `api(method, path, body)` as the admin view passes it. */
export function renderUpdatesPanel(root, { api }) {
  const state = { view: null, error: "", note: "", diagKey: "" };

  root.replaceChildren(
    h("div", { id: "updates-offer", class: "updates-offer" }),
    h("div", { id: "updates-fleet" }),
    h("div", { class: "two-col" },
      h("div", {}, h("h3", {}, "Reports from units"), h("div", { id: "updates-reports", style: "max-height:300px;overflow-y:auto" })),
      h("div", {}, h("h3", {}, "Diagnostics"), h("div", { id: "updates-diag" }))),
    h("div", { class: "error", id: "updates-error" }),
  );

  function renderOffer() {
    const v = state.view;
    const box = document.getElementById("updates-offer");
    if (!v || box.contains(document.activeElement)) return;
    const releases = v.releases.map((r) => h("option", { value: r.id }, `${r.version} · ${r.hardware.join(", ")} · ${mb(r.size)} · signed ${r.signer || "by nobody"}`));
    box.replaceChildren(
      h("label", {}, "Release ", h("select", { id: "offer-release" }, releases.length ? releases : h("option", { value: "" }, "none uploaded (scripts/release upload)"))),
      h("label", {}, " to ", h("select", { id: "offer-kind" },
        h("option", { value: "units" }, "units"), h("option", { value: "rooms" }, "rooms"), h("option", { value: "percent" }, "% of the fleet"))),
      h("input", { id: "offer-target", placeholder: "unit ids, room names (comma-separated) or a percentage", size: 36 }),
      h("input", { id: "offer-permit", placeholder: "downgrade permit JSON (only to go back)", size: 26 }),
      h("button", { class: "primary", id: "offer-send", disabled: !releases.length, onclick: offer }, "Offer"),
      h("span", { class: "muted", id: "offer-note" }, state.note),
    );
  }

  async function offer() {
    const kind = document.getElementById("offer-kind").value;
    const raw = document.getElementById("offer-target").value.trim();
    const permitText = document.getElementById("offer-permit").value.trim();
    const body = { release: document.getElementById("offer-release").value };
    try {
      if (kind === "percent") body.percent = Number(raw);
      else body[kind] = raw.split(",").map((s) => s.trim()).filter(Boolean);
      if (permitText) body.permit = JSON.parse(permitText);
      const r = await api("POST", "/api/admin/updates/offers", body);
      state.note = `offered ${r.version} to ${r.units.length} unit(s): ${r.units.join(", ")}`;
      document.getElementById("updates-error").textContent = "";
    } catch (e) {
      document.getElementById("updates-error").textContent = e.message;
      return;
    }
    document.activeElement?.blur();
    await refresh();
  }

  async function requestDiagnostics(unit) {
    const key = (document.getElementById("diag-key")?.value || state.diagKey).trim();
    state.diagKey = key;
    try {
      await api("POST", `/api/admin/units/${encodeURIComponent(unit)}/diagnostics`, { public_key: key });
      state.note = `asked ${unit} for diagnostics`;
      document.getElementById("updates-error").textContent = "";
    } catch (e) {
      document.getElementById("updates-error").textContent = `${e.message} (make a key with scripts/diagnostics keygen)`;
    }
    await refresh();
  }

  async function saveBundle(d) {
    try {
      const b = await api("GET", `/api/admin/diagnostics/${d.id}`);
      const url = URL.createObjectURL(new Blob([JSON.stringify(b)], { type: "application/json" }));
      const a = h("a", { href: url, download: `diagnostics-${d.unit}-${d.id}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      document.getElementById("updates-error").textContent = e.message;
    }
  }

  function renderFleet() {
    const v = state.view;
    if (!v) return;
    const rows = v.units.map((u) => {
      const bad = u.last_refusal;
      return h("tr", { "data-unit": u.id },
        h("td", {}, h("b", {}, u.room || "—"), h("div", { class: "muted mono" }, u.id)),
        h("td", { class: "mono" }, u.version || "—"),
        h("td", {}, updateText(u), u.update && u.update.gate ? h("div", { class: "muted" }, u.update.gate) : null),
        h("td", { style: "max-width:260px" }, healthText(u)),
        h("td", { class: bad ? "state-paused" : "muted", style: "max-width:320px" },
          bad ? `${bad.state.replace(/_/g, " ")} ${bad.to || ""} [${bad.code || "-"}]: ${bad.reason || ""}` : "none"),
        h("td", {}, h("div", { class: "actions" }, h("button", { "data-diag": u.id, onclick: () => requestDiagnostics(u.id) }, "Diagnostics"))));
    });
    document.getElementById("updates-fleet").replaceChildren(h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Room", "Version", "Update", "Last health", "Last refusal", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
  }

  function renderReports() {
    const v = state.view;
    if (!v) return;
    document.getElementById("updates-reports").replaceChildren(h("table", { class: "list" },
      h("tbody", {}, v.reports.map((r) => h("tr", { class: TROUBLE.has(r.state) ? "state-paused" : "", "data-report": r.state },
        h("td", { class: "mono muted" }, when(r.received_us)),
        h("td", { class: "mono" }, r.unit),
        h("td", {}, `${r.state.replace(/_/g, " ")} ${r.to || ""}`),
        h("td", {}, r.code ? `[${r.code}] ` : "", r.reason || ""))))));
  }

  function renderDiagnostics() {
    const v = state.view;
    if (!v) return;
    const box = document.getElementById("updates-diag");
    if (box.contains(document.activeElement)) return;
    box.replaceChildren(
      h("input", { id: "diag-key", value: state.diagKey, size: 48, placeholder: "your X25519 public key (base64): bundles are sealed to it" }),
      h("table", { class: "list" }, h("tbody", {}, v.diagnostics.map((d) => h("tr", {},
        h("td", { class: "mono" }, d.unit),
        h("td", { class: "muted" }, `asked by ${d.requested_by} at ${when(d.requested_us)}`),
        h("td", {}, d.uploaded_us ? h("button", { onclick: () => saveBundle(d) }, `Save sealed bundle (${d.size} B)`) : h("span", { class: "muted" }, "waiting for the unit")))))));
  }

  async function refresh() {
    try {
      state.view = await api("GET", "/api/admin/updates");
    } catch (e) {
      document.getElementById("updates-error").textContent = `Could not refresh updates: ${e.message}`;
      return;
    }
    renderOffer();
    const note = document.getElementById("offer-note");
    if (note) note.textContent = state.note;
    renderFleet();
    renderReports();
    renderDiagnostics();
  }

  return { refresh };
}
