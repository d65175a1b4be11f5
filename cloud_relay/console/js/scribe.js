// The scribe's desk: connects the receiver (sealed frames in, sessions out), the player, the
// live link and the archive to the store, and the store to the views. Rules live in the
// store (js/state.js); this file applies them and draws. Runs on the page's one thread.

import { Archive } from "./archive.js";
import { b64encode, loadOrCreateIdentity } from "./crypto.js";
import { nowMs } from "./dom.js";
import { LINK, Link, wsUrl } from "./net.js";
import { Player } from "./player.js";
import { Receiver } from "./receiver.js";
import { DeskView } from "./views/desk.js";
import { WsProtoError, cueAck } from "./wsproto.js";

const TICK_MS = 500; // redraw, and chime again while cues wait
const EVICT_MS = 5000;
const ROOMS_REFRESH_MS = 15000; // assignment changes appear without a reload
const REPLAY_BEFORE_CUE_S = 15;
const NEW_DEVICE_NOTICE = "This browser is now one of your devices. Sessions sealed before now open only on the devices you used then.";

export class ScribeDesk {
  /** `saveAcked(keys)`: keep acknowledged cues across reloads; `onRefused()`: the relay ended the sign-in. */
  constructor({ store, api, topbar, alerts, saveAcked, onRefused }) {
    this.store = store;
    this.api = api;
    this.topbar = topbar;
    this.alerts = alerts;
    this.saveAcked = saveAcked;
    this.onRefused = onRefused;
    this.receiver = null;
    this.player = null;
    this.archive = null;
    this.link = null;
    this.timers = [];
    this.dirty = true; // the live strip and timeline need drawing on the next frame
    this.hoverT = null; // session time under the mouse on the timeline
    this.view = new DeskView(store, {
      selectRoom: (unit, session) => this.selectRoom(unit, session),
      replayBefore: (cue) => this.replayBefore(cue),
      ack: (cue) => this.ack(cue),
      togglePlay: () => this.togglePlay(),
      goLive: () => this.goLive(),
      seekBy: (ds) => this.seekBy(ds),
      seekTo: (t) => this.seekTo(t),
      hover: (t) => { this.hoverT = t; this.dirty = true; },
    });
  }

  // ---------------------------------------------------------------- start and stop

  async start(me, wantedUnit) {
    const { store } = this;
    const identity = await loadOrCreateIdentity(me.user);
    const pub = b64encode(identity.publicRaw);
    const known = me.public_keys || (me.public_key ? [me.public_key] : []);
    if (!known.includes(pub)) {
      // a new device: new sessions are sealed to it too; older ones open where they were sealed
      store.keyNotice = known.length ? NEW_DEVICE_NOTICE : null;
      await this.api.call("PUT", "/api/me/key", { public_key: pub });
    }
    this.topbar.key(identity.keyId);
    this.receiver = new Receiver(identity, {
      onOpen: (s, via) => this.onSessionOpen(s, via),
      onAudio: (s, header, pcm, via) => this.onAudio(s, header, pcm, via),
      onEvent: (s, ev, via) => this.onEvent(s, ev, via),
      onMeta: () => { this.dirty = true; },
      onError: (rec) => this.onError(rec),
    });
    store.sessions = this.receiver.sessions;
    this.archive = new Archive({
      api: this.api, receiver: this.receiver,
      onUnreadable: (session) => { store.unreadable.add(session); this.view.events(); },
    });
    this.player = new Player({ onTick: () => { this.dirty = true; }, fetchRange: (s, seq) => this.archive.fetchRange(s, seq) });
    const rooms = await this.api.call("GET", "/api/console/rooms");
    store.setRooms(rooms.units, wantedUnit, nowMs());
    this.renderAll();
    this.link = new Link({
      url: wsUrl(location), token: this.api.token, cursor: rooms.head,
      handlers: {
        onEnvelope: (envelope) => this.receiver.envelope(envelope, "live"),
        onFrame: (frame) => this.onFrame(frame),
        onState: (state) => this.topbar.link(state === LINK.UP),
        onRefused: () => this.onRefused(),
        onBadFrame: (e) => this.onError({ error: "malformed", detail: `relay: ${e.message}` }),
      },
    });
    this.link.start();
    for (const r of store.rooms.values()) if (r.openSession) this.loadSession(r.openSession);
    if (store.selectedUnit) this.loadArchiveList(store.selectedUnit);
    requestAnimationFrame(() => this.frame());
    this.timers.push(
      setInterval(() => { this.dirty = true; this.alerts.remind(store.openCues().length, Date.now()); }, TICK_MS),
      setInterval(() => this.evict(), EVICT_MS),
      setInterval(() => this.refreshRooms().catch(() => {}), ROOMS_REFRESH_MS),
    );
  }

  stop() {
    for (const t of this.timers) clearInterval(t);
    this.link?.stop();
    this.player?.stop();
  }

  /** Pick up assignment changes (rooms given or taken away) without a reload. */
  async refreshRooms() {
    const rooms = await this.api.call("GET", "/api/console/rooms");
    const { changed, added, removed } = this.store.mergeRooms(rooms.units, nowMs());
    for (const r of added) if (r.openSession) this.loadSession(r.openSession);
    if (removed.includes(this.player.session?.unit)) this.player.stop();
    if (changed) this.renderAll();
  }

  // ---------------------------------------------------------------- the archive

  /** Open a session from the archive and page in what live did not bring. */
  loadSession(session) {
    return this.archive.loadSession(session)
      .then(() => { this.dirty = true; })
      .catch((e) => this.onError({ error: "archive", detail: e.message }));
  }

  async loadArchiveList(unitId) {
    try {
      const list = await this.archive.listSessions(unitId);
      const r = this.store.rooms.get(unitId);
      if (r) r.archive = list;
      this.view.sessions();
    } catch (e) {
      this.onError({ error: "archive", detail: e.message });
    }
  }

  /** Drop decoded audio nobody is likely to play soon (js/state.js KEEP); returns how many chunks. */
  evict(keep) {
    const p = this.player;
    return this.store.evict(keep, p.mode !== "stopped" ? { session: p.session, playedSample: p.playedSample } : null);
  }

  // ---------------------------------------------------------------- the live link

  onFrame(f) {
    const { store } = this;
    if (f.type === "unit_status") {
      if (store.unitStatus(f.unit, f.status, nowMs())) {
        this.dirty = true;
        this.view.rooms();
      }
    } else if (f.type === "session_open" || f.type === "session_close" || f.type === "gap") {
      if (f.type === "session_close") store.sessionClosed(f.unit, f.session);
      this.receiver.sessionItem(f, "live");
    } else if (f.type === "error") {
      this.onError({ error: `relay: ${f.error}` });
    } // anything else is from a newer relay, for a newer page
  }

  // ---------------------------------------------------------------- what the receiver opens

  onSessionOpen(s, via) {
    const p = this.player;
    const followingLive = p.mode === "live" && !!p.session && p.session.unit === s.unit;
    const d = this.store.sessionOpened(s, via, followingLive);
    if (!d) return;
    if (d.shownChanged) {
      this.view.events();
      if (d.follow) p.live(s);
      this.loadArchiveList(s.unit);
    }
    this.dirty = true;
  }

  onAudio(s, header, pcm, via) {
    if (via === "live") this.player.pushLive(s, header.seq, pcm);
    this.dirty = true;
  }

  onEvent(s, ev, via) {
    if (ev.kind === "cue") {
      const cue = this.store.addCue(s, ev, via, nowMs());
      if (cue) this.alert(cue);
    }
    this.dirty = true;
    if (s.unit === this.store.selectedUnit) this.view.events();
  }

  onError(rec) {
    this.store.recordError(rec, Date.now());
    if (rec.error === "session_not_wrapped_for_me") this.view.events();
    this.dirty = true;
  }

  // ---------------------------------------------------------------- cues

  alert(cue) {
    this.view.banner();
    this.view.rooms();
    this.store.alerted(cue, nowMs());
    this.alerts.raise(cue.room, Date.now());
  }

  ack(cue) {
    if (!this.store.ack(cue, nowMs())) return;
    this.saveAcked(this.store.ackedToKeep());
    try {
      this.link.send(cueAck({ unit: cue.unit, session: cue.session, cue_id: cue.cue_id, event_seq: cue.seq }));
    } catch (e) {
      if (!(e instanceof WsProtoError)) throw e;
      this.onError({ error: "cue_ack_not_sent", detail: e.message, session: cue.session });
    }
    if (!this.store.openCues().length) this.alerts.clear();
    this.view.banner();
    this.view.rooms();
    this.view.events();
  }

  async replayBefore(cue, seconds = REPLAY_BEFORE_CUE_S) {
    if (!cue) return;
    this.selectRoom(cue.unit, cue.session);
    const s = this.store.sessions.get(cue.session);
    if (!s) return;
    await this.player.replay(s, s.seqAtTime(Math.max(0, cue.t_s - seconds)) * s.chunkSamples);
    this.dirty = true;
  }

  // ---------------------------------------------------------------- choosing and playing

  selectRoom(unitId, session) {
    const sel = this.store.select(unitId, session);
    if (!sel) return;
    location.hash = unitId;
    if (sel.unitChanged) this.loadArchiveList(unitId);
    const shown = this.store.selectedSession;
    if (shown && !this.receiver.sessions.has(shown)) this.loadSession(shown);
    this.renderAll();
  }

  async togglePlay() {
    const p = this.player;
    const s = this.store.session;
    if (!s) return;
    if (p.mode === "stopped" || p.session !== s) {
      if (!s.close && this.store.rooms.get(s.unit)?.openSession === s.session) await p.live(s);
      else await p.replay(s, 0);
    } else {
      p.setPaused(!p.paused);
    }
    this.dirty = true;
  }

  async goLive() {
    const r = this.store.room;
    if (!r || !r.openSession) return;
    this.store.selectedSession = r.openSession;
    const s = this.store.session;
    if (s) await this.player.live(s);
    this.view.events();
    this.dirty = true;
  }

  async seekTo(t) {
    const s = this.store.session;
    if (!s) return;
    t = Math.max(0, Math.min(t, Math.max(0, s.durationS - 0.05)));
    await this.player.replay(s, s.seqAtTime(t) * s.chunkSamples);
    this.dirty = true;
  }

  seekBy(ds) {
    const s = this.store.session;
    if (!s) return;
    const p = this.player;
    const base = p.session === s && p.mode !== "stopped" ? p.positionS : s.durationS;
    this.seekTo(base + ds);
  }

  /** A keyboard command (js/keys.js). */
  command(cmd, arg) {
    const { store } = this;
    if (cmd === "playPause") this.togglePlay();
    else if (cmd === "ack") this.ack(store.openCues()[0]);
    else if (cmd === "replayCue") this.replayBefore(store.cueToReplay());
    else if (cmd === "live") this.goLive();
    else if (cmd === "seekBy") this.seekBy(arg);
    else if (cmd === "room") {
      const id = [...store.rooms.keys()][arg];
      if (id) this.selectRoom(id);
    }
  }

  // ---------------------------------------------------------------- drawing

  redraw() {
    this.dirty = true;
  }

  frame() {
    if (this.dirty) {
      this.dirty = false;
      this.view.frame(this.player, this.receiver.counters, this.hoverT);
    }
    requestAnimationFrame(() => this.frame());
  }

  renderAll() {
    this.view.all();
    this.dirty = true;
  }
}
