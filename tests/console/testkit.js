// Test-only ES module for the console's module tests: served by the tests' static server
// (console_support.StaticConsole at /tests/testkit.js), never by the relay.

import {
  b64decode, b64encode, concat, fromHex, keyId, openEnvelope, parseHeader, sha256Hex, unwrapSessionKey,
} from "/console/js/crypto.js";
import { Receiver } from "/console/js/receiver.js";
import { endorsedDevices, verifyRevocations } from "/console/js/trust.js";

const subtle = globalThis.crypto.subtle;
const PKCS8_X25519_PREFIX = "302e020100300506032b656e04220420";
const PKCS8_ED25519_PREFIX = "302e020100300506032b657004220420";

/** An Ed25519 signing key (non-extractable) from a 32-byte seed: {privateKey, publicRaw, device}. */
export async function signerFromSeed(seed) {
  const pkcs8 = concat(fromHex(PKCS8_ED25519_PREFIX), seed);
  const probe = await subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await subtle.exportKey("jwk", probe);
  const publicRaw = b64decode(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=");
  const privateKey = await subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  return { privateKey, publicRaw, device: await keyId(publicRaw) };
}

/** An identity (as js/crypto.js loadOrCreateIdentity gives) from a raw 32-byte or PKCS#8 private key. */
export async function identityFromPrivate(privateBytes) {
  const pkcs8 = privateBytes.length === 32 ? concat(fromHex(PKCS8_X25519_PREFIX), privateBytes) : privateBytes;
  const probe = await subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, true, ["deriveBits"]);
  const jwk = await subtle.exportKey("jwk", probe);
  const publicRaw = b64decode(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=");
  const privateKey = await subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, false, ["deriveBits"]);
  return { privateKey, publicRaw, keyId: await keyId(publicRaw) };
}

/** Open an envelope vector set (tests/vectors/envelope.json) at the crypto level: the
 * session key with HPKE, then every frame with AES-256-GCM. */
export async function openVectors({ private_key, session_open, frames }) {
  const identity = await identityFromPrivate(b64decode(private_key));
  const out = { key_id: identity.keyId, session_key: null, results: [] };
  const mine = (session_open.recipients || []).find((r) => r.key_id === identity.keyId);
  let key = null;
  if (mine) {
    try {
      key = await unwrapSessionKey(identity, b64decode(mine.wrapped_key), session_open.unit, fromHex(session_open.session));
      out.session_key = "opened";
    } catch (e) {
      out.session_key = `error: ${e.message}`;
    }
  }
  for (const f of frames) {
    const frame = b64decode(f);
    try {
      const { header, body } = await openEnvelope(frame, key);
      out.results.push({ ok: true, type: header.type, seq: header.seq, plaintext: b64encode(body), sha256: await sha256Hex(body) });
    } catch (e) {
      let hdr = null;
      try { hdr = parseHeader(frame); } catch (x) { /* malformed */ }
      out.results.push({ ok: false, error: e.constructor.name, detail: e.message, seq: hdr ? hdr.seq : null });
    }
  }
  return out;
}

/**
 * A Receiver for the X25519 key `privateKeyB64`, trusting the authority `authorityB64`
 * (and the device statements `devices` for replies), that records what it hands on:
 * {rx, log}. log entries: ["open", session], ["audio", seq, via], ["event", kind, seq],
 * ["meta", type], ["reply", cue_id, reply, kind], ["error", kind].
 */
export async function recordingReceiver(privateKeyB64, { authority, devices = [], revocations = null } = {}) {
  const identity = await identityFromPrivate(b64decode(privateKeyB64));
  const authorityRaw = b64decode(authority);
  const book = await endorsedDevices(authorityRaw, devices);
  const rv = await verifyRevocations(authorityRaw, revocations);
  const log = [];
  const rx = new Receiver(identity, {
    onOpen: (s) => log.push(["open", s.session]),
    onAudio: (s, h, pcm, via) => log.push(["audio", h.seq, via]),
    onEvent: (s, ev) => log.push(["event", ev.kind, ev.seq]),
    onMeta: (s, m) => log.push(["meta", m.type]),
    onReply: (s, r) => log.push(["reply", r.cue_id, r.reply, r.kind]),
    onError: (rec) => log.push(["error", rec.error]),
  }, { authority: authorityRaw, revocations: () => rv, device: async (unit, id) => book.get(id) || null });
  return { rx, log };
}
