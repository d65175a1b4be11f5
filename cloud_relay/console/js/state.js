// The console's store: the scribe's rooms, which room and session are shown, cues and their
// acknowledgements, errors, and which decoded audio to keep. Pure: no DOM, no network, no
// timers; the clock comes in as an argument. Sessions themselves are the receiver's
// (js/receiver.js SessionState), read here through `sessions`.

import { newRoom, noteStatus } from "./roomstate.js";

const FRESH_CUE_US = 120e6; // an archived cue younger than this still alerts
const MAX_ERRORS = 200;
const MAX_ACKED_KEPT = 500;

// Decoded audio is kept where a scribe is likely to listen: the last minutes of each open
// session, and around the playhead of the one being played. The rest is dropped from
// memory (a clinic day would not fit) and fetched again, sealed, if they seek there.
export const KEEP = Object.freeze({ liveS: 120, behindS: 600, aheadS: 120 });

export const cueKey = (session, cueId) => `${session}:${cueId}`;

export class Store {
  constructor({ acked = [] } = {}) {
    this.me = null;
    this.keyNotice = null;
    this.rooms = new Map(); // unit id -> room (js/roomstate.js newRoom)
    this.sessions = new Map(); // session id -> SessionState: the receiver's, once signed in
    this.selectedUnit = null;
    this.selectedSession = null;
    this.cues = new Map(); // cueKey -> cue
    this.acked = new Set(acked); // cue keys acknowledged in this browser, kept across reloads
    this.errors = [];
    this.unreadable = new Set(); // sessions sealed for another key of this scribe
  }

  // ---------------------------------------------------------------- rooms

  /** The rooms from GET /api/console/rooms; shows `wanted` if it is one of them. */
  setRooms(units, wanted, nowMs) {
    this.rooms.clear();
    for (const u of units) this.rooms.set(u.id, newRoom(u, nowMs));
    this.selectedUnit = this.rooms.has(wanted) ? wanted : (units[0] || {}).id || null;
  }

  /** Assignment changes from a later GET /api/console/rooms: {changed, added, removed}. */
  mergeRooms(units, nowMs) {
    const ids = new Set(units.map((u) => u.id));
    const added = [];
    const removed = [];
    let changed = false;
    for (const u of units) {
      const r = this.rooms.get(u.id);
      if (!r) {
        const room = newRoom(u, nowMs);
        this.rooms.set(u.id, room);
        added.push(room);
        changed = true;
      } else if (r.room !== (u.room || u.id)) {
        r.room = u.room || u.id;
        changed = true;
      }
    }
    for (const id of [...this.rooms.keys()]) {
      if (!ids.has(id)) {
        this.rooms.delete(id);
        removed.push(id);
        changed = true;
      }
    }
    if (changed && !this.rooms.has(this.selectedUnit)) this.selectedUnit = this.rooms.keys().next().value || null;
    return { changed, added, removed };
  }

  /** A unit_status frame: the room it is about, or null if it is not one of ours. */
  unitStatus(unitId, status, nowMs) {
    const r = this.rooms.get(unitId);
    if (r) noteStatus(r, status, nowMs);
    return r || null;
  }

  sessionClosed(unitId, session) {
    const r = this.rooms.get(unitId);
    if (r && r.openSession === session) r.openSession = null;
  }

  // ---------------------------------------------------------------- what is shown

  get room() {
    return this.rooms.get(this.selectedUnit) || null;
  }

  get session() {
    return this.selectedSession ? this.sessions.get(this.selectedSession) || null : null;
  }

  newestSession(unitId) {
    let best = null;
    for (const s of this.sessions.values()) if (s.unit === unitId && (!best || s.startedUs > best.startedUs)) best = s;
    return best;
  }

  /** Show a room (and a session of it): {unitChanged} or null if the room is not ours. */
  select(unitId, session) {
    if (!this.rooms.has(unitId)) return null;
    const unitChanged = this.selectedUnit !== unitId;
    this.selectedUnit = unitId;
    this.selectedSession = session || this.rooms.get(unitId).openSession || this.newestSession(unitId)?.session || null;
    return { unitChanged };
  }

  /**
   * The receiver opened session `s` (via "live" or "archive"). `followingLive`: the player is
   * live in this room. Returns {shownChanged, follow}: follow = play the new session live.
   */
  sessionOpened(s, via, followingLive) {
    const r = this.rooms.get(s.unit);
    if (!r) return null;
    let shownChanged = false;
    let follow = false;
    if (via === "live") {
      r.openSession = s.session;
      if (this.selectedUnit === s.unit) {
        // follow the room into its new session if we were listening live to it
        const shown = this.session;
        if (!shown || followingLive || shown.close) this.selectedSession = s.session;
        shownChanged = true;
        follow = followingLive;
      }
    }
    if (this.selectedUnit === s.unit && !this.selectedSession) this.selectedSession = s.session;
    return { shownChanged, follow };
  }

  // ---------------------------------------------------------------- cues

  /** A cue event: the new cue if it should alert (open, not seen before), else null. */
  addCue(s, ev, via, nowMs) {
    const key = cueKey(s.session, ev.cue_id);
    if (this.cues.has(key)) return null;
    const fresh = via === "live" || nowMs * 1000 - ev.at_us < FRESH_CUE_US;
    const cue = {
      key, session: s.session, unit: s.unit, room: this.rooms.get(s.unit)?.room || s.unit, cue_id: ev.cue_id,
      seq: ev.seq, at_us: ev.at_us, t_s: ev.t_s, recv_ms: ev.recv_ms,
      acked: this.acked.has(key) || !fresh, shown_ms: null, acked_ms: null,
    };
    this.cues.set(key, cue);
    return cue.acked ? null : cue;
  }

  /** The alert for `cue` is on screen. */
  alerted(cue, nowMs) {
    cue.shown_ms = nowMs;
  }

  /** Open cues, oldest first. */
  openCues(unitId) {
    return [...this.cues.values()].filter((c) => !c.acked && (unitId === undefined || c.unit === unitId))
      .sort((a, b) => a.at_us - b.at_us);
  }

  /** The cue R replays before: the newest open one, else the newest of all. */
  cueToReplay() {
    const open = this.openCues();
    if (open.length) return open[open.length - 1];
    return [...this.cues.values()].sort((a, b) => b.at_us - a.at_us)[0] || null;
  }

  /** Acknowledge `cue`: true if it was open (the caller sends the cue_ack). */
  ack(cue, nowMs) {
    if (!cue || cue.acked) return false;
    cue.acked = true;
    cue.acked_ms = nowMs;
    this.acked.add(cue.key);
    return true;
  }

  /** The acknowledged cue keys worth keeping across a reload. */
  ackedToKeep() {
    return [...this.acked].slice(-MAX_ACKED_KEPT);
  }

  // ---------------------------------------------------------------- errors

  recordError(rec, nowMs) {
    if (rec.error === "session_not_wrapped_for_me") this.unreadable.add(rec.session);
    this.errors.push({ ...rec, at: nowMs });
    if (this.errors.length > MAX_ERRORS) this.errors.shift();
  }

  // ---------------------------------------------------------------- memory

  /**
   * Drop decoded audio outside the spans worth keeping (KEEP). `playing`: {session,
   * playedSample} of the player, or null. Returns how many chunks were dropped.
   */
  evict(keep = KEEP, playing = null) {
    let dropped = 0;
    for (const s of this.sessions.values()) {
      const per = s.chunkSamples / s.sampleRate;
      const spans = [];
      if (!s.close) spans.push([s.maxSeq - keep.liveS / per, s.maxSeq]);
      if (s.session === this.selectedSession && !s.close) spans.push([s.maxSeq - keep.behindS / per, s.maxSeq]);
      if (playing && playing.session === s) {
        const q = Math.floor(playing.playedSample / s.chunkSamples);
        spans.push([q - keep.behindS / per, q + keep.aheadS / per]);
      }
      for (const [q, c] of s.chunks) {
        if (c.pcm && !spans.some(([a, b]) => q >= a && q <= b)) {
          c.pcm = null;
          dropped += 1;
        }
      }
    }
    return dropped;
  }
}
