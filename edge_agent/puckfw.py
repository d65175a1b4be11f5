"""The cue puck's firmware as files: the MicroPython sources in `firmware/` plus the puck
link protocol, which lives in the installed `scribelink` package (one file, run by both
the firmware and the agent). Tools that build, flash or simulate the puck stage both
into one directory, since on the puck `pucklink` is a top-level module."""

from __future__ import annotations

import shutil
from pathlib import Path

from scribelink import pucklink

PROTOCOL_MODULE = "pucklink.py"


def protocol_file() -> Path:
    """The puck link protocol module, as installed."""
    return Path(pucklink.__file__).resolve()


def sources(firmware_dir: Path) -> list[Path]:
    """Every module the puck runs: the firmware's own and the protocol module."""
    own = sorted(p for p in firmware_dir.glob("*.py") if p.name != PROTOCOL_MODULE)
    if not own:
        raise FileNotFoundError(f"no firmware sources (*.py) in {firmware_dir}")
    return [*own, protocol_file()]


def stage(firmware_dir: Path, dest: Path) -> Path:
    """Copy the firmware and the protocol module side by side into `dest` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources(firmware_dir):
        shutil.copyfile(src, dest / src.name)
    return dest
