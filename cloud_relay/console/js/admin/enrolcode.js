// Enrolment codes made in the admin's browser, byte for byte as scribelink/enrolcode.py and
// scribelink.authority_cli make them: a fresh 128-bit secret, the code key it derives (its
// public half goes into the authority's grant), the proof hash the relay stores, and the
// code's text -- "SL:" and base32 groups of the payload (version, tagged fields, CRC-32) --
// which the tech types or scans. The secret stays in this page and in the code; the relay
// gets only the grant and the proof's hash. Tested against tests/vectors/authority_browser.json.

import { ed25519PublicOfSeed } from "./authority.js";
import { hex, sha256, utf8 } from "./canon.js";

export const SECRET_LEN = 16;
const VERSION = 1;
const PREFIX = "SL:";
const GROUP = 5;
const MAX_PAYLOAD = 1024;
const PROOF_INFO = "scribelink enrol v1 proof";
const BIND_INFO = "scribelink/v1 enrol bind";
// tag -> [field, kind]; URLs drop their usual scheme (the reader puts it back)
const FIELDS = [
  [0x01, "secret", "bytes"], [0x02, "relay_url", "text"], [0x03, "broker_url", "text"],
  [0x04, "clinic", "text"], [0x05, "room", "text"], [0x06, "unit_id", "text"],
  [0x07, "expires_at", "u32"], [0x08, "recovery_public_key", "bytes"], [0x81, "authority", "bytes"],
];
const DEFAULT_SCHEMES = { relay_url: "https://", broker_url: "mqtts://" };

export class EnrolCodeError extends Error {}

async function hkdf(secret, info, length) {
  const base = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  // Python's HKDF with salt=None uses HashLen zero bytes
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: utf8(info) }, base, length * 8);
  return new Uint8Array(bits);
}

/** What the tool sends the relay instead of the secret (hex). */
export const proofOf = async (secret) => hex(await hkdf(secret, PROOF_INFO, 32));

/** What the relay stores: SHA-256 of the proof's hex text (hex). */
export const proofHash = async (proofHex) => hex(await sha256(utf8(proofHex.toLowerCase())));

/** The raw public key of the code key (scribelink.trust.code_key): it goes in the grant. */
export const codeKeyPublic = async (secret) => ed25519PublicOfSeed(await hkdf(secret, BIND_INFO, 32));

export const newSecret = () => crypto.getRandomValues(new Uint8Array(SECRET_LEN));

function leb128(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

export function base32(bytes) {
  let out = "";
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

/** The payload's bytes for `code` ({secret, relay_url, broker_url, clinic, room, unit_id,
 * expires_at?, recovery_public_key?, authority?}). */
export function payload(code) {
  const out = [VERSION];
  for (const [tag, name, kind] of FIELDS) {
    let v = code[name];
    if (v === undefined || v === null) continue;
    const scheme = DEFAULT_SCHEMES[name];
    if (scheme && v.startsWith(scheme)) v = v.slice(scheme.length);
    let raw;
    if (kind === "text") raw = utf8(v);
    else if (kind === "u32") raw = Uint8Array.of((v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    else raw = v;
    out.push(tag, ...leb128(raw.length), ...raw);
  }
  const crc = crc32(out);
  out.push((crc >>> 24) & 255, (crc >>> 16) & 255, (crc >>> 8) & 255, crc & 255);
  if (out.length > MAX_PAYLOAD) throw new EnrolCodeError(`an enrolment code holds at most ${MAX_PAYLOAD} bytes`);
  return Uint8Array.from(out);
}

/** "SL:XXXXX-XXXXX-...": what the tech types, and what the QR holds. */
export function codeText(code) {
  if (!code.secret || code.secret.length !== SECRET_LEN) throw new EnrolCodeError("an enrolment code's secret is 16 bytes");
  for (const k of ["relay_url", "broker_url", "clinic", "room", "unit_id"]) if (!code[k]) throw new EnrolCodeError(`an enrolment code needs ${k}`);
  const b32 = base32(payload(code));
  return PREFIX + b32.match(new RegExp(`.{1,${GROUP}}`, "g")).join("-");
}

/**
 * Everything an enrolment needs from the admin's side: a fresh secret, the grant request
 * for the relay ({grant, proof_hash}, once `authority` signs), and a function that makes the
 * code's text once the relay answered with its broker URL.
 */
export async function makeEnrolment({ authority, unit, room, clinic, relayUrl, ttlS, nowUs, secret = newSecret() }) {
  const grant = await authority.grant({ unit, room, clinic, codeKeyRaw: await codeKeyPublic(secret), nowUs, ttlS });
  const proof = await proofOf(secret);
  return {
    request: { grant, proof_hash: await proofHash(proof) },
    text: (brokerUrl) => codeText({
      secret, relay_url: relayUrl, broker_url: brokerUrl, clinic, room, unit_id: unit,
      expires_at: Math.floor(nowUs / 1e6) + ttlS, authority: authority.publicRaw,
    }),
    forget: () => secret.fill(0),
  };
}

