"""The trained speech mask: per frame and bin, how much of the reference mic is talker.

A small causal GRU (scripts/train_dsp_mask.py trains it offline with PyTorch; its weights
ship as `speech_mask.npz` beside this file) reads log-mel features of one mic's spectrum,
one 16 ms frame at a time with no look-ahead, and outputs a mask in 0..1 per STFT bin: near
1 where the talkers dominate, near 0 where noise does. The frame's features also reach the
output layer directly (a linear skip, weights `skip_w`): the GRU's state says what the room
holds, the frame's own fine spectrum where (docs/dsp.md, "The skip"). It is what tells
the beamformer which time-frequency points teach it "noise" and which "talker" -- the one
thing the array's spatial statistics cannot say by themselves (docs/dsp.md, the oracle
study).

Inference is numpy only (the unit never has torch), in float32 as the model was trained,
frame by frame with every product a vector times a matrix: the same arithmetic however the
caller cut its blocks (a float32 product over a block's frames rounds differently with the
number of rows, and the output then moved by 1 LSB with the cut). The features stay
float64 and vectorised over the block. The result matches the torch model within float
tolerance (tests/dsp). docs/dsp.md, Cost, has what float32 bought at 40 ms blocks.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("speech_mask.npz")
FRAME_LEN = 512
SAMPLE_RATE = 16000
MEL_BANDS = 64
#: bins 2..97 (62-3000 Hz) also go in at full resolution: a voice's harmonics are resolved
FINE_BINS = slice(2, 98)
FEATURES = 3 * MEL_BANDS + (FINE_BINS.stop - FINE_BINS.start)
#: each band's floor: the minimum of its smoothed log power over 6 sub-windows of 0.5 s
FLOOR_SUBWINDOW_FRAMES = 31
FLOOR_SUBWINDOWS = 6
#: the per-band mean the features are taken relative to forgets over ~3 s
NORM_TIME_CONSTANT_S = 3.0
_EPS = 1e-9


def mel_filterbank(
    bands: int = MEL_BANDS, frame_len: int = FRAME_LEN, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """(bands, bins) triangular filters, equally spaced on the mel scale from 0 Hz to
    Nyquist; a band narrower than a bin is widened to one bin so none is empty."""
    bins = frame_len // 2 + 1
    freqs = np.linspace(0, sample_rate / 2, bins)

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(0, mel(sample_rate / 2), bands + 2))
    step = freqs[1]
    bank = np.zeros((bands, bins))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        lo, hi = min(lo, mid - step), max(hi, mid + step)
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        bank[b] = np.clip(np.minimum(rise, fall), 0.0, None)
    return bank


class MaskFeatures:
    """Log-mel features of a power spectrum, relative to two causal running means (each
    band's own, so the steady noise's colour drops out, and the all-band level, so the
    capture level drops out and the spectral shape stays) and to each band's floor (its
    minimum over the last ~3 s: how far the frame stands above the noise, the classic cue
    for speech presence that a GRU cannot easily compute itself); and the log power of the
    bins up to 3 kHz relative to the level, where a voice's harmonics show. The means are
    normalised exponential averages over ~3 s, so the first frame is its own mean and
    nothing depends on a warm-up constant."""

    def __init__(self, hop_s: float = 0.016) -> None:
        self.bank = mel_filterbank().T.copy()  # (bins, bands)
        self._a = float(np.exp(-hop_s / NORM_TIME_CONSTANT_S))
        self._band_acc = np.zeros(MEL_BANDS)
        self._weight = 0.0
        self._smoothed: np.ndarray | None = None
        self._current_min = np.full(MEL_BANDS, np.inf)
        self._minima = np.full((FLOOR_SUBWINDOWS, MEL_BANDS), np.inf)
        self._lowest = self._minima.min(axis=0)  # kept with the minima: they change rarely
        self._frames = 0

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """(T, bins) |X|^2 -> (T, FEATURES) features; vectorised over the block, the same
        as running the recursions frame by frame (tests/dsp/test_mask.py)."""
        frames, bands = power.shape[0], MEL_BANDS
        out = np.empty((frames, FEATURES))
        if frames == 0:
            return out
        # (few numpy calls: the unit calls this with 2-3 frames every 40 ms)
        logmel = power @ self.bank
        logmel += _EPS
        np.log(logmel, out=logmel)
        fine = out[:, 3 * bands :]
        np.add(power[:, FINE_BINS], _EPS, out=fine)
        np.log(fine, out=fine)
        carry, rest, spread = _recursion(self._a, frames)
        acc = spread @ logmel
        acc += carry[:, None] * self._band_acc
        weight = carry * self._weight
        weight += rest
        mean = acc / weight[:, None]
        level = mean.sum(axis=1, keepdims=True) * (1.0 / bands)  # = mean.mean(axis=1)
        self._band_acc, self._weight = acc[-1], float(weight[-1])
        carry, _, spread = _recursion(0.7, frames)
        before = logmel[0] if self._smoothed is None else self._smoothed
        smoothed = spread @ logmel
        smoothed += carry[:, None] * before
        self._smoothed = smoothed[-1]
        floor = out[:, 2 * bands : 3 * bands]
        current, minima = self._current_min, self._minima
        lowest = self._lowest
        t = 0
        while t < frames:
            stop = min(frames, t + FLOOR_SUBWINDOW_FRAMES - self._frames % FLOOR_SUBWINDOW_FRAMES)
            running = np.minimum.accumulate(smoothed[t:stop], axis=0)
            np.minimum(running, current, out=running)
            np.minimum(running, lowest, out=floor[t:stop])
            current = running[-1]
            self._frames += stop - t
            if self._frames % FLOOR_SUBWINDOW_FRAMES == 0:
                minima = np.roll(minima, 1, axis=0)
                minima[0] = current
                current = smoothed[stop - 1]
                lowest = minima.min(axis=0)
                np.minimum(current, lowest, out=floor[stop - 1])
            t = stop
        self._current_min, self._minima, self._lowest = current, minima, lowest
        np.subtract(logmel, mean, out=out[:, :bands])
        np.subtract(logmel, level, out=out[:, bands : 2 * bands])
        np.subtract(logmel, floor, out=floor)
        fine -= level
        out *= 0.25  # log units to about unit spread
        return out


@lru_cache(maxsize=256)
def _recursion(a: float, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_t = a y_{t-1} + (1 - a) x_t over a block as y = carry * y_before + spread @ x; also
    1 - carry (the weight of what the block brought)."""
    t = np.arange(frames)
    lag = t[:, None] - t[None, :]
    spread = np.where(lag >= 0, (1.0 - a) * a ** np.maximum(lag, 0), 0.0)
    carry = a ** (t + 1.0)
    return carry, 1.0 - carry, spread


class SpeechMask:
    """Streaming mask estimator: power spectra (T, bins) in, mask (T, bins) in 0..1 out."""

    def __init__(self, weights: str | Path | dict | None = None, hop_s: float = 0.016) -> None:
        params = (
            np.load(WEIGHTS if weights is None else weights)
            if not isinstance(weights, dict)
            else weights
        )
        f = np.float32
        w_in = np.asarray(params["in_w"], f).T  # (features, inner)
        self.b_in = np.asarray(params["in_b"], f)
        w_ih = np.asarray(params["gru_w_ih"], f).T  # (in, 3H)
        w_hh = np.asarray(params["gru_w_hh"], f).T  # (H, 3H)
        b_ih = np.asarray(params["gru_b_ih"], f)
        b_hh = np.asarray(params["gru_b_hh"], f)
        size = self.hidden_size = w_hh.shape[0]
        # the recurrence runs once per frame, so it is arranged to cost few numpy calls:
        # sigmoid(a) = (1 + tanh(a / 2)) / 2, with the 1/2 folded into the r and z weights
        # (exact: a power of two), and every bias that can be added with the input's
        # projection is
        half = np.concatenate([np.full(2 * size, 0.5, f), np.ones(size, f)])
        self._w_ih_half = w_ih * half
        self._b_gates = (b_ih + np.concatenate([b_hh[: 2 * size], np.zeros(size, f)])) * half
        self._b_hn = b_hh[2 * size :]
        # the output layer, halved (exact: a power of two) for the sigmoid done in place
        w_out_half = 0.5 * np.asarray(params["out_w"], f).T  # (H, bins)
        self._bins = w_out_half.shape[1]
        self._b_out_half = 0.5 * np.asarray(params["out_b"], f)
        # Products that share a vector are one product a frame, each output still one
        # frame's vector times a matrix (fewer numpy calls; the weights are held once, so
        # concatenated): the frame's features times the input layer and, with weights
        # trained with --skip, the skip straight to the output layer (halved likewise);
        # the new state times the next frame's recurrent weights and the output layer,
        # the first part kept (`_gh`) for the next frame
        self._inner = w_in.shape[1]
        self._skip = "skip_w" in params
        # (row-major: a product with it rounds as it did when these were two; the state's
        # is column-major, as its parts were)
        self._w_features = np.ascontiguousarray(
            np.concatenate([w_in, 0.5 * np.asarray(params["skip_w"], f).T], axis=1)
            if self._skip
            else w_in
        )  # (features, inner [+ bins])
        self._w_state = np.concatenate([w_hh * half, w_out_half], axis=1)  # (H, 3H + bins)
        self._hop_s = hop_s
        self.reset()

    def reset(self) -> None:
        """Start afresh, as on a new stream: the features' running means and floors and the
        GRU's state."""
        size = self.hidden_size
        self.features = MaskFeatures(self._hop_s)
        self.h = np.zeros(size, np.float32)
        self._gh = np.zeros(3 * size, np.float32)  # h @ w_hh for the next frame (h = 0: 0)

    def __call__(self, power: np.ndarray) -> np.ndarray:
        features = self.features(power).astype(np.float32)
        frames = features.shape[0]
        size, twice, thrice = self.hidden_size, 2 * self.hidden_size, 3 * self.hidden_size
        h, gh, b_hn, w_state = self.h, self._gh, self._b_hn, self._w_state
        inner = self._inner
        # What does not wait for the state, for every frame at once: the input layer (and the
        # skip) and the input's projection on the gates. Still one frame's vector times a
        # matrix each: a product over a stack of (1, n) rows is the same vector-matrix
        # product a frame (the module docstring), in one numpy call
        both = np.matmul(features[:, None, :], self._w_features)[:, 0]
        x = both[:, :inner] + self.b_in
        np.tanh(x, out=x)
        gis = np.matmul(x[:, None, :], self._w_ih_half)[:, 0]
        gis += self._b_gates
        # each frame's new state times the next frame's recurrent weights and the output
        # layer, a row each
        states = np.empty((frames, w_state.shape[1]), np.float32)
        for gi, state in zip(gis, states, strict=True):
            rz = gh[:twice]
            rz += gi[:twice]
            np.tanh(rz, out=rz)  # 2 sigmoid(r, z) - 1
            rz += 1.0
            rz *= 0.5
            n = gh[twice:]
            n += b_hn
            n *= rz[:size]
            n += gi[twice:]
            np.tanh(n, out=n)
            h = h - n
            h *= rz[size:]
            h += n  # (1 - z) n + z h
            np.matmul(h, w_state, out=state)
            gh = state[:thrice]  # (the next frame works on it in place: not the output's part)
        self._gh = gh
        self.h = h
        # (contiguous, as numpy's float32 loops below are fastest on)
        out = states[:, thrice:] + both[:, inner:] if self._skip else states[:, thrice:].copy()
        # sigmoid(y) = (1 + tanh(y / 2)) / 2, with the 1/2 folded into the output layer
        # (exact: a power of two) and every step in place
        out += self._b_out_half
        np.tanh(out, out=out)
        out += 1.0
        out *= 0.5
        return out.astype(np.float64)
