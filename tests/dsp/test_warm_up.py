"""The warm-up `python -m edge_agent process` runs on a file's first seconds
(ArrayPipeline.warm_up): what it keeps of the room, what starts afresh, and the CLI's
`--cold`."""

from __future__ import annotations

import numpy as np
from conftest import FS, array_scene
from test_cli import write_multichannel

from edge_agent.dsp.arrays import load_array
from edge_agent.dsp.cli import WARM_UP_S, main, process_array, read_wav
from edge_agent.dsp.mask import SpeechMask
from edge_agent.dsp.pipeline import ArrayPipeline

ARRAY = "respeaker-4mic-pi"


def test_after_a_warm_up_the_stream_starts_afresh_with_nothing_of_the_warm_up_in_it() -> None:
    """The output of the warm-up's audio never leaks into the stream after it: silence
    after a loud warm-up comes out as silence from its first sample, and the stream's
    output is exactly as long as its input."""
    mix, _ = array_scene(seconds=3.0, snr_db=0.0, seed=3)
    stage = ArrayPipeline(load_array(ARRAY))
    stage.warm_up(mix[:-100])  # (ends mid-hop: the part hop is dropped too)
    out = stage.process(np.zeros((FS, 4), np.int16))
    assert out.size == FS - FS % stage.hop
    assert not out.any()
    assert stage.flush().size == FS % stage.hop


def test_the_mask_starts_afresh_and_the_rooms_estimators_keep_what_they_heard() -> None:
    mix, _ = array_scene(seconds=4.0, snr_db=0.0, seed=3)
    stage = ArrayPipeline(load_array(ARRAY))
    cold = ArrayPipeline(load_array(ARRAY))
    stage.warm_up(mix)
    fresh = SpeechMask()
    assert stage._mask is not None
    assert not stage._mask.h.any() and not stage._mask._gh.any()
    assert stage._mask.features._frames == fresh.features._frames == 0
    # the noise floor, the room's SNR and the AGC have heard 4 s of a 0 dB room
    assert stage.tracker.noise_psd.sum() > 100 * cold.tracker.noise_psd.sum()
    assert stage.room.snr_db < 12.0 and stage.depth > 0.5
    assert cold.depth == 0.0


def test_a_warm_up_gains_in_the_first_seconds_of_a_noisy_room() -> None:
    """A cold start passes the first second of a 0 dB room nearly as it came (the room is
    not yet known); warmed up on the file's first seconds, that second is processed as the
    rest of the room is."""
    mix, clean = array_scene(seconds=6.0, snr_db=0.0, seed=4)
    first = slice(0, FS)

    def si_sdr(y: np.ndarray) -> float:
        c, e = clean[first], y[first].astype(np.float64)
        target = (e @ c) / (c @ c) * c
        return float(10 * np.log10((target @ target) / ((e - target) @ (e - target))))

    cold = process_array(mix, ARRAY, warm_up_s=0.0)
    warm = process_array(mix, ARRAY)
    raw = mix[:, 0]
    assert si_sdr(cold) < si_sdr(raw) + 1.0
    assert si_sdr(warm) > si_sdr(cold) + 1.0  # (+1.9 dB measured)


def test_the_command_warms_up_by_default_and_cold_gives_the_units_power_on(tmp_path) -> None:
    mix, _ = array_scene(seconds=3.0, snr_db=5.0, seed=6)
    src = write_multichannel(tmp_path / "in.wav", mix)
    for flags, warm_up_s in (([], WARM_UP_S), (["--cold"], 0.0)):
        dst = tmp_path / "out.wav"
        assert main([*flags, str(src), str(dst)]) == 0
        out, _ = read_wav(dst)
        assert np.array_equal(out[:, 0], process_array(mix, ARRAY, warm_up_s=warm_up_s))
    assert not np.array_equal(
        process_array(mix, ARRAY), process_array(mix, ARRAY, warm_up_s=0.0)
    )


def test_an_empty_file_and_a_file_shorter_than_a_hop_still_come_out_as_long() -> None:
    for n in (0, 1, 100, 255):
        x = np.zeros((n, 4), np.int16)
        assert process_array(x, ARRAY).shape == (n,)
