"""The trained speech mask: its numpy inference is the torch model it was trained as, it is
small, streams block by block, and tells a talker from steady noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_pause_noise import FS, _stopping_room

from edge_agent.dsp.mask import WEIGHTS, MaskFeatures, SpeechMask, mel_filterbank

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "dsp_mask.npz"


def test_numpy_inference_matches_the_torch_model() -> None:
    # written by scripts/train_dsp_mask.py from torch's output on the shipped weights
    vectors = np.load(VECTORS)
    got = SpeechMask()(vectors["power"].astype(np.float64))
    expected = vectors["torch_mask"]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    assert expected.min() < 0.2 and expected.max() > 0.8  # a vector that exercises the range


def test_the_weights_are_small() -> None:
    # 148k for the GRU and its layers, 74k for the skip from the features to the output
    assert WEIGHTS.stat().st_size <= 450_000
    params = np.load(WEIGHTS)
    assert sum(params[k].size for k in params.files) < 230_000


def test_the_skip_from_the_features_is_applied_and_optional() -> None:
    """The shipped weights carry the skip (the features straight to the output layer); the
    numpy inference applies it (the torch vector above is computed with it), and weights
    without one (trained before it) still load and run as the plain GRU."""
    params = dict(np.load(WEIGHTS))
    assert params["skip_w"].shape == (257, params["in_w"].shape[1])
    power = np.load(VECTORS)["power"].astype(np.float64)  # a real mixture's spectra
    with_skip = SpeechMask(params)(power)
    without = SpeechMask({k: v for k, v in params.items() if k != "skip_w"})(power)
    assert with_skip.shape == without.shape == power.shape
    assert ((without > 0) & (without < 1)).all()
    assert np.abs(with_skip - without).max() > 0.2  # (measured 0.58; on white noise, 0.05)


def test_mask_streams_block_by_block() -> None:
    rng = np.random.default_rng(3)
    power = rng.gamma(1.0, 1e-4, size=(90, 257))
    whole = SpeechMask()(power)
    stream = SpeechMask()
    cut = np.concatenate([stream(power[a:b]) for a, b in ((0, 1), (1, 7), (7, 40), (40, 90))])
    assert np.allclose(whole, cut, atol=1e-12)


def test_mel_filterbank_covers_every_bin() -> None:
    bank = mel_filterbank()
    assert bank.shape == (64, 257)
    assert (bank.sum(axis=0)[1:] > 0).all()  # every bin but DC feeds some band
    assert (bank.sum(axis=1) > 0).all()


def test_features_ignore_the_capture_level() -> None:
    rng = np.random.default_rng(4)
    power = rng.gamma(1.0, 1e-5, size=(50, 257)) + 1e-6
    quiet, loud = MaskFeatures()(power), MaskFeatures()(power * 100.0)
    assert np.allclose(quiet, loud, atol=1e-3)


def _spectra(x: np.ndarray) -> np.ndarray:
    window = np.sqrt(np.hanning(513)[:-1])
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256]
    y = np.fft.rfft(frames * window, axis=-1)
    return y.real**2 + y.imag**2


def _recorded_speech() -> np.ndarray:
    """Real recorded voices: alsa-utils' channel-test prompts (a Debian package the
    project installs), at 16 kHz, one after another with pauses."""
    import soundfile as sf
    from scipy.signal import resample_poly

    pieces = []
    for name in ("Front_Left", "Front_Right", "Rear_Center", "Side_Left"):
        x, rate = sf.read(f"/usr/share/sounds/alsa/{name}.wav")
        x = x.mean(axis=1) if x.ndim > 1 else x
        pieces += [resample_poly(x, 16000, rate), np.zeros(8000)]
    return np.concatenate(pieces)


def test_mask_passes_a_talker_and_holds_back_steady_noise() -> None:
    rng = np.random.default_rng(5)
    talker = _recorded_speech()
    talker *= 0.05 / np.sqrt(np.mean(talker**2))
    noise = 0.01 * rng.standard_normal(talker.size)
    talker_power, noise_power = _spectra(talker), _spectra(noise)
    mask = SpeechMask()(_spectra(talker + noise))[60:]  # after the first second
    talker_bins = (talker_power > 10 * noise_power)[60:]
    noise_bins = (noise_power > 10 * talker_power)[60:]
    assert talker_bins.sum() > 1000 and noise_bins.sum() > 1000
    # more talker than not where the talker is 10 dB over the noise (0.62 measured: the
    # mask is cautious), and the noise held to a fifth (0.05 measured)
    assert mask[talker_bins].mean() > 0.5
    assert mask[noise_bins].mean() < 0.2


def test_a_talker_after_a_noise_stops_reads_as_in_a_room_that_never_had_it() -> None:
    """Steady noise at 0 and 5 dB under talk, falling 40 dB at 5 s (a fan switched off).
    In the 2.5 s after (from 5.5 s), the talker's bins read as they do in the same room
    whose noise was that low all along. The weights before (sha1 0c64dd28acf8), trained on
    noise that runs on or stops after a quieter start, kept the state they had learned on
    it and read the talker at 0.29-0.77 there, against 0.86-0.88 in the room that never had
    the noise (three seeds): the front end cut the talker for seconds after a noise (the
    sessions bench: the 10 s after a noise stops). Measured with the shipped weights
    (trained with --stops): 0.90-0.92 against 0.86-0.88."""
    after = slice(int(5.5 * FS) // 256, 8 * FS // 256)
    for seed in (3, 4, 5):
        for snr_db in (0.0, 5.0):
            stopped, _ = _stopping_room(10.0, 5.0, seed, snr_db)
            never, _ = _stopping_room(10.0, 0.0, seed, snr_db)  # (stopped from the first sample)
            heard = [_spectra(x[:, 0] / 32768.0) for x in (stopped, never)]
            talker_bins = heard[1][after] > heard[1][after].max() * 1e-3
            readings = [SpeechMask()(power)[after][talker_bins].mean() for power in heard]
            assert readings[1] > 0.8
            assert readings[0] > readings[1] - 0.1, (seed, snr_db, readings)


def _features_frame_by_frame(power: np.ndarray) -> np.ndarray:
    """The features' definition, one frame at a time (what mask.py vectorises)."""
    from edge_agent.dsp.mask import FINE_BINS, FLOOR_SUBWINDOW_FRAMES, FLOOR_SUBWINDOWS

    bank = mel_filterbank().T
    a = np.exp(-0.016 / 3.0)
    acc, weight, smoothed = np.zeros(64), 0.0, None
    current, minima = np.full(64, np.inf), np.full((FLOOR_SUBWINDOWS, 64), np.inf)
    rows = []
    for t, p in enumerate(power):
        frame = np.log(p @ bank + 1e-9)
        acc = a * acc + (1 - a) * frame
        weight = a * weight + (1 - a)
        mean = acc / weight
        smoothed = frame if smoothed is None else 0.7 * smoothed + 0.3 * frame
        current = np.minimum(current, smoothed)
        if (t + 1) % FLOOR_SUBWINDOW_FRAMES == 0:
            minima = np.roll(minima, 1, axis=0)
            minima[0] = current
            current = smoothed
        floor = np.minimum(current, minima.min(axis=0))
        fine = np.log(p[FINE_BINS] + 1e-9) - mean.mean()
        rows.append(np.concatenate([frame - mean, frame - mean.mean(), frame - floor, fine]) * 0.25)
    return np.array(rows)


def test_features_are_the_frame_by_frame_recursions_whatever_the_blocks() -> None:
    rng = np.random.default_rng(6)
    power = rng.gamma(1.0, 1e-4, size=(200, 257)) * np.exp(rng.standard_normal((200, 1)))
    expected = _features_frame_by_frame(power)
    features = MaskFeatures()
    got = np.concatenate(
        [features(power[a:b]) for a, b in ((0, 1), (1, 30), (30, 31), (31, 95), (95, 200))]
    )
    assert np.allclose(got, expected, atol=1e-9)
