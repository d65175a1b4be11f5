"""The physician's button end to end: the real firmware under MicroPython (puck-sim)
over a pty, the real agent, mosquitto, relay and scribe client, through scripts/demo."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from support import archived_frames, jsonl, random_multichannel, read_wav, run_demo, write_wav

from scribelink import envelope as env
from scribelink import messages as msgs


@pytest.fixture(scope="module")
def pressed(tmp_path_factory):
    d = tmp_path_factory.mktemp("puckdemo")
    x = random_multichannel(22.0, channels=4, seed=55)
    write_wav(d / "X.wav", x)
    rec = d / "rec"
    r = run_demo(["--headless", "--seconds", "22", "--dsp", "off", "--person-acks",
                  "--input", str(d / "X.wav"),
                  "--press-at", "5", "--hold-at", "10:2,16:2", "--record-dir", str(rec)],
                 timeout=240)
    assert r.returncode == 0, r.stdout[-3000:]
    return x, rec


def _events(rec):
    return [e for e in jsonl(rec / "events.jsonl") if e["type"] == "event"]


def test_cue_reaches_the_scribe_near_the_press(pressed):
    _, rec = pressed
    cues = [e for e in _events(rec) if e["kind"] == "cue"]
    assert len(cues) == 1  # never lost, never doubled
    assert 4.8 < cues[0]["t_s"] < 6.0


def test_the_scribes_ack_lights_seen_on_the_puck(pressed):
    _, rec = pressed
    leds = [json.loads(line)["led"] for line in (rec / "puck.log").read_text().splitlines()
            if line.startswith("{") and '"led"' in line]
    assert "cue_sent" in leds
    assert leds.index("cue_seen") > leds.index("cue_sent")
    assert "paused" in leds


def test_hold_pauses_at_the_source_and_the_next_hold_resumes(pressed):
    x, rec = pressed
    ev = _events(rec)
    pause = [e for e in ev if e["kind"] == "privacy_pause"]
    resume = [e for e in ev if e["kind"] == "privacy_resume"]
    assert len(pause) == 1 and len(resume) == 1
    assert 11.5 < pause[0]["t_s"] < 13.0  # decided on release of the 2 s hold
    assert 17.5 < resume[0]["t_s"] < 19.0
    got = read_wav(rec / "scribe.wav")[:, 0]
    ch0 = x[:, 0]
    p = int(np.argmax(got[: len(ch0)] != ch0[: len(got)]))  # first sample that differs
    assert np.array_equal(got[:p], ch0[:p])
    # after the pause the audio continues from where the input was at the resume...
    tail = got[p:]
    r = next(i for i in range(p, len(ch0) - 64) if np.array_equal(ch0[i:i + 64], tail[:64]))
    assert np.array_equal(tail, ch0[r:r + len(tail)])
    assert r + len(tail) == len(ch0)
    # ...and nothing of the paused interval was captured: about 6 s are simply absent
    assert 5.5 * 16000 < r - p < 6.7 * 16000


def test_no_audio_of_the_paused_interval_exists_in_the_archive(pressed):
    x, rec = pressed
    db = sqlite3.connect(rec / "relay" / "relay.db")
    open_msg = msgs.loads(db.execute(
        "SELECT payload FROM stream WHERE kind='session_open'").fetchone()[0])
    scribe = serialization.load_pem_private_key((rec / "scribe.key").read_bytes(), None)
    key = env.unwrap_session_key(
        msgs.wrapped_key_for(open_msg, env.key_id(env.public_key_raw(scribe))), scribe,
        open_msg["unit"], bytes.fromhex(open_msg["session"]))
    sealed = b"".join(env.open_envelope(f, key)[1]
                      for _, _, f, _ in archived_frames(rec / "relay"))
    got = read_wav(rec / "scribe.wav")[:, 0]
    assert sealed == got.tobytes()  # the archive holds exactly what the scribe heard
    paused = x[(13 * 16000):(17 * 16000), 0].tobytes()
    for off in range(0, len(paused) - 64, 3200):
        assert paused[off:off + 64] not in sealed
