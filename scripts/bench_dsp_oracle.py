"""`scripts/bench dsp --oracle`: where the gain at 0 dB SNR could come from, with knowledge a
real front end does not have. TUNE scenes only (never TEST).

Each row is a filter fed something from the scene's ground truth (the talkers' and the
noise's images at every mic), scored by SI-SDR against the talkers' image at the reference
mic, as the main bench scores ours:

- the true noise PSD, long-term (the best any stationary noise tracker can learn) or
  smoothed over 0.24 s (a tracker that follows the noise as it changes), into a
  decision-directed Wiener post-filter on the reference mic;
- the true *spatial* statistics of talkers and noise over the scene (normalised spatial
  covariances, power removed), turned into a per-bin talker posterior by a complex angular
  central Gaussian likelihood ratio: applied as a gain, or as the mask of a mask-based
  multichannel Wiener filter (covariances over 0.5 s, causal);
- the same spatial models learned causally from labels a level detector can give
  (frames near the speech band's floor = noise, bins 6 dB over their floor in frames 6 dB
  over the floor = talkers): what the array's spatial information is worth without the
  right labels.
"""

from __future__ import annotations

import numpy as np
from bench_dsp_scenes import SNRS_DB, build_scene

N, H = 512, 256
WINDOW = np.sqrt(np.hanning(N + 1)[:-1])
FLOOR = 10 ** (-15 / 20)


def stft(x: np.ndarray) -> np.ndarray:
    """(..., n) -> (..., T, K), the pipeline's 512/256 sqrt-Hann grid."""
    n = x.shape[-1]
    pad = np.concatenate(
        [np.zeros((*x.shape[:-1], N - H)), x, np.zeros((*x.shape[:-1], N))], axis=-1
    )
    frames = (n + N - H) // H
    index = np.arange(frames)[:, None] * H + np.arange(N)
    return np.fft.rfft(pad[..., index] * WINDOW, axis=-1)


def istft(spectra: np.ndarray, n: int) -> np.ndarray:
    frames = np.fft.irfft(spectra, n=N, axis=-1) * WINDOW
    out = np.zeros(frames.shape[0] * H + N)
    for t, frame in enumerate(frames):
        out[t * H : t * H + N] += frame
    return out[N - H : N - H + n]


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    residual = estimate - target
    return float(10 * np.log10((target @ target) / (residual @ residual + 1e-20)))


def smooth(x: np.ndarray, frames: float) -> np.ndarray:
    """Causal exponential average along axis 0, normalised by its accumulated weight."""
    a = np.exp(-1 / frames)
    out = np.empty_like(x)
    acc, weight = np.zeros_like(x[0]), 0.0
    for t in range(x.shape[0]):
        acc = a * acc + (1 - a) * x[t]
        weight = a * weight + (1 - a)
        out[t] = acc / weight
    return out


def wiener_dd(noisy: np.ndarray, noise_psd: np.ndarray, alpha: float = 0.95) -> np.ndarray:
    """Decision-directed Wiener gains (T, K), floored at -15 dB."""
    power = np.abs(noisy) ** 2
    gains = np.empty(power.shape)
    previous = np.zeros(power.shape[1])
    for t in range(power.shape[0]):
        lam = np.maximum(noise_psd[t], 1e-20)
        xi = alpha * previous / lam + (1 - alpha) * np.maximum(power[t] / lam - 1, 0)
        gains[t] = np.maximum(xi / (1 + xi), FLOOR)
        previous = gains[t] ** 2 * power[t]
    return gains


def acg_log_likelihood(y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log p(y / |y|) under a complex angular central Gaussian with matrix b, per bin.
    y (T, K, M); b (K, M, M) or (T, K, M, M)."""
    mics = y.shape[-1]
    z = y / (np.linalg.norm(y, axis=-1, keepdims=True) + 1e-20)
    inverse = np.linalg.inv(b)
    if inverse.ndim == 3:
        inverse = inverse[None]
    q = np.einsum("tkm,tkmn,tkn->tk", z.conj(), inverse, z).real
    return -np.linalg.slogdet(b)[1] - mics * np.log(np.maximum(q, 1e-20))


def normalised(cov: np.ndarray) -> np.ndarray:
    mics = cov.shape[-1]
    trace = np.einsum("...mm->...", cov).real / mics
    return cov / (trace[..., None, None] + 1e-30) + 1e-3 * np.eye(mics)


def mask_mwf(y: np.ndarray, talker: np.ndarray) -> np.ndarray:
    """Mask-based MWF for the reference mic's talker image, covariances over 0.5 s."""
    outer = np.einsum("tkm,tkn->tkmn", y, y.conj())
    r_s = smooth(talker[..., None, None] * outer, 31)
    r_n = smooth((1 - talker)[..., None, None] * outer, 31)
    load = 1e-4 * np.einsum("tkmm->tk", r_s + r_n).real[..., None, None] * np.eye(y.shape[-1])
    w = np.linalg.solve(r_s + r_n + load + 1e-14 * np.eye(y.shape[-1]), r_s[..., :, :1])[..., 0]
    return np.einsum("tkm,tkm->tk", w.conj(), y)


def causal_models(y: np.ndarray, noise_w: np.ndarray, talker_w: np.ndarray) -> np.ndarray:
    """Talker posterior from spatial models learned causally (3 s) from weighted frames."""
    mics = y.shape[-1]
    power = (np.abs(y) ** 2).sum(-1)
    outer = np.einsum("tkm,tkn->tkmn", y, y.conj()) / (power[..., None, None] + 1e-30)
    eye = np.broadcast_to(np.eye(mics), (1, *outer.shape[1:]))
    b_n = normalised(smooth(noise_w[..., None, None] * outer, 188))
    b_s = normalised(smooth(talker_w[..., None, None] * outer, 188))
    b_n = np.concatenate([eye, b_n[:-1]])  # statistics up to the frame before
    b_s = np.concatenate([eye, b_s[:-1]])
    llr = acg_log_likelihood(y, b_s) - acg_log_likelihood(y, b_n)
    return 1 / (1 + np.exp(-np.clip(llr, -50, 50)))


def running_floor(power: np.ndarray, window: int = 375, parts: int = 12) -> np.ndarray:
    """Causal minimum of the lightly smoothed power over the last `window` frames
    (sub-window minimum tracking), ignoring the first 8 frames (the scene's onset)."""
    sub = window // parts
    minima = np.full((parts, *power.shape[1:]), np.inf)
    current = np.full(power.shape[1:], np.inf)
    smoothed = power[8].copy()
    out = np.empty_like(power)
    for t in range(power.shape[0]):
        if t >= 8:
            smoothed = 0.6 * smoothed + 0.4 * power[t]
            current = np.minimum(current, smoothed)
            if t % sub == 0:
                minima = np.roll(minima, 1, axis=0)
                minima[0] = current
                current = smoothed.copy()
        out[t] = np.minimum(current, minima.min(axis=0))
    return np.where(np.isfinite(out), out, np.inf)


def level_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise / talker weights a level detector can give, per bin (T, K): frames near the
    speech band's 6 s floor are noise; bins 6 dB over their own floor, in frames 6 dB over
    the band's, are talkers."""
    power = (np.abs(y) ** 2).mean(-1)
    band = power[:, 8:129].sum(1)
    floor = running_floor(band)
    bin_floor = running_floor(power)
    noise = np.repeat((band < 2 * floor)[:, None], power.shape[1], axis=1).astype(float)
    talker = ((band > 4 * floor)[:, None] & (power > 4 * bin_floor)).astype(float)
    return noise, talker


def study(index: int) -> dict[str, float]:
    scene = build_scene("tune", index, keep_images=True)
    assert scene.images is not None
    mix = scene.mixture.astype(np.float64).T / 32768
    ref = scene.images["speech"][0]
    n = ref.size
    noisy, talkers, noise = stft(mix), stft(scene.images["speech"]), stft(scene.images["noise"])
    y = noisy.transpose(1, 2, 0)
    raw = si_sdr(ref, mix[0])
    out = {}
    noise_power = np.abs(noise[0]) ** 2
    long_term = np.broadcast_to(noise_power.mean(0), noise_power.shape)
    out["true noise PSD, long-term -> Wiener"] = istft(wiener_dd(noisy[0], long_term) * noisy[0], n)
    out["true noise PSD over 0.24 s -> Wiener"] = istft(
        wiener_dd(noisy[0], smooth(noise_power, 15)) * noisy[0], n
    )
    s, v = talkers.transpose(1, 2, 0), noise.transpose(1, 2, 0)
    b_s = normalised(np.einsum("tkm,tkn->kmn", s, s.conj()))
    b_n = normalised(np.einsum("tkm,tkn->kmn", v, v.conj()))
    llr = acg_log_likelihood(y, b_s) - acg_log_likelihood(y, b_n)
    posterior = 1 / (1 + np.exp(-np.clip(llr, -50, 50)))
    out["true spatial models -> posterior as gain"] = istft(
        np.maximum(posterior, FLOOR) * noisy[0], n
    )
    out["true spatial models -> mask-based MWF"] = istft(mask_mwf(y, posterior), n)
    noise_w, talker_w = level_labels(y)
    blind = causal_models(y, noise_w, talker_w)
    out["spatial models from level labels -> posterior as gain"] = istft(
        np.maximum(blind, FLOOR) * noisy[0], n
    )
    out["spatial models from level labels -> mask-based MWF"] = istft(mask_mwf(y, blind), n)
    return {name: si_sdr(ref, est) - raw for name, est in out.items()}


def run(scenes: int, snr_db: float, jobs: int) -> str:
    from multiprocessing import get_context

    indices = [i for i in range(scenes) if SNRS_DB[(i // 2) % len(SNRS_DB)] == snr_db]
    with get_context("fork").Pool(jobs) as pool:
        rows = pool.map(study, indices)
    lines = [
        (
            f"Oracle study (TUNE, the {len(rows)} scenes at {snr_db:g} dB SNR; "
            "SI-SDR change from the raw reference mic, dB):"
        ),
        "",
        "| fed with | mean | worst scene |",
        "|---|---|---|",
    ]
    for name in rows[0]:
        values = [r[name] for r in rows]
        lines.append(f"| {name} | {np.mean(values):+.1f} | {min(values):+.1f} |")
    return "\n".join(lines)
