# The RP2040 (Raspberry Pi Pico) board: button pin with IRQ, WS2812 ring, USB CDC link,
# watchdog. The only firmware module that touches hardware; pinout in hardware/puck.md.

import os
import select
import sys
import time

import machine
import micropython
import neopixel

BUTTON_PIN = 15  # GP15 (pin 20): button to GND, internal pull-up, active low
LED_PIN = 16  # GP16 (pin 21): WS2812 ring DIN (through 330 ohm)
RING_SIZE = 12
WATCHDOG_MS = 4000  # the RP2040 caps this at 8388 ms
MAINTENANCE_FLAG = "/maintenance"  # written before a reset that should stop at the REPL
MAX_READ = 64


class Board:
    def __init__(self, button_pin=BUTTON_PIN, led_pin=LED_PIN, ring_size=RING_SIZE):
        self.ring_size = ring_size
        self._button = machine.Pin(button_pin, machine.Pin.IN, machine.Pin.PULL_UP)
        self._edges = []  # ticks_ms of raw edges, filled by the IRQ
        self._ring = neopixel.NeoPixel(machine.Pin(led_pin), ring_size)
        self._last_pixels = None
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._stdin = sys.stdin.buffer
        self._stdout = sys.stdout.buffer
        self._wdt = None

    def maintenance_requested(self):
        """True (once) after a MAINTENANCE message, or if the button is held at power-up."""
        try:
            os.stat(MAINTENANCE_FLAG)
            os.remove(MAINTENANCE_FLAG)
            return True
        except OSError:
            pass
        return self._button.value() == 0

    def start(self, watchdog_ms=WATCHDOG_MS):
        # Frames may carry 0x03; it must not raise KeyboardInterrupt. (Flashing goes through
        # a MAINTENANCE message or a held button at power-up instead of Ctrl-C.)
        micropython.kbd_intr(-1)
        self._button.irq(self._on_edge, machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)
        self._wdt = machine.WDT(timeout=watchdog_ms)

    def _on_edge(self, pin):
        if len(self._edges) < 16:  # a bouncing contact only needs its first edges
            self._edges.append(time.ticks_ms())

    def take_edges(self):
        irq_state = machine.disable_irq()
        edges = self._edges
        self._edges = []
        machine.enable_irq(irq_state)
        return edges

    def button_level(self):
        return self._button.value() == 0

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def read_link(self):
        buf = bytearray()
        while len(buf) < MAX_READ and self._poll.poll(0):
            b = self._stdin.read(1)
            if not b:
                break
            buf.extend(b)
        return bytes(buf)

    def write_link(self, data):
        if data:
            self._stdout.write(data)  # dropped by the USB stack when no host is attached

    def wait_ms(self, ms):
        self._poll.poll(ms)

    def show(self, state, pixels, changed):
        if pixels == self._last_pixels:
            return
        self._last_pixels = pixels
        for i in range(self.ring_size):
            self._ring[i] = pixels[i]
        self._ring.write()

    def feed_watchdog(self):
        if self._wdt is not None:
            self._wdt.feed()

    def event(self, kind, value):
        pass  # stdout is the link; there is nowhere else to log on the device

    def nonce(self):
        return int.from_bytes(os.urandom(4), "big")

    def enter_maintenance(self):
        with open(MAINTENANCE_FLAG, "w") as f:
            f.write("1")
        machine.reset()
