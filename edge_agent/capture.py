"""ALSA capture through pyalsaaudio: interleaved S16_LE periods as (frames, channels) arrays.

`pace_realtime` is for PCMs that are not clocked by hardware, such as the `file`
plugin on a `null` slave used by the demo and the tests: reads are then spaced to
the sample clock (scaled by `speed`), as a real card's would be.

Every failure is a `CaptureError` with the device's name and the reason (an unplugged
USB array, a driver that lost the card, a storm of overruns): the agent keeps running,
shows the fault and reopens the device with a backoff.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

# More overruns than this within a second is not a slow reader but a broken stream:
# the device is closed and reopened.
XRUN_STORM = 10


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
        self._pcm: Any = None  # an alsaaudio.PCM once open (alsaaudio has no types)
        self._t0 = 0.0
        self._frames = 0
        self.overruns = 0
        self._recent_overruns: deque[float] = deque()
        self._pending: np.ndarray | None = None  # the part of a block past a resume skip

    def open(self, skip_frames: int = 0) -> None:
        """Open the device. `skip_frames` (file-backed input only): read past that many
        frames first, unpaced -- what a restarted demo unit already sealed."""
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
        info = self._pcm.info()
        got_rate = info.get("rate", self.sample_rate)
        got_ch = info.get("channels", self.channels)
        if got_rate != self.sample_rate or got_ch != self.channels:
            raise CaptureError(
                f"{self.device!r} gave {got_ch} ch at {got_rate} Hz, "
                f"configured {self.channels} ch at {self.sample_rate} Hz"
            )
        self._t0 = time.monotonic()
        self._frames = 0
        self._pending = None
        while skip_frames > 0:
            block = self.read_unpaced()
            if not len(block):
                continue
            if len(block) > skip_frames:
                self._pending = block[skip_frames:]
            skip_frames -= len(block)

    def read(self) -> np.ndarray:
        """One period (or what the device returned) as (frames, channels) int16."""
        if self._pending is not None:
            block, self._pending = self._pending, None
            return block
        if self._pcm is None:
            self.open()
        assert self._pcm is not None
        import alsaaudio

        try:
            n, data = self._pcm.read()
        except alsaaudio.ALSAAudioError as e:
            raise CaptureError(f"reading {self.device!r} failed: {e}") from e
        if n < 0:  # -EPIPE: overrun; alsaaudio has already re-prepared the PCM
            self.overruns += 1
            now = time.monotonic()
            self._recent_overruns.append(now)
            while self._recent_overruns and now - self._recent_overruns[0] > 1.0:
                self._recent_overruns.popleft()
            if len(self._recent_overruns) > XRUN_STORM:
                raise CaptureError(f"{self.device!r}: {len(self._recent_overruns)} overruns "
                                   "in a second (the stream is broken)")
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
            try:
                self._pcm.close()
            except Exception:  # noqa: BLE001 - a vanished device may refuse even this
                pass
            self._pcm = None
