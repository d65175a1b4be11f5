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


def test_a_talker_at_the_dead_bands_edge_does_not_ride_the_gain() -> None:
    """The gain holds while the output's level is within the dead band, and starts to move
    only once the level is 4 dB beyond it (more than the level estimate's own sawtooth).
    Held to the input's level with no margin, a talker whose peaks sat a dB or two about
    the band's edge (-40 dBFS with the pipeline's 20 dB band) rode the gain 0-1.8 dB up and
    down with the level's every rise and sag: inaudible, but at 30 dB SNR it took 6 dB of
    SI-SDR from a long file (docs/dsp.md, "Tones that come back": the AGC at its dead
    band's edge)."""

    def ride(low_db: float) -> list[float]:
        agc = SpeechAgc(hop_s=HOP_S, dead_band_db=20.0)
        gains = []
        for k in frames(40):
            # peaks at -37.5 dBFS sagging to `low_db` and back, every 5 s
            peak_db = -37.5 + (low_db + 37.5) * ((k * HOP_S % 5.0) / 5.0)
            level_db = peak_db if k % 16 == 0 else peak_db - 6.0
            gains.append(20 * np.log10(agc.update(10 ** (level_db / 10), speech_presence=1.0)))
        return gains

    at_edge = ride(-42.5)  # 2.5 dB past the band's edge at its lowest
    assert max(at_edge) == min(at_edge) == 0.0
    beyond = ride(-47.5)  # 7.5 dB past it: the gain rises once, to the edge, and holds
    settled = beyond[len(frames(10)) :]
    assert max(settled) - min(settled) < 0.5
    assert 1.0 < settled[-1] < 8.0


def test_the_gain_moves_only_as_far_as_the_dead_bands_edge_and_back_when_it_must() -> None:
    """A quiet talker raises the gain until the output's peaks are at the band's lower
    edge; a loud one after it brings the gain down only until the output is at the band's
    upper edge, and a level within the band leaves it where it is."""
    agc = SpeechAgc(hop_s=HOP_S, dead_band_db=6.0)  # target -20 dBFS: the band is -26..-14
    for _ in frames(12):
        agc.update(10 ** (-40 / 10), speech_presence=1.0)
    assert abs(agc.gain_db - 14.0) < 0.05  # -40 + 14 = -26, the lower edge
    for _ in frames(6):
        agc.update(10 ** (-22 / 10), speech_presence=1.0)  # -22 + 14 = -8: 6 dB over -14
    assert abs(agc.gain_db - 8.0) < 0.05  # -22 + 8 = -14, the upper edge
    for _ in frames(6):
        agc.update(10 ** (-30 / 10), speech_presence=1.0)  # -30 + 8 = -22: within
    assert abs(agc.gain_db - 8.0) < 0.05


def test_a_gain_held_at_its_limit_keeps_its_margin() -> None:
    """A talker so quiet that the band's edge is beyond the gain's +24 dB limit: the gain
    stops at the limit, and a louder talker after it, over the band at that gain by less
    than the margin, leaves it there (it does not go on chasing the edge it could not
    reach)."""
    agc = SpeechAgc(hop_s=HOP_S, dead_band_db=6.0)  # the band is -26..-14 dBFS
    for _ in frames(12):
        agc.update(10 ** (-60 / 10), speech_presence=1.0)  # the edge is +34 dB away
    assert agc.gain_db == 24.0
    for _ in frames(3):
        agc.update(10 ** (-36 / 10), speech_presence=1.0)  # -36 + 24 = -12: 2 dB over
    assert agc.gain_db == 24.0
