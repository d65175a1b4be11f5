"""The unit's signing key where it lives (edge_agent/unitkey.py, docs/trust.md "Keys on the
unit"): Ed25519 or ECDSA P-256, in a file or inside a PKCS#11 token, each bound to the unit
id under a grant and verified by the same code a receiver runs.

The token is SoftHSM2 (Debian's softhsm2), a software stand-in for a TPM 2.0 (tpm2-pkcs11)
or an ATECC608 (cryptoauthlib's PKCS#11 module): the same PKCS#11 calls, but its "token" is
a directory of files, so these tests show the PKCS#11 path works, not what a chip resists.
SoftHSM2 can make both Ed25519 and P-256 keys; the P-256 path (all a TPM or an ATECC608
offers) is chosen explicitly with signing_key_type."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from provision_support import snapshot, trust_args
from trustkit import Clinic

from cloud_relay import pki
from edge_agent import config as agent_config
from edge_agent import unitkey
from edge_agent.provision import ServeSettings, Unit
from scribelink import provisioning as p
from scribelink import trust
from scribelink.authority import bind_unit

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
GOOD = {"clinic": "Northside", "room": "Exam 2", "unit_id": "exam-2",
        "broker_url": "mqtts://broker.clinic:8883"}


def test_p256_unit_keys_bind_sign_and_verify_like_ed25519():
    from cryptography.hazmat.primitives.asymmetric import ec

    clinic = Clinic()
    grant, secret = clinic.authority.grant(unit="u1", room="r", clinic="c", now_us=1)
    key = ec.generate_private_key(ec.SECP256R1())
    kt, raw = trust.unit_public_raw(key)
    assert kt == "ecdsa-p256" and len(raw) == 65 and raw[0] == 4
    binding = json.loads(json.dumps(bind_unit(grant, secret, raw, 2, kt).to_dict()))
    assert binding["body"]["key_type"] == "ecdsa-p256"
    bound = trust.verify_binding(clinic.public, binding)
    assert bound.key_type == kt and bound.key_id == trust.key_id(raw)
    msg = {"unit": "u1", "seq": 3}
    sig = trust.sign_message("gap", msg, key)
    assert len(trust.unb64(sig)) == 64  # r || s, as PKCS#11 and WebCrypto give it
    trust.verify_message("gap", {**msg, "sig": sig}, bound.sign_key)
    with pytest.raises(trust.TrustError, match="does not verify"):
        trust.verify_message("gap", {**msg, "seq": 4, "sig": sig}, bound.sign_key)
    # a binding from before key types names none: Ed25519
    ed = trust.ed25519_raw(trust.code_key(os.urandom(16)))
    old_body = {k: v for k, v in trust.binding_body(grant=grant, sign_key=ed, issued_us=3)
                .items() if k != "key_type"}
    old = trust.sign(trust.BINDING, old_body, trust.code_key(secret)).to_dict()
    assert trust.verify_binding(clinic.public, old).key_type == "ed25519"
    with pytest.raises(trust.TrustError, match="unknown unit key type"):
        trust.unit_public_key("rsa", raw)


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    """A SoftHSM2 token for this module (PKCS#11 reads SOFTHSM2_CONF once per process, when
    the module is first loaded, so one configuration serves every test here)."""
    if not Path(MODULE).exists() or not shutil.which("softhsm2-util"):
        pytest.fail("SoftHSM2 is missing: scripts/setup installs Debian's softhsm2")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "scribelink",
                    "--pin", "4321", "--so-pin", "87654321"], check=True, capture_output=True)
    (d / "pin").write_text("4321\n")
    yield {"uri": f"pkcs11:token=scribelink;object=unit-sign?module-path={MODULE}"
                  f"&pin-source={d / 'pin'}", "conf": conf}
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


class Holds:
    """A puck held at once (a test double; the real firmware is in the pty tests)."""

    def state(self) -> str:
        return "present"

    def wait_for_hold(self, seconds, timeout_s, ready, holding) -> bool:
        ready()
        return True


def token_objects(uri: str) -> list:
    from pkcs11 import Attribute

    base = unitkey.Pkcs11Uri.parse(uri)
    _token, session = unitkey._open(base)
    try:
        return [(o[Attribute.CLASS], o[Attribute.ID]) for o in
                session.get_objects({Attribute.LABEL: base.label})]
    finally:
        session.close()


def call(unit: Unit, cmd: str, args: dict | None = None) -> dict:
    return unit.handle(cmd, args or {}, lambda _m: None)


def enrol(unit: Unit, clinic: Clinic, ca: pki.CA, eid: str) -> dict:
    assert call(unit, "arm_failsafe", {"enrolment_id": eid, "expiry_s": 60})["ok"]
    assert call(unit, "set_config", GOOD)["ok"]
    gen = call(unit, "generate_key")["result"]
    cert = pki.sign_csr(ca, gen["csr_pem"].encode(), "exam-2")
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(cert).decode(),
                                    "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(clinic, gen, "exam-2")})
    assert r["ok"], r
    (unit.staged / "selftest.json").write_text(json.dumps(
        {"passed": True, "checks": [], "cert_fingerprint_sha256": r["result"][
            "fingerprint_sha256"]}))
    return gen


@pytest.mark.parametrize("key_type", ["auto", "ecdsa-p256"])
def test_a_signing_key_made_in_a_pkcs11_token_never_leaves_it(tmp_path, softhsm, key_type):
    from pkcs11 import Attribute, ObjectClass

    uri = softhsm["uri"].replace("object=unit-sign", f"object=unit-sign-{key_type}")
    clinic, ca = Clinic(), pki.make_ca()
    unit = Unit(ServeSettings(state_dir=tmp_path / "u", signing_key=uri,
                              signing_key_type=key_type), presence=Holds())
    gen = enrol(unit, clinic, ca, "e1")
    want = "ed25519" if key_type == "auto" else "ecdsa-p256"  # SoftHSM2 has Ed25519
    assert gen["sign_key_store"] == "pkcs11" and gen["sign_key_type"] == want
    assert call(unit, "commit")["ok"]

    # the state dir names the key (its URI), and holds no private signing key
    assert not (unit.dir / "tls" / "sign.key").exists()
    texts = [v[1] for k, v in snapshot(unit.dir).items() if k != "tls/unit.key"]
    assert not any(b"PRIVATE KEY" in t for t in texts)
    overlay = agent_config.from_dict(tomllib.loads((unit.dir / "provisioned.toml").read_text()))
    spec = overlay.keys.signing_key_file
    assert spec.startswith("pkcs11:token=scribelink;") and ";id=%" in spec
    # inside the token: sensitive, never extractable
    key = unitkey.load(spec)
    assert key.private[Attribute.SENSITIVE] and not key.private[Attribute.EXTRACTABLE]
    assert key.private[Attribute.CLASS] == ObjectClass.PRIVATE_KEY
    # what the agent signs with it, a receiver accepts under the binding (and only that)
    bound = trust.verify_binding(clinic.public, json.loads(
        Path(overlay.keys.binding_file).read_text()))
    assert (bound.key_type, bound.sign_key_raw) == (want, key.public_raw)
    msg = {"t": "session_open", "unit": "exam-2", "started_us": time.time_ns() // 1000}
    signed = {**msg, "sig": trust.sign_message("session_open", msg, key)}
    trust.verify_message("session_open", signed, bound.sign_key)
    with pytest.raises(trust.TrustError):
        trust.verify_message("session_open", {**signed, "unit": "exam-3"}, bound.sign_key)
    hello = call(unit, "hello")["result"]
    assert hello["signing_key"] == {"store": "pkcs11", "key_id": bound.key_id, "type": want}
    committed_id = unitkey.Pkcs11Uri.parse(spec).id
    assert {i for _c, i in token_objects(uri)} == {committed_id}

    # a second enrolment staged and rolled back: its token key goes, the committed one stays
    token = clinic.token("exam-2", "unlock")
    assert call(unit, "unlock", {"timeout_s": 10, "token": token})["ok"]
    enrol(unit, clinic, ca, "e2")
    assert len({i for _c, i in token_objects(uri)}) == 2
    assert call(unit, "rollback")["result"]["rolled_back"]
    assert {i for _c, i in token_objects(uri)} == {committed_id}
    # a re-enrolment that commits replaces the key in the token
    enrol(unit, clinic, ca, "e3")
    assert call(unit, "commit")["ok"]
    ids = {i for _c, i in token_objects(uri)}
    assert len(ids) == 1 and ids != {committed_id}
    # factory reset destroys it
    r = call(unit, "factory_reset", {"timeout_s": 10, "token": clinic.token(
        "exam-2", "factory_reset")})
    assert r["ok"], r
    assert token_objects(uri) == []


def test_a_token_that_cannot_make_the_key_type_says_so(tmp_path, softhsm):
    uri = unitkey.Pkcs11Uri.parse(softhsm["uri"])
    with pytest.raises(unitkey.UnitKeyError, match="cannot make rsa"):
        unitkey.generate_pkcs11(uri, "rsa")
    with pytest.raises(unitkey.UnitKeyError, match="holds 0 signing keys"):
        unitkey.load(uri.with_id("00").text())
    with pytest.raises(unitkey.UnitKeyError, match="must name its id"):
        unitkey.load(uri.text())
    unit = Unit(ServeSettings(state_dir=tmp_path / "u", signing_key=softhsm["uri"].replace(
        "token=scribelink", "token=no-such-token")))
    assert call(unit, "arm_failsafe", {"enrolment_id": "e", "expiry_s": 60})["ok"]
    assert call(unit, "set_config", GOOD)["ok"]
    r = call(unit, "generate_key")
    assert r["error"]["code"] == p.E_NO_KEY and "no-such-token" in r["error"]["message"]
