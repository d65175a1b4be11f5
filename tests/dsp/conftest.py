"""Synthetic multichannel scenes for the DSP tests (no bench extras needed)."""

from __future__ import annotations

import numpy as np
import pytest

FS = 16000


#: first three formants (Hz) of five vowels, a man's voice (Peterson & Barney 1952): a, i, u, e, o
VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]]
)


def speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced-speech stand-in: a gliding harmonic complex whose formants move from vowel to
    vowel, one vowel a syllable, with a syllable-rate on/off envelope and pauses between
    phrases. (Formants make it a voice: a bare harmonic complex is also what a switched
    tone or a hum is, which a front end may rightly read as noise.)"""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(f0) / FS
    # harmonics up to ~5 kHz, like a voice, each at its own fixed phase (in one phase the
    # formants would ring into pulses 20 dB over the mean)
    offsets = np.random.default_rng(39).uniform(0, 2 * np.pi, 40)
    x = sum(np.sin(k * phase + offsets[k]) / k for k in range(1, 40))
    # the formants, frame by frame (numpy only: some tests run with scipy unimportable)
    size, hop = 512, 128
    window = np.hanning(size + 1)[:-1]
    starts = np.arange(0, n - size + 1, hop)
    freqs = np.fft.rfftfreq(size, 1 / FS)
    centres = (np.arange(int(3.0 * seconds) + 2) + 0.5) / 3.0  # a vowel each syllable
    vowels = VOWELS[np.arange(centres.size) * 3 % len(VOWELS)]
    shape = np.full((starts.size, freqs.size), 0.02)
    for i, width in enumerate((90.0, 110.0, 170.0)):
        track = np.interp((starts + size / 2) / FS, centres, vowels[:, i])
        shape += 1.0 / (1.0 + ((freqs[None, :] - track[:, None]) / (width / 2)) ** 2)
    frames = np.fft.irfft(np.fft.rfft(x[starts[:, None] + np.arange(size)] * window) * shape)
    voiced, weight = np.zeros(n), np.zeros(n)
    for start, frame in zip(starts, frames, strict=True):
        voiced[start : start + size] += frame * window
        weight[start : start + size] += window**2
    voiced /= np.maximum(weight, 1e-3)
    voiced *= np.sqrt(np.mean(x**2) / np.mean(voiced**2))
    syllables = (np.sin(2 * np.pi * 3.0 * t) > -0.2).astype(float)
    pauses = (np.sin(2 * np.pi * 0.35 * t + 1.0) > -0.5).astype(float)
    env = np.convolve(syllables * pauses, np.hanning(400) / 200, mode="same")
    return voiced * env + 0.01 * rng.standard_normal(n) * env


def array_scene(
    seconds: float = 4.0,
    snr_db: float = 5.0,
    seed: int = 0,
    mics: int = 4,
    talk: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, mics) int16 mixture and the clean talker at mic 0 (float, full scale = 1).

    The talker (`speechlike`, or `talk`: a dry signal, as long as the scene) reaches the
    mics with small integer delays, the noise is diffuse-ish (independent per mic plus a
    common low-frequency rumble).
    """
    rng = np.random.default_rng(seed)
    s = speechlike(seconds, rng) if talk is None else talk
    n = s.size
    delays = [0, 2, 4, 2, 1, 3][:mics]
    talker = np.stack([np.roll(s, d) for d in delays], axis=1)
    rumble = np.convolve(rng.standard_normal(n), np.ones(64) / 8, mode="same")
    noise = rng.standard_normal((n, mics)) + rumble[:, None]
    gain = np.sqrt(np.mean(talker[:, 0] ** 2) / np.mean(noise[:, 0] ** 2) / 10 ** (snr_db / 10))
    mix = talker + gain * noise
    scale = 0.05 / np.sqrt(np.mean(talker[:, 0] ** 2))
    return np.round(mix * scale * 32768).astype(np.int16), talker[:, 0] * scale


@pytest.fixture(scope="session")
def scene() -> tuple[np.ndarray, np.ndarray]:
    return array_scene()
