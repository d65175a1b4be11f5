"""How deep the enhancement goes: the long-term SNR of one frequency band, and the depth
(0..1) it maps to.

The noise floor is the minimum of the band's lightly smoothed power over the last
`floor_window_s` (sub-window minimum tracking): true pauses between turns reach it,
harmonic valleys and reverberant tails inside a turn do not. The window is long (6 s)
because a floor that rises during a long stretch of continuous speech reads a clean
room as a noisy one, and every stage that then acts distorts the talker. For the same
reason, once the floor has seen a whole window it may rise only `floor_rise_db_per_s`
(it falls at once): talk that goes on past the window without a pause (two or three
people overlapping in a live room) would otherwise become the floor the moment the last
pause leaves the window. A room whose noise really rises is followed at that rate.
Speech is the mean excess over the floor in frames more than 6 dB above it, over ~2 s.
Frames of digital silence are skipped. The depth is 1 at or below `noisy_snr_db`, 0 at
or above `clean_snr_db`, linear in dB between.
"""

from __future__ import annotations

import math


class BandSnr:
    """One band's long-term SNR and the enhancement depth it implies, one frame at a time."""

    def __init__(
        self,
        *,
        hop_s: float,
        floor_window_s: float = 6.0,
        clean_snr_db: float = 20.0,
        noisy_snr_db: float = 5.0,
        start_depth: float = 0.0,
        settle_s: float = 6.0,
        silence_power: float = 0.0,
        floor_rise_db_per_s: float | None = None,
    ) -> None:
        self._heard = False
        #: once the floor has seen a whole window, it may rise only this fast (it falls at
        #: once): a talker who has not paused for a window's length must not become the
        #: floor (docs/dsp.md, "How fast the floor may rise")
        self._rise = (
            None if floor_rise_db_per_s is None else 10 ** (floor_rise_db_per_s * hop_s / 10)
        )
        self._floor = math.inf
        self._silence = silence_power
        self._onset_frames = round(0.128 / hop_s)
        self._seen = 0
        self._settle_frames = settle_s / hop_s
        self._subwindow = max(1, round(0.5 / hop_s))
        self._minima = [math.inf] * max(1, round(floor_window_s / 0.5))  # sub-windows of 0.5 s
        self._lowest = math.inf  # min(self._minima): they change once a sub-window
        self._current_min = math.inf
        self._smoothed = 0.0
        self._frames = 0
        self._decay = float(math.exp(-hop_s / 2.0))
        self._speech = 0.0
        self._speech_weight = 0.0
        self._clean, self._noisy = clean_snr_db, noisy_snr_db
        self.snr_db = math.nan
        #: until speech has risen above a floor once, the depth is `start_depth`
        self.depth = start_depth

    def update(self, band_power: float) -> float:
        """Feed one frame's band power; return the depth."""
        p = band_power
        self._seen += 1
        if p <= self._silence or self._seen <= self._onset_frames:
            # digital silence (a muted codec) and the first ~0.1 s (a capture starting,
            # filters and the room's field building up) say nothing about the room's
            # noise, and one such frame would hold the floor down for the whole window
            return self.depth
        self._smoothed = 0.6 * self._smoothed + 0.4 * p if self._frames else p
        self._frames += 1
        self._current_min = min(self._current_min, self._smoothed)
        if self._frames % self._subwindow == 0:
            self._minima = [self._current_min, *self._minima[:-1]]
            self._lowest = min(self._minima)
            self._current_min = self._smoothed
        noise = max(min(self._current_min, self._lowest), 1e-20)
        if self._rise is not None and self._minima[-1] < math.inf:
            noise = min(noise, self._floor * self._rise)
        self._floor = noise
        self._heard = self._heard or p > 4.0 * noise
        if p > 4.0 * noise:
            d = self._decay
            self._speech = d * self._speech + (1 - d) * (p - noise)
            self._speech_weight = d * self._speech_weight + (1 - d)
        if not self._heard:
            if self._frames > 3 * self._subwindow:
                # nothing rose 6 dB above the floor for 1.5 s: whatever talks is buried in noise
                self.depth = 1.0
            return self.depth
        self.snr_db = 10 * math.log10(max(self._speech / self._speech_weight, 1e-20) / noise)
        span = self._clean - self._noisy
        self.depth = min(1.0, max(0.0, (self._clean - self.snr_db) / span))
        if self._frames < self._settle_frames:
            # before a pause can have been seen the floor may be speech: trust it gradually
            self.depth *= self._frames / self._settle_frames
        return self.depth


class MaskSnr:
    """The room's SNR read from the trained mask: the talkers' and the noise's power in
    one band as the mask splits it (m^2 |Y|^2 and (1 - m)^2 |Y|^2), each an exponential
    average over `time_constant_s`, and the depth it implies (as BandSnr's).
    Unlike a noise floor it is not fooled by noise that comes and goes (an alarm, the
    hallway), which a floor reads as speech in a clean room."""

    def __init__(
        self,
        *,
        hop_s: float,
        time_constant_s: float = 3.0,
        clean_snr_db: float = 20.0,
        noisy_snr_db: float = 10.0,
        settle_s: float = 1.0,
    ) -> None:
        self._a = float(math.exp(-hop_s / time_constant_s))
        self._speech = 0.0
        self._noise = 0.0
        self._speech_w = 0.0
        self._noise_w = 0.0
        self._clean, self._noisy = clean_snr_db, noisy_snr_db
        self._settle_frames = settle_s / hop_s
        self._frames = 0
        self.snr_db = math.nan
        self.depth = 0.0

    @property
    def frames(self) -> int:
        """Frames seen so far."""
        return self._frames

    def update(
        self,
        speech_power: float,
        noise_power: float,
        speech_weight: float = 1.0,
        noise_weight: float = 1.0,
    ) -> float:
        """Feed one frame's talker and noise power (and, for hard decisions, how many bins
        each was summed over); return the depth."""
        a = self._a
        self._speech = a * self._speech + (1 - a) * speech_power
        self._noise = a * self._noise + (1 - a) * noise_power
        self._speech_w = a * self._speech_w + (1 - a) * speech_weight
        self._noise_w = a * self._noise_w + (1 - a) * noise_weight
        self._frames += 1
        if self._speech <= 0.0 and self._noise <= 0.0:
            return self.depth  # digital silence: nothing to say about the room
        speech = self._speech / max(self._speech_w, 1e-30)
        noise = self._noise / max(self._noise_w, 1e-30)
        self.snr_db = 10 * math.log10(max(speech, 1e-30) / max(noise, 1e-30))
        span = self._clean - self._noisy
        self.depth = min(1.0, max(0.0, (self._clean - self.snr_db) / span))
        if self._frames < self._settle_frames:
            self.depth *= self._frames / self._settle_frames
        return self.depth
