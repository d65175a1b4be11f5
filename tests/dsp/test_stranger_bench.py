"""The noises of `scripts/bench dsp-stranger` and the training's switched-on noise are what
their docstrings say: a bench that scored against the wrong sound would say nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

FS = 16000


def _levels_db(x: np.ndarray, seconds: float = 0.25) -> np.ndarray:
    step = int(seconds * FS)
    frames = x[: x.size // step * step].reshape(-1, step)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


@pytest.mark.parametrize("kind", ["concentrator", "radio", "sink", "siren", "printer", "cart"])
def test_each_noise_is_finite_full_length_and_at_unit_power(kind: str) -> None:
    import bench_dsp_stranger as stranger

    n = 8 * FS
    x = getattr(stranger, kind)(n, np.random.default_rng(3))
    assert x.shape == (n,) and np.isfinite(x).all()
    assert np.mean(x**2) == pytest.approx(1.0, rel=1e-6)


def test_the_sink_runs_for_part_of_the_scene_and_the_printer_in_bursts() -> None:
    import bench_dsp_stranger as stranger

    n = 12 * FS
    for seed in range(4):
        sink = _levels_db(stranger.sink(n, np.random.default_rng(seed)))
        assert sink.max() - sink.min() > 40  # off (the mic's floor) and on
        on = np.mean(sink > sink.max() - 10)
        assert 0.2 < on < 0.8, on
        printer = _levels_db(stranger.printer(n, np.random.default_rng(seed)))
        assert printer.max() - np.median(printer) > 20 or printer.max() - printer.min() > 40


def test_the_siren_sweeps_between_its_two_pitches() -> None:
    import bench_dsp_stranger as stranger

    x = stranger.siren(12 * FS, np.random.default_rng(5))
    peaks = []
    for k in range(0, x.size - 2048, 4000):
        spectrum = np.abs(np.fft.rfft(x[k : k + 2048] * np.hanning(2048)))
        peaks.append(np.argmax(spectrum) * FS / 2048)
    assert min(peaks) >= 550 and max(peaks) <= 1650
    assert max(peaks) - min(peaks) > 300  # it moves: a wail, not a tone


def test_the_training_s_switched_noise_is_quiet_before_it_comes_on() -> None:
    """`train_dsp_mask.py --onset`: the noise is at least 10 dB quieter before its onset
    (a bed or the mic's self-noise) than after it, and in some clips it stops again."""
    import train_dsp_mask as train

    n = 8 * FS
    pools = {"noise": [np.random.default_rng(k).standard_normal(n) for k in range(4)]}

    def respond(_distance: tuple[float, float]) -> np.ndarray:
        return np.array([1.0])

    stops = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        noise = np.random.default_rng(100 + seed).standard_normal(n)
        out = train._switched(noise, rng, pools, respond)
        levels = _levels_db(out, 0.1)
        assert levels[:2].max() < levels.max() - 10  # before 0.3 s: off
        assert levels.max() == pytest.approx(0.0, abs=1.0)  # on: the noise as it came
        stops += levels[-5:].max() < levels.max() - 10
    assert 0 < stops < 12


def test_the_training_s_phase_sensitive_target_is_what_a_real_gain_can_give_back() -> None:
    """`train_dsp_mask.py --phase`: the target |S| cos(angle(S) - angle(Y)) is the talkers'
    magnitude where the noise is absent, at most it anywhere, negative where the noise turned
    the bin against them, and the gain that reaches it leaves the least error any real gain
    on the mixture can."""
    import train_dsp_mask as train

    rng = np.random.default_rng(3)
    talkers = rng.standard_normal((50, 257)) + 1j * rng.standard_normal((50, 257))
    noise = rng.standard_normal((50, 257)) + 1j * rng.standard_normal((50, 257))
    assert np.allclose(train.phase_sensitive_target(talkers, talkers), np.abs(talkers))
    mixture = talkers + noise
    target = train.phase_sensitive_target(talkers, mixture)
    assert (target <= np.abs(talkers) + 1e-9).all()
    assert (target < 0).any()  # bins where the noise points the mixture away from them
    best = target / np.abs(mixture)  # the gain that reaches it
    for other in (np.abs(talkers) / np.abs(mixture), best * 1.1, best - 0.05):
        worse = np.abs(other * mixture - talkers) ** 2
        assert (np.abs(best * mixture - talkers) ** 2 <= worse + 1e-9).all()


def test_the_training_widens_a_gru_without_changing_what_it_computes() -> None:
    """`train_dsp_mask.py --init W --hidden H` with W's GRU narrower than H: the wider
    network starts as W (the unit's numpy inference gives the same mask to the bit), while
    its new units have weights in, so training can give them a part."""
    import train_dsp_mask as train

    from edge_agent.dsp.mask import WEIGHTS, SpeechMask

    narrow = dict(np.load(WEIGHTS))
    old = narrow["gru_w_hh"].shape[1]
    new = old + 32
    rng = np.random.default_rng(5)
    # the wider model's own first weights, random as a fresh model's are
    fresh = {
        k: rng.uniform(-0.1, 0.1, (*v.shape[:-1], new) if k == "out_w" else v.shape)
        for k, v in narrow.items()
        if not k.startswith("gru_")
    }
    inner = narrow["in_w"].shape[0]
    fresh |= {
        "gru_w_ih": rng.uniform(-0.1, 0.1, (3 * new, inner)),
        "gru_w_hh": rng.uniform(-0.1, 0.1, (3 * new, new)),
        "gru_b_ih": rng.uniform(-0.1, 0.1, 3 * new),
        "gru_b_hh": rng.uniform(-0.1, 0.1, 3 * new),
    }
    wide = train.widened(narrow, fresh)
    assert wide["gru_w_hh"].shape == (3 * new, new)
    assert wide["out_w"].shape == (narrow["out_w"].shape[0], new)
    power = np.random.default_rng(6).gamma(1.0, 1e-4, (200, narrow["out_w"].shape[0]))
    small, large = SpeechMask(narrow), SpeechMask(wide)
    assert large.hidden_size == new
    assert np.array_equal(small(power), large(power))
    # the new units take the features in (fresh weights): they are not dead
    assert np.abs(wide["gru_w_ih"][old:new]).min() > 0
    assert np.abs(large.h[old:]).max() > 1e-3


def test_the_training_s_voices_made_from_their_parts_are_talk_at_any_pitch() -> None:
    """`train_dsp_mask.py --voices`: each utterance rises and falls with its syllables as a
    talker's turn does (the material check every recorded voice passes), at unit active
    level, and their pitch spans a low man's voice to a child's."""
    import train_dsp_mask as train
    from bench_dsp_material import active_level, is_speech

    rng = np.random.default_rng(8)
    pitches = []
    for _ in range(24):
        x = train.parametric_voice(rng).astype(np.float64)
        assert 0.8 * FS <= x.size <= 3.5 * FS
        assert np.isfinite(x).all()
        assert is_speech(x)
        assert active_level(x) == pytest.approx(1.0, rel=1e-3)
        pitches.append(_loudest_pitch(x))
    assert min(pitches) < 140 and max(pitches) > 220
    # with neither pitch nor kind held, every draw is as it was: the same stream
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(train.parametric_voice(a), train.parametric_voice(b, None, None))


def test_a_voice_made_from_its_parts_keeps_its_pitch_from_one_utterance_to_the_next() -> None:
    """`scripts/bench dsp-voices` gives each talker one voice for the scene: held at a pitch
    (here a child's, 310 Hz, and a man's, 105 Hz), its utterances all speak near it, where
    free ones spread over 75-400 Hz."""
    import train_dsp_mask as train

    rng = np.random.default_rng(12)
    for base in (310.0, 105.0):
        held = [
            _harmonic_pitch(train.parametric_voice(rng, base_hz=base, formants=True))
            for _ in range(8)
        ]
        # the voice glides, falls and jitters about its pitch, by up to about a third (and a
        # pitch read from one stretch of a voice may be an octave off now and then)
        assert 0.8 * base < float(np.median(held)) < 1.25 * base, (base, held)
        assert sum(0.6 * base < p < 1.45 * base for p in held) >= 6, (base, held)


def _harmonic_pitch(x: np.ndarray) -> float:
    """The pitch whose first five harmonics stand highest over the points halfway between
    them in x's loudest 128 ms (its spectrum's log magnitude, summed): free of the octave
    errors an autocorrelation makes once formants lift one harmonic over the rest."""
    frame = 2048
    piece = _loudest(x, frame, frame // 4)
    spectrum = np.log(np.abs(np.fft.rfft(piece * np.hanning(frame))) + 1e-9)
    candidates = np.arange(75.0, 401.0)
    k = np.arange(1, 6)

    def at(freqs: np.ndarray) -> np.ndarray:
        return np.interp(freqs * frame / FS, np.arange(spectrum.size), spectrum)

    score = [at(f * k).sum() - at(f * (k - 0.5)).sum() for f in candidates]
    return float(candidates[int(np.argmax(score))])


def _loudest_pitch(x: np.ndarray) -> float:
    """The pitch of x's loudest 64 ms: the strongest autocorrelation lag in 2.5-13 ms."""
    frame = 1024
    piece = _loudest(x, frame, frame // 2) * np.hanning(frame)
    ac = np.correlate(piece, piece, "full")[frame - 1 :]
    lag = int(np.argmax(ac[FS // 400 : FS // 75])) + FS // 400
    return FS / lag


def _loudest(x: np.ndarray, frame: int, step: int) -> np.ndarray:
    """x's loudest `frame` samples, of those starting every `step` (as float64)."""
    x = np.asarray(x, np.float64)
    loud = max(range(0, x.size - frame, step), key=lambda i: np.sum(x[i : i + frame] ** 2))
    return x[loud : loud + frame]
