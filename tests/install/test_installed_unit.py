"""The unit as shipped: `scripts/install-unit --root DIR --with-venv` builds the unit's venv
from a non-editable install of the source, and that installed agent -- started from a
folder that is not the checkout -- loads every module, streams through mosquitto and the
relay with the simulated puck, and the scribe gets channel 0 exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from install_support import INSTALL_UNIT, REPO
from support import random_multichannel, read_wav, write_wav

UNIT_MODULES = ("edge_agent.agent", "edge_agent.puck", "edge_agent.provision",
                "edge_agent.capture", "edge_agent.uplink", "edge_agent.dsp",
                "scribelink.pucklink")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("unit-root")
    proc = subprocess.run([sys.executable, str(INSTALL_UNIT), "--root", str(root), "--with-venv"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    python = root / "opt/scribelink/current/venv/bin/python"  # what the units' ExecStart names
    assert python.exists()
    return root, python


def test_installed_unit_imports_every_module_from_outside_the_checkout(installed, tmp_path):
    root, python = installed
    code = ("import importlib, json, sys\n"
            f"mods = {list(UNIT_MODULES)!r}\n"
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)
    for mod, path in files.items():
        real = str(Path(path).resolve())
        assert real.startswith(str(root / "opt/scribelink/releases")), (mod, path)
        assert not path.startswith(str(REPO)), (mod, path)
    # the DSP's array geometries ship inside the package: the front end builds for each
    code = ("from edge_agent.dsp import make_stage\nfrom edge_agent.dsp.arrays import "
            "available_arrays, load_array\nnames = available_arrays()\nassert len(names) >= 4\n"
            "for n in names:\n    g = load_array(n)\n"
            "    make_stage('on', channels=g.capture_channels, sample_rate=16000, array=n)\n"
            "print(' '.join(names))")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "respeaker-4mic-pi" in proc.stdout


def test_installed_agent_streams_through_the_demo_with_its_puck(installed, tmp_path):
    _, python = installed
    audio = random_multichannel(10, 4, seed=11)
    wav = tmp_path / "in.wav"
    write_wav(wav, audio)
    rec = tmp_path / "D"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo"), "--headless", "--dsp", "off",
         "--input", str(wav), "--record-dir", str(rec), "--agent-python", str(python),
         "--press-at", "3"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    agent_log = (rec / "agent.log").read_text()
    start = next(line for line in agent_log.splitlines() if "event=agent_start" in line)
    release = (python.parents[2]).resolve()  # current -> releases/<version>
    assert f"package={release}/venv/lib/" in start, start  # the installed code ran, pinned
    assert "event=puck_connected" in agent_log
    got = read_wav(rec / "scribe.wav")
    with wave.open(str(wav)) as w:
        assert w.getnframes() == len(got)
    assert np.array_equal(got.reshape(-1), audio[:, 0])
    events = [json.loads(x) for x in (rec / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events if e.get("type") == "event" and e["kind"] == "cue"] == ["cue"]


def test_installed_process_reads_a_48k_float_recording_from_another_folder(installed, tmp_path):
    """`python -m edge_agent process` as installed (its scipy from the unit's extras): a
    4-channel 48 kHz float WAV, resampled, processed, 16 kHz mono out."""
    from scipy.io import wavfile

    _, python = installed
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((48000, 4)) * 0.05).astype(np.float32)
    wavfile.write(tmp_path / "in.wav", 48000, x)
    proc = subprocess.run([str(python), "-m", "edge_agent", "process", "in.wav", "out.wav"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "resampled from 48000 Hz" in proc.stderr
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 16000)
