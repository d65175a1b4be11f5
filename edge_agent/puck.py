"""The cue puck, agent side: a background thread that keeps the USB serial link to the
puck up (unplug, replug, garbage, silence) and turns its messages into callbacks.

The protocol itself lives in scribelink/pucklink.py, the one file both sides run.

Concurrency: one "puck" thread owns the serial port and the link; the callbacks run on
it (keep them short, hand work to the agent). `show` and the other calls from the
agent's threads only change state under `_lock` and wake the puck thread.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from scribelink import pucklink
from scribelink.logfmt import q

log = logging.getLogger("scribelink.puck")

DEFAULT_PORT = "/dev/scribelink-puck"  # udev symlink, hardware/udev
BAUDRATE = 115200  # ignored by USB CDC, required by termios
SESSION_STATES = pucklink.AGENT_STATES
REOPEN_INTERVAL_S = 0.5
READ_TIMEOUT_S = 0.02
# A puck that is silent this long on an open port gets the port closed and reopened: a
# wedged CDC device node is often only cleared that way.
SILENT_REOPEN_S = 6.0


class Puck:
    """The cue puck on a serial port.

    Callbacks run on the puck thread; keep them short. on_cue gets a cue id that is the
    same for every retransmission of one press (dedupe on it and send it back with
    cue_seen()).
    """

    def __init__(
        self,
        port: str | None,
        on_cue: Callable[[int], None],
        on_privacy_toggle: Callable[[], None],
        on_presence_hold: Callable[[], None] | None = None,
        on_connection: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_consent: Callable[[], None] | None = None,
    ) -> None:
        self.port = port or DEFAULT_PORT
        self._on_cue = on_cue
        self._on_privacy_toggle = on_privacy_toggle
        self._on_presence_hold = on_presence_hold
        self._on_consent = on_consent
        self._consent_wanted = False  # said again to a puck that rebooted
        self._on_connection = on_connection
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._link = pucklink.Link(int.from_bytes(os.urandom(4), "big"))
        self._serial: Any = None  # serial.Serial while the port is open
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self._pongs: dict[int, float] = {}
        self._holds: list[tuple[float, int]] = []  # (received at, held_ms)
        self._seen_cues: list[int] = []  # last cue ids delivered, across puck reconnects

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="puck", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._close()
        self._set_connected(False)

    # -- API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The link works both ways: the port is open, the puck's heartbeats arrive, and
        they show that the puck hears us. False while unplugged or silent."""
        return self._connected

    @property
    def present(self) -> bool:
        """Same as connected; the word status reports use."""
        return self._connected

    def show(self, state: str) -> None:
        """The session state for the ring: idle, live, paused, offline_recording, fault."""
        if state not in SESSION_STATES:
            raise ValueError(f"unknown puck state {state!r}; use one of {SESSION_STATES}")
        with self._lock:
            self._link.set_state(SESSION_STATES.index(state), self._now_ms())

    def cue_seen(self, cue_id: int, reply: str = "seen") -> None:
        """A scribe replied to this cue (seen, got_it, repeat, see_me): the puck shows the
        reply's own pattern."""
        if reply not in pucklink.REPLIES:
            raise ValueError(f"unknown reply {reply!r}; use one of {pucklink.REPLIES}")
        nonce, cue_no = pucklink.split_cue_id(cue_id)
        with self._lock:
            body = struct.pack(">IHB", nonce, cue_no, pucklink.REPLIES.index(reply))
            if not self._link.send_reliable(pucklink.MSG_CUE_SEEN, body, self._now_ms()):
                log.warning("event=puck_queue_full dropped=cue_seen")

    def cue_not_sent(self, cue_id: int) -> None:
        """That press reached no scribe (it started the next visit): the puck stops showing
        it as a cue sent, and shows no reply."""
        nonce, cue_no = pucklink.split_cue_id(cue_id)
        with self._lock:
            body = struct.pack(">IHB", nonce, cue_no, pucklink.CUE_NOT_SENT)
            if not self._link.send_reliable(pucklink.MSG_CUE_SEEN, body, self._now_ms()):
                log.warning("event=puck_queue_full dropped=cue_not_sent")

    def want_consent(self, wanted: bool) -> None:
        """The session waits for consent (the ring asks for it; a double press gives it),
        or no longer does."""
        self._consent_wanted = wanted
        self._send(pucklink.MSG_CONSENT_WANTED, bytes([1 if wanted else 0]))

    def identify(self, seconds: float) -> None:
        """Blink the ring's identify pattern for `seconds` (0 stops it)."""
        self._send(pucklink.MSG_IDENTIFY, struct.pack(">I", int(max(0.0, seconds) * 1000)))

    def want_presence(self, timeout_s: float) -> None:
        """Ask for a presence hold: the ring shows it wants one, fills while the button is
        held and says "release" once the hold is long enough (0 ends the request)."""
        self._send(pucklink.MSG_PRESENCE_WANTED,
                   struct.pack(">I", int(max(0.0, timeout_s) * 1000)))

    def flush(self, timeout_s: float) -> bool:
        """True once the puck has acknowledged everything sent so far."""
        deadline = self._clock() + timeout_s
        with self._changed:
            while self._link.pending():
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
            return True

    def _send(self, mtype: int, body: bytes) -> None:
        with self._lock:
            if not self._link.send_reliable(mtype, body, self._now_ms()):
                log.warning("event=puck_queue_full dropped=%s", pucklink.MSG_NAMES[mtype])

    def ping(self, timeout_s: float = 1.0) -> float | None:
        """Round trip to the puck firmware in seconds, or None if it does not answer."""
        token = int.from_bytes(os.urandom(4), "big")
        start = self._clock()
        deadline = start + timeout_s
        with self._changed:
            self._link.ping(token)
            while token not in self._pongs:
                left = deadline - self._clock()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.05))
            return self._pongs.pop(token) - start

    def wait_for_hold(self, seconds: float, timeout_s: float) -> bool:
        """True if the physical button is held for at least `seconds` before timeout_s.

        The puck reports holds from its presence threshold (5 s by default) on, so a
        shorter `seconds` is effectively that threshold.
        """
        start = self._clock()
        deadline = start + timeout_s
        need_ms = int(seconds * 1000)
        with self._changed:
            while True:
                if any(at >= start and ms >= need_ms for at, ms in self._holds):
                    return True
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))

    def puck_state(self) -> str | None:
        """What the ring shows right now, as the puck last reported it."""
        code = self._link.peer_state
        if code is None or not self._connected or code >= len(pucklink.STATE_NAMES):
            return None
        return pucklink.STATE_NAMES[code]

    # -- the puck thread -----------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _run(self) -> None:
        next_open = 0.0
        silent_since: float | None = None
        while not self._stop.is_set():
            if self._serial is None:
                if self._clock() < next_open:
                    self._stop.wait(0.05)
                    self._tick_without_port()
                    continue
                next_open = self._clock() + REOPEN_INTERVAL_S
                if not self._open():
                    self._tick_without_port()
                    continue
                silent_since = self._clock()
            try:
                data = self._serial.read(self._serial.in_waiting or 1)
                out, events = self._exchange(data)
                if out:
                    self._serial.write(out)
            except (OSError, ValueError, TypeError) as exc:
                # SerialException is an OSError. TypeError/ValueError: pyserial on a port
                # closed under it.
                log.info("event=puck_port_lost port=%s error=%s", self.port, type(exc).__name__)
                self._close()
                self._set_connected(False)
                continue
            self._dispatch(events)
            if data:
                silent_since = None
            elif silent_since is None:
                silent_since = self._clock()
            elif self._clock() - silent_since > SILENT_REOPEN_S:
                log.info("event=puck_silent port=%s action=reopen", self.port)
                self._close()
                silent_since = None
            self._set_connected(self._link.connected(self._now_ms()))

    def _exchange(self, data: bytes) -> tuple[bytes, list]:
        with self._changed:
            now = self._now_ms()
            events = self._link.receive(data, now) if data else []
            out = self._link.poll(now)
            for ev in events:
                if ev.kind == pucklink.EV_MESSAGE and ev.mtype == pucklink.MSG_PONG:
                    (token,) = struct.unpack(">I", ev.body[:4])
                    self._pongs[token] = self._clock()
                elif ev.kind == pucklink.EV_MESSAGE and ev.mtype in (
                    pucklink.MSG_PRESENCE_HOLD,
                    pucklink.MSG_HOLD_RELEASED,
                ):
                    (held_ms,) = struct.unpack(">I", ev.body[:4])
                    self._holds.append((self._clock(), held_ms))
                    del self._holds[:-8]
            if events:
                self._changed.notify_all()
            return out, events

    def _dispatch(self, events: list) -> None:
        for ev in events:
            if ev.kind == pucklink.EV_PEER_RESET:
                log.info("event=puck_boot nonce=%08x", self._link.peer_nonce)
                if self._consent_wanted:  # a puck that rebooted forgot the request
                    self._send(pucklink.MSG_CONSENT_WANTED, bytes([1]))
                continue
            if ev.kind != pucklink.EV_MESSAGE:
                continue
            try:
                if ev.mtype == pucklink.MSG_CUE:
                    (cue_no,) = struct.unpack(">H", ev.body[:2])
                    cid = pucklink.cue_id(self._link.peer_nonce, cue_no)
                    if cid in self._seen_cues:
                        continue
                    self._seen_cues.append(cid)
                    del self._seen_cues[:-64]
                    log.info("event=puck_cue cue_id=%d", cid)
                    self._on_cue(cid)
                elif ev.mtype == pucklink.MSG_PRIVACY_TOGGLE:
                    log.info("event=puck_privacy_toggle")
                    self._on_privacy_toggle()
                elif ev.mtype == pucklink.MSG_PRESENCE_HOLD:
                    log.info("event=puck_presence_hold")
                    if self._on_presence_hold is not None:
                        self._on_presence_hold()
                elif ev.mtype == pucklink.MSG_CONSENT and ev.body[:1] == bytes(
                        [pucklink.CONSENT_GIVEN]):
                    log.info("event=puck_consent")
                    if self._on_consent is not None:
                        self._on_consent()
            except Exception:
                log.exception(
                    "event=puck_callback_failed type=%s", pucklink.MSG_NAMES.get(ev.mtype)
                )

    def _tick_without_port(self) -> None:
        with self._lock:
            self._link.poll(self._now_ms())  # keep timers moving; nothing to write to
        self._set_connected(False)

    def _open(self) -> bool:
        import serial  # pyserial: the `unit` extra

        try:
            ser = serial.Serial()
            ser.port = self.port
            ser.baudrate = BAUDRATE
            ser.timeout = READ_TIMEOUT_S
            ser.write_timeout = 0.5
            ser.exclusive = True
            ser.open()
        except (OSError, ValueError) as exc:
            log.debug("event=puck_open_failed port=%s error=%s", self.port, q(exc))
            return False
        log.info("event=puck_port_open port=%s", self.port)
        self._serial = ser
        return True

    def _close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except OSError:
                pass

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        log.info("event=puck_connection connected=%s port=%s", connected, self.port)
        if self._on_connection is not None:
            try:
                self._on_connection(connected)
            except Exception:
                log.exception("event=puck_callback_failed type=connection")
