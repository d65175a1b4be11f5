# Button debouncing and press classification: short press = cue, hold = privacy toggle,
# long hold = presence hold; while the agent waits for consent, a double press = consent.
# Pure; times are non-wrapping milliseconds passed in.

DEBOUNCE_MS = 30
HOLD_MS = 1500
PRESENCE_MS = 5000
DOUBLE_MS = 400  # the second press of a double press starts within this of the first's end

PRESS_CUE = "cue"
PRESS_PRIVACY_TOGGLE = "privacy_toggle"
PRESS_PRESENCE_HOLD = "presence_hold"
PRESS_HOLD_RELEASED = "hold_released"
PRESS_DOUBLE = "double"


class Debouncer:
    """Turns raw, bouncing edges into clean press/release transitions.

    edge(t) is called for every raw edge (from the pin IRQ); poll(now, level) from the
    main loop with the pin's current level. A new level is accepted once it has been
    stable for debounce_ms; the transition is dated at the first edge of the burst, so
    hold durations are not stretched by the bounce.
    """

    def __init__(self, debounce_ms=DEBOUNCE_MS, level=False):
        self.debounce_ms = debounce_ms
        self.level = level
        self._last_edge_ms = None
        self._burst_start_ms = None

    def edge(self, t_ms):
        if self._burst_start_ms is None:
            self._burst_start_ms = t_ms
        self._last_edge_ms = t_ms

    def poll(self, now_ms, raw_level):
        """Return (level, at_ms) on an accepted transition, else None."""
        if self._last_edge_ms is None:
            if raw_level == self.level:
                return None
            # An edge the IRQ missed: date it now and let it settle.
            self.edge(now_ms)
            return None
        if now_ms - self._last_edge_ms < self.debounce_ms:
            return None
        at_ms = self._burst_start_ms
        self._last_edge_ms = None
        self._burst_start_ms = None
        if raw_level == self.level:
            return None  # bounce that came back to where it was
        self.level = raw_level
        return (raw_level, at_ms)


class PressClassifier:
    """Classifies clean press/release transitions.

    Release before hold_ms: a cue. Release between hold_ms and presence_ms: a privacy
    toggle (decided on release, so a long hold for presence never also toggles). Holding
    to presence_ms reports a presence hold at once; its release reports the full length.

    While `want_double` is set (the agent waits for consent), a short press is held back
    for double_ms: a second short press within it makes a double press (consent), none
    makes it the cue it was. Otherwise a cue is reported at once, as always.
    """

    def __init__(self, hold_ms=HOLD_MS, presence_ms=PRESENCE_MS, double_ms=DOUBLE_MS):
        self.hold_ms = hold_ms
        self.presence_ms = presence_ms
        self.double_ms = double_ms
        self.want_double = False
        self._down_ms = None
        self._presence_sent = False
        self._first_up_ms = None  # a short press waiting to see if a second one follows
        self._first_held_ms = 0

    def pressed(self):
        return self._down_ms is not None

    def held_ms(self, now_ms):
        if self._down_ms is None:
            return 0
        return now_ms - self._down_ms

    def armed(self, now_ms):
        """True while held long enough that releasing would not be a cue."""
        return self._down_ms is not None and now_ms - self._down_ms >= self.hold_ms

    def down(self, t_ms):
        self._down_ms = t_ms
        self._presence_sent = False
        return []

    def up(self, t_ms):
        if self._down_ms is None:
            return []
        held = t_ms - self._down_ms
        events = self.tick(t_ms)
        self._down_ms = None
        short = not self._presence_sent and held < self.hold_ms
        if self._first_up_ms is not None:
            first, self._first_up_ms = self._first_held_ms, None
            if short:
                events.append((PRESS_DOUBLE, held))
                self._presence_sent = False
                return events
            events.append((PRESS_CUE, first))  # a press, then a hold: the press was a cue
        if self._presence_sent:
            events.append((PRESS_HOLD_RELEASED, held))
        elif held >= self.hold_ms:
            events.append((PRESS_PRIVACY_TOGGLE, held))
        elif self.want_double:
            self._first_up_ms, self._first_held_ms = t_ms, held  # decided by the next press
        else:
            events.append((PRESS_CUE, held))
        self._presence_sent = False
        return events

    def tick(self, now_ms):
        events = []
        if self._first_up_ms is not None and self._down_ms is None and (
                not self.want_double or now_ms - self._first_up_ms > self.double_ms):
            events.append((PRESS_CUE, self._first_held_ms))  # no second press came
            self._first_up_ms = None
        if self._down_ms is None or self._presence_sent:
            return events
        held = now_ms - self._down_ms
        if held >= self.presence_ms:
            self._presence_sent = True
            events.append((PRESS_PRESENCE_HOLD, held))
        return events
