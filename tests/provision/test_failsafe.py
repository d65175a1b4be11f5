"""The unit's fail-safe, in process over a real state dir with real keys and certificates:
changes are staged, then committed together or rolled back (on expiry, on request, at a
restart), a commit cut short is finished at the next start, and a resumed enrolment keeps
its key and certificate. Clocks are passed in, so no test waits for a timer.

Where a commit needs a passed self-test, the stored verdict is set up directly: the
self-test itself runs against the real mics, puck and broker in test_provision_e2e.py."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from provision_support import snapshot, trust_args
from trustkit import Clinic

from cloud_relay import pki
from edge_agent import provision
from edge_agent.provision import ServeSettings, Unit, fingerprint
from scribelink import provisioning as p

GOOD = {"clinic": "Northside", "room": "Exam 2", "unit_id": "exam-2",
        "broker_url": "mqtts://broker.clinic:8883", "relay_url": "https://relay.clinic",
        "wifi_ssid": "ClinicIoT", "wifi_passphrase": "hunter2-but-longer"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def call(unit: Unit, cmd: str, args: dict | None = None) -> dict:
    return unit.handle(cmd, args or {}, lambda _m: None)


def make_unit(state, clock: Clock | None = None, **kw) -> Unit:
    return Unit(ServeSettings(state_dir=state, serial_number="SN-1", **kw),
                monotonic=clock or Clock())


CLINIC = Clinic()


def stage(unit: Unit, ca: pki.CA, eid: str = "e1", settings: dict = GOOD,
          tested: bool = True) -> str:
    """Arm, stage settings, keys, certificate and binding; -> the certificate's
    fingerprint."""
    assert call(unit, "arm_failsafe", {"enrolment_id": eid, "expiry_s": 60})["ok"]
    assert call(unit, "set_config", settings)["ok"]
    gen = call(unit, "generate_key")["result"]
    cert = pki.sign_csr(ca, gen["csr_pem"].encode(), settings["unit_id"])
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(cert).decode(),
                                    "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(CLINIC, gen, settings["unit_id"])})
    assert r["ok"], r
    fp = r["result"]["fingerprint_sha256"]
    if tested:  # the stored verdict of a passed self-test for this certificate
        (unit.staged / "selftest.json").write_text(json.dumps(
            {"passed": True, "checks": [], "cert_fingerprint_sha256": fp}))
    return fp


@pytest.fixture
def ca():
    return pki.make_ca()


def test_the_fail_safe_expiring_rolls_everything_back_byte_for_byte(tmp_path, ca):
    clock = Clock()
    unit = make_unit(tmp_path / "u", clock)
    unit.live.mkdir_private()
    before = snapshot(unit.dir)
    stage(unit, ca)
    assert (unit.staged / "wifi.nmconnection").exists() and unit.staged.key.exists()
    clock.t += 59
    unit.tick()
    assert call(unit, "hello")["result"]["failsafe"]["expires_in_s"] == 1
    clock.t += 1
    unit.tick()  # the serve loop does this even while nobody talks to the unit
    assert snapshot(unit.dir) == before and not unit.staged.root.exists()
    assert call(unit, "install_cert", {})["error"]["code"] == p.E_FAILSAFE_NOT_ARMED


def test_a_restart_rolls_back_an_uncommitted_enrolment(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    unit.live.mkdir_private()
    before = snapshot(unit.dir)
    stage(unit, ca)
    again = make_unit(tmp_path / "u")  # the unit rebooted (or the service restarted)
    assert snapshot(again.dir) == before
    assert call(again, "hello")["result"]["failsafe"] is None


def test_commit_applies_everything_at_once_and_locks(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    fp = stage(unit, ca)
    r = call(unit, "commit", {"tech": "tech1"})
    assert r["ok"], r
    assert r["result"]["state"] == "locked" and r["result"]["locked"]["enrolment_id"] == "e1"
    files = set(snapshot(unit.dir))
    assert files == {"settings.json", "wifi.nmconnection", "tls/unit.key", "tls/unit.pem",
                     "tls/sign.key", "binding.json", "anchor/ca.pem", "anchor/authority.pub",
                     "anchor/anchors.json", "selftest.json", "locked.json", "provisioned.toml"}
    assert fingerprint(unit.live.certificate()) == fp
    hello = call(unit, "hello")["result"]
    assert hello["unit_id"] == "exam-2" and hello["failsafe"] is None
    assert hello["anchor"]["authority"] == CLINIC.authority.public_b64()
    assert hello["anchor"]["broker_url"] == GOOD["broker_url"]
    assert hello["signing_key"]["store"] == "file"


def test_a_commit_cut_short_is_finished_at_the_next_start(tmp_path, ca, monkeypatch):
    """Power fails after the commit point, half-way through moving files into place (the
    failure is injected into os.replace); the next start finishes the move."""
    unit = make_unit(tmp_path / "u")
    fp = stage(unit, ca)
    real_replace, moved = provision.os.replace, []

    def power_cut_after_three(src, dst):
        if (unit.staged / provision.COMMIT_MARKER).exists():  # past the commit point
            if len(moved) == 3 and provision.STAGING in str(src):
                raise OSError("power cut")
            moved.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(provision.os, "replace", power_cut_after_three)
    with pytest.raises(OSError):
        unit.cmd_commit({}, None)
    monkeypatch.setattr(provision.os, "replace", real_replace)
    assert (unit.staged / provision.COMMIT_MARKER).exists()
    assert not (unit.dir / "locked.json").exists()  # half-moved: not yet locked
    again = make_unit(tmp_path / "u")
    assert call(again, "hello")["result"]["state"] == "locked"
    assert fingerprint(again.live.certificate()) == fp and not again.staged.root.exists()
    key = serialization.load_pem_private_key(again.live.key.read_bytes(), None)
    assert key.public_key() == again.live.certificate().public_key()


def test_a_commit_cut_short_before_the_commit_point_rolls_back(tmp_path, ca, monkeypatch):
    unit = make_unit(tmp_path / "u")
    unit.live.mkdir_private()
    before = snapshot(unit.dir)
    stage(unit, ca)
    real = provision._write_atomic

    def power_cut_at_the_marker(path, data, mode=0o644):
        if path.name == provision.COMMIT_MARKER:
            raise OSError("power cut")
        return real(path, data, mode)

    monkeypatch.setattr(provision, "_write_atomic", power_cut_at_the_marker)
    with pytest.raises(OSError):
        unit.cmd_commit({}, None)
    monkeypatch.setattr(provision, "_write_atomic", real)
    assert snapshot(make_unit(tmp_path / "u").dir) == before


def test_resuming_keeps_the_staged_key_and_certificate(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    fp = stage(unit, ca)
    key_before, cert_before = unit.staged.key.read_bytes(), unit.staged.cert.read_text()
    sign_before = unit.staged.sign_key.read_bytes()
    again = call(unit, "arm_failsafe", {"enrolment_id": "e1", "expiry_s": 60})["result"]
    assert again["resumed"] and again["staged"]["cert"]["fingerprint_sha256"] == fp
    assert again["staged"]["selftest_passed"] and again["staged"]["binding"]
    assert call(unit, "set_config", GOOD)["ok"]  # the same settings again: nothing lost
    r = call(unit, "generate_key")["result"]
    assert r["reused"] and unit.staged.key.read_bytes() == key_before
    assert r["sign_key_reused"] and unit.staged.sign_key.read_bytes() == sign_before
    # the relay hands back the certificate it issued for this key: installed already,
    # and the self-test that passed for it still counts (the tool binds the key afresh)
    r = call(unit, "install_cert", {"cert_pem": cert_before, "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(CLINIC, r, "exam-2")})
    assert r["result"]["already_installed"] and r["result"]["fingerprint_sha256"] == fp
    assert call(unit, "commit")["ok"]


def test_another_certificate_needs_its_own_self_test(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    stage(unit, ca)
    gen = call(unit, "generate_key")["result"]
    other = pki.sign_csr(ca, gen["csr_pem"].encode(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(other).decode(),
                                    "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(CLINIC, gen, "exam-2")})
    assert r["ok"] and not r["result"]["already_installed"]
    assert call(unit, "commit")["error"]["code"] == p.E_SELFTEST_NOT_PASSED


def test_another_code_finds_the_fail_safe_busy_until_rolled_back(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    stage(unit, ca, "first")
    r = call(unit, "arm_failsafe", {"enrolment_id": "second"})
    assert r["error"]["code"] == p.E_FAILSAFE_BUSY and "exam-2" in r["error"]["message"]
    assert "cancel" in r["error"]["action"]
    assert call(unit, "rollback")["result"]["rolled_back"] is True
    assert call(unit, "arm_failsafe", {"enrolment_id": "second"})["ok"]


def test_arming_again_extends_but_never_past_the_cumulative_limit(tmp_path):
    clock = Clock()
    unit = make_unit(tmp_path / "u", clock)
    arm = {"enrolment_id": "e", "expiry_s": p.FAILSAFE_MAX_S}
    assert call(unit, "arm_failsafe", arm)["result"]["expires_in_s"] == p.FAILSAFE_MAX_S
    clock.t += p.FAILSAFE_MAX_S - 1
    assert call(unit, "arm_failsafe", arm)["result"]["expires_in_s"] == p.FAILSAFE_MAX_S
    clock.t += p.FAILSAFE_MAX_S - 1  # 2 s before the cumulative limit
    assert call(unit, "arm_failsafe", arm)["result"]["expires_in_s"] == 2
    clock.t += 2
    unit.tick()
    assert call(unit, "hello")["result"]["failsafe"] is None
    for bad in (0, 1, p.FAILSAFE_MAX_S + 1, "60", True):
        r = call(unit, "arm_failsafe", {"enrolment_id": "e", "expiry_s": bad})
        assert r["error"]["code"] == p.E_BAD_REQUEST, bad


def test_re_enrolling_keeps_the_old_key_until_the_new_one_commits(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    stage(unit, ca, "first")
    assert call(unit, "commit")["ok"]
    (unit.dir / "locked.json").unlink()  # as `unlock` leaves it
    old_key, old_sign = unit.live.key.read_bytes(), unit.live.sign_key.read_bytes()
    old_binding = unit.live.binding.read_bytes()
    fp = stage(unit, ca, "second", {**GOOD, "room": "Exam 2b"}, tested=False)
    assert unit.live.key.read_bytes() == old_key  # still the committed identity
    assert unit.live.sign_key.read_bytes() == old_sign
    assert call(unit, "commit")["error"]["code"] == p.E_SELFTEST_NOT_PASSED
    call(unit, "rollback")
    assert unit.live.key.read_bytes() == old_key and unit.live.sign_key.read_bytes() == old_sign
    assert unit.live.binding.read_bytes() == old_binding
    assert call(unit, "hello")["result"]["room"] == "Exam 2"
    fp = stage(unit, ca, "third", {**GOOD, "room": "Exam 2b"})
    assert call(unit, "commit")["ok"]
    assert unit.live.key.read_bytes() != old_key and fingerprint(unit.live.certificate()) == fp
    assert unit.live.sign_key.read_bytes() != old_sign
    assert not (unit.dir / "tls" / "unit.key.old").exists()
    assert not (unit.dir / "tls" / "sign.key.old").exists()
    assert call(unit, "hello")["result"]["room"] == "Exam 2b"


def test_a_unit_with_an_identity_refuses_another_unit_id(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    stage(unit, ca)
    assert call(unit, "commit")["ok"]
    (unit.dir / "locked.json").unlink()
    before = snapshot(unit.dir)
    call(unit, "arm_failsafe", {"enrolment_id": "x"})
    r = call(unit, "set_config", {**GOOD, "unit_id": "exam-9"})
    assert r["error"]["code"] == p.E_WRONG_UNIT and "factory-reset" in r["error"]["action"]
    call(unit, "rollback")
    assert snapshot(unit.dir) == before


def test_a_locked_unit_refuses_to_arm(tmp_path, ca):
    unit = make_unit(tmp_path / "u")
    stage(unit, ca)
    call(unit, "commit")
    r = call(unit, "arm_failsafe", {"enrolment_id": "z"})
    assert r["error"]["code"] == p.E_LOCKED


class NobodyHolds:
    """A puck nobody presses (a test double: it answers at once where the real one, in
    test_provision_e2e.py, makes the command wait out its timeout)."""

    def state(self):
        return "present"

    def wait_for_hold(self, seconds, timeout_s, ready, holding):
        ready()
        return False


def test_presence_waits_shorter_than_the_hold_are_refused(tmp_path):
    unit = Unit(ServeSettings(state_dir=tmp_path / "u"), presence=NobodyHolds())
    for timeout in (1, 4, p.PRESENCE_MIN_TIMEOUT_S - 0.5, p.PRESENCE_MAX_TIMEOUT_S + 1):
        r = call(unit, "factory_reset", {"timeout_s": timeout})
        assert r["error"]["code"] == p.E_BAD_REQUEST and "hold itself" in r["error"]["message"]


def test_no_hold_in_time_is_refused_and_changes_nothing(tmp_path, ca):
    """With a valid token but no hold: refused, nothing changed, and the token not spent
    (the tech may hold the button on a second try)."""
    unit = Unit(ServeSettings(state_dir=tmp_path / "u"), presence=NobodyHolds(),
                monotonic=Clock())
    stage(unit, ca)
    assert call(unit, "commit")["ok"]
    before = snapshot(unit.dir)
    told = []
    for cmd in ("unlock", "factory_reset"):
        token = CLINIC.token("exam-2", cmd)
        for _ in range(2):
            r = unit.handle(cmd, {"timeout_s": p.PRESENCE_MIN_TIMEOUT_S, "token": token},
                            told.append)
            assert r["error"]["code"] == p.E_PRESENCE_NOT_SHOWN, r
            assert "button for 5 s while the command waits" in r["error"]["action"]
    assert [m["phase"] for m in told] == ["waiting"] * 4
    assert snapshot(unit.dir) == before


def test_a_new_unit_self_test_says_not_yet_for_what_needs_enrolment(tmp_path):
    unit = make_unit(tmp_path / "u", alsa_device="sl_none_here", selftest_seconds=0.05)
    r = call(unit, "selftest")["result"]
    rows = {c["check"]: c for c in r["checks"]}
    assert rows["broker"]["status"] == "not_yet" and "certificate" in rows["broker"]["needs"]
    assert rows["clock"]["status"] == "not_yet" and "laptop" in rows["clock"]["needs"]
    assert rows["mics"]["status"] == "fail" and "4-Mic Array HAT" in rows["mics"]["fix"]
    assert rows["puck"]["status"] == "fail" and not r["passed"]
    pre = call(unit, "precheck", {"laptop_time_utc": unit.now()})["result"]
    assert [c["check"] for c in pre["checks"]] == ["mics", "puck", "clock"]
    assert [c["status"] for c in pre["checks"]] == ["fail", "fail", "pass"]
