// Reading the relay's sealed archive: a session's metadata, events and audio pages, fed to
// the receiver exactly as live frames are (still sealed until they reach it), and the list
// of a room's sessions. Pages: GET /api/sessions/{session}/items (docs/console.md).

import { b64decode } from "./crypto.js";

const PAGE = 1000; // audio chunks per page: 40 s of 40 ms chunks
const REFETCH_PAGE = 500; // for a seek: start playing sooner

export class Archive {
  /** `onUnreadable(session)`: the session was not sealed for this browser's key. */
  constructor({ api, receiver, onUnreadable }) {
    this.api = api;
    this.receiver = receiver;
    this.onUnreadable = onUnreadable;
  }

  /** Open a session from the archive, and page in the audio the live stream did not bring. */
  async loadSession(session) {
    let first;
    try {
      first = await this.api.call("GET", `/api/sessions/${session}/items?from_seq=0&limit=${PAGE}`);
    } catch (e) {
      if (e.status === 403) {
        this.onUnreadable(session);
        return;
      }
      throw e;
    }
    await this.feed(first, true);
    let next = first.next_seq;
    while (next !== null && next !== undefined) {
      const s = this.receiver.sessions.get(session);
      if (s && s.chunks.size > s.maxSeq) break; // live filled everything in
      const page = await this.api.call("GET", `/api/sessions/${session}/items?from_seq=${next}&limit=${PAGE}&events=false`);
      await this.feed(page, false);
      next = page.next_seq;
    }
  }

  async feed(page, withMeta) {
    const rx = this.receiver;
    if (withMeta && page.session_open) rx.sessionItem(page.session_open, "archive");
    if (withMeta) for (const m of page.meta) rx.sessionItem(m, "archive");
    for (const e of page.events || []) rx.envelope(b64decode(e.frame), "archive");
    for (const a of page.audio) rx.envelope(b64decode(a.frame), "archive");
    await rx.chain;
  }

  /** The player needs audio from `fromSeq` that is not decoded here (js/player.js fetchRange). */
  async fetchRange(s, fromSeq) {
    const page = await this.api.call("GET", `/api/sessions/${s.session}/items?from_seq=${fromSeq}&limit=${REFETCH_PAGE}&events=false`);
    await this.feed(page, false);
    // what the relay does not have yet (still on its way, or lost) is played over, not waited on
    const first = page.audio.length ? page.audio[0].seq : fromSeq + 1;
    for (let q = fromSeq; q < first; q++) if (!s.chunks.get(q)?.pcm) s.skipped.add(q);
  }

  /** The sessions of a room sealed for this scribe, newest first (as the relay lists them). */
  listSessions(unitId) {
    return this.api.call("GET", `/api/console/units/${unitId}/sessions`);
  }
}
