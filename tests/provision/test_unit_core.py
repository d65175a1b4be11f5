"""The service's state machine and self-test analysis, in process over a real state dir
with real keys and certificates: what it accepts, what it refuses and why."""

from __future__ import annotations

import datetime as dt
import json
import stat

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from provision_support import trust_args
from trustkit import Clinic

from cloud_relay import pki
from edge_agent.provision import ServeSettings, Unit
from edge_agent.selftest import analyze_channels, check_clock
from scribelink import provisioning as p

PASS = "hunter2-but-longer"
GOOD = {"clinic": "Northside", "room": "Exam 2", "unit_id": "exam-2",
        "broker_url": "mqtts://broker.clinic:8883", "relay_url": "https://relay.clinic",
        "wifi_ssid": "ClinicIoT", "wifi_passphrase": PASS}


def call(unit: Unit, cmd: str, args: dict | None = None) -> dict:
    return unit.handle(cmd, args or {}, lambda _m: None)


def arm(unit: Unit, eid: str = "e1", expiry_s: float = 60) -> dict:
    r = call(unit, "arm_failsafe", {"enrolment_id": eid, "expiry_s": expiry_s})
    assert r["ok"], r
    return r["result"]


@pytest.fixture
def unit(tmp_path):
    return Unit(ServeSettings(state_dir=tmp_path / "unit", serial_number="SN-1"))


def test_changes_need_an_armed_fail_safe_and_stay_staged_until_commit(unit):
    assert call(unit, "hello")["result"]["state"] == "blank"
    for cmd in ("set_config", "generate_key", "install_cert", "commit"):
        assert call(unit, cmd, GOOD if cmd == "set_config" else {})["error"]["code"] == \
            p.E_FAILSAFE_NOT_ARMED
    assert not unit.dir.exists() or not any(unit.dir.iterdir())
    arm(unit)
    r = call(unit, "set_config", GOOD)
    assert r["ok"] and r["result"]["staged"] and r["result"]["state"] == "blank"
    assert "wifi_passphrase" in r["result"]["saved"] and PASS not in json.dumps(r)
    gen = call(unit, "generate_key")["result"]
    assert gen["sign_key_type"] == "ed25519" and gen["sign_key_store"] == "file"
    ca = pki.make_ca()
    cert = pki.sign_csr(ca, gen["csr_pem"].encode(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(cert).decode(),
                                    "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(Clinic(), gen, "exam-2")})
    assert r["ok"], r
    hello = call(unit, "hello")["result"]
    assert hello["state"] == "blank" and hello["unit_id"] is None  # nothing committed
    assert hello["anchor"] is None and hello["signing_key"] is None
    staged = hello["failsafe"]["staged"]
    assert staged["settings"] and staged["key"] and staged["wifi"]
    assert staged["sign_key"] and staged["binding"]
    assert stat.S_IMODE(unit.staged.sign_key.stat().st_mode) == 0o600
    assert staged["cert"]["fingerprint_sha256"] == r["result"]["fingerprint_sha256"]
    assert stat.S_IMODE(unit.staged.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((unit.staged.root / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE((unit.staged / "wifi.nmconnection").stat().st_mode) == 0o600
    # commit needs a passed self-test for this very certificate
    r = call(unit, "commit")
    assert r["error"]["code"] == p.E_SELFTEST_NOT_PASSED


def enrolled(unit) -> tuple[pki.CA, str, dict]:
    """Arm, stage settings and keys: -> the CA, the CSR and install_cert's trust arguments."""
    arm(unit)
    call(unit, "set_config", GOOD)
    gen = call(unit, "generate_key")["result"]
    return pki.make_ca(), gen["csr_pem"], trust_args(Clinic(), gen, "exam-2")


def test_install_cert_refuses_wrong_key_wrong_unit_wrong_ca(unit):
    ca, csr, tr = enrolled(unit)
    other = pki.issue(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(other).decode(),
                                    "ca_pem": ca.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_KEY_MISMATCH

    from cryptography import x509
    pub = x509.load_pem_x509_csr(csr.encode()).public_key()
    wrong_cn = pki.issue(ca, pub, "exam-3")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(wrong_cn).decode(),
                                    "ca_pem": ca.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_WRONG_UNIT and "exam-3" in r["error"]["message"]

    rogue = pki.make_ca("Rogue CA")
    right = pki.sign_csr(ca, csr.encode(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(right).decode(),
                                    "ca_pem": rogue.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_UNTRUSTED
    r = call(unit, "install_cert", {"cert_pem": "-----BEGIN CERTIFICATE-----\nxx",
                                    "ca_pem": ca.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_INVALID
    # the tool of revision 2 (no binding) is told to update
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(right).decode(),
                                    "ca_pem": ca.cert_pem().decode()})
    assert r["error"]["code"] == p.E_BAD_REQUEST and "binding" in r["error"]["message"]
    assert call(unit, "hello")["result"]["failsafe"]["staged"]["cert"] is None  # none taken


def test_a_unit_clock_far_off_refuses_the_certificate(tmp_path):
    unit = Unit(ServeSettings(state_dir=tmp_path / "u", clock_offset_s=-3 * 86400))
    ca, csr, tr = enrolled(unit)
    cert = pki.sign_csr(ca, csr.encode(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(cert).decode(),
                                    "ca_pem": ca.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_NOT_VALID_NOW and "clock" in r["error"]["action"]


@pytest.mark.parametrize("bad, word", [
    ({"unit_id": "a/b"}, "unit_id"), ({"unit_id": "relay"}, "unit_id"),
    ({"broker_url": "mqtt://h:1883"}, "mqtts"), ({"room": "x\ny"}, "control"),
    ({"wifi_passphrase": "short"}, "8-63"), ({"color": "red"}, "unknown"),
    ({"recovery_public_key": "bm90IGEga2V5"}, "X25519"),
])
def test_set_config_refusals_name_the_setting_not_the_value(unit, bad, word):
    arm(unit)
    r = call(unit, "set_config", {**GOOD, **bad})
    assert r["error"]["code"] == p.E_INVALID_CONFIG and word in r["error"]["message"]
    if "wifi_passphrase" in bad:
        assert bad["wifi_passphrase"] not in json.dumps(r)


def test_presence_gated_commands_need_a_puck(unit):
    r = call(unit, "factory_reset")
    assert r["error"]["code"] == p.E_NO_PUCK and "plug" in r["error"]["action"]


def test_unknown_and_malformed_commands(unit):
    assert call(unit, "cmd_hello")["error"]["code"] == p.E_UNKNOWN_COMMAND
    assert call(unit, "__init__")["error"]["code"] == p.E_UNKNOWN_COMMAND


def level_block(amplitude: float, channels: int = 4, n: int = 32000) -> np.ndarray:
    """Noise at `amplitude` of full scale on every channel."""
    rng = np.random.default_rng(3)
    x = amplitude * rng.standard_normal((n, channels)) * 32767
    return np.clip(x, -32768, 32767).astype(np.int16)


def test_mic_analysis_flags_silent_clipping_and_dc_channels():
    x = level_block(0.03)
    assert all(r["ok"] for r in analyze_channels(x))
    x[:, 1] = 0  # dead
    x[:, 2] = np.clip(level_block(2.0)[:, 2].astype(np.int32) * 4, -32768, 32767)  # clipping
    x[:, 3] = np.clip(x[:, 3].astype(np.int32) + 6000, -32768, 32767)  # DC offset
    res = {r["channel"]: r for r in analyze_channels(x)}
    assert {r["status"] for r in res.values()} == {"pass", "fail"}
    assert res[1]["ok"]
    assert not res[2]["ok"] and "silent" in res[2]["problem"] and "reseat" in res[2]["fix"]
    assert not res[3]["ok"] and "clipping" in res[3]["problem"]
    assert not res[4]["ok"] and "DC" in res[4]["problem"]


def test_clock_check_uses_laptop_time_and_certificate_window():
    now = 1_800_000_000.0
    nb = dt.datetime.fromtimestamp(now - 3600, dt.UTC)
    na = dt.datetime.fromtimestamp(now + 86400, dt.UTC)
    assert check_clock(now, now + 5, nb, na)["ok"]
    off = check_clock(now, now + 600, nb, na)
    assert not off["ok"] and "-600" in off["problem"] and "NTP" in off["fix"]
    early = check_clock(now - 7200, now - 7200, nb, na)
    assert not early["ok"] and "validity" in early["problem"]
    # without the laptop's time the clock cannot be judged yet: NOT YET, not FAIL
    unknown = check_clock(now, None, nb, na)
    assert unknown["status"] == "not_yet" and "laptop" in unknown["needs"]
    # before a certificate exists, the skew alone decides
    assert check_clock(now, now + 3)["status"] == "pass"


def test_wifi_keyfile_is_what_the_root_side_installer_accepts(unit):
    """hardware/libexec/scribelink-wifi-apply (root) installs only the exact keyfile shape
    provisioning writes; this pins the two together."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "hardware" / "libexec" / "scribelink-wifi-apply"
    loader = importlib.machinery.SourceFileLoader("wifi_apply", str(path))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("wifi_apply", loader))
    loader.exec_module(mod)
    arm(unit)
    for ssid, psk in (("ClinicIoT", PASS), ("Café Wi-Fi 5G", "p@ss word=with#stuff!"),
                      ("x" * 32, "y" * 63)):
        r = call(unit, "set_config", {**GOOD, "wifi_ssid": ssid, "wifi_passphrase": psk})
        assert r["ok"], r
        mod.check((unit.staged / "wifi.nmconnection").read_text())
    for bad in ({"wifi_passphrase": " leading-space"}, {"wifi_passphrase": "back\\slash1"},
                {"wifi_ssid": "semi;colon", "wifi_passphrase": PASS}):
        assert call(unit, "set_config", {**GOOD, **bad})["error"]["code"] == p.E_INVALID_CONFIG


def test_presence_relayed_by_the_running_agent_counts_only_after_the_request(tmp_path):
    """While the agent runs it owns the puck's port; it relays presence holds through
    record_presence_hold (the contract the agent calls from Puck's on_presence_hold)."""
    import threading
    import time

    from edge_agent.provision import UnitPresence, record_presence_hold

    record_presence_hold(tmp_path)  # an old hold, before anybody asked
    presence = UnitPresence(None, tmp_path)
    assert presence.state() == "absent"
    t0 = time.monotonic()
    told = []
    assert presence.wait_for_hold(5, 1.0, lambda: told.append(1)) is False
    assert time.monotonic() - t0 >= 1.0 and told == [1]
    threading.Timer(0.5, record_presence_hold, args=(tmp_path,)).start()
    assert presence.wait_for_hold(5, 5.0) is True
    assert stat.S_IMODE((tmp_path / "presence.stamp").stat().st_mode) == 0o600


def test_a_clinic_ca_pinned_in_the_site_config_cannot_be_swapped(tmp_path):
    clinic = pki.make_ca("Clinic CA")
    (tmp_path / "clinic-ca.pem").write_bytes(clinic.cert_pem())
    site = tmp_path / "agent.toml"
    site.write_text(f'[broker]\nca_file = "{tmp_path / "clinic-ca.pem"}"\n')
    unit = Unit(ServeSettings(state_dir=tmp_path / "u", site_config=str(site)))
    arm(unit)
    call(unit, "set_config", GOOD)
    gen = call(unit, "generate_key")["result"]
    csr, tr = gen["csr_pem"].encode(), trust_args(Clinic(), gen, "exam-2")
    rogue = pki.make_ca("Rogue CA")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(pki.sign_csr(rogue, csr, "exam-2"))
                                    .decode(), "ca_pem": rogue.cert_pem().decode(), **tr})
    assert r["error"]["code"] == p.E_CERT_UNTRUSTED and "clinic CA" in r["error"]["message"]
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(pki.sign_csr(clinic, csr, "exam-2"))
                                    .decode(), "ca_pem": clinic.cert_pem().decode(), **tr})
    assert r["ok"], r


def test_mic_fixes_name_the_part_and_the_action_for_the_fitted_array():
    from edge_agent.selftest import mic_array

    x = level_block(0.03, channels=4)
    x[:, 2] = 0
    hat = {r["check"]: r for r in analyze_channels(x, array=mic_array("respeaker-4mic-pi"))}
    assert "ReSpeaker 4-Mic Array HAT" in hat["mic3"]["fix"] and "40-pin header" in \
        hat["mic3"]["fix"]
    assert "ribbon" not in hat["mic3"]["fix"] and "cable" not in hat["mic3"]["fix"]

    # the USB array: channel 0 is its processed output, 1-4 the mics, 5 the playback
    usb = mic_array("respeaker-usb-v2")
    x = level_block(0.03, channels=6)
    x[:, 2] = 0  # MIC2 dead
    x[:, 5] = 0  # nothing playing: the loopback channel is silent, and that is fine
    rows = {r["check"]: r for r in analyze_channels(x, array=usb)}
    assert sorted(rows) == ["mic1", "mic2", "mic3", "mic4"]
    assert rows["mic2"]["status"] == "fail" and "MIC2" in rows["mic2"]["problem"]
    assert "micro-USB" in rows["mic2"]["fix"] and "HAT" not in rows["mic2"]["fix"]
    assert "ribbon" not in rows["mic2"]["fix"]
    assert all(rows[m]["status"] == "pass" for m in ("mic1", "mic3", "mic4"))

    # the 6-mic kit: its mic board hangs off the HAT by a cable; channels 7-8 are loopback
    kit = mic_array("respeaker-6mic")
    x = level_block(0.03, channels=8)
    x[:, 6:] = 0
    x[:, 4] = 0
    rows = {r["check"]: r for r in analyze_channels(x, array=kit)}
    assert len(rows) == 6 and rows["mic5"]["status"] == "fail"
    assert "round microphone board" in rows["mic5"]["fix"]
