"""ALSA capture through pyalsaaudio: interleaved S16_LE periods as (frames, channels) arrays.

`pace_realtime` is for PCMs that are not clocked by hardware, such as the `file`
plugin on a `null` slave used by the demo and the tests: reads are then spaced to
the sample clock (scaled by `speed`), as a real card's would be.
"""

from __future__ import annotations

import time

import numpy as np


class CaptureError(RuntimeError):
    pass


class AlsaCapture:
    def __init__(
        self,
        device: str,
        *,
        sample_rate: int,
        channels: int,
        period_frames: int,
        pace_realtime: bool = False,
        speed: float = 1.0,
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.period_frames = period_frames
        self.pace_realtime = pace_realtime
        self.speed = speed
        self._pcm = None
        self._t0 = 0.0
        self._frames = 0
        self.overruns = 0

    def open(self) -> None:
        import alsaaudio  # the unit extra; imported here so tools without ALSA still load

        try:
            self._pcm = alsaaudio.PCM(
                alsaaudio.PCM_CAPTURE,
                alsaaudio.PCM_NORMAL,
                device=self.device,
                channels=self.channels,
                rate=self.sample_rate,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self.period_frames,
            )
        except alsaaudio.ALSAAudioError as e:
            raise CaptureError(
                f"cannot open ALSA capture device {self.device!r} "
                f"({self.channels} ch, {self.sample_rate} Hz): {e}. "
                "Check `arecord -L` and the unit's asound.conf."
            ) from e
        got_rate = self._pcm.info().get("rate", self.sample_rate)
        got_ch = self._pcm.info().get("channels", self.channels)
        if got_rate != self.sample_rate or got_ch != self.channels:
            raise CaptureError(
                f"{self.device!r} gave {got_ch} ch at {got_rate} Hz, "
                f"configured {self.channels} ch at {self.sample_rate} Hz"
            )
        self._t0 = time.monotonic()
        self._frames = 0

    def read(self) -> np.ndarray:
        """One period (or what the device returned) as (frames, channels) int16."""
        if self._pcm is None:
            self.open()
        assert self._pcm is not None
        n, data = self._pcm.read()
        if n < 0:  # -EPIPE: overrun; alsaaudio has already re-prepared the PCM
            self.overruns += 1
            return np.zeros((0, self.channels), dtype=np.int16)
        block = np.frombuffer(data, dtype="<i2")[: n * self.channels].reshape(n, self.channels)
        self._frames += n
        if self.pace_realtime:
            due = self._t0 + self._frames / (self.sample_rate * self.speed)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return block

    def read_unpaced(self) -> np.ndarray:
        """Read without pacing (skipping already-sealed input of a file-backed PCM)."""
        pace, self.pace_realtime = self.pace_realtime, False
        try:
            return self.read()
        finally:
            self.pace_realtime = pace
            self._t0 = time.monotonic()
            self._frames = 0

    def close(self) -> None:
        if self._pcm is not None:
            self._pcm.close()
            self._pcm = None
