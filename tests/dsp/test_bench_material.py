"""The bench's recorded talkers are talk: a steady recording (Asterisk's silence prompts are
1-10 s of its codec's idle noise) normalised to speech level would be scored as a talker,
and a front end that takes it out scored as cutting the talk (bench_dsp_material.is_speech).
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

FS = 16000
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")  # (alsa-utils: scripts/setup installs it)


def _alsa(name: str) -> np.ndarray:
    from bench_dsp_material import to_16k, trim

    with wave.open(str(ALSA_SOUNDS / f"{name}.wav")) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
        return trim(to_16k(x, w.getframerate()))


@pytest.mark.parametrize("name", ["Front_Center", "Front_Left", "Rear_Right", "Side_Left"])
def test_a_spoken_recording_is_speech(name: str) -> None:
    from bench_dsp_material import SPEECH_LEVEL_SPREAD_DB, is_speech, level_spread_db

    x = _alsa(name)
    assert level_spread_db(x) > 2 * SPEECH_LEVEL_SPREAD_DB
    assert is_speech(x)


def test_a_steady_noise_at_speech_level_is_not() -> None:
    from bench_dsp_material import active_normalise, is_speech, level_spread_db

    # ALSA's own test noise, and codec-like idle noise (white, a little hum) of 1-10 s
    # normalised to speech level as the v1 pools had it
    assert not is_speech(_alsa("Noise"))
    rng = np.random.default_rng(0)
    for seconds in (1.5, 4.0, 10.0):
        t = np.arange(int(seconds * FS)) / FS
        idle = 1e-4 * rng.standard_normal(t.size) + 3e-5 * np.sin(2 * np.pi * 50 * t)
        x = active_normalise(idle)
        assert level_spread_db(x) < 2.0
        assert not is_speech(x)


def test_the_same_noise_in_syllables_would_pass_so_the_check_is_about_steadiness() -> None:
    """What the check can and cannot tell: noise cut into 200 ms bursts spreads like talk.
    (The pools are recordings of prompts; the check removes the steady ones, and only those.)"""
    from bench_dsp_material import is_speech

    rng = np.random.default_rng(1)
    x = rng.standard_normal(4 * FS)
    x[(np.arange(x.size) // (FS // 5)) % 2 == 1] *= 0.01
    assert is_speech(x)
    assert not is_speech(np.zeros(100))  # shorter than a 20 ms frame: nothing to judge
