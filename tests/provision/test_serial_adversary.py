"""A person in the exam room with a serial cable and the physician's puck, against an
enrolled and locked unit, over real ptys with the real service, tool, relay, mosquitto and
the real puck firmware (MicroPython): without a token the clinic signed, every attempt to
unlock, factory-reset, release the unit or change its recovery key, broker, CA or clinic
authority is refused -- holding the button changes nothing, and the state dir stays byte
for byte as it was. With the clinic (the tech's tool asks on the relay, an admin signs with
the clinic authority, the tech holds the button) each works, once: a replayed token is
refused. Re-enrolling the enrolled unit id takes a code the admin made after its last
enrolment: the spent code and an older unspent one are refused before the unit changes."""

from __future__ import annotations

import json
import time

import serial
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from provision_support import (
    Admin,
    Service,
    cli,
    cli_popen,
    info,
    read_until,
    signed_in_laptop,
    snapshot,
)
from trustkit import Clinic

from cloud_relay import pki
from edge_agent.provision import ca_sha256
from scribelink import envelope as env
from scribelink import provisioning as p
from scribelink import trust

UNIT, ROOM = "exam-4", "Exam 4"
EVIL = "mqtts://evil.example:8883"


class Intruder:
    """Raw frames over the cable, no tool: what someone who read docs/protocol.md sends."""

    def __init__(self, cable) -> None:
        self.ser = serial.serial_for_url(str(cable.tech_link), timeout=0.05)
        self.client = p.Client(self.ser.write, self.ser.read, time.monotonic, 7000)

    def refused(self, cmd: str, args: dict) -> p.CommandFailed:
        try:
            self.client.call(cmd, {"timeout_s": p.PRESENCE_MIN_TIMEOUT_S, **args},
                             timeout_s=20)
        except p.CommandFailed as e:
            return e
        raise AssertionError(f"the unit accepted {cmd} {sorted(args)}")

    def close(self) -> None:
        self.ser.close()


def with_the_clinic(cable, home, puck_sim, *args: str) -> tuple[str, str]:
    """The tech runs the tool; it asks the clinic for a token and waits for the hold; the
    tech holds the button 5.6 s when told. -> (stdout, stderr)."""
    tool = cli_popen(cable, *args, "--timeout", "30", "--token-poll-s", "0.2", home=home)
    told = "".join(read_until(tool, "s now (waiting"))
    puck_sim.cmd("hold 5.6")
    out, err = tool.communicate(timeout=40)
    assert tool.returncode == 0, out + told + err
    return out, told + err


def test_a_cable_and_the_puck_are_not_enough_and_each_clinic_token_works_once(
        tmp_path, cable, alsa_conf, puck_sim, relay, broker):
    home = signed_in_laptop(tmp_path, cable, relay)
    clinic = Clinic()
    old_code, _ = clinic.enrolment_code(relay, UNIT, ROOM)  # made, never used
    code, _ = clinic.enrolment_code(relay, UNIT, ROOM)
    state = tmp_path / "unit"
    svc = Service(cable, state, alsa_conf, puck_port=str(puck_sim.link), selftest_s=0.1)
    try:
        svc.wait_ready()
        r = cli(cable, "enroll", "--code", code, home=home)
        assert r.returncode == 0, r.stdout + r.stderr
        before = snapshot(state)

        # --- the person in the room: the puck's button held down the whole time
        rogue = Clinic()
        real = clinic.token(UNIT, "set_trust", args={"broker_url": broker.url})
        edited = json.loads(json.dumps(real))
        edited["body"]["args"]["broker_url"] = EVIL
        expired = clinic.authority.token(unit=UNIT, action="unlock", ttl_s=60,
                                         now_us=time.time_ns() // 1000 - 7_200_000_000)
        attacker_ca = pki.make_ca("Attacker CA")
        ca_args = {"ca_pem": attacker_ca.cert_pem().decode()}
        new_key = trust.b64(env.public_key_raw(X25519PrivateKey.generate()))
        attempts = [
            # no token at all
            (p.CMD_UNLOCK, {}, p.E_TOKEN_REQUIRED),
            (p.CMD_FACTORY_RESET, {}, p.E_TOKEN_REQUIRED),
            (p.CMD_RELEASE, {}, p.E_TOKEN_REQUIRED),
            (p.CMD_SET_TRUST, ca_args, p.E_TOKEN_REQUIRED),
            (p.CMD_SET_CONFIG, {"broker_url": EVIL}, p.E_LOCKED),
            (p.CMD_SET_CONFIG, {"recovery_public_key": new_key}, p.E_LOCKED),
            (p.CMD_ARM_FAILSAFE, {"enrolment_id": "evil"}, p.E_LOCKED),
            # tokens that are not the clinic's, not for this, or no longer good
            (p.CMD_UNLOCK, {"token": rogue.token(UNIT, "unlock")}, p.E_TOKEN_INVALID),
            (p.CMD_UNLOCK, {"token": expired.to_dict()}, p.E_TOKEN_INVALID),
            (p.CMD_FACTORY_RESET, {"token": clinic.token("exam-5", "factory_reset")},
             p.E_TOKEN_INVALID),
            (p.CMD_RELEASE, {"token": clinic.token(UNIT, "unlock")}, p.E_TOKEN_INVALID),
            (p.CMD_SET_TRUST, {"token": edited}, p.E_TOKEN_INVALID),
            (p.CMD_SET_TRUST, {"token": rogue.token(UNIT, "set_trust", args={
                "authority": rogue.authority.public_b64()})}, p.E_TOKEN_INVALID),
            (p.CMD_SET_TRUST, {"token": rogue.token(UNIT, "set_trust", args={
                "recovery_public_key": new_key})}, p.E_TOKEN_INVALID),
            (p.CMD_SET_TRUST, {"token": rogue.token(UNIT, "set_trust", args={
                "ca_sha256": ca_sha256(attacker_ca.cert)}), **ca_args}, p.E_TOKEN_INVALID),
        ]
        intruder = Intruder(cable)
        mark = puck_sim.mark()
        puck_sim.cmd("down")
        try:
            for cmd, args, code_wanted in attempts:
                e = intruder.refused(cmd, args)
                assert e.code == code_wanted, (cmd, sorted(args), e.code, e.message)
                assert snapshot(state) == before, (cmd, sorted(args))
        finally:
            puck_sim.cmd("up")
            intruder.close()
        # the unit never even asked for the hold (so however long the button is held, it
        # counts for nothing): the ring never said "hold me"
        assert not any(m.get("led") == "presence_wanted" for m in puck_sim.lines[mark:])
        assert snapshot(state) == before and info(cable)["state"] == "locked"

        with Admin(relay, clinic) as admin:
            # --- unlock, with the clinic: the tool asks, the admin signs, the tech holds;
            # a 2 s hold (the privacy gesture) is not presence, a 5 s hold is
            mark = puck_sim.mark()
            tool = cli_popen(cable, "unlock", "--timeout", "30", "--token-poll-s", "0.2",
                             home=home)
            told = "".join(read_until(tool, "s now (waiting"))
            puck_sim.cmd("hold 2")
            told += "".join(read_until(tool, "let go after"))
            assert "held 1 s of 5" in told and tool.poll() is None  # still waiting
            puck_sim.cmd("hold 5.6")
            out, err = tool.communicate(timeout=40)
            assert tool.returncode == 0, out + told + err
            assert "asked the clinic for a token: request" in out
            assert "waiting for an admin to sign it" in out and "unlocked" in out
            assert f"signed by the clinic authority {clinic.authority.fingerprint[:19]}" in out
            for n in (1, 2, 3, 4):
                assert f"held {n} s of 5" in err
            assert "5 s reached: RELEASE NOW" in err
            rings = [m["led"] for m in puck_sim.lines[mark:] if "led" in m]
            asked = rings.index("presence_wanted")
            assert rings[asked:asked + 5] == ["presence_wanted", "presence_holding",
                                              "presence_wanted", "presence_holding",
                                              "presence_release"], rings
            unlock_token = admin.signed[-1]
            assert info(cable)["state"] == "enrolled"

            # --- re-enrolling the enrolled unit id: the spent code, and an older code the
            # admin made before the enrolment, are refused before the unit changes; a code
            # made now (the admin's explicit approval) re-enrols and locks it
            before = snapshot(state)
            for used, why in ((code, "already used"), (old_code, "explicit approval")):
                r = cli(cable, "enroll", "--code", used, home=home)
                assert r.returncode == 1 and why in r.stderr, r.stdout + r.stderr
                assert "nothing on the unit was changed" in r.stderr
                assert snapshot(state) == before
            fresh, _ = clinic.enrolment_code(relay, UNIT, ROOM)
            r = cli(cable, "enroll", "--code", fresh, home=home)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "re-enrols a unit enrolled before" in r.stdout
            assert "pinned to this code's clinic" in r.stdout

            # the unlock token, replayed on the locked unit: used once already
            before = snapshot(state)
            intruder = Intruder(cable)
            e = intruder.refused(p.CMD_UNLOCK, {"token": unlock_token})
            assert e.code == p.E_TOKEN_INVALID and "already used" in e.message
            intruder.close()
            assert snapshot(state) == before

            # --- factory reset, with the clinic: keys, settings and spool go, the trust
            # anchors stay
            anchors = (state / "anchor" / "anchors.json").read_bytes()
            out, _err = with_the_clinic(cable, home, puck_sim, "factory-reset", "--yes")
            assert "keeps its trust anchors" in out
            assert (state / "anchor" / "anchors.json").read_bytes() == anchors
            assert not (state / "tls").exists()
            blank = info(cable)
            assert blank["state"] == "blank" and blank["anchor"]["unit_id"] == UNIT
            reset_token = admin.signed[-1]

            # --- every trust anchor at once, with the clinic: broker, recovery key, CA, and
            # the authority itself (the clinic moving to a new authority key)
            successor = Clinic()
            new_ca = pki.make_ca("Clinic CA 2")
            (tmp_path / "ca2.pem").write_bytes(new_ca.cert_pem())
            (tmp_path / "recovery2.pub").write_text(new_key + "\n")
            new_broker = broker.url.replace("127.0.0.1", "localhost")
            out, _err = with_the_clinic(
                cable, home, puck_sim, "set-trust", "--broker-url", new_broker,
                "--recovery-key-file", str(tmp_path / "recovery2.pub"), "--ca-file",
                str(tmp_path / "ca2.pem"), "--authority", successor.authority.public_b64())
            assert "changed authority, broker_url, ca_sha256, recovery_public_key" in out
            set_trust_token = admin.signed[-1]
        pinned = json.loads((state / "anchor" / "anchors.json").read_text())
        assert pinned["authority"] == successor.authority.public_b64()
        assert pinned["broker_url"] == new_broker and pinned["recovery_public_key"] == new_key
        assert pinned["ca_sha256"] == ca_sha256(new_ca.cert)
        assert (state / "anchor" / "ca.pem").read_bytes() == new_ca.cert.public_bytes(
            serialization.Encoding.PEM)

        # the tokens used so far, replayed: each refused, nothing changes
        before = snapshot(state)
        intruder = Intruder(cable)
        for cmd, token, extra in ((p.CMD_FACTORY_RESET, reset_token, {}),
                                  (p.CMD_SET_TRUST, set_trust_token,
                                   {"ca_pem": new_ca.cert_pem().decode()})):
            e = intruder.refused(cmd, {"token": token, **extra})
            assert e.code == p.E_TOKEN_INVALID, (cmd, e.message)
        # the old authority no longer counts on this unit
        e = intruder.refused(p.CMD_FACTORY_RESET, {"token": clinic.token(UNIT, "factory_reset")})
        assert e.code == p.E_TOKEN_INVALID and "signed by" in e.message
        intruder.close()
        assert snapshot(state) == before
        # nor do codes of the old authority: "this unit belongs to another clinic"
        r = cli(cable, "enroll", "--code", clinic.enrolment_code(relay, UNIT, ROOM)[0],
                home=home)
        assert r.returncode == 1 and "belongs to another clinic" in r.stderr, r.stderr
        assert "release token" in r.stderr and snapshot(state) == before

        # --- release, with a token the new authority's admin handed over as a file
        release = successor.token(UNIT, "release")
        (tmp_path / "release.json").write_text(json.dumps(release))
        out, _err = with_the_clinic(cable, home, puck_sim, "release", "--yes", "--token-file",
                                    str(tmp_path / "release.json"))
        assert "belongs to no clinic" in out
        freed = info(cable)
        assert freed["state"] == "blank" and freed["anchor"] is None
        assert sorted(f.name for f in (state / "anchor").iterdir()) == ["used-tokens.json"]
        used = json.loads((state / "anchor" / "used-tokens.json").read_text())["used"]
        assert [u["action"] for u in used] == ["unlock", "factory_reset", "set_trust",
                                               "release"]
    finally:
        svc.stop()
    assert "Traceback" not in svc.log.read_text()
