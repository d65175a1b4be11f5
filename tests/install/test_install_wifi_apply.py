"""hardware/libexec/scribelink-wifi-apply: only provisioning's own WPA2-PSK keyfile gets
from the unprivileged state dir into NetworkManager."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys

import pytest
from install_support import REPO

from edge_agent.provision import nm_keyfile

HELPER = REPO / "hardware/libexec/scribelink-wifi-apply"


def load_helper():
    loader = importlib.machinery.SourceFileLoader("scribelink_wifi_apply", str(HELPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


wifi = load_helper()
GOOD = nm_keyfile("ClinicIoT", "correct horse battery")


def test_accepts_what_provisioning_writes():
    wifi.check(GOOD)
    wifi.check(nm_keyfile("Ünïcode net ☕", "12345678"))


@pytest.mark.parametrize(
    "bad",
    [
        GOOD + "\n[802-1x]\nca-cert=/var/lib/scribelink/tls/unit.key\n",  # extra section
        GOOD.replace("autoconnect=true", "autoconnect=true\npermissions=user:tech"),  # extra key
        GOOD.replace("type=wifi", "type=vpn"),
        GOOD.replace("key-mgmt=wpa-psk", "key-mgmt=wpa-eap"),
        GOOD.replace("method=auto", "method=manual", 1),
        GOOD.replace("psk=correct horse battery", "psk=short"),
        GOOD.replace("ssid=ClinicIoT", "ssid=" + "x" * 33),
        GOOD.replace("id=scribelink-wifi", "id=other"),
        "not an ini file",
        GOOD + "[wifi]\nmode=ap\n",  # duplicate section
    ],
)
def test_refuses_anything_else(bad):
    with pytest.raises(wifi.Rejected):
        wifi.check(bad)


def test_apply_is_idempotent_and_factory_reset_removes_the_profile(tmp_path):
    source = tmp_path / "state/wifi.nmconnection"
    target = tmp_path / "etc/NetworkManager/system-connections/scribelink-wifi.nmconnection"
    source.parent.mkdir()
    source.write_text(GOOD)
    argv = [
        sys.executable,
        str(HELPER),
        "--source",
        str(source),
        "--target",
        str(target),
        "--no-nmcli",
    ]
    first = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert "event=wifi_applied" in first.stdout
    assert target.read_text() == GOOD and target.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert "event=wifi_unchanged" in again.stdout
    source.write_text(GOOD + "\n[vpn]\nservice-type=x\n")
    refused = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert target.read_text() == GOOD  # the good profile stays
    source.unlink()
    gone = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert "event=wifi_removed" in gone.stdout and not target.exists()
