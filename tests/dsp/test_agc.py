"""AGC and limiter on their own: no pumping, no overshoot, block-size invariant."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from edge_agent.dsp.agc import PeakLimiter, SpeechAgc

HOP_S = 0.016


def frames(seconds: float) -> range:
    return range(int(seconds / HOP_S))


def test_a_quiet_talker_is_raised_and_the_gain_holds_through_silence() -> None:
    agc = SpeechAgc(hop_s=HOP_S)
    for _ in frames(6):
        agc.update(10 ** (-50 / 10), speech_presence=1.0)  # a quiet talker, peaks at -50 dBFS
    raised = agc.gain_db
    assert raised > 10.0
    for _ in frames(10):
        agc.update(10 ** (-70 / 10), speech_presence=0.05)  # the room between sentences
    assert agc.gain_db == raised, "the gain moved while nobody spoke (pumping)"


def test_quieter_speech_like_frames_do_not_pump_the_gain_up() -> None:
    agc = SpeechAgc(hop_s=HOP_S)
    for _ in frames(3):
        agc.update(10 ** (-22 / 10), speech_presence=1.0)  # the talker near the unit
    start = agc.gain_db
    for _ in frames(2):
        agc.update(10 ** (-40 / 10), speech_presence=0.8)  # hallway voices, 18 dB down
    assert abs(agc.gain_db - start) < 1.0


def test_a_syllables_soft_onset_does_not_move_the_gain() -> None:
    """The first speech frames are an onset, quieter than the talker: the gain waits until
    a second of speech has set the level, so it is not raised and then taken back."""
    agc = SpeechAgc(hop_s=HOP_S, dead_band_db=20.0)
    levels_db = [*np.linspace(-60, -22, 8), *[-22.0] * len(frames(2))]
    gains = [agc.update(10 ** (level / 10), speech_presence=1.0) for level in levels_db]
    assert max(gains) == min(gains) == 1.0


def test_limiter_never_exceeds_its_ceiling_and_ignores_block_boundaries() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(48000) * np.repeat(rng.uniform(0.05, 3.0, 48), 1000)
    whole = PeakLimiter(sample_rate=16000).process(x.copy())
    limiter = PeakLimiter(sample_rate=16000)
    cuts = [0, 1, 500, 777, 16000, 16001, 30000, 48000]
    pieces = np.concatenate([limiter.process(x[a:b].copy()) for a, b in pairwise(cuts)])
    assert np.abs(whole).max() <= 0.89 + 1e-12
    assert np.allclose(pieces, whole, rtol=0, atol=1e-9)


def test_limiter_lets_go_after_a_burst() -> None:
    t = np.arange(16000) / 16000
    burst = 4.0 * np.sin(2 * np.pi * 440 * t[:1600])
    quiet = 0.3 * np.sin(2 * np.pi * 440 * t)
    out = PeakLimiter(sample_rate=16000).process(np.concatenate([burst, quiet]))
    assert np.abs(out[:1600]).max() <= 0.89 + 1e-12
    assert np.array_equal(out[1600 + 8000 :], quiet[8000:])  # unity gain again within 0.5 s
