"""Helpers for the unit-install tests: the repo, running scripts/install-unit, tree state."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_UNIT = REPO / "scripts" / "install-unit"
# Capture channels the agent reads per array: all of the device's channels, mics and
# otherwise, in the order of hardware/arrays/<array>.json.
ARRAY_CHANNELS = {
    "respeaker-4mic-pi": 4,
    "respeaker-6mic": 8,
    "respeaker-usb-v2": 6,
    "respeaker-2mic": 2,
}


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(INSTALL_UNIT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind, content hash, mode and mtime (ns)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path), st.st_mtime_ns)
        elif path.is_dir():
            state[rel] = ("dir", st.st_mode, st.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[rel] = ("file", digest, st.st_mode, st.st_mtime_ns)
    return state


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make setup` (scripts/setup installs it)")
    return path
