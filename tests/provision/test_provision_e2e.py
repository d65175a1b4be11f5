"""A blank unit, a tech with a laptop, a cable and one enrolment code the clinic's authority
made: checked, enrolled, self-tested and locked over a real pty with the real service,
tool, relay, mosquitto and the real puck firmware (MicroPython); then its agent streams
sessions signed with the key enrolment bound to it, and the reference receiver accepts
them; then nobody with a cable can re-point it. And what is refused before anything on
the unit changes: a wrong code, a code for another unit, a code without the clinic
authority, no mics, no puck, a wrong clock. (Unlock, factory reset and trust changes, with
and without the clinic's tokens: test_serial_adversary.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import serial
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from provision_support import (
    PY,
    ROOT,
    Service,
    cli,
    info,
    signed_in_laptop,
    snapshot,
    wait_for,
)
from support import archived_frames
from trustkit import Clinic

from edge_agent import config as agent_config
from edge_agent import unitkey
from scribelink import enrolcode, trust
from scribelink import envelope as env
from scribelink import provisioning as p

WIFI_PASS = "correct-horse-battery-staple-42"
UNIT = "exam-7"
ROOM = "Exam 7"


def site_config(tmp: Path) -> Path:
    site = tmp / "agent.toml"
    state = tmp / "agent-state"
    site.write_text(
        f'state_dir = "{state}"\n'
        '[capture]\ndevice = "sl_good"\nchannels = 4\nperiod_frames = 320\n'
        '[file_input]\npace_realtime = true\nstop_after_frames = 48000\nexit_when_done = true\n'
        '[dsp]\nmode = "off"\n[session]\nchunk_ms = 40\n'
        f'[spool]\ndir = "{state / "spool"}"\n'
    )
    return site


def sign_in(tmp: Path, cable, relay) -> Path:
    """The tech signs in once on this laptop; the tool remembers it."""
    home = signed_in_laptop(tmp, cable, relay)
    saved = home / "config" / "scribelink" / "relays.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert "tech1-password-1" not in saved.read_text() and "token" in saved.read_text()
    return home


def test_one_code_enrols_tests_and_locks_a_blank_unit_whose_signed_sessions_are_accepted(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    home = sign_in(tmp_path, cable, relay)
    relay.add_user("scribe1", "scribe", "scribe-password-1")
    (tmp_path / "scribe1.pw").write_text("scribe-password-1\n")
    clinic = Clinic()
    recovery = env.public_key_raw(X25519PrivateKey.generate())
    code, _code_id = clinic.enrolment_code(relay, UNIT, ROOM,
                                           clinic="Northside Family Practice",
                                           recovery_public_key=recovery)
    (tmp_path / "wifi.txt").write_text(WIFI_PASS + "\n")

    site = site_config(tmp_path)
    state = tmp_path / "unit-state"
    svc = Service(cable, state, alsa_conf, puck_port=str(puck_sim.link), site=site,
                  selftest_s=0.5)
    outputs: list[str] = []
    try:
        # --- a blank unit, puck plugged in, pinned to no clinic yet
        svc.wait_ready()
        hello = info(cable)
        assert hello["state"] == "blank" and hello["serial"] == "SN-TEST-0001"
        assert hello["hw_rev"] == "B2" and hello["mics"]["channels_detected"] == 4
        assert hello["puck"] == "present" and hello["software"]["provisioning"] == p.REVISION
        assert hello["anchor"] is None and hello["signing_key"] is None

        # --- identify: which unit is on the cable? Its puck blinks (the real firmware)
        mark = puck_sim.mark()
        r = cli(cable, "identify", "--seconds", "2")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SN-TEST-0001" in r.stdout and "blinks" in r.stdout
        shown = puck_sim.wait_for(lambda m: m.get("led") == "identify", 1, "identify", mark)
        after = puck_sim.wait_for(lambda m: "led" in m and m["led"] != "identify", 5,
                                  "the ring to stop identifying", puck_sim.lines.index(shown))
        assert 1.8 <= (after["t"] - shown["t"]) / 1000 <= 3.0

        # --- the wizard: one code (the tool finds the port and remembers the sign-in)
        run = cli(cable, "enroll", "--code", code, "--wifi-ssid", "ClinicIoT",
                  "--wifi-passphrase-file", str(tmp_path / "wifi.txt"), home=home)
        outputs += [run.stdout, run.stderr]
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Checks before anything on the unit changes:" in run.stdout
        for n in range(1, 7):
            assert f"[{n}/6]" in run.stdout
        assert "DONE" in run.stdout and "PASS" in run.stdout and "FAIL" not in run.stdout
        for check in ("cable", "mic1", "mic4", "puck", "broker", "clock", "relay", "code",
                      "grant"):
            assert f"  {check} " in run.stdout, check
        assert f"granted by the clinic authority {clinic.authority.fingerprint[:19]}" in \
            run.stdout
        assert "pins nothing yet" in run.stdout and "(ed25519, a file on the unit)" in run.stdout

        # the record: in the per-user data dir (not the current directory), no secrets
        records = list((home / "data" / "scribelink" / "provisioning").glob("exam-7-*.json"))
        assert len(records) == 1 and not list(ROOT.glob("provisioning-*.json"))
        record = json.loads(records[0].read_text())
        assert record["outcome"] == "locked" and record["unit_serial"] == "SN-TEST-0001"
        assert record["unit_id"] == UNIT and record["room"] == ROOM and record["tech"] == "tech1"
        assert record["selftest"]["passed"] is True and record["confirmed"] == "now"
        assert record["authority_fingerprint"] == clinic.authority.fingerprint
        audit = relay.api("GET", "/api/admin/audit").json()
        enrolled = [a for a in audit if a["action"] == "unit_enrolled" and a["target"] == UNIT]
        assert len(enrolled) == 1
        assert enrolled[0]["detail"]["cert_fingerprint"] == record["cert_fingerprint_sha256"]

        # the unit: keys 0600 that never left it, Wi-Fi secret 0600, overlay the agent takes
        key, sign_key = state / "tls" / "unit.key", state / "tls" / "sign.key"
        for secret_file in (key, sign_key, state / "wifi.nmconnection"):
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file
        wifi = state / "wifi.nmconnection"
        assert f"psk={WIFI_PASS}" in wifi.read_text() and "ssid=ClinicIoT" in wifi.read_text()
        tapped = cable.tap.decode("latin-1")
        assert key.read_text() not in tapped and sign_key.read_text() not in tapped
        cfg = agent_config.load(site, state / "provisioned.toml")
        assert cfg.unit_id == UNIT and cfg.broker.url == broker.url
        assert Path(cfg.keys.recovery_public_key_file).read_text().strip() == \
            trust.b64(recovery)
        assert Path(cfg.keys.authority_public_key_file).read_text().strip() == \
            clinic.authority.public_b64()
        # the unit's own key, bound to this unit id under the clinic's grant; the relay
        # keeps the same binding (it could not have made it: it never saw the code)
        bound = trust.verify_binding(clinic.public, json.loads(
            Path(cfg.keys.binding_file).read_text()))
        assert bound.unit == UNIT
        assert bound.sign_key_raw == unitkey.load(cfg.keys.signing_key_file).public_raw
        assert record["sign_key_id"] == bound.key_id
        assert [b["key_id"] for b in relay.api(
            "GET", f"/api/admin/units/{UNIT}/bindings").json()] == [bound.key_id]

        locked = info(cable)
        outputs.append(json.dumps(locked))
        assert locked["state"] == "locked" and locked["unit_id"] == UNIT
        assert locked["wifi_passphrase_set"] is True and locked["failsafe"] is None
        assert locked["cert"]["fingerprint_sha256"] == record["cert_fingerprint_sha256"]
        assert locked["anchor"]["authority"] == clinic.authority.public_b64()
        assert locked["anchor"]["recovery_public_key"] == trust.b64(recovery)
        assert locked["signing_key"]["key_id"] == bound.key_id
        summary = cli(cable, "status")
        assert "locked    at" in summary.stdout and "by tech1" in summary.stdout
        assert "Next: nothing" in summary.stdout and "signs its token" in summary.stdout
        pinned = cli(cable, "info")
        assert f"pinned    clinic authority {clinic.authority.fingerprint[:19]}" in pinned.stdout

        # --- the agent streams what provisioning wrote; the reference receiver (the scribe
        # client, pinned to the clinic's authority) checks every signature before it plays
        (tmp_path / "authority.pub").write_text(clinic.authority.public_b64() + "\n")
        events = tmp_path / "events.jsonl"
        scribe_log = tmp_path / "scribe.log"
        with open(scribe_log, "wb") as scribe_out:
            scribe = subprocess.Popen(
                [PY, "-m", "cloud_relay.scribe_client", "--relay", relay.url, "--user",
                 "scribe1", "--password-file", str(tmp_path / "scribe1.pw"), "--key",
                 str(tmp_path / "scribe.key"), "--events", str(events), "--robot",
                 "--label", "reference receiver", "--authority",
                 str(tmp_path / "authority.pub"), "--exit-when-complete"],
                cwd=ROOT, stdout=scribe_out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: relay.api("GET", "/api/admin/devices?pending=true").json(), 30,
                     "the reference receiver's device to register")
            assert clinic.endorse_pending(relay)
            clinic.assign_at(relay, UNIT, ["scribe1"], room=ROOM)
            agent_log = tmp_path / "agent.log"
            with open(agent_log, "wb") as agent_out:
                agent = subprocess.run(
                    [sys.executable, "-m", "edge_agent", "run", "--config", str(site),
                     "--config", str(state / "provisioned.toml")],
                    cwd=ROOT, stdout=agent_out, stderr=subprocess.STDOUT, timeout=90,
                    check=False, env={**os.environ, "ALSA_CONFIG_PATH": str(alsa_conf)})
            assert agent.returncode == 0, agent_log.read_text()[-3000:]
            scribe.wait(60)
        finally:
            if scribe.poll() is None:
                scribe.terminate()
                scribe.wait(10)
        records_seen = [json.loads(ln) for ln in events.read_text().splitlines()]
        opened = [r for r in records_seen if r["type"] == "session_open"]
        assert opened and opened[0]["unit"] == UNIT, scribe_log.read_text()[-2000:]
        assert any(r["type"] == "session_complete" for r in records_seen)
        counters = next(r for r in records_seen if r["type"] == "counters")
        assert counters["forged"] == 0 and counters["tampered"] == 0, counters
        assert counters["chunks"] >= 70  # 3 s of 40 ms chunks
        audio = len(archived_frames(relay.dir / "data", unit=UNIT))
        assert audio >= 70

        # --- someone else with a cable: a locked unit refuses to be re-pointed
        ser = serial.serial_for_url(str(cable.tech_link), timeout=0.05)
        client = p.Client(ser.write, ser.read, time.monotonic, 4000)
        for cmd, args in ((p.CMD_ARM_FAILSAFE, {"enrolment_id": "evil"}),
                          (p.CMD_SET_CONFIG, {"broker_url": "mqtts://evil.example:8883"}),
                          (p.CMD_GENERATE_KEY, {}), (p.CMD_COMMIT, {}), (p.CMD_ROLLBACK, {}),
                          (p.CMD_INSTALL_CERT, {"cert_pem": "x", "ca_pem": "y"})):
            try:
                client.call(cmd, args)
            except p.CommandFailed as e:
                assert e.code == p.E_LOCKED and "unlock" in e.action
            else:
                raise AssertionError(f"a locked unit accepted {cmd}")
        assert client.call(p.CMD_STATUS)["state"] == "locked"  # read-only still answered
        ser.close()
        other, _ = clinic.enrolment_code(relay, "exam-9", "Exam 9")
        before = snapshot(state)
        again = cli(cable, "enroll", "--code", other, home=home)
        assert again.returncode == 1 and "wrong unit" in again.stderr, again.stderr
        assert "identify" in again.stderr and snapshot(state) == before
    finally:
        svc.stop()

    # --- secrets: not in any log, output or record
    records = (home / "data" / "scribelink" / "provisioning").glob("*.json")
    texts = outputs + [svc.log.read_text(), (relay.dir / "relay.log").read_text(),
                       (tmp_path / "agent.log").read_text(), repr(relay.api(
                           "GET", "/api/admin/audit").json())] + [r.read_text() for r in records]
    blob = "\n".join(texts)
    assert "event=request cmd=set_config" in blob  # the logs were really captured
    parsed = enrolcode.parse(code)
    for secret in (WIFI_PASS, code, code.replace("-", ""), parsed.proof(), parsed.secret.hex(),
                   "tech1-password-1", sign_key.read_text().splitlines()[1]):
        assert secret not in blob


def test_self_test_names_a_dead_mic_channel_the_part_and_what_to_do(tmp_path, cable, alsa_conf):
    svc = Service(cable, tmp_path / "unit", alsa_conf, device="sl_dead3", selftest_s=0.5)
    try:
        svc.wait_ready()
        r = cli(cable, "selftest")
        assert r.returncode == 1
        assert "mic channel 3 (MIC3) silent" in r.stdout
        assert "ReSpeaker 4-Mic Array HAT" in r.stdout and "40-pin header" in r.stdout
        lines = {ln.replace("NOT YET", "NOT_YET").split()[1]: ln
                 for ln in r.stdout.splitlines() if ln.startswith("  ") and len(ln.split()) > 1}
        assert lines["mic1"].split()[0] == "PASS" and lines["mic3"].split()[0] == "FAIL"
        assert "no cue puck configured" in lines["puck"]  # reported, not crashed
        # what cannot run before enrolment says so, and what it needs
        assert lines["broker"].startswith("  NOT YET") and "certificate" in lines["broker"]
        assert lines["clock"].split()[0] == "PASS"  # the tool sent the laptop's time
        j = json.loads(cli(cable, "selftest", "--json").stdout)
        assert {c["check"]: c["status"] for c in j["checks"]}["broker"] == "not_yet"
    finally:
        svc.stop()


def refused_before_any_change(cable, state, code, home, *expect: str) -> None:
    before = snapshot(state)
    r = cli(cable, "enroll", "--code", code, home=home)
    assert r.returncode in (1, 3), r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    if os.environ.get("SHOW_REFUSALS"):
        print(r.stdout + r.stderr)
    for text in expect:
        assert text in r.stdout + r.stderr, (text, r.stdout, r.stderr)
    assert snapshot(state) == before  # byte for byte


def test_wrong_codes_missing_parts_and_a_wrong_clock_are_refused_before_anything_changes(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    home = sign_in(tmp_path, cable, relay)
    clinic = Clinic()

    # a tech's tool makes no codes any more: the clinic admin does, with the authority
    made = cli(cable, "code", "--unit", UNIT, "--room", ROOM, home=home)
    assert made.returncode == 1 and "python -m scribelink.authority code" in made.stderr
    good, _ = clinic.enrolment_code(relay, UNIT, ROOM)
    assert enrolcode.parse(good).room == ROOM and enrolcode.parse(good).relay_url == relay.url
    typo = good[:12] + ("Q" if good[12] != "Q" else "R") + good[13:]
    stranger = enrolcode.EnrolCode.new(relay_url=relay.url, broker_url=broker.url,
                                       clinic="x", room="x", unit_id=UNIT,
                                       authority=clinic.authority.public_raw).text()
    unanchored = enrolcode.EnrolCode.new(relay_url=relay.url, broker_url=broker.url,
                                         clinic="x", room="x", unit_id=UNIT).text()
    puck = str(puck_sim.link)
    cases = [
        ("a mistyped code", {}, typo, ["check digits", "scan its QR"]),
        ("a code this relay never made", {}, stranger, ["FAIL     code",
                                                        "does not know this enrolment code"]),
        ("a code without the clinic authority", {}, unanchored,
         ["FAIL     code", "names no clinic authority", "python -m scribelink.authority code"]),
        ("no mics", {"device": "sl_missing"}, good, ["FAIL     mics", "cannot capture",
                                                     "press the ReSpeaker 4-Mic Array HAT"]),
        ("no puck", {"puck": None}, good, ["FAIL     puck", "no cue puck configured"]),
        ("the unit's clock 10 min off", {"extra": ["--clock-offset-s", "600"]}, good,
         ["FAIL     clock", "+600 s off the laptop's", "set the unit's clock"]),
    ]
    for i, (_what, unit, code, expect) in enumerate(cases):
        state = tmp_path / f"unit-{i}"
        svc = Service(cable, state, alsa_conf, device=unit.get("device", "sl_good"),
                      puck_port=unit.get("puck", puck), extra=unit.get("extra"), selftest_s=0.1)
        try:
            svc.wait_ready()
            refused_before_any_change(cable, state, code, home, *expect,
                                      "nothing on the unit was changed" if i else "FAILED")
        finally:
            svc.stop()

    # a code for another unit: this one is already reserved by a unit half-enrolled at
    # another bench (serial SN-OTHER): refused, and says by whom
    other = tmp_path / "other-unit"
    svc = Service(cable, other, alsa_conf, puck_port=puck, selftest_s=0.1, serial="SN-OTHER")
    try:
        svc.wait_ready()
        cable.pull_when("to_unit", p.CMD_INSTALL_CERT, p.KIND_REQUEST)
        assert cli(cable, "enroll", "--code", good, home=home).returncode == 3
        cable.replug()
    finally:
        svc.stop()
    state = tmp_path / "this-unit"
    svc = Service(cable, state, alsa_conf, puck_port=puck, selftest_s=0.1)
    try:
        svc.wait_ready()
        refused_before_any_change(cable, state, good, home, "another unit (serial SN-OTHER)",
                                  "FAIL     code", "cancel", "nothing on the unit was changed")
    finally:
        svc.stop()


def test_a_silent_port_says_it_is_waiting_then_what_to_check(tmp_path, cable):
    t0 = time.monotonic()
    r = cli(cable, "info")  # nothing serves the unit's end of the cable
    assert r.returncode == 3
    assert "waiting for the unit on" in r.stderr  # feedback during the wait
    assert "did not answer" in r.stderr and "black wire on position 1" in r.stderr
    assert time.monotonic() - t0 < 10
