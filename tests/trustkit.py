"""A clinic for tests: the authority, units with signing keys bound under grants, scribe
devices it endorsed, and signed assignments (scribelink.authority, scribelink.trust).
What a real clinic's admin and field tech do, done in memory; and, against a running
relay, what its admin does there: enrolment codes, endorsements, assignments, tokens."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.session import Session, Signer
from scribelink import enrolcode, trust
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink.authority import ClinicAuthority, bind_unit


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Device:
    scribe: str
    enc: X25519PrivateKey
    sign: Ed25519PrivateKey
    endorsement: dict
    kind: str = "person"

    @property
    def id(self) -> str:
        return trust.key_id(trust.ed25519_raw(self.sign))


@dataclass
class UnitKeys:
    unit: str
    key: Ed25519PrivateKey
    binding: dict

    @property
    def signer(self) -> Signer:
        return Signer(self.key, self.binding)

    def write(self, directory: Path, authority: ClinicAuthority) -> dict[str, str]:
        """The files provisioning leaves on a unit; returns the [keys] settings."""
        directory.mkdir(parents=True, exist_ok=True)
        sign = directory / "sign.key"
        sign.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        sign.chmod(0o600)
        (directory / "binding.json").write_text(msgs.dumps(self.binding).decode())
        (directory / "authority.pub").write_text(authority.public_b64() + "\n")
        return {"signing_key_file": str(sign), "binding_file": str(directory / "binding.json"),
                "authority_public_key_file": str(directory / "authority.pub")}


class Clinic:
    def __init__(self) -> None:
        self.authority = ClinicAuthority.create()
        self.public = self.authority.key.public_key()

    # -- the admin at a running relay (tests/support.Relay: .url, .api(method, path, uid))

    def register(self, relay, admin: str = "admin") -> None:
        """Tell the relay which authority the clinic has (its public key; idempotent)."""
        r = relay.api("PUT", "/api/admin/authority", admin,
                      json={"public_key": self.authority.public_b64()})
        assert r.status_code == 200, r.text

    def enrolment_code(self, relay, unit: str, room: str = "Exam 1", *,
                       clinic: str = "Test Clinic", ttl_s: int = 3600,
                       recovery_public_key: bytes | None = None, broker_url: str | None = None,
                       admin: str = "admin") -> tuple[str, int]:
        """What the admin's authority tool does for `code`: a grant and the hash of the
        code's proof to the relay (POST /api/admin/enrolment-grants), the code text built
        here with the secret the relay never sees. -> (code text, code id)."""
        self.register(relay, admin)
        grant, secret = self.authority.grant(unit=unit, room=room, clinic=clinic,
                                             now_us=now_us(), ttl_s=ttl_s)
        r = relay.api("POST", "/api/admin/enrolment-grants", admin, json={
            "grant": grant.to_dict(),
            "proof_hash": enrolcode.proof_hash(enrolcode.proof_of(secret))})
        assert r.status_code == 200, r.text
        got = r.json()
        code = enrolcode.EnrolCode(
            secret=secret, relay_url=relay.url, broker_url=broker_url or got["broker_url"],
            clinic=clinic, room=room, unit_id=unit, expires_at=int(time.time()) + ttl_s,
            recovery_public_key=recovery_public_key, authority=self.authority.public_raw)
        return code.text(), got["code_id"]

    def token(self, unit: str, action: str, *, ttl_s: int = 600, args: dict | None = None
              ) -> dict:
        return self.authority.token(unit=unit, action=action, now_us=now_us(), ttl_s=ttl_s,
                                    args=args).to_dict()

    def sign_token_request(self, relay, request_id: str, *, ttl_s: int = 600,
                           admin: str = "admin") -> dict:
        """What the admin does with a tech's request (the authority tool's `token`)."""
        req = relay.api("GET", f"/api/admin/token-requests/{request_id}", admin).json()
        st = self.token(req["unit"], req["action"], ttl_s=ttl_s, args=req.get("args") or {})
        r = relay.api("POST", f"/api/admin/token-requests/{request_id}", admin,
                      json={"statement": st})
        assert r.status_code == 200, r.text
        return st

    def endorse_pending(self, relay, admin: str = "admin") -> list[str]:
        """Endorse every device waiting on the relay (after checking its label, in life)."""
        done = []
        for d in relay.api("GET", "/api/admin/devices?pending=true", admin).json():
            st = self.authority.endorse_device(
                scribe=d["user"], enc_key=trust.unb64(d["enc_key"]),
                sign_key=trust.unb64(d["sign_key"]), label=d["label"], kind=d["kind"],
                now_us=now_us())
            r = relay.api("POST", "/api/admin/endorsements", admin,
                          json={"statement": st.to_dict()})
            assert r.status_code == 200, r.text
            done.append(d["device"])
        return done

    def assign_at(self, relay, unit: str, scribes: list[str], *, room: str = "Exam 1",
                  admin: str = "admin") -> None:
        st = self.authority.assign(unit=unit, room=room, scribes=scribes, now_us=now_us())
        r = relay.api("PUT", "/api/admin/assignments", admin, json={"statement": st.to_dict()})
        assert r.status_code == 200, r.text

    def unit(self, unit: str, room: str = "Exam 1") -> UnitKeys:
        grant, secret = self.authority.grant(unit=unit, room=room, clinic="Test Clinic",
                                             now_us=now_us())
        key = Ed25519PrivateKey.generate()
        binding = bind_unit(grant, secret, trust.ed25519_raw(key), now_us())
        return UnitKeys(unit, key, binding.to_dict())

    def device(self, scribe: str, *, kind: str = "person",
               endorser: Ed25519PrivateKey | None = None) -> Device:
        enc, sign = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        body = trust.device_body(scribe=scribe, enc_key=env.public_key_raw(enc),
                                 sign_key=trust.ed25519_raw(sign), label=f"{scribe} test",
                                 issued_us=now_us(), kind=kind)
        st = trust.sign(trust.DEVICE, body, endorser or self.authority.key)
        return Device(scribe, enc, sign, st.to_dict(), kind)

    def assignment(self, unit: str, devices: list[Device], *, room: str = "Exam 1",
                   scribes: list[str] | None = None, revocations: dict | None = None
                   ) -> msgs.Assignment:
        st = self.authority.assign(unit=unit, room=room,
                                   scribes=scribes or sorted({d.scribe for d in devices}),
                                   now_us=now_us())
        return msgs.Assignment(unit=unit, assignment=st.to_dict(),
                               devices=tuple(d.endorsement for d in devices),
                               revocations=revocations, issued_us=now_us())

    def session(self, unit: UnitKeys, devices: list[Device], **kw) -> Session:
        return Session(unit_id=unit.unit, scribes=[(d.scribe, d.id, d.enc.public_key())
                                                   for d in devices],
                       recovery=None, signer=unit.signer, sample_rate=kw.pop("sample_rate",
                                                                             16000),
                       chunk_ms=kw.pop("chunk_ms", 40), started_us=kw.pop("started_us",
                                                                           1_000_000), **kw)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()
