"""`python -m edge_agent process` (via edge_agent.dsp.cli.main)."""

from __future__ import annotations

import wave

import numpy as np
from conftest import FS, array_scene

from edge_agent.dsp.cli import main, read_wav, write_wav


def write_multichannel(path, samples: np.ndarray, rate: int = FS) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def test_process_writes_aligned_16k_mono_of_the_same_length(tmp_path) -> None:
    mix, clean = array_scene(seconds=2.0)
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    write_multichannel(src, mix)
    assert main([str(src), str(dst)]) == 0
    out, rate = read_wav(dst)
    assert rate == FS and out.shape == (mix.shape[0], 1)
    y = out[:, 0].astype(np.float64)
    lags = [float(np.dot(np.roll(y, -k)[FS:], clean[FS:])) for k in range(-40, 41)]
    assert int(np.argmax(lags)) - 40 == 0  # time-aligned with the input


def test_channel_count_mismatch_is_a_clear_error(tmp_path, capsys) -> None:
    src = tmp_path / "stereo.wav"
    write_multichannel(src, np.zeros((1600, 2), np.int16))
    assert main([str(src), str(tmp_path / "out.wav"), "--array", "respeaker-4mic-pi"]) == 2
    err = capsys.readouterr().err
    assert "has 2 channels" in err and "captures 4" in err
    assert not (tmp_path / "out.wav").exists()


def test_unknown_array_and_wrong_rate_are_errors(tmp_path, capsys) -> None:
    src = tmp_path / "in.wav"
    write_multichannel(src, np.zeros((1600, 4), np.int16), rate=48000)
    assert main([str(src), str(tmp_path / "o.wav"), "--array", "nope"]) == 2
    assert "unknown mic array" in capsys.readouterr().err
    assert main([str(src), str(tmp_path / "o.wav")]) == 2
    assert "48000 Hz" in capsys.readouterr().err


def test_write_wav_roundtrip(tmp_path) -> None:
    x = (np.arange(100) * 300 - 15000).astype(np.int16)
    write_wav(tmp_path / "m.wav", x)
    y, rate = read_wav(tmp_path / "m.wav")
    assert rate == FS and np.array_equal(y[:, 0], x)
