// The scribe's desk on screen: draws the store (rooms, the shown room and session, cues, the
// relay's outage and what it made the scribe miss, siblings waiting for approval) through the
// smaller views, and hands clicks to the controller as `actions`.

import { $, fmtClock, fmtDur, h, nowMs, nowUs } from "../dom.js";
import { SPEEDS } from "../player.js";
import { roomInfo } from "../roomstate.js";
import { cueKey } from "../state.js";
import { drawTimeline, timelineGeom } from "../timeline.js";
import { renderBanner } from "./banner.js";
import { renderEvents, renderNoSession } from "./events.js";
import { renderConsent, renderLayout, renderRoomPane, updateControls, updateLive } from "./room.js";
import { RoomList } from "./rooms.js";
import { SessionList } from "./sessions.js";

const ROOMS_REDRAW_MS = 1000; // room states age by the clock: redraw the list this often

export class DeskView {
  /**
   * `actions`: selectRoom(unit, session?), replayBefore(cue), reply(cue, reply), consent(s, given),
   * togglePlay(), goLive(), seekBy(ds), seekTo(t), hover(t or null), setSpeed(v), setVolume(v),
   * catchUp(speed), dismissMissed(), approve(pending device), dismiss(notice id), search(q), hearing().
   */
  constructor(store, actions) {
    this.store = store;
    this.act = actions;
    this.player = null; // set on the first frame: what "hearing" and the controls read
    this.receiver = null; // set by the desk: refused and unopened sessions, for "why not"
    this.device = null;
    this.missedSpeed = 1.5;
    this.roomList = new RoomList((id) => actions.selectRoom(id));
    this.sessionList = new SessionList((unit, session) => actions.selectRoom(unit, session), (q) => actions.search(q));
    this.cueActions = {
      onReplay: (c) => actions.replayBefore(c), onReply: (c, r) => actions.reply(c, r), onGo: (c) => actions.selectRoom(c.unit, c.session),
    };
    this.roomsDrawnMs = 0;
  }

  all(device = null) {
    renderLayout($("view"));
    this.rooms();
    this.pane();
    this.banner();
    this.outage();
    this.notices(device);
  }

  rooms() {
    const { store } = this;
    const now = nowMs();
    const p = this.player;
    const hearing = p && p.mode !== "stopped" && p.session ? p.session.unit : null;
    const rooms = store.orderedRooms().map((r) => ({
      id: r.id, room: r.room, info: roomInfo(r, now, store.relayDown), openCues: store.openCues(r.id).length, hearing: r.id === hearing,
    }));
    this.roomList.render($("room-list"), rooms, store.selectedUnit);
    this.forged();
  }

  pane() {
    const el = $("room-view");
    if (!el) return;
    const room = this.store.room;
    const a = this.act;
    renderRoomPane(el, room, {
      onPlay: () => a.togglePlay(),
      onLive: () => a.goLive(),
      onSeekBy: (ds) => a.seekBy(ds),
      onSpeed: (v) => a.setSpeed(v),
      onVolume: (v) => a.setVolume(v),
      onTimelineClick: (e) => {
        const t = this.timeAt(e);
        if (t !== null) a.seekTo(t);
      },
      onTimelineHover: (e) => {
        const t = e ? this.timeAt(e) : null;
        if (!e || t !== null) a.hover(t);
      },
    }, { speed: this.player?.speed ?? 1, volume: this.player?.volume ?? 1 });
    if (!room) return;
    renderConsent($("consent"), this.store.session, (s, given) => a.consent(s, given));
    this.events();
    this.sessions();
  }

  transport() {
    if (this.player) updateControls(this.player);
  }

  /** Session time (s) under a mouse event on the timeline, or null. */
  timeAt(e) {
    const s = this.store.session;
    return s ? timelineGeom(e.currentTarget.clientWidth, s).t(e.offsetX) : null;
  }

  /** Why `row`'s session (a list row, or {session}) cannot be opened here: words, or null. */
  why(row) {
    const rx = this.receiver;
    if (!rx) return null;
    const sid = row.session;
    if (rx.sessions.has(sid)) return null;
    const refused = rx.refused.get(sid);
    if (refused) return `Refused: ${refused.why}. Nothing from it is played; clinic IT can see it in the audit log.`;
    const me = this.device?.id;
    if (row.devices === undefined) {
      // not in a list (yet): only what the receiver knows
      return rx.unopened.has(sid) ? "Sealed before this browser was approved: another of your devices shares it with this one when it is next open." : null;
    }
    if (row.devices.includes(me) || row.shared) return null;
    const holders = this.device ? this.device.siblings().filter((d) => row.devices.includes(d.device)) : [];
    if (holders.length) {
      return `Sealed before this browser was approved. “${holders[0].label}” shares it with this one the next time it is open.`;
    }
    return "Sealed for devices of yours that are no longer approved: it cannot be opened here.";
  }

  events() {
    const el = $("events");
    if (!el) return;
    const { store } = this;
    renderConsent($("consent"), store.session, (s, given) => this.act.consent(s, given));
    const s = store.session;
    if (!s) {
      const open = store.selectedSession || store.room?.openSession;
      const row = (store.room?.archive || []).find((x) => x.session === open) || (open ? { session: open } : null);
      renderNoSession(el, { openSession: open, why: row ? this.why(row) : null });
      return;
    }
    renderEvents(el, s, (cueId) => store.cues.get(cueKey(s.session, cueId)), this.cueActions);
  }

  sessions() {
    const { store } = this;
    const r = store.room;
    this.sessionList.render($("archive"), {
      unitId: r?.id, list: r?.archive || [], selected: store.selectedSession, local: (id) => store.sessions.get(id),
      why: (row) => this.why(row), rooms: store.orderedRooms().map((x) => ({ id: x.id, room: x.room })), search: store.search || null,
    });
  }

  focusSearch() {
    $("search-room")?.focus();
  }

  banner() {
    renderBanner($("cue-banner"), this.store.openCues(), this.cueActions, this.store.selectedUnit);
  }

  /** The relay's outage while it lasts, then what the scribe missed and a way to hear it. */
  outage() {
    const el = $("outage");
    if (!el) return;
    const { store } = this;
    const now = nowMs();
    if (store.outageShown(now)) {
      const d = store.relayDown;
      const rec = d.rooms.filter((r) => r.wasRecording);
      el.hidden = false;
      el.className = "outage down";
      el.dataset.state = "down";
      el.replaceChildren(
        h("strong", {}, `The relay is unreachable (for ${fmtDur((now - d.sinceMs) / 1000)}, since ${fmtClock(d.sinceMs * 1000)}).`),
        h("span", {}, rec.length
          ? ` ${rec.map((r) => r.room).join(", ")} ${rec.length === 1 ? "was" : "were"} recording: the unit keeps recording into its own buffer, and nothing is lost. It all arrives when the relay is back.`
          : " No room was recording. The console reconnects by itself."));
      return;
    }
    const m = store.missed;
    if (m && !store.relayDown) {
      el.hidden = false;
      el.className = "outage missed";
      el.dataset.state = "missed";
      const speed = h("select", { id: "missed-speed", "aria-label": "Speed" },
        ...SPEEDS.filter((v) => v > 1).map((v) => h("option", { value: String(v) }, `${v}×`)));
      speed.value = String(this.missedSpeed || 1.5);
      el.replaceChildren(
        h("strong", {}, `You missed ${fmtDur(m.seconds)} of ${m.room} while the relay was unreachable.`),
        h("span", {}, " It is all here now."),
        h("div", { class: "spacer" }),
        h("button", { class: "primary", id: "play-missed", onclick: () => this.act.catchUp(Number(speed.value)) }, "Play what you missed ", h("kbd", {}, "C")),
        h("label", { class: "ctl" }, "at ", speed),
        h("button", { class: "ghost", onclick: () => this.act.dismissMissed() }, "Dismiss"));
      return;
    }
    el.hidden = true;
    el.replaceChildren();
    delete el.dataset.state;
  }

  /** Siblings waiting for approval (only a device the clinic approved may vouch), and notices. */
  notices(device) {
    if (device) this.device = device;
    const el = $("notices");
    if (!el) return;
    const items = [];
    const d = this.device;
    if (d && d.canApprove) {
      for (const p of d.pending) {
        items.push(h("div", { class: "notice approval", "data-device": p.device },
          h("span", {}, "A new device wants to hear your rooms: ", h("b", {}, `“${p.label}”`), ", code ",
            h("b", { class: "mono code" }, p.fingerprint || p.device), ". Approve it only if it is yours and shows the same code."),
          h("div", { class: "spacer" }),
          h("button", { class: "primary", onclick: () => this.act.approve(p), "data-approve": p.device }, "Approve"),
          h("button", { class: "ghost", onclick: () => this.act.dismiss(`pending:${p.device}`) }, "Not mine")));
      }
    }
    for (const n of this.store.notices) {
      items.push(h("div", { class: `notice ${n.kind}`, "data-notice": n.id }, h("span", {}, n.text), h("div", { class: "spacer" }),
        h("button", { class: "ghost", onclick: () => this.act.dismiss(n.id) }, "Dismiss")));
    }
    el.replaceChildren(...items.filter((x) => !this.store.dismissed.has(`pending:${x.dataset.device}`)));
  }

  /** What was refused as forged, in plain words (the latest few). */
  forged() {
    const el = $("forged");
    if (!el) return;
    const f = this.store.forged;
    if (!f.length) {
      el.replaceChildren();
      return;
    }
    const sig = `${f.length}`;
    if (el.dataset.sig === sig) return;
    el.dataset.sig = sig;
    el.replaceChildren(h("div", { class: "notice error" },
      h("strong", {}, `${f.length} forged item${f.length === 1 ? "" : "s"} refused`),
      h("ul", {}, ...f.slice(-3).reverse().map((x) => h("li", {}, `${x.unit || ""} ${x.why || ""}`.trim())))));
  }

  /** Every frame something changed: the live strip, the timeline, and now and then the lists. */
  frame(player, counters, hoverT) {
    this.player = player;
    const { store } = this;
    const r = store.room;
    const s = store.session;
    updateLive({
      info: r ? roomInfo(r, nowMs(), store.relayDown) : null, session: s, player,
      rejected: counters.tampered + counters.malformed, forged: counters.forged, canGoLive: !!(r && r.openSession),
    });
    if (Date.now() - this.roomsDrawnMs >= ROOMS_REDRAW_MS) {
      this.roomsDrawnMs = Date.now();
      this.rooms();
      this.sessions();
      if (store.relayDown) this.outage();
    }
    const c = $("timeline");
    if (!c) return;
    drawTimeline(c, {
      session: s, player, hoverT, nowUs: nowUs(),
      cueOpen: (cueId) => {
        const cue = store.cues.get(cueKey(s.session, cueId));
        return !!cue && !cue.acked;
      },
    });
  }
}
