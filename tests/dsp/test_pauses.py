"""The Wiener gain in pauses (pipeline.py, _pause_wiener_gains): steady noise out of the
pauses of rooms the depth leaves alone, the talker kept.

Synthetic scenes (conftest.array_scene: a harmonic talker with syllables and pauses, white
noise and a rumble), at SNRs the room's depth reads as clean or nearly (15-30 dB)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FS, array_scene
from test_events import run as run_all
from test_events import si_sdr_db


def run(mix: np.ndarray, **kw) -> tuple[np.ndarray, object]:
    """The front end without the Wiener gain on the noise heard in pauses, which takes
    steady noise out of speech and pauses alike (test_pause_noise.py): this is the one in
    pauses alone."""
    return run_all(mix, pause_noise_floor_db=None, **kw)


def _pauses(clean: np.ndarray) -> np.ndarray:
    """Samples where the talker is silent (its power over 32 ms under -90 dBFS), from 3 s."""
    power = np.convolve(clean**2, np.ones(512) / 512, mode="same")
    return (power < 1e-9) & (np.arange(clean.size) >= 3 * FS)


@pytest.mark.parametrize("snr_db", [15.0, 25.0, 30.0])
def test_pauses_lose_their_steady_noise_and_the_talker_gains(snr_db: float) -> None:
    """Measured: the pauses 2.2-3.7 dB quieter, SI-SDR +0.4-0.9 dB over the same front end
    without it (seeds 3 and 4)."""
    mix, clean = array_scene(seconds=8.0, snr_db=snr_db, seed=3)
    on, _ = run(mix)
    off, _ = run(mix, pause_wiener_floor_db=None)
    pauses = _pauses(clean)
    assert pauses.mean() > 0.2  # the scene has pauses to take the noise out of

    def level(y: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(y[pauses] ** 2)))

    assert level(on) < level(off) - 1.5
    assert si_sdr_db(on, clean) > si_sdr_db(off, clean) + 0.2
    after = slice(3 * FS, None)  # (the front end's first seconds cost a clean room either way)
    raw = mix[:, 0] / 32768
    assert si_sdr_db(on[after], clean[after]) > si_sdr_db(raw[after], clean[after])


def test_nothing_before_the_mask_has_settled_and_nothing_more_at_full_depth() -> None:
    """A stream that opens with a talker: the noise tracker takes the talker for the floor
    and the mask is unsure of it, so in its first 2 s nothing is taken (the talker went
    12 dB down). At full depth the mask has already done it: the floor is 0 dB there."""
    mix, _ = array_scene(seconds=5.0, snr_db=25.0, seed=3)
    on, _ = run(mix)
    off, _ = run(mix, pause_wiener_floor_db=None)
    first = 2 * FS - 512  # output samples made of frames before 2 s only
    assert np.array_equal(on[:first], off[:first])
    assert not np.array_equal(on[2 * FS :], off[2 * FS :])
    full_on, _ = run(mix, adaptive_depth=False)
    full_off, _ = run(mix, adaptive_depth=False, pause_wiener_floor_db=None)
    assert np.array_equal(full_on, full_off)


def test_a_soft_voice_in_the_pauses_is_not_a_pause() -> None:
    """A second talker 20 dB under the first, talking through its pauses: frames whose speech
    band stands 3 dB over the tracked floor are not pauses, whatever the mask says, so the
    soft voice keeps nearly its level (measured -1.1 dB there, against -3.5 dB of noise
    alone)."""
    mix, clean = array_scene(seconds=8.0, snr_db=25.0, seed=3)
    second, _ = array_scene(seconds=8.0, snr_db=90.0, seed=7)  # another talker, all but clean
    soft = np.clip(mix + np.roll(second, FS // 3, axis=0) * 0.1, -32768, 32767)
    soft = soft.astype(np.int16)
    pauses = _pauses(clean)

    def drop(x: np.ndarray) -> float:
        on, _ = run(x)
        off, _ = run(x, pause_wiener_floor_db=None)
        return float(10 * np.log10(np.mean(on[pauses] ** 2) / np.mean(off[pauses] ** 2)))

    assert drop(soft) > drop(mix) + 1.0
