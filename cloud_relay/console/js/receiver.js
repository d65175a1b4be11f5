// The console's receive path: the rules of cloud_relay/receiver.py, the reference receiver.
// Nothing the relay sends is believed on its word (docs/trust.md): a session plays only if
// its session_open is signed by a unit key the clinic authority bound to that unit (and not
// revoked for its start); its close, gaps, added recipients and events are checked against
// that key, over what the unit wrote (the relay's cursor and arrival time set aside); every
// number is bounded before anything is allocated, and a gap is a range, never a set. Then:
// open session keys (wrapped to this device, added for it later, or shared by another of
// the scribe's devices), authenticate every chunk, deduplicate on (session, stream, seq),
// release events in order, decode audio (js/codec.js) and keep each session's decoded audio
// by sequence number so the timeline can replay and seek. Replies to cues (cue_ack items,
// sealed under the session key and signed by a scribe's device) are opened and checked.
// Forged, tampered, replayed and malformed items are counted and reported, never fatal.

import { CodecError, decoderFor } from "./codec.js";
import {
  OpenError, EnvelopeError, TYPE_AUDIO, b64decode, fromHex, importSessionKey, openEnvelope, parseHeader,
  unwrapSessionKeyRaw,
} from "./crypto.js";
import { MessageError, checkEvent, checkItem } from "./messages.js";
import { Revocations, TrustError, openReply, replyKey, verifyBinding, verifyMessage, verifyReply } from "./trust.js";

const MAX_PENDING_UNKNOWN = 5000; // frames of a session whose open has not come (or not for us yet)
const MAX_PENDING_META = 256; // signed items of such a session
const MAX_UNOPENED = 256; // sessions not (yet) openable here, kept for a later join or share
const MAX_GAPS = 10000;
const MAX_HELD_EVENTS = 30000;
const MAX_SHARED_KEYS = 5000;
const GAP_REACH = 30000; // a gap may extend the timeline this many chunks past what arrived
const LATE_US = 2e6; // audio this much later than the session's best arrived as backfill
// what the relay adds to a unit's message on its way: not part of what the unit signed
const TRANSPORT_FIELDS = ["cursor", "received_us"];
const td = new TextDecoder();

export const COUNTERS = ["tampered", "forged", "replayed", "malformed", "not_for_me", "missing", "chunks", "events", "late", "replies"];

export class SessionState {
  constructor(open, key, { unitKey, replyKey: rk, via }) {
    this.session = open.session;
    this.unit = open.unit;
    this.room = open.room;
    this.key = key;
    this.unitKey = unitKey;
    this.replyKey = rk;
    this.openedVia = via; // "wrap" (sealed for this device), "joined" (added later), "share"
    this.consent = open.consent || "not_required";
    this.sampleRate = open.sample_rate;
    this.chunkMs = open.chunk_ms || 40;
    this.chunkSamples = Math.round((this.sampleRate * this.chunkMs) / 1000);
    this.startedUs = open.started_us || 0;
    this.recipients = (open.recipients || []).map((r) => ({ kind: r.kind, id: r.id, device: r.device || "" }));
    this.chunks = new Map(); // seq -> {pcm: Int16Array | null (evicted), n, captureUs, via}
    this.maxSeq = -1;
    this.newestSeq = -1;
    this.lostRanges = []; // [first, last] declared lost by the unit (signed gaps)
    this.skipped = new Set(); // not at the relay when playback needed it: played over
    this.gaps = [];
    this.events = [];
    this.replies = []; // checked replies to cues: {cue_id, reply, device, kind, label, scribe, at_us}
    this.nextEvent = 0;
    this.heldEvents = new Map();
    this.close = null;
    this.accounted = 0; // every audio seq below this is here or declared lost
    this.complete = false; // the signed close came and every chunk up to it is accounted for
    this.segments = [{ seq: 0, t: 0 }]; // audio runs: a privacy pause (or consent) starts a new one
    this.bestLatencyUs = null;
    // decoders by codec and lane: live chunks and archive pages each arrive in order, so
    // each keeps its decoder's state from chunk to chunk
    this.decoders = new Map();
  }

  isLost(seq) {
    return this.lostRanges.some(([a, b]) => seq >= a && seq <= b);
  }

  /** Decode one authenticated audio body: {pcm: Int16Array, concealed: Int16Array}. */
  decode(header, body, lane) {
    const key = `${header.codec}:${lane}`;
    let dec = this.decoders.get(key);
    if (!dec) {
      dec = decoderFor(header.codec);
      this.decoders.set(key, dec);
    }
    return dec.decode(body, header.sampleCount, header.seq);
  }

  /** Session time (s) of an audio seq: from its capture clock if we have it. */
  timeOfSeq(seq) {
    const c = this.chunks.get(seq);
    if (c) return (c.captureUs - this.startedUs) / 1e6;
    let seg = this.segments[0];
    for (const s of this.segments) if (s.seq <= seq) seg = s;
    return seg.t + ((seq - seg.seq) * this.chunkMs) / 1000;
  }

  /** The audio seq playing at session time t (s); a time inside a pause maps to its end. */
  seqAtTime(t) {
    let seg = this.segments[0];
    let next = null;
    for (const s of this.segments) {
      if (s.t <= t) seg = s;
      else if (!next) next = s;
    }
    let seq = seg.seq + Math.floor(((t - seg.t) * 1000) / this.chunkMs);
    if (next && seq >= next.seq) seq = next.seq;
    return Math.max(0, seq);
  }

  get durationS() {
    if (this.close && this.close.ended_us) return (this.close.ended_us - this.startedUs) / 1e6;
    return this.maxSeq < 0 ? 0 : this.timeOfSeq(this.maxSeq) + this.chunkMs / 1000;
  }

  /** Session time (s) of the newest audio received: where live is. */
  get liveEdgeS() {
    if (this.newestSeq < 0) return 0;
    return this.timeOfSeq(this.newestSeq) + this.chunkMs / 1000;
  }

  /** Samples [seq*chunkSamples ...] in order; stops where a chunk is not here yet. */
  samplesFrom(seq, maxChunks) {
    const out = [];
    for (let s = seq; s < seq + maxChunks && s <= this.maxSeq; s++) {
      const c = this.chunks.get(s);
      if (c && c.pcm) out.push({ seq: s, pcm: c.pcm });
      else if (this.skipped.has(s) || this.isLost(s)) continue;
      else break;
    }
    return out;
  }
}

/** The relay's item as the unit wrote it: its transport fields set aside. */
function unitWrote(item) {
  const raw = { ...item };
  for (const k of TRANSPORT_FIELDS) delete raw[k];
  return raw;
}

export class Receiver {
  /**
   * `identity`: this device's X25519 key {privateKey, publicRaw, keyId}. `trust`:
   * {authority (raw Ed25519 key the page pinned), revocations() -> Revocations,
   * device(unit, deviceId) -> Promise<endorsed device or null>}.
   * Handlers: onOpen(s, via), onAudio(s, hdr, pcm, via, concealed), onEvent(s, ev, via),
   * onMeta(s, m, via), onReply(s, reply, via), onError(rec).
   */
  constructor(identity, handlers, trust) {
    this.identity = identity;
    this.h = handlers;
    this.trust = { revocations: () => new Revocations(), device: async () => null, ...trust };
    this.sessions = new Map();
    this.pending = new Map(); // session -> [[frame, via]]: before its open
    this.pendingMeta = new Map(); // session -> [[item, raw, via]]
    this.unopened = new Map(); // session -> {open, raw, unitKey}: not (yet) for this device
    this.refused = new Map(); // session -> {unit, why}: its open did not check out
    this.sharedKeys = new Map(); // session -> raw key from a verified key share
    this.counters = Object.fromEntries(COUNTERS.map((k) => [k, 0]));
    this.chain = Promise.resolve();
  }

  /** Everything goes through one queue so WebCrypto's promises keep stream order. */
  enqueue(fn) {
    this.chain = this.chain.then(fn).catch((e) => this.error("malformed", String(e.message || e)));
    return this.chain;
  }

  sessionItem(item, via = "live") {
    return this.enqueue(() => this._sessionItem(item, via));
  }

  envelope(frame, via = "live") {
    return this.enqueue(() => this._envelope(frame, via));
  }

  /** A session key another of this scribe's devices shared with this one (already verified). */
  sharedKey(session, raw, via = "share") {
    return this.enqueue(async () => {
      if (this.sessions.has(session)) return;
      const u = this.unopened.get(session);
      if (u) {
        this.unopened.delete(session);
        await this._start(u.open, u.unitKey, raw, "share", via);
      } else if (this.sharedKeys.size < MAX_SHARED_KEYS) {
        this.sharedKeys.set(session, raw);
      }
    });
  }

  // ------------------------------------------------------------------ session items

  async _sessionItem(item, via) {
    const raw = unitWrote(item);
    try {
      checkItem(raw);
    } catch (e) {
      if (!(e instanceof MessageError)) throw e;
      this.error("malformed", e.message, { session: raw && raw.session });
      return;
    }
    if (raw.type === "session_open") {
      await this._open(raw, via);
      return;
    }
    const s = this.sessions.get(raw.session);
    if (!s) {
      const u = this.unopened.get(raw.session);
      if (u && raw.type === "recipients_added") {
        await this._joined(u, raw, via);
        return;
      }
      // before its open (the relay may reorder), or before this device joined: checked then
      const q = this.pendingMeta.get(raw.session) || [];
      if (q.length < MAX_PENDING_META && (q.length || this.pendingMeta.size < MAX_UNOPENED)) {
        q.push([raw, via]);
        this.pendingMeta.set(raw.session, q);
      }
      return;
    }
    await this._signedItem(s, raw, via);
  }

  async _verified(unitKey, raw, session) {
    try {
      await verifyMessage(raw.type, raw, unitKey);
      return true;
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      this.error("forged", e.message, { session, unit: raw.unit });
      return false;
    }
  }

  async _signedItem(s, m, via) {
    if (m.type === "cue_ack") {
      await this._reply(s, m, via);
      return;
    }
    if (m.unit !== s.unit || !(await this._verified(s.unitKey, m, s.session))) return;
    if (m.type === "session_close") {
      if (s.close) return;
      s.close = m;
      this.h.onMeta?.(s, m, via);
      this._accounting(s, via);
    } else if (m.type === "gap") {
      if (m.stream !== "audio") return;
      if (s.gaps.some((g) => g.first_seq === m.first_seq && g.last_seq === m.last_seq)) return;
      if (s.lostRanges.length >= MAX_GAPS) return;
      s.gaps.push(m);
      s.lostRanges.push([m.first_seq, m.last_seq]); // a range, never a set
      s.maxSeq = Math.max(s.maxSeq, Math.min(m.last_seq, Math.max(s.newestSeq, 0) + GAP_REACH));
      this.h.onMeta?.(s, m, via);
      this._accounting(s, via);
    } else if (m.type === "recipients_added") {
      for (const r of m.recipients) if (!s.recipients.some((x) => x.device === r.device)) s.recipients.push({ kind: r.kind, id: r.id, device: r.device || "" });
      this.h.onMeta?.(s, m, via);
    }
  }

  /** The unit's signing key if the authority bound it to this unit and it is not revoked. */
  async _unitKey(m) {
    try {
      if (!m.binding) throw new TrustError("session_open carries no binding of the unit's key");
      const bound = await verifyBinding(this.trust.authority, m.binding);
      if (bound.unit !== m.unit) throw new TrustError(`the signing key is bound to ${bound.unit}, not ${m.unit}`);
      if (this.trust.revocations().unitRevoked(m.unit, bound.keyId, m.started_us)) {
        throw new TrustError(`unit ${m.unit}'s key ${bound.keyId} is revoked`);
      }
      await verifyMessage("session_open", m, bound.signKey);
      return bound.signKey;
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      if (!this.refused.has(m.session) && this.refused.size < MAX_UNOPENED) this.refused.set(m.session, { unit: m.unit, why: e.message });
      this.error("forged", `session_open refused: ${e.message}`, { session: m.session, unit: m.unit });
      return null;
    }
  }

  async _open(m, via) {
    if (this.sessions.has(m.session) || this.unopened.has(m.session)) return;
    const unitKey = await this._unitKey(m);
    if (!unitKey) return;
    const mine = m.recipients.find((r) => r.key_id === this.identity.keyId);
    if (mine) {
      let raw;
      try {
        raw = await unwrapSessionKeyRaw(this.identity, b64decode(mine.wrapped_key), m.unit, fromHex(m.session));
      } catch (e) {
        this.error("tampered", String(e.message || e), { session: m.session });
        return;
      }
      await this._start(m, unitKey, raw, "wrap", via);
      return;
    }
    const shared = this.sharedKeys.get(m.session);
    if (shared) {
      this.sharedKeys.delete(m.session);
      await this._start(m, unitKey, shared, "share", via);
      return;
    }
    this.counters.not_for_me += 1;
    if (this.unopened.size < MAX_UNOPENED) this.unopened.set(m.session, { open: m, unitKey });
    this.h.onError?.({ error: "session_not_wrapped_for_me", session: m.session, unit: m.unit, room: m.room, started_us: m.started_us });
  }

  async _joined(u, m, via) {
    if (m.unit !== u.open.unit || !(await this._verified(u.unitKey, m, m.session))) return;
    const mine = m.recipients.find((r) => r.key_id === this.identity.keyId);
    if (!mine) return;
    let raw;
    try {
      raw = await unwrapSessionKeyRaw(this.identity, b64decode(mine.wrapped_key), m.unit, fromHex(m.session));
    } catch (e) {
      this.error("tampered", String(e.message || e), { session: m.session });
      return;
    }
    this.unopened.delete(m.session);
    // the join itself is one of the session's items: the pending ones follow
    const q = this.pendingMeta.get(m.session) || [];
    q.unshift([m, via]);
    this.pendingMeta.set(m.session, q);
    await this._start(u.open, u.unitKey, raw, "joined", via);
  }

  async _start(m, unitKey, raw, how, via) {
    const s = new SessionState(m, await importSessionKey(raw), { unitKey, replyKey: await replyKey(raw), via: how });
    this.sessions.set(s.session, s);
    this.refused.delete(s.session);
    this.h.onOpen?.(s, via);
    const meta = this.pendingMeta.get(s.session) || [];
    this.pendingMeta.delete(s.session);
    for (const [item, v] of meta) await this._signedItem(s, item, v);
    const queued = this.pending.get(s.session) || [];
    this.pending.delete(s.session);
    for (const [frame, v] of queued) await this._envelope(frame, v);
  }

  // ------------------------------------------------------------------ replies to cues

  async _reply(s, m, via) {
    if (m.unit !== s.unit) return;
    try {
      const body = await openReply(s.replyKey, { unit: s.unit, session: s.session, sealed: m.sealed });
      const device = await this.trust.device(s.unit, String(body.device));
      if (!device) throw new TrustError("a reply from a device the clinic did not endorse for this room");
      await verifyReply(body, { unit: s.unit, session: s.session, device });
      this.counters.replies += 1;
      const reply = { cue_id: body.cue_id, reply: body.reply, at_us: body.at_us, device: device.device, kind: device.kind, label: device.label, scribe: device.scribe };
      s.replies.push(reply);
      this.h.onReply?.(s, reply, via);
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      this.error("forged", `cue reply: ${e.message}`, { session: s.session, unit: s.unit });
    }
  }

  // ------------------------------------------------------------------ envelopes

  async _envelope(frame, via) {
    let header;
    try {
      header = parseHeader(frame);
    } catch (e) {
      this.error("malformed", e.message);
      return;
    }
    const s = this.sessions.get(header.session);
    if (!s) {
      const q = this.pending.get(header.session) || [];
      if (q.length < MAX_PENDING_UNKNOWN && (q.length || this.pending.size < MAX_UNOPENED)) {
        q.push([frame, via]);
        this.pending.set(header.session, q);
      }
      return;
    }
    if (header.unit !== s.unit) {
      this.error("forged", "a chunk naming another unit", { session: s.session });
      return;
    }
    const known = header.type === TYPE_AUDIO ? s.chunks.get(header.seq) : null;
    if (via !== "live" && known && known.pcm) return;
    let opened;
    try {
      opened = await openEnvelope(frame, s.key);
    } catch (e) {
      this.error(e instanceof OpenError ? "tampered" : "malformed", e.message, { session: s.session, seq: header.seq });
      return;
    }
    // authenticate first, then deduplicate (as the reference receiver does)
    if (known && via !== "live") {
      // an evicted chunk fetched again from the archive for a replay
      const decoded = await this._decode(s, header, opened.body, "archive");
      if (!decoded) return;
      known.pcm = decoded.pcm;
      this.h.onAudio?.(s, header, known.pcm, "refetch", decoded.concealed);
      return;
    }
    if (known || (header.type === TYPE_AUDIO && s.isLost(header.seq) && header.seq < s.accounted)) {
      if (via === "live") this.error("replayed", `audio seq=${header.seq} already received`, { session: s.session, seq: header.seq });
      return;
    }
    if (header.type !== TYPE_AUDIO && (header.seq < s.nextEvent || s.heldEvents.has(header.seq))) {
      if (via === "live") this.error("replayed", `event seq=${header.seq} already received`, { session: s.session, seq: header.seq });
      return;
    }
    const { body } = opened;
    if (header.type === TYPE_AUDIO) {
      const decoded = await this._decode(s, header, body, via === "live" ? "live" : "archive");
      if (!decoded) return;
      const { pcm, concealed } = decoded;
      if (via === "live") {
        // as the reference receiver: overtaken by newer audio, or much later than the
        // session's best latency, is backfill
        const lat = Date.now() * 1000 - header.captureUs;
        if (s.bestLatencyUs === null || lat < s.bestLatencyUs) s.bestLatencyUs = lat;
        if (header.seq < s.newestSeq || lat - s.bestLatencyUs > LATE_US) {
          this.counters.late += 1;
          via = "backfill";
        }
      }
      s.chunks.set(header.seq, { pcm, n: pcm.length, captureUs: header.captureUs, via });
      s.maxSeq = Math.max(s.maxSeq, header.seq);
      s.newestSeq = Math.max(s.newestSeq, header.seq);
      this.counters.chunks += 1;
      this.h.onAudio?.(s, header, pcm, via, concealed);
      this._accounting(s, via);
      return;
    }
    if (s.heldEvents.size >= MAX_HELD_EVENTS) {
      this.error("malformed", "reorder buffer full", { session: s.session });
      return;
    }
    s.heldEvents.set(header.seq, { header, body, via });
    while (s.heldEvents.has(s.nextEvent)) {
      const held = s.heldEvents.get(s.nextEvent);
      s.heldEvents.delete(s.nextEvent);
      s.nextEvent += 1;
      await this._event(s, held.header, held.body, held.via);
    }
  }

  async _event(s, h, b, via) {
    let ev;
    try {
      ev = checkEvent(JSON.parse(td.decode(b)));
    } catch (e) {
      if (!(e instanceof MessageError) && !(e instanceof SyntaxError)) throw e;
      this.error("malformed", String(e.message || e), { session: s.session });
      return;
    }
    try {
      await verifyMessage("event", { ...ev, session: s.session, seq: h.seq }, s.unitKey);
    } catch (e) {
      if (!(e instanceof TrustError)) throw e;
      this.error("forged", `event seq=${h.seq}: ${e.message}`, { session: s.session });
      return;
    }
    const rec = { ...ev, seq: h.seq, session: s.session, unit: s.unit,
      t_s: (ev.at_us - s.startedUs) / 1e6, via, recv_ms: performance.timeOrigin + performance.now() };
    delete rec.sig;
    delete rec.v;
    if ((ev.kind === "privacy_resume" || (ev.kind === "consent" && ev.state === "given")) && Number.isInteger(ev.audio_seq)) {
      s.segments.push({ seq: ev.audio_seq, t: rec.t_s });
      s.segments.sort((a, b) => a.seq - b.seq);
    }
    if (ev.kind === "consent") s.consent = ev.state;
    s.events.push(rec);
    this.counters.events += 1;
    this.h.onEvent?.(s, rec, via);
  }

  /** Move the accounted-for mark; say "complete" once the signed close is covered. */
  _accounting(s, via) {
    let p = s.accounted;
    for (;;) {
      if (s.chunks.has(p)) {
        p += 1;
        continue;
      }
      const r = s.lostRanges.find(([a, b]) => p >= a && p <= b);
      if (!r) break;
      p = r[1] + 1; // a declared gap is skipped in one step, however long it claims to be
    }
    s.accounted = p;
    if (!s.complete && s.close && p > s.close.last_audio_seq) {
      s.complete = true;
      this.h.onMeta?.(s, { type: "session_complete", session: s.session }, via);
    }
  }

  async _decode(s, header, body, lane) {
    try {
      return await s.decode(header, body, lane);
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      this.error("malformed", `audio seq=${header.seq}: ${e.message}`, { session: s.session, seq: header.seq });
      return null;
    }
  }

  error(kind, detail, ctx = {}) {
    if (kind in this.counters) this.counters[kind] += 1;
    this.h.onError?.({ error: kind, detail, ...ctx });
  }
}

export { EnvelopeError };
