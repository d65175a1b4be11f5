"""A blank unit, a tech with a laptop and a cable: enrolled, self-tested and locked over a
real pty with the real service, CLI, relay, mosquitto and simulated puck; then it streams
through the relay; then nobody with a cable can re-point it without the puck's button."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import serial
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from provision_support import ROOT, Service, cli, cli_popen, info, wait_for

from edge_agent import config as agent_config
from scribelink import envelope as env
from scribelink import provisioning as p

WIFI_PASS = "correct-horse-battery-staple-42"
UNIT = "exam-7"
ROOM = "Exam 7"


def wait_told_to_hold(proc) -> None:
    """Read the CLI's output until the unit says to hold the button now (the unit has the
    puck open and is watching), as the tech would."""
    for line in proc.stdout:
        if "s now (waiting" in line:
            return
    raise AssertionError(f"the CLI never said to hold the button: {proc.stderr.read()}")


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


def enroll_args(tmp: Path, relay, broker, code: str) -> list[str]:
    (tmp / "tech.pw").write_text("tech-password-1\n")
    (tmp / "code.txt").write_text(code + "\n")
    (tmp / "wifi.txt").write_text(WIFI_PASS + "\n")
    rec = X25519PrivateKey.generate()
    (tmp / "recovery.pub").write_text(base64.b64encode(env.public_key_raw(rec)).decode())
    return ["enroll", "--relay", relay.url, "--user", "tech1",
            "--password-file", str(tmp / "tech.pw"), "--code-file", str(tmp / "code.txt"),
            "--clinic", "Northside Family Practice", "--room", ROOM, "--unit-id", UNIT,
            "--broker-url", broker.url, "--wifi-ssid", "ClinicIoT",
            "--wifi-passphrase-file", str(tmp / "wifi.txt"),
            "--recovery-key-file", str(tmp / "recovery.pub"),
            "--record", str(tmp / "record.json")]


def test_blank_unit_enrolled_tested_locked_streams_and_resists_recabling(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    relay.add_user("scribe1", "scribe", "scribe-password-1")
    scribe_key = X25519PrivateKey.generate()
    r = relay.api("PUT", "/api/me/key", "scribe1",
                  json={"public_key": base64.b64encode(env.public_key_raw(scribe_key)).decode()})
    assert r.status_code == 200
    code = relay.api("POST", "/api/enroll/codes", "admin",
                     json={"unit": UNIT, "room": ROOM}).json()["code"]

    site = site_config(tmp_path)
    state = tmp_path / "unit-state"
    svc = Service(cable, state, alsa_conf, puck_port=str(puck_sim.link), site=site)
    outputs: list[str] = []
    try:
        # --- a blank unit, puck plugged in
        svc.wait_ready()
        hello = wait_for(lambda: (h := info(cable))["puck"] == "present" and h, 20,
                         "the service to see the puck")
        assert hello["state"] == "blank" and hello["serial"] == "SN-TEST-0001"
        assert hello["hw_rev"] == "B2" and hello["mics"]["channels_detected"] == 4
        assert hello["software"]["protocol"] == p.VERSION

        # --- the wizard
        run = cli(cable, *enroll_args(tmp_path, relay, broker, code))
        outputs += [run.stdout, run.stderr]
        assert run.returncode == 0, run.stdout + run.stderr
        for n in range(1, 9):
            assert f"[{n}/8]" in run.stdout
        assert "DONE" in run.stdout and "PASS" in run.stdout and "FAIL" not in run.stdout
        for check in ("mic1", "mic4", "puck", "broker", "clock"):
            assert f"  {check}" in run.stdout

        # the record: the installation's facts, no secrets
        record = json.loads((tmp_path / "record.json").read_text())
        assert record["outcome"] == "locked" and record["unit_serial"] == "SN-TEST-0001"
        assert record["unit_id"] == UNIT and record["room"] == ROOM and record["tech"] == "tech1"
        assert record["selftest"]["passed"] is True
        audit = relay.api("GET", "/api/admin/audit").json()
        enrolled = [a for a in audit if a["action"] == "unit_enrolled" and a["target"] == UNIT]
        assert enrolled[0]["detail"]["cert_fingerprint"] == record["cert_fingerprint_sha256"]

        # the unit: key 0600 that never left it, Wi-Fi secret 0600, overlay the agent takes
        key = state / "tls" / "unit.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        wifi = state / "wifi.nmconnection"
        assert stat.S_IMODE(wifi.stat().st_mode) == 0o600
        assert f"psk={WIFI_PASS}" in wifi.read_text() and "ssid=ClinicIoT" in wifi.read_text()
        key_pem = key.read_text()
        assert key_pem not in cable.tap.decode("latin-1")  # the private key never crossed
        cfg = agent_config.load(site, state / "provisioned.toml")
        assert cfg.unit_id == UNIT and cfg.broker.url == broker.url
        assert Path(cfg.keys.recovery_public_key_file).exists()

        locked = info(cable)
        outputs.append(json.dumps(locked))
        assert locked["state"] == "locked" and locked["unit_id"] == UNIT
        assert locked["wifi_passphrase_set"] is True
        assert locked["cert"]["fingerprint_sha256"] == record["cert_fingerprint_sha256"]

        # --- the unit streams through the demo path with what provisioning wrote
        assert relay.api("PUT", "/api/admin/assignments", "admin",
                         json={"unit": UNIT, "scribes": ["scribe1"]}).status_code == 200
        agent_log = tmp_path / "agent.log"
        with open(agent_log, "wb") as agent_out:
            agent = subprocess.run(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(site),
                 "--config", str(state / "provisioned.toml")],
                cwd=ROOT, stdout=agent_out, stderr=subprocess.STDOUT, timeout=90, check=False,
                env={**os.environ, "ALSA_CONFIG_PATH": str(alsa_conf)})
        assert agent.returncode == 0, agent_log.read_text()[-3000:]
        sessions = relay.api("GET", f"/api/units/{UNIT}/sessions", "admin").json()
        assert sessions and sessions[0]["closed_us"] is not None
        db = sqlite3.connect(relay.dir / "data" / "relay.db")
        audio = db.execute("SELECT COUNT(*) FROM stream WHERE unit_id=? AND kind='audio'",
                           (UNIT,)).fetchone()[0]
        db.close()
        assert audio >= 70  # 3 s of 40 ms chunks

        # --- someone else with a cable: a locked unit refuses to be re-pointed
        ser = serial.serial_for_url(cable.tech_path, timeout=0.05)
        client = p.Client(ser.write, ser.read, time.monotonic, 4000)
        for cmd, args in ((p.CMD_SET_CONFIG, {"broker_url": "mqtts://evil.example:8883"}),
                          (p.CMD_GENERATE_KEY, {}), (p.CMD_COMMIT, {}),
                          (p.CMD_INSTALL_CERT, {"cert_pem": "x", "ca_pem": "y"})):
            try:
                client.call(cmd, args)
            except p.CommandFailed as e:
                assert e.code == p.E_LOCKED and "unlock" in e.action
            else:
                raise AssertionError(f"a locked unit accepted {cmd}")
        assert client.call(p.CMD_STATUS)["state"] == "locked"  # read-only still answered
        ser.close()
        again = cli(cable, *enroll_args(tmp_path, relay, broker, "AAAAA-BBBBB-CCCCC-DDDDD"))
        assert again.returncode == 1 and "locked" in again.stderr and "unlock" in again.stderr
        assert agent_config.load(site, state / "provisioned.toml").broker.url == broker.url

        # unlock without the button: refused, still locked
        t0 = time.monotonic()
        nope = cli(cable, "unlock", "--timeout", "3")
        assert nope.returncode == 1, nope.stdout + nope.stderr
        assert "presence_not_shown" in nope.stderr and time.monotonic() - t0 >= 3
        assert info(cable)["state"] == "locked"

        # a 2 s hold (the privacy gesture) is not presence either
        waiter = cli_popen(cable, "unlock", "--timeout", "8")
        wait_told_to_hold(waiter)
        puck_sim.cmd("hold 2")
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 1 and "presence_not_shown" in err, out + err
        assert info(cable)["state"] == "locked"

        # a 5 s hold while the unlock waits is
        waiter = cli_popen(cable, "unlock", "--timeout", "30")
        wait_told_to_hold(waiter)
        puck_sim.cmd("hold 5.6")
        out, err = waiter.communicate(timeout=40)
        outputs += [out, err]
        assert waiter.returncode == 0, out + err
        assert "unlocked" in out
        assert info(cable)["state"] == "enrolled"

        # --- factory reset (presence again): keys, config and spool are gone
        spool = tmp_path / "agent-state" / "spool"
        assert spool.exists()
        waiter = cli_popen(cable, "factory-reset", "--yes", "--timeout", "30")
        wait_told_to_hold(waiter)
        puck_sim.cmd("hold 5.6")
        out, err = waiter.communicate(timeout=40)
        assert waiter.returncode == 0, out + err
        assert not key.exists() and not wifi.exists() and not spool.exists()
        assert not (state / "provisioned.toml").exists()
        blank = info(cable)
        assert blank["state"] == "blank" and blank["cert"] is None

        # --- the spent code cannot enroll the blank unit again
        reuse = cli(cable, *enroll_args(tmp_path, relay, broker, code))
        outputs += [reuse.stdout, reuse.stderr]
        assert reuse.returncode == 1
        assert "already used" in reuse.stderr and "new enrollment code" in reuse.stderr
        assert json.loads((tmp_path / "record.json").read_text())["outcome"] == "failed"
    finally:
        svc.stop()

    # --- secrets: not in any log, not in info, not in the record
    texts = outputs + [svc.log.read_text(), (relay.dir / "relay.log").read_text(),
                       (tmp_path / "record.json").read_text(),
                       (tmp_path / "agent.log").read_text(), repr(relay.api(
                           "GET", "/api/admin/audit").json())]
    blob = "\n".join(texts)
    assert "event=request cmd=set_config" in blob  # the logs were really captured
    for secret in (WIFI_PASS, code, code.replace("-", "")):
        assert secret not in blob


def test_self_test_names_a_dead_mic_channel_and_what_to_do(tmp_path, cable, alsa_conf):
    svc = Service(cable, tmp_path / "unit", alsa_conf, device="sl_dead3")
    try:
        svc.wait_ready()
        r = cli(cable, "selftest")
        assert r.returncode == 1
        assert "mic channel 3 silent" in r.stdout and "reseat" in r.stdout
        lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("  mic")}
        assert "PASS" in lines["mic1"] and "FAIL" in lines["mic3"] and "PASS" in lines["mic4"]
        assert "no cue puck" in r.stdout  # no puck configured: reported, not crashed
    finally:
        svc.stop()


def test_wrong_code_is_refused_before_anything_is_locked(tmp_path, cable, alsa_conf, relay,
                                                        broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    svc = Service(cable, tmp_path / "unit", alsa_conf)
    try:
        svc.wait_ready()
        r = cli(cable, *enroll_args(tmp_path, relay, broker, "WRONG-CODE0-00000-00000"))
        assert r.returncode == 1
        assert "does not exist" in r.stderr and "What to do: check the code" in r.stderr
        # a code made for another unit: the relay names it, the tool says how to fix it
        other = relay.api("POST", "/api/enroll/codes", "admin",
                          json={"unit": "exam-9", "room": "Exam 9"}).json()["code"]
        r = cli(cable, *enroll_args(tmp_path, relay, broker, other))
        assert r.returncode == 1 and "'exam-9'" in r.stderr and "--unit-id" in r.stderr
        h = info(cable)
        assert h["state"] == "configured" and h["cert"] is None
        rec = json.loads((tmp_path / "record.json").read_text())
        assert rec["outcome"] == "failed" and "WRONG-CODE0" not in json.dumps(rec)
        assert WIFI_PASS not in json.dumps(rec) and WIFI_PASS not in json.dumps(h)
    finally:
        svc.stop()


def test_a_unit_clock_off_fails_the_self_test_and_the_unit_stays_unlocked(
        tmp_path, cable, alsa_conf, relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    code = relay.api("POST", "/api/enroll/codes", "admin",
                     json={"unit": UNIT, "room": ROOM}).json()["code"]
    svc = Service(cable, tmp_path / "unit", alsa_conf, extra=["--clock-offset-s", "600"])
    try:
        svc.wait_ready()
        r = cli(cable, *enroll_args(tmp_path, relay, broker, code))
        assert r.returncode == 1, r.stdout + r.stderr
        clock = next(ln for ln in r.stdout.splitlines() if ln.startswith("  clock"))
        assert "FAIL" in clock and "+600 s off" in clock
        assert "set the unit's clock" in r.stderr and "NOT locked" in r.stderr
        broker_row = next(ln for ln in r.stdout.splitlines() if ln.startswith("  broker"))
        assert "PASS" in broker_row  # the certificate itself was fine
        h = info(cable)
        assert h["state"] == "enrolled"  # configured and certified, but not locked
        rec = json.loads((tmp_path / "record.json").read_text())
        assert rec["outcome"] == "failed" and rec["selftest"]["passed"] is False
    finally:
        svc.stop()
