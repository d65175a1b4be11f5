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
        # each channel's last clipped hop, counted as `_hops` counts them (none: long ago)
        self._hops = 0
        self._clipped_at = np.full(channels, -(10**9) - 1)
        self.power = [0.0] * channels  # (the smoothed power after the last hop)
        self.dead = np.zeros(channels, bool)
        #: the dead channels after each hop of the last update, (T, C); `dead` is its last row
        self.dead_hops = np.zeros((0, channels), bool)
        #: whether any channel was dead after any hop of the last update
        self.any_dead = False
        self._all_alive: dict[int, np.ndarray] = {}  # (dead_hops with none dead, by hops)
        #: per-hop sums of the last update, T lists of C: the pipeline reuses them for DC
        #: removal
        self.hop_sums: list[list[float]] = []
        #: per-hop variance of the samples about the hop's mean, T lists of C, full scale = 1
        self.hop_power: list[list[float]] = []

    def update(self, raw: np.ndarray, hops: np.ndarray) -> None:
        """raw int16 (T x H, C), the hops' samples as captured; hops float (C, T, H), the
        same samples channel by channel over 2^15 (full scale = 1; DC is ignored).

        Sets, for each hop: `hop_sums` and `hop_power` (T lists of C), `dead_hops` (T, C)
        the verdict after it, and `any_dead`."""
        channels, count, hop = hops.shape
        if count == 0:
            return
        # A hop's sum and sum of squares of int16 samples over 2^15 are exact in a double
        # (multiples of 2^-15 and 2^-30, far from 53 bits), so in any order: the rows'
        # contiguous reductions give the bits a sum over each hop's samples in turn does, at
        # a third of the cost. From here on, a few channels and hops: Python floats, the
        # same IEEE arithmetic as numpy's elementwise, at less cost than numpy's calls.
        sums = hops.sum(axis=2).T.tolist()
        squares = np.einsum("cth,cth->ct", hops, hops).T.tolist()
        self.hop_sums = sums
        powers = [
            [q / hop - (t / hop) * (t / hop) for q, t in zip(square, total, strict=True)]
            for square, total in zip(squares, sums, strict=True)
        ]
        self.hop_power = powers
        if not self._started:
            self.power = powers[0]  # start the smoother at the first hop
            self._started = True
        a = self._decay
        b = 1 - a
        s = self.power
        middle = channels // 2
        ratio, silent = self._dead_ratio, self._silent
        alive = [False] * channels
        verdicts = []
        any_dead = False
        for p in powers:  # a one-pole smoother over a few hops
            s = [a * si + b * pi for si, pi in zip(s, p, strict=True)]
            # dead: silent, stuck, 40 dB under the median, or flat this hop while the
            # median is not. Channel by channel only if the quietest channel is
            ordered, hop_ordered = sorted(s), sorted(p)
            median, lowest = ordered[middle], ordered[0]
            quiet, flat = median >= silent, hop_ordered[middle] >= _FLAT
            under = ratio * median
            if lowest < under or (quiet and lowest < silent) or (flat and hop_ordered[0] < _FLAT):
                any_dead = True
                verdicts.append(
                    [
                        si < under or (quiet and si < silent) or (flat and pi < _FLAT)
                        for si, pi in zip(s, p, strict=True)
                    ]
                )
            else:
                verdicts.append(alive)
        self.power = s
        self.any_dead = any_dead
        if any_dead:
            self.dead_hops = np.array(verdicts)
        else:  # (as nearly always: the same all-alive verdicts for as many hops)
            if count not in self._all_alive:
                self._all_alive[count] = np.zeros((count, channels), bool)
                self._all_alive[count].flags.writeable = False
            self.dead_hops = self._all_alive[count]
        self.dead = self.dead_hops[-1]
        # a hop clipped if it touched full scale; remember the last one
        if raw.max() >= _FULL_SCALE or raw.min() <= -_FULL_SCALE:
            raw_hops = raw.reshape(count, hop, channels)
            clipped = (raw_hops.max(axis=1) >= _FULL_SCALE) | (raw_hops.min(axis=1) <= -_FULL_SCALE)
            last = count - 1 - np.argmax(clipped[::-1], axis=0)
            self._clipped_at = np.where(clipped.any(0), self._hops + last, self._clipped_at)
        self._hops += count

    @property
    def clipping(self) -> np.ndarray:
        return (self._hops - 1) - self._clipped_at < self._hold
