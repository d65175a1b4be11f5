# Button debouncing and press classification: short press = cue, hold = privacy toggle,
# long hold = presence hold. Pure; times are non-wrapping milliseconds passed in.

DEBOUNCE_MS = 30
HOLD_MS = 1500
PRESENCE_MS = 5000

PRESS_CUE = "cue"
PRESS_PRIVACY_TOGGLE = "privacy_toggle"
PRESS_PRESENCE_HOLD = "presence_hold"
PRESS_HOLD_RELEASED = "hold_released"


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
    """

    def __init__(self, hold_ms=HOLD_MS, presence_ms=PRESENCE_MS):
        self.hold_ms = hold_ms
        self.presence_ms = presence_ms
        self._down_ms = None
        self._presence_sent = False

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
        if self._presence_sent:
            events.append((PRESS_HOLD_RELEASED, held))
        elif held >= self.hold_ms:
            events.append((PRESS_PRIVACY_TOGGLE, held))
        else:
            events.append((PRESS_CUE, held))
        self._presence_sent = False
        return events

    def tick(self, now_ms):
        if self._down_ms is None or self._presence_sent:
            return []
        held = now_ms - self._down_ms
        if held >= self.presence_ms:
            self._presence_sent = True
            return [(PRESS_PRESENCE_HOLD, held)]
        return []
