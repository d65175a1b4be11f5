"""The production codec end to end through the demo (ALSA capture -> Opus -> seal -> spool
-> mosquitto -> relay -> reference scribe client), on recorded speech nobody here wrote:
what the scribe hears scores as near-transparent, and the relay holds Opus, not PCM."""

from __future__ import annotations

import numpy as np
import pytest
from speech_material import delay_removed, recorded_speech
from support import read_wav, run_demo, write_wav

from scribelink import envelope as env

SECONDS = 20


@pytest.fixture(scope="module")
def opus_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo-opus")
    speech = recorded_speech(SECONDS)
    x = np.stack([speech, np.roll(speech, 41) // 2], axis=1)  # channel 1: another mic
    write_wav(d / "X.wav", x)
    rec = d / "rec"
    r = run_demo(["--headless", "--seconds", str(SECONDS), "--dsp", "off", "--codec", "opus",
                  "--input", str(d / "X.wav"), "--record-dir", str(rec), "--no-puck"],
                 timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return x, rec


def test_the_scribe_hears_channel_0_through_opus_at_pesq_and_stoi(opus_run):
    from pesq import pesq
    from pystoi import stoi

    x, rec = opus_run
    got = read_wav(rec / "scribe.wav")[:, 0]
    assert len(got) == len(x)  # every chunk decoded, whole
    ref, dec, lag = delay_removed(x[:, 0], got)
    assert 0 < lag < 400  # Opus' look-ahead (104 samples at 16 kHz), nothing more
    p = pesq(16000, ref, dec, "wb")
    s = stoi(ref, dec, 16000)
    print(f"PESQ-wb {p:.2f}  STOI {s:.3f}  delay {lag} samples")
    assert p >= 3.5 and s >= 0.95, (p, s)


def test_the_relay_stores_opus_chunks_in_at_most_4000_bytes_per_second(opus_run, tmp_path):
    """Issue 17: everything under D/relay/, the store's fixed part (schema, one page per
    table) included, is at most 4,000 bytes per second of input; the archive gives back
    every chunk, Opus, exactly as sealed. (docs/benchmarks.md, bench:sizes, has the figures
    per bitrate; the fixed part is printed apart: a long encounter does not pay it again.)"""
    from cloud_relay.store import Store

    _, rec = opus_run
    relay_bytes = sum(p.stat().st_size for p in (rec / "relay").rglob("*") if p.is_file())
    empty = Store.open("", str(tmp_path / "empty"))
    empty.close()  # as the demo's relay closes its store: compacted
    fixed = sum(p.stat().st_size for p in (tmp_path / "empty").rglob("*") if p.is_file())
    print(f"relay {relay_bytes / SECONDS:.0f} B/s in all; the empty store {fixed} B; "
          f"the recording {(relay_bytes - fixed) / SECONDS:.0f} B/s")
    assert 0 < fixed < relay_bytes
    assert relay_bytes <= 4000 * SECONDS, (relay_bytes, fixed)
    st = Store.open("", str(rec / "relay"))
    try:
        [session] = [r[0] for r in st.db.query("SELECT session FROM sessions")]
        frames = [f[2] for f in st.sealed(session, "audio", 0, 10**6)]
    finally:
        st.close()
    assert len(frames) == SECONDS * 25
    headers = [env.parse_header(f)[0] for f in frames]
    assert [h.seq for h in headers] == list(range(len(frames)))
    assert {h.codec for h in headers} == {env.CODEC_OPUS}
    assert {h.sample_count for h in headers} == {640}
