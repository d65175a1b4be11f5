# Tests of the firmware's pure modules (pucklink, press, ledring, puckapp), written in
# the MicroPython/CPython common subset: no pytest inside. tests/firmware/test_pure.py
# runs every test_* here under CPython (via pytest) and under the MicroPython unix port
# (this file as a script: it prints "N passed, M failed").

import struct

import ledring
import press
import puckapp

try:
    import pucklink  # MicroPython: staged beside the firmware
except ImportError:
    from scribelink import pucklink  # CPython: the installed package


class Lcg:
    """Deterministic pseudo-random numbers, identical on both interpreters."""

    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % n


# -- framing -------------------------------------------------------------------------


def test_crc16_check_value():
    assert pucklink.crc16(b"123456789") == 0x29B1


def test_cobs_roundtrip_with_zeros_and_long_runs():
    cases = [b"", b"\x00", b"\x00\x00", b"\x11\x00\x22", bytes(range(1, 255)), bytes(300)]
    cases.append(bytes([1 + i % 255 for i in range(600)]))
    for data in cases:
        enc = pucklink.cobs_encode(data)
        assert 0 not in enc
        assert pucklink.cobs_decode(enc) == data


def test_cobs_rejects_invalid():
    assert pucklink.cobs_decode(b"\x05\x01") is None  # block runs past the end
    assert pucklink.cobs_decode(b"\x00") is None


def test_frame_roundtrip():
    frame = pucklink.encode_frame(pucklink.MSG_CUE, 0xDEADBEEF, 7, b"\x00\x03")
    assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1]
    got = pucklink.FrameReader().feed(frame)
    assert got == [(pucklink.MSG_CUE, 0xDEADBEEF, 7, b"\x00\x03")]


def test_reader_rejects_every_single_bit_flip():
    frame = pucklink.encode_frame(pucklink.MSG_CUE, 0x01020304, 9, b"\x00\x05")
    for i in range(1, len(frame) - 1):
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            reader = pucklink.FrameReader()
            got = reader.feed(bytes(bad))
            # A flip may split the frame at a new 0x00, but never yields a wrong frame.
            for f in got:
                assert f == (pucklink.MSG_CUE, 0x01020304, 9, b"\x00\x05"), (i, bit)
            assert got == [] or bad[i] == frame[i]


def test_reader_survives_garbage_and_byte_by_byte_delivery():
    rng = Lcg(1)
    good = pucklink.encode_frame(pucklink.MSG_PING, 42, 0, b"\x01\x02\x03\x04")
    stream = bytearray()
    for _ in range(20):
        stream.extend(bytes([rng.next(256) for _ in range(rng.next(200))]))
        stream.extend(good)
    reader = pucklink.FrameReader()
    got = []
    for b in stream:
        got.extend(reader.feed(bytes([b])))
    assert got.count((pucklink.MSG_PING, 42, 0, b"\x01\x02\x03\x04")) == 20
    assert len(got) == 20


def test_reader_drops_oversized_garbage():
    reader = pucklink.FrameReader()
    junk = b"\x01" * (pucklink.MAX_ENCODED_LEN * 3)
    assert reader.feed(junk) == []
    frame = pucklink.encode_frame(pucklink.MSG_PONG, 5, 0, b"abcd")
    assert reader.feed(frame) == [(pucklink.MSG_PONG, 5, 0, b"abcd")]
    assert reader.bad_frames >= 1


def test_cue_id_roundtrip():
    cid = pucklink.cue_id(0xCAFEBABE, 513)
    assert pucklink.split_cue_id(cid) == (0xCAFEBABE, 513)
    assert pucklink.cue_id(1, 2) != pucklink.cue_id(2, 2)


def _load_vectors():
    import json

    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    for path in (here + "/../vectors/puck_frames.json", "../vectors/puck_frames.json"):
        try:
            with open(path) as f:
                return json.load(f)
        except OSError:
            pass
    raise AssertionError("tests/vectors/puck_frames.json not found from this directory")


def test_vectors_decode_and_encode_identically():
    import binascii

    vectors = _load_vectors()
    for vec in vectors["frames"]:
        wire = binascii.unhexlify(vec["hex"])
        frames = pucklink.FrameReader().feed(wire)
        assert len(frames) == 1, vec["description"]
        mtype, nonce, seq, body = frames[0]
        assert (mtype, nonce, seq) == (vec["type_code"], vec["nonce"], vec["seq"])
        assert binascii.hexlify(body).decode() == vec["body_hex"]
        assert pucklink.encode_frame(mtype, nonce, seq, body) == wire
    for vec in vectors["invalid"]:
        assert pucklink.FrameReader().feed(binascii.unhexlify(vec["hex"])) == []


# -- link ----------------------------------------------------------------------------


class Wire:
    """Two links joined by a lossy, garbage-injecting wire, stepped in 10 ms ticks."""

    def __init__(self, a, b, seed=7, loss_pct=0, garbage_pct=0):
        self.a = a
        self.b = b
        self.rng = Lcg(seed)
        self.loss_pct = loss_pct
        self.garbage_pct = garbage_pct
        self.now = 0
        self.events_a = []
        self.events_b = []

    def _carry(self, data):
        out = bytearray()
        # Lose whole frames (split on the delimiters) and sprinkle garbage.
        for chunk in data.split(b"\x00"):
            if chunk and self.rng.next(100) < self.loss_pct:
                continue
            if self.rng.next(100) < self.garbage_pct:
                out.extend(bytes([self.rng.next(256) for _ in range(1 + self.rng.next(12))]))
            out.extend(chunk)
            out.append(0)
        return bytes(out)

    def run(self, ms):
        end = self.now + ms
        while self.now < end:
            self.events_b.extend(self.b.receive(self._carry(self.a.poll(self.now)), self.now))
            self.events_a.extend(self.a.receive(self._carry(self.b.poll(self.now)), self.now))
            self.now += 10


def delivered(events, mtype):
    return [e.body for e in events if e.kind == pucklink.EV_MESSAGE and e.mtype == mtype]


def test_link_connects_and_carries_state():
    puck, agent = pucklink.Link(0x1111), pucklink.Link(0x2222)
    wire = Wire(puck, agent)
    assert not puck.connected(0)
    agent.set_state(1, 0)
    wire.run(100)
    assert puck.connected(wire.now) and agent.connected(wire.now)
    assert puck.peer_state == 1 and agent.peer_nonce == 0x1111


def test_link_exactly_once_under_loss_and_garbage():
    for seed in (1, 2, 3, 4, 5):
        puck, agent = pucklink.Link(0xA000 + seed), pucklink.Link(0xB000 + seed)
        wire = Wire(puck, agent, seed=seed, loss_pct=25, garbage_pct=20)
        for n in range(10):
            assert puck.send_reliable(pucklink.MSG_CUE, struct.pack(">H", n + 1), wire.now)
            wire.run(30)
        wire.run(40000)
        got = delivered(wire.events_b, pucklink.MSG_CUE)
        assert got == [struct.pack(">H", n + 1) for n in range(10)], (seed, got)
        assert puck.pending() == []
        acked = [e for e in wire.events_a if e.kind == pucklink.EV_ACKED]
        assert len(acked) == 10
        assert puck.retransmits > 0 and agent.duplicates > 0  # the loss did bite


def test_lost_ack_is_deduplicated():
    puck, agent = pucklink.Link(1), pucklink.Link(2)
    wire = Wire(puck, agent)
    wire.run(50)
    puck.send_reliable(pucklink.MSG_CUE, b"\x00\x01", wire.now)
    # Deliver the cue but throw away the agent's ack three times.
    for _ in range(3):
        frames = puck.poll(wire.now + 2000)
        agent.receive(frames, wire.now)
        agent.poll(wire.now)  # the ack, lost
        wire.now += 2000
    events = agent.receive(puck.poll(wire.now + 2000), wire.now)
    assert delivered(events, pucklink.MSG_CUE) == []
    assert agent.duplicates >= 2
    assert len(puck.pending()) == 1
    wire.run(200)
    assert puck.pending() == []


def test_retransmit_backoff():
    link = pucklink.Link(1, heartbeat_interval_ms=100000)
    link.poll(0)  # first heartbeat
    link.send_reliable(pucklink.MSG_CUE, b"\x00\x01", 0)
    sent_at = []
    for t in range(0, 5000, 10):
        out = link.poll(t)
        if out:
            sent_at.append(t)
    assert sent_at[:6] == [0, 150, 450, 1050, 2050, 3050], sent_at


def test_ack_for_previous_boot_does_not_ack_new_message():
    agent = pucklink.Link(2)
    old_puck = pucklink.Link(100)
    wire = Wire(old_puck, agent)
    wire.run(50)
    old_puck.send_reliable(pucklink.MSG_CUE, b"\x00\x01", wire.now)
    wire.run(50)
    assert old_puck.pending() == []
    stale_ack = pucklink.encode_frame(pucklink.MSG_ACK, 2, 0, struct.pack(">IH", 100, 1))
    new_puck = pucklink.Link(200)  # rebooted: seq restarts at 1
    new_puck.send_reliable(pucklink.MSG_CUE, b"\x00\x01", 0)
    events = new_puck.receive(stale_ack, 0)
    assert events and events[0].kind == pucklink.EV_PEER_RESET
    assert [e for e in events if e.kind == pucklink.EV_ACKED] == []
    assert len(new_puck.pending()) == 1
    wire2 = Wire(new_puck, agent)
    wire2.now = wire.now
    wire2.run(100)
    assert delivered(wire2.events_b, pucklink.MSG_CUE) == [b"\x00\x01"]  # new boot, new cue


def test_peer_timeout_and_recovery():
    puck, agent = pucklink.Link(1), pucklink.Link(2)
    wire = Wire(puck, agent)
    wire.run(100)
    assert puck.connected(wire.now)
    silent_from = wire.now
    for t in range(silent_from, silent_from + 2500, 10):
        puck.poll(t)  # the agent hears nothing and says nothing
    assert not puck.connected(silent_from + 2500)
    assert puck.connected(silent_from + 1500)
    wire.now = silent_from + 2500
    wire.run(100)
    assert puck.connected(wire.now)


def test_one_way_loss_is_seen_by_both_ends():
    puck, agent = pucklink.Link(1), pucklink.Link(2)
    wire = Wire(puck, agent)
    wire.run(100)
    start = wire.now
    for t in range(start, start + 3000, 10):
        puck.poll(t)  # lost on the way up: the agent hears nothing
        puck.receive(agent.poll(t), t)  # but the puck still hears the agent
    assert puck.peer_alive(start + 2990)
    assert not agent.connected(start + 2990)
    assert not puck.connected(start + 2990)  # the agent stopped echoing the puck's nonce


def test_ping_pong():
    puck, agent = pucklink.Link(1), pucklink.Link(2)
    wire = Wire(puck, agent)
    agent.ping(0x01020304)
    wire.run(30)
    assert delivered(wire.events_b, pucklink.MSG_PONG) == [b"\x01\x02\x03\x04"]


def test_queue_is_bounded():
    link = pucklink.Link(1, max_queue=3)
    assert [link.send_reliable(pucklink.MSG_CUE, b"\x00\x01", 0) for _ in range(4)] == [1, 2, 3, 0]


# -- press ---------------------------------------------------------------------------


def test_debouncer_bounce_gives_one_press_dated_at_first_edge():
    d = press.Debouncer(30)
    for t in (100, 101, 103, 104):
        d.edge(t)
    assert d.poll(120, True) is None  # still bouncing
    assert d.poll(134, True) == (True, 100)
    assert d.poll(200, True) is None


def test_debouncer_ignores_glitch():
    d = press.Debouncer(30)
    d.edge(100)
    d.edge(102)  # a spike that came straight back
    assert d.poll(150, False) is None
    assert d.level is False


def test_debouncer_catches_missed_irq():
    d = press.Debouncer(30)
    assert d.poll(100, True) is None
    assert d.poll(131, True) == (True, 100)


def test_classifier_short_press_is_cue():
    c = press.PressClassifier(1500, 5000)
    c.down(0)
    assert c.tick(1000) == []
    assert c.up(1499) == [(press.PRESS_CUE, 1499)]


def test_classifier_hold_is_privacy_toggle_on_release():
    c = press.PressClassifier(1500, 5000)
    c.down(0)
    assert c.tick(2000) == [] and c.armed(2000) and not c.armed(1000)
    assert c.up(2000) == [(press.PRESS_PRIVACY_TOGGLE, 2000)]


def test_classifier_presence_hold():
    c = press.PressClassifier(1500, 5000)
    c.down(0)
    assert c.tick(4999) == []
    assert c.tick(5000) == [(press.PRESS_PRESENCE_HOLD, 5000)]
    assert c.tick(6000) == []
    assert c.up(7000) == [(press.PRESS_HOLD_RELEASED, 7000)]
    # a late main loop still reports the presence hold before the release
    c.down(10000)
    assert c.up(16000) == [(press.PRESS_PRESENCE_HOLD, 6000), (press.PRESS_HOLD_RELEASED, 6000)]


def test_classifier_timings_configurable():
    c = press.PressClassifier(300, 800)
    c.down(0)
    assert c.up(400) == [(press.PRESS_PRIVACY_TOGGLE, 400)]


def test_classifier_double_press_only_while_consent_is_wanted():
    c = press.PressClassifier(1500, 5000, 400)
    c.down(0)
    assert c.up(120) == [(press.PRESS_CUE, 120)]  # not wanted: a cue at once
    c.want_double = True
    c.down(1000)
    assert c.up(1100) == []  # held back: is a second press coming?
    assert c.tick(1300) == []
    c.down(1350)
    assert c.up(1450) == [(press.PRESS_DOUBLE, 100)]
    assert c.tick(3000) == []  # nothing left over
    c.down(4000)
    assert c.up(4100) == []
    assert c.tick(4450) == []
    assert c.tick(4501) == [(press.PRESS_CUE, 100)]  # no second press: the cue it was
    c.down(5000)
    assert c.up(5100) == []
    c.down(5200)  # a press, then a hold: a cue, then the privacy toggle (consent declined)
    assert c.up(7000) == [(press.PRESS_CUE, 100), (press.PRESS_PRIVACY_TOGGLE, 1800)]
    c.down(8000)
    assert c.up(8100) == []
    c.want_double = False  # consent came another way: the press is a cue after all
    assert c.tick(8150) == [(press.PRESS_CUE, 100)]


# -- LED ring ------------------------------------------------------------------------


def _signature(state):
    """(colours used, on/off pattern over 4 s): what colour vision and motion see."""
    colours = []
    frames = []
    for t in range(0, 4000, 50):
        px = ledring.render(state, t)
        assert len(px) == ledring.RING_SIZE
        frames.append(tuple([p != (0, 0, 0) for p in px]) + tuple([sum(p) for p in px]))
        for p in px:
            if p != (0, 0, 0):
                m = max(p)
                hue = (p[0] * 4 // m, p[1] * 4 // m, p[2] * 4 // m)
                if hue not in colours:
                    colours.append(hue)
    return colours, frames


def test_every_state_differs_in_colour_and_motion():
    sigs = {}
    for s in pucklink.STATE_NAMES:
        sigs[s] = _signature(s)
    names = list(pucklink.STATE_NAMES)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = sigs[names[i]], sigs[names[j]]
            assert a[0] != b[0], ("same colour", names[i], names[j])
            assert a[1] != b[1], ("same motion", names[i], names[j])
    moving = [s for s in names if len(set(sigs[s][1])) > 1]
    assert "connecting" in moving and "fault" in moving and "paused" in moving
    assert "live" not in moving  # steady green: recording normally


def test_scheduler_priority_and_overlays():
    s = ledring.LedScheduler(cue_seen_ms=3000, cue_sent_max_ms=60000)
    assert s.state(0) == "connecting"
    s.agent_present = True
    s.session_state = "live"
    assert s.state(0) == "live"
    s.cue_sent(1, 100)
    assert s.state(100) == "cue_sent"
    assert s.cue_seen(1, 200)
    assert s.state(200) == "cue_seen"
    assert s.state(3199) == "cue_seen"
    assert s.state(3200) == "live"
    s.cue_sent(2, 4000)
    s.session_state = "fault"
    assert s.state(4000) == "fault"
    s.session_state = "paused"
    s.armed = True
    assert s.state(4000) == "hold_armed"
    s.armed = False
    s.agent_present = False
    assert s.state(4000) == "connecting"
    s.agent_present = True
    assert s.state(63999) == "cue_sent"
    assert s.state(64000) == "paused"  # an unseen cue stops claiming attention


def test_scheduler_identify_and_presence_requests():
    s = ledring.LedScheduler(presence_ms=5000)
    s.agent_present = True
    s.session_state = "fault"
    s.want_presence(30000, 0)
    assert s.state(0) == "presence_wanted"  # the tech's request outranks a fault
    s.held_ms = 100
    assert s.state(100) == "presence_holding"
    s.held_ms = 5000
    assert s.state(5100) == "presence_release"
    s.held_ms = 0
    assert s.state(5200) == "presence_wanted"
    s.identify(2000, 5200)
    assert s.state(5300) == "identify"  # identify outranks everything but connecting
    s.agent_present = False
    assert s.state(5400) == "connecting"
    s.agent_present = True
    assert s.state(7200) == "presence_wanted"  # identify ran out
    s.want_presence(0, 7300)
    assert s.state(7300) == "fault"
    s.want_presence(10 ** 9, 8000)  # an absurd request is capped
    assert s.state(8000 + ledring.PRESENCE_WANTED_MAX_MS - 1) == "presence_wanted"
    assert s.state(8000 + ledring.PRESENCE_WANTED_MAX_MS) == "fault"
    s.identify(1000, 0)
    s.want_presence(1000, 0)
    s.forget_requests()
    assert s.state(10) == "fault"
    # unasked, a hold that reaches the presence time still says "let go" (not hold_armed)
    s.session_state = "live"
    s.armed = True
    s.held_ms = 4999
    assert s.state(20) == "hold_armed"
    s.held_ms = 5000
    assert s.state(30) == "presence_release"


def test_scheduler_shows_each_reply_for_its_time_and_consent_below_cues():
    s = ledring.LedScheduler(cue_seen_ms=3000)
    s.agent_present = True
    s.session_state = "idle"
    s.consent_wanted = True
    assert s.state(0) == "consent_wanted"
    s.consent_wanted = False
    s.session_state = "live"
    for i, (reply, shows) in enumerate((("cue_got_it", 3000), ("cue_repeat", 6000),
                                        ("cue_see_me", 6000), ("cue_seen", 3000))):
        t = 100000 * (i + 1)
        s.cue_sent(i, t)
        assert s.cue_seen(i, t + 10, reply)
        assert s.state(t + 10) == reply
        assert s.state(t + 10 + shows - 1) == reply
        assert s.state(t + 10 + shows) == "live"
    s.cue_seen(9, 1000000, "cue_bogus")  # an unknown reply shows as plain "seen"
    assert s.state(1000000) == "cue_seen"
    s.consent_wanted = True
    s.cue_sent(10, 2000000)
    assert s.state(2000000) == "cue_sent"  # a cue outranks the consent request


def test_scheduler_seen_overtaking_ack():
    s = ledring.LedScheduler()
    s.agent_present = True
    s.cue_seen(5, 0)
    s.cue_sent(5, 10)
    assert s.state(4000) == "idle"


def test_scheduler_frame_reports_changes():
    s = ledring.LedScheduler()
    state, changed, _px = s.frame(0)
    assert (state, changed) == ("connecting", True)
    assert s.frame(10)[1] is False
    s.agent_present = True
    assert s.frame(20)[:2] == ("idle", True)


# -- the main loop, against a scripted board ---------------------------------------------


class ScriptedBoard:
    ring_size = 12

    def __init__(self):
        self.t = 1000
        self.level = False
        self.edges = []
        self.rx = bytearray()
        self.tx = bytearray()
        self.shown = []
        self.events = []
        self.feeds = 0

    def take_edges(self):
        e = self.edges
        self.edges = []
        return e

    def button_level(self):
        return self.level

    def ticks_ms(self):
        return self.t & 0x3FFFFFFF  # wraps like the RP2040's

    def ticks_diff(self, a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def read_link(self):
        data = bytes(self.rx)
        self.rx = bytearray()
        return data

    def write_link(self, data):
        self.tx.extend(data)

    def show(self, state, pixels, changed):
        if changed:
            self.shown.append(state)

    def feed_watchdog(self):
        self.feeds += 1

    def event(self, kind, value):
        self.events.append((kind, value))

    def set_button(self, level):
        self.level = level
        self.edges.append(self.ticks_ms())


def test_app_press_to_cue_to_seen_across_tick_wrap():
    board = ScriptedBoard()
    board.t = 0x3FFFFFFF - 3000  # ticks_ms wraps during the test
    app = puckapp.PuckApp(board, 0x5151)
    agent = pucklink.Link(0x7777)
    agent.set_state(1, 0)
    cues = []
    now = 0

    def run(ms):
        for _ in range(ms // 5):
            app.step()
            for ev in agent.receive(bytes(board.tx), now):
                if ev.kind == pucklink.EV_MESSAGE and ev.mtype == pucklink.MSG_CUE:
                    cues.append(pucklink.cue_id(agent.peer_nonce, struct.unpack(">H", ev.body)[0]))
            board.tx = bytearray()
            board.rx.extend(agent.poll(now))
            board.t += 5

    run(200)
    assert board.shown[-1] == "live"
    board.set_button(True)
    run(150)
    board.set_button(False)
    run(200)
    assert cues == [pucklink.cue_id(0x5151, 1)]
    assert board.shown[-1] == "cue_sent"
    agent.send_reliable(pucklink.MSG_CUE_SEEN, struct.pack(">IH", 0x5151, 1), now)
    run(100)
    assert board.shown[-1] == "cue_seen"
    assert board.feeds > 100


def test_app_shows_presence_progress_and_identify_when_the_agent_asks():
    board = ScriptedBoard()
    app = puckapp.PuckApp(board, 0x6161)
    agent = pucklink.Link(0x8888)
    holds = []
    now = [0]

    def run(ms):
        for _ in range(ms // 5):
            app.step()
            for ev in agent.receive(bytes(board.tx), now[0]):
                if ev.kind == pucklink.EV_MESSAGE and ev.mtype == pucklink.MSG_PRESENCE_HOLD:
                    holds.append(struct.unpack(">I", ev.body)[0])
            board.tx = bytearray()
            board.rx.extend(agent.poll(now[0]))
            board.t += 5
            now[0] += 5

    run(200)
    assert board.shown[-1] == "idle"
    agent.send_reliable(pucklink.MSG_PRESENCE_WANTED, struct.pack(">I", 30000), now[0])
    run(100)
    assert board.shown[-1] == "presence_wanted"
    assert agent.peer_state == puckapp.STATE_CODES["presence_wanted"]  # the agent sees it
    board.set_button(True)
    run(1000)
    assert board.shown[-1] == "presence_holding" and "hold_armed" not in board.shown
    run(4200)
    assert board.shown[-1] == "presence_release" and holds and holds[0] >= 5000
    board.set_button(False)
    run(100)
    assert board.shown[-1] == "presence_wanted"
    agent.send_reliable(pucklink.MSG_PRESENCE_WANTED, struct.pack(">I", 0), now[0])
    agent.send_reliable(pucklink.MSG_IDENTIFY, struct.pack(">I", 1000), now[0])
    run(300)
    assert board.shown[-1] == "identify"
    run(1000)
    assert board.shown[-1] == "idle"


def test_app_shows_the_replies_and_sends_consent_on_a_double_press():
    board = ScriptedBoard()
    app = puckapp.PuckApp(board, 0x7171)
    agent = pucklink.Link(0x9999)
    agent.set_state(1, 0)
    got = []
    now = [0]

    def run(ms):
        for _ in range(ms // 5):
            app.step()
            for ev in agent.receive(bytes(board.tx), now[0]):
                if ev.kind == pucklink.EV_MESSAGE and ev.mtype in (pucklink.MSG_CUE,
                                                                   pucklink.MSG_CONSENT):
                    got.append((pucklink.MSG_NAMES[ev.mtype], bytes(ev.body)))
            board.tx = bytearray()
            board.rx.extend(agent.poll(now[0]))
            board.t += 5
            now[0] += 5

    def click(ms=100):
        board.set_button(True)
        run(ms)
        board.set_button(False)

    run(200)
    assert board.shown[-1] == "live"
    for cue_no, code, state in ((1, 1, "cue_got_it"), (2, 2, "cue_repeat"), (3, 3, "cue_see_me"),
                                (4, 0, "cue_seen")):
        click()
        run(300)
        agent.send_reliable(pucklink.MSG_CUE_SEEN, struct.pack(">IHB", 0x7171, cue_no, code),
                            now[0])
        run(100)
        assert board.shown[-1] == state, (state, board.shown[-6:])
        run(6500)
    cues = [g for g in got if g[0] == "cue"]
    assert cues == [("cue", struct.pack(">H", n)) for n in (1, 2, 3, 4)]
    # a reply this firmware has no pattern for shows nothing wrong: it is ignored
    click()
    run(300)
    agent.send_reliable(pucklink.MSG_CUE_SEEN, struct.pack(">IHB", 0x7171, 5, 9), now[0])
    run(200)
    assert board.shown[-1] == "cue_sent"
    run(61000)
    # the agent waits for consent: the ring asks, and a double press gives it
    agent.send_reliable(pucklink.MSG_CONSENT_WANTED, bytes([1]), now[0])
    run(100)
    assert board.shown[-1] == "consent_wanted"
    got.clear()
    click()
    run(150)
    click()
    run(300)
    assert got == [("consent", bytes([pucklink.CONSENT_GIVEN]))]
    agent.send_reliable(pucklink.MSG_CONSENT_WANTED, bytes([0]), now[0])
    run(100)
    assert board.shown[-1] == "live"
    # a press that reached no scribe (it started the next visit): no "cue sent", no reply
    click()
    run(300)
    assert board.shown[-1] == "cue_sent"
    mark = len(board.shown)
    agent.send_reliable(pucklink.MSG_CUE_SEEN,
                        struct.pack(">IHB", 0x7171, 6, pucklink.CUE_NOT_SENT), now[0])
    run(200)
    assert board.shown[-1] == "live", board.shown[-6:]
    assert not [s for s in board.shown[mark:] if s.startswith("cue_")]


def _run_all():
    # Run as a script (MicroPython): every test_* function, then a summary line.
    import sys

    names = [n for n in sorted(globals()) if n.startswith("test_")]
    passed = failed = 0
    for name in names:
        try:
            globals()[name]()
            passed += 1
        except Exception as exc:  # noqa: BLE001 - report and go on
            failed += 1
            print("FAIL", name, repr(exc))
            if hasattr(sys, "print_exception"):
                sys.print_exception(exc)
    print(f"{passed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    import sys

    sys.exit(1 if _run_all() else 0)
