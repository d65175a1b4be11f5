"""`scripts/demo --input` takes a recording as recorders write it: here 48 kHz, 24-bit, in
the extensible WAV header sox and many recorders use (Python's `wave` module cannot
read it). The demo plays it into the unit at the 16 kHz the unit captures, and with
`--dsp off --codec pcm` the scribe gets channel 0 of that, sample for sample."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from speech_material import recorded_speech
from support import read_wav, run_demo

from edge_agent.dsp.cli import read_wav as read_any_wav
from edge_agent.dsp.cli import to_16k

SECONDS = 4


def test_a_48k_24_bit_extensible_wav_plays_through_the_demo(tmp_path) -> None:
    speech = recorded_speech(SECONDS).astype(np.float64)
    x16 = np.stack([speech, np.roll(speech, 41) / 2], axis=1)
    x48 = resample_poly(x16, 3, 1, axis=0) / 32768.0
    src = tmp_path / "X48.wav"
    sf.write(src, x48, 48000, subtype="PCM_24", format="WAVEX")
    assert src.read_bytes()[20:22] == b"\xfe\xff"  # WAVE_FORMAT_EXTENSIBLE

    rec = tmp_path / "rec"
    r = run_demo(["--headless", "--seconds", str(SECONDS), "--dsp", "off", "--codec", "pcm",
                  "--input", str(src), "--record-dir", str(rec), "--no-puck"], timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resampled from 48000 Hz to 16000 Hz" in r.stdout + r.stderr

    samples, rate = read_any_wav(src)
    expected = to_16k(samples, rate)[:, 0]
    got = read_wav(rec / "scribe.wav")[:, 0]
    assert len(got) == SECONDS * 16000
    assert np.array_equal(got, expected[: len(got)])
    # and that is the recording itself, back at 16 kHz (the resampler's edges aside)
    inner = slice(1600, len(got) - 1600)
    err = got[inner] - speech[inner]
    assert 10 * np.log10((speech[inner] ** 2).sum() / (err**2).sum()) > 30


def test_a_mono_recording_runs_with_the_reference_mic_passed(tmp_path) -> None:
    """One channel is no array: the demo says so and passes it untouched (as --dsp off)
    rather than starting a unit whose front end cannot run (it used to restart the agent
    until it gave up)."""
    from support import write_wav

    speech = recorded_speech(3)
    src = tmp_path / "mono.wav"
    write_wav(src, speech[:, None])
    rec = tmp_path / "rec"
    r = run_demo(["--headless", "--seconds", "3", "--codec", "pcm", "--input", str(src),
                  "--record-dir", str(rec), "--no-puck"], timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "one input channel" in r.stdout + r.stderr
    got = read_wav(rec / "scribe.wav")[:, 0]
    assert np.array_equal(got, speech[: len(got)]) and len(got) == 3 * 16000
