// This browser as one of the scribe's devices (docs/trust.md): its two keys, made here and
// kept in IndexedDB as non-extractable CryptoKeys, per user (X25519: session keys are wrapped
// to it; Ed25519: it signs replies to cues, key shares and a sibling's endorsement); the
// clinic authority pinned at first use; and what the relay says about this scribe's devices,
// believed only where the pinned authority's signatures hold.

import { b64decode, b64encode, keyId as x25519KeyId } from "./crypto.js";
import {
  DEVICE, TrustError, deviceBody, endorsedDevices, fingerprint, keyId, signStatement, unb64, verifyRevocations,
} from "./trust.js";

const subtle = globalThis.crypto.subtle;
const DB_NAME = "scribelink-console";
const STORE = "keys";
const AUTHORITY = "authority"; // the pinned clinic authority (one per relay: IndexedDB is per origin)

export class AuthorityChanged extends Error {
  constructor(pinned, offered) {
    super("the relay names another clinic authority than the one this browser trusts");
    this.pinned = pinned; // {public, fingerprint}
    this.offered = offered;
  }
}

export class NoAuthority extends Error {}

// ------------------------------------------------------------------ IndexedDB

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function idbDo(mode, fn) {
  const db = await idb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => { db.close(); resolve(req.result); };
    tx.onerror = () => { db.close(); reject(tx.error); };
  });
}

/** A name for this device the admin and the scribe's other devices will see. */
export function defaultLabel(nav = navigator) {
  const ua = nav.userAgent || "";
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chrome"
    : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Windows/.test(ua) ? "Windows" : /Mac OS X/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
  const day = new Date().toISOString().slice(0, 10);
  return `${browser}${os ? ` on ${os}` : ""}, ${day}`;
}

/**
 * This browser's keys for `userId`, made on first use: {enc: {privateKey, publicRaw, keyId},
 * sign: {privateKey, publicRaw}, device (its id), label}. The private keys cannot be exported.
 */
export async function loadOrCreateKeys(userId) {
  const name = `device:${userId}`;
  let rec = await idbDo("readonly", (s) => s.get(name));
  if (!rec) {
    const enc = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const sign = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    rec = {
      enc: { privateKey: enc.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", enc.publicKey)) },
      sign: { privateKey: sign.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", sign.publicKey)) },
      label: defaultLabel(), created: Date.now(),
    };
    await idbDo("readwrite", (s) => s.put(rec, name));
  }
  return {
    enc: { privateKey: rec.enc.privateKey, publicRaw: rec.enc.publicRaw, keyId: await x25519KeyId(rec.enc.publicRaw) },
    sign: { privateKey: rec.sign.privateKey, publicRaw: rec.sign.publicRaw },
    device: await keyId(rec.sign.publicRaw), label: rec.label,
  };
}

/**
 * The clinic authority this browser trusts: pinned the first time the relay names one, never
 * silently replaced. Returns {public (raw), b64, fingerprint}; throws AuthorityChanged or
 * NoAuthority.
 */
export async function pinAuthority(offeredB64) {
  const pinned = await idbDo("readonly", (s) => s.get(AUTHORITY));
  if (pinned) {
    if (offeredB64 && offeredB64 !== pinned.public) {
      throw new AuthorityChanged(pinned, { public: offeredB64, fingerprint: await fingerprint(unb64(offeredB64, "authority", 32)) });
    }
    return { public: b64decode(pinned.public), b64: pinned.public, fingerprint: pinned.fingerprint, pinnedAt: pinned.at };
  }
  if (!offeredB64) throw new NoAuthority("this relay names no clinic authority yet");
  const raw = unb64(offeredB64, "authority", 32);
  const rec = { public: offeredB64, fingerprint: await fingerprint(raw), at: Date.now() };
  await idbDo("readwrite", (s) => s.put(rec, AUTHORITY));
  return { public: raw, b64: offeredB64, fingerprint: rec.fingerprint, pinnedAt: rec.at, fresh: true };
}

// ------------------------------------------------------------------ the device and its siblings

/**
 * This browser as one of the scribe's devices, with what the relay says about the scribe's
 * devices and the authority's revocations, each checked here. `api`: js/net.js Api.
 */
export class Device {
  constructor({ user, keys, authority, api }) {
    this.user = user;
    this.keys = keys;
    this.authority = authority; // {public, b64, fingerprint}
    this.api = api;
    this.id = keys.device;
    this.mine = new Map(); // the scribe's endorsed devices (this one included once endorsed)
    this.pending = []; // the scribe's devices waiting for an endorsement (relay's view)
    this.rejected = []; // why statements the relay handed over did not hold
    this.revocations = null;
    this.rooms = new Map(); // unit -> {at, devices: Map}: devices of the room's scribes
  }

  static async open(user, api) {
    const keys = await loadOrCreateKeys(user);
    const t = await api.call("GET", "/api/trust");
    const authority = await pinAuthority(t.authority);
    const dev = new Device({ user, keys, authority, api });
    await dev.register();
    await dev.refresh(t);
    return dev;
  }

  get identity() {
    return this.keys.enc; // what js/receiver.js opens session keys with
  }

  /** This device's own entry, if its endorsement holds. */
  get me() {
    return this.mine.get(this.id) || null;
  }

  get endorsed() {
    return !!this.me;
  }

  /** An endorsed device may vouch for a sibling only if the authority endorsed it directly. */
  get canApprove() {
    return !!this.me && this.me.endorsedBy === "authority";
  }

  async fingerprint() {
    return fingerprint(this.keys.sign.publicRaw);
  }

  async register() {
    return this.api.call("PUT", "/api/me/device", {
      enc_key: b64encode(this.keys.enc.publicRaw), sign_key: b64encode(this.keys.sign.publicRaw),
      label: this.keys.label, kind: "person",
    });
  }

  /** Re-read this scribe's devices and the revocations; `t`: a GET /api/trust already made. */
  async refresh(t = null) {
    t = t || (await this.api.call("GET", "/api/trust"));
    if (t.authority && t.authority !== this.authority.b64) {
      throw new AuthorityChanged(this.authority, { public: t.authority, fingerprint: t.fingerprint });
    }
    try {
      const rv = await verifyRevocations(this.authority.public, t.revocations || null);
      if (!this.revocations || rv.serial >= this.revocations.serial) this.revocations = rv;
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      this.rejected.push(`revocations: ${e.message}`);
    }
    const list = await this.api.call("GET", "/api/me/devices");
    const rejected = [];
    this.mine = await endorsedDevices(this.authority.public, list.filter((d) => d.endorsement).map((d) => d.endorsement),
      this.revocations?.devices || new Set(), rejected);
    for (const [id, d] of this.mine) if (d.scribe !== this.user) this.mine.delete(id);
    this.rejected = rejected;
    this.pending = list.filter((d) => !d.endorsement && d.device !== this.id);
    for (const p of this.pending) p.fingerprint = (await fingerprint(unb64(p.sign_key, "sign_key", 32))).slice(0, 19);
    this.list = list;
    return this;
  }

  /** The scribe's endorsed devices other than this one. */
  siblings() {
    return [...this.mine.values()].filter((d) => d.device !== this.id);
  }

  /** Endorse a sibling that is waiting (signed here; the relay tells the admin). */
  async approve(pending) {
    if (!this.canApprove) throw new TrustError("only a device the clinic approved itself can approve another");
    const body = await deviceBody({
      scribe: this.user, encKey: unb64(pending.enc_key, "enc_key", 32), signKey: unb64(pending.sign_key, "sign_key", 32),
      label: pending.label, issuedUs: Math.floor(Date.now() * 1000), kind: pending.kind,
    });
    if (body.device !== pending.device) throw new TrustError("the waiting device's id is not its key's");
    const st = await signStatement(DEVICE, body, this.keys.sign.privateKey, this.keys.sign.publicRaw);
    await this.api.call("POST", `/api/me/devices/${pending.device}/endorsement`, { statement: st });
    await this.refresh();
  }

  /**
   * An endorsed device of `unit`'s scribes (for replies to cues), or null. The room's
   * endorsements are fetched again (at most every 5 s) when a device is not known yet.
   */
  async roomDevice(unit, deviceId) {
    if (this.mine.has(deviceId)) return this.mine.get(deviceId);
    let room = this.rooms.get(unit);
    if (!room || (!room.devices.has(deviceId) && Date.now() - room.at > 5000)) {
      const got = await this.api.call("GET", `/api/console/units/${encodeURIComponent(unit)}/devices`);
      const devices = await endorsedDevices(this.authority.public, got.devices || [], this.revocations?.devices || new Set());
      room = { at: Date.now(), devices };
      this.rooms.set(unit, room);
    }
    return room.devices.get(deviceId) || null;
  }
}
