// Reading the relay's sealed archive: a session's metadata, events, replies and audio pages,
// fed to the receiver exactly as live frames are (still sealed and signed until it checks
// them), and the sessions of a room or a day. Pages: GET /api/sessions/{session}/items;
// lists: GET /api/console/sessions (docs/console.md).

import { b64decode } from "./crypto.js";

const PAGE = 1000; // audio chunks per page: 40 s of 40 ms chunks
const REFETCH_PAGE = 500; // for a seek: start playing sooner

export class Archive {
  /** `device`: this device's id (the lists say which sessions it was given a key share of). */
  constructor({ api, receiver, device }) {
    this.api = api;
    this.receiver = receiver;
    this.device = device;
  }

  /** Open a session from the archive, and page in the audio the live stream did not bring. */
  async loadSession(session) {
    const first = await this.api.call("GET", `/api/sessions/${session}/items?from_seq=0&limit=${PAGE}`);
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

  /**
   * Sessions sealed for this scribe, newest first: of one room (`unit`, or every room) that
   * opened in [fromUs, toUs). Each says which devices the unit wrapped its key to and whether
   * a key share for this device is stored.
   */
  listSessions({ unit = null, fromUs = 0, toUs = null } = {}) {
    const q = new URLSearchParams({ device: this.device, from_us: String(Math.floor(fromUs)) });
    if (unit) q.set("unit", unit);
    if (toUs !== null) q.set("to_us", String(Math.floor(toUs)));
    return this.api.call("GET", `/api/console/sessions?${q}`);
  }
}
