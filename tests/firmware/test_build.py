"""Every firmware module compiles for the RP2040 (mpy-cross, armv6m) and type-checks
against the MicroPython rp2 stubs."""

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import puckfw

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
BIN = Path(sys.executable).parent
MODULES = puckfw.sources(FIRMWARE_DIR)  # the firmware and the protocol module beside it
# .mpy header: b"M", version, feature flags (native arch in the top 6 bits), small-int bits
MPY_ARCH_ARMV6M = 4


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_mpy_cross_armv6m(module, tmp_path):
    out = tmp_path / (module.stem + ".mpy")
    proc = subprocess.run(
        [str(BIN / "mpy-cross"), "-march=armv6m", "-o", str(out), str(module)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    header = out.read_bytes()[:4]
    assert header[0:1] == b"M"
    if module.name == "pucklink.py":
        # Only a module with native code records its architecture: pucklink's CRC does.
        assert header[2] >> 2 == MPY_ARCH_ARMV6M, header


def test_mypy_against_micropython_rp2_stubs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mypy-firmware")],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: no issues found in {len(MODULES)} source files" in proc.stdout


def test_flash_puck_dry_run_compiles_and_lists(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "flash-puck"),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--port",
            "/dev/null-puck",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    deployed = sorted(p.name for p in tmp_path.iterdir())
    assert deployed == [
        "board.mpy",
        "ledring.mpy",
        "main.py",
        "press.mpy",
        "puckapp.mpy",
        "pucklink.mpy",
    ]
    for name in deployed:
        assert f"would copy {name}" in proc.stdout
    assert (tmp_path / "pucklink.mpy").read_bytes()[2] >> 2 == MPY_ARCH_ARMV6M
    assert "mpremote connect /dev/null-puck" in proc.stdout
