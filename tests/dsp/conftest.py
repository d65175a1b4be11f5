"""Synthetic multichannel scenes for the DSP tests (no bench extras needed)."""

from __future__ import annotations

import numpy as np
import pytest

FS = 16000


def speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced-speech stand-in: a gliding harmonic complex, syllable-rate on/off envelope."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(f0) / FS
    x = sum(np.sin(k * phase) / k for k in range(1, 40))  # harmonics up to ~5 kHz, like a voice
    syllables = (np.sin(2 * np.pi * 3.0 * t) > -0.2).astype(float)
    pauses = (np.sin(2 * np.pi * 0.35 * t + 1.0) > -0.5).astype(float)
    env = np.convolve(syllables * pauses, np.hanning(400) / 200, mode="same")
    return x * env + 0.01 * rng.standard_normal(n) * env


def array_scene(
    seconds: float = 4.0, snr_db: float = 5.0, seed: int = 0, mics: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(n, mics) int16 mixture and the clean talker at mic 0 (float, full scale = 1).

    The talker reaches the mics with small integer delays, the noise is diffuse-ish
    (independent per mic plus a common low-frequency rumble).
    """
    rng = np.random.default_rng(seed)
    s = speechlike(seconds, rng)
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
