"""scripts/install-unit --root: the tree it stages, and that a second run changes nothing."""

from __future__ import annotations

import tomllib

import pytest
from install_support import ARRAY_CHANNELS, REPO, run_install, tree_state

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

EXPECTED_FILES = {
    "boot/firmware/config.txt",
    "etc/asound.conf",
    "etc/scribelink/agent.toml",
    "etc/systemd/journald.conf.d/scribelink.conf",
    "etc/modules-load.d/scribelink.conf",
    "etc/systemd/system/scribelink-agent.service",
    "etc/systemd/system/scribelink-provision.service",
    "etc/systemd/system/scribelink-agent.path",
    "etc/systemd/system/scribelink-wifi.path",
    "etc/systemd/system/scribelink-wifi.service",
    "etc/systemd/system/scribelink-update.service",
    "etc/systemd/system/scribelink-update.path",
    "etc/systemd/system/scribelink-update-boot.service",
    "opt/scribelink/libexec/scribelink-wifi-apply",
    "opt/scribelink/releases/" + VERSION + "/firmware/main.py",
    "opt/scribelink/releases/" + VERSION + "/firmware/pucklink.py",
    "etc/udev/rules.d/99-scribelink.rules",
    "opt/scribelink/src/pyproject.toml",
    "opt/scribelink/src/edge_agent/__init__.py",
    "opt/scribelink/src/edge_agent/sdnotify.py",
    "opt/scribelink/src/scribelink/__init__.py",
    "opt/scribelink/src/hardware/config/agent.toml",
    "scribelink-install-manifest.txt",
}
EXPECTED_LINKS = {
    "etc/systemd/system/multi-user.target.wants/scribelink-agent.service": "/etc/systemd/system/scribelink-agent.service",
    "etc/systemd/system/multi-user.target.wants/scribelink-provision.service": "/etc/systemd/system/scribelink-provision.service",
    "etc/systemd/system/multi-user.target.wants/scribelink-agent.path": "/etc/systemd/system/scribelink-agent.path",
    "etc/systemd/system/multi-user.target.wants/scribelink-wifi.path": "/etc/systemd/system/scribelink-wifi.path",
    "etc/systemd/system/multi-user.target.wants/scribelink-update.path": "/etc/systemd/system/scribelink-update.path",
    "etc/systemd/system/multi-user.target.wants/scribelink-update-boot.service": "/etc/systemd/system/scribelink-update-boot.service",
    "opt/scribelink/current": "releases/" + VERSION,
    "etc/systemd/system/serial-getty@ttyAMA0.service": "/dev/null",
    "etc/systemd/system/serial-getty@serial0.service": "/dev/null",
    "etc/systemd/system/hciuart.service": "/dev/null",
    "etc/systemd/system/seeed-voicecard.service": "/dev/null",
}
EXPECTED_DIRS = {"var/lib/scribelink", "var/lib/scribelink/spool"}

# The agent config schema the lead engineer's edge_agent/config.py reads.
SCHEMA = {
    "unit_id": str,
    "state_dir": str,
    "capture": {"device": str, "sample_rate": int, "channels": int, "period_frames": int},
    "dsp": {"mode": str, "array": str},
    "codec": {"codec": str, "bitrate": int},
    "session": {"chunk_ms": int},
    "spool": {"dir": str, "max_bytes": int, "max_age_s": int, "max_audio_s": int},
    "broker": {"url": str, "ca_file": str, "cert_file": str, "key_file": str},
    "keys": {"recovery_public_key_file": str, "authority_public_key_file": str,
             "signing_key_file": str, "binding_file": str},
    "puck": {"port": str},
}


def check_schema(doc: dict, schema: dict, where: str = "") -> None:
    assert set(doc) == set(schema), f"keys at {where or 'top'}: {sorted(doc)} != {sorted(schema)}"
    for key, kind in schema.items():
        if isinstance(kind, dict):
            check_schema(doc[key], kind, f"{where}[{key}]")
        else:
            assert isinstance(doc[key], kind), f"{where}{key} is {type(doc[key]).__name__}"


def test_template_matches_the_agent_schema():
    doc = tomllib.loads((REPO / "hardware/config/agent.toml").read_text())
    check_schema(doc, SCHEMA)
    assert doc["capture"]["device"] == "scribelink_capture"
    assert doc["spool"]["dir"] == doc["state_dir"] + "/spool"
    assert doc["puck"]["port"] == "/dev/scribelink-puck"


def test_staged_tree(tmp_path):
    root = tmp_path / "root"
    run_install(root)
    state = tree_state(root)
    files = {p for p, s in state.items() if s[0] == "file"}
    assert EXPECTED_FILES <= files, sorted(EXPECTED_FILES - files)
    links = {p: s[1] for p, s in state.items() if s[0] == "link"}
    assert {p: links.get(p) for p in EXPECTED_LINKS} == EXPECTED_LINKS
    dirs = {p for p, s in state.items() if s[0] == "dir"}
    assert EXPECTED_DIRS <= dirs
    assert (root / "var/lib/scribelink").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/scribelink/agent.toml").stat().st_mode & 0o777 == 0o640
    assert (root / "opt/scribelink/libexec/scribelink-wifi-apply").stat().st_mode & 0o777 == 0o755
    # Nothing of the developer's machine leaks into the unit.
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in state)
    assert not (root / f"opt/scribelink/releases/{VERSION}/venv").exists()  # not without --with-venv

    for name in (
        "scribelink-agent.service",
        "scribelink-provision.service",
        "scribelink-agent.path",
        "scribelink-wifi.path",
        "scribelink-wifi.service",
        "scribelink-update.service",
        "scribelink-update.path",
        "scribelink-update-boot.service",
    ):
        assert (root / "etc/systemd/system" / name).read_bytes() == (
            REPO / "hardware/systemd" / name
        ).read_bytes()
    assert (root / "etc/asound.conf").read_bytes() == (
        REPO / "hardware/alsa/respeaker-4mic-pi.conf"
    ).read_bytes()

    manifest = (root / "scribelink-install-manifest.txt").read_text()
    for step in (
        "apt-get install",
        "useradd --system",
        "python3 -m venv",
        "pip install",
        "systemctl daemon-reload",
        "udevadm control --reload",
    ):
        assert step in manifest, step
    assert "'/opt/scribelink/src[unit]'" in manifest

    config = (root / "boot/firmware/config.txt").read_text()
    for line in ("enable_uart=1", "dtoverlay=disable-bt", "dtoverlay=seeed-4mic-voicecard"):
        assert line in config.splitlines()


def test_second_run_changes_nothing(tmp_path):
    root = tmp_path / "root"
    run_install(root, "--array", "respeaker-6mic")
    before = tree_state(root)
    second = run_install(root, "--array", "respeaker-6mic")
    assert tree_state(root) == before  # same paths, contents, modes and mtimes
    assert "(0 changes)" in second.stdout


@pytest.mark.parametrize("array", sorted(ARRAY_CHANNELS))
def test_each_array_gets_its_alsa_config_and_channel_count(tmp_path, array):
    root = tmp_path / "root"
    run_install(root, "--array", array)
    assert (root / "etc/asound.conf").read_bytes() == (
        REPO / "hardware/alsa" / f"{array}.conf"
    ).read_bytes()
    doc = tomllib.loads((root / "etc/scribelink/agent.toml").read_text())
    check_schema(doc, SCHEMA)
    assert doc["dsp"]["array"] == array
    assert doc["capture"]["channels"] == ARRAY_CHANNELS[array]
    config = (root / "boot/firmware/config.txt").read_text()
    has_overlay = any(line.startswith("dtoverlay=seeed-") for line in config.splitlines())
    assert has_overlay == (array != "respeaker-usb-v2")


def test_a_techs_config_is_never_overwritten(tmp_path):
    root = tmp_path / "root"
    run_install(root)
    config = root / "etc/scribelink/agent.toml"
    edited = config.read_text().replace('unit_id = "unit-0001"', 'unit_id = "unit-0042"')
    config.write_text(edited)
    run_install(root, "--array", "respeaker-2mic")  # even when the array changes
    assert config.read_text() == edited


def test_boot_files_of_a_real_image_are_edited_in_place(tmp_path):
    """config.txt keeps the image's own lines; the serial console leaves cmdline.txt."""
    root = tmp_path / "root"
    boot = root / "boot/firmware"
    boot.mkdir(parents=True)
    image_config = "dtparam=audio=on\ncamera_auto_detect=1\n[cm4]\notg_mode=1\n[all]\n"
    (boot / "config.txt").write_text(image_config)
    (boot / "cmdline.txt").write_text(
        "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes"
        " rootwait quiet\n"
    )
    run_install(root)
    run_install(root, "--array", "respeaker-6mic")  # switching arrays replaces the block
    config = (boot / "config.txt").read_text()
    assert config.startswith(image_config)
    assert config.count("# BEGIN scribelink") == 1
    assert "dtoverlay=seeed-8mic-voicecard" in config
    assert "dtoverlay=seeed-4mic-voicecard" not in config
    cmdline = (boot / "cmdline.txt").read_text()
    assert "console=serial0" not in cmdline
    assert cmdline.startswith("console=tty1 root=PARTUUID=1234-02")
    assert cmdline.count("\n") == 1
    before = tree_state(root)
    run_install(root, "--array", "respeaker-6mic")
    assert tree_state(root) == before


def test_refuses_a_live_install_without_root(tmp_path):
    """Without --root it insists on root; checked as an unprivileged user (via setpriv
    when the tests run as root), so nothing on this machine is touched."""
    import os
    import shutil
    import subprocess
    import sys

    argv = [sys.executable, str(REPO / "scripts/install-unit"), "--skip-apt"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    result = subprocess.run(
        argv, capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "needs root" in result.stderr


def test_the_release_key_is_pinned_readable_and_checked(tmp_path):
    import base64
    import subprocess
    import sys

    root = tmp_path / "root"
    key = tmp_path / "release.pub"
    key.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    run_install(root, "--release-key", str(key))
    pinned = root / "etc/scribelink/release.pub"
    assert pinned.read_text() == key.read_text()
    assert pinned.stat().st_mode & 0o777 == 0o644
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    r = subprocess.run([sys.executable, str(REPO / "scripts/install-unit"), "--root",
                        str(tmp_path / "other"), "--release-key", str(bad)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "not a release public key" in r.stderr
