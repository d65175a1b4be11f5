"""The cable pulled at every step of `enroll`, over real ptys with the real service, tool,
relay, mosquitto and the real puck firmware (MicroPython): after each pull the unit is as
it was or enrolled and locked, never in between; the same `enroll --code CODE` run again
(port discovered, no other flags) finishes it; the relay spends the code exactly once.
Also: a laptop that sleeps past the unit's fail-safe, and the tool's readable `info`."""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import sqlite3
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from provision_support import (
    PY,
    ROOT,
    Cable,
    Service,
    cli,
    committed,
    snapshot,
    tool_env,
    wait_for,
)
from puck_harness import PuckSim
from trustkit import Clinic

from edge_agent import provision, unitkey
from scribelink import provisioning as p
from scribelink import trust

REQ, RESP, PROG = p.KIND_REQUEST, p.KIND_RESPONSE, p.KIND_PROGRESS
# the unit commands of an enrolment, in order
FLOW = (p.CMD_HELLO, p.CMD_PRECHECK, p.CMD_ARM_FAILSAFE, p.CMD_SET_CONFIG,
        p.CMD_GENERATE_KEY, p.CMD_INSTALL_CERT, p.CMD_SELFTEST, p.CMD_COMMIT)
# where the cable goes: at each step boundary (the request never reaches the unit), and mid
# step (the unit acts, its answer is lost); mid self-test too (after its first progress)
PULLS = ([("to_unit", cmd, REQ) for cmd in FLOW] + [("to_tech", cmd, RESP) for cmd in FLOW]
         + [("to_tech", p.CMD_SELFTEST, PROG)])
LOCKED_FILES = {"settings.json", "tls/unit.key", "tls/unit.pem", "tls/sign.key",
                "binding.json", "anchor/ca.pem", "anchor/authority.pub", "anchor/anchors.json",
                "selftest.json", "locked.json", "provisioned.toml"}
CLINIC = Clinic()  # the clinic's authority: it makes the codes (its admin does, in life)


def unit_fingerprint(state) -> str:
    cert = x509.load_pem_x509_certificate((state / "tls" / "unit.pem").read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def relay_db(relay) -> sqlite3.Connection:
    return sqlite3.connect(relay.dir / "data" / "relay.db")


def code_record(relay, code_id: int) -> dict:
    db = relay_db(relay)
    try:
        used_us, fp = db.execute("SELECT used_us, cert_fingerprint FROM enroll_codes WHERE "
                                 "id=?", (code_id,)).fetchone()
        spent = db.execute("SELECT COUNT(*) FROM audit WHERE action='unit_enrolled' AND "
                           "json_extract(detail, '$.code_id')=?", (code_id,)).fetchone()[0]
    finally:
        db.close()
    return {"used_us": used_us, "fingerprint": fp, "times_spent": spent}


def signed_in_home(tmp_path, cable, relay):
    relay.add_user("tech1", "tech", "tech-password-1")
    (tmp_path / "tech.pw").write_text("tech-password-1\n")
    home = tmp_path / "laptop"
    r = cli(cable, "login", "--relay", relay.url, "--user", "tech1", "--password-file",
            str(tmp_path / "tech.pw"), home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    return home


def new_code(relay, unit: str) -> tuple[str, int]:
    return CLINIC.enrolment_code(relay, unit, f"Room {unit}", clinic="Northside")


def pull_and_rerun(i: int, pull: tuple, bench: tuple, tmp_path, alsa_conf, relay,
                   home) -> str:
    """One unit on one bench (a cable and a puck): the cable goes at `pull`, then the same
    command runs again. -> how the pull left the unit: "as it was" or "locked"."""
    direction, cmd, kind = pull
    cable, puck = bench
    where = f"{direction} {cmd} {['', 'request', 'response', 'progress'][kind]}"
    unit_id = f"exam-{i}"
    code, code_id = new_code(relay, unit_id)
    state = tmp_path / f"unit-{i}"
    svc = Service(cable, state, alsa_conf, puck_port=str(puck.link), selftest_s=0.1)
    try:
        svc.wait_ready()
        before = snapshot(state)
        cable.pull_when(direction, cmd, kind)
        first = cli(cable, "enroll", "--code", code, home=home)
        assert cable.pulled.is_set(), (where, first.stdout, first.stderr)
        # what the tech sees: what happened and what to do, never a traceback
        assert first.returncode == 3, (where, first.stdout, first.stderr)
        assert "Traceback" not in first.stderr and "SerialException" not in first.stderr
        assert "FAILED: the cable to the unit was disconnected" in first.stderr, where
        assert "run the same command again" in first.stderr, where

        # the unit: as it was, or enrolled and locked; never in between
        after = committed(snapshot(state))
        locked = set(after) >= LOCKED_FILES
        assert after == committed(before) or locked, (where, sorted(after))

        cable.replug()
        again = cli(cable, "enroll", "--code", code, home=home)
        assert again.returncode == 0, (where, again.stdout, again.stderr)
        assert "DONE: unit" in again.stdout, where
        if locked:
            assert "already enrolled and locked" in again.stdout, where
        reached = FLOW.index(cmd) + (kind != REQ)  # unit commands the unit had received
        if not locked and reached > FLOW.index(p.CMD_ARM_FAILSAFE):
            # it resumed the staged enrolment, and kept what the unit had made
            assert "resuming the enrolment staged on the unit" in again.stdout, where
            if reached > FLOW.index(p.CMD_GENERATE_KEY):
                assert "kept the key staged earlier" in again.stdout, where
        else:
            assert "resuming" not in again.stdout, where
        if os.environ.get("SHOW_PULLS"):
            print(f"--- {where}\n{first.stdout}{first.stderr}{again.stdout}")
        # the unit: enrolled and locked as this unit, nothing left staged
        assert set(committed(snapshot(state))) >= LOCKED_FILES, where
        assert not (state / provision.STAGING).exists(), where
        assert json.loads((state / "settings.json").read_text())["unit_id"] == unit_id
        fp = unit_fingerprint(state)
        assert json.loads((state / "locked.json").read_text())[
            "cert_fingerprint_sha256"] == fp, where
        # the unit's signing key is bound to it under the clinic's grant, and the relay
        # knows that one key only (a resumed enrolment kept the key it had made)
        bound = trust.verify_binding(CLINIC.public, json.loads(
            (state / "binding.json").read_text()))
        assert bound.unit == unit_id and bound.sign_key_raw == unitkey.load(
            state / "tls" / "sign.key").public_raw
        assert [b["key_id"] for b in relay.api(
            "GET", f"/api/admin/units/{unit_id}/bindings").json()] == [bound.key_id], where
        # the relay: the code spent exactly once, for the certificate the unit holds
        rec = code_record(relay, code_id)
        assert rec["used_us"] is not None and rec["times_spent"] == 1, (where, rec)
        assert rec["fingerprint"] == fp, where
        return "locked" if locked else "as it was"
    finally:
        svc.stop()


def test_the_cable_pulled_at_every_step_then_the_same_command_finishes(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    """Two benches (each a cable and a puck running the real firmware) work through the
    pulls side by side, to keep the test short."""
    home = signed_in_home(tmp_path, cable, relay)
    (tmp_path / "bench-2").mkdir()
    second = (Cable(tmp_path / "bench-2"), PuckSim(tmp_path / "bench-2" / "puck"))
    benches = queue.Queue()
    for bench in ((cable, puck_sim), second):
        benches.put(bench)

    def on_a_free_bench(i: int, pull: tuple) -> str:
        bench = benches.get()
        try:
            return pull_and_rerun(i, pull, bench, tmp_path, alsa_conf, relay, home)
        finally:
            benches.put(bench)

    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(on_a_free_bench, i, pull) for i, pull in enumerate(PULLS)]
            outcomes = {f"{d} {c} {k}": f.result()
                        for (d, c, k), f in zip(PULLS, futures, strict=True)}
    finally:
        second[0].close()
        second[1].close()
    # the pulls hit both sides of the commit point, and only the answer to commit comes
    # after it
    assert outcomes[f"to_tech {p.CMD_COMMIT} {RESP}"] == "locked"
    assert outcomes[f"to_unit {p.CMD_COMMIT} {REQ}"] == "as it was"
    assert list(outcomes.values()).count("locked") == 1, outcomes


def test_a_laptop_asleep_past_the_fail_safe_leaves_the_unit_as_it_was(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    """A new laptop: the first enrolment asks for the tech's sign-in on the terminal (once:
    the tool remembers the session). The tool is then stopped (the laptop sleeps) after
    the unit staged its key; the unit's fail-safe runs out and rolls back by itself: byte
    for byte as before. The woken tool says so; the same command, asking nothing, then
    enrols, and the code is spent once."""
    relay.add_user("tech1", "tech", "tech-password-1")
    home = tmp_path / "new-laptop"
    code, code_id = new_code(relay, "exam-s")
    state = tmp_path / "unit"
    svc = Service(cable, state, alsa_conf, puck_port=str(puck_sim.link), selftest_s=0.1)
    terminal, tech_side = pty.openpty()  # the tech's terminal
    try:
        svc.wait_ready()
        before = snapshot(state)
        cable.pull_when("to_tech", p.CMD_GENERATE_KEY, RESP, when="mark")
        tool = subprocess.Popen([PY, str(ROOT / "scripts" / "provision"), "enroll", "--code",
                                 code, "--failsafe-s", "5"], cwd=ROOT, stdin=tech_side,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=tool_env(cable, home), start_new_session=True)
        os.write(terminal, b"tech1\n")  # the user name, typed at its prompt
        asked = ""
        while "password for tech1 at" not in asked:  # getpass's prompt (echo off)
            ch = tool.stderr.read(1)
            assert ch, f"the tool never asked for the password: {asked}"
            asked += ch
        os.write(terminal, b"tech-password-1\n")
        wait_for(cable.marked.is_set, 30, "the unit's key to be staged")
        os.kill(tool.pid, signal.SIGSTOP)  # the laptop's lid closes
        assert (state / provision.STAGING / "tls" / "unit.key").exists()
        wait_for(lambda: "event=failsafe_rolled_back" in svc.log.read_text(), 15,
                 "the unit's fail-safe to roll back")
        assert snapshot(state) == before  # byte for byte, staging area gone
        os.kill(tool.pid, signal.SIGCONT)
        out, err = tool.communicate(timeout=30)
        assert tool.returncode in (1, 3), out + err
        assert "Traceback" not in err and "relay user at" in out
        saved = home / "config" / "scribelink" / "relays.json"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert "tech-password-1" not in saved.read_text()
        again = cli(cable, "enroll", "--code", code, home=home)  # no terminal: may not ask
        assert again.returncode == 0, again.stdout + again.stderr
        assert "remembered as tech1" in again.stdout
        assert json.loads(cli(cable, "info", "--json").stdout)["state"] == "locked"
        assert code_record(relay, code_id)["times_spent"] == 1
    finally:
        svc.stop()
        os.close(terminal)
        os.close(tech_side)


def test_port_discovery_lists_candidates_and_info_reads_like_a_checklist(
        tmp_path, cable, alsa_conf):
    svc = Service(cable, tmp_path / "unit", alsa_conf, selftest_s=0.1)
    try:
        svc.wait_ready()
        r = cli(cable, "info")
        assert r.returncode == 0, r.stderr
        assert f"Unit SN-TEST-0001 on {cable.tech_link}" in r.stdout
        assert "state     blank" in r.stdout and "4 of 4 channels" in r.stdout
        assert "Problem: puck: not plugged in" in r.stdout
        assert "Next: enrol it: `scripts/provision enroll --code ...`" in r.stdout
        j = cli(cable, "--json", "info")  # options before or after the command
        assert json.loads(j.stdout)["serial"] == "SN-TEST-0001"
        # two cables: the tool lists them and asks which
        env_two = {**os.environ, "SCRIBELINK_PROVISION_PORTS":
                   os.pathsep.join([str(cable.tech_link), cable.unit_path])}
        two = subprocess.run([PY, str(ROOT / "scripts" / "provision"), "info"], cwd=ROOT,
                             env=env_two, capture_output=True, text=True, timeout=30,
                             check=False)
        assert two.returncode == 2 and str(cable.tech_link) in two.stderr
        assert cable.unit_path in two.stderr and "--port" in two.stderr
        cable.pull()  # none: say what to plug in
        none = cli(cable, "info")
        assert none.returncode == 3 and "no Scribelink service cable" in none.stderr
        assert "black wire" in none.stderr
    finally:
        svc.stop()
