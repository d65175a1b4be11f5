// The scribe's desk: this browser as one of the scribe's devices (js/device.js), the receiver
// (signed, sealed frames in, sessions out), the player, the live link, the archive and key
// shares, wired to the store and the views. Rules live in the store (js/state.js) and the
// receiver; this file applies them and draws. Runs on the page's one thread.

import { Archive } from "./archive.js";
import { b64decode, fromHex, unwrapSessionKeyRaw } from "./crypto.js";
import { AuthorityChanged, Device, NoAuthority } from "./device.js";
import { nowMs } from "./dom.js";
import { LINK, Link, wsUrl } from "./net.js";
import { Player, SPEEDS } from "./player.js";
import { Receiver } from "./receiver.js";
import { REPLY_WORDS } from "./state.js";
import { TrustError, makeShare, openShare, sealReply, verifyShare } from "./trust.js";
import { DeskView } from "./views/desk.js";
import { renderBlocked, renderWaiting } from "./views/gate.js";
import { WsProtoError, cueAck } from "./wsproto.js";

const TICK_MS = 500; // redraw, and chime again while cues wait
const EVICT_MS = 5000;
const ROOMS_REFRESH_MS = 15000; // assignment changes appear without a reload
const DEVICES_REFRESH_MS = 10000; // siblings waiting for approval; revocations
const SHARES_MS = 5000; // key shares to and from this scribe's other devices (cheap: a GET each)
const APPROVAL_POLL_MS = 2000;
const OUTAGE_NOTIFY_MS = 10000; // a hidden page hears of an outage after this long
const REPLAY_BEFORE_CUE_S = 15;
const MAX_SHARES_PER_PUT = 100;

export class ScribeDesk {
  /** `onRefused()`: the relay ended the sign-in. `notifier`: js/cues.js Notifier. */
  constructor({ store, api, topbar, alerts, notifier, prefs, onRefused }) {
    this.store = store;
    this.api = api;
    this.topbar = topbar;
    this.alerts = alerts;
    this.notifier = notifier;
    this.prefs = prefs;
    this.onRefused = onRefused;
    this.device = null;
    this.receiver = null;
    this.player = null;
    this.archive = null;
    this.link = null;
    this.timers = [];
    this.stopped = false;
    this.sharesSeen = new Set(); // key shares for this device already applied
    this.tried = new Set(); // sessions named by a unit's status that were fetched once
    this.myShares = new Map(); // session -> share for this device (to re-share onward)
    this.dirty = true; // the live strip and timeline need drawing on the next frame
    this.hoverT = null; // session time under the mouse on the timeline
    this.missedSpeed = prefs?.missedSpeed || 1.5;
    this.chosenSpeed = 1; // the scribe's replay speed (a catch-up runs at missedSpeed)
    this.view = new DeskView(store, {
      selectRoom: (unit, session) => this.selectRoom(unit, session),
      replayBefore: (cue) => this.replayBefore(cue),
      reply: (cue, reply) => this.reply(cue, reply),
      consent: (s, given) => this.consent(s, given),
      togglePlay: () => this.togglePlay(),
      goLive: () => this.goLive(),
      seekBy: (ds) => this.seekBy(ds),
      seekTo: (t) => this.seekTo(t),
      hover: (t) => { this.hoverT = t; this.dirty = true; },
      setSpeed: (v) => this.setSpeed(v),
      setVolume: (v) => this.setVolume(v),
      catchUp: (speed) => this.catchUp(speed),
      dismissMissed: () => { this.store.missed = null; this.view.outage(); },
      approve: (d) => this.approve(d),
      dismiss: (id) => { this.store.dismiss(id); this.view.notices(this.device); },
      search: (q) => this.search(q),
      hearing: () => this.jumpToHearing(),
    });
  }

  // ---------------------------------------------------------------- start and stop

  async start(me, wantedUnit) {
    const device = await this.openDevice(me);
    if (!device) return;
    this.device = device;
    this.topbar.device(device);
    if (device.authority.fresh) {
      this.store.notice("authority", `This browser now trusts the clinic authority ${device.authority.fingerprint.slice(0, 29)}… — compare it with your clinic admin's once.`);
    }
    if (!device.endorsed && !(await this.waitForApproval(device))) return;
    await this.startDesk(me, wantedUnit);
  }

  /** This browser as one of the scribe's devices, or null (a screen says why). */
  async openDevice(me) {
    for (;;) {
      try {
        return await Device.open(me.user, this.api);
      } catch (e) {
        if (e instanceof AuthorityChanged) {
          renderBlocked(document.getElementById("view"), { changed: e });
          this.topbar.link(false);
          return null;
        }
        if (!(e instanceof NoAuthority)) throw e;
        renderBlocked(document.getElementById("view"), { none: true });
        await sleep(5000);
        if (this.stopped) return null;
      }
    }
  }

  /** Until the clinic (or another of the scribe's devices) endorses this one. */
  async waitForApproval(device) {
    const el = document.getElementById("view");
    const fp = await device.fingerprint();
    while (!this.stopped) {
      renderWaiting(el, { label: device.keys.label, fingerprint: fp, pendingSince: device.list?.find((d) => d.device === device.id)?.created_us });
      await sleep(APPROVAL_POLL_MS);
      try {
        await device.refresh();
      } catch (e) {
        if (e instanceof AuthorityChanged) {
          renderBlocked(el, { changed: e });
          return false;
        }
        continue; // the relay may be down for a moment: keep waiting
      }
      if (device.endorsed) return true;
    }
    return false;
  }

  async startDesk(me, wantedUnit) {
    const { store, device } = this;
    this.receiver = new Receiver(device.identity, {
      onOpen: (s, via) => this.onSessionOpen(s, via),
      onAudio: (s, header, pcm, via, concealed) => this.onAudio(s, header, pcm, via, concealed),
      onEvent: (s, ev, via) => this.onEvent(s, ev, via),
      onMeta: (s, m) => this.onMeta(s, m),
      onReply: (s, r, via) => this.onReply(s, r, via),
      onError: (rec) => this.onError(rec),
    }, {
      authority: device.authority.public,
      revocations: () => device.revocations,
      device: (unit, id) => device.roomDevice(unit, id),
    });
    store.sessions = this.receiver.sessions;
    this.view.receiver = this.receiver;
    this.view.device = device;
    this.view.missedSpeed = this.missedSpeed;
    this.archive = new Archive({ api: this.api, receiver: this.receiver, device: device.id });
    this.player = new Player({
      onTick: () => { this.dirty = true; },
      fetchRange: (s, seq) => this.archive.fetchRange(s, seq),
      onCaughtUp: () => {
        // live again: "play what you missed" ran at its own speed; the scribe's stays theirs
        this.player.speed = this.chosenSpeed;
        this.dirty = true;
        this.view.all();
      },
    });
    this.player.volume = this.prefs?.volume ?? 1;
    this.player.speed = this.chosenSpeed = this.prefs?.speed ?? 1;
    const rooms = await this.api.call("GET", "/api/console/rooms");
    store.setRooms(rooms.units, wantedUnit, nowMs());
    this.renderAll();
    this.link = new Link({
      url: wsUrl(location), token: this.api.token, cursor: rooms.head,
      handlers: {
        onEnvelope: (envelope) => this.receiver.envelope(envelope, "live"),
        onFrame: (frame) => this.onFrame(frame),
        onState: (state) => this.onLinkState(state),
        onRefused: () => this.onRefused(),
        onBadFrame: (e) => this.onError({ error: "malformed", detail: `relay: ${e.message}` }),
      },
    });
    this.link.start();
    await this.fetchShares().catch((e) => this.onError({ error: "key_shares", detail: e.message }));
    for (const r of store.rooms.values()) if (r.openSession) this.loadSession(r.openSession);
    if (store.selectedUnit) this.loadArchiveList(store.selectedUnit);
    requestAnimationFrame(() => this.frame());
    this.timers.push(
      setInterval(() => this.tick(), TICK_MS),
      setInterval(() => this.evict(), EVICT_MS),
      setInterval(() => this.refreshRooms().catch(() => {}), ROOMS_REFRESH_MS),
      setInterval(() => this.refreshDevices().catch(() => {}), DEVICES_REFRESH_MS),
      setInterval(() => this.syncShares().catch(() => {}), SHARES_MS),
    );
    this.refreshDevices().catch(() => {});
    this.syncShares().catch(() => {});
  }

  stop() {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.link?.stop();
    this.player?.stop();
  }

  tick() {
    const { store } = this;
    this.dirty = true;
    this.alerts.remind(store.openCues().length, Date.now());
    if (store.relayDown) {
      this.view.outage();
      const down = nowMs() - store.relayDown.sinceMs;
      if (down > OUTAGE_NOTIFY_MS && !store.relayDown.notified) {
        store.relayDown.notified = true;
        const rec = store.relayDown.rooms.filter((r) => r.wasRecording).map((r) => r.room);
        this.notifier.notify("Relay unreachable", rec.length
          ? `${rec.join(", ")}: the unit keeps recording into its own buffer. Nothing is lost.`
          : "The console reconnects by itself.", { tag: "relay-outage", unit: store.relayDown.hearing?.unit, onClick: (u) => u && this.selectRoom(u) });
      }
    }
  }

  /** Pick up assignment changes (rooms given or taken away) without a reload. */
  async refreshRooms() {
    const rooms = await this.api.call("GET", "/api/console/rooms");
    const { changed, added, removed } = this.store.mergeRooms(rooms.units, nowMs());
    for (const r of added) if (r.openSession) this.loadSession(r.openSession);
    if (removed.includes(this.player.session?.unit)) this.player.stop();
    if (changed) this.renderAll();
  }

  /** The scribe's devices (siblings waiting for approval), the revocations, the authority. */
  async refreshDevices() {
    try {
      await this.device.refresh();
    } catch (e) {
      if (e instanceof AuthorityChanged) {
        this.stop();
        renderBlocked(document.getElementById("view"), { changed: e });
        return;
      }
      throw e;
    }
    this.view.notices(this.device);
  }

  async approve(pending) {
    try {
      await this.device.approve(pending);
      this.store.notice(`approved:${pending.device}`, `You approved “${pending.label}”. Your clinic's admin is told. It opens your sessions once this browser shares their keys (a few seconds).`);
      this.syncShares().catch(() => {});
    } catch (e) {
      this.store.notice(`approve-failed:${pending.device}`, `Could not approve “${pending.label}”: ${e.message}`, "error");
    }
    this.view.notices(this.device);
  }

  // ---------------------------------------------------------------- key shares

  /** Apply the key shares the scribe's other devices made for this one. */
  async fetchShares() {
    const { device } = this;
    const shares = await this.api.call("GET", `/api/me/key-shares?device=${device.id}`);
    const me = { device: device.id, encKeyId: device.identity.keyId, scribe: device.user };
    for (const share of shares) {
      const id = `${share.session}:${share.from_device}:${share.issued_us}`;
      if (this.sharesSeen.has(id)) continue;
      this.sharesSeen.add(id);
      try {
        const sender = await verifyShare(share, { me, devices: device.mine });
        const raw = await openShare(share, device.identity);
        this.myShares.set(share.session, share);
        this.store.sharedBy.set(share.session, sender.label);
        await this.receiver.sharedKey(share.session, raw);
        this.markShared(share.session);
      } catch (e) {
        if (!(e instanceof TrustError)) throw e;
        this.onError({ error: "forged", detail: `key share: ${e.message}`, session: share.session });
      }
    }
  }

  /** A share for `session` reached this device: its list rows offer Open from now on. */
  markShared(session) {
    const { store } = this;
    let hit = false;
    for (const list of [...[...store.rooms.values()].map((r) => r.archive || []), store.search?.list || []]) {
      for (const row of list) if (row.session === session && !row.shared) { row.shared = true; hit = true; }
    }
    if (hit) this.view.sessions();
  }

  /** Both ways: take shares made for this device, and make shares for the siblings. */
  async syncShares() {
    await this.fetchShares();
    if (!this.device.endorsed) return;
    let made = 0;
    for (const sib of this.device.siblings()) {
      const wanted = await this.api.call("GET", `/api/me/key-shares/wanted?device=${sib.device}&limit=${MAX_SHARES_PER_PUT}`);
      const shares = [];
      for (const w of wanted) {
        const raw = await this.sessionKeyFor(w).catch(() => null);
        if (!raw) continue;
        shares.push(await makeShare(raw, {
          unit: w.unit, session: w.session, to: sib, signKey: this.device.keys.sign.privateKey,
          fromDevice: this.device.id, issuedUs: Math.floor(Date.now() * 1000),
        }));
        raw.fill(0);
      }
      if (shares.length) {
        const r = await this.api.call("PUT", "/api/me/key-shares", { shares });
        made += r.stored;
      }
    }
    return made;
  }

  /** This device's own copy of a session's key (its wrap, a join, or a share made for it). */
  async sessionKeyFor({ session, unit, session_open: open, added = [] }) {
    const id = this.device.identity;
    for (const m of [open, ...added]) {
      const mine = (m?.recipients || []).find((r) => r.key_id === id.keyId);
      if (mine) return unwrapSessionKeyRaw(id, b64decode(mine.wrapped_key), unit, fromHex(session));
    }
    const share = this.myShares.get(session);
    return share ? openShare(share, id) : null;
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
      const list = await this.archive.listSessions({ unit: unitId });
      const r = this.store.rooms.get(unitId);
      if (r) r.archive = list;
      this.view.sessions();
    } catch (e) {
      this.onError({ error: "archive", detail: e.message });
    }
  }

  async search({ unit, day }) {
    if (!unit && !day) {
      this.store.search = null;
      this.view.sessions();
      return;
    }
    let from = 0;
    let to = 2 ** 52;
    if (day) {
      const d = new Date(`${day}T00:00:00`);
      from = d.getTime() * 1000;
      to = from + 86400e6;
    }
    try {
      const list = await this.archive.listSessions({ unit: unit || null, fromUs: from, toUs: to });
      this.store.search = { unit, day, list };
    } catch (e) {
      this.store.search = { unit, day, list: [], error: e.message };
    }
    this.view.sessions();
  }

  /** Drop decoded audio nobody is likely to play soon (js/state.js KEEP); returns how many chunks. */
  evict(keep) {
    const p = this.player;
    return this.store.evict(keep, p.mode !== "stopped" ? { session: p.session, playedSample: p.playedSample } : null);
  }

  // ---------------------------------------------------------------- the live link

  onLinkState(state) {
    const up = state === LINK.UP;
    this.topbar.link(up);
    const { store } = this;
    if (!up && state !== LINK.STOPPED) {
      store.linkDown(nowMs(), this.player);
    } else if (up) {
      const missed = store.linkUp(nowMs());
      if (missed) {
        this.notifier.notify("Relay back", `You missed ${Math.round(missed.seconds)} s of ${missed.room}. Play it at ${this.missedSpeed}× from the console.`,
          { tag: "relay-outage", unit: missed.unit, onClick: (u) => this.selectRoom(u) });
      }
      // what the scribe missed arrives as backfill; sessions that opened meanwhile too
      this.refreshRooms().catch(() => {});
    }
    this.view.outage();
    this.view.rooms();
  }

  onFrame(f) {
    const { store } = this;
    if (f.type === "unit_status") {
      if (store.unitStatus(f.unit, f.status, nowMs())) {
        this.dirty = true;
        this.view.rooms();
        const sid = f.status?.session;
        // a session this page has not met (it opened while the page could not read it)
        if (sid && !this.receiver.sessions.has(sid) && !this.receiver.unopened.has(sid) && !this.receiver.refused.has(sid)
            && !this.tried.has(sid)) {
          this.tried.add(sid);
          this.loadSession(sid);
        }
      }
    } else if (["session_open", "session_close", "gap", "recipients_added", "cue_ack"].includes(f.type)) {
      this.receiver.sessionItem(f, "live");
      const dev = this.device;
      if (f.type === "recipients_added" && (f.recipients || []).some((r) => r.kind === "scribe" && r.id === dev.user
          && r.device && r.device !== dev.id && !dev.mine.has(r.device))) {
        // a device of this scribe this one has not met joined a session: it wants the keys of
        // the earlier ones, so meet it and share now rather than at the next refresh
        this.refreshDevices().then(() => this.syncShares()).catch(() => {});
      }
      if (f.type === "recipients_added" && (f.recipients || []).some((r) => r.key_id === dev.identity.keyId)) {
        // this device joined a running session whose open came before it could read the room's
        // archive: fetch it (what is already here waits in the receiver)
        this.receiver.chain.then(() => {
          if (!this.receiver.sessions.has(f.session)) this.loadSession(f.session);
        });
      }
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
    if (d.follow) p.live(s);
    if (d.shownChanged) {
      this.view.events();
      this.loadArchiveList(s.unit);
    }
    this.view.sessions();
    this.dirty = true;
  }

  onMeta(s, m) {
    if (m.type === "session_close") {
      this.store.sessionClosed(s.unit, s.session);
      this.view.rooms();
    }
    if (s.unit === this.store.selectedUnit) this.view.events();
    this.dirty = true;
  }

  onAudio(s, header, pcm, via, concealed) {
    if (via === "live" || via === "backfill") this.player.pushLive(s, header.seq, pcm, concealed);
    this.dirty = true;
  }

  onEvent(s, ev, via) {
    if (ev.kind === "cue") {
      const cue = this.store.addCue(s, ev, via, nowMs());
      if (cue) this.alert(cue);
    }
    if (ev.kind === "consent") this.view.pane();
    this.dirty = true;
    if (s.unit === this.store.selectedUnit) this.view.events();
  }

  onReply(s, reply) {
    const cue = this.store.replied(s, reply, nowMs());
    if (!cue) return;
    if (cue.acked && !this.store.openCues().length) this.alerts.clear();
    this.view.banner();
    this.view.rooms();
    this.view.events();
  }

  onError(rec) {
    this.store.recordError(rec, Date.now());
    if (rec.error === "session_not_wrapped_for_me" || rec.error === "forged") {
      this.view.events();
      this.view.sessions();
    }
    this.dirty = true;
  }

  // ---------------------------------------------------------------- cues

  alert(cue) {
    this.view.banner();
    this.view.rooms();
    this.store.alerted(cue, nowMs());
    this.alerts.raise(cue.room, Date.now());
    this.notifier.notify(`Cue — ${cue.room}`, "The physician asked for a clarification.",
      { tag: cue.key, unit: cue.unit, session: cue.session, onClick: (u, sess) => this.selectRoom(u, sess) });
  }

  /** Reply to a cue from this device: sealed under the session key, signed by this device. */
  async reply(cue, reply = "seen") {
    if (!cue) return;
    const s = this.store.sessions.get(cue.session);
    if (!s || !this.store.ack(cue, reply, nowMs())) return;
    try {
      const sealed = await sealReply(s.replyKey, {
        unit: cue.unit, session: cue.session, cueId: cue.cue_id, reply, atUs: Math.floor(Date.now() * 1000),
        signKey: this.device.keys.sign.privateKey, device: this.device.id,
      });
      this.link.send(cueAck({ unit: cue.unit, session: cue.session, sealed }));
    } catch (e) {
      if (!(e instanceof WsProtoError) && !(e instanceof TrustError)) throw e;
      this.onError({ error: "cue_ack_not_sent", detail: e.message, session: cue.session });
    }
    if (!this.store.openCues().length) this.alerts.clear();
    this.view.banner();
    this.view.rooms();
    this.view.events();
  }

  /** The scribe confirms the read-back: the unit records consent (or that it was declined). */
  async consent(s, given) {
    if (!s) return;
    try {
      const sealed = await sealReply(s.replyKey, {
        unit: s.unit, session: s.session, cueId: 0, reply: given ? "consent_given" : "consent_declined",
        atUs: Math.floor(Date.now() * 1000), signKey: this.device.keys.sign.privateKey, device: this.device.id,
      });
      this.link.send(cueAck({ unit: s.unit, session: s.session, sealed }));
      s.consentSent = given ? "given" : "declined";
    } catch (e) {
      if (!(e instanceof WsProtoError) && !(e instanceof TrustError)) throw e;
      this.onError({ error: "consent_not_sent", detail: e.message, session: s.session });
    }
    this.view.pane();
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
    this.renderAll(); // the player carries on: the room heard is not the room on screen
  }

  jumpToHearing() {
    const s = this.player.session;
    if (s && this.player.mode !== "stopped") this.selectRoom(s.unit, s.session);
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
    this.view.rooms();
  }

  async goLive() {
    const r = this.store.room;
    if (!r || !r.openSession) return;
    this.store.selectedSession = r.openSession;
    const s = this.store.session;
    if (s) await this.player.live(s);
    this.view.events();
    this.view.rooms();
    this.dirty = true;
  }

  /** "Play what you missed": from where the outage began, at `speed`, until live again. */
  async catchUp(speed = this.missedSpeed) {
    const m = this.store.missed;
    if (!m) return;
    this.missedSpeed = speed;
    this.view.missedSpeed = speed;
    if (this.prefs) this.prefs.missedSpeed = speed;
    const s = this.store.sessions.get(m.session);
    if (!s) return;
    this.store.missed = null;
    this.selectRoom(s.unit, s.session);
    await this.player.replay(s, m.fromSample, speed);
    this.view.outage();
    this.dirty = true;
  }

  async setSpeed(v) {
    await this.player.setSpeed(v);
    this.chosenSpeed = this.player.speed;
    if (this.prefs) this.prefs.speed = this.player.speed;
    this.dirty = true;
    this.view.transport();
  }

  stepSpeed(dir) {
    const i = SPEEDS.indexOf(this.player.speed);
    const next = SPEEDS[Math.min(SPEEDS.length - 1, Math.max(0, (i < 0 ? 0 : i) + dir))];
    return this.setSpeed(next);
  }

  setVolume(v) {
    this.player.setVolume(v);
    if (this.prefs) this.prefs.volume = this.player.volume;
    this.dirty = true;
    this.view.transport();
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
    else if (cmd === "ack") this.reply(store.openCues()[0], "seen");
    else if (cmd === "reply") this.reply(store.openCues()[0], arg);
    else if (cmd === "replayCue") this.replayBefore(store.cueToReplay());
    else if (cmd === "live") this.goLive();
    else if (cmd === "seekBy") this.seekBy(arg);
    else if (cmd === "catchUp") this.catchUp();
    else if (cmd === "speed") this.stepSpeed(arg);
    else if (cmd === "volume") this.setVolume(this.player.volume + arg);
    else if (cmd === "hearing") this.jumpToHearing();
    else if (cmd === "search") this.view.focusSearch();
    else if (cmd === "room") {
      const r = store.orderedRooms()[arg];
      if (r) this.selectRoom(r.id);
    }
  }

  // ---------------------------------------------------------------- drawing

  redraw() {
    this.dirty = true;
  }

  frame() {
    if (this.stopped) return;
    if (this.dirty) {
      this.dirty = false;
      this.view.frame(this.player, this.receiver.counters, this.hoverT);
      this.topbar.hearing(this.player, this.store);
    }
    requestAnimationFrame(() => this.frame());
  }

  renderAll() {
    this.view.all(this.device);
    this.dirty = true;
  }
}

export { REPLY_WORDS };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
