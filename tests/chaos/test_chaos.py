"""Chaos against the real system (scripts/demo: mosquitto, relay, agent, scribe client):
broker restarts, a 10-minute network cut, kill -9 of the agent, relay restart, scribe
disconnect, a full disk. After each, the scribe's audio is complete and identical to
what the unit sealed, or carries exactly the declared gaps, with no duplicates, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from support import ROOT, TcpProxy, jsonl, random_multichannel, read_wav, wait_for, write_wav

from cloud_relay.broker import free_port

CHUNK = 640  # 40 ms at 16 kHz


class Run:
    def __init__(self, tmp: Path, seconds: float, *, speed: float = 1.0, channels: int = 2,
                 extra: list[str] | None = None, scribe_proxy: bool = False) -> None:
        self.tmp = tmp
        self.x = random_multichannel(seconds, channels=channels, seed=int(seconds * 7))
        write_wav(tmp / "in.wav", self.x)
        self.rec = tmp / "rec"
        self.broker_port = free_port()
        self.proxy = TcpProxy(self.broker_port)
        self.http_port = free_port()
        self.scribe_proxy = TcpProxy(self.http_port) if scribe_proxy else None
        args = [sys.executable, str(ROOT / "scripts/demo"), "--headless", "--dsp", "off",
                "--input", str(tmp / "in.wav"), "--seconds", str(seconds),
                "--record-dir", str(self.rec), "--broker-port", str(self.broker_port),
                "--http-port", str(self.http_port),
                "--unit-broker-url", f"mqtts://127.0.0.1:{self.proxy.port}",
                "--speed", str(speed), "--timeout", "240", *(extra or [])]
        if self.scribe_proxy:
            args += ["--scribe-relay-url", f"http://127.0.0.1:{self.scribe_proxy.port}"]
        with open(tmp / "demo.out", "w") as log:  # the demo keeps its own copy
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: (self.rec / "events.jsonl").exists() and any(
            e["type"] == "session_open" for e in jsonl(self.rec / "events.jsonl")),
            timeout=60, what="the session to open")
        self.t0 = time.monotonic()

    def at(self, t: float) -> None:
        """Sleep until t seconds after the session opened."""
        time.sleep(max(0.0, self.t0 + t - time.monotonic()))

    def pid(self, name: str) -> int:
        return json.loads((self.rec / "pids.json").read_text())[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid(name), sig)

    def finish(self, timeout: float = 300) -> tuple[np.ndarray, list[dict]]:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proxy.close()
            if self.scribe_proxy:
                self.scribe_proxy.close()
        out = (self.tmp / "demo.out").read_text()
        assert rc == 0, out[-4000:]
        return read_wav(self.rec / "scribe.wav")[:, 0], jsonl(self.rec / "events.jsonl")


def assert_whole(got: np.ndarray, x: np.ndarray, events: list[dict]) -> None:
    assert len(got) == len(x), f"{len(got)} samples, expected {len(x)}"
    assert np.array_equal(got, x[:, 0])
    counters = [e for e in events if e["type"] == "counters"][-1]
    assert counters["tampered"] == 0 and counters["missing"] == 0


def test_broker_restart_mid_stream(tmp_path):
    r = Run(tmp_path, 16, speed=2)
    r.at(3)
    r.kill("broker", signal.SIGTERM)
    got, events = r.finish()
    assert_whole(got, r.x, events)
    assert "broker exited" in (tmp_path / "demo.out").read_text()


def test_broker_crash_mid_stream(tmp_path):
    """SIGKILL: mosquitto loses what it acked since its last autosave; the unit offers
    its recently acked records again after reconnecting, so nothing is lost."""
    r = Run(tmp_path, 16, speed=2)
    r.at(3)
    r.kill("broker", signal.SIGKILL)
    got, events = r.finish()
    assert_whole(got, r.x, events)


def test_network_cut_covering_ten_minutes_of_audio(tmp_path):
    spool = tmp_path / "spool"
    # 20 minutes of audio fed at up to 30x real time: the feed must outlast the cut and the
    # unit's reconnect (its backoff is up to 10 s, jittered), so that live audio overtakes
    # the backlog, as in a real room. (Had the file ended first, the backlog would arrive
    # in order, and a file fed at 30x has no real capture times to call it late by.)
    r = Run(tmp_path, 1200, speed=30, extra=["--spool-dir", str(spool)])
    r.at(1)
    r.proxy.cut()
    r.at(21)  # 20 s x 30 = 600 s of audio sealed while the network is down, on an idle box
    # a loaded box feeds the file slower than 30x: the cut lasts until the spool holds the
    # ten minutes (PCM: 1,280 bytes of audio a chunk, 25 chunks a second)
    wait_for(lambda: sum(f.stat().st_size for f in spool.rglob("*") if f.is_file())
             >= 600 * 25 * 1280, timeout=180, what="ten minutes of audio in the spool")
    r.proxy.restore()
    got, events = r.finish()
    assert_whole(got, r.x, events)
    backfill = [e for e in events if e["type"] == "backfill"]
    assert backfill, "the catch-up audio was not marked as backfilled"
    marked = sum(e["last_seq"] - e["first_seq"] + 1 for e in backfill)
    assert marked * 0.04 > 500, backfill  # the 10 minutes arrived late, and say so


def test_agent_kill_9_and_restart(tmp_path):
    r = Run(tmp_path, 16, speed=2)
    r.at(3)
    r.kill("agent")
    got, events = r.finish()
    assert_whole(got, r.x, events)
    sessions = [e for e in events if e["type"] == "session_open"]
    assert len(sessions) == 2  # the key died with the process: a new session follows
    closes = [e for e in events if e["type"] == "session_close"]
    assert closes[0]["reason"] == "unit_restart"


def test_relay_restart(tmp_path):
    r = Run(tmp_path, 16, speed=2)
    r.at(3)
    r.kill("relay")
    got, events = r.finish()
    assert_whole(got, r.x, events)


def test_scribe_disconnect_and_reconnect(tmp_path):
    r = Run(tmp_path, 16, speed=2, scribe_proxy=True)
    r.at(2)
    r.scribe_proxy.cut()
    r.at(5)
    r.scribe_proxy.restore()
    got, events = r.finish()
    assert_whole(got, r.x, events)
    assert "relay_unreachable" in (r.rec / "scribe_client.log").read_text() or \
        "ws_closed" in (r.rec / "scribe_client.log").read_text()


def test_disk_full_on_the_unit_gives_exactly_the_declared_gaps(tmp_path):
    mnt = tmp_path / "spool"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], check=True)
    try:
        r = Run(tmp_path, 30, speed=3, extra=["--spool-dir", str(mnt),
                                              "--spool-segment-bytes", "40000"])
        r.at(1)
        r.proxy.cut()  # ~24 s of audio (~800 kB sealed) into a 300 kB spool
        r.at(9)
        r.proxy.restore()
        got, events = r.finish()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
    gaps = [e for e in events if e["type"] == "gap"]
    assert gaps and all(g["reason"] == "spool_full" for g in gaps)
    lost = {s for g in gaps if g["stream"] == "audio"
            for s in range(g["first_seq"], g["last_seq"] + 1)}
    n_chunks = -(-len(r.x) // CHUNK)
    kept = [k for k in range(n_chunks) if k not in lost]
    expected = np.concatenate([r.x[k * CHUNK:(k + 1) * CHUNK, 0] for k in kept])
    assert len(lost) > 50
    assert np.array_equal(got, expected)
    import sqlite3

    status = json.loads(sqlite3.connect(r.rec / "relay" / "relay.db").execute(
        "SELECT status_json FROM units").fetchone()[0])
    assert "spool_evicted" in status["alarms"]  # the clinic sees the alarm
    assert status["last_gap"]["reason"] == "spool_full"


def test_demo_survives_a_30s_cut_an_agent_kill_and_a_broker_restart(tmp_path):
    r = Run(tmp_path, 50, speed=1)
    r.at(3)
    r.proxy.cut()
    r.at(33)
    r.proxy.restore()
    r.at(36)
    r.kill("agent")
    r.at(40)
    r.kill("broker", signal.SIGTERM)
    got, events = r.finish()
    assert_whole(got, r.x, events)
