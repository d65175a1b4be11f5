# The puck's main loop: button -> classifier -> link, link -> LED ring, watchdog fed.
# Hardware-free: it talks to a board object (board.py on the RP2040, board_sim.py on
# the MicroPython unix port), so the same loop runs on the desk and on the device.

import struct

import ledring
import press

try:
    import pucklink  # on the puck: flashed beside this file
except ImportError:
    from scribelink import pucklink  # type: ignore[no-redef]  # CPython: the package

STATE_CODES = {}
for _i, _name in enumerate(pucklink.STATE_NAMES):
    STATE_CODES[_name] = _i

_PRESS_MESSAGES = {
    press.PRESS_PRIVACY_TOGGLE: pucklink.MSG_PRIVACY_TOGGLE,
    press.PRESS_PRESENCE_HOLD: pucklink.MSG_PRESENCE_HOLD,
    press.PRESS_HOLD_RELEASED: pucklink.MSG_HOLD_RELEASED,
}


class PuckApp:
    def __init__(
        self,
        board,
        nonce,
        hold_ms=press.HOLD_MS,
        presence_ms=press.PRESENCE_MS,
        debounce_ms=press.DEBOUNCE_MS,
        double_ms=press.DOUBLE_MS,
    ):
        self.board = board
        self.link = pucklink.Link(nonce)
        self.debouncer = press.Debouncer(debounce_ms, board.button_level())
        self.classifier = press.PressClassifier(hold_ms, presence_ms, double_ms)
        self.leds = ledring.LedScheduler(presence_ms=presence_ms)
        self.cue_no = 0
        self._ticks_last = board.ticks_ms()
        self._now_ms = 0  # ticks_ms wraps; this count does not

    def now_ms(self):
        t = self.board.ticks_ms()
        self._now_ms += self.board.ticks_diff(t, self._ticks_last)
        self._ticks_last = t
        return self._now_ms

    def step(self):
        now = self.now_ms()
        board = self.board
        for t in board.take_edges():
            self.debouncer.edge(now - board.ticks_diff(self._ticks_last, t))
        events = []
        # a double press means consent only while the agent waits for it
        self.classifier.want_double = self.leds.consent_wanted
        transition = self.debouncer.poll(now, board.button_level())
        if transition is not None:
            level, at_ms = transition
            events = self.classifier.down(at_ms) if level else self.classifier.up(at_ms)
        events.extend(self.classifier.tick(now))
        for kind, held_ms in events:
            self._on_press(kind, held_ms, now)

        data = board.read_link()
        if data:
            for ev in self.link.receive(data, now):
                self._on_link_event(ev, now)
        out = self.link.poll(now)
        if out:
            board.write_link(out)

        leds = self.leds
        leds.agent_present = self.link.connected(now)
        leds.armed = self.classifier.armed(now)
        leds.held_ms = self.classifier.held_ms(now)
        state, changed, pixels = leds.frame(now, board.ring_size)
        self.link.set_state(STATE_CODES[state], now)
        board.show(state, pixels, changed)
        board.feed_watchdog()

    def _on_press(self, kind, held_ms, now):
        if kind == press.PRESS_CUE:
            self.cue_no = (self.cue_no + 1) & 0xFFFF
            body = struct.pack(">H", self.cue_no)
            self.link.send_reliable(pucklink.MSG_CUE, body, now)
        elif kind == press.PRESS_DOUBLE:
            self.link.send_reliable(pucklink.MSG_CONSENT, bytes([pucklink.CONSENT_GIVEN]), now)
        else:
            body = struct.pack(">I", held_ms & 0xFFFFFFFF)
            self.link.send_reliable(_PRESS_MESSAGES[kind], body, now)
        self.board.event("press", kind)

    def _on_link_event(self, ev, now):
        if ev.kind == pucklink.EV_ACKED:
            if ev.mtype == pucklink.MSG_CUE:
                (cue_no,) = struct.unpack(">H", ev.body[:2])
                self.leds.cue_sent(cue_no, now)
            return
        if ev.kind == pucklink.EV_PEER_RESET:
            self.leds.forget_requests()
            self.leds.consent_wanted = False  # a new agent says again if it still waits
            self.board.event("agent", "new")
            return
        if ev.mtype == pucklink.MSG_HEARTBEAT:
            code = ev.body[0]
            if code < len(pucklink.AGENT_STATES):
                self.leds.session_state = pucklink.AGENT_STATES[code]
        elif ev.mtype == pucklink.MSG_CUE_SEEN and len(ev.body) >= 6:
            nonce, cue_no = struct.unpack(">IH", ev.body[:6])
            code = ev.body[6] if len(ev.body) >= 7 else 0  # an older agent: "seen"
            reply = pucklink.REPLY_STATES[code] if code < len(pucklink.REPLY_STATES) else None
            if nonce == self.link.nonce and code == pucklink.CUE_NOT_SENT:
                self.leds.forget_cue(cue_no)  # the press started a visit: no scribe has it
            elif nonce == self.link.nonce and reply is not None:
                # (not a cue from before this puck's last boot, nor a reply it cannot show)
                self.leds.cue_seen(cue_no, now, reply)
        elif ev.mtype == pucklink.MSG_CONSENT_WANTED and len(ev.body) >= 1:
            self.leds.consent_wanted = ev.body[0] == 1
        elif ev.mtype == pucklink.MSG_IDENTIFY and len(ev.body) >= 4:
            (duration_ms,) = struct.unpack(">I", ev.body[:4])
            self.leds.identify(duration_ms, now)
        elif ev.mtype == pucklink.MSG_PRESENCE_WANTED and len(ev.body) >= 4:
            (timeout_ms,) = struct.unpack(">I", ev.body[:4])
            self.leds.want_presence(timeout_ms, now)
        elif ev.mtype == pucklink.MSG_MAINTENANCE:
            self.board.write_link(self.link.poll(now))  # the ack, so the agent stops resending
            self.board.enter_maintenance()


def run(board, config=None):
    app = PuckApp(board, board.nonce(), **(config or {}))
    while True:
        app.step()
        board.wait_ms(5)
