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
        stagnation_guard: bool = True,
        ceiling_over_minimum: float | None = None,
    ) -> None:
        self._guard = stagnation_guard
        self._ceiling = ceiling_over_minimum
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
        self._minimum = np.full(bins, _POWER_FLOOR)
        self._scratch = np.empty(bins)
        self._scratch_spp = np.empty(bins)  # (`run` needs no SPP)
        self._frames = 0

    def update(self, power: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Take |Y|^2 of one frame; update the noise PSD; return the per-bin SPP (in `out`)."""
        if out is None:
            out = np.empty_like(power)
        self._step(power, out, power * 0.2)
        return out

    def run(self, powers: np.ndarray, noise: np.ndarray, replaced: list | None = None) -> None:
        """Take a run of frames' |Y|^2 (T, bins), in order; write the noise PSD after each
        into `noise` (T, bins). With `replaced`, append (k, the new floor) for each frame k of
        the run that replaced the minimum-statistics floor (the end of a sub-window, every
        0.4 s: the floor falls within one of the noise's falling). What `update` does a frame,
        with the part that does not recur (0.2 |Y|^2, the minimum tracking's input) done for
        the run at once."""
        spp = self._scratch_spp
        for k, (power, fifth, row) in enumerate(zip(powers, powers * 0.2, noise, strict=True)):
            if self._step(power, spp, fifth, row) and replaced is not None:
                replaced.append((k, self._minimum))

    def _step(
        self, power: np.ndarray, spp: np.ndarray, fifth: np.ndarray, new: np.ndarray | None = None
    ) -> bool:
        """One frame: |Y|^2, the SPP's buffer, 0.2 |Y|^2; `new`, where the new noise PSD goes
        (and stays as `noise_psd`; None: in place). True if it replaced the
        minimum-statistics floor."""
        self._frames += 1
        if self._frames <= self._startup:
            # the first ~0.1 s is taken as noise: a plain running mean, no speech decisions
            self.noise_psd = np.maximum(
                self.noise_psd + (power - self.noise_psd) / self._frames, _POWER_FLOOR, out=new
            )
            self._smoothed = self.noise_psd.copy()
            spp[:] = 0.0
            return False
        # in place throughout: this runs once per 16 ms frame and numpy call overhead counts
        lam, tmp = self.noise_psd, self._scratch
        np.divide(power, lam, out=spp)
        spp *= -self._c2
        np.exp(spp, out=spp)
        spp *= self._c1
        spp += 1.0
        np.reciprocal(spp, out=spp)
        smooth = self._spp_smooth
        smooth *= self._alpha_spp
        np.multiply(spp, 1.0 - self._alpha_spp, out=tmp)
        smooth += tmp
        if self._guard:
            # a bin "sure" of speech for long would never update: cap it (stagnation guard;
            # the SPP is at most 1, so elsewhere it stays as it is)
            np.minimum(spp, 0.99, out=spp, where=smooth > 0.99)
        # lam <- alpha lam + (1 - alpha) E[N^2 | Y],  E[N^2 | Y] = spp lam + (1 - spp) |Y|^2
        step = power - lam
        np.multiply(spp, self._alpha - 1.0, out=tmp)
        tmp += 1.0 - self._alpha
        step *= tmp
        if new is not None:  # (lam + step, written where the caller keeps it: no copy)
            lam = self.noise_psd = np.add(lam, step, out=new)
        else:
            lam += step
        # minimum statistics over ~2 s (Martin's sub-window scheme): a floor that unsticks
        # an estimate left too low, e.g. after a silence-to-noise step
        self._smoothed *= 0.8
        self._smoothed += fifth
        np.minimum(self._current_minimum, self._smoothed, out=self._current_minimum)
        replaced = self._frames % self._subwindow == 0
        if replaced:
            self._sub_minima = np.roll(self._sub_minima, 1, axis=0)
            self._sub_minima[0] = self._current_minimum
            self._current_minimum = self._smoothed.copy()
            self._minimum = np.clip(self._sub_minima.min(axis=0), _POWER_FLOOR, 1e30)
        np.maximum(lam, self._minimum, out=lam)
        if self._ceiling is not None and self._frames > self._subwindow:
            np.minimum(lam, self._ceiling * np.minimum(self._minimum_running(), 1e30), out=lam)
        return replaced

    def _minimum_running(self) -> np.ndarray:
        return np.minimum(self._sub_minima.min(axis=0), self._current_minimum)


class PostFilter:
    """Decision-directed Wiener gain with a floor (-10 dB: speech is never gated), in two
    steps (Plapous, Marro and Scalart's TSNR, 2006) unless `two_step` is off.

    The decision-directed a-priori SNR weighs the previous frame's speech estimate (alpha,
    0.95) against this frame's excess power, so it lags an onset by a frame or two: where a
    soft syllable or a fricative rises out of noise of its own level, its first frames were
    cut by 5-6 dB, a dip in the envelope exactly where the talker begins (the STOI of a
    30 dB room's band at 3.4-4.3 kHz fell by 0.03 over it; docs/dsp.md, "The Wiener gains
    in two steps"). The second step takes this
    frame's own first-step estimate as the a-priori SNR, |G1 Y|^2 / noise, and its gain
    G1^2 SNR / (1 + G1^2 SNR): it follows an onset in its first frame, and takes a lone
    noise peak, which the first step passes at a small gain, lower still. The recursion
    keeps the first step's estimate (the second step is done once over a run of frames)."""

    def __init__(
        self,
        bins: int,
        *,
        gain_floor_db: float = -10.0,
        alpha_dd: float = 0.95,
        two_step: bool = True,
    ) -> None:
        #: the gain floor (linear); the pipeline raises it toward 1 in clean rooms
        self.floor = 10 ** (gain_floor_db / 20)
        self._alpha = alpha_dd
        self._two_step = two_step
        # the a-priori SNR divided by alpha: xi / alpha = |S_prev|^2 / noise
        # + (1 - alpha) / alpha max(|Y|^2 / noise - 1, 0), and the gain
        # xi / (1 + xi) = (xi / alpha) / (1 / alpha + xi / alpha): alpha drops out of the
        # recursion (this runs once per frame; every numpy call counts)
        self._posterior_weight = (1.0 - alpha_dd) / alpha_dd
        self._previous_speech = np.zeros(bins)

    def reset(self) -> None:
        """Forget the previous frame (a new stream)."""
        self._previous_speech[...] = 0.0

    def gain(
        self, power: np.ndarray, noise_psd: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Wiener gain per bin for one frame (written into `out` if given)."""
        posterior = power / noise_psd
        posterior -= 1.0
        np.maximum(posterior, 0.0, out=posterior)
        posterior *= self._posterior_weight
        g = np.divide(self._previous_speech, noise_psd, out=out)
        g += posterior  # the decision-directed a-priori SNR, over alpha
        np.add(g, 1.0 / self._alpha, out=posterior)  # reuse the buffer
        g /= posterior
        if self.floor > 0.0:  # (the gain is never below 0)
            np.maximum(g, self.floor, out=g)
        np.multiply(g, g, out=self._previous_speech)
        self._previous_speech *= power
        if self._two_step:
            self._second_step(g, power, noise_psd)
        return g

    def run(self, powers: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The gains of a run of frames (T, bins) whose noise (T, bins) is known up front:
        what `gain` gives frame by frame (to rounding), with all but the decision-directed
        recursion done once for the run (five numpy calls a frame instead of ten)."""
        gains = np.empty_like(powers)
        # xi / alpha = (|S_prev|^2 + (1 - alpha) / alpha max(|Y|^2 - noise, 0)) / noise, and
        # the gain (xi / alpha) / (1 / alpha + xi / alpha): the noise divides out
        posterior = np.subtract(powers, noise)
        np.maximum(posterior, 0.0, out=posterior)
        posterior *= self._posterior_weight
        denominator = noise * (1.0 / self._alpha)
        previous = self._previous_speech
        for numerator, below, gain, power in zip(
            posterior, denominator, gains, powers, strict=True
        ):  # (rows as views: a frame's numpy calls and no more)
            numerator += previous
            below += numerator
            np.divide(numerator, below, out=gain)
            np.multiply(gain, gain, out=previous)
            previous *= power
        if self._two_step:
            self._second_step(gains, powers, noise)
        elif self.floor > 0.0:
            np.maximum(gains, self.floor, out=gains)
        return gains

    def _second_step(self, gains: np.ndarray, powers: np.ndarray, noise: np.ndarray) -> None:
        """In place: the gains G1 -> xi / (1 + xi), xi = G1^2 |Y|^2 / noise (floored)."""
        xi = gains * gains
        xi *= powers
        xi /= noise
        np.add(xi, 1.0, out=gains)
        np.divide(xi, gains, out=gains)
        if self.floor > 0.0:
            np.maximum(gains, self.floor, out=gains)
