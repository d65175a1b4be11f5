"""The scribe's whole shift, end to end: a real mosquitto (mTLS), the relay, the clinic's
admin (its authority signs assignments and endorses devices), the unit agent capturing
through ALSA's file plugin with the real puck firmware (MicroPython, over a pty), a signed
simulated unit for a second room, and up to three headless Chromium browsers of one scribe.

In order, on one system: during one recording the scribe signs in on two more browsers (one
approved by the first browser, one by the clinic): the room keeps one session, each device
hears it from the start, and each opens the scribe's earlier session through a key share;
an ack on one device shows as seen on the others and on the puck, and a reply as its own
light pattern; a cue in a room the scribe is not looking at raises a system notification
that jumps there while the audio carries on; the layout holds at 720 px and on a 1366x768
laptop (screenshots in run/screenshots); the recording is the same on all three devices; a
relay outage (OUTAGE_S) shows a banner and notifies a hidden page, and afterwards the
missed audio plays at 1.5x until live; and with the clinic requiring consent, nothing
is captured before it and a declined visit leaves no audio anywhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from console_support import open_console, poll, screenshot
from puck_harness import PuckSim
from test_console_live import SCRIBE, System, js, wait_for
from unit_sim import SimSession

AGENT_SECONDS = 45.0
# a relay outage this long (s): the issue says 30; the logic does not depend on it (the
# broker queues without bound, the page pages 40 s at a time), so the default run is shorter
OUTAGE_S = float(os.environ.get("SCRIBELINK_OUTAGE_S") or 14.0)


class Shift:
    """The system, the puck, and the scribe's browsers (device A first)."""

    def __init__(self, tmp: Path, chromium) -> None:
        # the clinic approves the scribe's first browser; later ones as each test says
        self.system = System(tmp, agent_seconds=AGENT_SECONDS, auto_endorse={SCRIBE[0]})
        self.chromium = chromium
        self.tmp = tmp
        self.contexts: list = []
        self.puck = PuckSim(tmp / "scribelink-puck")
        self.a = self.browser()
        self.b = self.c = None
        self.earlier: SimSession | None = None
        self.agent = None
        self.session: str | None = None  # the agent's session, heard by every device

    def browser(self, *, ready: bool = True, viewport=(1440, 900)):
        ctx = self.chromium.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                        permissions=["notifications"])
        self.contexts.append(ctx)
        return open_console(ctx, self.system.relay.url, *SCRIBE, ready=ready)

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()
        self.puck.close()
        self.system.stop()


@pytest.fixture(scope="module")
def shift(tmp_path_factory, chromium):
    s = Shift(tmp_path_factory.mktemp("shift"), chromium)
    yield s
    s.close()


def sessions(page, unit: str | None = None) -> list[dict]:
    return [x for x in js(page, "window.__probe.sessions()") if unit is None or x["unit"] == unit]


def played(page, n: int) -> dict | None:
    """The hash of the first n samples the current replay fed the player, once it has n."""
    r = js(page, "(n) => window.__probe.playbackHash(n)", n)
    return r if r and r["samples"] >= n else None


def whole(page, session: str) -> dict | None:
    """The hash of a closed session's audio on the page, once it has every chunk."""
    if not next(x for x in sessions(page) if x["session"] == session)["closed"]:
        return None
    h = js(page, "(s) => window.__probe.sessionHash(s)", session)
    return h if h["contiguous"] else None


def relay_sessions(system: System, unit: str) -> list[dict]:
    return system.relay.api("GET", f"/api/console/sessions?unit={unit}", uid=SCRIBE[0]).json()


# ---------------------------------------------------------------------- one encounter, every device


def test_one_encounter_stays_one_session_on_three_devices(shift):
    system, a = shift.system, shift.a
    # an earlier encounter in Exam 2, sealed to device A only
    unit_b = system.make_sim_unit("unit-b")
    shift.unit_b = unit_b
    earlier = SimSession(unit_b, system.sim_pcm, room="Exam 2")
    earlier.audio(3.0, pace=0)
    earlier.close()
    shift.earlier = earlier
    wait_for(lambda: any(x["session"] == earlier.hex and x["complete"]
                         for x in sessions(a, "unit-b")), 15, "the earlier session on device A")
    n = earlier.pos  # what it said, sample for sample
    want = hashlib.sha256(system.sim_pcm[:n].astype("<i2").tobytes()).hexdigest()

    # the recording in Exam 1, with the physician's puck
    shift.agent = system.start_agent(puck_link=shift.puck.link)
    a.click('.room-item[data-unit="unit-a"]')
    s = wait_for(lambda: [x for x in sessions(a, "unit-a") if x["chunks"] > 25], 30,
                 "the agent's session on device A")[0]
    shift.session = s["session"]
    shift.puck.wait_led("live", 15, start=0)

    # a second browser: the clinic does not approve it; device A does, after comparing codes
    system.clinic.auto_endorse = set()
    b = shift.b = shift.browser(ready=False)
    assert js(b, "window.__probe.waiting()")
    code = b.inner_text("#waiting-code")
    assert "Waiting for the clinic to approve this device" in b.inner_text("#waiting-approval")
    a.wait_for_selector(".notice.approval", timeout=15000)
    assert code in a.inner_text(".notice.approval")
    a.click(".notice.approval button[data-approve]")
    poll(b, "() => window.__probe.ready()", 20)
    dev_b = js(b, "window.__probe.device()")
    assert dev_b["endorsed"]
    audit = system.clinic.call("GET", "/api/admin/audit?limit=500").json()
    assert any(x["action"] == "device_endorsed_by_sibling" and x["target"] == dev_b["id"]
               for x in audit)  # the clinic's admin is told

    # a third browser, approved by the clinic's admin
    system.clinic.auto_endorse = {SCRIBE[0]}
    c = shift.c = shift.browser()

    for page, name in ((b, "B"), (c, "C")):
        page.click('.room-item[data-unit="unit-a"]')
        got = wait_for(lambda page=page: next((x for x in sessions(page, "unit-a")
                                               if x["session"] == shift.session
                                               and x["chunks"] > 50), None), 30,
                       f"device {name} in the running session")
        # it joined the running session (no new one), and has it from its first chunk
        assert got["openedVia"] == "joined", got
        assert js(page, "(s) => window.__probe.sessionHash(s)", shift.session)["contiguous"]
        page.click("#play")
        wait_for(lambda page=page: js(page, "window.__probe.playback()")["level"]["peak"] > 0,
                 10, f"device {name} hearing the room")
    # the room kept one session across three sign-ins: the unit never re-keyed
    assert [x["session"] for x in relay_sessions(system, "unit-a")] == [shift.session]
    for page in (a, b, c):
        assert {x["session"] for x in sessions(page, "unit-a")} == {shift.session}
    devices = {js(p, "window.__probe.device()")["id"] for p in (a, b, c)}
    held = set(next(x for x in sessions(a, "unit-a"))["recipients"])
    assert devices <= held  # all three now hold its key (the joins were signed by the unit)

    # and each new device opens the scribe's earlier session, through a key share that
    # device A made for it (the relay stored it and could read none of it)
    for page, name in ((b, "B"), (c, "C")):
        page.click('.room-item[data-unit="unit-b"]')
        row = f'#archive tr[data-session="{earlier.hex}"]'
        page.wait_for_selector(row, timeout=10000)
        # the list offers Open once the share is here (until then it says who will share it)
        page.wait_for_selector(f"{row} .actions button", timeout=30000)
        page.click(f"{row} .actions button")
        wait_for(lambda page=page: next((x for x in sessions(page, "unit-b")
                                         if x["session"] == earlier.hex and x["complete"]),
                                        None), 30, f"the earlier session on device {name}")
        assert next(x for x in sessions(page, "unit-b")
                    if x["session"] == earlier.hex)["openedVia"] == "share"
        page.click("#play")  # it plays from its start: what the unit said
        out = wait_for(lambda page=page: played(page, n), 10,
                       f"the earlier session played on device {name}")
        assert (out["startSample"], out["sha256"]) == (0, want)
        # back to the room's live audio
        page.click('.room-item[data-unit="unit-a"]')
        page.click("#play")
        wait_for(lambda page=page: js(page, "window.__probe.playback()")["mode"] == "live"
                 and js(page, "window.__probe.playback()")["session"] == shift.session, 5,
                 f"device {name} live again")


# ---------------------------------------------------------------------- shared replies, the puck


def cue_key(page, n: int) -> str:
    return wait_for(lambda: (js(page, "window.__probe.cues()") or [None])[-1]
                    if len(js(page, "window.__probe.cues()")) >= n else None, 10,
                    f"cue {n} on the page")["key"]


def answered_on(page, key: str, reply: str, words: str) -> None:
    """The cue `key` shows as answered on `page`: banner gone, the events row seen, by whom."""
    wait_for(lambda: page.is_hidden("#cue-banner"), 10, "the cue answered on another device")
    cue = next(x for x in js(page, "window.__probe.cues()") if x["key"] == key)
    assert cue["acked"] and [(r["reply"], r["kind"]) for r in cue["replies"]] == [
        (reply, "person")]
    row = page.locator(f'#events tr[data-cue="{key.split(":")[1]}"]')
    assert row.get_attribute("data-acked") == "1"
    assert "seen ✓" in row.inner_text() and f"{words} — scribe-alex" in row.inner_text()


def cue_on_every_device(shift) -> tuple[int, str]:
    """The physician presses the puck: the cue's number and key, once its banner shows on
    all three of the scribe's devices."""
    n = len(js(shift.a, "window.__probe.cues()")) + 1
    shift.puck.cmd("press")
    key = cue_key(shift.a, n)
    for page in (shift.a, shift.b, shift.c):
        wait_for(lambda page=page: page.is_visible(f'#cue-banner[data-cue="{key}"]'), 10,
                 "the cue banner on every device")
    return n, key


def test_a_cue_acknowledged_on_one_device_shows_seen_on_the_others_and_on_the_puck(shift):
    a, b, c, puck = shift.a, shift.b, shift.c, shift.puck
    _, key = cue_on_every_device(shift)
    mark = puck.mark()
    a.click("#banner-ack")  # device A: "seen"
    puck.wait_led("cue_seen", 10, start=mark)  # the physician sees it
    for page in (b, c):
        answered_on(page, key, "seen", "seen")


def test_a_reply_on_one_device_shows_on_the_others_and_on_the_puck(shift):
    a, b, c, puck = shift.a, shift.b, shift.c, shift.puck
    n, key = cue_on_every_device(shift)
    mark = puck.mark()
    a.keyboard.press("g")  # device A: "got it"
    shown = puck.wait_led("cue_got_it", 10, start=mark)  # the physician sees it
    for page in (b, c):
        answered_on(page, key, "got_it", "got it")
    assert "got it" in a.inner_text(f'#events tr[data-cue="{key.split(":")[1]}"]')
    puck.wait_led("live", 6, start=mark)
    assert shown

    # another cue; device B asks the physician to repeat it, from the banner
    puck.cmd("press")
    key2 = cue_key(b, n + 1)
    b.wait_for_selector(f'#cue-banner[data-cue="{key2}"]', timeout=10000)
    mark = puck.mark()
    b.click("#banner-repeat")
    puck.wait_led("cue_repeat", 10, start=mark)
    wait_for(lambda: a.is_hidden("#cue-banner"), 10, "device A sees it answered")
    cue = next(x for x in js(a, "window.__probe.cues()") if x["key"] == key2)
    assert [r["reply"] for r in cue["replies"]] == ["repeat"]


# ---------------------------------------------------------------------- several rooms


def test_a_cue_in_a_room_not_in_view_notifies_and_jumps_there_while_audio_goes_on(shift):
    a, system = shift.a, shift.system
    a.click('.room-item[data-unit="unit-a"]')
    if js(a, "window.__probe.playback()")["mode"] != "live":
        a.click("#play")
    wait_for(lambda: js(a, "window.__probe.playback()")["mode"] == "live", 5, "A live")
    js(a, "() => window.__probe.setHidden(true)")  # the EHR window in front
    sim = SimSession(shift.unit_b, system.sim_pcm, room="Exam 2")
    shift.sim = sim
    sim.status("live")
    sim.audio(1.0, pace=0)
    cue_id, _ = sim.cue()
    note = wait_for(lambda: next((x for x in js(a, "window.__probe.notified()")
                                  if x["tag"] == f"{sim.hex}:{cue_id}"), None), 10,
                    "a system notification")
    assert note["title"] == "Cue — Exam 2"
    # the visible browsers show the banner instead
    assert not [x for x in js(shift.b, "window.__probe.notified()") if x["tag"].startswith(sim.hex)]
    i = [x["tag"] for x in js(a, "window.__probe.notified()")].index(note["tag"])
    js(a, f"() => window.__probe.clickNotification({i})")
    wait_for(lambda: js(a, "window.__probe.shown()")["unit"] == "unit-b", 5, "the jump")
    assert js(a, "window.__probe.shown()")["session"] == sim.hex
    js(a, "() => window.__probe.setHidden(false)")
    # the audio of Exam 1 carries on, and the top bar says what you are hearing
    pb = js(a, "window.__probe.playback()")
    assert (pb["unit"], pb["mode"]) == ("unit-a", "live")
    a.wait_for_selector("#hearing.elsewhere", timeout=5000)
    assert a.inner_text("#hearing") == "Hearing Exam 1 · live"
    assert "hearing" in a.inner_text('.room-item[data-unit="unit-a"]').lower()
    a.click("#banner-ack")
    sim.close()


def test_the_layout_works_beside_an_ehr(shift):
    a = shift.a
    a.click('.room-item[data-unit="unit-a"]')
    for w, h, name in ((720, 900, "room-720.png"), (1366, 768, "room-1366x768.png")):
        a.set_viewport_size({"width": w, "height": h})
        a.wait_for_timeout(300)
        m = a.evaluate("""() => {
            const r = (id) => {
              const e = document.getElementById(id); if (!e) return null;
              const b = e.getBoundingClientRect(); return [b.left, b.right, b.width]; };
            const cut = [...document.querySelectorAll('#events td.detail, #archive td')]
              .filter((td) => td.scrollWidth > td.clientWidth + 1).length;
            return {scroll: document.documentElement.scrollWidth, meter: r('meter'),
                    archive: r('archive'), events: r('events'), play: r('play'), cut};
        }""")
        assert m["scroll"] <= w, (name, m)  # nothing pushed off to the side
        for part in ("meter", "archive", "events", "play"):
            left, right, width = m[part]
            assert width > 0 and left >= 0 and right <= w, (name, part, m)
        assert m["cut"] == 0, (name, m)  # no event or session cut short ("Re…")
        screenshot(a, name)
    a.set_viewport_size({"width": 1440, "height": 900})


def test_the_recording_is_the_same_on_every_device(shift):
    """The agent's whole session, as each of the three devices decoded it, is the input's
    reference channel sample for sample (dsp off): B and C joined it, and lack nothing. (All
    three still play it: a page keeps the decoded audio of what it plays.)"""
    system = shift.system
    wait_for(lambda: shift.agent.poll() is not None, AGENT_SECONDS + 60, "the agent to finish")
    assert shift.agent.returncode == 0
    want = hashlib.sha256(system.input[:, 0].astype("<i2").tobytes()).hexdigest()
    for page, name in ((shift.a, "A"), (shift.b, "B"), (shift.c, "C")):
        got = wait_for(lambda page=page: whole(page, shift.session), 20,
                       f"the whole session on device {name}")
        assert got["sha256"] == want, name


# ---------------------------------------------------------------------- a relay outage


def test_a_relay_outage_shows_a_banner_and_the_missed_audio_plays_at_1_5x_until_live(shift):
    """OUTAGE_S long (14 s by default; SCRIBELINK_OUTAGE_S=30 runs the issue's 30 s: nothing in
    the page or the relay depends on the length, the broker queues without bound)."""
    a, system = shift.a, shift.system
    pcm = np.tile(system.sim_pcm, 4)  # 160 s: more than the outage and the catch-up need
    sim = SimSession(shift.unit_b, pcm, room="Exam 2")
    sim.status("live")
    stop = threading.Event()

    def unit_records():  # in real time, until the test has seen what it needs
        while not stop.is_set() and sim.pos + 16000 <= len(pcm):
            sim.audio(1.0)

    runner = threading.Thread(target=unit_records, daemon=True)
    runner.start()
    try:
        _outage_and_catch_up(a, system, sim)
    finally:
        stop.set()
        runner.join(10)
    sim.close()


def _outage_and_catch_up(a, system: System, sim: SimSession) -> None:
    a.click('.room-item[data-unit="unit-b"]')
    wait_for(lambda: any(x["session"] == sim.hex and x["chunks"] > 10
                         for x in sessions(a, "unit-b")), 10, "the room live")
    a.click("#play")
    wait_for(lambda: js(a, "window.__probe.playback()")["session"] == sim.hex
             and js(a, "window.__probe.playback()")["mode"] == "live", 5, "playing live")
    wait_for(lambda: js(a, "window.__probe.playback()")["level"]["peak"] > 0, 5, "hearing it")
    js(a, "() => window.__probe.setHidden(true)")  # the EHR in front during the outage
    seen = len(js(a, "window.__probe.notified()"))
    system.relay.stop()
    down_at = time.monotonic()
    a.wait_for_selector('#outage[data-state="down"]', timeout=10000)
    text = a.inner_text("#outage")
    assert "relay is unreachable" in text and "Exam 2" in text and "nothing is lost" in text
    assert js(a, "window.__probe.playback()")["mode"] == "live"
    # the hidden page hears of it (after 10 s, so a blip does not pop up)
    note = wait_for(lambda: next((x for x in js(a, "window.__probe.notified()")[seen:]
                                  if x["title"] == "Relay unreachable"), None),
                    max(5.0, OUTAGE_S - (time.monotonic() - down_at)), "the outage notification")
    assert "Exam 2" in note["body"] and "Nothing is lost" in note["body"]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage lasts OUTAGE_S
    system.relay.start()
    a.wait_for_selector('#outage[data-state="missed"]', timeout=30000)
    back_after_s = time.monotonic() - down_at  # the relay's restart and the page's reconnect
    m = re.search(r"You missed (\d+):(\d\d) of Exam 2", a.inner_text("#outage"))
    assert m, a.inner_text("#outage")
    missed_s = int(m[1]) * 60 + int(m[2])
    # the whole time the page could not hear the room (longer than the outage on a slow
    # machine: the restart and the reconnect's backoff count too), and no more
    assert OUTAGE_S - 1 <= missed_s <= back_after_s + 1, (missed_s, OUTAGE_S, back_after_s)
    back = wait_for(lambda: next((x for x in js(a, "window.__probe.notified()")[seen:]
                                  if x["title"] == "Relay back"), None), 5, "the notification")
    assert "Exam 2" in back["body"]
    js(a, "() => window.__probe.setHidden(false)")
    assert a.input_value("#missed-speed") == "1.5"
    missed_from = js(a, "window.__probe.app.store.missed.fromSample")
    # everything the unit recorded meanwhile reaches the page first (as backfill)
    wait_for(lambda: js(a, "(s) => window.__probe.sessionHash(s)", sim.hex)["contiguous"]
             and js(a, "(s) => window.__probe.sessions().find((x) => x.session === s).maxSeq",
                    sim.hex) * 640 > missed_from + (OUTAGE_S - 1) * 16000, 30,
             "the missed audio here")
    a.click("#play-missed")
    t0 = time.monotonic()

    def catching_up():
        p = js(a, "window.__probe.playback()")
        return p if p["mode"] == "replay" and p["speed"] == 1.5 and \
            p["playedSample"] > missed_from else None

    p0 = wait_for(catching_up, 5, "the catch-up playing")
    assert p0["behindS"] > OUTAGE_S - 2  # it starts where the outage began
    n = int(min(10.0, OUTAGE_S - 2) * 16000)

    out = wait_for(lambda: played(a, n), 15, "the missed audio fed")
    assert out["startSample"] == missed_from  # from where the outage began, what the unit said
    want = sim.pcm[missed_from:missed_from + n]
    assert out["sha256"] == hashlib.sha256(want.astype("<i2").tobytes()).hexdigest()
    wait_for(lambda: time.monotonic() - t0 > 5, 6, "5 s of catching up")
    p1 = js(a, "window.__probe.playback()")
    rate = (p1["playedSample"] - p0["playedSample"]) / 16000 / (time.monotonic() - t0)
    assert 1.3 < rate < 1.6, rate  # 1.5x, pitch kept (tests/console/test_console_player.py)
    a.wait_for_selector("#behind:has-text('behind live')", timeout=5000)
    # ... until it catches up with live, and plays live (at 1x) from there
    trace: list = []

    def live_yet() -> bool:
        p = js(a, "window.__probe.playback()")
        trace.append((time.monotonic(), p))
        return p["mode"] == "live"

    wait_for(live_yet, 3 * p0["behindS"] + 20, "caught up with live", interval=0.5)
    took = time.monotonic() - t0
    replaying = [(t, p) for t, p in trace if p["mode"] == "replay"]
    # at 1.5x all the way, never paused, and always closing on live: it gains 0.5 s a
    # second at 1.5x, less where a loaded machine's headless audio clock runs slow (live
    # grows by the wall clock), so the pace is checked against a floor, not timed
    assert replaying and all(p["speed"] == 1.5 and not p["paused"] for _, p in replaying), trace
    behind = [round(p["behindS"], 2) for _, p in replaying]
    assert all(b2 < b1 + 1.0 for b1, b2 in pairwise(behind)), behind  # (a glitch, no more)
    assert p0["behindS"] / took > 0.15, (took, p0["behindS"], behind)
    # ... and live as soon as it has caught up: not while behind, and not after seconds of
    # 1.5x at the live edge, where it would starve every chunk (it once stayed there 22 s)
    assert behind[-1] < 1.0, behind
    close = next(t for t, p in replaying if p["behindS"] < 1.0)
    assert trace[-1][0] - close < 3.0, (behind, [round(t - t0, 1) for t, _ in trace])
    p2 = js(a, "window.__probe.playback()")
    assert p2["session"] == sim.hex and p2["speed"] == 1.0, p2


# ---------------------------------------------------------------------- consent


def audio_rows(system: System, session: str) -> int:
    db = sqlite3.connect(str(system.relay.dir / "data" / "relay.db"))
    try:
        return db.execute("SELECT COUNT(*) FROM stream WHERE session=? AND kind='audio'",
                          (session,)).fetchone()[0]
    finally:
        db.close()


def test_with_consent_required_nothing_before_consent_and_a_declined_visit_leaves_nothing(shift):
    a, system, puck = shift.a, shift.system, shift.puck
    agent = system.start_agent(puck_link=puck.link, consent_required=True, name="unit-a-consent")
    a.click('.room-item[data-unit="unit-a"]')
    first = wait_for(lambda: next((x for x in sessions(a, "unit-a")
                                   if x["session"] != shift.session), None), 30,
                     "a session waiting for consent")["session"]
    a.wait_for_selector('.room-item[data-unit="unit-a"][data-state="consent"]', timeout=10000)
    a.wait_for_selector("#consent:not([hidden])", timeout=10000)
    puck.wait_led("consent_wanted", 10, start=0)
    time.sleep(3)  # three seconds of an exam room waiting for consent ...
    assert audio_rows(system, first) == 0  # ... and nothing of it anywhere
    assert next(x for x in sessions(a, "unit-a") if x["session"] == first)["chunks"] == 0

    # the patient declines: the physician's hold
    mark = puck.mark()
    puck.cmd("hold 2")
    wait_for(lambda: next(x for x in sessions(a, "unit-a") if x["session"] == first)["closed"],
             10, "the declined visit closed")
    events = next(x for x in sessions(a, "unit-a") if x["session"] == first)["events"]
    assert [e["kind"] for e in events if e["kind"] in ("consent", "cue")] == ["consent", "consent"]
    a.wait_for_selector('#events tr[data-kind="consent"]:has-text("declined")', timeout=5000)
    assert audio_rows(system, first) == 0
    spool = b"".join(p.read_bytes() for p in (system.tmp / "unit-a-consent" / "spool").rglob("*")
                     if p.is_file())
    sid = bytes.fromhex(first)
    # envelopes carry the session in clear after magic, version, type (1 audio, 2 event)
    assert re.search(b"SL\x01\x02.{4}" + re.escape(sid), spool, re.DOTALL)  # its events: yes
    assert not re.search(b"SL\x01\x01.{4}" + re.escape(sid), spool, re.DOTALL)  # audio: none
    assert puck.led() == "idle" and not any(m.get("led") == "live" for m in puck.lines[mark:])

    # the next visit starts with a press; the scribe confirms the read-back
    mark = puck.mark()
    puck.cmd("press")
    second = wait_for(lambda: next((x for x in sessions(a, "unit-a")
                                    if x["session"] not in (shift.session, first)), None), 15,
                      "the next visit's session")["session"]
    a.wait_for_selector("#consent-given", timeout=10000)
    # the ring asks the new visit for consent, and keeps asking: that press reached no scribe,
    # so no "cue sent" hides the request
    puck.wait_led("consent_wanted", 10, start=mark)
    assert puck.led() == "consent_wanted"
    a.click("#consent-given")
    wait_for(lambda: next(x for x in sessions(a, "unit-a") if x["session"] == second)["chunks"]
             > 25, 15, "audio after consent")
    ev = [e for e in next(x for x in sessions(a, "unit-a") if x["session"] == second)["events"]
          if e["kind"] == "consent"]
    assert len(ev) == 2  # pending, then given (by the scribe: the events table says so)
    a.wait_for_selector('#events tr[data-kind="consent"]:has-text("read-back")', timeout=5000)
    first_chunk_us = js(a, """(s) => { const x = window.__probe.app.desk.receiver.sessions.get(s);
        return Math.min(...[...x.chunks.values()].map((c) => c.captureUs)); }""", second)
    consent_us = js(a, """(s) => window.__probe.app.desk.receiver.sessions.get(s).events
        .find((e) => e.kind === 'consent' && e.state === 'given').at_us""", second)
    assert first_chunk_us >= consent_us  # nothing from before consent
    puck.wait_led("live", 10, start=mark)
    audit = system.clinic.call("GET", "/api/admin/audit?limit=500").json()
    acts = [x["action"] for x in audit if x["actor"] == "unit-a"]
    assert {"consent_pending", "consent_declined", "consent_given"} <= set(acts)
    agent.terminate()
    agent.wait(15)
