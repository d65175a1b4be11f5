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
or above `clean_snr_db`, linear in dB between. With `wait_s`, it is 0 until the floor
has seen that much of the room (frames used, not silence): a floor that has not yet seen
a pause may be the talk itself.
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
        wait_s: float = 0.0,
    ) -> None:
        #: once the floor has seen a whole window, it may rise only this fast (it falls at
        #: once): a talker who has not paused for a window's length must not become the
        #: floor (docs/dsp.md, "How fast the floor may rise")
        rise = None if floor_rise_db_per_s is None else 10 ** (floor_rise_db_per_s * hop_s / 10)
        #: what does not change: (the rise per frame, digital silence's band power, frames
        #: ignored at the start, frames per sub-window, the speech average's decay per frame,
        #: the clean SNR, the dB from clean to noisy, frames to settle, frames to wait)
        self._constants = (
            rise,
            silence_power,
            round(0.128 / hop_s),
            max(1, round(0.5 / hop_s)),
            float(math.exp(-hop_s / 2.0)),
            clean_snr_db,
            clean_snr_db - noisy_snr_db,
            settle_s / hop_s,
            wait_s / hop_s,
        )
        #: what a frame changes, in one tuple so that `run` loads and stores it at once:
        #: (frames seen, frames used, whether speech has risen above a floor, the floor, the
        #: smoothed power, the current sub-window's minimum, the minima of the last
        #: sub-windows of 0.5 s (newest first), their lowest, the speech excess's average
        #: and its weight)
        self._state = (
            0,
            0,
            False,
            math.inf,
            0.0,
            math.inf,
            [math.inf] * max(1, round(floor_window_s / 0.5)),
            math.inf,
            0.0,
            0.0,
        )
        self.snr_db = math.nan
        #: until speech has risen above a floor once, the depth is `start_depth`
        self.depth = start_depth
        #: frames seen (skipped ones too: the first 128 ms, digital silence) and, once the
        #: floor has seen its whole window, how many had been seen then (None before): the
        #: caller's clock for "has the floor seen its window"
        self.seen = 0
        self.window_seen_at: int | None = None

    def before_window(self, frames: int) -> int:
        """Of the last `frames` frames fed, how many came before the floor had seen its whole
        window: all of them until it has (it skips its first frames and digital silence, so
        its window ends later than as many frames from the start would say)."""
        at = self.window_seen_at
        return frames if at is None else max(0, at - (self.seen - frames + 1))

    def update(self, band_power: float) -> float:
        """Feed one frame's band power; return the depth."""
        return self.run([band_power])[0]

    def run(self, band_powers: list[float]) -> list[float]:
        """Feed several frames' band powers, in order; return their depths (the state lives
        in locals for the loop: a frame costs half what a call of its own does)."""
        depths = []
        rise, silence, onset, subwindow, decay, clean, span, settle, wait = self._constants
        seen, frames, heard, floor, smoothed, current_min, minima, lowest, speech, weight = (
            self._state
        )
        depth, snr = self.depth, self.snr_db
        for p in band_powers:
            seen += 1
            if p <= silence or seen <= onset:
                depths.append(depth)
                continue
            smoothed = 0.6 * smoothed + 0.4 * p if frames else p
            frames += 1
            if smoothed < current_min:
                current_min = smoothed
            if frames % subwindow == 0:
                minima = [current_min, *minima[:-1]]
                lowest = min(minima)
                current_min = smoothed
                if self.window_seen_at is None and minima[-1] < math.inf:
                    self.window_seen_at = seen
            # (conditional expressions, not min and max: the same floats at less call cost)
            noise = current_min if current_min < lowest else lowest
            if noise < 1e-20:
                noise = 1e-20
            if rise is not None and minima[-1] < math.inf and floor * rise < noise:
                noise = floor * rise
            floor = noise
            if p > 4.0 * noise:
                heard = True
                speech = decay * speech + (1 - decay) * (p - noise)
                weight = decay * weight + (1 - decay)
            if not heard:
                if frames > 3 * subwindow:
                    depth = 1.0
            else:
                excess = speech / weight
                snr = 10 * math.log10((excess if excess > 1e-20 else 1e-20) / noise)
                depth = (clean - snr) / span
                depth = 1.0 if depth > 1.0 else (0.0 if depth < 0.0 else depth)
                if frames < settle:
                    depth *= frames / settle
            if frames < wait:
                depth = 0.0  # (until the floor has seen the whole window, none)
            depths.append(depth)
        self._state = (
            seen, frames, heard, floor, smoothed, current_min, minima, lowest, speech, weight
        )
        self.depth, self.snr_db = depth, snr
        self.seen = seen
        return depths


class MaskSnr:
    """The room's SNR read from the trained mask: the talkers' and the noise's power in
    one band as the mask splits it (m^2 |Y|^2 and (1 - m)^2 |Y|^2), each an exponential
    average over `time_constant_s`, and the depth it implies (as BandSnr's).
    Unlike a noise floor it is not fooled by noise that comes and goes (an alarm, the
    hallway), which a floor reads as speech in a clean room.

    With `hold_s`, `held_depth` is the depth its highest reading of the last `hold_s`
    implies, counted from `hold_after_s` (earlier readings rest on a few frames): the room
    as clean as the mask has lately read it. The mask errs toward noise, not toward clean:
    a far, reverberant talker who takes over sounds like the hallway to it, and its reading
    of a 30 dB room fell to 3-7 dB within half a second (docs/dsp.md, "The mask's reading
    held"). A room that really turns noisy is followed `hold_s` later."""

    def __init__(
        self,
        *,
        hop_s: float,
        time_constant_s: float = 3.0,
        clean_snr_db: float = 20.0,
        noisy_snr_db: float = 10.0,
        settle_s: float = 1.0,
        hold_s: float | None = None,
        hold_after_s: float = 0.0,
    ) -> None:
        self._a = float(math.exp(-hop_s / time_constant_s))
        #: (frames per sub-window of 0.5 s, the frame the hold starts from): the highest
        #: reading of each of the last sub-windows (newest first) and of the current one
        self._hold = (max(1, round(0.5 / hop_s)), hold_after_s / hop_s)
        self._held = None if hold_s is None else [-math.inf] * max(1, round(hold_s / 0.5))
        self._held_most = -math.inf  # (the highest of them)
        self._highest = -math.inf
        #: the depth the highest reading of the last `hold_s` implies (1 until there is one)
        self.held_depth = 1.0
        #: that highest reading, dB (-inf until there is one)
        self.held_snr_db = -math.inf
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
        # (in locals: this runs every frame)
        a = self._a
        b = 1 - a
        speech = self._speech = a * self._speech + b * speech_power
        noise = self._noise = a * self._noise + b * noise_power
        speech_w = self._speech_w = a * self._speech_w + b * speech_weight
        noise_w = self._noise_w = a * self._noise_w + b * noise_weight
        frames = self._frames = self._frames + 1
        if speech <= 0.0 and noise <= 0.0:
            return self.depth  # digital silence: nothing to say about the room
        speech /= max(speech_w, 1e-30)
        noise /= max(noise_w, 1e-30)
        snr = self.snr_db = 10 * math.log10(max(speech, 1e-30) / max(noise, 1e-30))
        clean = self._clean
        span = clean - self._noisy
        depth = min(1.0, max(0.0, (clean - snr) / span))
        if frames < self._settle_frames:
            depth *= frames / self._settle_frames
        elif self._held is not None and frames >= self._hold[1]:
            if snr > self._highest:
                self._highest = snr
            # (the highest of the last sub-windows is kept as they change)
            held = self.held_snr_db = max(self._highest, self._held_most)
            self.held_depth = min(1.0, max(0.0, (clean - held) / span))
            if frames % self._hold[0] == 0:
                self._held = [self._highest, *self._held[:-1]]
                self._held_most = max(self._held)
                self._highest = -math.inf
        self.depth = depth
        return depth
