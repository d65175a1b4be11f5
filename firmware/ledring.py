# What the LED ring shows: which state wins (LedScheduler) and how each state looks
# (render). Every state differs in colour AND motion, so it reads without colour vision.
# Pure; times are non-wrapping milliseconds passed in. Patterns: hardware/puck.md.

RING_SIZE = 12
CUE_SEEN_MS = 3000  # how long "seen" shows before the ring returns to the session state
# how long each reply shows: "please repeat" and "see me after" ask for something, so longer
REPLY_MS = {"cue_seen": 3000, "cue_got_it": 3000, "cue_repeat": 6000, "cue_see_me": 6000}
CUE_SENT_MAX_MS = 60000  # a cue nobody marks seen stops showing after this
PRESENCE_FILL_MS = 5000  # the presence hold the ring fills up over (press.PRESENCE_MS)
# the longest an agent's identify or presence request shows, whatever it asked for
IDENTIFY_MAX_MS = 60000
PRESENCE_WANTED_MAX_MS = 90000

OFF = (0, 0, 0)
WHITE_DIM = (24, 24, 24)
YELLOW = (90, 70, 0)
GREEN = (0, 90, 0)
BLUE = (0, 0, 110)
ORANGE = (110, 35, 0)
CYAN = (0, 80, 80)
MAGENTA = (100, 0, 100)
RED = (130, 0, 0)
ICE = (40, 40, 120)
WHITE = (60, 60, 60)
LIME = (60, 120, 0)
TEAL = (0, 110, 30)  # "got it"
PINK = (120, 30, 60)  # "please repeat"
VIOLET = (60, 0, 120)  # "see me after the visit"
AMBER = (120, 90, 30)  # waiting for consent
# identify: six hues around the ring, so a tech can pick this unit out of a corridor
RAINBOW = (RED, YELLOW, GREEN, CYAN, BLUE, MAGENTA)


def _scale(rgb, num, den):
    return (rgb[0] * num // den, rgb[1] * num // den, rgb[2] * num // den)


def render(state, t_ms, n=RING_SIZE, fill_ms=PRESENCE_FILL_MS):
    """Pixels for a state, t_ms after the state began (fill_ms: the presence hold)."""
    if state == "idle":  # dim white, four steady dots
        return [WHITE_DIM if i % 3 == 0 else OFF for i in range(n)]
    if state == "connecting":  # yellow, one dot spinning (1 turn/s) with a short tail
        head = (t_ms * n // 1000) % n
        return [
            YELLOW if i == head else (_scale(YELLOW, 1, 4) if i == (head - 1) % n else OFF)
            for i in range(n)
        ]
    if state == "live":  # green, full ring, steady
        return [GREEN] * n
    if state == "paused":  # blue, full ring, slow breathing (3 s)
        phase = t_ms % 3000
        level = phase if phase < 1500 else 3000 - phase  # 0..1500
        return [_scale(BLUE, 150 + level * 850 // 1500, 1000)] * n
    if state == "offline_recording":  # orange ring with a dark gap turning (1 turn/4 s)
        gap = (t_ms * n // 4000) % n
        return [OFF if i == gap or i == (gap + 1) % n else ORANGE for i in range(n)]
    if state == "cue_sent":  # cyan, two opposite dots chasing fast (2 turns/s)
        head = (t_ms * n // 500) % n
        return [CYAN if i == head or i == (head + n // 2) % n else OFF for i in range(n)]
    if state == "cue_seen":  # magenta, full ring, two flashes then steady
        flashing = t_ms < 600 and (t_ms // 150) % 2 == 1
        return [OFF if flashing else MAGENTA] * n
    if state == "cue_got_it":  # teal ring filling clockwise in 0.6 s, then steady: done
        lit = min(n, 1 + t_ms * n // 600)
        return [TEAL if i < lit else OFF for i in range(n)]
    if state == "cue_repeat":  # pink halves swapping twice a second: say that again
        side = (t_ms // 250) % 2
        return [PINK if (i * 2 // n) == side else OFF for i in range(n)]
    if state == "cue_see_me":  # violet, four dots pulsing once a second: see me after
        phase = t_ms % 1000
        level = phase if phase < 500 else 1000 - phase  # 0..500
        return [_scale(VIOLET, 200 + level * 800 // 500, 1000) if i % 3 == 0 else OFF
                for i in range(n)]
    if state == "consent_wanted":  # amber, every other dot, stepping round (2 steps/s)
        shift = (t_ms // 500) % 2
        return [AMBER if (i + shift) % 2 == 0 else OFF for i in range(n)]
    if state == "hold_armed":  # pale blue ring filling up while the button is held
        lit = min(n, 1 + t_ms // 250)
        return [ICE if i < lit else OFF for i in range(n)]
    if state == "identify":  # six colours around the ring, turning (1 turn/s)
        shift = (t_ms * n // 1000) % n
        return [RAINBOW[((i + shift) % n) * len(RAINBOW) // n] for i in range(n)]
    if state == "presence_wanted":  # white and pale blue dots blinking (1 Hz): hold me
        if (t_ms // 500) % 2:
            return [OFF] * n
        return [(WHITE if i % 6 == 0 else ICE) if i % 3 == 0 else OFF for i in range(n)]
    if state == "presence_holding":  # lime ring filling up over the whole presence hold
        lit = min(n, 1 + t_ms * n // fill_ms)
        return [LIME if i < lit else OFF for i in range(n)]
    if state == "presence_release":  # full ring, green and white alternating (4 Hz): let go
        return [WHITE if (t_ms // 125) % 2 else GREEN] * n
    # fault (and anything unknown): red halves alternating fast (4 Hz)
    odd = (t_ms // 125) % 2
    return [RED if (i * 2 // n) % 2 == odd else OFF for i in range(n)]


class LedScheduler:
    """Chooses the one state the ring shows, so that it always tells the truth.

    Priority: connecting (no agent heartbeat) > identify > presence_release >
    presence_holding > presence_wanted > fault > hold_armed > a scribe's reply (cue_seen,
    cue_got_it, cue_repeat, cue_see_me) > cue_sent > consent_wanted > the session state the
    agent sent (idle, live, paused, offline_recording). Identify,
    presence_wanted and presence_holding show only while the agent asks for them (each
    request has a time limit); presence_release shows whenever the button has been held
    for a whole presence hold, since letting go then toggles nothing.
    """

    def __init__(self, cue_seen_ms=CUE_SEEN_MS, cue_sent_max_ms=CUE_SENT_MAX_MS,
                 presence_ms=PRESENCE_FILL_MS):
        self.cue_seen_ms = cue_seen_ms
        self.cue_sent_max_ms = cue_sent_max_ms
        self.presence_ms = presence_ms
        self.session_state = "idle"
        self.agent_present = False
        self.armed = False
        self.held_ms = 0  # how long the button has been down (0: up)
        self._identify_until_ms = None
        self._presence_until_ms = None
        self._cues_sent = {}  # cue_no -> ms when the agent acked it
        self._recently_seen = []  # a "seen" may overtake the ack of its own cue
        self._seen_until_ms = None
        self._seen_state = "cue_seen"  # which reply shows until _seen_until_ms
        self.consent_wanted = False  # the agent's session waits for consent
        self._shown = None
        self._shown_since_ms = 0

    def cue_sent(self, cue_no, now_ms):
        if cue_no not in self._recently_seen:
            self._cues_sent[cue_no] = now_ms

    def cue_seen(self, cue_no, now_ms, reply_state="cue_seen"):
        """The scribe replied (reply_state: cue_seen, cue_got_it, cue_repeat, cue_see_me).
        Returns True if this cue was one we were showing as sent."""
        known = cue_no in self._cues_sent
        if known:
            del self._cues_sent[cue_no]
        if cue_no not in self._recently_seen:
            self._recently_seen.append(cue_no)
            if len(self._recently_seen) > 8:
                self._recently_seen.pop(0)
        if reply_state not in REPLY_MS:
            reply_state = "cue_seen"
        self._seen_state = reply_state
        shows = self.cue_seen_ms if reply_state == "cue_seen" else REPLY_MS[reply_state]
        self._seen_until_ms = now_ms + shows
        return known

    def forget_cue(self, cue_no):
        """That press reached no scribe: stop showing it as sent (and show no reply)."""
        if cue_no in self._cues_sent:
            del self._cues_sent[cue_no]
        if cue_no not in self._recently_seen:  # (this may overtake the ack of the press)
            self._recently_seen.append(cue_no)
            if len(self._recently_seen) > 8:
                self._recently_seen.pop(0)

    def forget_cues(self):
        self._cues_sent = {}
        self._seen_until_ms = None

    def identify(self, duration_ms, now_ms):
        """Show the identify pattern for duration_ms (0 stops it)."""
        duration_ms = min(duration_ms, IDENTIFY_MAX_MS)
        self._identify_until_ms = now_ms + duration_ms if duration_ms > 0 else None

    def want_presence(self, timeout_ms, now_ms):
        """Ask for a presence hold for up to timeout_ms (0 ends the request)."""
        timeout_ms = min(timeout_ms, PRESENCE_WANTED_MAX_MS)
        self._presence_until_ms = now_ms + timeout_ms if timeout_ms > 0 else None

    def forget_requests(self):
        """A new agent: nothing it did not ask for keeps showing."""
        self._identify_until_ms = None
        self._presence_until_ms = None

    def state(self, now_ms):
        for cue_no in list(self._cues_sent):
            if now_ms - self._cues_sent[cue_no] >= self.cue_sent_max_ms:
                del self._cues_sent[cue_no]
        if self._seen_until_ms is not None and now_ms - self._seen_until_ms >= 0:
            self._seen_until_ms = None
        if self._identify_until_ms is not None and now_ms - self._identify_until_ms >= 0:
            self._identify_until_ms = None
        if self._presence_until_ms is not None and now_ms - self._presence_until_ms >= 0:
            self._presence_until_ms = None
        if not self.agent_present:
            return "connecting"
        if self._identify_until_ms is not None:
            return "identify"
        if self.held_ms >= self.presence_ms:
            return "presence_release"  # a presence hold is complete: releasing toggles nothing
        if self._presence_until_ms is not None:
            return "presence_holding" if self.held_ms > 0 else "presence_wanted"
        if self.session_state == "fault":
            return "fault"
        if self.armed:
            return "hold_armed"
        if self._seen_until_ms is not None:
            return self._seen_state
        if self._cues_sent:
            return "cue_sent"
        if self.consent_wanted:
            return "consent_wanted"
        return self.session_state

    def frame(self, now_ms, n=RING_SIZE):
        """(state, changed, pixels) for now."""
        state = self.state(now_ms)
        changed = state != self._shown
        if changed:
            self._shown = state
            self._shown_since_ms = now_ms
        return (state, changed, render(state, now_ms - self._shown_since_ms, n,
                                       self.presence_ms))
