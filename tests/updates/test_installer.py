"""The A/B installer (edge_agent.installer) on a real layout: real signed releases (tiny but
installable wheels plus pip's own), real venvs built offline by pip, real symlink switches.

The agent the installer restarts is played by `AgentDouble`, which writes the health
report a new release's agent would write: the installer's rules are what is under test
here; the real agent doing the same is tested end to end with scripts/demo
(test_demo_update.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from release_support import make_installable_release, rewrite

from edge_agent import installer as ins
from scribelink import release as rel


class AgentDouble:
    """What systemd plus the agent do when the installer restarts the agent: the agent
    starts from `current` and, on trial, reports its health (or says nothing)."""

    def __init__(self, layout: ins.Layout, state_file, updates, verdict: str = "pass") -> None:
        self.layout, self.state_file, self.updates = layout, state_file, updates
        self.verdict = verdict
        self.started: list[str | None] = []

    def restart_agent(self) -> None:
        running = self.layout.current_version()
        self.started.append(running)
        st = json.loads(self.state_file.read_text())
        if st["state"] == ins.TRIAL and running == st["to"] and self.verdict != "silent":
            ins.write_json(self.updates / "health.json", {
                "version": running, "trial_id": st["trial_id"], "state": self.verdict,
                "reason": "capture: cannot open the device" if self.verdict == "fail" else ""})


@pytest.fixture(scope="module")
def first_layout(tmp_path_factory, release_key, pip_wheel):
    """A unit's first release, built once; each test gets a copy (a venv works where it is
    copied to when run as `venv/bin/python -m ...`, as the services run it)."""
    tmp = tmp_path_factory.mktemp("first")
    layout = ins.Layout(tmp / "opt")
    tar = make_installable_release(tmp, release_key[0], "1.0.0", pip_wheel)
    assert ins.install_first(layout, tar, release_key[2]) == "1.0.0"
    return layout.root


@pytest.fixture
def unit(tmp_path, release_key, pip_wheel, first_layout):
    key, _, pub = release_key
    shutil.copytree(first_layout, tmp_path / "opt", symlinks=True)

    class Unit:
        layout = ins.Layout(tmp_path / "opt")
        updates = tmp_path / "agent-state" / "updates"
        state_dir = tmp_path / "update-state"

        def release(self, version: str, signer=key, name: str | None = None):
            return make_installable_release(tmp_path, signer, version, pip_wheel, name)

        def installer(self, verdict: str = "pass", deadline_s: float = 30.0):
            self.agent = AgentDouble(self.layout, self.state_dir / "state.json", self.updates,
                                     verdict)
            return ins.Installer(layout=self.layout, state_dir=self.state_dir,
                                 agent_updates=self.updates, public_key_file=pub,
                                 services=self.agent, deadline_s=deadline_s, unit_id="exam-3",
                                 poll_s=0.02)

        def request(self, tar, version: str, **extra) -> dict:
            self.updates.mkdir(parents=True, exist_ok=True)
            dest = self.updates / "incoming" / tar.name
            dest.parent.mkdir(exist_ok=True)
            dest.write_bytes(tar.read_bytes())
            req = {"request_id": f"req-{version}-{time.monotonic_ns()}", "version": version,
                   "release": f"incoming/{tar.name}", "sha256": rel.sha256_file(dest),
                   "offer_id": "offer-1", **extra}
            ins.write_json(self.updates / "request.json", req)
            return req

        def runs(self, version: str) -> str:
            out = subprocess.run([str(self.layout.python()), "-c",
                                  "import scribelink; print(scribelink.__version__)"],
                                 capture_output=True, text=True, check=True,
                                 cwd=self.layout.root)  # not the checkout: import what is installed
            assert out.stdout.strip() == version
            return version

    return Unit()


def state(u) -> dict:
    return json.loads((u.state_dir / "state.json").read_text())


def test_first_release_runs_from_a_venv_built_from_its_own_wheels(unit):
    assert unit.layout.current_version() == "1.0.0"
    assert unit.runs("1.0.0")
    pip = subprocess.run([str(unit.layout.python()), "-m", "pip", "--version"],
                         check=False, capture_output=True, text=True)
    assert pip.returncode == 0  # the release's pip: what the next update installs with


def test_a_healthy_release_is_applied_and_the_old_one_kept(unit):
    unit.request(unit.release("1.0.1"), "1.0.1")
    inst = unit.installer("pass")
    assert inst.run() == 0
    st = state(unit)
    assert (st["state"], st["from"], st["to"], st["result"]) == ("applied", "1.0.0", "1.0.1",
                                                                 "applied")
    assert unit.layout.current_version() == "1.0.1" and unit.runs("1.0.1")
    assert unit.layout.installed() == ["1.0.0", "1.0.1"]  # the way back stays
    assert unit.agent.started == ["1.0.1"]
    assert inst.run() == 0 and unit.agent.started == ["1.0.1"]  # a re-trigger does nothing


def test_a_release_failing_its_health_check_is_switched_back_by_itself(unit):
    unit.request(unit.release("1.0.1"), "1.0.1")
    assert unit.installer("fail").run() == 1
    st = state(unit)
    assert st["result"] == "rolled_back" and st["from"] == "1.0.0"
    assert st["reason"] == "health check failed: capture: cannot open the device"
    assert unit.layout.current_version() == "1.0.0" and unit.runs("1.0.0")
    assert unit.agent.started == ["1.0.1", "1.0.0"]  # onto the new one, then back
    # offered again, the same version is refused: it failed here before
    unit.request(unit.release("1.0.1", name="again.tar"), "1.0.1")
    assert unit.installer("pass").run() == 1
    assert state(unit)["refusal"] == "failed_before"
    assert unit.layout.current_version() == "1.0.0"


def test_a_release_that_never_reports_is_rolled_back_at_the_deadline(unit):
    unit.request(unit.release("1.0.1"), "1.0.1")
    started = time.monotonic()
    assert unit.installer("silent", deadline_s=1.0).run() == 1
    assert time.monotonic() - started < 20
    st = state(unit)
    assert st["result"] == "rolled_back" and "did not start, crashed or hung" in st["reason"]
    assert unit.layout.current_version() == "1.0.0"


@pytest.mark.parametrize("case", ["other_key", "swapped_after_verify", "downgrade",
                                  "unsigned"])
def test_refusals_leave_the_running_release_alone(unit, case, tmp_path):
    if case == "other_key":
        unit.request(unit.release("1.0.1", signer=Ed25519PrivateKey.generate()), "1.0.1")
        code = "wrong_key"
    elif case == "swapped_after_verify":
        req = unit.request(unit.release("1.0.1"), "1.0.1")
        evil = unit.release("1.0.1", signer=Ed25519PrivateKey.generate(), name="evil.tar")
        (unit.updates / req["release"]).write_bytes(evil.read_bytes())
        code = "tampered"
    elif case == "downgrade":
        unit.request(unit.release("0.9.0"), "0.9.0")
        code = "downgrade"
    else:
        good = unit.release("1.0.1")
        doc = rel.read_manifest_doc(good)
        unit.request(rewrite(good, tmp_path / "unsigned.tar", doc={"manifest": doc["manifest"]}),
                     "1.0.1")
        code = "unsigned"
    assert unit.installer().run() == 1
    st = state(unit)
    assert st["state"] == "refused" and st["refusal"] == code, st
    assert unit.layout.current_version() == "1.0.0" and unit.agent.started == []
    assert unit.layout.installed() == ["1.0.0"]


def test_a_downgrade_with_a_signed_permit_goes_in(unit, release_key):
    key = release_key[0]
    unit.request(unit.release("1.0.1"), "1.0.1")
    assert unit.installer().run() == 0
    now = time.time_ns() // 1000
    permit = rel.sign_permit(rel.permit_body(version="1.0.0", units=["exam-3"], issued_us=now,
                                             expires_us=now + 3_600_000_000), key)
    # releases/1.0.0 is still there; the installer rebuilds it from the signed release
    unit.request(unit.release("1.0.0", name="back.tar"), "1.0.0", permit=permit)
    assert unit.installer().run() == 0
    assert state(unit)["result"] == "applied" and unit.layout.current_version() == "1.0.0"


def test_a_power_cut_during_the_trial_is_rolled_back_at_boot(unit):
    """The installer died mid-trial: at the next start (boot) it switches back, because
    nobody saw the new release healthy."""
    unit.request(unit.release("1.0.1"), "1.0.1")
    inst = unit.installer("silent")
    inst._verify_and_unpack(json.loads((unit.updates / "request.json").read_text()), "1.0.0")
    inst._save(state=ins.TRIAL, **{"from": "1.0.0", "to": "1.0.1"}, trial_id="t1")
    unit.layout.switch("1.0.1")
    (unit.updates / "request.json").unlink()
    assert unit.installer("silent").run() == 0
    st = state(unit)
    assert st["result"] == "rolled_back" and "interrupted" in st["reason"]
    assert unit.layout.current_version() == "1.0.0"


def test_the_boot_check_switches_back_from_the_command_line(unit):
    """scribelink-update-boot.service's command, as a process: no agent to restart yet."""
    unit.request(unit.release("1.0.1"), "1.0.1")
    inst = unit.installer("silent")
    inst._verify_and_unpack(json.loads((unit.updates / "request.json").read_text()), "1.0.0")
    inst._save(state=ins.TRIAL, **{"from": "1.0.0", "to": "1.0.1"}, trial_id="t2")
    unit.layout.switch("1.0.1")
    r = subprocess.run([sys.executable, "-m", "edge_agent", "update", "recover", "--layout",
                        str(unit.layout.root), "--state-dir", str(unit.state_dir)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert unit.layout.current_version() == "1.0.0"
    assert state(unit)["result"] == "rolled_back" and unit.agent.started == []
