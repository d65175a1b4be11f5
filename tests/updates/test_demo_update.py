"""The issue's demonstration, end to end: `scripts/demo --update-at` with the real unit
agent running from an A/B layout of signed releases of this checkout, the real relay,
mosquitto, the puck firmware under MicroPython and the robot scribe. The release goes in
between two encounters and the scribe still gets channel 0 sample for sample; a release
that fails its health check is switched back by the unit itself, losing nothing."""

from __future__ import annotations

import json
import re
import tomllib
import wave

import numpy as np
import pytest
from support import ROOT, jsonl, random_multichannel, read_wav, run_demo, write_wav

from scribelink import release as rel

SECONDS, UPDATE_AT = 8, 3
BASE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NEXT = rel.bump(BASE)


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory):
    """Releases built once per test session and reused (their wheels are cached anyway)."""
    return tmp_path_factory.mktemp("demo-releases")


def run_update_demo(tmp_path, release_dir, *extra: str) -> tuple:
    audio = random_multichannel(SECONDS, 4, seed=31)
    wav = tmp_path / "in.wav"
    write_wav(wav, audio)
    rec = tmp_path / "D"
    proc = run_demo(["--headless", "--seconds", str(SECONDS), "--dsp", "off", "--input",
                     str(wav), "--update-at", str(UPDATE_AT), "--record-dir", str(rec),
                     "--update-release-dir", str(release_dir), *extra],
                    timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    update = json.loads((rec / "update.json").read_text())
    starts = re.findall(r"event=agent_start version=(\S+) package=(\S+)",
                        (rec / "agent.log").read_text())
    return audio, rec, update, starts, proc.stdout


def assert_nothing_lost(audio, rec) -> list[dict]:
    got = read_wav(rec / "scribe.wav")
    with wave.open(str(rec / "scribe.wav")) as w:
        assert w.getnframes() == len(audio)
    assert np.array_equal(got.reshape(-1), audio[:, 0])  # all sessions, in order
    events = jsonl(rec / "events.jsonl")
    assert not [e for e in events if e.get("type") == "gap"]
    closes = [e["reason"] for e in events if e.get("type") == "session_close"]
    assert closes == ["closed_by_relay", "input_complete"]  # the encounter ended, the next ran
    return events


def test_a_signed_release_goes_in_between_encounters_and_loses_no_audio(tmp_path, release_dir):
    audio, rec, update, starts, out = run_update_demo(tmp_path, release_dir)
    assert (update["from"], update["to"], update["result"]) == (BASE, NEXT, "applied")
    assert update["running"] == NEXT and update["health"]["state"] == "pass"
    assert [s["state"] for s in update["reports"]] == [
        "offered", "downloading", "verified", "waiting", "installing", "trial", "applied"]
    # the agent ran from the installed releases, each pinned by its real path
    assert [v for v, _ in starts] == [BASE, NEXT]
    assert f"/releases/{BASE}/venv/" in starts[0][1] and f"/releases/{NEXT}/venv/" in starts[1][1]
    assert_nothing_lost(audio, rec)
    assert "scribelink-update.service" in out and f"current -> {NEXT}" in out


def test_a_release_failing_its_health_check_is_rolled_back_by_the_unit(tmp_path, release_dir):
    audio, rec, update, starts, out = run_update_demo(tmp_path, release_dir, "--update-broken")
    assert (update["from"], update["to"], update["result"]) == (BASE, NEXT, "rolled_back")
    assert update["running"] == BASE  # back on the old release, by itself
    assert "capture" in update["reason"] and "broken on purpose" in update["reason"]
    assert [v for v, _ in starts] == [BASE, NEXT, BASE]
    assert f"current -> {BASE}" in out
    assert_nothing_lost(audio, rec)
