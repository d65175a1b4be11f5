"""`python -m edge_agent process` (via edge_agent.dsp.cli.main)."""

from __future__ import annotations

import wave

import numpy as np
from conftest import FS, array_scene

from edge_agent.dsp.cli import main, read_wav, write_wav


def write_multichannel(path, samples: np.ndarray, rate: int = FS):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


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


def test_unknown_array_and_an_impossible_rate_are_errors(tmp_path, capsys) -> None:
    src = tmp_path / "in.wav"
    write_multichannel(src, np.zeros((1600, 4), np.int16), rate=48000)
    assert main([str(src), str(tmp_path / "o.wav"), "--array", "nope"]) == 2
    assert "unknown mic array" in capsys.readouterr().err
    write_multichannel(src, np.zeros((1600, 4), np.int16), rate=4000)
    assert main([str(src), str(tmp_path / "o.wav")]) == 2
    assert "4000 Hz" in capsys.readouterr().err
    (tmp_path / "text.wav").write_text("not audio")
    assert main([str(tmp_path / "text.wav"), str(tmp_path / "o.wav")]) == 2
    assert "not a WAV file" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_a_damaged_header_or_an_unwritable_output_is_a_clear_error(tmp_path, capsys) -> None:
    """Headers cut short (scipy's reader raised struct.error or UnboundLocalError through
    the command) and an output in a folder that does not exist (wave raised from its own
    cleanup) are one line on stderr and exit 2, and the output is checked before the file
    is processed."""
    good = _wav(1, 4, FS, 16, np.zeros((1600, 4), "<i2").tobytes())
    damaged = {
        "cut in fmt": good[:30],
        "fmt, no data": b"RIFF\x0c\x00\x00\x00WAVEfmt garbage",
        "cut in data's header": good[:40],
    }
    for name, data in damaged.items():
        (tmp_path / "bad.wav").write_bytes(data)
        assert main([str(tmp_path / "bad.wav"), str(tmp_path / "o.wav")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("process: ") and "not a WAV file" in err, (name, err)
        assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "o.wav").exists()
    (tmp_path / "in.wav").write_bytes(good)
    missing = tmp_path / "no" / "such" / "folder" / "out.wav"
    assert main([str(tmp_path / "in.wav"), str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"process: cannot write {missing}: No such file or directory\n"


def test_without_scipy_a_file_that_needs_it_is_a_clear_error(
    tmp_path, capsys, monkeypatch
) -> None:
    """A bare `pip install scribelink` has numpy but not scipy (the unit's extras bring it):
    a plain 16-bit file at 16 kHz is still processed; a 24-bit file or one at 48 kHz says
    what to install instead of a ModuleNotFoundError's traceback."""
    import sys

    for name in ("scipy", "scipy.io", "scipy.io.wavfile", "scipy.signal"):
        monkeypatch.setitem(sys.modules, name, None)  # (import then raises ImportError)
    mix, _ = array_scene(seconds=1.0)
    write_multichannel(tmp_path / "plain.wav", mix)
    assert main([str(tmp_path / "plain.wav"), str(tmp_path / "o.wav")]) == 0
    pcm24 = np.zeros((1600, 4), np.int32).view(np.uint8).reshape(1600, 4, 4)[..., 1:]
    (tmp_path / "deep.wav").write_bytes(_wav(1, 4, FS, 24, pcm24.tobytes()))
    assert main([str(tmp_path / "deep.wav"), str(tmp_path / "o2.wav")]) == 2
    err = capsys.readouterr().err
    assert "needs scipy" in err and "scribelink[unit]" in err and "Traceback" not in err
    write_multichannel(tmp_path / "48k.wav", np.zeros((4800, 4), np.int16), rate=48000)
    assert main([str(tmp_path / "48k.wav"), str(tmp_path / "o3.wav")]) == 2
    err = capsys.readouterr().err
    assert "48000 Hz" in err and "needs scipy" in err
    assert not (tmp_path / "o2.wav").exists() and not (tmp_path / "o3.wav").exists()


def _processed(tmp_path, src, *flags: str) -> np.ndarray:
    dst = tmp_path / "out.wav"
    assert main([*flags, str(src), str(dst)]) == 0
    out, rate = read_wav(dst)
    assert rate == FS
    return out[:, 0]


def _wav(fmt: int, channels: int, rate: int, bits: int, payload: bytes) -> bytes:
    """A WAV file by hand: `fmt` 1 (PCM), 3 (float) or 0xFFFE (extensible, as sox writes
    for more than two channels, with the PCM subformat GUID)."""
    import struct

    align = channels * bits // 8
    body = struct.pack("<HHIIHH", fmt, channels, rate, rate * align, align, bits)
    if fmt == 0xFFFE:
        guid = struct.pack("<IHH", 1, 0x0000, 0x0010) + bytes.fromhex("800000aa00389b71")
        body += struct.pack("<HHI", 22, bits, (1 << channels) - 1) + guid
    chunks = b"fmt " + struct.pack("<I", len(body)) + body
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_the_wavs_recorders_write_are_read_as_the_same_samples(tmp_path) -> None:
    """sox's extensible header, 24-bit and 32-bit float files: the same 16-bit samples
    in, so the same output, bit for bit, as the plain 16-bit file."""
    mix, _ = array_scene(seconds=1.0)
    plain = tmp_path / "plain.wav"
    write_multichannel(plain, mix)
    reference = _processed(tmp_path, plain)
    as_int = mix.astype(np.int32)
    variants = {
        "extensible": _wav(0xFFFE, 4, FS, 16, mix.astype("<i2").tobytes()),
        "24-bit": _wav(
            1,
            4,
            FS,
            24,
            b"".join(int(v << 8).to_bytes(3, "little", signed=True) for v in as_int.ravel()),
        ),
        "float": _wav(3, 4, FS, 32, (mix / 32768.0).astype("<f4").tobytes()),
    }
    for name, data in variants.items():
        src = tmp_path / f"{name}.wav"
        src.write_bytes(data)
        samples, rate = read_wav(src)
        assert rate == FS and np.array_equal(samples, mix), name
        assert np.array_equal(_processed(tmp_path, src), reference), name


def test_a_48k_recording_is_resampled_and_stays_aligned(tmp_path, capsys) -> None:
    from scipy.signal import resample_poly

    mix, clean = array_scene(seconds=2.0)
    up = np.clip(np.round(resample_poly(mix.astype(float), 3, 1, axis=0)), -32768, 32767)
    src = tmp_path / "48k.wav"
    write_multichannel(src, up.astype(np.int16), rate=48000)
    y = _processed(tmp_path, src).astype(np.float64)
    assert "resampled from 48000 Hz" in capsys.readouterr().err
    assert y.size == mix.shape[0]
    lags = [float(np.dot(np.roll(y, -k)[FS:], clean[FS:])) for k in range(-40, 41)]
    assert int(np.argmax(lags)) - 40 == 0
    # the resampler's effect, from power-on (--cold) and warmed up, each against the same
    # file at 16 kHz. (Warmed up, this 2 s file is scored inside the mask's first seconds,
    # which start afresh after the warm-up: 3.1 / 2.9 dB measured for 48 / 16 kHz, against
    # 6.3 / 6.2 from power-on and the raw mic's 2.0.)
    warm = y
    y = _processed(tmp_path, src, "--cold").astype(np.float64)
    at_16k = write_multichannel(tmp_path / "16k.wav", mix)
    direct = _processed(tmp_path, at_16k, "--cold").astype(np.float64)
    direct_warm = _processed(tmp_path, at_16k).astype(np.float64)

    def si_sdr(e: np.ndarray) -> float:
        c, e = clean[FS:], e[FS:]
        target = (e @ c) / (c @ c) * c
        return float(10 * np.log10((target @ target) / ((e - target) @ (e - target))))

    # at least as well processed as the 16 kHz recording (not sample for sample: the
    # resampler takes out what lies above 7.6 kHz, and the trained mask reads the whole
    # spectrum; measured 6.3 dB against 6.2)
    assert si_sdr(y) > si_sdr(direct) - 0.5
    assert si_sdr(warm) > si_sdr(direct_warm) - 0.5
    assert si_sdr(direct) > si_sdr(mix[:, 0].astype(np.float64)) + 1.0
    assert si_sdr(warm) > si_sdr(mix[:, 0].astype(np.float64)) + 0.5


def test_a_file_of_only_the_mics_is_placed_on_the_mic_channels(tmp_path, capsys) -> None:
    """The USB array captures six channels (processed, four mics, playback); a file of
    its four raw mics is taken as those mics."""
    mix, _ = array_scene(seconds=1.0)
    six = np.zeros((mix.shape[0], 6), np.int16)
    six[:, 1:5] = mix
    dst6, dst4 = tmp_path / "o6.wav", tmp_path / "o4.wav"
    usb = ["--array", "respeaker-usb-v2"]
    assert main([str(write_multichannel(tmp_path / "six.wav", six)), str(dst6), *usb]) == 0
    assert main([str(write_multichannel(tmp_path / "four.wav", mix)), str(dst4), *usb]) == 0
    assert "4 channels taken as the array's mics" in capsys.readouterr().err
    assert np.array_equal(read_wav(dst6)[0], read_wav(dst4)[0])


def test_write_wav_roundtrip(tmp_path) -> None:
    x = (np.arange(100) * 300 - 15000).astype(np.int16)
    write_wav(tmp_path / "m.wav", x)
    y, rate = read_wav(tmp_path / "m.wav")
    assert rate == FS and np.array_equal(y[:, 0], x)


def test_broken_float_samples_are_silence_or_full_scale(tmp_path) -> None:
    """NaN from a broken writer reads as silence, infinities and beyond-full-scale floats
    as full scale; the file still processes."""
    x = np.zeros((1600, 4), np.float32)
    x[100:200], x[300:400], x[500:600], x[700] = np.nan, np.inf, -4.0, 0.5
    src = tmp_path / "broken.wav"
    src.write_bytes(_wav(3, 4, FS, 32, x.astype("<f4").tobytes()))
    samples, _ = read_wav(src)
    assert (samples[100:200] == 0).all() and (samples[300:400] == 32767).all()
    assert (samples[500:600] == -32768).all() and (samples[700] == 16384).all()
    assert _processed(tmp_path, src).size == 1600


def test_a_plain_16bit_wav_is_read_without_scipy(tmp_path) -> None:
    """Most files are plain 16-bit PCM: read with the standard library, so the command does
    not pay scipy.io's import (a fifth of a second, most of its start) for them; an
    extensible header still goes to scipy's reader and gives the same samples."""
    import subprocess
    import sys

    mix, _ = array_scene(seconds=1.0)
    plain, extensible = tmp_path / "plain.wav", tmp_path / "extensible.wav"
    write_multichannel(plain, mix)
    extensible.write_bytes(_wav(0xFFFE, 4, FS, 16, mix.astype("<i2").tobytes()))
    probe = (
        "import sys; from edge_agent.dsp.cli import read_wav; s, r = read_wav(sys.argv[1]); "
        "print(s.shape[0], r, 'scipy.io' in sys.modules)"
    )
    for path, scipy_used in ((plain, "False"), (extensible, "True")):
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == [str(mix.shape[0]), str(FS), scipy_used], out
