"""The README's commands run as written from a plain shell: no virtual environment on
PATH, nothing activated. The scripts find the project's .venv themselves. The demo also
stops everything it started when its terminal goes away (SIGHUP)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import subprocess
import termios
import wave
from pathlib import Path

from support import random_multichannel, wait_for, write_wav

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def plain_shell_env() -> dict:
    """The environment of a new login shell: no venv on PATH, none activated."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                  if ".venv" not in p and "virtualenv" not in p)
    return env


def test_readme_shows_the_commands_this_test_runs():
    assert "scripts/demo --headless" in README
    assert re.search(r"scripts/provision .*info", README)


def test_demo_and_provision_run_from_a_plain_shell(tmp_path):
    env = plain_shell_env()
    probe = subprocess.run(["python3", "-c", "import sys; print(sys.prefix != sys.base_prefix)"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False", "the test shell must not be inside a venv"

    help_ = subprocess.run([str(ROOT / "scripts" / "provision"), "--help"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0, help_.stderr
    assert "enroll" in help_.stdout

    rec = tmp_path / "D"
    demo = subprocess.run([str(ROOT / "scripts" / "demo"), "--headless", "--seconds", "8",
                           "--record-dir", str(rec)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    with wave.open(str(rec / "scribe.wav")) as w:
        assert w.getnframes() == 8 * 16000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (its parent has not reaped it yet)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_closing_the_demos_terminal_stops_every_component(tmp_path):
    """The demo runs with a pty as its controlling terminal; closing the terminal (the
    kernel's SIGHUP to the session) ends the demo and every process it started."""
    wav = tmp_path / "in.wav"
    write_wav(wav, random_multichannel(30, 4, seed=3))
    rec = tmp_path / "D"
    master, slave = pty.openpty()

    def become_terminal_session():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), "--input", str(wav), "--dsp", "off", "--record-dir",
         str(rec)], stdin=slave, stdout=slave, stderr=slave, env=plain_shell_env(),
        cwd=tmp_path, preexec_fn=become_terminal_session)
    os.close(slave)
    out = bytearray()

    def read_some() -> bytes:
        try:
            data = os.read(master, 65536)
        except OSError:
            return b""
        out.extend(data)
        return bytes(out)

    try:
        wait_for(lambda: b"scribe <- session_start" in read_some(), 120,
                 "the demo to stream (interactive mode, on a terminal)")
        pids = json.loads((rec / "pids.json").read_text())
        assert set(pids) >= {"broker", "relay", "scribe_client", "agent"}
        assert all(_alive(p) for p in pids.values())
        os.close(master)  # the terminal window closes
        proc.wait(60)
        wait_for(lambda: not any(_alive(p) for p in pids.values()), 30,
                 "every component to stop after SIGHUP")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

