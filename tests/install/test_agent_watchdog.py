"""The agent keeps systemd's watchdog fed from its main loop (docs/install.md: WatchdogSec=20),
whatever its status does: the real agent in the demo, notifying a real AF_UNIX datagram
socket as systemd binds it."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
from support import run_demo, write_wav


def test_the_agent_says_ready_then_feeds_the_watchdog_every_second(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    heard: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                heard.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((16000 * 10, 2)) * 2000).astype(np.int16)
    write_wav(tmp_path / "X.wav", x)
    try:
        r = run_demo(["--headless", "--seconds", "10", "--dsp", "off", "--codec", "pcm",
                      "--input", str(tmp_path / "X.wav"), "--record-dir", str(tmp_path / "D"),
                      "--no-puck"], env={"NOTIFY_SOCKET": str(path)}, timeout=180)
    finally:
        done.set()
        listener.join(5)
        sock.close()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    said = [m for _, m in heard]
    # (mosquitto, started first, may say READY=1 too: the agent's is the last before a ping)
    assert "READY=1" in said and "STOPPING=1" in said, said
    pings = [t for t, m in heard if m == "WATCHDOG=1"]
    assert len(pings) >= 8, said  # a 10 s run
    assert said.index("READY=1") < said.index("WATCHDOG=1") < said.index("STOPPING=1"), said
    stopping = max(t for t, m in heard if m == "STOPPING=1")
    gaps = np.diff([*pings, stopping])
    assert gaps.max() < 2.0, gaps  # once a second from the loop (not every 4 s with a status)
