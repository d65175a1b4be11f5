"""Key shares: one of a scribe's devices hands a session key to another of the same
scribe's devices, end to end, so a browser approved today opens the encounters of this
morning. The one owner of the format (docs/trust.md, "Key shares"); the browser's copy is
cloud_relay/console/js/trust.js, held to tests/vectors/trust.json.

A share is the session key HPKE-sealed (RFC 9180 base mode, the envelope's suite) to the
receiving device's X25519 key, and signed with the sharing device's Ed25519 key:

    {"type": "key_share", "v": 1, "unit", "session", "to_device", "key_id",
     "from_device", "wrapped", "issued_us", "sig"}

    info = "scribelink/v1 key-share|" unit "|" session id (16 bytes) "|" key_id
    sig  = Ed25519(from_device, "scribelink/v1 key_share" 0x00 canonical(share - sig))

The relay stores shares and hands them to the device they are for; it can read none (HPKE)
and forge none (the signature, by a device the clinic authority endorsed for the same
scribe, which the receiving device checks itself). A share holds only if:
  - its signer is an endorsed device of the same scribe as the receiving device,
  - it is addressed to the receiving device and its X25519 key,
  - its signature verifies, and the key it carries opens the session (the caller checks
    that last one: every chunk authenticates under it).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from scribelink import envelope as env
from scribelink import trust

TYPE = "key_share"
DOMAIN = "key_share"
MAX_SHARES_PER_REQUEST = 200
WRAPPED_LEN = env.HPKE_ENC_LEN + env.KEY_LEN + 16  # enc || ct || tag


def share_info(unit: str, session_hex: str, key_id: str) -> bytes:
    """HPKE `info` of a share: binds it to its unit, session and receiving key (distinct
    from the unit's own wrap, `envelope.wrap_info`, so neither can stand for the other)."""
    return (b"scribelink/v1 key-share|" + unit.encode() + b"|" + bytes.fromhex(session_hex)
            + b"|" + key_id.encode())


@dataclass(frozen=True)
class KeyShare:
    unit: str
    session: str
    to_device: str
    key_id: str  # env.key_id of the receiving device's X25519 key
    from_device: str
    wrapped: str  # base64 enc || ct
    issued_us: int
    sig: str = ""

    def unsigned(self) -> dict:
        return {"type": TYPE, "v": 1, "unit": self.unit, "session": self.session,
                "to_device": self.to_device, "key_id": self.key_id,
                "from_device": self.from_device, "wrapped": self.wrapped,
                "issued_us": self.issued_us}

    def to_dict(self) -> dict:
        return {**self.unsigned(), "sig": self.sig}

    @classmethod
    def from_dict(cls, d) -> KeyShare:
        """Shape and bounds only; `verify` checks who signed it."""
        if not isinstance(d, dict) or d.get("type") != TYPE or d.get("v") != 1:
            raise trust.TrustError("not a key share")
        for k, n in (("unit", 64), ("to_device", 16), ("key_id", 16), ("from_device", 16)):
            v = d.get(k)
            if not isinstance(v, str) or not 0 < len(v) <= n:
                raise trust.TrustError(f"key share: {k} must be text of 1..{n} characters")
        s = d.get("session")
        try:
            if not isinstance(s, str) or len(bytes.fromhex(s)) != env.SESSION_ID_LEN \
                    or s != s.lower():
                raise ValueError
        except ValueError as e:
            raise trust.TrustError("key share: session must be 32 lowercase hex digits") from e
        trust.unb64(d.get("wrapped"), what="key share: wrapped", length=WRAPPED_LEN)
        trust.unb64(d.get("sig"), what="key share: sig", length=64)
        at = d.get("issued_us")
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= 2**53:
            raise trust.TrustError("key share: issued_us must be a non-negative integer")
        return cls(d["unit"], s, d["to_device"], d["key_id"], d["from_device"], d["wrapped"],
                   at, d["sig"])


def make_share(session_key: bytes, *, unit: str, session_hex: str, to: trust.Device,
               from_key: Ed25519PrivateKey, issued_us: int) -> KeyShare:
    """Seal `session_key` to device `to`, signed by `from_key` (the sharing device)."""
    if len(session_key) != env.KEY_LEN:
        raise trust.TrustError("a session key is 32 bytes")
    kid = env.key_id(to.enc_key)
    wrapped = env.HPKE_SUITE.encrypt(session_key, X25519PublicKey.from_public_bytes(to.enc_key),
                                     info=share_info(unit, session_hex, kid))
    share = KeyShare(unit, session_hex, to.device, kid,
                     trust.key_id(trust.ed25519_raw(from_key)), trust.b64(wrapped), issued_us)
    return KeyShare(**{**share.__dict__,
                       "sig": trust.sign_message(DOMAIN, share.unsigned(), from_key)})


def verify(share: KeyShare, *, me: trust.Device, devices: dict[str, trust.Device]) -> trust.Device:
    """The sharing device, if this share is for `me` and signed by an endorsed device of
    the same scribe (`devices`: what trust.endorsed_devices holds); else TrustError."""
    if share.to_device != me.device or share.key_id != env.key_id(me.enc_key):
        raise trust.TrustError("this key share is for another device")
    sender = devices.get(share.from_device)
    if sender is None:
        raise trust.TrustError("key share signed by a device the clinic did not endorse")
    if sender.scribe != me.scribe:
        raise trust.TrustError("key share from another scribe's device")
    trust.verify_message(DOMAIN, share.to_dict(), trust.load_ed25519(sender.sign_key))
    return sender


def open_share(share: KeyShare, private_key: X25519PrivateKey) -> bytes:
    """The session key the share carries (after `verify`)."""
    try:
        key = env.HPKE_SUITE.decrypt(trust.unb64(share.wrapped, what="wrapped"), private_key,
                                     info=share_info(share.unit, share.session, share.key_id))
    except Exception as e:  # InvalidTag and friends: not for this key, or altered
        raise trust.TrustError("key share does not open with this device's key") from e
    if len(key) != env.KEY_LEN:
        raise trust.TrustError("key share holds no session key")
    return key
