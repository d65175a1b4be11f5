"""The decision-directed Wiener gain in two steps (noise.py's PostFilter, Plapous, Marro
and Scalart's TSNR): a strong onset passes in its first frame, where one step lags it; a lone
noise peak is taken lower; the run over a block is the gain frame by frame; and the front
end with it gives the same bytes however its input is cut.

The filter's numbers are exact for a noise of power 1 (the gain of an onset with excess SNR
gamma - 1 after noise alone, one step: 0.0526 (gamma - 1) / (1.0526 + 0.0526 (gamma - 1))).
"""

from __future__ import annotations

import numpy as np
from conftest import array_scene
from test_events import run

from edge_agent.dsp.noise import PostFilter

BINS = 8


def _gains(powers: np.ndarray, two_step: bool, floor_db: float = -80.0) -> np.ndarray:
    """The gains of `powers` (T, BINS) over a noise of power 1, in one run."""
    return PostFilter(BINS, gain_floor_db=floor_db, two_step=two_step).run(
        powers, np.ones_like(powers)
    )


def _noise_then(last: float, frames: int = 40, seed: int = 0) -> np.ndarray:
    """`frames` of noise alone (powers of a complex Gaussian of power 1), then one frame of
    power `last` in every bin."""
    rng = np.random.default_rng(seed)
    powers = rng.exponential(1.0, (frames + 1, BINS))
    powers[-1] = last
    return powers


def test_a_strong_onset_passes_in_its_first_frame() -> None:
    """A talker 13 dB over the noise, after 40 frames of noise alone: one step gives its
    first frame about 0.5 (-6 dB; measured 0.49), two steps over 0.8 (-1.7 dB)."""
    powers = _noise_then(20.0)
    one, two = _gains(powers, False)[-1], _gains(powers, True)[-1]
    assert np.all(one < 0.55), one
    assert np.all(two > 0.8), two
    # and it holds the talker as one step does once the onset is past
    talk = np.vstack([powers, np.full((10, BINS), 20.0)])
    assert np.allclose(_gains(talk, True)[-1], _gains(talk, False)[-1], atol=0.02)


def test_a_lone_noise_peak_is_taken_lower() -> None:
    """A frame of noise at three times its mean power (a peak of the noise itself, the
    cause of "musical" noise): two steps give it a lower gain than one."""
    powers = _noise_then(3.0)
    one, two = _gains(powers, False)[-1], _gains(powers, True)[-1]
    assert np.all(two < 0.6 * one), (one, two)


def test_the_floor_holds_after_the_second_step() -> None:
    """Noise alone at a -18 dB floor: no gain below it, in either step's output."""
    powers = _noise_then(0.5, seed=1)
    floor = 10 ** (-18 / 20)
    for two_step in (False, True):
        g = _gains(powers, two_step, -18.0)
        assert g.min() >= floor - 1e-12
        assert np.isclose(g.min(), floor)  # (noise alone: it reaches the floor)


def test_a_run_is_the_gain_frame_by_frame() -> None:
    """`run` over a block and `gain` frame by frame agree to rounding, with a noise that
    moves (the pipeline's rows of tracked noise) and digital silence among the frames."""
    rng = np.random.default_rng(2)
    powers = rng.exponential(1.0, (60, BINS)) * np.linspace(0.5, 40.0, 60)[:, None]
    powers[20:23] = 0.0
    noise = np.exp(rng.normal(0.0, 0.3, (60, BINS)))
    whole = PostFilter(BINS, gain_floor_db=-200.0).run(powers, noise)
    frame_by_frame = PostFilter(BINS, gain_floor_db=-200.0)
    rows = np.array([frame_by_frame.gain(p, n) for p, n in zip(powers, noise, strict=True)])
    assert np.allclose(whole, rows, rtol=1e-12, atol=1e-15)
    assert np.all((whole >= 0.0) & (whole <= 1.0))


def test_the_front_end_with_two_steps_is_block_invariant() -> None:
    """The same bytes in 40 ms blocks as in one call, and not those of one step (the
    second step acts in this 10 dB room)."""
    mix, _ = array_scene(seconds=6.0, snr_db=10.0, seed=5)
    whole, _ = run(mix)
    in_blocks, _ = run(mix, block=640)
    one_step, _ = run(mix, two_step=False)
    assert np.array_equal(whole, in_blocks)
    assert not np.array_equal(whole, one_step)
