"""The clinic authority's operations (docs/trust.md): endorse scribe devices, assign scribes
to rooms, grant unit enrolments, revoke, and sign one-time provisioning tokens. Each
returns a signed statement (scribelink.trust) for the relay to store and forward.

The admin's tool (`python -m scribelink.authority`, scribelink/authority_cli.py), the
demo and the tests use this; the admin's browser does the same in js/trust.js. The key
never reaches the relay: it lives in a passphrase-encrypted file on the admin's machine.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scribelink import trust
from scribelink.trust import Statement


class ClinicAuthority:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.public_raw = trust.ed25519_raw(key)
        self.key_id = trust.key_id(self.public_raw)
        self.fingerprint = trust.fingerprint(self.public_raw)

    # ------------------------------------------------------------------ the key file

    @classmethod
    def create(cls) -> ClinicAuthority:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path, passphrase: str) -> ClinicAuthority:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise trust.TrustError(f"cannot read the authority key file {path}: {e}") from e
        return cls(trust.open_authority(doc, passphrase))

    def save(self, path: Path, passphrase: str, *, iterations: int = trust.KDF_ITERATIONS
             ) -> None:
        """Write the encrypted key file (0600, never overwriting an existing one)."""
        doc = trust.seal_authority(self.key, passphrase, iterations=iterations)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)

    def public_b64(self) -> str:
        return trust.b64(self.public_raw)

    # ------------------------------------------------------------------ statements

    def endorse_device(self, *, scribe: str, enc_key: bytes, sign_key: bytes, label: str,
                       now_us: int, kind: str = "person") -> Statement:
        return trust.sign(trust.DEVICE, trust.device_body(
            scribe=scribe, enc_key=enc_key, sign_key=sign_key, label=label, issued_us=now_us,
            kind=kind), self.key)

    def assign(self, *, unit: str, room: str | None, scribes: list[str], now_us: int
               ) -> Statement:
        return trust.sign(trust.ASSIGNMENT, trust.assignment_body(
            unit=unit, room=room, scribes=scribes, issued_us=now_us), self.key)

    def grant(self, *, unit: str, room: str, clinic: str, now_us: int, ttl_s: int = 3600
              ) -> tuple[Statement, bytes]:
        """A grant to enrol `unit`, and the secret that goes into the enrolment code (the
        relay never sees it)."""
        secret = secrets.token_bytes(16)
        code_key = trust.code_key(secret)
        st = trust.sign(trust.GRANT, trust.grant_body(
            unit=unit, room=room, clinic=clinic, code_key=trust.ed25519_raw(code_key),
            issued_us=now_us, expires_us=now_us + ttl_s * 1_000_000), self.key)
        return st, secret

    def revocations(self, *, serial: int, units: list[dict], devices: list[str], now_us: int
                    ) -> Statement:
        return trust.sign(trust.REVOCATIONS, trust.revocations_body(
            serial=serial, issued_us=now_us, units=units, devices=devices), self.key)

    def token(self, *, unit: str, action: str, now_us: int, ttl_s: int = 3600,
              args: dict | None = None) -> Statement:
        return trust.sign(trust.TOKEN, trust.token_body(
            unit=unit, action=action, token_id=secrets.token_hex(8), issued_us=now_us,
            expires_us=now_us + ttl_s * 1_000_000, args=args), self.key)


def bind_unit(grant: Statement, secret: bytes, unit_sign_key: bytes, now_us: int,
              key_type: str = trust.KEY_ED25519) -> Statement:
    """What the tech's tool does at enrolment: sign the new unit's key binding with the
    code's key (only the holder of the code can). `key_type`: trust.UNIT_KEY_TYPES."""
    code_key = trust.code_key(secret)
    if trust.key_id(trust.ed25519_raw(code_key)) != trust.key_id(
            trust.unb64(grant.body["code_key"], what="code_key", length=32)):
        raise trust.TrustError("this code's secret does not belong to this grant")
    return trust.sign(trust.BINDING, trust.binding_body(grant=grant, sign_key=unit_sign_key,
                                                        issued_us=now_us, key_type=key_type),
                      code_key)


if __name__ == "__main__":
    import sys

    from scribelink.authority_cli import main

    sys.exit(main())
