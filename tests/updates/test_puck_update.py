"""Updating the puck's firmware from the unit (edge_agent.puckflash) against the real
firmware on the MicroPython unix port (scripts/puck-sim --flash DIR) over a real pty: the
MAINTENANCE request, the heartbeat of the firmware that boots, and the way back are the
real link protocol.

The simulator has no REPL, so the puck's filesystem is reached as the directory the
firmware runs from (DirFiles) instead of through mpremote (MpremoteFiles, for a real
Pico): writing the files and reading their hashes back is the part only real hardware
shows in full."""

from __future__ import annotations

import shutil

import pytest
from puck_harness import PuckSim
from support import ROOT

from edge_agent import puckflash as pf
from edge_agent import puckfw


@pytest.fixture
def puck(tmp_path):
    flash = tmp_path / "flash"
    puckfw.stage(ROOT / "firmware", flash)  # what the tech flashed at install
    sim = PuckSim(tmp_path / "puck", "--flash", str(flash))
    yield sim, flash
    sim.proc.stdin.write("quit\n")
    sim.proc.stdin.flush()
    sim.proc.wait(10)


def flasher(sim, flash, files=None) -> pf.PuckFlasher:
    link = str(sim.link)
    return pf.PuckFlasher(files or pf.DirFiles(flash, lambda: sim.cmd("reset")),
                          enter_maintenance=lambda: pf.request_maintenance(link),
                          heartbeat=lambda: pf.wait_heartbeat(link, 5))  # it boots in < 1 s


def release_firmware(tmp_path, name: str, main_first_line: bytes) -> dict[str, bytes]:
    d = tmp_path / name
    puckfw.stage(ROOT / "firmware", d)
    (d / "main.py").write_bytes(main_first_line + (d / "main.py").read_bytes())
    return pf.firmware_files(d)


def test_new_firmware_is_written_verified_booted_and_heartbeats(puck, tmp_path):
    sim, flash = puck
    previous = pf.firmware_files(flash)
    new = release_firmware(tmp_path, "fw-2", b"# release 2\n")
    mark = sim.mark()
    result = flasher(sim, flash).update(new, previous)
    assert result.result == "applied", result
    assert result.running == pf.digest(new)
    assert (flash / "main.py").read_bytes() == new["main.py"]
    sim.wait_for(lambda m: m.get("maintenance") is True, 5, "the MAINTENANCE reboot", mark)
    sim.wait_for(lambda m: m.get("boot") == "ok", 5, "the new firmware's boot", mark)
    assert "board_sim.py" not in new  # the simulator's board is never deployed


def test_firmware_that_does_not_come_up_is_replaced_by_the_previous_one(puck, tmp_path):
    sim, flash = puck
    previous = pf.firmware_files(flash)
    broken = release_firmware(tmp_path, "fw-broken", b"raise SystemExit(3)  # never links\n")
    result = flasher(sim, flash).update(broken, previous)
    assert result.result == "rolled_back", result
    assert "did not come up and heartbeat" in result.reason
    assert pf.firmware_files(flash) == previous  # the way back is on the puck
    assert pf.wait_heartbeat(str(sim.link), 5)  # and it runs


def test_a_write_that_does_not_read_back_is_never_booted(puck, tmp_path):
    sim, flash = puck
    previous = pf.firmware_files(flash)
    new = release_firmware(tmp_path, "fw-3", b"# release 3\n")
    resets, writes = [], []

    class Flaky(pf.DirFiles):
        """A flash that corrupts the protocol module once (a bad cable, a full flash)."""

        def put(self, name, data):
            writes.append(name)
            if name == "pucklink.py" and writes.count(name) == 1:
                data = data[:-10]
            super().put(name, data)

        def reset(self):
            resets.append(1)
            super().reset()

    result = flasher(sim, flash, Flaky(flash, lambda: sim.cmd("reset"))).update(new, previous)
    assert result.result == "rolled_back" and "pucklink.py reads back" in result.reason
    assert len(resets) == 1  # only the previous firmware was booted
    assert pf.firmware_files(flash) == previous


def test_same_firmware_is_left_alone(tmp_path):
    d = tmp_path / "fw"
    puckfw.stage(ROOT / "firmware", d)
    files = pf.firmware_files(d)
    never = pf.PuckFlasher(pf.DirFiles(d, lambda: pytest.fail("reset")),
                           enter_maintenance=lambda: pytest.fail("maintenance"),
                           heartbeat=lambda: pytest.fail("heartbeat"))
    assert never.update(files, dict(files)).result == "unchanged"
    shutil.rmtree(d)
