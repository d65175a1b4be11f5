// The scribe's desk on screen: draws the store (rooms, the shown room and session, cues)
// through the smaller views, and hands clicks to the controller as `actions`.

import { $, nowMs, nowUs } from "../dom.js";
import { roomInfo } from "../roomstate.js";
import { cueKey } from "../state.js";
import { drawTimeline, timelineGeom } from "../timeline.js";
import { renderBanner } from "./banner.js";
import { renderEvents, renderNoSession } from "./events.js";
import { renderLayout, renderRoomPane, updateLive } from "./room.js";
import { RoomList } from "./rooms.js";
import { SessionList } from "./sessions.js";

const ROOMS_REDRAW_MS = 1000; // room states age by the clock: redraw the list this often

export class DeskView {
  /**
   * `actions`: selectRoom(unit, session?), replayBefore(cue), ack(cue), togglePlay(), goLive(),
   * seekBy(ds), seekTo(t), hover(t or null).
   */
  constructor(store, actions) {
    this.store = store;
    this.act = actions;
    this.roomList = new RoomList((id) => actions.selectRoom(id));
    this.sessionList = new SessionList((unit, session) => actions.selectRoom(unit, session));
    this.cueActions = { onReplay: (c) => actions.replayBefore(c), onAck: (c) => actions.ack(c) };
    this.roomsDrawnMs = 0;
  }

  all() {
    renderLayout($("view"), this.store.keyNotice);
    this.rooms();
    this.pane();
  }

  rooms() {
    const { store } = this;
    const now = nowMs();
    const rooms = [...store.rooms.values()].map((r) => ({
      id: r.id, room: r.room, info: roomInfo(r, now), openCues: store.openCues(r.id).length,
    }));
    this.roomList.render($("room-list"), rooms, store.selectedUnit);
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
      onTimelineClick: (e) => {
        const t = this.timeAt(e);
        if (t !== null) a.seekTo(t);
      },
      onTimelineHover: (e) => {
        const t = e ? this.timeAt(e) : null;
        if (!e || t !== null) a.hover(t);
      },
    });
    if (!room) return;
    this.events();
    this.sessions();
  }

  /** Session time (s) under a mouse event on the timeline, or null. */
  timeAt(e) {
    const s = this.store.session;
    return s ? timelineGeom(e.currentTarget.clientWidth, s).t(e.offsetX) : null;
  }

  events() {
    const el = $("events");
    if (!el) return;
    const { store } = this;
    const s = store.session;
    if (!s) {
      const open = store.room?.openSession;
      renderNoSession(el, { openSession: open, unreadable: store.unreadable.has(open) || store.unreadable.has(store.selectedSession) });
      return;
    }
    renderEvents(el, s, (cueId) => store.cues.get(cueKey(s.session, cueId)), this.cueActions);
  }

  sessions() {
    const { store } = this;
    const r = store.room;
    this.sessionList.render($("archive"), r?.id, r?.archive || [], store.selectedSession, (id) => store.sessions.get(id));
  }

  banner() {
    renderBanner($("cue-banner"), this.store.openCues(), this.cueActions);
  }

  /** Every frame something changed: the live strip, the timeline, and now and then the lists. */
  frame(player, counters, hoverT) {
    const { store } = this;
    const r = store.room;
    const s = store.session;
    updateLive({
      info: r ? roomInfo(r, nowMs()) : null, session: s, player,
      rejected: counters.tampered + counters.malformed, canGoLive: !!(r && r.openSession),
    });
    if (Date.now() - this.roomsDrawnMs >= ROOMS_REDRAW_MS) {
      this.roomsDrawnMs = Date.now();
      this.rooms();
      this.sessions();
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
