// The clinic authority in the admin's browser (docs/trust.md): unlock its key file with the
// passphrase -- PBKDF2-HMAC-SHA256 and AES-256-GCM over the Ed25519 seed, as
// scribelink.trust.seal_authority writes it -- into a non-extractable WebCrypto key that
// lives as long as the page, and sign what only the clinic may decide: device
// endorsements, assignments, enrolment grants, revocation lists, provisioning tokens. The
// relay never sees the key or the passphrase; it gets signed statements.
//
// The bodies are scribelink/trust.py's (device_body, assignment_body, grant_body,
// revocations_body, token_body); tests/vectors/authority_browser.json checks the bytes.

import { b64decode, b64encode, concat, fingerprint, keyId, signedBytes, utf8 } from "./canon.js";

const FILE_KIND = "scribelink-clinic-authority";
const AAD_PREFIX = "scribelink/v1 authority-key\u0000";
// PKCS#8 for an Ed25519 private key: the fixed header, then the 32-byte seed (RFC 8410)
const PKCS8_ED25519 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03,
  0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
export const TOKEN_ACTIONS = ["unlock", "factory_reset", "set_trust", "release"];

export class AuthorityError extends Error {}

/** A private Ed25519 key from its 32-byte seed (non-extractable unless asked). */
export async function ed25519FromSeed(seed, extractable = false) {
  return crypto.subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed), { name: "Ed25519" }, extractable, ["sign"]);
}

/** The raw public key of a seed (the key is made extractable just for this, then dropped). */
export async function ed25519PublicOfSeed(seed) {
  const jwk = await crypto.subtle.exportKey("jwk", await ed25519FromSeed(seed, true));
  return b64decode(jwk.x.replace(/-/g, "+").replace(/_/g, "/").padEnd(44, "="));
}

export async function verifyEd25519(publicRaw, sig, data) {
  const pub = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, pub, sig, data);
}

/** {t, body, signer, sig}: `key` signs type `t` over `body` (signer = keyId of publicRaw). */
export async function signStatement(t, body, key, publicRaw) {
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, signedBytes(t, body)));
  return { t, body, signer: await keyId(publicRaw), sig: b64encode(sig) };
}

/** The key file's public half, without the passphrase. */
export function publicOfKeyFile(doc) {
  if (!doc || doc.kind !== FILE_KIND || doc.v !== 1) throw new AuthorityError("this is not a Scribelink clinic authority key file");
  const pub = b64decode(doc.public_key || "");
  if (pub.length !== 32) throw new AuthorityError("the key file's public key is damaged");
  return pub;
}

export class Authority {
  /** Use Authority.unlock. */
  constructor(key, publicRaw, id, print) {
    this.key = key; // CryptoKey, non-extractable: it signs, nothing reads it
    this.publicRaw = publicRaw;
    this.keyId = id;
    this.fingerprint = print;
  }

  get publicB64() {
    return b64encode(this.publicRaw);
  }

  /** Open the key file (its parsed JSON) with the passphrase. */
  static async unlock(doc, passphrase) {
    const pub = publicOfKeyFile(doc);
    const kdf = doc.kdf || {};
    const iterations = kdf.iterations;
    if (!Number.isInteger(iterations) || iterations < 100000 || iterations > 10000000) throw new AuthorityError("the key file's KDF iterations are implausible");
    if (kdf.name !== "PBKDF2-HMAC-SHA256" || doc.cipher !== "AES-256-GCM") throw new AuthorityError("the key file uses a cipher this page does not know");
    const salt = b64decode(kdf.salt || "");
    const nonce = b64decode(doc.nonce || "");
    const ct = b64decode(doc.ciphertext || "");
    if (salt.length !== 16 || nonce.length !== 12 || ct.length !== 48) throw new AuthorityError("the key file is damaged");
    const base = await crypto.subtle.importKey("raw", utf8(passphrase), "PBKDF2", false, ["deriveKey"]);
    const aes = await crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, base, { name: "AES-GCM", length: 256 }, false, ["decrypt"]);
    let seed;
    try {
      seed = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: concat(utf8(AAD_PREFIX), pub) }, aes, ct));
    } catch (e) {
      throw new AuthorityError("wrong passphrase for the clinic authority key");
    }
    let key;
    try {
      key = await ed25519FromSeed(seed);
    } catch (e) {
      throw new AuthorityError("this browser cannot sign with Ed25519 (WebCrypto): use a current Chromium, Firefox or Safari");
    } finally {
      seed.fill(0);
    }
    // the file's public key must be this key's: sign and check against it
    const probe = utf8("scribelink/v1 authority-key-check");
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, key, probe);
    if (!(await verifyEd25519(pub, sig, probe))) throw new AuthorityError("the key file is inconsistent (its public key does not match)");
    return new Authority(key, pub, await keyId(pub), await fingerprint(pub));
  }

  sign(t, body) {
    return signStatement(t, body, this.key, this.publicRaw);
  }

  // ---------------------------------------------------------------- statements (trust.py's bodies)

  /** d: a pending device as GET /api/admin/devices lists it. Its id is computed here from
   * its signing key, not taken from the relay. */
  async endorseDevice(d, nowUs) {
    return this.sign("device", {
      scribe: d.user, device: await keyId(b64decode(d.sign_key)), enc_key: d.enc_key, sign_key: d.sign_key,
      label: [...(d.label || "")].slice(0, 64).join("") || "device", kind: d.kind || "person", issued_us: nowUs,
    });
  }

  assign({ unit, room, scribes, nowUs }) {
    return this.sign("assignment", { unit, room: room || "", scribes: [...new Set(scribes)].sort(), issued_us: nowUs });
  }

  /** A grant to enrol `unit` with a code whose key is `codeKeyRaw` (js/admin/enrolcode.js). */
  grant({ unit, room, clinic, codeKeyRaw, nowUs, ttlS }) {
    return this.sign("unit_grant", {
      unit, room, clinic, code_key: b64encode(codeKeyRaw), issued_us: nowUs, expires_us: nowUs + ttlS * 1000000,
    });
  }

  /** units: [{unit, sign_key_id, after_us}]; devices: revoked device ids. */
  revocations({ serial, units, devices, nowUs }) {
    return this.sign("revocations", { serial, issued_us: nowUs, units, devices: [...new Set(devices)].sort() });
  }

  token({ unit, action, tokenId, nowUs, ttlS, args = {} }) {
    if (!TOKEN_ACTIONS.includes(action)) throw new AuthorityError(`unknown token action ${action}`);
    return this.sign("token", { unit, action, token_id: tokenId, issued_us: nowUs, expires_us: nowUs + ttlS * 1000000, args });
  }
}

/** Random hex (token ids), like Python's secrets.token_hex. */
export function randomHex(nBytes) {
  return [...crypto.getRandomValues(new Uint8Array(nBytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
}
