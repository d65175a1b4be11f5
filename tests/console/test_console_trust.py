"""The browser's trust root (js/trust.js) against tests/vectors/trust.json, in headless
Chromium with WebCrypto's Ed25519 and X25519: the same canonical bytes and signatures as
scribelink.trust, the same verdicts on device chains, bindings, assignments and
revocations, and cue replies and key shares that each side seals and the other opens."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from console_support import in_module
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scribelink import keyshare, trust

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "trust.json").read_text())
AUTH = trust.load_ed25519(V["authority"]["public"])


def b(s: str) -> bytes:
    return base64.b64decode(s)


def js(page, body: str, arg=None):
    """Run `body` with `t` = js/trust.js, `k` = the tests' testkit.js and `c` = js/crypto.js."""
    return in_module(page, "trust.js", f"""
        const t = m;
        const k = await import('/tests/testkit.js');
        const c = await import('/console/js/crypto.js');
        {body}""", arg)


def test_canonical_text_is_pythons(module_page):
    got = js(module_page, """
        const ok = arg.ok.map((v) => t.canonical(v));
        const bad = arg.bad.map((v) => { try { t.canonical(v); return null; } catch (e) {
            return e.constructor.name; } });
        return {ok, bad};""", {"ok": [c["value"] for c in V["canonical"]],
                               "bad": [c["value"] for c in V["not_canonical"]]})
    assert got["ok"] == [c["canonical"] for c in V["canonical"]]
    assert got["bad"] == ["TrustError"] * len(V["not_canonical"])


def test_statements_sign_and_verify_byte_for_byte(module_page):
    sv = V["statement_signing"]
    got = js(module_page, """
        const a = await k.signerFromSeed(c.b64decode(arg.seed));
        const st = await t.signStatement(arg.t, arg.body, a.privateKey, a.publicRaw);
        return {st, bytes: c.b64encode(t.signedBytes(arg.t, arg.body)),
            kid: await t.keyId(a.publicRaw),
                fp: await t.fingerprint(a.publicRaw)};""",
              {"seed": V["authority"]["seed"], "t": sv["t"], "body": sv["body"]})
    assert got["bytes"] == sv["signed_bytes"]
    assert got["st"] == sv["statement"]  # Ed25519 is deterministic: the very same signature
    assert got["kid"] == V["authority"]["key_id"]
    assert got["fp"] == V["authority"]["fingerprint"]


def test_chains_and_statements_get_pythons_verdicts(module_page):
    got = js(module_page, """
        const auth = c.b64decode(arg.auth);
        const rejected = [];
        const devs = await t.endorsedDevices(auth, arg.devices.statements, new Set(), rejected);
        const view = {};
        for (const [id, d] of devs) view[id] = {scribe: d.scribe, kind: d.kind,
            endorsed_by: d.endorsedBy,
                                                sign_key: c.b64encode(d.signKey), label: d.label};
        const revoked = [...(await t.endorsedDevices(auth, arg.devices.statements,
            new Set([arg.devices.a.device]))).keys()].sort();
        const verdict = async (fn) => { try { return await fn(); } catch (e) {
            return `${e.constructor.name}: ${e.message}`; } };
        const a = await verdict(async () => (await t.verifyAssignment(auth,
            arg.assignment.statement, arg.assignment.unit)).scribes);
        const aForged = await verdict(() => t.verifyAssignment(auth, arg.assignment.forged,
            arg.assignment.unit));
        const aOther = await verdict(() => t.verifyAssignment(auth, arg.assignment.statement,
            "unit-else"));
        const rv = await t.verifyRevocations(auth, arg.revocations.statement);
        const good = await t.verifyBinding(auth, arg.bindings.good);
        const bad = [];
        for (const x of arg.bindings.bad) {
            bad.push(await verdict(() => t.verifyBinding(auth, x.binding)));
        }
        const other = await t.verifyBinding(auth, arg.bindings.other_unit);
        // a unit key in a hardware token: ECDSA P-256, its messages checked as Ed25519 ones are
        const p = arg.bindings.p256;
        const p256 = await t.verifyBinding(auth, p.binding);
        await t.verifyMessage(p.domain, p.message, p256.signKey);
        const altered = await verdict(
          () => t.verifyMessage(p.domain, {...p.message, last_audio_seq: 8}, p256.signKey));
        return {view, rejected: rejected.length, revoked, a, aForged, aOther,
                rv: {serial: rv.serial, revoked: rv.unitRevoked(arg.assignment.unit,
                    arg.revocations.unit_key_id, arg.revocations.after_us),
                     before: rv.unitRevoked(arg.assignment.unit, arg.revocations.unit_key_id,
                         arg.revocations.after_us - 1),
                     devices: [...rv.devices]},
                good: [good.unit, good.keyId], bad, other: other.unit,
                p256: [p256.keyType, p256.keyId], altered};""",
              {"auth": V["authority"]["public"], "devices": V["devices"],
               "assignment": V["assignment"], "revocations": V["revocations"],
               "bindings": V["bindings"]})
    want = V["devices"]["endorsed"]
    assert sorted(got["view"]) == sorted(want)
    for k, v in got["view"].items():
        assert v == {x: want[k][x] for x in ("scribe", "kind", "endorsed_by", "sign_key", "label")}
    assert got["rejected"] == 2  # forged, by a stranger (another scribe's: quietly not theirs)
    assert got["revoked"] == V["devices"]["endorsed_when_a_revoked"]
    assert got["a"] == ["robot-v", "scribe-v"]
    assert got["aForged"].startswith("TrustError") and "signature" in got["aForged"]
    assert got["aOther"].startswith("TrustError") and "another unit" in got["aOther"]
    assert got["rv"] == {"serial": 3, "revoked": True, "before": False,
                         "devices": [V["devices"]["b"]["device"]]}
    assert got["good"] == [V["bindings"]["unit"], V["bindings"]["unit_key_id"]]
    assert all(x.startswith("TrustError") for x in got["bad"]), got["bad"]
    assert got["other"] != V["bindings"]["unit"]
    assert got["p256"] == ["ecdsa-p256", V["bindings"]["p256"]["key_id"]]
    assert got["altered"].startswith("TrustError") and "does not verify" in got["altered"]


def test_cue_replies_seal_in_either_and_open_in_the_other(module_page):
    r = V["reply"]
    got = js(module_page, """
        const sk = c.b64decode(arg.r.session_key);
        const key = await t.replyKey(sk);
        const devs = await t.endorsedDevices(c.b64decode(arg.auth), arg.statements);
        const opened = await t.openReply(key, {unit: arg.r.unit, session: arg.r.session,
            sealed: arg.r.sealed});
        const verified = await t.verifyReply(opened, {unit: arg.r.unit, session: arg.r.session,
            device: devs.get(arg.a.device)});
        let wrongDevice;
        try { await t.verifyReply(opened, {unit: arg.r.unit, session: arg.r.session,
            device: devs.get(arg.r_device)}); }
        catch (e) { wrongDevice = e.message; }
        let otherSession;
        try { await t.openReply(key, {unit: arg.r.unit, session: "00".repeat(16),
            sealed: arg.r.sealed}); }
        catch (e) { otherSession = e.message; }
        const signer = await k.signerFromSeed(c.b64decode(arg.a.sign_seed));
        const sealed = await t.sealReply(key, {unit: arg.r.unit, session: arg.r.session, cueId: 9,
            reply: "repeat",
                                               atUs: 1790000000500000, signKey: signer.privateKey,
                                                   device: signer.device});
        return {keyBytes: c.b64encode(await t.replyKeyBytes(sk)), verified, wrongDevice,
            otherSession, sealed};""",
              {"r": r, "auth": V["authority"]["public"], "statements": V["devices"]["statements"],
               "a": V["devices"]["a"], "r_device": V["devices"]["r"]["device"]})
    assert got["keyBytes"] == r["key"]
    assert got["verified"] == r["body"]
    assert "another device" in got["wrongDevice"]
    assert "does not open" in got["otherSession"]
    # what the browser sealed opens and verifies in Python, as the unit does it
    body = trust.open_reply(b(r["session_key"]), unit=r["unit"], session_hex=r["session"],
                            sealed=got["sealed"])
    dev = trust.endorsed_devices(AUTH, V["devices"]["statements"])[V["devices"]["a"]["device"]]
    assert trust.verify_reply(body, unit=r["unit"], session_hex=r["session"], device=dev)[
        "reply"] == "repeat"
    assert body["cue_id"] == 9


def test_key_shares_between_a_scribes_devices(module_page):
    ks, d = V["key_share"], V["devices"]
    got = js(module_page, """
        const devs = await t.endorsedDevices(c.b64decode(arg.auth), arg.statements);
        const idB = await k.identityFromPrivate(c.b64decode(arg.d.b.enc_private));
        const meB = {device: arg.d.b.device, encKeyId: idB.keyId,
            scribe: devs.get(arg.d.b.device).scribe};
        const sender = await t.verifyShare(arg.ks.share, {me: meB, devices: devs});
        const key = await t.openShare(arg.ks.share, idB);
        const verdict = async (fn) => { try { await fn(); return "accepted"; } catch (e) {
            return e.message; } };
        const robot = await verdict(
            () => t.verifyShare(arg.ks.from_robot, {me: meB, devices: devs}));
        const altered = await verdict(
            () => t.verifyShare({...arg.ks.share, issued_us: 1}, {me: meB, devices: devs}));
        const meA = {device: arg.d.a.device, encKeyId: "x", scribe: "scribe-v"};
        const notMine = await verdict(() => t.verifyShare(arg.ks.share, {me: meA, devices: devs}));
        // device B shares the session key back to A, from the browser
        const signerB = await k.signerFromSeed(c.b64decode(arg.d.b.sign_seed));
        const made = await t.makeShare(key, {unit: arg.ks.share.unit, session: arg.ks.share.session,
            to: devs.get(arg.d.a.device), signKey: signerB.privateKey, fromDevice: signerB.device,
                issuedUs: 1790000000900000});
        return {sender: sender.device, key: c.b64encode(key), robot, altered, notMine, made,
                info: c.b64encode(t.shareInfo(arg.ks.share.unit, arg.ks.share.session,
                    arg.ks.share.key_id))};""",
              {"ks": ks, "d": d, "auth": V["authority"]["public"], "statements": d["statements"]})
    assert got["sender"] == d["a"]["device"]
    assert got["key"] == ks["session_key"]
    assert got["info"] == ks["info"]
    assert "another scribe" in got["robot"]
    assert "signature" in got["altered"]
    assert "another device" in got["notMine"]
    devs = trust.endorsed_devices(AUTH, d["statements"])
    share = keyshare.KeyShare.from_dict(got["made"])
    assert keyshare.verify(share, me=devs[d["a"]["device"]], devices=devs).device == \
        d["b"]["device"]
    a_key = X25519PrivateKey.from_private_bytes(b(d["a"]["enc_private"]))
    assert keyshare.open_share(share, a_key) == b(ks["session_key"])
