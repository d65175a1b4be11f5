"""Per-channel health on the capture side: levels, dead and clipping channels.

Everything is computed on the pipeline's fixed hop grid, so the verdicts do not depend
on how the caller cut its blocks. A dead channel (digital silence, a stuck DC value, or
40 dB below its siblings) is also dropped from the beamformer. The levels are smoothed
over 0.5 s, which would take seconds to fall 40 dB when a mic stops: a hop in which a mic
gives one value throughout while the others move counts it dead at once (a live mic's own
noise moves it by an LSB or more; the whole array flat is a silent input, not a dead mic).
"""

from __future__ import annotations

import numpy as np

_FULL_SCALE = 32767
#: a hop's variance (full scale = 1) below this is one value throughout: 1 LSB^2 is 9.3e-10
_FLAT = 1e-13


class ChannelHealth:
    def __init__(
        self,
        channels: int,
        *,
        hop_s: float,
        time_constant_s: float = 0.5,
        dead_below_median_db: float = 40.0,
        silent_power: float = 1e-11,
        clip_hold_s: float = 2.0,
    ) -> None:
        self._decay = float(np.exp(-hop_s / time_constant_s))
        self._started = False
        self._dead_ratio = 10 ** (-dead_below_median_db / 10)
        self._silent = silent_power
        self._hold = max(1, round(clip_hold_s / hop_s))
        self._hops_since_clip = np.full(channels, 10**9)
        self.power = np.zeros(channels)
        self.dead = np.zeros(channels, bool)
        #: the dead channels after each hop of the last update, (T, C); `dead` is its last row
        self.dead_hops = np.zeros((0, channels), bool)
        #: per-hop sums of the last update, (T, C): the pipeline reuses them for DC removal
        self.hop_sums = np.zeros((0, channels))
        #: per-hop variance of the samples about the hop's mean, (T, C), full scale = 1
        self.hop_power = np.zeros((0, channels))

    def update(self, raw_hops: np.ndarray, scaled_hops: np.ndarray) -> np.ndarray:
        """raw_hops int16 (T, H, C); scaled_hops float (T, H, C), full scale = 1 (DC is ignored).

        Returns the smoothed power after each hop, (T, C); `dead_hops` has the verdict of
        each hop.
        """
        hops, hop = raw_hops.shape[:2]
        if hops == 0:
            return np.zeros((0, self.dead.size))
        # (einsum adds the hop's samples in the same order as sum(axis=1), at a third of
        # the cost for a few hops)
        total = np.einsum("thc->tc", scaled_hops)
        self.hop_sums = total
        hop_power = np.einsum("thc,thc->tc", scaled_hops, scaled_hops) / hop - (total / hop) ** 2
        self.hop_power = hop_power
        if not self._started:
            self.power = hop_power[0].copy()  # start the smoother at the first hop
            self._started = True
        a = self._decay
        b = 1 - a
        s = self.power.tolist()
        rows = []
        for p in hop_power.tolist():  # a one-pole smoother over a few hops (scalars: cheap)
            s = [a * si + b * pi for si, pi in zip(s, p, strict=True)]
            rows.append(s)
        smoothed = np.array(rows)
        self.power = smoothed[-1]
        self.dead_hops = self.verdicts(smoothed, hop_power)
        self.dead = self.dead_hops[-1]
        # a hop clipped if it touched full scale; remember how many hops ago
        if raw_hops.max() >= _FULL_SCALE or raw_hops.min() <= -_FULL_SCALE:
            clipped = (raw_hops.max(axis=1) >= _FULL_SCALE) | (raw_hops.min(axis=1) <= -_FULL_SCALE)
            last = np.where(clipped.any(0), hops - 1 - np.argmax(clipped[::-1], axis=0), -1)
            self._hops_since_clip = np.where(
                last >= 0, hops - 1 - last, self._hops_since_clip + hops
            )
        else:
            self._hops_since_clip += hops
        return smoothed

    def verdicts(self, powers: np.ndarray, hop_powers: np.ndarray) -> np.ndarray:
        """Dead channels after each hop (T, C), given the smoothed powers (T, C) and the hops'
        own: silent, stuck, 40 dB under the median, or flat this hop while the median is not."""
        middle = slice(powers.shape[1] // 2, powers.shape[1] // 2 + 1)
        median = np.sort(powers, axis=1)[:, middle]
        dead = powers < self._dead_ratio * median
        dead |= (median >= self._silent) & (powers < self._silent)
        dead |= (np.sort(hop_powers, axis=1)[:, middle] >= _FLAT) & (hop_powers < _FLAT)
        return dead

    @property
    def clipping(self) -> np.ndarray:
        return self._hops_since_clip < self._hold
