# A simulated board for the MicroPython unix port (scripts/puck-sim): the link is the
# process's stdin/stdout (a pty), the button is driven by lines on a control fd
# ("down"/"up"), and LED state changes are reported as JSON lines on stderr.

import json
import os
import select
import sys
import time

RING_SIZE = 12
MAX_READ = 64


class Board:
    def __init__(self, ring_size=RING_SIZE):
        self.ring_size = ring_size
        self._level = False
        self._edges = []
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._stdin = sys.stdin.buffer
        self._stdout = sys.stdout.buffer
        self._ctrl = None
        ctrl_fd = os.getenv("PUCK_SIM_CTRL_FD")
        if ctrl_fd:
            self._ctrl = open("/dev/fd/" + ctrl_fd, "rb")  # noqa: SIM115 - lives as long as the board
            self._ctrl_poll = select.poll()
            self._ctrl_poll.register(self._ctrl, select.POLLIN)
            self._poll.register(self._ctrl, select.POLLIN)
        self._last_pixels = None
        self.watchdog_feeds = 0

    def maintenance_requested(self):
        return False

    def start(self, watchdog_ms=0):
        self.event("boot", "ok")

    def _read_ctrl(self):
        while self._ctrl is not None:
            ready = self._ctrl_poll.poll(0)
            if not ready:
                return
            if not ready[0][1] & select.POLLIN:
                sys.exit(0)  # the simulator went away: power off
            line = self._ctrl.readline()
            if not line:
                sys.exit(0)
            cmd = line.strip()
            if cmd == b"down" or cmd == b"up":
                level = cmd == b"down"
                if level != self._level:
                    self._level = level
                    self._edges.append(time.ticks_ms())  # what the pin IRQ would record
            elif cmd == b"quit":
                sys.exit(0)

    def take_edges(self):
        self._read_ctrl()
        edges = self._edges
        self._edges = []
        return edges

    def button_level(self):
        return self._level

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def read_link(self):
        buf = bytearray()
        while len(buf) < MAX_READ:
            ready = False
            for obj, ev in self._poll.poll(0):
                if obj is sys.stdin or obj is self._stdin:
                    ready = ev & select.POLLIN
            if not ready:
                break
            b = self._stdin.read(1)
            if not b:
                break
            buf.extend(b)
        return bytes(buf)

    def write_link(self, data):
        if data:
            self._stdout.write(data)

    def wait_ms(self, ms):
        self._poll.poll(ms)

    def show(self, state, pixels, changed):
        if changed:
            self.event("led", state)
        self._last_pixels = pixels

    def feed_watchdog(self):
        self.watchdog_feeds += 1

    def event(self, kind, value):
        sys.stderr.write(json.dumps({kind: value, "t": time.ticks_ms()}) + "\n")

    def nonce(self):
        return int.from_bytes(os.urandom(4), "big")

    def enter_maintenance(self):
        self.event("maintenance", True)
        sys.exit(0)
