"""Helpers for the deploy tests: `python -m cloud_relay init` as a clinic's IT person runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PASSWORD = "the first admin's long password"


def init(d: Path, port: int, broker_port: int, env=None, *, host: str = "relay.test"
         ) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cloud_relay", "init", str(d), "--host", host,
                           "--port", str(port), "--broker-port", str(broker_port),
                           "--bind", "127.0.0.1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)
