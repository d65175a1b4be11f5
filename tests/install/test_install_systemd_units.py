"""The systemd units, checked by systemd itself: `systemd-analyze verify` on a staged root
and `systemd-analyze security --offline` on the agent's unit (exposure must be <= 2.0).

systemd is not PID 1 here; both commands still work offline. `verify` loads the units
against the staged tree (--root), which must hold the distribution's own units
(sysinit.target...) and an executable at the ExecStart path, so the test copies
/usr/lib/systemd/system into the stage and puts a stub at
/opt/scribelink/current/venv/bin/python (the venv itself is built on the unit). verify exits 0
even on warnings such as an unknown key, so the test also demands silence on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from install_support import REPO, need, run_install

UNITS = (
    "scribelink-agent.service",
    "scribelink-provision.service",
    "scribelink-agent.path",
    "scribelink-wifi.path",
    "scribelink-wifi.service",
    "scribelink-update.service",
    "scribelink-update.path",
    "scribelink-update-boot.service",
)
MAX_AGENT_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def staged_root(tmp_path_factory) -> Path:
    need("systemd-analyze")
    root = tmp_path_factory.mktemp("unit-root")
    run_install(root)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    stub = root / "opt/scribelink/current/venv/bin/python"  # through the A/B link
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert os.access(root / "opt/scribelink/libexec/scribelink-wifi-apply", os.X_OK)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_units_verify_cleanly(staged_root):
    result = verify(staged_root, *UNITS)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_verify_would_catch_a_broken_unit(staged_root, tmp_path):
    """The check above is real: the same command flags a typo and a missing binary."""
    unit = staged_root / "etc/systemd/system/scribelink-agent.service"
    good = unit.read_text()
    try:
        unit.write_text(good.replace("MemoryMax=160M", "MemoryMax=lots"))
        assert "Invalid memory limit" in verify(staged_root, UNITS[0]).stderr
        unit.write_text(good.replace("/opt/scribelink/current/venv/bin/python",
                                     "/opt/nowhere/python"))
        result = verify(staged_root, UNITS[0])
        assert result.returncode != 0 and "not executable" in result.stderr
    finally:
        unit.write_text(good)


def exposure(unit_file: Path) -> tuple[float, str]:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout
    return float(match.group(1)), result.stdout


def test_agent_exposure_is_at_most_2(staged_root):
    need("systemd-analyze")
    score, table = exposure(REPO / "hardware/systemd/scribelink-agent.service")
    assert score <= MAX_AGENT_EXPOSURE, table
    # docs/install.md records the measured table; keep it honest.
    doc = (REPO / "docs/install.md").read_text()
    assert f"Overall exposure level for scribelink-agent.service: {score}" in doc


def test_provision_and_update_exposure_is_at_most_the_agents(staged_root):
    agent, _ = exposure(REPO / "hardware/systemd/scribelink-agent.service")
    for name in ("provision", "update", "update-boot"):
        score, table = exposure(REPO / f"hardware/systemd/scribelink-{name}.service")
        assert score <= agent, table


def test_agent_unit_has_the_required_restrictions():
    text = (REPO / "hardware/systemd/scribelink-agent.service").read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    expect = {
        "Type": ["notify"],
        "User": ["scribelink"],
        "SupplementaryGroups": ["audio dialout"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "Restart": ["on-failure"],
        "MemoryMax": ["160M"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "DevicePolicy": ["closed"],
        "DeviceAllow": ["char-alsa rw", "char-ttyACM rw"],
        "StateDirectory": ["scribelink scribelink/spool"],
        "ExecStart": [
            (
                "/opt/scribelink/current/venv/bin/python -m edge_agent run --config "
                "/etc/scribelink/agent.toml --config /var/lib/scribelink/provisioned.toml"
            )
        ],
        "ConditionPathExists": ["/var/lib/scribelink/provisioned.toml"],
    }
    for key, values in expect.items():
        assert settings.get(key) == values, key
    assert "WatchdogSec" in settings
    assert "ReadWritePaths" not in settings  # only the StateDirectory= paths are writable


def test_provision_unit_serves_the_service_port():
    text = (REPO / "hardware/systemd/scribelink-provision.service").read_text()
    assert (
        "ExecStart=/opt/scribelink/current/venv/bin/python -m edge_agent provision-serve"
        " --port /dev/scribelink-service --state-dir /var/lib/scribelink"
    ) in text
    assert "ProtectSystem=strict" in text and "ReadWritePaths" not in text
    assert "BindsTo=dev-scribelink\\x2dservice.device" in text


def test_the_path_unit_starts_the_agent_once_provisioned():
    text = (REPO / "hardware/systemd/scribelink-agent.path").read_text()
    assert "PathExists=/var/lib/scribelink/provisioned.toml" in text
    assert "Unit=scribelink-agent.service" in text


def test_the_update_units_install_only_on_request_and_undo_at_boot():
    path = (REPO / "hardware/systemd/scribelink-update.path").read_text()
    assert "PathChanged=/var/lib/scribelink/updates/request.json" in path
    assert "Unit=scribelink-update.service" in path
    update = (REPO / "hardware/systemd/scribelink-update.service").read_text()
    assert "Type=oneshot" in update and "PrivateNetwork=yes" in update  # installs offline
    assert "ReadWritePaths=/opt/scribelink\n" in update
    assert "CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n" in update
    # ordered before the agent it restarts, it would deadlock: it must not be
    assert "Before=" not in update
    boot = (REPO / "hardware/systemd/scribelink-update-boot.service").read_text()
    assert "Before=scribelink-agent.service" in boot and "update recover" in boot
