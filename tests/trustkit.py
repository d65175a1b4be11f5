"""A clinic for tests: the authority, units with signing keys bound under grants, scribe
devices it endorsed, and signed assignments (scribelink.authority, scribelink.trust).
What a real clinic's admin and field tech do, done in memory."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.session import Session, Signer
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import trust
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
