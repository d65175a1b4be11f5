"""Adaptive multichannel Wiener beamformer that estimates the talker's image at the reference mic.

Two covariances are tracked per frequency bin: the noisy one (all frames, ~0.6 s
memory, so it follows whoever is talking) and the noise one (~1.5 s memory, learned
only where the speech-presence probability says noise, weighted by (1 - SPP)^3 so
speech onsets and reverberant tails barely leak in). The weights are the
speech-distortion-weighted multichannel Wiener filter (Doclo & Moonen) for the
reference mic's speech image:

    w = (R_s + mu R_n)^-1 R_s e_ref = e_ref - mu (R_y + (mu - 1) R_n)^-1 R_n e_ref,  R_s = R_y - R_n

With a single dry talker this is exactly MVDR followed by a single-channel Wiener gain;
unlike MVDR it needs no rank-1 model, so it stays right with two talkers taking turns
and with reverberant speech (a room's late reverb is not a plane wave), and it never
needs a direction-of-arrival. With nothing learned yet (R_n = 0) it is e_ref: the
reference mic passes untouched, which makes start-up safe.

Covariances and weights change on a fixed grid of `update_frames` frames, so the
result does not depend on how the caller cut its blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class WienerBeamformer:
    def __init__(
        self,
        bins: int,
        mics: int,
        reference: int,
        *,
        hop_s: float,
        noise_time_constant_s: float = 1.5,
        noisy_time_constant_s: float = 0.6,
        noise_weight: float = 1.0,
        update_frames: int = 8,
        diagonal_loading: float = 1e-3,
        max_weight_norm: float = 3.0,
        noise_update_power: float = 3.0,
    ) -> None:
        self.bins, self.mics = bins, mics
        self._reference = reference
        self._alpha_noise = float(np.exp(-hop_s / noise_time_constant_s))
        self._alpha_noisy = float(np.exp(-hop_s / noisy_time_constant_s))
        self._mu = noise_weight
        self._absence_power = noise_update_power
        self.update_frames = update_frames
        self._loading = diagonal_loading
        self._max_norm = max_weight_norm
        self._eye = np.eye(mics)
        e_ref = np.zeros((bins, mics), complex)
        e_ref[:, reference] = 1.0
        self.weights = e_ref
        self._weights_conj = e_ref.conj()
        self._covariances = np.zeros((2, bins, mics, mics), complex)  # noise, noisy
        self._noise_cov, self._noisy_cov = self._covariances
        self._group_x: list[np.ndarray] = []
        self._group_spp: list[np.ndarray] = []
        self._queued = 0
        self.alive = np.ones(mics, bool)

    @property
    def frames_to_update(self) -> int:
        """Frames still to observe before the weights change."""
        return self.update_frames - self._queued

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(frames, bins, mics) spectra -> (frames, bins) beam output, current weights."""
        return (x * self._weights_conj).sum(axis=-1)

    def observe(self, x: np.ndarray, spp: np.ndarray, alive: Callable[[], np.ndarray]) -> None:
        """Queue frames (frames, bins, mics) and their per-bin SPP (frames, bins); once a
        group of `update_frames` is complete, fold it into the covariances and re-solve
        using the mics `alive()` says work (asked only then: it costs)."""
        if x.shape[0] > self.frames_to_update:
            raise ValueError("observe() got frames past the next weight update")
        self._group_x.append(x)
        self._group_spp.append(spp)
        self._queued += x.shape[0]
        if self._queued == self.update_frames:
            x_group = np.concatenate(self._group_x)
            absence = (1 - np.concatenate(self._group_spp)) ** self._absence_power
            c = np.stack([(1 - self._alpha_noise) * absence, np.full_like(absence, 1 - self._alpha_noisy)])
            self._fold(self._covariances, x_group, c)
            self._group_x.clear()
            self._group_spp.clear()
            self._queued = 0
            self.alive = alive()
            self._solve()

    @staticmethod
    def _fold(cov: np.ndarray, x: np.ndarray, c: np.ndarray) -> None:
        """Exact first-order recursions R <- (1-c) R + c x x^H over the group, vectorised.

        cov (S, K, M, M) for S covariances, x (T, K, M), c (S, T, K)."""
        suffix = np.cumprod((1.0 - c)[:, ::-1], axis=1)[:, ::-1]  # prod_{s>=t} (1 - c_s)
        b = c * np.concatenate([suffix[:, 1:], np.ones_like(suffix[:, :1])], axis=1)
        cov *= suffix[:, 0, :, None, None]
        xk = x.transpose(1, 2, 0)  # (K, M, T)
        cov += np.matmul(xk[None] * b.transpose(0, 2, 1)[:, :, None, :], xk.conj().transpose(0, 2, 1)[None])

    def _solve(self) -> None:
        alive = self.alive
        if not alive.any():
            return
        ref = self._reference if alive[self._reference] else int(np.flatnonzero(alive)[0])
        mask = np.outer(alive, alive)
        noisy = self._noisy_cov * mask
        noise = self._noise_cov * mask
        level = np.einsum("kmm->k", noisy).real / int(alive.sum())
        dead = np.diag((~alive).astype(float))
        q = noisy + (self._mu - 1.0) * noise
        q += (self._loading * level + 1e-14)[:, None, None] * self._eye + (1e3 * (level + 1e-12))[:, None, None] * dead
        correction = np.linalg.solve(q, noise[:, :, ref : ref + 1])[:, :, 0]
        w = -self._mu * correction
        w[:, ref] += 1.0
        w = np.where(np.isfinite(w).all(axis=1, keepdims=True), w, 0.0)
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        w *= np.minimum(1.0, self._max_norm / np.maximum(norm, 1e-30))
        self.weights = w
        self._weights_conj = w.conj()
