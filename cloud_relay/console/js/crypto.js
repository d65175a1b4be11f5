// The browser's half of the sealed-envelope contract (scribelink/envelope.py is the owner):
// parse the clear header, open a wrapped session key with HPKE (RFC 9180 base mode,
// DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM, single-shot) and open chunks with
// AES-256-GCM, all on WebCrypto; and HPKE seal, for key shares between a scribe's devices
// (js/trust.js). The device's private key never leaves a CryptoKey (js/device.js keeps it).

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();
const EMPTY = new Uint8Array(0);

export const TYPE_AUDIO = 1;
export const TYPE_EVENT = 2;
export const FLAG_FINAL = 0x0001;
const FIXED_LEN = 49;
const TAG_LEN = 16;
const MAX_UNIT_ID_LEN = 64;
const MAX_BODY_LEN = 1 << 20;

export class EnvelopeError extends Error {}
export class OpenError extends Error {}

// ------------------------------------------------------------------ bytes

export function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(u8) {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function hex(u8) {
  return Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function i2osp(n, len) {
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--, n = Math.floor(n / 256)) out[i] = n & 0xff;
  return out;
}

export async function sha256Hex(data) {
  return hex(new Uint8Array(await subtle.digest("SHA-256", data)));
}

// ------------------------------------------------------------------ envelope header

export function parseHeader(frame) {
  if (frame.length < FIXED_LEN) throw new EnvelopeError(`frame too short (${frame.length} bytes)`);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame[0] !== 0x53 || frame[1] !== 0x4c) throw new EnvelopeError("bad magic");
  const version = frame[2];
  const type = frame[3];
  const codec = frame[4];
  const channels = frame[5];
  const flags = dv.getUint16(6);
  const sessionId = frame.slice(8, 24);
  const seq = Number(dv.getBigUint64(24));
  const captureUs = Number(dv.getBigUint64(32));
  const sampleRate = dv.getUint32(40);
  const sampleCount = dv.getUint32(44);
  const ulen = frame[48];
  if (version !== 1) throw new EnvelopeError(`unsupported envelope version ${version}`);
  if (type !== TYPE_AUDIO && type !== TYPE_EVENT) throw new EnvelopeError(`unknown type ${type}`);
  if (codec !== 0 && codec !== 1 && codec !== 2) throw new EnvelopeError(`unknown codec ${codec}`);
  if (ulen < 1 || ulen > MAX_UNIT_ID_LEN) throw new EnvelopeError("bad unit id length");
  const end = FIXED_LEN + ulen;
  if (frame.length < end + TAG_LEN) throw new EnvelopeError("frame truncated");
  if (frame.length - end > MAX_BODY_LEN + TAG_LEN) throw new EnvelopeError("body too large");
  const unitBytes = frame.subarray(FIXED_LEN, end);
  if (unitBytes.some((b) => b > 0x7f)) throw new EnvelopeError("unit id is not ASCII");
  if (type === TYPE_AUDIO && codec === 1 &&
      frame.length - end - TAG_LEN !== 2 * sampleCount * Math.max(channels, 1)) {
    throw new EnvelopeError("sample count does not match body length");
  }
  if (type === TYPE_AUDIO && codec === 2 && !(sampleCount > 0 && frame.length - end > TAG_LEN)) {
    throw new EnvelopeError("an Opus chunk needs samples and a body");
  }
  if ((type === TYPE_EVENT) !== (codec === 0)) throw new EnvelopeError(`codec ${codec} does not fit this envelope type`);
  return {
    version, type, codec, channels, flags, sessionId, session: hex(sessionId), seq, captureUs,
    sampleRate, sampleCount, unit: String.fromCharCode(...unitBytes), headerLen: end,
  };
}

function nonceFor(type, seq) {
  const n = new Uint8Array(12);
  const dv = new DataView(n.buffer);
  dv.setUint32(0, type);
  dv.setBigUint64(4, BigInt(seq));
  return n;
}

export async function importSessionKey(raw) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
}

/** Parse and authenticate one frame: header as AAD, nonce = type || seq. */
export async function openEnvelope(frame, sessionKey) {
  const h = parseHeader(frame);
  try {
    const body = await subtle.decrypt(
      { name: "AES-GCM", iv: nonceFor(h.type, h.seq), additionalData: frame.subarray(0, h.headerLen) },
      sessionKey, frame.subarray(h.headerLen));
    return { header: h, body: new Uint8Array(body) };
  } catch (e) {
    throw new OpenError(`chunk seq=${h.seq} failed authentication (tampered, or another key)`);
  }
}

// ------------------------------------------------------------------ HPKE (RFC 9180)

const KEM_ID = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID = 0x0001; // HKDF-SHA256
const AEAD_ID = 0x0002; // AES-256-GCM
const SUITE_KEM = concat(te.encode("KEM"), i2osp(KEM_ID, 2));
const SUITE_HPKE = concat(te.encode("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD_ID, 2));
const HPKE_V1 = te.encode("HPKE-v1");
const N_ENC = 32;

async function hmacSha256(key, data) {
  // HMAC pads keys to the block size with zeros, so the empty salt equals 32 zero bytes
  // (RFC 5869's default); WebCrypto refuses zero-length HMAC keys.
  const k = await subtle.importKey("raw", key.length ? key : new Uint8Array(32),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

async function hkdfExpand(prk, info, length) {
  const blocks = [];
  let t = EMPTY;
  for (let i = 1, n = 0; n < length; i++) {
    t = await hmacSha256(prk, concat(t, info, Uint8Array.of(i)));
    blocks.push(t);
    n += t.length;
  }
  return concat(...blocks).slice(0, length);
}

const labeledExtract = (suite, salt, label, ikm) =>
  hmacSha256(salt, concat(HPKE_V1, suite, te.encode(label), ikm));

const labeledExpand = (suite, prk, label, info, length) =>
  hkdfExpand(prk, concat(i2osp(length, 2), HPKE_V1, suite, te.encode(label), info), length);

/** The HPKE key schedule for base mode: {key (AES-GCM CryptoKey), nonce}. */
async function keySchedule(dh, enc, pkR, info, usage) {
  const eaePrk = await labeledExtract(SUITE_KEM, EMPTY, "eae_prk", dh);
  const shared = await labeledExpand(SUITE_KEM, eaePrk, "shared_secret", concat(enc, pkR), 32);
  const pskIdHash = await labeledExtract(SUITE_HPKE, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = await labeledExtract(SUITE_HPKE, EMPTY, "info_hash", info);
  const context = concat(Uint8Array.of(0), pskIdHash, infoHash);
  const secret = await labeledExtract(SUITE_HPKE, shared, "secret", EMPTY);
  const key = await labeledExpand(SUITE_HPKE, secret, "key", context, 32);
  const nonce = await labeledExpand(SUITE_HPKE, secret, "base_nonce", context, 12);
  return { key: await subtle.importKey("raw", key, { name: "AES-GCM" }, false, [usage]), nonce };
}

/**
 * HPKE base-mode single-shot open. `privateKey`: X25519 CryptoKey (may be non-extractable);
 * `publicRaw`: its 32-byte public key (pkRm, part of the KEM context); `wrapped`: enc || ct.
 */
export async function hpkeOpen(privateKey, publicRaw, wrapped, info, aad = EMPTY) {
  if (wrapped.length < N_ENC + TAG_LEN) throw new OpenError("wrapped key too short");
  const enc = wrapped.subarray(0, N_ENC);
  const ct = wrapped.subarray(N_ENC);
  let dh;
  try {
    const pkE = await subtle.importKey("raw", enc, { name: "X25519" }, false, []);
    dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pkE }, privateKey, 256));
  } catch (e) {
    throw new OpenError("HPKE decapsulation failed (bad enc)");
  }
  if (dh.every((b) => b === 0)) throw new OpenError("HPKE: all-zero shared secret");
  const { key, nonce } = await keySchedule(dh, enc, publicRaw, info, "decrypt");
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, ct));
  } catch (e) {
    throw new OpenError("session key does not open with this private key");
  }
}

/**
 * HPKE base-mode single-shot seal to `recipientRaw` (a 32-byte X25519 public key): enc || ct.
 * The ephemeral key lives only for this call. Opens with scribelink.envelope's suite.
 */
export async function hpkeSeal(recipientRaw, plaintext, info, aad = EMPTY) {
  const pkR = await subtle.importKey("raw", recipientRaw, { name: "X25519" }, false, []);
  const eph = await subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  const enc = new Uint8Array(await subtle.exportKey("raw", eph.publicKey));
  let dh;
  try {
    dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pkR }, eph.privateKey, 256));
  } catch (e) {
    throw new OpenError("HPKE: the recipient's key is not usable (low-order point)");
  }
  const { key, nonce } = await keySchedule(dh, enc, recipientRaw, info, "encrypt");
  const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, plaintext));
  return concat(enc, ct);
}

// ------------------------------------------------------------------ scribe keys

export async function keyId(publicRaw) {
  return (await sha256Hex(publicRaw)).slice(0, 16);
}

/** HPKE `info`, byte for byte as scribelink.envelope.wrap_info builds it. */
export function wrapInfo(unitId, sessionId, recipientKeyId) {
  return concat(te.encode("scribelink/v1 session-key|"), te.encode(unitId), te.encode("|"),
    sessionId, te.encode("|"), te.encode(recipientKeyId));
}

/** The raw 32-byte session key a unit wrapped to `identity` (X25519: {privateKey, publicRaw, keyId}). */
export async function unwrapSessionKeyRaw(identity, wrapped, unitId, sessionId) {
  const info = wrapInfo(unitId, sessionId, identity.keyId);
  const raw = await hpkeOpen(identity.privateKey, identity.publicRaw, wrapped, info);
  if (raw.length !== 32) throw new OpenError("wrapped session key has the wrong length");
  return raw;
}

export async function unwrapSessionKey(identity, wrapped, unitId, sessionId) {
  return importSessionKey(await unwrapSessionKeyRaw(identity, wrapped, unitId, sessionId));
}
