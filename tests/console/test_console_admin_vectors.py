"""The admin's browser signs as scribelink does, byte for byte (tests/vectors/
authority_browser.json, from scripts/make-authority-vectors): canonical JSON, the clinic
authority's key file opened with WebCrypto (PBKDF2, AES-256-GCM, Ed25519 from its seed),
every statement type (Ed25519 is deterministic: equal signatures, not just valid ones),
and enrolment codes -- code key, proof, proof hash and text -- that scripts/provision's
parser reads back. The QR matches segno's for the same text, version and mask."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import segno
from console_support import in_module

from scribelink import enrolcode, trust

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" /
                      "authority_browser.json").read_text())
A = VECTORS["authority"]


def test_canonical_json_is_pythons(module_page):
    got = in_module(module_page, "admin/canon.js",
                    "return arg.map((v) => m.canonical(v.body));", VECTORS["canonical"])
    assert got == [v["canonical"] for v in VECTORS["canonical"]]
    for v in VECTORS["canonical"]:  # and the vectors are trust.canonical's own
        assert trust.canonical(v["body"]).decode() == v["canonical"]
    refused = in_module(module_page, "admin/canon.js", """
        return arg.map((b) => { try { m.canonical(b); return null; } catch (e) { return e.message;
            } });""",
                        VECTORS["refused"])
    assert "floats" in refused[0] and "53 bits" in refused[1]


def test_the_key_file_opens_with_its_passphrase_only(module_page):
    got = in_module(module_page, "admin/authority.js", """
        const a = await m.Authority.unlock(arg.key_file, arg.passphrase);
        let wrong = null;
        try { await m.Authority.unlock(arg.key_file, arg.passphrase + "x"); } catch (e) {
            wrong = e.message; }
        let bent = null;
        const doc = structuredClone(arg.key_file);
        doc.public_key = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));
        try { await m.Authority.unlock(doc, arg.passphrase); } catch (e) { bent = e.message; }
        return { keyId: a.keyId, fingerprint: a.fingerprint, pub: a.publicB64,
                 extractable: a.key.extractable, wrong, bent };""", A)
    assert got["keyId"] == A["key_id"] and got["fingerprint"] == A["fingerprint"]
    assert got["pub"] == A["public_key"]
    assert got["extractable"] is False  # the page can sign with it, never read it
    assert "wrong passphrase" in got["wrong"]
    # a file whose public key was swapped (by a relay, say) does not open: the AAD binds it
    assert got["bent"] is not None


def test_every_statement_is_signed_exactly_as_scribelink_signs_it(module_page):
    s = VECTORS["statements"]
    e = VECTORS["enrolment"]
    got = in_module(module_page, "admin/authority.js", """
        const a = await m.Authority.unlock(arg.A.key_file, arg.A.passphrase);
        const ec = await import("/console/js/admin/enrolcode.js");
        const canon = await import("/console/js/admin/canon.js");
        const g = arg.s.unit_grant.statement.body;
        const secret = canon.b64decode(arg.e.secret);
        return {
          device: await a.endorseDevice(arg.s.device.pending, arg.s.device.now_us),
          assignment: await a.assign(arg.s.assignment.args),
          unit_grant: await a.grant({ unit: g.unit, room: g.room, clinic: g.clinic,
            codeKeyRaw: await ec.codeKeyPublic(secret), nowUs: g.issued_us,
            ttlS: (g.expires_us - g.issued_us) / 1e6 }),
          revocations: await a.revocations(arg.s.revocations.args),
          token: await a.token(arg.s.token.args),
        };""", {"A": A, "s": s, "e": e})
    for kind, st in got.items():
        assert st == s[kind]["statement"], kind
    # and each verifies in Python against the authority, as the relay and units check it
    pub = trust.load_ed25519(A["public_key"])
    for kind, st in got.items():
        trust.Statement.from_dict(st).verify(pub, t=kind)


def test_enrolment_codes_are_scribelinks_and_provision_reads_them(module_page):
    e = VECTORS["enrolment"]
    got = in_module(module_page, "admin/enrolcode.js", """
        const canon = await import("/console/js/admin/canon.js");
        const secret = canon.b64decode(arg.secret);
        const code = { ...arg.code, secret, authority: canon.b64decode(arg.code.authority) };
        const proof = await m.proofOf(secret);
        return { proof, proofHash: await m.proofHash(proof),
                 codeKey: canon.b64encode(await m.codeKeyPublic(secret)),
                 payload: canon.b64encode(m.payload(code)), text: m.codeText(code) };""", e)
    assert got["proof"] == e["proof"] and got["proofHash"] == e["proof_hash"]
    assert got["codeKey"] == e["code_key"]
    assert got["payload"] == e["payload"] and got["text"] == e["text"]
    parsed = enrolcode.parse(got["text"])
    assert parsed.secret == base64.b64decode(e["secret"])
    assert parsed.authority == base64.b64decode(e["code"]["authority"])
    assert (parsed.unit_id, parsed.room, parsed.relay_url) == (
        "exam-1-unit", "Exam 1 · Pédiatrie", "https://relay.test:8443")


def test_a_fresh_enrolment_grants_what_the_code_proves(module_page):
    """makeEnrolment end to end in the browser: the grant verifies against the authority,
    names the code key of the secret inside the code text, and the proof hash is the
    relay's lookup key for the proof the tech's tool will send."""
    got = in_module(module_page, "admin/enrolcode.js", """
        const auth = await import("/console/js/admin/authority.js");
        const a = await auth.Authority.unlock(arg.key_file, arg.passphrase);
        const e = await m.makeEnrolment({ authority: a, unit: "exam-9", room: "Exam 9",
          clinic: "Clinic", relayUrl: "https://relay.test:8443", ttlS: 600,
              nowUs: 1800000000000000 });
        return { request: e.request, text: e.text("mqtts://relay.test:8883") };""", A)
    pub = trust.load_ed25519(A["public_key"])
    body = trust.Statement.from_dict(got["request"]["grant"]).verify(pub, t=trust.GRANT)
    code = enrolcode.parse(got["text"])
    assert body["code_key"] == base64.b64encode(trust.ed25519_raw(
        trust.code_key(code.secret))).decode()
    assert got["request"]["proof_hash"] == enrolcode.proof_hash(code.proof())
    assert body["expires_us"] - body["issued_us"] == 600 * 1_000_000
    assert code.broker_url == "mqtts://relay.test:8883" and code.unit_id == "exam-9"


@pytest.mark.parametrize("mask", range(8))
def test_the_qr_is_the_standard_encoding(module_page, mask):
    text = VECTORS["enrolment"]["text"]
    ref = segno.make_qr(text, error="m", mode="alphanumeric", mask=mask, boost_error=False)
    want = [[bool(v) for v in row] for row in ref.matrix]
    got = in_module(module_page, "admin/qr.js",
                    "return m.qrMatrix(arg.text, { version: arg.version, mask: arg.mask });",
                    {"text": text, "version": ref.version, "mask": mask})
    assert (got["version"], got["mask"]) == (ref.version, mask)
    assert got["rows"] == want
