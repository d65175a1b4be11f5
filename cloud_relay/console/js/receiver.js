// The console's receive path: the same rules as cloud_relay/scribe_client.py's Receiver.
// Open session keys, authenticate every chunk, deduplicate on (session, stream, seq),
// release events in order, decode audio (js/codec.js: PCM or Opus), and keep each
// session's decoded audio by sequence number so the timeline can replay and seek.
// Tampered, replayed or malformed frames are counted and reported, never fatal.

import { CodecError, decoderFor } from "./codec.js";
import {
  OpenError, EnvelopeError, TYPE_AUDIO, TYPE_EVENT, b64decode, fromHex, openEnvelope,
  parseHeader, unwrapSessionKey,
} from "./crypto.js";

const MAX_PENDING_UNKNOWN = 5000;
const LATE_US = 2e6; // audio this much later than the session's best arrived as backfill
const MAX_HELD_EVENTS = 30000;
const td = new TextDecoder();

export class SessionState {
  constructor(open, key) {
    this.session = open.session;
    this.unit = open.unit;
    this.room = open.room;
    this.key = key;
    this.sampleRate = open.sample_rate;
    this.chunkMs = open.chunk_ms || 40;
    this.chunkSamples = Math.round((this.sampleRate * this.chunkMs) / 1000);
    this.startedUs = open.started_us || 0;
    this.chunks = new Map(); // seq -> {pcm: Int16Array | null (evicted), n, captureUs, via}
    this.maxSeq = -1;
    this.lostAudio = new Set(); // declared lost by the unit (gap records)
    this.skipped = new Set(); // not at the relay when playback needed it: played over
    this.gaps = [];
    this.events = [];
    this.nextEvent = 0;
    this.heldEvents = new Map();
    this.close = null;
    this.segments = [{ seq: 0, t: 0 }]; // audio runs: a privacy pause starts a new one
    this.bestLatencyUs = null;
    // decoders by codec and lane: live chunks and archive pages each arrive in order, so
    // each keeps its decoder's state from chunk to chunk
    this.decoders = new Map();
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

  /** Samples [seq*chunkSamples ...] in order; null where a chunk is not here yet. */
  samplesFrom(seq, maxChunks) {
    const out = [];
    for (let s = seq; s < seq + maxChunks && s <= this.maxSeq; s++) {
      const c = this.chunks.get(s);
      if (c && c.pcm) out.push({ seq: s, pcm: c.pcm });
      else if (this.lostAudio.has(s) || this.skipped.has(s)) continue;
      else break;
    }
    return out;
  }
}

export class Receiver {
  constructor(identity, handlers) {
    this.identity = identity;
    this.h = handlers; // onOpen(s), onAudio(s, hdr, pcm, via), onEvent(s, ev), onMeta(s, m), onError(rec)
    this.sessions = new Map();
    this.pending = new Map();
    this.notForMe = new Set();
    this.counters = { tampered: 0, replayed: 0, malformed: 0, not_for_me: 0, missing: 0, chunks: 0, events: 0, late: 0 };
    this.chain = Promise.resolve();
  }

  /** Everything goes through one queue so WebCrypto's promises keep stream order. */
  enqueue(fn) {
    this.chain = this.chain.then(fn).catch((e) => this.error("malformed", String(e)));
    return this.chain;
  }

  sessionItem(item, via = "live") {
    return this.enqueue(() => this._sessionItem(item, via));
  }

  envelope(frame, via = "live") {
    return this.enqueue(() => this._envelope(frame, via));
  }

  async _sessionItem(m, via) {
    if (!m || typeof m.unit !== "string" || typeof m.session !== "string" || m.session.length !== 32) {
      this.error("malformed", "session message without unit or session");
      return;
    }
    if (m.type === "session_open") return this._open(m, via);
    const s = this.sessions.get(m.session);
    if (m.type === "session_close") {
      if (s) {
        s.close = m;
        this.h.onMeta?.(s, m, via);
      }
    } else if (m.type === "gap") {
      if (!Number.isInteger(m.first_seq) || !Number.isInteger(m.last_seq) || m.last_seq < m.first_seq) {
        this.error("malformed", "gap with bad range");
        return;
      }
      if (s && (m.stream || "audio") === "audio") {
        if (!s.gaps.some((g) => g.first_seq === m.first_seq)) s.gaps.push(m);
        for (let q = m.first_seq; q <= m.last_seq; q++) s.lostAudio.add(q);
        s.maxSeq = Math.max(s.maxSeq, m.last_seq);
        this.h.onMeta?.(s, m, via);
      }
    }
  }

  async _open(m, via) {
    if (this.sessions.has(m.session)) return this.sessions.get(m.session);
    const mine = (m.recipients || []).find((r) => r.key_id === this.identity.keyId);
    if (!mine) {
      if (!this.notForMe.has(m.session)) {
        this.notForMe.add(m.session);
        this.counters.not_for_me += 1;
        this.h.onError?.({ error: "session_not_wrapped_for_me", session: m.session, unit: m.unit });
      }
      return null;
    }
    let key;
    try {
      key = await unwrapSessionKey(this.identity, b64decode(mine.wrapped_key), m.unit, fromHex(m.session));
    } catch (e) {
      this.error("tampered", String(e.message || e), { session: m.session });
      return null;
    }
    const s = new SessionState(m, key);
    this.sessions.set(s.session, s);
    this.h.onOpen?.(s, via);
    const queued = this.pending.get(s.session) || [];
    this.pending.delete(s.session);
    for (const [frame, v] of queued) await this._envelope(frame, v);
    return s;
  }

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
      if (this.notForMe.has(header.session)) return;
      const q = this.pending.get(header.session) || [];
      if (q.length < MAX_PENDING_UNKNOWN) q.push([frame, via]);
      this.pending.set(header.session, q);
      return;
    }
    const known = header.type === TYPE_AUDIO ? s.chunks.get(header.seq) : null;
    if (via !== "live" && known && known.pcm) return;
    let opened;
    try {
      opened = await openEnvelope(frame, s.key);
    } catch (e) {
      this.error(e instanceof OpenError ? "tampered" : "malformed", e.message,
        { session: s.session, seq: header.seq });
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
    if (known) {
      if (via === "live") this.error("replayed", `audio seq=${header.seq} already received`, { session: s.session, seq: header.seq });
      return;
    }
    if (header.type === TYPE_EVENT && (header.seq < s.nextEvent || s.heldEvents.has(header.seq))) {
      if (via === "live") this.error("replayed", `event seq=${header.seq} already received`, { session: s.session, seq: header.seq });
      return;
    }
    const { body } = opened;
    if (header.type === TYPE_AUDIO) {
      const decoded = await this._decode(s, header, body, via === "live" ? "live" : "archive");
      if (!decoded) return;
      const { pcm, concealed } = decoded;
      if (via === "live") {
        // as the reference receiver: a chunk much later than the session's best is backfill
        const lat = Date.now() * 1000 - header.captureUs;
        if (s.bestLatencyUs === null || lat < s.bestLatencyUs) s.bestLatencyUs = lat;
        if (lat - s.bestLatencyUs > LATE_US) {
          this.counters.late += 1;
          via = "backfill";
        }
      }
      s.chunks.set(header.seq, { pcm, n: pcm.length, captureUs: header.captureUs, via });
      s.maxSeq = Math.max(s.maxSeq, header.seq);
      this.counters.chunks += 1;
      this.h.onAudio?.(s, header, pcm, via, concealed);
      return;
    }
    if (s.heldEvents.size >= MAX_HELD_EVENTS) {
      this.error("malformed", "reorder buffer full", { session: s.session });
      return;
    }
    s.heldEvents.set(header.seq, { header, body });
    while (s.heldEvents.has(s.nextEvent)) {
      const { header: h, body: b } = s.heldEvents.get(s.nextEvent);
      s.heldEvents.delete(s.nextEvent);
      s.nextEvent += 1;
      let ev;
      try {
        ev = JSON.parse(td.decode(b));
        if (typeof ev !== "object" || !ev || typeof ev.kind !== "string" || !Number.isInteger(ev.at_us)) {
          throw new Error("event without kind or at_us");
        }
      } catch (e) {
        this.error("malformed", String(e.message || e), { session: s.session });
        continue;
      }
      const rec = { ...ev, seq: h.seq, session: s.session, unit: s.unit,
        t_s: (ev.at_us - s.startedUs) / 1e6, via, recv_ms: performance.timeOrigin + performance.now() };
      if (ev.kind === "privacy_resume" && Number.isInteger(ev.audio_seq)) {
        s.segments.push({ seq: ev.audio_seq, t: rec.t_s });
        s.segments.sort((a, b) => a.seq - b.seq);
      }
      s.events.push(rec);
      this.counters.events += 1;
      this.h.onEvent?.(s, rec, via);
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
