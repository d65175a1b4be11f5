"""Helpers for the deploy tests: `python -m cloud_relay init` as a clinic's IT person runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from cloud_relay import broker as brk

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PASSWORD = "the first admin's long password"


def init(d: Path, port: int, broker_port: int, env=None, *, host: str = "relay.test"
         ) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cloud_relay", "init", str(d), "--host", host,
                           "--port", str(port), "--broker-port", str(broker_port),
                           "--bind", "127.0.0.1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


@contextlib.contextmanager
def clinic_relay_running(base: Path, host: str) -> Iterator[tuple]:
    """init BASE/relay --host HOST (the admin's password from the environment, never in
    the output), then the broker and the relay as init configured them, until the block
    ends: -> (DIR, https port, broker port, init's CompletedProcess)."""
    d = base / "relay"
    port, broker_port = brk.free_port(), brk.free_port()
    r = init(d, port, broker_port, {"SCRIBELINK_ADMIN_PASSWORD": PASSWORD}, host=host)
    assert r.returncode == 0, r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    mosq = brk.start(d / "broker" / "mosquitto.conf", broker_port, base / "mosquitto.log")
    try:
        with open(base / "relay.log", "ab") as log:
            relay = subprocess.Popen([PY, "-m", "cloud_relay", "serve", "--config",
                                      str(d / "relay.toml")], cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT)
        try:
            brk.wait_port(port, 20)
            yield d, port, broker_port, r
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(15)
    finally:
        mosq.send_signal(signal.SIGTERM)
        mosq.wait(10)
