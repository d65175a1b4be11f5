"""Deploy fixtures: a relay host as `python -m cloud_relay init` makes it, running."""

from __future__ import annotations

import signal
import subprocess

import pytest
from deploykit import PASSWORD, PY, ROOT, init

from cloud_relay import broker as brk


@pytest.fixture
def clinic_relay_for(tmp_path):
    """init DIR --host HOST, then the broker and the relay as init configured them:
    -> (DIR, https port, broker port, init's CompletedProcess)."""
    started = []

    def make(host: str):
        d = tmp_path / "relay"
        port, broker_port = brk.free_port(), brk.free_port()
        r = init(d, port, broker_port, {"SCRIBELINK_ADMIN_PASSWORD": PASSWORD}, host=host)
        assert r.returncode == 0, r.stderr
        assert PASSWORD not in r.stdout + r.stderr
        mosq = brk.start(d / "broker" / "mosquitto.conf", broker_port,
                         tmp_path / "mosquitto.log")
        started.append(mosq)
        log = open(tmp_path / "relay.log", "ab")  # noqa: SIM115 (the relay writes it)
        relay = subprocess.Popen([PY, "-m", "cloud_relay", "serve", "--config",
                                  str(d / "relay.toml")], cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT)
        started.append(relay)
        brk.wait_port(port, 20)
        return d, port, broker_port, r

    yield make
    for proc in reversed(started):
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
