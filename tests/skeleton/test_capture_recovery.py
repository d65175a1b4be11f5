"""The capture device disappears mid-session and comes back, through real alsa-lib.

The unit's PCM is ALSA's `file` plugin: input from a recording, and a copy of every
period written to a FIFO this test reads. Closing the FIFO's reader makes alsa-lib's
next read fail (EIO), as an unplugged USB array does; removing the PCM from the ALSA
configuration makes every reopen fail ("unknown PCM"), as a missing card does. Putting
both back is the replug. The agent must keep running, show the fault on the physician's
light (the real puck firmware) within 2 s, say why in its status, declare the lost
stretch as a gap, and resume by itself; nothing else may be lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from puck_harness import PuckSim
from support import (
    file_agent_toml,
    jsonl,
    keys_toml,
    random_multichannel,
    read_wav,
    relay_clinic,
    start_scribe_client,
    wait_for,
    write_wav,
)


class Tap:
    """The FIFO the capture PCM copies into: while a reader drains it, the device works;
    `unplug()` closes the reader, so the PCM's next write -- and the read -- fails."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._stop: threading.Event | None = None
        self.plug()

    def plug(self) -> None:
        stop = self._stop = threading.Event()

        def drain() -> None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while not stop.is_set():
                    if not os.read(fd, 65536):
                        time.sleep(0.005)
            finally:
                os.close(fd)

        threading.Thread(target=drain, daemon=True).start()

    def unplug(self) -> None:
        assert self._stop is not None
        self._stop.set()


def alsa_conf(path: Path, raw: Path, tap: Path, present: bool) -> None:
    system = Path("/usr/share/alsa/alsa.conf")
    pcm = (f'pcm.unit_mic {{\n  type file\n  slave.pcm "null"\n  file "{tap}"\n'
           f'  infile "{raw}"\n  format "raw"\n}}\n') if present else ""
    tmp = path.with_suffix(".tmp")
    tmp.write_text((f"<{system}>\n" if system.exists() else "") + pcm)
    tmp.replace(path)  # alsa-lib reloads a configuration file whose mtime changed
    t = time.time() + (1 if present else 2)
    os.utime(path, (t, t))


def status(relay, unit: str) -> dict:
    units = relay.api("GET", "/api/admin/units").json()
    return next(u for u in units if u["id"] == unit).get("status") or {}


def test_capture_device_unplugged_mid_session_faults_declares_and_recovers(tmp_path, broker,
                                                                            relay):
    seconds = 14
    x = random_multichannel(seconds, 4, seed=21)
    raw = tmp_path / "in.raw"
    raw.write_bytes(x.tobytes())
    write_wav(tmp_path / "in.wav", x)
    tap = Tap(tmp_path / "tap")
    conf = tmp_path / "asound.conf"
    alsa_conf(conf, raw, tap.path, present=True)

    relay.add_user("s1", "scribe", "s1-password-123")
    clinic = relay_clinic(relay)
    scribe, sd = start_scribe_client(tmp_path, relay, "s1", "--exit-when-complete")
    clinic.endorse("s1")
    relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam 2"})
    assert clinic.assign("unit-a", ["s1"]).is_success

    sim = PuckSim(tmp_path / "puck")
    agent_conf = tmp_path / "agent.toml"
    agent_conf.write_text(file_agent_toml(tmp_path, broker, "unit-a", len(x), keys_toml(
        clinic.unit_keys("unit-a", tmp_path / "keys"))))
    with open(tmp_path / "agent.log", "wb") as log:  # the agent keeps its own copy
        agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                  str(agent_conf)], stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "ALSA_CONFIG_PATH": str(conf)}, cwd=tmp_path)
    try:
        sim.wait_led("live", 30)
        time.sleep(3)  # three seconds of the encounter are captured
        mark = sim.mark()
        alsa_conf(conf, raw, tap.path, present=False)
        unplugged = time.monotonic()
        tap.unplug()
        sim.wait_led("fault", 2.5, start=mark)
        assert time.monotonic() - unplugged < 2.5
        st = wait_for(lambda: (s := status(relay, "unit-a")).get("capture") == "fault" and s,
                      5, "the status to say capture fault")
        assert "unit_mic" in st["capture_error"] and "capture_fault" in st["alarms"]
        assert agent.poll() is None, "the agent must keep running"
        time.sleep(3)  # gone for a while; the agent retries with a backoff
        tap.plug()
        alsa_conf(conf, raw, tap.path, present=True)
        sim.wait_led("live", 10, start=mark)
        assert agent.wait(90) == 0
        assert scribe.wait(60) == 0
    finally:
        for proc in (agent, scribe):
            if proc.poll() is None:
                proc.kill()
        sim.close()

    agent_log = (tmp_path / "agent.log").read_text()
    assert agent_log.count("event=capture_failed") == 1
    retries = agent_log.count("event=capture_reopen_failed")
    assert 2 <= retries <= 6, f"{retries} failed reopens in ~3 s: a backoff, not a busy loop"
    events = jsonl(sd / "events.jsonl")
    gaps = [e for e in events if e["type"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["reason"] == "capture_lost"
    lost_chunks = gaps[0]["last_seq"] - gaps[0]["first_seq"] + 1
    assert 60 <= lost_chunks <= 150, lost_chunks  # about 3-5 s of 40 ms chunks
    # nothing else is lost: every captured sample reached the scribe, in order
    got = read_wav(sd / "out.wav")[:, 0]
    assert np.array_equal(got, x[:, 0])
    counters = [e for e in events if e["type"] == "counters"][-1]
    assert counters["missing"] == 0 and counters["tampered"] == 0
    assert json.loads(json.dumps(gaps[0]))["stream"] == "audio"
