// The browser's copy of the trust root (docs/trust.md; the owners are scribelink/trust.py and
// scribelink/keyshare.py, and tests/vectors/trust.json holds both to the same bytes):
// canonical JSON, Ed25519 statements and their chains (device endorsements, assignments,
// revocations, unit grants and bindings), the unit's message signatures, cue replies sealed
// under the session key and signed by this device, and key shares between a scribe's devices.
// Pure apart from WebCrypto: keys come in, answers or TrustErrors go out.

import { b64decode, b64encode, concat, fromHex, hex, hpkeOpen, hpkeSeal } from "./crypto.js";

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();
const td = new TextDecoder();

export const DOMAIN = "scribelink/v1 ";
export const DEVICE = "device";
export const GRANT = "unit_grant";
export const BINDING = "unit_binding";
export const ASSIGNMENT = "assignment";
export const REVOCATIONS = "revocations";
export const TOKEN = "token";
const TYPES = new Set([DEVICE, GRANT, BINDING, ASSIGNMENT, REVOCATIONS, TOKEN]);
const MAX_STATEMENT_BYTES = 16 * 1024;
const MAX_DEPTH = 8;
const MAX_INT = 2 ** 53;
export const REPLY_DOMAIN = "cue_reply";
export const SHARE_DOMAIN = "key_share";
export const CUE_REPLIES = Object.freeze(["seen", "got_it", "repeat", "see_me"]);
// the scribe confirming a read-back: the unit records consent (docs/console.md, "Consent")
export const CONSENT_REPLIES = Object.freeze(["consent_given", "consent_declined"]);

export class TrustError extends Error {}

const fail = (why) => { throw new TrustError(why); };

// ------------------------------------------------------------------ canonical JSON

function cmpCodePoints(a, b) {
  // Python sorts keys by code point; JavaScript's < compares UTF-16 code units
  const A = [...a];
  const B = [...b];
  for (let i = 0; i < Math.min(A.length, B.length); i++) {
    const d = A[i].codePointAt(0) - B[i].codePointAt(0);
    if (d) return d;
  }
  return A.length - B.length;
}

const SHORT_ESCAPES = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f" };

function canonicalString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    const c = s.charCodeAt(i);
    if (SHORT_ESCAPES[ch]) out += SHORT_ESCAPES[ch];
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`; // as ensure_ascii
    else out += ch;
  }
  return `${out}"`;
}

function canonicalValue(v, depth) {
  if (depth > MAX_DEPTH) fail("statement nested too deeply");
  if (v === null) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (typeof v === "string") return canonicalString(v);
  if (typeof v === "number") {
    if (!Number.isInteger(v)) fail("statements carry no floats (their text is not canonical)");
    if (Math.abs(v) > MAX_INT) fail("integers in statements must fit 53 bits (JavaScript numbers)");
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map((x) => canonicalValue(x, depth + 1)).join(",")}]`;
  if (typeof v === "object") {
    const keys = Object.keys(v).sort(cmpCodePoints);
    return `{${keys.map((k) => `${canonicalString(k)}:${canonicalValue(v[k], depth + 1)}`).join(",")}}`;
  }
  return fail(`statements carry no ${typeof v}`);
}

/** The text that is signed: sorted keys, no spaces, ASCII only, integers only (as Python's). */
export const canonical = (value) => canonicalValue(value, 0);
export const canonicalBytes = (value) => te.encode(canonical(value));

export const signedBytes = (t, body) => concat(te.encode(DOMAIN + t), Uint8Array.of(0), canonicalBytes(body));

const messageBytes = (domain, msg) => {
  const rest = { ...msg };
  delete rest.sig;
  return concat(te.encode(DOMAIN + domain), Uint8Array.of(0), canonicalBytes(rest));
};

// ------------------------------------------------------------------ keys

export async function keyId(publicRaw) {
  return hex(new Uint8Array(await subtle.digest("SHA-256", publicRaw))).slice(0, 16);
}

/** What a person compares: the whole SHA-256 of the key, in groups of four. */
export async function fingerprint(publicRaw) {
  const h = hex(new Uint8Array(await subtle.digest("SHA-256", publicRaw)));
  return h.match(/.{4}/g).join(" ");
}

export function unb64(s, what = "value", length = null) {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4) fail(`${what} must be base64 text`);
  const raw = b64decode(s);
  if (length !== null && raw.length !== length) fail(`${what} must be ${length} bytes, got ${raw.length}`);
  return raw;
}

/** An Ed25519 public key (raw 32 bytes or base64) as a verify-only CryptoKey. */
export async function ed25519Key(rawOrB64) {
  const raw = typeof rawOrB64 === "string" ? unb64(rawOrB64, "signing key", 32) : rawOrB64;
  if (!(raw instanceof Uint8Array) || raw.length !== 32) fail("an Ed25519 public key is 32 bytes");
  try {
    return await subtle.importKey("raw", raw, { name: "Ed25519" }, true, ["verify"]);
  } catch (e) {
    return fail("not an Ed25519 public key");
  }
}

async function ed25519Verify(publicKey, sig, data) {
  // (a unit's key may be ECDSA P-256 instead: see verifyBinding)
  const alg = publicKey.algorithm && publicKey.algorithm.name === "ECDSA"
    ? { name: "ECDSA", hash: "SHA-256" } : { name: "Ed25519" };
  try {
    return await subtle.verify(alg, publicKey, sig, data);
  } catch (e) {
    return false;
  }
}

const ed25519Sign = async (privateKey, data) => new Uint8Array(await subtle.sign({ name: "Ed25519" }, privateKey, data));

/** Refuse what no session key may be wrapped to: wrong length, or a low-order point. */
export async function checkX25519(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) fail("an X25519 public key is 32 bytes");
  try {
    const pub = await subtle.importKey("raw", raw, { name: "X25519" }, false, []);
    const eph = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, eph.privateKey, 256));
    if (dh.every((b) => b === 0)) throw new Error("all zero");
  } catch (e) {
    fail("X25519 key is a low-order point (it would protect nothing)");
  }
  return raw;
}

// ------------------------------------------------------------------ statements

/** {t, body, signer, sig} checked for shape (not yet for who signed it). */
export function statementFrom(d) {
  if (!d || typeof d !== "object" || Array.isArray(d)) fail("a signed statement is {t, body, signer, sig}");
  const keys = Object.keys(d).sort();
  if (keys.join(",") !== "body,sig,signer,t") fail("a signed statement is {t, body, signer, sig}");
  if (!TYPES.has(d.t)) fail(`unknown statement type ${JSON.stringify(d.t)}`);
  if (!d.body || typeof d.body !== "object" || Array.isArray(d.body) || typeof d.signer !== "string") {
    fail("statement body must be an object and signer a key id");
  }
  const sig = unb64(d.sig, "signature", 64);
  if (canonicalBytes(d.body).length > MAX_STATEMENT_BYTES) fail("statement too large");
  return { t: d.t, body: d.body, signer: d.signer, sig };
}

/** The body, if `publicRaw` signed this statement (of type `t`); else TrustError. */
export async function verifyStatement(st, publicRaw, t = null) {
  if (t !== null && st.t !== t) fail(`expected a ${t} statement, got ${st.t}`);
  const id = await keyId(publicRaw);
  if (st.signer !== id) fail(`${st.t} statement signed by ${st.signer}, not by ${id}`);
  if (!(await ed25519Verify(await ed25519Key(publicRaw), st.sig, signedBytes(st.t, st.body)))) {
    fail(`${st.t} statement: signature does not verify`);
  }
  return st.body;
}

/** Sign a statement with `privateKey` (Ed25519 CryptoKey) whose public half is `publicRaw`. */
export async function signStatement(t, body, privateKey, publicRaw) {
  if (!TYPES.has(t)) fail(`unknown statement type ${JSON.stringify(t)}`);
  return { t, body, signer: await keyId(publicRaw), sig: b64encode(await ed25519Sign(privateKey, signedBytes(t, body))) };
}

function str(body, k, maxLen = 128) {
  const v = body[k];
  if (typeof v !== "string" || v.length < 1 || v.length > maxLen) fail(`${k} must be text of 1..${maxLen} characters`);
  return v;
}

function int(body, k) {
  const v = body[k];
  if (!Number.isSafeInteger(v) || v < 0) fail(`${k} must be a non-negative integer`);
  return v;
}

// ------------------------------------------------------------------ devices

/** A device statement's body for this device's keys (to sign as the authority or a sibling). */
export async function deviceBody({ scribe, encKey, signKey, label, issuedUs, kind = "person" }) {
  await checkX25519(encKey);
  return {
    scribe, device: await keyId(signKey), enc_key: b64encode(encKey), sign_key: b64encode(signKey),
    label: label.slice(0, 64) || "device", kind, issued_us: issuedUs,
  };
}

async function deviceFrom(body, endorsedBy) {
  const signKey = unb64(body.sign_key, "sign_key", 32);
  const dev = {
    scribe: str(body, "scribe", 64), device: str(body, "device", 16),
    encKey: await checkX25519(unb64(body.enc_key, "enc_key", 32)), signKey,
    kind: str(body, "kind", 16), label: str(body, "label", 64), issuedUs: int(body, "issued_us"), endorsedBy,
  };
  if (dev.device !== await keyId(signKey)) fail("device id is not its signing key's id");
  if (dev.kind !== "person" && dev.kind !== "robot") fail("device kind must be person or robot");
  return dev;
}

/**
 * The devices whose endorsement holds (as scribelink.trust.endorsed_devices): signed by the
 * authority, or by a device the authority endorsed for the same scribe (one step). Revoked
 * devices and what they endorsed are out. Returns Map(device id -> device); why each
 * statement was refused is pushed to `rejected`.
 */
export async function endorsedDevices(authorityRaw, statements, revoked = new Set(), rejected = []) {
  const authId = await keyId(authorityRaw);
  const direct = new Map();
  const sibling = [];
  for (const d of statements) {
    try {
      const st = statementFrom(d);
      if (st.t !== DEVICE) continue;
      if (st.signer === authId) {
        const dev = await deviceFrom(await verifyStatement(st, authorityRaw, DEVICE), "authority");
        if (!revoked.has(dev.device)) direct.set(dev.device, dev);
      } else {
        sibling.push(st);
      }
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      rejected.push(e.message);
    }
  }
  const out = new Map(direct);
  for (const st of sibling) {
    const parent = direct.get(st.signer);
    if (!parent) {
      rejected.push(`device ${JSON.stringify(st.body.device)} endorsed by ${st.signer}, neither the authority nor an endorsed device`);
      continue;
    }
    let dev;
    try {
      dev = await deviceFrom(await verifyStatement(st, parent.signKey, DEVICE), parent.device);
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      rejected.push(e.message);
      continue;
    }
    if (dev.scribe === parent.scribe && !revoked.has(dev.device) && !out.has(dev.device)) out.set(dev.device, dev);
  }
  return out;
}

// ------------------------------------------------------------------ units, assignments, revocations

/**
 * A unit's signing key, if the authority granted its enrolment and the grant's code key
 * signed this binding: {unit, signKey (CryptoKey), keyId, issuedUs}.
 */
export async function verifyBinding(authorityRaw, d) {
  const st = statementFrom(d);
  if (st.t !== BINDING) fail("not a unit binding");
  const grant = statementFrom(st.body.grant);
  const g = await verifyStatement(grant, authorityRaw, GRANT);
  const b = await verifyStatement(st, unb64(g.code_key, "code_key", 32), BINDING);
  const unit = str(b, "unit", 64);
  if (unit !== g.unit) fail("binding names another unit than its grant");
  // bindings made before key types existed name none: theirs is Ed25519
  const keyType = b.key_type === undefined ? "ed25519" : b.key_type;
  let raw, signKey;
  if (keyType === "ed25519") {
    raw = unb64(b.sign_key, "sign_key", 32);
    signKey = await ed25519Key(raw);
  } else if (keyType === "ecdsa-p256") {
    // a unit whose key lives in a hardware token (ATECC608, TPM): P-256, signatures r||s
    raw = unb64(b.sign_key, "sign_key", 65);
    if (raw[0] !== 4) fail("an ecdsa-p256 key is a 65-byte uncompressed point");
    try {
      signKey = await subtle.importKey("raw", raw, { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]);
    } catch (e) {
      fail("ecdsa-p256 key is not a point on P-256");
    }
  } else {
    fail(`unknown unit key type ${JSON.stringify(keyType)}`);
  }
  return { unit, signKey, keyId: await keyId(raw), issuedUs: int(b, "issued_us"), keyType };
}

export async function verifyAssignment(authorityRaw, d, unit) {
  const body = await verifyStatement(statementFrom(d), authorityRaw, ASSIGNMENT);
  if (body.unit !== unit) fail("assignment is for another unit");
  if (!Array.isArray(body.scribes) || !body.scribes.every((s) => typeof s === "string")) fail("assignment: scribes must be a list of ids");
  int(body, "issued_us");
  return body;
}

/** Revoked unit keys (by time) and devices; a higher serial replaces a lower one. */
export class Revocations {
  constructor(serial = 0, units = [], devices = new Set()) {
    this.serial = serial;
    this.units = units; // [[unit, sign key id, after_us]]
    this.devices = devices;
  }

  unitRevoked(unit, signKeyId, atUs) {
    return this.units.some(([u, k, after]) => u === unit && k === signKeyId && atUs >= after);
  }
}

export async function verifyRevocations(authorityRaw, d) {
  if (d === null || d === undefined) return new Revocations();
  const body = await verifyStatement(statementFrom(d), authorityRaw, REVOCATIONS);
  const units = [];
  for (const u of body.units || []) {
    if (!u || typeof u !== "object") fail("revocations: malformed unit entry");
    units.push([str(u, "unit", 64), str(u, "sign_key_id", 16), int(u, "after_us")]);
  }
  const devices = body.devices || [];
  if (!Array.isArray(devices) || !devices.every((x) => typeof x === "string")) fail("revocations: devices must be ids");
  return new Revocations(int(body, "serial"), units, new Set(devices));
}

// ------------------------------------------------------------------ the unit's messages

/** Check a unit's signature (or a device's) over every field of `msg` but "sig", under `domain`. */
export async function verifyMessage(domain, msg, publicKey) {
  let sig;
  try {
    sig = unb64(msg.sig, "message signature", 64);
  } catch (e) {
    fail(`${domain}: ${e.message} (unsigned, or altered)`);
  }
  if (!(await ed25519Verify(publicKey, sig, messageBytes(domain, msg)))) {
    fail(`${domain}: signature does not verify (forged or altered)`);
  }
}

export async function signMessage(domain, msg, privateKey) {
  return b64encode(await ed25519Sign(privateKey, messageBytes(domain, msg)));
}

// ------------------------------------------------------------------ cue replies

const REPLY_INFO = te.encode("scribelink/v1 cue-reply");
const replyAad = (unit, session) => concat(te.encode("scribelink/v1 cue-reply"), Uint8Array.of(0), te.encode(unit), Uint8Array.of(0), te.encode(session));

async function replyHkdf(sessionKeyRaw) {
  return subtle.importKey("raw", sessionKeyRaw, "HKDF", false, ["deriveKey", "deriveBits"]);
}

const HKDF_PARAMS = { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: REPLY_INFO };

/** HKDF-SHA256(session key, "scribelink/v1 cue-reply") as a non-extractable AES-256-GCM key. */
export async function replyKey(sessionKeyRaw) {
  return subtle.deriveKey(HKDF_PARAMS, await replyHkdf(sessionKeyRaw), { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/** The same key's bytes (for the vectors only). */
export async function replyKeyBytes(sessionKeyRaw) {
  return new Uint8Array(await subtle.deriveBits(HKDF_PARAMS, await replyHkdf(sessionKeyRaw), 256));
}

/**
 * A scribe device's reply to a cue: signed by the device (`signKey`: its Ed25519 private
 * CryptoKey, `device`: its id), sealed under the session's reply key. Base64 nonce || ct.
 */
export async function sealReply(key, { unit, session, cueId, reply, atUs, signKey, device }) {
  if (!CUE_REPLIES.includes(reply) && !CONSENT_REPLIES.includes(reply)) fail(`unknown reply ${JSON.stringify(reply)}`);
  const body = { cue_id: cueId, reply, device, at_us: atUs };
  body.sig = await signMessage(REPLY_DOMAIN, { ...body, unit, session }, signKey);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: replyAad(unit, session) }, key, canonicalBytes(body)));
  return b64encode(concat(nonce, ct));
}

/** The reply's body if it opens under this session's reply key (its signature: verifyReply). */
export async function openReply(key, { unit, session, sealed }) {
  const raw = unb64(sealed, "sealed reply");
  if (!(raw.length > 12 + 16 && raw.length <= 2048)) fail("sealed reply has an implausible length");
  let plain;
  try {
    plain = await subtle.decrypt({ name: "AES-GCM", iv: raw.subarray(0, 12), additionalData: replyAad(unit, session) }, key, raw.subarray(12));
  } catch (e) {
    fail("cue reply does not open under this session's key (forged?)");
  }
  let body;
  try {
    body = JSON.parse(td.decode(plain));
  } catch (e) {
    fail("cue reply is not JSON");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) fail("cue reply must be an object");
  return body;
}

/** The body, if `device` (an endorsed device) signed this reply for this session. */
export async function verifyReply(body, { unit, session, device }) {
  if (body.device !== device.device) fail("cue reply names another device");
  await verifyMessage(REPLY_DOMAIN, { ...body, unit, session }, await ed25519Key(device.signKey));
  int(body, "cue_id");
  int(body, "at_us");
  str(body, "reply", 16);
  return body;
}

// ------------------------------------------------------------------ key shares

const WRAPPED_LEN = 32 + 32 + 16;

export function shareInfo(unit, session, kid) {
  return concat(te.encode(`scribelink/v1 key-share|${unit}|`), fromHex(session), te.encode(`|${kid}`));
}

/** A key share checked for shape and bounds (scribelink.keyshare.KeyShare.from_dict). */
export function keyShareFrom(d) {
  if (!d || typeof d !== "object" || d.type !== "key_share" || d.v !== 1) fail("not a key share");
  for (const [k, n] of [["unit", 64], ["to_device", 16], ["key_id", 16], ["from_device", 16]]) str(d, k, n);
  if (typeof d.session !== "string" || !/^[0-9a-f]{32}$/.test(d.session)) fail("key share: session must be 32 lowercase hex digits");
  unb64(d.wrapped, "key share: wrapped", WRAPPED_LEN);
  unb64(d.sig, "key share: sig", 64);
  int(d, "issued_us");
  return d;
}

/**
 * Hand `sessionKeyRaw` to device `to` (an endorsed device of this scribe), sealed to its
 * X25519 key and signed by this device (`signKey`, id `fromDevice`).
 */
export async function makeShare(sessionKeyRaw, { unit, session, to, signKey, fromDevice, issuedUs }) {
  const kid = await keyId(to.encKey);
  const wrapped = await hpkeSeal(to.encKey, sessionKeyRaw, shareInfo(unit, session, kid));
  const share = {
    type: "key_share", v: 1, unit, session, to_device: to.device, key_id: kid, from_device: fromDevice,
    wrapped: b64encode(wrapped), issued_us: issuedUs,
  };
  share.sig = await signMessage(SHARE_DOMAIN, share, signKey);
  return share;
}

/**
 * The sharing device, if `share` is for `me` ({device, encKeyId, scribe}) and signed by an
 * endorsed device of the same scribe (`devices`: endorsedDevices' map); else TrustError.
 */
export async function verifyShare(share, { me, devices }) {
  keyShareFrom(share);
  if (share.to_device !== me.device || share.key_id !== me.encKeyId) fail("this key share is for another device");
  const sender = devices.get(share.from_device);
  if (!sender) fail("key share signed by a device the clinic did not endorse");
  if (sender.scribe !== me.scribe) fail("key share from another scribe's device");
  await verifyMessage(SHARE_DOMAIN, share, await ed25519Key(sender.signKey));
  return sender;
}

/** The raw session key a (verified) share carries, opened with this device's X25519 key. */
export async function openShare(share, identity) {
  let key;
  try {
    key = await hpkeOpen(identity.privateKey, identity.publicRaw, unb64(share.wrapped, "wrapped"),
      shareInfo(share.unit, share.session, share.key_id));
  } catch (e) {
    fail("key share does not open with this device's key");
  }
  if (key.length !== 32) fail("key share holds no session key");
  return key;
}
