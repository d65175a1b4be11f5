"""A release on trial checks itself: capture, puck, broker, spool and its own install.
The rules (what passes, what fails, when) are edge_agent.trial's; this gathers what they
judge, through callables the agent hands in, so it holds no device of its own.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from edge_agent import trial

# every module the unit runs: a release whose venv lacks one fails at once
UNIT_MODULES = ("edge_agent.agent", "edge_agent.capture", "edge_agent.dsp", "edge_agent.puck",
                "edge_agent.provision", "edge_agent.spool", "edge_agent.uplink",
                "scribelink.pucklink", "scribelink.envelope", "alsaaudio", "serial",
                "paho.mqtt.client", "numpy", "scipy.signal", "cryptography")
CAPTURE_TRIES = 3  # a capture device that fails this often in a row is broken, not busy


class SelfCheck:
    def __init__(self, *, expected_version: str, running_version: str, deadline_s: float,
                 probe_capture: Callable[[], str | None],
                 puck_connected: Callable[[], bool | None],
                 broker_up: Callable[[], bool],
                 probe_spool: Callable[[], str | None],
                 puck_firmware_problem: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.expected = expected_version
        self.running = running_version
        self.deadline_s = deadline_s
        self.probe_capture = probe_capture
        self.puck_connected = puck_connected
        self.broker_up = broker_up
        self.probe_spool = probe_spool
        self.puck_firmware_problem = puck_firmware_problem
        self.clock = clock
        self.started = clock()
        self.probes: dict[str, trial.Probe] = {c: trial.Probe() for c in trial.CHECKS}
        self._capture_failures = 0
        self.probes["selftest"] = self._selftest()

    def _selftest(self) -> trial.Probe:
        if self.running != self.expected:
            return trial.Probe(False, f"running {self.running}, the switch was to "
                               f"{self.expected}", final=True)
        for mod in UNIT_MODULES:
            try:
                importlib.import_module(mod)
            except Exception as e:  # noqa: BLE001 (any import failure is a broken release)
                return trial.Probe(False, f"{mod} does not import ({type(e).__name__}: {e})",
                                   final=True)
        return trial.Probe(True, f"{len(UNIT_MODULES)} modules import")

    def step(self) -> trial.Verdict:
        if self.probes["capture"].ok is not True:
            err = self.probe_capture()
            if err is None:
                self.probes["capture"] = trial.Probe(True)
            else:
                self._capture_failures += 1
                self.probes["capture"] = trial.Probe(
                    False, err, final=self._capture_failures >= CAPTURE_TRIES)
        puck = self.puck_connected()
        if self.puck_firmware_problem:  # this release's firmware did not come up on the puck
            self.probes["puck"] = trial.Probe(False, self.puck_firmware_problem, final=True)
        else:
            self.probes["puck"] = trial.Probe(True, "no puck configured") if puck is None \
                else trial.Probe(True) if puck else trial.Probe(False, "not connected")
        self.probes["broker"] = trial.Probe(True) if self.broker_up() else \
            trial.Probe(False, "not connected to the broker")
        if self.probes["spool"].ok is not True:
            err = self.probe_spool()
            self.probes["spool"] = trial.Probe(True) if err is None else \
                trial.Probe(False, err, final=True)
        return trial.verdict(self.probes, elapsed_s=self.clock() - self.started,
                             deadline_s=self.deadline_s)
