"""Single-channel noise tracking and the speech-preserving post-filter.

The noise tracker is the speech-presence-probability (SPP) MMSE estimator of Gerkmann &
Hendriks (IEEE TASLP 2012): no bias compensation, short tracking delay, and its SPP is
what the beamformer uses to decide which frames update the noise statistics. A
minimum-statistics floor (the minimum of the smoothed periodogram over ~1.5 s) keeps
it from sticking low after a silence-to-noise step. The post-filter is a Wiener gain
on the decision-directed a-priori SNR (Ephraim & Malah) with a gain floor, so residual
noise stays natural and speech is never gated away.
"""

from __future__ import annotations

import numpy as np

_POWER_FLOOR = 1e-12


class NoiseTracker:
    """Per-bin noise PSD and speech presence probability, one frame at a time."""

    def __init__(
        self,
        bins: int,
        *,
        xi_h1_db: float = 10.0,
        alpha_noise: float = 0.8,
        alpha_spp: float = 0.9,
        minimum_window_frames: int = 125,
        minimum_subwindows: int = 5,
        startup_frames: int = 8,
    ) -> None:
        xi = 10 ** (xi_h1_db / 10)
        self._c1 = 1.0 + xi
        self._c2 = xi / (1.0 + xi)
        self._alpha = alpha_noise
        self._alpha_spp = alpha_spp
        self._subwindow = max(1, minimum_window_frames // minimum_subwindows)
        self._startup = startup_frames
        self.noise_psd = np.full(bins, _POWER_FLOOR)
        self._spp_smooth = np.zeros(bins)
        self._smoothed = np.zeros(bins)
        self._sub_minima = np.full((minimum_subwindows, bins), np.inf)
        self._current_minimum = np.full(bins, np.inf)
        self._minimum = np.zeros(bins)
        self._frames = 0

    def update(self, power: np.ndarray) -> np.ndarray:
        """Take |Y|^2 of one frame; update the noise PSD; return the per-bin SPP."""
        self._frames += 1
        if self._frames <= self._startup:
            # the first ~0.1 s is taken as noise: a plain running mean, no speech decisions
            self.noise_psd = np.maximum(
                self.noise_psd + (power - self.noise_psd) / self._frames, _POWER_FLOOR
            )
            self._smoothed = self.noise_psd.copy()
            return np.zeros_like(power)
        lam = self.noise_psd
        spp = 1.0 / (1.0 + self._c1 * np.exp(-self._c2 * power / lam))
        self._spp_smooth *= self._alpha_spp
        self._spp_smooth += (1.0 - self._alpha_spp) * spp
        # a bin "sure" of speech for long would never update: cap it (stagnation guard)
        np.minimum(spp, np.where(self._spp_smooth > 0.99, 0.99, 1.0), out=spp)
        expected_noise = lam + (1.0 - spp) * (power - lam)
        lam = self._alpha * lam + (1.0 - self._alpha) * expected_noise
        # minimum statistics over ~2 s (Martin's sub-window scheme): a floor that unsticks
        # an estimate left too low, e.g. after a silence-to-noise step
        self._smoothed *= 0.8
        self._smoothed += 0.2 * power
        np.minimum(self._current_minimum, self._smoothed, out=self._current_minimum)
        if self._frames % self._subwindow == 0:
            self._sub_minima = np.roll(self._sub_minima, 1, axis=0)
            self._sub_minima[0] = self._current_minimum
            self._current_minimum = self._smoothed.copy()
            self._minimum = self._sub_minima.min(axis=0)
            np.minimum(self._minimum, 1e30, out=self._minimum)
        np.maximum(lam, self._minimum, out=lam)
        np.maximum(lam, _POWER_FLOOR, out=lam)
        self.noise_psd = lam
        return spp


class PostFilter:
    """Decision-directed Wiener gain with a floor (-10 dB: speech is never gated)."""

    def __init__(self, bins: int, *, gain_floor_db: float = -10.0, alpha_dd: float = 0.95) -> None:
        self._floor = 10 ** (gain_floor_db / 20)
        self._alpha = alpha_dd
        self._previous_speech = np.zeros(bins)

    def gain(self, power: np.ndarray, noise_psd: np.ndarray) -> np.ndarray:
        snr_post = power / noise_psd
        snr_prior = self._alpha * self._previous_speech / noise_psd + (
            1.0 - self._alpha
        ) * np.maximum(snr_post - 1.0, 0.0)
        g = snr_prior / (1.0 + snr_prior)
        np.maximum(g, self._floor, out=g)
        self._previous_speech = g * g * power
        return g
