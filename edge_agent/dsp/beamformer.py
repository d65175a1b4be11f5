"""Adaptive multichannel Wiener beamformer for the talker's image at the reference mic.

Two covariances are tracked per frequency bin: the noisy one (all frames, ~0.6 s
memory, so it follows whoever is talking) and the noise one (~1.5 s memory, learned
only where the speech-presence probability (SPP) says noise, weighted by (1 - SPP)^3
so speech onsets and reverberant tails barely leak in). The SPP that decides this is
the multichannel one of Souden et al. (2010): it scores each bin by how well it fits
the learned speech and noise *spatial* statistics, not only by its level.

The weights start from the multichannel Wiener filter (Doclo & Moonen) for the
reference mic's speech image,

    w = (R_s + mu R_n)^-1 R_s e_ref = e_ref - mu (R_y + (mu - 1) R_n)^-1 R_n e_ref,
    R_s = R_y - R_n,

then give back its spectral (Wiener) attenuation so that the output speech power
equals the reference mic's: what remains is the spatial noise reduction, and the
single-channel post-filter, with its own noise tracker, does the spectral part once.
For one dry talker this is MVDR; unlike a rank-1 MVDR it needs no steering vector or
direction of arrival, so it stays right with doctor and patient taking turns and with
reverberant speech (late reverb is not a plane wave). A rank-1 GEVD-MVDR was tried on
the bench and lost 4 dB SI-SDR at 15 dB SNR for exactly that reason. With nothing
learned yet (R_n = 0) the weights are e_ref: the reference mic passes untouched.

The pipeline sets `depth` (0..1) from the room's long-term SNR; the weights are
`e_ref + depth (w - e_ref)`, so in a clean room the reference mic passes untouched (the
noise covariance learned there is mostly leaked weak speech, and cancelling it distorts).

With a trained mask (`caller_presence`, `mask_mwf`; the pipeline's default) the caller's
mask m decides instead of the SPP: the noise covariance is the (1 - m)-weighted average
and the second covariance the talkers' (m-weighted), both normalised by their accumulated
weight over one time constant (Heymann et al. 2016's mask-based beamformer, here an MWF for
the reference mic's image). A bin departs from the reference mic only as far as both
averages have evidence (`evidence`: accumulated weight, 1 = a whole time constant of pure
talker or pure noise): early on, and in a quiet room whose noise is barely seen, the
statistics are a few frames and their solution is noise.

The noise covariance learns a bin not only as far as the mask reads that bin as noise
(1 - m) but also as far as the mask reads the whole frame as noise: times (1 - the frame's
mean m)^`noise_frame_power` (NOISE_FRAME_POWER). In a frame of talk, the bins between a
voice's harmonics and the talker's reverberant tail read as noise, bin by bin; where talk
never pauses for long they are all the "noise" there is, and an MWF taught them cancels the
talker's own reverberation, which the scribe's target keeps (TUNE's talk without pauses at
20 dB: -3.6 and -2.6 dB SI-SDR under the raw mic, +0.2 and +0.6 with the frame's share).
In the pauses between turns (the frame's mean m near 0) it learns as before.

A frame that stands far over the rest of its group across most of the spectrum (a codec's
pop as the capture opens, a door, a dropped instrument) does not teach the noise
covariance: more than half its bins `outlier_db` over the group's quietest fifth there
(OUTLIER_BROADBAND). The noise covariance forgets only as noise frames come, and in a room
whose talk rarely pauses a few frames are all its evidence, so one pop 40 dB over the room
outweighed ten seconds of it: the weights it taught cost a 10 dB bench room 5.7 dB SI-SDR
for the next ten seconds (docs/dsp.md, "Where the stream starts"). A narrowband burst (an
alarm, a beep) is still learned, as the noise it is.

Covariances and weights change on a fixed grid of `update_frames` frames (0.5 s), so
the result does not depend on how the caller cut its blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: how strongly a frame the mask reads as talk keeps its bins out of the noise covariance
#: (the module docstring): TUNE 288 +2.128 -> +2.193 dB SI-SDR with 8 (2: +2.163, 4: +2.183,
#: 16: +2.189), talk without pauses +1.354 -> +1.492
NOISE_FRAME_POWER = 8.0
#: a frame whose power stands this far over its group's quietest fifth (the 20th
#: percentile, bin by bin) in more than this share of the bins teaches the noise nothing
#: (the module docstring). Bin by bin instead (any bin this far over): the pops went as
#: well, but TUNE 288 lost 0.03 dB and its 0 and -5 dB rooms 0.1 (an alarm's pulses are
#: the noise); as a frame, 0.001
OUTLIER_DB = 10.0
OUTLIER_BROADBAND = 0.5


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
        update_frames: int = 32,
        diagonal_loading: float = 1e-3,
        max_weight_norm: float = 3.0,
        noise_update_power: float = 3.0,
        spatial_only: bool = True,
        max_restore: float = 4.0,
        caller_presence: bool | Callable[[np.ndarray], np.ndarray] = False,
        mask_mwf: bool = False,
        mask_time_constant_s: float = 1.0,
        evidence: float = 0.15,
        noise_frame_power: float = NOISE_FRAME_POWER,
        outlier_db: float | None = OUTLIER_DB,
    ) -> None:
        self.bins, self.mics = bins, mics
        self._reference = reference
        self._alpha_noise = float(np.exp(-hop_s / noise_time_constant_s))
        self._alpha_noisy = float(np.exp(-hop_s / noisy_time_constant_s))
        self._mu = noise_weight
        self._absence_power = noise_update_power
        self._spatial_only = spatial_only
        self._max_restore = max_restore
        #: the caller's presence (the trained mask) decides, always: no spatial SPP. If it
        #: is a callable, observe() is given what it needs (power spectra) and it is called
        #: once per group of `update_frames`, vectorised, when the covariances are updated
        self._caller_presence = bool(caller_presence)
        self._presence_of = caller_presence if callable(caller_presence) else None
        # mask-based MWF: talker and noise covariances, each weighted by the mask (m and
        # 1 - m) and normalised by its accumulated weight, one time constant for both
        self._mask_mwf = mask_mwf
        self._alpha_mask = float(np.exp(-hop_s / mask_time_constant_s))
        self._evidence = evidence
        self._noise_frame_power = noise_frame_power
        self._outlier = None if outlier_db is None else 10 ** (outlier_db / 10)
        self._weights_acc = np.zeros((2, bins))  # accumulated update weight: noise, talker
        self.update_frames = update_frames
        self._loading = diagonal_loading
        self._max_norm = max_weight_norm
        self._eye = np.eye(mics)
        e_ref = np.zeros((bins, mics), complex)
        e_ref[:, reference] = 1.0
        self.weights = e_ref
        self._weights_conj = e_ref.conj()
        self._e_ref = e_ref
        self._passes_reference = True  # the weights are e_ref: apply() is a copy
        self._covariances = np.zeros((2, bins, mics, mics), complex)  # noise, noisy
        self._noise_cov, self._noisy_cov = self._covariances
        self._group_x: list[np.ndarray] = []
        self._group_spp: list[np.ndarray] = []
        self._queued = 0
        self._solved = 0
        self._settle_groups = 2
        self.alive = np.ones(mics, bool)
        #: how far the weights may depart from the reference mic (0..1), set by the pipeline
        self.depth = 1.0

    @property
    def frames_to_update(self) -> int:
        """Frames still to observe before the weights change."""
        return self.update_frames - self._queued

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(frames, bins, mics) spectra -> (frames, bins) beam output, current weights."""
        if self._passes_reference:  # (a clean room, or nothing learned yet)
            return x[..., self._reference].copy()
        return _sum_mics(x * self._weights_conj)

    @property
    def passes_reference(self) -> bool:
        """True while the weights are the reference mic's alone (apply() is a copy of it)."""
        return self._passes_reference

    @property
    def spatial_presence_ready(self) -> bool:
        """True once the multichannel SPP has statistics; until then observe() needs an SPP."""
        return self._solved >= self._settle_groups

    def observe(
        self, x: np.ndarray, spp: np.ndarray | None, alive: Callable[[], np.ndarray]
    ) -> None:
        """Queue frames (frames, bins, mics) and, during start-up, their per-bin SPP
        (frames, bins); once a group of `update_frames` is complete, fold it into the
        covariances and re-solve using the mics `alive()` says work (asked only then)."""
        if x.shape[0] > self.frames_to_update:
            raise ValueError("observe() got frames past the next weight update")
        self._group_x.append(x)
        if spp is not None:
            self._group_spp.append(spp)
        self._queued += x.shape[0]
        if self._queued == self.update_frames:
            x_group = np.concatenate(self._group_x)
            if self._caller_presence:
                spp_group = np.concatenate(self._group_spp)
                if self._presence_of is not None:
                    spp_group = self._presence_of(spp_group)[:, : self.bins]
            elif self.spatial_presence_ready:  # the SPP of the whole group in one go
                spp_group = self._spatial_presence(x_group)
            else:
                spp_group = np.concatenate(self._group_spp)
            if self._mask_mwf:
                step = 1 - self._alpha_mask
                absence = 1 - spp_group
                if self._noise_frame_power:  # (module docstring: talk's own tails)
                    frame_absence = 1 - spp_group.mean(axis=1, keepdims=True)
                    absence *= frame_absence**self._noise_frame_power
                c = np.stack([step * absence, step * spp_group])
            else:
                absence = (1 - spp_group) ** self._absence_power
                c = np.stack(
                    [
                        (1 - self._alpha_noise) * absence,
                        np.full_like(absence, 1 - self._alpha_noisy),
                    ]
                )
            if self._outlier is not None:  # (the noise's covariance: the talkers' is loud)
                c[0] *= self._outlier_share(x_group)
            self._fold(self._covariances, x_group, c)
            if self._mask_mwf:
                self._fold_weights(c)
            self._group_x.clear()
            self._group_spp.clear()
            self._queued = 0
            self.alive = alive()
            self._solve()

    def _outlier_share(self, x: np.ndarray) -> np.ndarray:
        """(T, 1): 0 for a frame of the group that stands `outlier_db` over the group's
        quietest fifth in more than OUTLIER_BROADBAND of the bins, else 1."""
        power = _sum_mics(x.real**2 + x.imag**2)
        over = power > self._outlier * np.percentile(power, 20.0, axis=0)
        return (over.mean(axis=1, keepdims=True) <= OUTLIER_BROADBAND).astype(float)

    def _fold(self, cov: np.ndarray, x: np.ndarray, c: np.ndarray) -> None:
        """Exact first-order recursions R <- (1-c) R + c x x^H over the group, vectorised.

        cov (S, K, M, M) for S covariances, x (T, K, M), c (S, T, K). Both start at zero
        and are deliberately not renormalised by their accumulated weight: the noise
        covariance grows only as noise is observed, which keeps the filter close to the
        reference mic until it has evidence (renormalising cost 1.5 dB SI-SDR on the
        bench: speech that leaks into R_n early gets full weight)."""
        suffix = np.cumprod((1.0 - c)[:, ::-1], axis=1)[:, ::-1]  # prod_{s>=t} (1 - c_s)
        b = c * np.concatenate([suffix[:, 1:], np.ones_like(suffix[:, :1])], axis=1)
        cov *= suffix[:, 0, :, None, None]
        xk = x.transpose(1, 2, 0)  # (K, M, T)
        cov += np.matmul(
            xk[None] * b.transpose(0, 2, 1)[:, :, None, :], xk.conj().transpose(0, 2, 1)[None]
        )

    def _fold_weights(self, c: np.ndarray) -> None:
        acc = self._weights_acc
        keep = (1.0 - c).transpose(1, 0, 2).copy()  # (T, S, K), each frame's rows contiguous
        add = c.transpose(1, 0, 2).copy()
        for t in range(c.shape[1]):
            acc = keep[t] * acc
            acc += add[t]
        self._weights_acc = acc

    def _solve(self) -> None:
        alive = self.alive
        if not alive.any():
            return
        ref = self._reference if alive[self._reference] else int(np.flatnonzero(alive)[0])
        if self.depth <= 0.0 and self._caller_presence:
            # nothing to solve: at depth 0 the weights are the (live) reference mic, as the
            # trust below would make them, and the caller's mask needs no spatial statistics
            w = np.zeros((self.bins, self.mics), complex)
            w[:, ref] = 1.0
            self._set_weights(w)
            return
        mask = np.outer(alive, alive)
        noise = self._noise_cov * mask
        noisy = self._noisy_cov * mask
        if self._mask_mwf:
            acc = np.maximum(self._weights_acc, 1e-3)
            noise = noise / acc[0][:, None, None]
            speech = noisy / acc[1][:, None, None]  # the second covariance is the talkers'
            noisy = noise + speech
        else:
            speech = noisy - noise
        level = np.einsum("kmm->k", noisy).real / int(alive.sum())
        load = (self._loading * level + 1e-14)[:, None, None] * self._eye
        load = load + (1e3 * (level + 1e-12))[:, None, None] * np.diag((~alive).astype(float))
        q = noisy + (self._mu - 1.0) * noise + load
        correction = np.linalg.solve(q, noise[:, :, ref : ref + 1])[:, :, 0]
        w = -self._mu * correction
        w[:, ref] += 1.0
        w = np.where(np.isfinite(w).all(axis=1, keepdims=True), w, 0.0)
        if self._spatial_only:
            # give back the Wiener filter's spectral attenuation (the post-filter owns that,
            # with its own noise tracker): scale so the output speech power equals the
            # reference mic's, leaving the spatial noise reduction
            ref_power = speech[:, ref, ref].real
            out_power = np.einsum("km,kmn,kn->k", w.conj(), speech, w).real
            ratio = np.where(
                (ref_power > 0) & (out_power > 0), ref_power / np.maximum(out_power, 1e-30), 1.0
            )
            w *= np.sqrt(np.clip(ratio, 1.0, self._max_restore**2))[:, None]
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        w *= np.minimum(1.0, self._max_norm / np.maximum(norm, 1e-30))
        # how far to depart from the reference mic: the depth (a clean room gets the
        # reference mic) and, for the mask-based MWF, per bin the evidence behind its
        # statistics (a bin that has seen little talker or little noise keeps the mic)
        trust = np.full(w.shape[0], self.depth)
        if self._mask_mwf:
            trust *= np.clip(self._weights_acc.min(axis=0) / self._evidence, 0.0, 1.0)
        if (trust < 1.0).any():
            w *= trust[:, None]
            w[:, ref] += 1.0 - trust
        self._set_weights(w)
        if self._caller_presence:
            return  # the caller's mask decides which frames are noise: no spatial SPP
        # statistics of the multichannel SPP (Souden et al. 2010) for the next group
        inv = np.linalg.inv(noise + load)
        phi = inv @ speech
        self._mc_xi = np.clip(np.einsum("kmm->k", phi).real, 1e-3, 1e4)
        self._mc_a = phi @ inv

    def _set_weights(self, w: np.ndarray) -> None:
        self.weights = w
        self._weights_conj = w.conj()
        self._passes_reference = bool(np.array_equal(w, self._e_ref))
        self._solved += 1

    def _spatial_presence(self, x: np.ndarray) -> np.ndarray:
        """Multichannel SPP of frames (T, K, M) from the last solve's spatial statistics."""
        beta = _sum_mics((x.conj() * np.matmul(self._mc_a, x[..., None])[..., 0]).real)
        xi = self._mc_xi
        exponent = np.clip(np.maximum(beta, 0.0) / (1.0 + xi), 0.0, 50.0)
        return 1.0 / (1.0 + (1.0 + xi) * np.exp(-exponent))


def _sum_mics(values: np.ndarray) -> np.ndarray:
    """Sum over the last (mic) axis, unrolled: faster than a reduction over 4-6 items,
    and the same arithmetic whatever the leading shape (block-size invariance)."""
    total = values[..., 0].copy()
    for m in range(1, values.shape[-1]):
        total += values[..., m]
    return total
