"""The Wiener gain on the noise heard in pauses (pipeline.py, _pause_noise_gains): steady
noise out of every frame, speech included, at any depth; the noise learned deep in the
pauses, as a log average, and never above the tracked floor.

Synthetic scenes (conftest.array_scene: a harmonic talker with syllables and pauses, white
noise and a rumble; test_depth.rumble_room: HVAC rumble under a clean speech band). Each
compares the front end with and without this gain (`pause_noise_floor_db=None`)."""

from __future__ import annotations

import numpy as np
from conftest import FS, array_scene
from test_depth import rumble_room
from test_events import run, si_sdr_db

from edge_agent.dsp.arrays import load_array
from edge_agent.dsp.pipeline import ArrayPipeline

OFF = {"pause_noise_floor_db": None}


def _residual_db(y: np.ndarray, clean: np.ndarray, where: np.ndarray) -> float:
    """The level of what is not the talker (y less its best-scaled talker) where `where`."""
    a = (y @ clean) / (clean @ clean)
    return float(10 * np.log10(np.mean((y - a * clean)[where] ** 2)))


def test_steady_noise_goes_out_of_the_speech_too() -> None:
    """A 20 dB room of steady noise, which the speech band's depth leaves nearly alone
    (the bands that may go deeper, BAND_DEPTHS, held off: the band above 1.5 kHz takes
    part of this white noise too): while the talker talks (from 3 s), less noise than
    without the gain, and the talker's SI-SDR up (measured: -0.75/-0.83 dB of noise in
    the speech, +0.61/+0.62 dB SI-SDR, seeds 3 and 4). Nothing in the first 2 s, before
    the mask has settled (as the pauses' gain); the same bytes in 40 ms blocks as in one
    call."""
    for seed in (3, 4):
        mix, clean = array_scene(seconds=8.0, snr_db=20.0, seed=seed)
        on, stage = run(mix, band_depths=())
        off, _ = run(mix, band_depths=(), **OFF)
        assert stage._pause_noise_frames > FS // 256  # it learned from over a second of pauses
        speech = np.convolve(clean**2, np.ones(512) / 512, mode="same") > 1e-6
        speech[: 3 * FS] = False
        assert speech.mean() > 0.15
        assert _residual_db(on, clean, speech) < _residual_db(off, clean, speech) - 0.5
        assert si_sdr_db(on, clean) > si_sdr_db(off, clean) + 0.4
        first = 2 * FS - 512  # output samples made of frames before 2 s only
        assert np.array_equal(on[:first], off[:first])

    streamed, _ = run(mix, block=640, band_depths=())
    assert np.array_equal(streamed, on)


def test_rumble_under_a_clean_speech_band_goes_at_any_depth() -> None:
    """HVAC rumble 10 dB over the talker below 150 Hz, the speech band clean: the speech
    band's depth stays low. Without the rumble band's own depth (BAND_DEPTHS) this gain
    alone takes most of it (measured: -6.9 -> -2.9 dB SI-SDR, the raw mic -10.0); with the
    band as well, +1.1 dB more than the band alone."""
    mix, clean = rumble_room(12.0, seed=14)
    tail = slice(7 * FS, None)  # after the band's floor has seen its window

    def score(**kw) -> float:
        y, _ = run(mix, **kw)
        return si_sdr_db(y[tail], clean[tail])

    assert score(band_depths=()) > score(band_depths=(), **OFF) + 3.0
    assert score() > score(**OFF) + 0.7


def _stopping_room(
    seconds: float, stop_s: float, seed: int, snr_db: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """The talker with steady noise (white and a rumble, `snr_db` under it) that falls
    40 dB at `stop_s`: a fan switched off, the mics' own hiss left. (n, 4) int16 and the
    talker at mic 0."""
    talker, clean = array_scene(seconds=seconds, snr_db=120.0, seed=seed)  # the talker alone
    rng = np.random.default_rng(seed + 100)
    n = talker.shape[0]
    rumble = np.convolve(rng.standard_normal(n), np.ones(64) / 8, mode="same")
    noise = rng.standard_normal((n, 4)) + rumble[:, None]
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise[:, 0] ** 2) / 10 ** (snr_db / 10)) * 32768
    noise[int(stop_s * FS) :] *= 0.01
    return np.clip(np.round(talker + noise), -32768, 32767).astype(np.int16), clean


def test_a_noise_that_stops_lets_the_talker_go() -> None:
    """The noise heard in pauses is a slow log average (2 s): after the fan stops it would
    still say "noise" for many seconds and cut the talker's weak parts (measured, with the log
    average alone: -6.3 dB SI-SDR against the front end without this gain, 2-7 s after the
    stop). It is never taken above the tracked floor, nor above twice what the latest pause
    frames held, so from the first pause after the stop (at 7 s here) the talker comes out
    as well as without it (measured +0.6 to +0.8 dB, seeds 5-7). Before that pause, in two
    seconds of continuous talk, the weak parts the noise had buried are still cut: what is
    not the talker rises from -51 to -46 dBFS under a -23 dBFS talker."""
    mix, clean = _stopping_room(12.0, 5.0, seed=5)
    on, stage = run(mix)
    off, _ = run(mix, **OFF)
    after = slice(7 * FS, None)
    assert stage._pause_noise_frames > 0
    assert si_sdr_db(on[after], clean[after]) > si_sdr_db(off[after], clean[after]) - 0.3


def test_bursts_in_the_pauses_barely_move_the_noise_learned() -> None:
    """Beeps at 6 kHz (above the speech band, so the frames they sound in are still
    pauses), well over the steady noise in their bins, a fifth of the time: the noise learned
    there is a log average, which they raise by 6.0-6.2 dB (seeds 3 and 4), where an average
    of the power rose by 26 dB and would have cut the talker's highs in those bins between
    the beeps."""
    mix, _ = array_scene(seconds=8.0, snr_db=20.0, seed=3)
    t = np.arange(mix.shape[0]) / FS
    tone = np.sin(2 * np.pi * 6000 * t) * ((t % 0.5) < 0.1)
    bed = np.std(mix[:, 0].astype(float))
    beeps = mix + np.round(tone * bed * 0.6)[:, None]
    beeps = np.clip(beeps, -32768, 32767).astype(np.int16)
    _, quiet = run(mix)
    _, beeping = run(beeps)
    k = round(6000 * 512 / FS)
    bins = slice(k - 1, k + 2)
    assert beeping._pause_noise is not None and quiet._pause_noise is not None
    rise = 10 * np.log10(beeping._pause_noise[bins].sum() / quiet._pause_noise[bins].sum())
    assert 0.0 < rise < 10.0


def test_a_noise_that_stops_under_talk_without_a_pause_is_let_go() -> None:
    """After the fan stops (at 5 s) the talker goes on for 2 s with no pause deep enough to
    learn from: the noise heard in pauses cannot follow, and the tracked floor that caps it
    rises into the talker. The tracker's minimum-statistics floor falls in the gaps between
    syllables, and the estimate goes down to PAUSE_NOISE_OVER_MINIMUM times it at each
    sub-window's end: measured 1.5 dB at 7 s (summed over the bins, seed 5); 8.7 dB without,
    0.5 dB under the 9.2 dB of 6 s (a frame of a syllable gap read as a pause between 5.5
    and 5.8 s, and one between 6.5 and 7 s). The same bytes in 40 ms blocks."""
    mix, _ = _stopping_room(12.0, 5.0, seed=5)

    def learned_at(seconds: float, **kw) -> tuple[float, int]:
        stage = ArrayPipeline(load_array("respeaker-4mic-pi"), **kw)
        stage.process(mix[: int(seconds * FS)])
        assert stage._pause_noise is not None
        return float(10 * np.log10(stage._pause_noise.sum())), stage._pause_noise_frames

    off = {"pause_noise_over_minimum": None}
    at_stop, frames = learned_at(6.0, **off)
    held, frames_then = learned_at(7.0, **off)
    assert frames_then - frames <= 1  # (a frame at most learned from between)
    assert abs(held - at_stop) < 1.0  # it cannot follow the fan's stop by itself
    lowered, frames_lowered = learned_at(7.0)
    assert frames_lowered == frames_then
    assert lowered < held - 3.0

    on, _ = run(mix)
    streamed, _ = run(mix, block=640)
    assert np.array_equal(streamed, on)
