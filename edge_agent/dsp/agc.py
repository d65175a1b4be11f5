"""Automatic gain control and peak limiter for the scribe's ear.

The AGC measures the talker's level only while speech is present and holds its gain
through silence, so room noise is never pumped up between sentences and a sentence
never starts at a blasting gain. Its gain moves slowly (dB per second), which keeps
speech dynamics intact. The limiter after it has instant attack and exponential
release, computed for a whole block at once as a running maximum in the log domain;
it guarantees no sample exceeds the ceiling, so nothing clips, onsets included.
"""

from __future__ import annotations

import math

import numpy as np


class SpeechAgc:
    """Per-frame gain toward a target talker level.

    The level is the talker's *peak* frame level while speech is present: it rises at
    once to a louder frame and sags by `release_db_per_s` otherwise. Peaks belong to the
    talkers near the unit; quieter speech-like frames (hallway voices, a reverberant
    tail) cannot drag the estimate down and pump the gain up.
    """

    def __init__(
        self,
        *,
        hop_s: float,
        target_peak_dbfs: float = -20.0,
        min_gain_db: float = -12.0,
        max_gain_db: float = 24.0,
        release_db_per_s: float = 1.5,
        up_db_per_s: float = 3.0,
        down_db_per_s: float = 12.0,
        speech_threshold: float = 0.5,
        dead_band_db: float = 6.0,
        margin_db: float = 4.0,
        settle_speech_s: float = 1.0,
    ) -> None:
        # the talker's level is known only once this much speech has been heard: an
        # estimate from the first syllable's onset would set the gain and take it back
        self._settle_frames = settle_speech_s / hop_s
        self._speech_frames = 0
        self._target_db = target_peak_dbfs
        self._min_db, self._max_db = min_gain_db, max_gain_db
        self._release = release_db_per_s * hop_s
        self._up = up_db_per_s * hop_s
        self._down = down_db_per_s * hop_s
        #: the speech presence from which a frame's power counts (below it, none is read)
        self.speech_threshold = speech_threshold
        self._dead_band = dead_band_db
        #: how far beyond the band the output's level must be before the gain moves: more
        #: than the level estimate's own sawtooth (it sags 1.5 dB/s between a talker's
        #: stressed syllables, up to 2 s apart)
        self._margin = margin_db
        self._moving = False  # (once moving, the gain goes on to the band's edge)
        self._level_db: float | None = None
        self.gain_db = 0.0

    def update(self, frame_power: float, speech_presence: float) -> float:
        """Feed one frame's power (full scale = 1) and presence; return the linear gain."""
        if speech_presence >= self.speech_threshold and frame_power > 1e-12:
            frame_db = 10 * math.log10(frame_power)
            if self._level_db is None:
                self._level_db = frame_db
            else:
                self._level_db = max(self._level_db - self._release, frame_db)
            self._speech_frames += 1
            if self._speech_frames < self._settle_frames:
                return 10 ** (self.gain_db / 20)
            # the gain rides only level errors beyond the dead band (a quiet patient across
            # the room), never a talker's normal dynamics: it holds while the output's level
            # is within the band, starts to move only once it is `margin_db` beyond it, and
            # then moves to the band's edge. (Held to the input's level, with no margin, a
            # talker at the band's edge rode the gain up and down with the level's every
            # rise and sag.)
            error = self._target_db - self._level_db
            low, high = error - self._dead_band, error + self._dead_band
            wanted = self.gain_db
            if wanted < low - self._margin or wanted > high + self._margin or self._moving:
                # out of the band by more than the level's own ripple: to the band's edge
                # (or the gain's own limit short of it)
                wanted = min(max(min(max(wanted, low), high), self._min_db), self._max_db)
                self._moving = wanted != self.gain_db
            step = min(max(wanted - self.gain_db, -self._down), self._up)
            self.gain_db += step
        return 10 ** (self.gain_db / 20)


class PeakLimiter:
    """Instant-attack, exponential-release limiter; no lookahead, no overshoot."""

    def __init__(self, *, sample_rate: int, ceiling: float = 0.89, release_s: float = 0.08) -> None:
        self._ceiling = ceiling
        self._log_ceiling = math.log(ceiling)
        self._log_decay = -1.0 / (release_s * sample_rate)  # log of the per-sample decay
        self._log_env = -np.inf  # log envelope at the last sample

    def process(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            return x
        peak = float(np.abs(x).max())  # (= max(x.max(), -x.min()), in fewer passes)
        if peak <= self._ceiling and self._log_env <= self._log_ceiling:
            # nothing reaches the ceiling, now or decaying from before: unity gain, and an
            # envelope below the ceiling can never bind later, so -inf is an exact state
            self._log_env = -np.inf
            return x
        n = np.arange(x.size)
        with np.errstate(divide="ignore"):
            log_peak = np.log(np.abs(x))
        # env[n] = max(env_prev * d^(n+1), max_{m<=n} |x[m]| d^(n-m)), as a running max
        running = np.maximum.accumulate(log_peak - n * self._log_decay) + n * self._log_decay
        log_env = np.maximum(running, self._log_env + (n + 1) * self._log_decay)
        self._log_env = float(log_env[-1])
        gain = np.minimum(1.0, self._ceiling * np.exp(-log_env))
        return x * gain
