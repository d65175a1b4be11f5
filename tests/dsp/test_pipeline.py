"""Correctness of the streaming array front end (quality lives in scripts/bench dsp)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FS, array_scene

from edge_agent.dsp import make_stage
from edge_agent.dsp.arrays import available_arrays, load_array
from edge_agent.dsp.cli import WARM_UP_S, process_array
from edge_agent.dsp.pipeline import ArrayPipeline, make_array_pipeline


def stream(stage, x: np.ndarray, sizes) -> np.ndarray:
    out, i = [], 0
    for n in sizes:
        out.append(stage.process(x[i : i + n]))
        i += n
    out.append(stage.process(x[i:]))
    out.append(stage.flush())
    return np.concatenate(out)


def test_arrays_load_with_their_channel_layouts() -> None:
    assert set(available_arrays()) >= {
        "respeaker-4mic-pi",
        "respeaker-6mic",
        "respeaker-usb-v2",
        "respeaker-2mic",
    }
    four = load_array("respeaker-4mic-pi")
    assert (four.capture_channels, four.mic_channels) == (4, (0, 1, 2, 3))
    assert 0.05 < four.aperture_m < 0.1
    six = load_array("respeaker-6mic")
    assert (six.capture_channels, six.mic_channels) == (8, (0, 1, 2, 3, 4, 5))
    usb = load_array("respeaker-usb-v2")
    assert (usb.capture_channels, usb.mic_channels, usb.reference_channel) == (6, (1, 2, 3, 4), 1)
    assert load_array("respeaker-2mic").mic_positions_m.shape == (2, 3)
    assert load_array(None).name == "respeaker-4mic-pi"
    with pytest.raises(ValueError, match="unknown mic array"):
        load_array("no-such-array")


def test_make_stage_on_builds_the_pipeline_and_rejects_a_channel_mismatch() -> None:
    stage = make_stage("on", channels=4, sample_rate=FS, array="respeaker-4mic-pi")
    assert stage.latency_samples == 256
    with pytest.raises(ValueError, match="captures 4 channels"):
        make_stage("on", channels=6, sample_rate=FS, array="respeaker-4mic-pi")
    with pytest.raises(ValueError, match=r"expected blocks of shape \(n, 4\)"):
        stage.process(np.zeros((10, 3), np.int16))
    usb = make_stage("on", channels=6, sample_rate=FS, array="respeaker-usb-v2")
    assert usb.process(np.zeros((0, 6), np.int16)).shape == (0,)


@pytest.mark.parametrize("warm", [False, True])
def test_random_block_sizes_give_the_same_output_as_process(scene, warm: bool) -> None:
    """From power-on (the unit, `process --cold`) and after the warm-up `process` runs on
    the file's first seconds, any cut of the stream into blocks gives the same bits."""
    mix, _ = scene
    reference = process_array(mix, "respeaker-4mic-pi", warm_up_s=WARM_UP_S if warm else 0.0)
    rng = np.random.default_rng(1)
    sizes = []
    while sum(sizes) < mix.shape[0] + 256:
        sizes.append(int(rng.choice([0, 1, 7, 100, 255, 256, 257, 640, 1111, 3000])))
    stage = make_array_pipeline(channels=4, sample_rate=FS, array="respeaker-4mic-pi")
    if warm:
        stage.warm_up(mix[: int(WARM_UP_S * FS)])
    padded = np.concatenate([mix, np.zeros((stage.latency_samples, 4), np.int16)])
    streamed = stream(stage, padded, sizes)[stage.latency_samples :]
    assert streamed.shape == reference.shape == (mix.shape[0],)
    assert np.array_equal(streamed, reference)


def test_output_length_tracks_input_and_an_impulse_comes_out_after_the_latency() -> None:
    stage = make_array_pipeline(channels=4, sample_rate=FS, array=None)
    x = np.zeros((8000, 4), np.int16)
    x[3000] = 20000
    out = stream(stage, x, [333] * 20)
    assert out.size == x.shape[0]
    assert int(np.argmax(np.abs(out))) - 3000 == stage.latency_samples
    assert stage.latency_samples / FS <= 0.032 - 256 / FS + 1e-9  # + one hop of buffering = 32 ms


def test_noise_is_reduced_and_the_talker_kept(scene) -> None:
    """The unit from power-on (`process --cold`). conftest's talker is a harmonic stand-in
    the trained mask barely knows: warmed up, the front end trusts the mask from the first
    second and gains less on it (+0.9 dB measured, against +1.7 cold), where on the bench's
    rooms of real speech warming up gains 0.5 dB more (docs/dsp.md, "Warm-up")."""
    mix, clean = scene
    out = process_array(mix, "respeaker-4mic-pi", warm_up_s=0.0).astype(np.float64) / 32768
    raw = mix[:, 0].astype(np.float64) / 32768
    tail = slice(FS, None)  # after the first second of adaptation

    def snr(y: np.ndarray) -> float:
        a = (y[tail] @ clean[tail]) / (clean[tail] @ clean[tail])
        err = y[tail] - a * clean[tail]
        return 10 * np.log10((a * clean[tail]) @ (a * clean[tail]) / (err @ err))

    assert snr(out) > snr(raw) + 1.5  # white noise on every mic: the hardest case for the array


@pytest.mark.parametrize(
    "name, make",
    [
        ("silence", lambda n: np.zeros((n, 4), np.int16)),
        (
            "full-scale square",
            lambda n: (
                np.where((np.arange(n) // 40) % 2, 32767, -32768)[:, None]
                .repeat(4, 1)
                .astype(np.int16)
            ),
        ),
        (
            "full-scale noise",
            lambda n: np.random.default_rng(2).integers(-32768, 32768, (n, 4)).astype(np.int16),
        ),
        ("DC", lambda n: np.full((n, 4), 20000, np.int16)),
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # (a NaN cast to int16 hides)
def test_hostile_inputs_give_finite_unclipped_output(name, make) -> None:
    x = make(3 * FS)
    out = process_array(x, "respeaker-4mic-pi")
    assert out.shape == (3 * FS,)
    assert np.abs(out.astype(np.int32)).max() < 32767, "output reached full scale"
    if name in ("silence", "DC"):
        # nothing to hear: no noise bursts, no DC step ringing past the first frames
        # (the last 1024 samples hold the step into the zero padding that flushes the tail)
        assert np.abs(out[1024:-1024].astype(np.int32)).max() <= 2


def test_silence_then_speech_has_no_burst_at_the_onset(scene) -> None:
    mix, _ = scene
    x = np.concatenate([np.zeros((2 * FS, 4), np.int16), mix])
    out = process_array(x, "respeaker-4mic-pi")
    peak_onset = np.abs(out[2 * FS : 2 * FS + FS // 2].astype(np.int32)).max()
    peak_later = np.abs(out[3 * FS :].astype(np.int32)).max()
    assert np.isfinite(out).all()
    assert peak_onset <= 1.5 * peak_later


def test_dead_and_clipping_channels_are_reported_and_survived(scene) -> None:
    mix, _ = scene
    broken = mix.copy()
    broken[:, 2] = 0  # dead mic
    broken[FS:, 1] = np.clip(broken[FS:, 1].astype(np.int32) * 200, -32768, 32767)  # clipping mic
    stage = make_array_pipeline(channels=4, sample_rate=FS, array="respeaker-4mic-pi")
    out = stream(stage, broken, [640] * (broken.shape[0] // 640))
    stats = stage.stats()
    assert stats["dead_channels"] == [2]
    assert 1 in stats["clipping_channels"]
    assert np.abs(out.astype(np.int32)).max() < 32767
    assert np.std(out[FS:]) > 50  # still passing the talker


def test_stats_hold_channel_health_only_and_speech_presence_follows_the_talker(scene) -> None:
    """The unit's status travels in clear, so stats() says which mics are dead or
    clipping and nothing about levels or when people talk; the speech presence the pause
    gate and the AGC use stays inside."""
    import json

    mix, _ = scene
    stage = make_array_pipeline(channels=4, sample_rate=FS, array="respeaker-4mic-pi")
    rng = np.random.default_rng(3)
    noise_only = (rng.standard_normal((2 * FS, 4)) * 200).astype(np.int16)
    stage.process(noise_only)
    quiet = stage.speech_presence
    presences = []
    for i in range(0, mix.shape[0], 1600):
        stage.process(
            np.clip(mix[i : i + 1600].astype(np.int32) * 2, -32768, 32767).astype(np.int16)
        )
        presences.append(stage.speech_presence)
    stats = stage.stats()
    assert json.loads(json.dumps(stats)) == {"dead_channels": [], "clipping_channels": []}
    assert make_stage("off", channels=4, sample_rate=FS).stats() == stats
    assert quiet < 0.2
    assert max(presences) > 0.5
    assert min(presences) >= 0.0 and max(presences) <= 1.0


def test_usb_array_uses_only_its_four_mics() -> None:
    mix, _ = array_scene(seconds=2.0)
    six = np.zeros((mix.shape[0], 6), np.int16)
    six[:, 1:5] = mix
    six[:, 0] = 30000  # the processed channel must be ignored ...
    six[:, 5] = np.random.default_rng(4).integers(
        -30000, 30000, mix.shape[0]
    )  # ... and the playback
    out_usb = process_array(six, "respeaker-usb-v2")
    out_four = process_array(mix, "respeaker-4mic-pi")
    assert np.array_equal(out_usb, out_four)


def test_a_caller_that_reuses_its_buffer_gets_the_same_output(scene) -> None:
    """The agent hands the pipeline views of capture buffers it refills (here two, in
    turn): nothing of a block may be read after process() returns (the part-hop it keeps
    is its own copy). Garbage written over a block after the call (full scale, a clipping
    mic) must change neither the output nor the channel health."""
    mix, _ = scene
    usb = load_array("respeaker-usb-v2")  # its mics are a view of the block's columns
    x = np.zeros((mix.shape[0], usb.capture_channels), np.int16)
    x[:, list(usb.mic_channels)] = mix
    for name, data in (("respeaker-4mic-pi", mix), ("respeaker-usb-v2", x)):
        expected = make_array_pipeline(channels=data.shape[1], sample_rate=FS, array=name)
        reused = make_array_pipeline(channels=data.shape[1], sample_rate=FS, array=name)
        buffers = np.empty((2, 640, data.shape[1]), np.int16)
        for k, j in enumerate(range(0, data.shape[0], 640)):
            chunk = data[j : j + 640]
            buffer = buffers[k % 2]
            buffer[: len(chunk)] = chunk
            a = expected.process(chunk.copy())
            b = reused.process(buffer[: len(chunk)])
            buffer.fill(32767)
            assert np.array_equal(a, b) and reused.stats() == expected.stats(), (name, k)
        assert not reused.stats()["clipping_channels"]


def test_every_ablation_the_bench_runs_still_builds_and_streams() -> None:
    """`scripts/bench dsp` runs ours under each of its ABLATIONS: each must still build and
    stream (the Wiener gain in pauses first broke the one without the overrule, and only the
    bench found it)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from bench_dsp import ABLATIONS

    mix, _ = array_scene(seconds=3.0, snr_db=5.0, seed=2)
    for name, overrides in ABLATIONS.items():
        stage = ArrayPipeline(load_array("respeaker-4mic-pi"), **overrides)
        blocks = [stage.process(mix[j : j + 640]) for j in range(0, mix.shape[0], 640)]
        out = np.concatenate([*blocks, stage.flush()])
        assert out.dtype == np.int16 and out.shape == (mix.shape[0],), name


def test_the_sessions_bench_lays_a_room_end_to_end_at_each_segments_snr() -> None:
    """`scripts/bench dsp-sessions` scores long files it lays out from a scene's images: each
    segment must be at the SNR it is scored as (at the reference mic), the talkers' image the
    same in every segment, on the array's mic channels only, and nothing clipped."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from bench_dsp_sessions import lay_end_to_end

    rng = np.random.default_rng(4)
    n, mics = 16000, 4
    images = {"speech": rng.standard_normal((mics, n)) * 0.05,
              "noise": rng.standard_normal((mics, n)) * 0.3}
    snrs = [30.0, 5.0, -5.0]
    capture, reference = lay_end_to_end(images, snrs, 6, (1, 2, 3, 4), ref=0)
    assert capture.dtype == np.int16 and capture.shape == (3 * n, 6)
    assert not capture[:, [0, 5]].any()  # (the channels that are not mics stay silent)
    assert np.abs(capture).max() < 32767
    level = reference[:n] @ images["speech"][0] / (images["speech"][0] @ images["speech"][0])
    for k, snr in enumerate(snrs):
        seg = slice(k * n, (k + 1) * n)
        assert np.allclose(reference[seg], images["speech"][0] * level)
        noise = capture[seg, 1] / 32768 - reference[seg]
        measured = 10 * np.log10(np.sum(reference[seg] ** 2) / np.sum(noise**2))
        assert abs(measured - snr) < 0.05, (snr, measured)
