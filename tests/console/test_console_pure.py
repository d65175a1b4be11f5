"""The console's pure modules, in headless Chromium on a static page (no relay): the
room-state rule (held, with the relay's Python copy, to tests/vectors/room_state.json),
room tracking, the store's rules (rooms, selection, cues, memory), reconnect backoff,
timeline geometry, keyboard commands, and why a session cannot be opened on this device
(the sessions list then offers no Open button). Each call is a few milliseconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from console_support import in_module

from cloud_relay.console_api import STALE_STATUS_S, room_state

ROOM_VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "room_state.json").read_text())
S1, S2, S3 = "11" * 16, "22" * 16, "33" * 16


# ---------------------------------------------------------------------- the room-state rule


def test_room_state_rule_in_the_page_matches_the_vectors(module_page):
    cases = ROOM_VECTORS["cases"]
    got = in_module(module_page, "roomstate.js", """
        return {stale: m.STALE_STATUS_S, out: arg.map((c) => m.roomState(c.status, c.age_s))};""",
        cases)
    assert got["stale"] == ROOM_VECTORS["stale_status_s"]
    for case, out in zip(cases, got["out"], strict=True):
        assert out == case["want"], case["name"]


def test_room_state_rule_in_the_relay_matches_the_vectors():
    assert ROOM_VECTORS["stale_status_s"] == STALE_STATUS_S
    for case in ROOM_VECTORS["cases"]:
        assert room_state(case["status"], case["age_s"]) == case["want"], case["name"]


def test_state_words(module_page):
    got = in_module(module_page, "roomstate.js", """
        return arg.map((r) => m.stateText(r));""", [
        {"state": "live", "buffered_s": 0}, {"state": "paused", "buffered_s": 0},
        {"state": "catching_up", "buffered_s": 42.4}, {"state": "offline", "buffered_s": 0.2},
        {"state": "offline", "buffered_s": 12, "estimate": True},
        {"state": "idle", "buffered_s": 0}])
    assert got == ["Live", "Privacy pause", "Catching up · 42 s to go", "Unit offline",
                   "Offline · recording on the unit · ~12 s buffered", "Idle"]


def test_a_recording_room_that_drops_offline_estimates_its_growing_backlog(module_page):
    got = in_module(module_page, "roomstate.js", """
        const r = m.newRoom({id: "unit-a", room: "Exam 1", status: null, status_age_s: null,
                             open_session: null}, 1000);
        const never = m.roomInfo(r, 1000);
        m.noteStatus(r, {online: true, link: "up", capture: "live", session: arg.s,
                         spool: {seconds: 1}}, 1000);
        const live = m.roomInfo(r, 1500);
        m.noteStatus(r, {online: false, link: "lost", spool: {seconds: 1}}, 5000);  // the will
        const at15 = m.roomInfo(r, 15000);
        const at25 = m.roomInfo(r, 25000);
        m.noteStatus(r, {online: true, link: "up", capture: "live", spool: {seconds: 0}}, 26000);
        const back = m.roomInfo(r, 26500);
        const idle = m.newRoom({id: "unit-b", status: null, status_age_s: null}, 0);
        m.noteStatus(idle, {online: true, link: "up", capture: "idle"}, 0);
        m.noteStatus(idle, {online: false, link: "lost"}, 1000);
        // the relay itself unreachable: the page knows only what the room was doing
        const noRelay = m.roomInfo(r, 27000, {sinceMs: 26900});
        const consent = m.newRoom({id: "unit-c", status: null, status_age_s: null}, 0);
        m.noteStatus(consent, {online: true, link: "up", capture: "idle", consent: "pending",
            session: arg.s}, 0);
        return {never, live, at15, at25, back, open: r.openSession, idle: m.roomInfo(idle, 20000),
                text: m.stateText(at15), noRelay, noRelayText: m.stateText(noRelay),
                consent: m.roomInfo(consent, 500),
                consentText: m.stateText(m.roomInfo(consent, 500))};""", {"s": S1})
    assert got["never"] == {"state": "offline", "buffered_s": 0, "reason": "never seen"}
    assert got["live"]["state"] == "live" and got["open"] == S1
    # offline since 5 s with 1 s spooled: the unit has kept recording for 10 s, then 20 s
    assert got["at15"] == {"state": "offline", "buffered_s": 11, "reason": "lost", "estimate": True}
    assert got["at25"]["buffered_s"] == 21
    assert got["text"] == "Offline · recording on the unit · ~11 s buffered"
    assert got["back"] == {"state": "live", "buffered_s": 0}
    assert got["idle"] == {"state": "offline", "buffered_s": 0, "reason": "lost"}  # not recording
    assert got["noRelay"] == {"state": "no_relay", "buffered_s": 0, "wasRecording": True}
    assert got["noRelayText"] == "Relay unreachable · the unit keeps recording"
    assert got["consent"]["state"] == "consent"
    assert got["consentText"] == "Waiting for consent · nothing recorded yet"


# ---------------------------------------------------------------------- the store

# A store with two rooms and real SessionState objects (js/receiver.js), 40 ms chunks.
STORE = """
    const { Store } = m;
    const { SessionState } = await import('/console/js/receiver.js');
    const session = (id, unit, startedUs, chunks = 0) => {
      const s = new SessionState({session: id, unit, sample_rate: 16000, chunk_ms: 40,
                                  started_us: startedUs}, null, {});
      for (let q = 0; q < chunks; q++) s.chunks.set(q, {pcm: new Int16Array(640), n: 640,
                                                      captureUs: startedUs + q * 40000,
                                                          via: "live"});
      s.maxSeq = chunks - 1;
      s.newestSeq = chunks - 1;
      return s;
    };
    const units = [{id: "unit-a", room: "Exam 1", status: null, status_age_s: null,
        open_session: null},
                   {id: "unit-b", room: null, status: null, status_age_s: null,
                       open_session: null}];
"""


def test_rooms_come_and_go_and_the_selection_follows(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        st.setRooms(units, "unit-b", 0);
        const wanted = st.selectedUnit;
        st.setRooms(units, "unit-zzz", 0);
        const first = st.selectedUnit;
        st.select("unit-b");
        const renamed = st.mergeRooms([{...units[0], room: "Exam 1A"}, units[1]], 0);
        const merged = st.mergeRooms([units[0], {id: "unit-c", room: "Exam 3", status: null,
                                                 status_age_s: null, open_session: "ab"}], 0);
        return {wanted, first, renamedChanged: renamed.changed, name: st.rooms.get("unit-a").room,
                added: merged.added.map((r) => r.id), removed: merged.removed,
                selected: st.selectedUnit, b: st.rooms.has("unit-b"),
                stranger: st.unitStatus("unit-x", {online: true}, 0),
                cName: st.rooms.get("unit-c").room, cOpen: st.rooms.get("unit-c").openSession};""")
    assert got["wanted"] == "unit-b" and got["first"] == "unit-a"
    assert got["renamedChanged"] and got["name"] == "Exam 1"  # the relay's name again
    assert got["added"] == ["unit-c"] and got["removed"] == ["unit-b"] and not got["b"]
    assert got["selected"] == "unit-a"  # the shown room went away: the first room instead
    assert got["stranger"] is None
    assert (got["cName"], got["cOpen"]) == ("Exam 3", "ab")


def test_choosing_a_room_shows_its_open_session_else_its_newest(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        st.setRooms(units, "unit-a", 0);
        st.sessions.set(arg.s1, session(arg.s1, "unit-a", 1000));
        st.sessions.set(arg.s2, session(arg.s2, "unit-a", 2000));
        const newest = (st.select("unit-a"), st.selectedSession);
        st.rooms.get("unit-a").openSession = arg.s3;
        const open = (st.select("unit-a"), st.selectedSession);
        const asked = (st.select("unit-a", arg.s1), st.selectedSession);
        const moved = st.select("unit-b");
        const none = st.selectedSession;
        return {newest, open, asked, moved, none, stranger: st.select("unit-x"),
                again: st.select("unit-b")};""", {"s1": S1, "s2": S2, "s3": S3})
    assert (got["newest"], got["open"], got["asked"]) == (S2, S3, S1)
    assert got["moved"] == {"unitChanged": True} and got["none"] is None
    assert got["stranger"] is None and got["again"] == {"unitChanged": False}


def test_a_new_live_session_is_shown_and_followed_only_when_listening_live(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        st.setRooms(units, "unit-a", 0);
        const s1 = session(arg.s1, "unit-a", 1000), s2 = session(arg.s2, "unit-a", 2000);
        const s3 = session(arg.s3, "unit-a", 3000);
        st.sessions.set(s1.session, s1);
        const first = st.sessionOpened(s1, "live", false);
        const shown1 = st.selectedSession;
        st.sessions.set(s2.session, s2);
        const notFollowing = st.sessionOpened(s2, "live", false);  // s1 still open, shown
        const shown2 = st.selectedSession;
        st.sessions.set(s3.session, s3);
        const following = st.sessionOpened(s3, "live", true);
        const other = st.sessionOpened(session(arg.s2, "unit-b", 0), "archive", false);
        return {first, shown1, notFollowing, shown2, following, shown3: st.selectedSession,
                open: st.rooms.get("unit-a").openSession, other,
                stranger: st.sessionOpened(session(arg.s1, "unit-x", 0), "live", true)};""",
        {"s1": S1, "s2": S2, "s3": S3})
    assert got["first"] == {"shownChanged": True, "follow": False} and got["shown1"] == S1
    assert got["notFollowing"] == {"shownChanged": True, "follow": False} and got["shown2"] == S1
    assert got["following"] == {"shownChanged": True, "follow": True} and got["shown3"] == S3
    assert got["open"] == S3
    assert got["other"] == {"shownChanged": False, "follow": False}
    assert got["stranger"] is None


def test_rooms_are_in_natural_order(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        const mk = (id, room) => ({id, room, status: null, status_age_s: null, open_session: null});
        st.setRooms([mk("u3", "Exam 10"), mk("u1", "exam 2"), mk("u2", "Exam 1"),
                     mk("u4", "Consult B"), mk("u5", null)], null, 0);
        const first = st.orderedRooms().map((r) => r.room);
        const selected = st.selectedUnit;
        st.mergeRooms([mk("u3", "Exam 10"), mk("u1", "exam 2"), mk("u2", "Exam 1"),
                       mk("u6", "Exam 3")], 0);
        return {first, selected, merged: st.orderedRooms().map((r) => r.room)};""")
    assert got["first"] == ["Consult B", "Exam 1", "exam 2", "Exam 10", "u5"]
    assert got["selected"] == "u4"  # the first room as shown
    assert got["merged"] == ["Exam 1", "exam 2", "Exam 3", "Exam 10"]


def test_cues_alert_once_and_replies_are_the_rooms(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const now = 1_800_000_000_000;  // ms
        const st = new Store();
        st.setRooms(units, "unit-a", now);
        const sa = session(arg.s1, "unit-a", 0), sb = session(arg.s2, "unit-b", 0);
        const cue = (id, atMs) => ({kind: "cue", cue_id: id, seq: id, at_us: atMs * 1000, t_s: id});
        const person = (id, reply = "got_it") => ({cue_id: id, reply, at_us: now * 1000,
            device: "d1", kind: "person", scribe: "scribe-2", label: "Laptop"});
        const robot = (id) => ({cue_id: id, reply: "seen", at_us: now * 1000, device: "r1",
            kind: "robot", scribe: "rec", label: "Recorder"});
        const live1 = st.addCue(sa, cue(1, now - 10), "live", now);
        const again = st.addCue(sa, cue(1, now - 10), "archive", now);
        const oldArchived = st.addCue(sa, cue(2, now - 130000), "archive", now);
        const youngArchived = st.addCue(sa, cue(3, now - 60000), "archive", now);
        // a reply that came before its cue (the archive's order): the cue comes in answered
        sa.replies.push(person(9, "repeat"));
        const answeredBefore = st.addCue(sa, cue(9, now - 1), "live", now);
        const otherRoom = st.addCue(sb, cue(4, now - 5), "live", now);
        const open = st.openCues().map((c) => c.cue_id);
        const openA = st.openCues("unit-a").map((c) => c.cue_id);
        const replay = st.cueToReplay().cue_id;
        // a recorder's reply is noted, and the cue stays open; a person's (any device, any scribe
        // on the room) closes it
        const byRobot = st.replied(sb, robot(4), now + 1);
        const stillOpen = !st.cues.get(arg.s2 + ":4").acked;
        const byPerson = st.replied(sb, person(4), now + 2);
        const twice = st.replied(sb, person(4), now + 3);
        const sent = st.ack(live1, "see_me", now + 5), sentTwice = st.ack(live1, "seen", now + 6);
        for (const c of st.openCues()) st.ack(c, "seen", now + 7);
        const replayAfter = st.cueToReplay().cue_id;
        const c4 = st.cues.get(arg.s2 + ":4");
        return {live1: live1 && live1.key, room: live1.room, again, oldArchived,
                oldAcked: st.cues.get(arg.s1 + ":2").acked, youngArchived: !!youngArchived,
                answeredBefore, answered9: st.cues.get(arg.s1 + ":9").replies.map((r) => r.reply),
                otherRoom: otherRoom.room, open, openA, replay, byRobot: !!byRobot, stillOpen,
                byPerson: !!byPerson, twice, c4: [c4.acked, c4.replies.length, c4.acked_ms],
                sent, sentTwice, sentReply: live1.sent, ackedMs: live1.acked_ms, replayAfter,
                    left: st.openCues().length};""",
        {"s1": S1, "s2": S2})
    assert got["live1"] == f"{S1}:1" and got["room"] == "Exam 1"
    assert got["again"] is None  # the same cue from the archive: no second alert
    assert got["oldArchived"] is None and got["oldAcked"]  # over 2 min old: history, no alert
    assert got["youngArchived"]  # a minute old, met on a reload: still alerts
    assert got["answeredBefore"] is None and got["answered9"] == ["repeat"]
    assert got["otherRoom"] == "unit-b"  # a room without a name goes by its unit id
    assert got["open"] == [3, 1, 4]  # oldest first
    assert got["openA"] == [3, 1]
    assert got["replay"] == 4  # R: the newest open cue
    assert got["byRobot"] and got["stillOpen"]  # noted, but a recorder never closes a cue
    assert got["byPerson"] and got["twice"] is None
    assert got["c4"] == [True, 2, 1_800_000_000_002]
    assert got["sent"] is True and got["sentTwice"] is False and got["sentReply"] == "see_me"
    assert got["ackedMs"] == 1_800_000_000_005
    assert got["replayAfter"] == 9 and got["left"] == 0  # none open: the newest of all


def test_errors_are_capped_and_forgeries_kept_in_words(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        st.recordError({error: "forged", unit: "unit-a", session: arg.s1,
            detail: "session_open refused: unit x's key k is revoked"}, 1);
        for (let i = 0; i < 250; i++) st.recordError({error: "tampered", seq: i}, 2 + i);
        return {n: st.errors.length, last: st.errors[st.errors.length - 1].seq,
            forged: st.forged};""", {"s1": S1})
    assert got["n"] == 200 and got["last"] == 249
    assert got["forged"] == [{"at": 1, "unit": "unit-a", "session": S1,
                              "why": "session_open refused: unit x's key k is revoked"}]


def test_an_outage_remembers_what_each_room_did_and_what_the_scribe_missed(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const st = new Store();
        st.setRooms(units, "unit-a", 0);
        const s = session(arg.s1, "unit-a", 0, 100);
        st.sessions.set(s.session, s);
        st.rooms.get("unit-a").openSession = s.session;
        st.rooms.get("unit-a").recording = true;
        const player = {mode: "live", session: s};
        const blip0 = st.linkDown(1000, player), blip = st.linkUp(2000);  // a blip: no banner
        st.linkDown(10_000, player);
        const shownEarly = st.outageShown(11_000), shown = st.outageShown(14_000);
        const down = st.relayDown;
        const missed = {...st.linkUp(41_000)};
        const after = st.relayDown;
        // the link drops again before the scribe played what they missed: it still starts
        // where the first outage began
        s.newestSeq = 900;
        st.linkDown(50_000, player);
        const again = st.linkUp(55_000);
        return {blip, shownEarly, shown, rooms: down.rooms.map((r) => [r.room, r.wasRecording]),
                missed, after, again};""", {"s1": S1})
    assert got["blip"] is None
    assert got["shownEarly"] is False and got["shown"] is True
    assert got["rooms"] == [["Exam 1", True], ["unit-b", False]]
    m = got["missed"]
    assert (m["unit"], m["room"], m["session"], m["seconds"]) == ("unit-a", "Exam 1", S1, 31)
    assert m["fromSample"] == 100 * 640  # from the first chunk after what had arrived
    assert got["after"] is None
    assert (got["again"]["fromSample"], got["again"]["seconds"]) == (100 * 640, 36)


def test_eviction_keeps_the_live_edge_and_around_the_playhead(module_page):
    got = in_module(module_page, "state.js", STORE + """
        const decoded = (s) => [...s.chunks].filter(([q, c]) => c.pcm).map(([q]) => q);
        const st = new Store();
        st.setRooms(units, "unit-a", 0);
        const open = session(arg.s1, "unit-a", 0, 100);
        const closed = session(arg.s2, "unit-b", 0, 100);
        closed.close = {ended_us: 4000000};
        const played = session(arg.s3, "unit-b", 0, 100);
        played.close = {ended_us: 4000000};
        for (const s of [open, closed, played]) st.sessions.set(s.session, s);
        const keep = {liveS: 0.4, behindS: 0.2, aheadS: 0.2};  // 10, 5 and 5 chunks of 40 ms
        const dropped = st.evict(keep, {session: played, playedSample: 50 * 640});
        const openKept = decoded(open), closedKept = decoded(closed), playedKept = decoded(played);
        st.selectedSession = arg.s1;
        open.chunks.get(80).pcm = new Int16Array(640);
        const again = st.evict({liveS: 0, behindS: 0.8, aheadS: 0});
        return {dropped, openKept, closedKept, playedKept, again, shown: decoded(open)};""",
        {"s1": S1, "s2": S2, "s3": S3})
    assert got["openKept"] == list(range(89, 100))  # the last 0.4 s of an open session
    assert got["closedKept"] == []
    assert got["playedKept"] == list(range(45, 56))  # 0.2 s either side of the playhead
    assert got["dropped"] == 89 + 100 + 89
    # the shown open session keeps 0.8 s; nothing plays now, so the closed one lets go
    assert got["again"] == 11 and got["shown"] == [80, *range(89, 100)]


# ---------------------------------------------------------------------- link, timeline, keys


def test_reconnect_backoff_doubles_to_a_cap_and_resets_when_welcomed(module_page):
    got = in_module(module_page, "net.js", """
        const b = new m.Backoff();
        const first = Array.from({length: 6}, () => b.next());
        b.reset();
        return {first, after: b.next()};""")
    assert got == {"first": [500, 1000, 2000, 4000, 5000, 5000], "after": 500}


def test_timeline_geometry(module_page):
    got = in_module(module_page, "timeline.js", """
        const empty = m.timelineGeom(216, null);
        const s = {durationS: 100, events: [{t_s: 120}]};
        const g = m.timelineGeom(1016, s);
        return {span: empty.span, x0: empty.x(0), x30: empty.x(30), span2: g.span,
                roundTrip: g.t(g.x(42.5)),
                steps: [30, 103, 1000, 50000].map(m.tickStep),
                bands: m.pauseBands([{kind: "privacy_pause", t_s: 2}, {kind: "cue", t_s: 3},
                                     {kind: "privacy_resume", t_s: 4},
                                     {kind: "privacy_pause", t_s: 8}], 11)};""")
    assert (got["span"], got["x0"], got["x30"]) == (30, 8, 208)
    assert abs(got["span2"] - 123.6) < 1e-9  # the last event, with a little room after it
    assert abs(got["roundTrip"] - 42.5) < 1e-9
    assert got["steps"] == [5, 10, 120, 3600]
    assert got["bands"] == [[2, 4], [8, 11]]  # a pause still on runs to now


def test_keyboard_commands(module_page):
    got = in_module(module_page, "keys.js", """
        const key = (k, extra = {}) => m.commandFor(new KeyboardEvent("keydown", {key: k,
            ...extra}));
        const input = document.createElement("input");
        document.body.append(input);
        let typed = "unset";
        input.addEventListener("keydown", (e) => { typed = m.commandFor(e); });
        input.dispatchEvent(new KeyboardEvent("keydown", {key: "a", bubbles: true}));
        input.remove();
        return {typed, keys: [" ", "a", "g", "P", "m", "R", "l", "c", "n", "f", "[", "]", "=", "-",
                               "ArrowLeft", "ArrowRight", "3", "?", "Escape", "t", "x"]
                              .map((k) => key(k)),
                shifted: key("ArrowRight", {shiftKey: true}), ctrl: key("r", {ctrlKey: true})};""")
    assert got["typed"] is None  # typing in a field is not a shortcut
    assert got["keys"] == [
        {"cmd": "playPause", "preventDefault": True}, {"cmd": "ack"},
        {"cmd": "reply", "arg": "got_it"}, {"cmd": "reply", "arg": "repeat"},
        {"cmd": "reply", "arg": "see_me"}, {"cmd": "replayCue"}, {"cmd": "live"},
        {"cmd": "catchUp"}, {"cmd": "hearing"}, {"cmd": "search", "preventDefault": True},
        {"cmd": "speed", "arg": -1}, {"cmd": "speed", "arg": 1}, {"cmd": "volume", "arg": 0.1},
        {"cmd": "volume", "arg": -0.1}, {"cmd": "seekBy", "arg": -5, "preventDefault": True},
        {"cmd": "seekBy", "arg": 5, "preventDefault": True}, {"cmd": "room", "arg": 2},
        {"cmd": "help"}, {"cmd": "closeHelp"}, {"cmd": "theme"}, None]
    assert got["shifted"] == {"cmd": "seekBy", "arg": 15, "preventDefault": True}
    assert got["ctrl"] is None  # the browser's own shortcuts stay the browser's


# ---------------------------------------------------------------------- one owner per contract

CONSOLE_JS = Path(__file__).resolve().parents[2] / "cloud_relay" / "console" / "js"


def test_only_wsproto_builds_or_splits_websocket_frames():
    """A frame written by hand elsewhere in the page would drift from the contract."""
    frame_literal = re.compile(r'type:\s*"(hello|cue_ack|welcome|unit_status)"')
    offenders = []
    for path in sorted(CONSOLE_JS.rglob("*.js")):
        if path.name == "wsproto.js":
            continue
        text = path.read_text()
        if frame_literal.search(text):
            offenders.append(str(path.relative_to(CONSOLE_JS)))
        if "new WebSocket(" in text and path.name != "net.js":
            offenders.append(f"{path.relative_to(CONSOLE_JS)} (a second socket)")
    assert not offenders, f"WebSocket frames handled outside js/wsproto.js: {offenders}"
    assert frame_literal.search((CONSOLE_JS / "wsproto.js").read_text())  # the check can see one


# ------------------------------------------------------- sessions this device cannot open


def test_a_session_this_device_cannot_open_says_why_and_offers_no_open_button(module_page):
    got = in_module(module_page, "views/desk.js", """
        const { Store } = await import('/console/js/state.js');
        const { SessionList } = await import('/console/js/views/sessions.js');
        const view = new m.DeskView(new Store(), {});
        view.receiver = {sessions: new Map([[arg.s[0], {}]]), unopened: new Map([[arg.s[5], {}]]),
                         refused: new Map([[arg.s[4], {unit: "unit-a", why: "bad signature"}]])};
        view.device = {id: "dev-here", siblings: () => [{device: "dev-laptop", label: "Laptop"}]};
        const row = (i, devices, shared = false) => ({session: arg.s[i], unit: "unit-a",
            started_us: 1.7e15 + i * 1e6, closed_us: 1.7e15 + i * 2e6, audio_max_seq: 99,
            chunk_ms: 40, events: 1, devices, shared});
        const rows = [row(0, []), row(1, ["dev-here"]), row(2, ["dev-laptop"], true),
                      row(3, ["dev-laptop"]), row(4, ["dev-here"]), row(6, ["dev-gone"])];
        const why = rows.map((r) => view.why(r));
        why.push(view.why({session: arg.s[5]}));  // known to the receiver only
        const el = document.createElement("div");
        new SessionList(() => {}, () => {}).render(el, {unitId: "unit-a", list: rows,
            selected: null, local: () => null, why: (r) => view.why(r), rooms: [], search: null});
        const open = [...el.querySelectorAll("tr[data-session]")].map((tr) =>
            [!!tr.querySelector(".actions button"),
             tr.querySelector("[data-why]")?.textContent || null]);
        return {why, open};""", {"s": [f"{i}{i}" * 16 for i in range(7)]})
    why, open_ = got["why"], got["open"]
    # opened here, wrapped to this device, shared with it: no reason, an Open button
    assert why[:3] == [None, None, None]
    # a sibling holds it: it says who shares it, in plain words
    assert why[3] == ("Sealed before this browser was approved. “Laptop” shares it with this one "
                      "the next time it is open.")
    assert why[4].startswith("Refused: bad signature.")
    assert why[5] == ("Sealed for devices of yours that are no longer approved: it cannot be "
                      "opened here.")
    assert "another of your devices shares it" in why[6]
    # the list: Open where the device can open it; elsewhere the reason, and no Open button
    assert [o[0] for o in open_] == [True, True, True, False, False, False], open_
    assert [o[1] for o in open_] == why[:6]
