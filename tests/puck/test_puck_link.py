"""The real firmware (MicroPython unix port) and the real agent-side Puck over a pty:
cues arrive exactly once, the ring tells the truth, and both sides survive garbage,
unplugging, silence and resets."""

from __future__ import annotations

import threading
import time

from puck_harness import Puck, PuckSim, Recorder, wait_until

from scribelink import pucklink


def test_press_fires_one_cue_despite_lost_frames_lost_acks_and_garbage(sim, agent):
    puck, rec = agent
    sim.cmd("drop up 2 cue")  # the first two copies of the cue never reach the agent
    sim.cmd("drop down 2 ack")  # and the agent's first two acks never reach the puck
    sim.cmd("garbage up 40")
    sim.cmd("garbage down 40")
    mark = sim.mark()
    sim.cmd("press")
    sim.wait_led("cue_sent", timeout=10, start=mark)  # the puck got an ack at last
    time.sleep(1.0)  # room for any stray retransmission to arrive
    ok = sim.cmd("state")
    assert ok["dropped_up"] == 2 and ok["dropped_down"] == 2  # the faults were injected
    assert len(rec.cues) == 1
    nonce, cue_no = pucklink.split_cue_id(rec.cues[0])
    assert cue_no == 1 and nonce == puck._link.peer_nonce
    assert puck.connected


def test_cue_seen_lights_the_ring_then_returns_to_live(sim, agent):
    puck, rec = agent
    sim.cmd("press")
    wait_until(lambda: rec.cues, 5, "cue")
    sim.wait_led("cue_sent", start=0)
    mark = sim.mark()
    puck.cue_seen(rec.cues[0])
    seen = sim.wait_led("cue_seen", timeout=5, start=mark)
    back = sim.wait_led("live", timeout=6, start=mark)
    assert 2500 <= back["t"] - seen["t"] <= 4000  # "seen" shows for about 3 s
    assert sim.led() == "live"


def test_cue_seen_for_a_cue_from_before_a_reboot_is_ignored(sim, agent):
    puck, rec = agent
    sim.cmd("press")
    wait_until(lambda: rec.cues, 5, "cue")
    sim.cmd("reset")
    sim.wait_led("live", timeout=10, start=sim.mark() - 1)
    mark = sim.mark()
    puck.cue_seen(rec.cues[0])  # the old boot's cue: a new puck must not claim it
    time.sleep(1.0)
    assert not any(m.get("led") == "cue_seen" for m in sim.lines[mark:])
    assert sim.led() == "live"


def test_hold_two_seconds_toggles_privacy_once(sim, agent):
    puck, rec = agent
    mark = sim.mark()
    sim.cmd("hold 2")
    wait_until(lambda: rec.toggles >= 1, 5, "privacy toggle")
    time.sleep(0.8)
    assert rec.toggles == 1
    assert rec.cues == [] and rec.presence == 0
    assert any(m.get("led") == "hold_armed" for m in sim.lines[mark:])  # ring said "release now"
    puck.show("paused")
    sim.wait_led("paused", start=mark)
    assert sim.led() == "paused"


def test_hold_five_seconds_is_a_presence_hold(sim, agent):
    puck, rec = agent
    result = {}
    waiter = threading.Thread(target=lambda: result.update(ok=puck.wait_for_hold(5, 12)))
    waiter.start()
    sim.cmd("hold 5.4")
    waiter.join(timeout=15)
    assert result.get("ok") is True
    assert rec.presence == 1
    assert rec.toggles == 0 and rec.cues == []


def test_wait_for_hold_is_false_without_a_long_enough_hold(sim, agent):
    puck, rec = agent
    result = {}
    waiter = threading.Thread(target=lambda: result.update(ok=puck.wait_for_hold(5, 3)))
    waiter.start()
    sim.cmd("hold 2")  # a privacy toggle, not presence
    waiter.join(timeout=6)
    assert result.get("ok") is False
    assert rec.toggles == 1
    # ... and a 6 s requirement is not met by a 5.3 s hold either
    result.clear()
    waiter = threading.Thread(target=lambda: result.update(ok=puck.wait_for_hold(6, 8)))
    waiter.start()
    sim.cmd("hold 5.3")
    waiter.join(timeout=10)
    assert result.get("ok") is False and rec.presence == 1


def test_garbage_both_ways_is_survived(sim, agent):
    puck, rec = agent
    for _ in range(5):
        sim.cmd("garbage up 300")
        sim.cmd("garbage down 300")
        time.sleep(0.1)
    time.sleep(0.5)
    assert puck.connected
    assert puck._link.bad_frames > 0  # the garbage did arrive
    sim.cmd("press")
    wait_until(lambda: len(rec.cues) == 1, 5, "cue after garbage")
    sim.wait_led("cue_sent", start=0)
    puck.show("offline_recording")  # hidden under the cue overlay until the cue is seen
    mark = sim.mark()
    puck.cue_seen(rec.cues[0])
    sim.wait_led("cue_seen", start=mark)
    sim.wait_led("offline_recording", timeout=6, start=mark)
    assert sim.led() == "offline_recording"


def test_unplug_mid_message_then_replug(sim, agent):
    puck, rec = agent
    mark = sim.mark()
    sim.cmd("unplug")  # both sides are left holding half a frame
    wait_until(lambda: not puck.connected, 3, "agent sees the puck gone")
    assert rec.connection[-1] is False
    sim.wait_led("connecting", timeout=5, start=mark)  # the ring does not pretend
    assert puck.ping(0.3) is None
    sim.cmd("press")  # pressed while unplugged: kept by the puck, not lost
    time.sleep(0.5)
    assert rec.cues == []
    sim.cmd("replug")
    wait_until(lambda: puck.connected, 10, "agent reconnects after replug")
    wait_until(lambda: len(rec.cues) == 1, 5, "the cue pressed while unplugged")
    sim.wait_led("cue_sent", timeout=5, start=mark)
    time.sleep(1.0)
    assert len(rec.cues) == 1
    rtt = puck.ping(1.0)
    assert rtt is not None and rtt < 0.5


def test_puck_that_stops_answering(sim, agent):
    puck, rec = agent
    mark = sim.mark()
    sim.cmd("freeze")  # firmware hung; the port is still there
    wait_until(lambda: not puck.connected, 4, "heartbeat timeout")
    assert puck.ping(0.3) is None
    sim.cmd("thaw")
    wait_until(lambda: puck.connected, 5, "puck answers again")
    # the agent's state reaches the puck one message after the link is back
    wait_until(lambda: sim.led() == "live", 3, "the ring shows live again")
    # One direction dead: the agent stops hearing the puck. Both must notice.
    mark = sim.mark()
    sim.cmd("drop up 1000000")
    wait_until(lambda: not puck.connected, 4, "agent notices silence")
    sim.wait_led("connecting", timeout=4, start=mark)
    sim.cmd("drop up 0")
    wait_until(lambda: puck.connected, 8, "link back")
    sim.wait_led("live", timeout=4, start=mark)
    assert rec.connection.count(False) >= 2


def test_puck_reboot_is_a_new_session(sim, agent):
    _puck, rec = agent
    sim.cmd("press")
    wait_until(lambda: len(rec.cues) == 1, 5, "first cue")
    mark = sim.mark()
    sim.cmd("reset")
    sim.wait_led("connecting", timeout=10, start=mark)
    sim.wait_led("live", timeout=10, start=mark)  # the agent's state comes back unasked
    sim.cmd("press")
    wait_until(lambda: len(rec.cues) == 2, 5, "cue after reboot")
    assert pucklink.split_cue_id(rec.cues[1])[1] == 1  # cue numbers restart ...
    assert rec.cues[0] != rec.cues[1]  # ... but ids do not collide


def test_agent_waits_for_a_puck_that_is_not_there_yet(tmp_path):
    rec = Recorder()
    link = tmp_path / "later"
    puck = Puck(str(link), rec.on_cue, rec.on_privacy_toggle, on_connection=rec.on_connection)
    puck.start()
    try:
        time.sleep(1.0)
        assert not puck.connected and rec.connection == []
        sim = PuckSim(link)
        try:
            wait_until(lambda: puck.connected, 10, "connect once the port appears")
            assert rec.connection == [True]
            sim.wait_led("idle", timeout=5, start=0)  # no session yet
        finally:
            sim.close()
        wait_until(lambda: not puck.connected, 5, "port gone")
    finally:
        puck.stop()


def test_agent_restart_gets_the_cue_pressed_while_it_was_down(sim, agent):
    puck, rec = agent
    puck.stop()  # the agent process goes away; the port closes
    mark = sim.mark()
    sim.wait_led("connecting", timeout=5, start=mark)
    sim.cmd("press")
    time.sleep(0.3)
    rec2 = Recorder()
    again = Puck(str(sim.link), rec2.on_cue, rec2.on_privacy_toggle)  # new process, new nonce
    again.start()
    try:
        wait_until(lambda: again.connected, 10, "new agent connects")
        wait_until(lambda: len(rec2.cues) == 1, 5, "the cue queued on the puck")
        again.show("paused")
        sim.wait_led("cue_sent", timeout=5, start=mark)
        again.cue_seen(rec2.cues[0])
        sim.wait_led("cue_seen", timeout=5, start=mark)
        sim.wait_led("paused", timeout=6, start=mark)
        time.sleep(0.5)
        assert len(rec2.cues) == 1 and rec.cues == []
        assert again.present and again.puck_state() == "paused"
    finally:
        again.stop()


def test_a_burst_of_presses_arrives_complete_in_order_and_once(sim, agent):
    puck, rec = agent
    assert puck.connected
    sim.cmd("drop up 3 cue")
    sim.cmd("drop down 3 ack")
    for i in range(8):
        sim.cmd("press 80")
        if i % 3 == 0:
            sim.cmd("garbage up 25")
            sim.cmd("garbage down 25")
        time.sleep(0.12)
    wait_until(lambda: len(rec.cues) >= 8, 15, "eight cues")
    time.sleep(1.5)
    assert [pucklink.split_cue_id(c)[1] for c in rec.cues] == list(range(1, 9))
    ok = sim.cmd("state")
    assert ok["dropped_up"] == 3 and ok["dropped_down"] == 3


def test_each_scribe_reply_shows_its_own_pattern_for_its_time(sim, agent):
    puck, rec = agent
    for n, (reply, state, shows_s) in enumerate((("got_it", "cue_got_it", 3),
                                                  ("repeat", "cue_repeat", 6),
                                                  ("see_me", "cue_see_me", 6)), start=1):
        sim.cmd("press")
        wait_until(lambda n=n: len(rec.cues) == n, 5, f"cue {n}")
        mark = sim.mark()
        puck.cue_seen(rec.cues[-1], reply)
        shown = sim.wait_led(state, timeout=5, start=mark)
        back = sim.wait_led("live", timeout=shows_s + 3, start=mark)
        assert shows_s - 0.5 <= (back["t"] - shown["t"]) / 1000 <= shows_s + 1.0, (reply, back)
        assert not any(m.get("led") == "cue_seen" for m in sim.lines[mark:])  # its own, not "seen"


def test_a_double_press_gives_consent_only_while_the_unit_asks(sim, agent):
    puck, rec = agent
    mark = sim.mark()
    puck.want_consent(True)
    sim.wait_led("consent_wanted", timeout=5, start=mark)
    double_press(sim)
    wait_until(lambda: rec.consents == 1, 5, "consent")
    assert rec.cues == []  # a double press is consent, not two cues
    puck.want_consent(False)
    sim.wait_led("live", timeout=5, start=mark)
    double_press(sim)
    wait_until(lambda: len(rec.cues) == 2, 5, "two cues")  # not asked: two presses, two cues
    assert rec.consents == 1


def double_press(sim) -> None:
    """Two brief presses, as a finger makes them: 100 ms each, 120 ms apart."""
    sim.cmd("press 100")
    time.sleep(0.12)  # the finger's time between presses (not a wait for a result)
    sim.cmd("press 100")
