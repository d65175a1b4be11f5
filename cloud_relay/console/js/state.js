// The console's store: the scribe's rooms (in natural order), which room and session are
// shown, cues and the replies to them (shared by every device of every scribe on the room:
// they come from the room's stream), a relay outage and what it made the scribe miss,
// errors and refused items, sessions this device cannot open and why, and which decoded
// audio to keep. Pure: no DOM, no network, no timers; the clock comes in as an argument.
// Sessions themselves are the receiver's (js/receiver.js SessionState), read through
// `sessions`.

import { newRoom, noteStatus } from "./roomstate.js";

const FRESH_CUE_US = 120e6; // an archived cue younger than this still alerts
const MAX_ERRORS = 200;
const OUTAGE_BANNER_MS = 3000; // a blip shorter than this is not worth a banner

// Decoded audio is kept where a scribe is likely to listen: the last minutes of each open
// session, and around the playhead of the one being played. The rest is dropped from
// memory (a clinic day would not fit) and fetched again, sealed, if they seek there.
export const KEEP = Object.freeze({ liveS: 120, behindS: 600, aheadS: 120 });

export const cueKey = (session, cueId) => `${session}:${cueId}`;

export const REPLY_WORDS = Object.freeze({ seen: "seen", got_it: "got it", repeat: "please repeat", see_me: "see me after the visit" });

// "Exam 2" before "Exam 10", whatever the case
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
export const naturalOrder = (a, b) => collator.compare(a.room, b.room) || collator.compare(a.id, b.id);

export class Store {
  constructor() {
    this.me = null;
    this.rooms = new Map(); // unit id -> room (js/roomstate.js newRoom), in natural order
    this.sessions = new Map(); // session id -> SessionState: the receiver's, once signed in
    this.selectedUnit = null;
    this.selectedSession = null;
    this.cues = new Map(); // cueKey -> cue
    this.errors = [];
    this.forged = []; // what was refused as forged, newest last: {at, unit, session, why}
    this.sharedBy = new Map(); // session -> the label of the device that shared its key with this one
    this.relayDown = null; // {sinceMs, rooms: [{unit, room, wasRecording}]} while the relay is unreachable
    this.missed = null; // after an outage: {unit, room, session, fromSample, seconds}
    this.notices = []; // {id, text, kind}: dismissable lines under the top bar
    this.dismissed = new Set(); // notice ids (and waiting devices) the scribe dismissed
    this.search = null; // {unit, day, list, error}: the session search shown instead of the room's list
  }

  // ---------------------------------------------------------------- rooms

  _sort() {
    this.rooms = new Map([...this.rooms.values()].sort(naturalOrder).map((r) => [r.id, r]));
  }

  /** The rooms from GET /api/console/rooms; shows `wanted` if it is one of them. */
  setRooms(units, wanted, nowMs) {
    this.rooms.clear();
    for (const u of units) this.rooms.set(u.id, newRoom(u, nowMs));
    this._sort();
    this.selectedUnit = this.rooms.has(wanted) ? wanted : this.rooms.keys().next().value || null;
  }

  /** Rooms in the order they are shown (and numbered 1-9). */
  orderedRooms() {
    return [...this.rooms.values()];
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
    if (changed) this._sort();
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
      if (!r.openSession || r.openSession === s.session || (this.sessions.get(r.openSession)?.startedUs || 0) <= s.startedUs) {
        r.openSession = s.session;
      }
      if (this.selectedUnit === s.unit) {
        // follow the room into its new session if we were listening live to it
        const shown = this.session;
        if (!shown || followingLive || shown.close) this.selectedSession = s.session;
        shownChanged = true;
      }
      follow = followingLive;
    }
    if (this.selectedUnit === s.unit && !this.selectedSession) {
      this.selectedSession = s.session;
      shownChanged = true;
    }
    if (this.selectedUnit === s.unit && this.selectedSession === s.session) shownChanged = true;
    return { shownChanged, follow };
  }

  // ---------------------------------------------------------------- cues and replies

  /** A cue event: the new cue if it should alert (open, not seen before), else null. */
  addCue(s, ev, via, nowMs) {
    const key = cueKey(s.session, ev.cue_id);
    if (this.cues.has(key)) return null;
    const fresh = via === "live" || nowMs * 1000 - ev.at_us < FRESH_CUE_US;
    const cue = {
      key, session: s.session, unit: s.unit, room: this.rooms.get(s.unit)?.room || s.unit, cue_id: ev.cue_id,
      seq: ev.seq, at_us: ev.at_us, t_s: ev.t_s, recv_ms: ev.recv_ms,
      acked: !fresh, stale: !fresh, replies: [], sent: null, shown_ms: null, acked_ms: null,
    };
    // replies that came before the cue's event (the archive hands items in its own order)
    for (const r of s.replies.filter((x) => x.cue_id === ev.cue_id)) this._applyReply(cue, r, nowMs);
    this.cues.set(key, cue);
    return cue.acked ? null : cue;
  }

  _applyReply(cue, reply, nowMs) {
    if (cue.replies.some((x) => x.device === reply.device && x.reply === reply.reply && x.at_us === reply.at_us)) return false;
    cue.replies.push(reply);
    // only a person's reply is "seen": a recorder's never is (the unit holds the puck to the same)
    if (reply.kind === "person" && !cue.acked) {
      cue.acked = true;
      cue.acked_ms = nowMs;
    }
    return true;
  }

  /**
   * A checked reply to cue `reply.cue_id` of session `s` (from the room's stream: this
   * device's, another of this scribe's, or another scribe's). Returns the cue if it changed.
   */
  replied(s, reply, nowMs) {
    const cue = this.cues.get(cueKey(s.session, reply.cue_id));
    if (!cue) return null; // its event comes later: addCue applies the replies then
    return this._applyReply(cue, reply, nowMs) ? cue : null;
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

  /** This device replies `reply` to `cue`: true if it was open (the caller sends it). */
  ack(cue, reply, nowMs) {
    if (!cue || cue.acked) return false;
    cue.acked = true;
    cue.acked_ms = nowMs;
    cue.sent = reply;
    return true;
  }

  // ---------------------------------------------------------------- the relay's outage

  /** The live link went down at `nowMs`: remember what each room was doing. */
  linkDown(nowMs, player) {
    if (this.relayDown) return;
    const rooms = this.orderedRooms().map((r) => ({
      unit: r.id, room: r.room, wasRecording: !!r.recording && !!r.openSession, session: r.openSession,
    }));
    let hearing = null;
    if (player && player.mode === "live" && player.session && !player.session.close) {
      const s = player.session;
      hearing = { unit: s.unit, session: s.session, fromSample: (s.newestSeq + 1) * s.chunkSamples };
    }
    this.relayDown = { sinceMs: nowMs, rooms, hearing };
  }

  /** The link is back: what the scribe missed (if it was worth a banner). */
  linkUp(nowMs) {
    const down = this.relayDown;
    this.relayDown = null;
    if (!down || nowMs - down.sinceMs < OUTAGE_BANNER_MS || !down.hearing) return null;
    const r = this.rooms.get(down.hearing.unit);
    const seconds = (nowMs - down.sinceMs) / 1000;
    const prev = this.missed;
    if (prev && prev.session === down.hearing.session && prev.fromSample <= down.hearing.fromSample) {
      // another outage before the scribe played the last one: what they missed still starts
      // where the first began (playing from there runs through both until live)
      this.missed = { ...prev, seconds: prev.seconds + seconds };
      return this.missed;
    }
    this.missed = { ...down.hearing, room: r?.room || down.hearing.unit, seconds, sinceMs: down.sinceMs };
    return this.missed;
  }

  /** Show the outage banner yet? (a blip is not worth one) */
  outageShown(nowMs) {
    return !!this.relayDown && nowMs - this.relayDown.sinceMs >= OUTAGE_BANNER_MS;
  }

  // ---------------------------------------------------------------- errors and refusals

  recordError(rec, nowMs) {
    if (rec.error === "forged") {
      this.forged.push({ at: nowMs, unit: rec.unit, session: rec.session, why: rec.detail });
      if (this.forged.length > MAX_ERRORS) this.forged.shift();
    }
    this.errors.push({ ...rec, at: nowMs });
    if (this.errors.length > MAX_ERRORS) this.errors.shift();
  }

  notice(id, text, kind = "info") {
    if (!this.notices.some((n) => n.id === id)) this.notices.push({ id, text, kind });
  }

  dismiss(id) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.dismissed.add(id);
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
