// What the admin view shows, fetched from the relay's admin API, and the signed actions
// that change it. Every statement only the clinic authority may make is signed here, in
// the browser, with the unlocked authority (js/admin/authority.js); the relay gets the
// statement, never the key.

import { makeEnrolment } from "./enrolcode.js";
import { randomHex } from "./authority.js";
import { nowUs } from "./ui.js";

export class AdminModel {
  /** `api(method, path, body)`: the relay's API with the admin's token. */
  constructor(api) {
    this.api = api;
    this.authority = null; // the unlocked clinic authority, for this page's life
    this.relay = null;
    this.fleet = [];
    this.people = [];
    this.rooms = [];
    this.alerts = [];
    this.pendingDevices = [];
    this.requests = [];
    this.archive = null;
    this.health = null;
    this.listeners = new Set();
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  changed() {
    for (const fn of this.listeners) fn(this);
  }

  async refresh() {
    const [relay, fleet, people, rooms, alerts, pending, requests, archive, health] = await Promise.all([
      this.api("GET", "/api/admin/relay"), this.api("GET", "/api/admin/fleet"), this.api("GET", "/api/admin/people"),
      this.api("GET", "/api/admin/rooms"), this.api("GET", "/api/admin/alerts"),
      this.api("GET", "/api/admin/devices?pending=true"), this.api("GET", "/api/admin/token-requests"),
      this.api("GET", "/api/admin/archive"), this.api("GET", "/api/admin/health"),
    ]);
    Object.assign(this, { relay, fleet, people, rooms, alerts, pendingDevices: pending, requests, archive, health });
    this.changed();
  }

  get scribes() {
    return this.people.filter((p) => p.role === "scribe");
  }

  unit(id) {
    return this.fleet.find((u) => u.id === id) || null;
  }

  need() {
    if (!this.authority) throw new Error("Unlock the clinic authority first (at the top of this page): only it can sign this.");
    return this.authority;
  }

  // ---------------------------------------------------------------- the authority

  async registerAuthority() {
    const a = this.need();
    return this.api("PUT", "/api/admin/authority", { public_key: a.publicB64 });
  }

  // ---------------------------------------------------------------- signed actions

  async assign(unit, scribes) {
    const u = this.unit(unit);
    const st = await this.need().assign({ unit, room: u?.room || "", scribes, nowUs: nowUs() });
    return this.api("PUT", "/api/admin/assignments", { statement: st });
  }

  /** A new enrolment code for `unit` in `room`: {text, unit, room, expires_us, code_id}. */
  async enrolmentCode(unit, room, ttlS = 3600) {
    const a = this.need();
    const relay = this.relay || await this.api("GET", "/api/admin/relay");
    const e = await makeEnrolment({ authority: a, unit, room, clinic: relay.clinic_name, relayUrl: relay.public_url, ttlS, nowUs: nowUs() });
    try {
      const got = await this.api("POST", "/api/admin/enrolment-grants", e.request);
      return { text: e.text(got.broker_url), unit, room, expires_us: got.expires_us, code_id: got.code_id, relay: relay.public_url };
    } finally {
      e.forget();
    }
  }

  async currentRevocations() {
    const t = await this.api("GET", "/api/trust");
    return t.revocations ? t.revocations.body : { serial: 0, units: [], devices: [] };
  }

  /** Revoke a unit: every signing key bound to it, from now; and its transport certificates. */
  async revokeUnit(unit) {
    const a = this.need();
    const cur = await this.currentRevocations();
    const bindings = await this.api("GET", `/api/admin/units/${encodeURIComponent(unit)}/bindings`);
    const now = nowUs();
    const units = [...cur.units, ...bindings.map((b) => ({ unit, sign_key_id: b.key_id, after_us: now }))];
    const st = await a.revocations({ serial: cur.serial + 1, units, devices: cur.devices, nowUs: now });
    return this.api("POST", `/api/admin/units/${encodeURIComponent(unit)}/revoke`, { statement: st });
  }

  async revokeDevices(devices) {
    const a = this.need();
    const cur = await this.currentRevocations();
    const st = await a.revocations({ serial: cur.serial + 1, units: cur.units, devices: [...cur.devices, ...devices], nowUs: nowUs() });
    return this.api("PUT", "/api/admin/revocations", { statement: st });
  }

  async approveDevice(device) {
    const d = this.pendingDevices.find((x) => x.device === device);
    if (!d) throw new Error(`device ${device} is no longer waiting`);
    const st = await this.need().endorseDevice(d, nowUs());
    return this.api("POST", "/api/admin/endorsements", { statement: st });
  }

  async approveRequest(id, ttlS = 3600) {
    const r = await this.api("GET", `/api/admin/token-requests/${encodeURIComponent(id)}`);
    const st = await this.need().token({ unit: r.unit, action: r.action, tokenId: randomHex(8), nowUs: nowUs(), ttlS, args: r.args || {} });
    return this.api("POST", `/api/admin/token-requests/${encodeURIComponent(id)}`, { statement: st });
  }
}
