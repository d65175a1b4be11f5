"""The trust root: who may say what, and how anyone checks it. The one owner of signed
statements, canonical JSON and the clinic authority's key file (docs/trust.md).

Everything the relay must not be able to decide is a statement signed with Ed25519:
the clinic authority (a key the clinic's admin holds, never the relay) endorses scribe
devices, grants the enrolment of a unit, assigns scribes to rooms, revokes, and signs
one-time provisioning tokens; a unit signs what it says about its sessions with a key
whose binding to its unit id the authority granted. The relay stores and forwards these
and can forge none of them. Test vectors: tests/vectors/trust.json.

A signed statement on the wire:

    {"t": TYPE, "body": {...}, "signer": KEY_ID, "sig": BASE64}

    sig = Ed25519(signer, b"scribelink/v1 " + TYPE + b"\\x00" + canonical(body))

`canonical` is JSON with sorted keys, no spaces, non-ASCII as \\uXXXX escapes (Python's
`json.dumps(sort_keys=True, separators=(",", ":"))`), integers only (no floats), so the
browser (js/trust.js) and Python produce the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, overload

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

DOMAIN = b"scribelink/v1 "
MAX_STATEMENT_BYTES = 16 * 1024

# statement types
DEVICE = "device"  # a scribe device's keys, endorsed by the authority or a sibling device
GRANT = "unit_grant"  # the authority allows one unit id to be enrolled with a code
BINDING = "unit_binding"  # a unit's signing key bound to its unit id (under a grant)
ASSIGNMENT = "assignment"  # which scribes hear a room
REVOCATIONS = "revocations"  # revoked unit keys and scribe devices
TOKEN = "token"  # a one-time provisioning token (unlock, factory reset, trust change)
TYPES = (DEVICE, GRANT, BINDING, ASSIGNMENT, REVOCATIONS, TOKEN)

TOKEN_ACTIONS = ("unlock", "factory_reset", "set_trust", "release")
# what a set_trust token may change on a unit (its args): the unit's trust anchors
TRUST_ANCHORS = ("authority", "broker_url", "ca_sha256", "recovery_public_key")

# A unit's signing key: Ed25519, or ECDSA P-256 where the key lives in hardware that has no
# Ed25519 (a TPM 2.0, an ATECC608). The binding names the type, so every verifier knows how
# to read the key and its signatures (docs/trust.md, "Keys on the unit"):
#   ed25519     key: 32 raw bytes;                    signature: 64 bytes (RFC 8032)
#   ecdsa-p256  key: 65 bytes, SEC1 uncompressed point; signature: r || s, 32 bytes each,
#               over SHA-256 (IEEE P1363: what PKCS#11 CKM_ECDSA and WebCrypto produce)
KEY_ED25519 = "ed25519"
KEY_P256 = "ecdsa-p256"
UNIT_KEY_TYPES = (KEY_ED25519, KEY_P256)


class TrustError(ValueError):
    """A statement that is malformed, wrongly signed, or signed by the wrong party."""


# ---------------------------------------------------------------------------- encoding


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: Any, *, what: str = "value", length: int | None = None) -> bytes:
    if not isinstance(s, str):
        raise TrustError(f"{what} must be base64 text")
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError as e:
        raise TrustError(f"{what} is not valid base64") from e
    if length is not None and len(raw) != length:
        raise TrustError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > 8:
        raise TrustError("statement nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise TrustError("integers in statements must fit 53 bits (JavaScript numbers)")
        return
    if isinstance(value, float):
        raise TrustError("statements carry no floats (their text is not canonical)")
    if isinstance(value, list):
        for v in value:
            _check_json(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TrustError("statement keys must be text")
            _check_json(v, depth + 1)
        return
    raise TrustError(f"statements carry no {type(value).__name__}")


def canonical(body: dict) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, ASCII only, integers only."""
    _check_json(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_bytes(t: str, body: dict) -> bytes:
    return DOMAIN + t.encode() + b"\x00" + canonical(body)


def key_id(public_raw: bytes) -> str:
    """Short, stable name of a signing key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def fingerprint(public_raw: bytes) -> str:
    """What a person compares: the whole SHA-256 of the key, in groups of four."""
    h = hashlib.sha256(public_raw).hexdigest()
    return " ".join(h[i:i + 4] for i in range(0, 64, 4))


def ed25519_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_ed25519(raw_or_b64: bytes | str) -> Ed25519PublicKey:
    raw = unb64(raw_or_b64, what="signing key", length=32) if isinstance(raw_or_b64, str) \
        else raw_or_b64
    if len(raw) != 32:
        raise TrustError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


# ---------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statement:
    """A signed statement: its type, its body, who signed it and the signature."""

    t: str
    body: dict
    signer: str
    sig: bytes

    def to_dict(self) -> dict:
        return {"t": self.t, "body": self.body, "signer": self.signer, "sig": b64(self.sig)}

    @classmethod
    def from_dict(cls, d: Any) -> Statement:
        if not isinstance(d, dict) or set(d) != {"t", "body", "signer", "sig"}:
            raise TrustError("a signed statement is {t, body, signer, sig}")
        if d["t"] not in TYPES:
            raise TrustError(f"unknown statement type {d['t']!r}")
        if not isinstance(d["body"], dict) or not isinstance(d["signer"], str):
            raise TrustError("statement body must be an object and signer a key id")
        sig = unb64(d["sig"], what="signature", length=64)
        if len(canonical(d["body"])) > MAX_STATEMENT_BYTES:
            raise TrustError("statement too large")
        return cls(d["t"], d["body"], d["signer"], sig)

    def verify(self, key: Ed25519PublicKey, *, t: str | None = None) -> dict:
        """The body, if `key` signed this statement (of type `t`); else TrustError."""
        if t is not None and self.t != t:
            raise TrustError(f"expected a {t} statement, got {self.t}")
        raw = ed25519_raw(key)
        if self.signer != key_id(raw):
            raise TrustError(f"{self.t} statement signed by {self.signer}, not by {key_id(raw)}")
        try:
            key.verify(self.sig, signed_bytes(self.t, self.body))
        except InvalidSignature as e:
            raise TrustError(f"{self.t} statement: signature does not verify") from e
        return self.body


def sign(t: str, body: dict, key: Ed25519PrivateKey) -> Statement:
    if t not in TYPES:
        raise TrustError(f"unknown statement type {t!r}")
    return Statement(t, body, key_id(ed25519_raw(key)), key.sign(signed_bytes(t, body)))


def sign_raw(key: Any, data: bytes) -> bytes:
    """A 64-byte signature of `data`: an Ed25519 key (RFC 8032), a P-256 key (r || s over
    SHA-256), or a unit key held elsewhere (edge_agent.unitkey: its `sign` returns the same
    raw form, e.g. from a PKCS#11 token)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return key.sign(data)


def verify_raw(key: Any, sig: bytes, data: bytes) -> None:
    """Raises InvalidSignature unless `key` (Ed25519 or P-256 public) signed `data`."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if len(sig) != 64:
            raise InvalidSignature()
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(sig, data)


def sign_message(domain: str, msg: dict, key: Any) -> str:
    """Signature of a unit's message (session open/close, gap, event body): every field
    but "sig", under its own domain, base64. `key`: see sign_raw."""
    return b64(sign_raw(key, DOMAIN + domain.encode() + b"\x00" + canonical(
        {k: v for k, v in msg.items() if k != "sig"})))


def verify_message(domain: str, msg: dict, key: Any) -> None:
    """`key`: the signer's public key, Ed25519 or P-256 (a unit's, from its binding)."""
    sig = unb64(msg.get("sig"), what="message signature", length=64)
    try:
        verify_raw(key, sig, DOMAIN + domain.encode() + b"\x00" + canonical(
            {k: v for k, v in msg.items() if k != "sig"}))
    except InvalidSignature as e:
        raise TrustError(f"{domain}: signature does not verify (forged or altered)") from e


def unit_public_key(key_type: str, raw: bytes) -> Any:
    """A unit's public signing key from its type and raw bytes (see UNIT_KEY_TYPES)."""
    if key_type == KEY_ED25519:
        return load_ed25519(raw)
    if key_type == KEY_P256:
        if len(raw) != 65 or raw[0] != 4:
            raise TrustError("an ecdsa-p256 key is a 65-byte uncompressed point")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError as e:
            raise TrustError("ecdsa-p256 key is not a point on P-256") from e
    raise TrustError(f"unknown unit key type {key_type!r} (known: {', '.join(UNIT_KEY_TYPES)})")


def unit_public_raw(key: Any) -> tuple[str, bytes]:
    """(key type, raw bytes) of a unit's public or private signing key."""
    if isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        return KEY_ED25519, ed25519_raw(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return KEY_P256, key.public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    raise TrustError("a unit signing key is Ed25519 or ECDSA P-256")


# --------------------------------------------------------------------------- the authority key file

KDF_ITERATIONS = 600_000  # PBKDF2-HMAC-SHA256, OWASP's 2023 guidance; WebCrypto has it
FILE_KIND = "scribelink-clinic-authority"


def _file_key(passphrase: str, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase.encode())


def _file_aad(public_raw: bytes) -> bytes:
    return b"scribelink/v1 authority-key\x00" + public_raw


def seal_authority(key: Ed25519PrivateKey, passphrase: str, *,
                   iterations: int = KDF_ITERATIONS) -> dict:
    """The authority's key file: its private seed under AES-256-GCM with a key from the
    passphrase (PBKDF2), the public key in clear. Opens in Python and in a browser."""
    if len(passphrase) < 12:
        raise TrustError("the authority's passphrase must be at least 12 characters")
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    pub = ed25519_raw(key)
    salt, nonce = os.urandom(16), os.urandom(12)
    ct = AESGCM(_file_key(passphrase, salt, iterations)).encrypt(nonce, seed, _file_aad(pub))
    return {"v": 1, "kind": FILE_KIND, "public_key": b64(pub), "key_id": key_id(pub),
            "kdf": {"name": "PBKDF2-HMAC-SHA256", "iterations": iterations, "salt": b64(salt)},
            "cipher": "AES-256-GCM", "nonce": b64(nonce), "ciphertext": b64(ct)}


def open_authority(doc: dict, passphrase: str) -> Ed25519PrivateKey:
    if not isinstance(doc, dict) or doc.get("kind") != FILE_KIND or doc.get("v") != 1:
        raise TrustError("not a Scribelink clinic authority key file")
    pub = unb64(doc.get("public_key"), what="public_key", length=32)
    kdf = doc.get("kdf") or {}
    iterations = kdf.get("iterations")
    if not isinstance(iterations, int) or not 100_000 <= iterations <= 10_000_000:
        raise TrustError("authority key file: implausible KDF iterations")
    salt = unb64(kdf.get("salt"), what="salt", length=16)
    nonce = unb64(doc.get("nonce"), what="nonce", length=12)
    ct = unb64(doc.get("ciphertext"), what="ciphertext", length=48)
    try:
        seed = AESGCM(_file_key(passphrase, salt, iterations)).decrypt(nonce, ct,
                                                                       _file_aad(pub))
    except Exception as e:  # InvalidTag
        raise TrustError("wrong passphrase for the clinic authority key") from e
    key = Ed25519PrivateKey.from_private_bytes(seed)
    if ed25519_raw(key) != pub:
        raise TrustError("authority key file is inconsistent (public key does not match)")
    return key


def authority_public(doc: dict) -> Ed25519PublicKey:
    """The authority's public key from its key file (no passphrase needed)."""
    return load_ed25519(unb64(doc.get("public_key"), what="public_key", length=32))


# ---------------------------------------------------------------------------- X25519 recipients


def check_x25519(raw: bytes) -> bytes:
    """Refuse what no session key may be wrapped to: wrong length, or a low-order point
    (all-zero shared secret; HPKE would fail, and such a key protects nothing)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    if len(raw) != 32:
        raise TrustError("an X25519 public key is 32 bytes")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as e:
        raise TrustError("X25519 key is a low-order point (it would protect nothing)") from e
    return raw


# ---------------------------------------------------------------------------- bodies and chains


@overload
def _str(body: dict, k: str, *, max_len: int = 128) -> str: ...
@overload
def _str(body: dict, k: str, *, max_len: int = 128, optional: bool) -> str | None: ...
def _str(body: dict, k: str, *, max_len: int = 128, optional: bool = False) -> str | None:
    v = body.get(k)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise TrustError(f"{k} must be text of 1..{max_len} characters")
    return v


def _int(body: dict, k: str) -> int:
    v = body.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TrustError(f"{k} must be a non-negative integer")
    return v


@dataclass(frozen=True)
class Device:
    """A scribe device the authority (or a sibling device) endorsed."""

    scribe: str
    device: str  # the device's id: key_id of its signing key
    enc_key: bytes  # X25519: session keys are wrapped to it
    sign_key: bytes  # Ed25519: it signs cue replies and endorses sibling devices
    kind: str  # "person" (a scribe at a console) or "robot" (a headless recorder)
    label: str
    issued_us: int
    endorsed_by: str  # "authority" or the endorsing sibling's device id


def device_body(*, scribe: str, enc_key: bytes, sign_key: bytes, label: str, issued_us: int,
                kind: str = "person") -> dict:
    check_x25519(enc_key)
    return {"scribe": scribe, "device": key_id(sign_key), "enc_key": b64(enc_key),
            "sign_key": b64(sign_key), "label": label[:64] or "device", "kind": kind,
            "issued_us": issued_us}


def _device_from(body: dict, endorsed_by: str) -> Device:
    sign_key = unb64(body.get("sign_key"), what="sign_key", length=32)
    dev = Device(scribe=_str(body, "scribe", max_len=64), device=_str(body, "device", max_len=16),
                 enc_key=check_x25519(unb64(body.get("enc_key"), what="enc_key", length=32)),
                 sign_key=sign_key, kind=_str(body, "kind", max_len=16),
                 label=_str(body, "label", max_len=64), issued_us=_int(body, "issued_us"),
                 endorsed_by=endorsed_by)
    if dev.device != key_id(sign_key):
        raise TrustError("device id is not its signing key's id")
    if dev.kind not in ("person", "robot"):
        raise TrustError("device kind must be person or robot")
    return dev


def endorsed_devices(authority: Ed25519PublicKey, statements: list[dict],
                     revoked: frozenset[str] = frozenset(),
                     rejected: list[str] | None = None) -> dict[str, Device]:
    """The devices whose endorsement holds: signed by the authority, or by a device the
    authority endorsed for the same scribe (one step, never further). Revoked devices,
    and those a revoked device endorsed, are out. Malformed or forged statements are
    skipped, and why is appended to `rejected`: returns device id -> Device."""
    auth_id = key_id(ed25519_raw(authority))
    direct: dict[str, Device] = {}
    sibling: list[Statement] = []
    for d in statements:
        try:
            st = Statement.from_dict(d)
            if st.t != DEVICE:
                continue
            if st.signer == auth_id:
                dev = _device_from(st.verify(authority, t=DEVICE), "authority")
                if dev.device not in revoked:
                    direct[dev.device] = dev
            else:
                sibling.append(st)
        except TrustError as e:
            if rejected is not None:
                rejected.append(str(e))
            continue
    out = dict(direct)
    for st in sibling:
        parent = direct.get(st.signer)
        if parent is None:
            if rejected is not None:
                rejected.append(f"device {st.body.get('device')!r} endorsed by {st.signer}, "
                                "neither the authority nor an endorsed device")
            continue
        try:
            dev = _device_from(st.verify(load_ed25519(parent.sign_key), t=DEVICE), parent.device)
        except TrustError as e:
            if rejected is not None:
                rejected.append(str(e))
            continue
        if dev.scribe == parent.scribe and dev.device not in revoked and dev.device not in out:
            out[dev.device] = dev
    return out


def code_key(secret: bytes) -> Ed25519PrivateKey:
    """From an enrolment code's secret: the key that signs the new unit's binding. Only the
    code carries the secret (the relay sees a proof derived under another label, see
    scribelink.enrolcode), so only its holder can bind a unit key under the grant."""
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if len(secret) < 16:
        raise TrustError("an enrolment secret is at least 16 bytes")
    seed = HKDF(hashes.SHA256(), 32, None, b"scribelink/v1 enrol bind").derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def grant_body(*, unit: str, room: str, clinic: str, code_key: bytes, issued_us: int,
               expires_us: int) -> dict:
    return {"unit": unit, "room": room, "clinic": clinic, "code_key": b64(code_key),
            "issued_us": issued_us, "expires_us": expires_us}


def binding_body(*, grant: Statement, sign_key: bytes, issued_us: int,
                 key_type: str = KEY_ED25519) -> dict:
    unit_public_key(key_type, sign_key)  # refuse a key that is not of its type
    return {"unit": grant.body["unit"], "sign_key": b64(sign_key), "key_type": key_type,
            "issued_us": issued_us, "grant": grant.to_dict()}


@dataclass(frozen=True)
class Binding:
    unit: str
    sign_key: Any  # Ed25519PublicKey or EllipticCurvePublicKey (P-256): see key_type
    key_id: str
    issued_us: int
    key_type: str = KEY_ED25519
    sign_key_raw: bytes = b""


def verify_binding(authority: Ed25519PublicKey, d: dict) -> Binding:
    """A unit's signing key, if the authority granted its enrolment and the grant's code
    key signed this binding: a relay holding the transport CA cannot mint one."""
    st = Statement.from_dict(d)
    if st.t != BINDING:
        raise TrustError("not a unit binding")
    grant = Statement.from_dict(st.body.get("grant"))
    g = grant.verify(authority, t=GRANT)
    code_key = load_ed25519(unb64(g.get("code_key"), what="code_key", length=32))
    b = st.verify(code_key, t=BINDING)
    unit = _str(b, "unit", max_len=64)
    if unit != g.get("unit"):
        raise TrustError("binding names another unit than its grant")
    # bindings made before key types existed name no type: theirs is Ed25519
    key_type = b.get("key_type", KEY_ED25519)
    if key_type not in UNIT_KEY_TYPES:
        raise TrustError(f"unknown unit key type {key_type!r}")
    raw = unb64(b.get("sign_key"), what="sign_key")
    return Binding(unit, unit_public_key(key_type, raw), key_id(raw), _int(b, "issued_us"),
                   key_type, raw)


def assignment_body(*, unit: str, room: str | None, scribes: list[str], issued_us: int) -> dict:
    return {"unit": unit, "room": room or "", "scribes": sorted(set(scribes)),
            "issued_us": issued_us}


def verify_assignment(authority: Ed25519PublicKey, d: dict, unit: str) -> dict:
    body = Statement.from_dict(d).verify(authority, t=ASSIGNMENT)
    if body.get("unit") != unit:
        raise TrustError("assignment is for another unit")
    scribes = body.get("scribes")
    if not isinstance(scribes, list) or not all(isinstance(s, str) for s in scribes):
        raise TrustError("assignment: scribes must be a list of ids")
    _int(body, "issued_us")
    return body


def revocations_body(*, serial: int, issued_us: int, units: list[dict],
                     devices: list[str]) -> dict:
    """units: [{"unit", "sign_key_id", "after_us"}]: sessions that key signs from after_us on
    are refused. devices: device ids whose endorsements no longer hold."""
    return {"serial": serial, "issued_us": issued_us, "units": units,
            "devices": sorted(set(devices))}


@dataclass(frozen=True)
class Revocations:
    serial: int = 0
    units: tuple[tuple[str, str, int], ...] = ()  # (unit, sign key id, after_us)
    devices: frozenset[str] = frozenset()

    def unit_revoked(self, unit: str, sign_key_id: str, at_us: int) -> bool:
        return any(u == unit and k == sign_key_id and at_us >= after
                   for u, k, after in self.units)


def verify_revocations(authority: Ed25519PublicKey, d: dict | None) -> Revocations:
    if d is None:
        return Revocations()
    body = Statement.from_dict(d).verify(authority, t=REVOCATIONS)
    units = []
    for u in body.get("units") or []:
        if not isinstance(u, dict):
            raise TrustError("revocations: malformed unit entry")
        units.append((_str(u, "unit", max_len=64), _str(u, "sign_key_id", max_len=16),
                      _int(u, "after_us")))
    devices = body.get("devices") or []
    if not all(isinstance(x, str) for x in devices):
        raise TrustError("revocations: devices must be ids")
    return Revocations(_int(body, "serial"), tuple(units), frozenset(devices))


def token_body(*, unit: str, action: str, token_id: str, issued_us: int, expires_us: int,
               args: dict | None = None) -> dict:
    if action not in TOKEN_ACTIONS:
        raise TrustError(f"unknown token action {action!r}")
    return {"unit": unit, "action": action, "token_id": token_id, "issued_us": issued_us,
            "expires_us": expires_us, "args": args or {}}


def verify_token(authority: Ed25519PublicKey, d: dict, *, unit: str, action: str, now_us: int,
                 used: set[str]) -> dict:
    """A one-time token for this unit and action, unexpired and not used before."""
    body = Statement.from_dict(d).verify(authority, t=TOKEN)
    if body.get("unit") != unit:
        raise TrustError("this token is for another unit")
    if body.get("action") != action:
        raise TrustError(f"this token allows {body.get('action')!r}, not {action!r}")
    if _int(body, "expires_us") < now_us:
        raise TrustError("this token has expired: ask the clinic admin for a new one")
    tid = _str(body, "token_id", max_len=64)
    if tid in used:
        raise TrustError("this token was already used: tokens work once")
    if not isinstance(body.get("args"), dict):
        raise TrustError("token args must be an object")
    return body


# -------------------------------------------------------------------------- cue replies, end to end

REPLY_DOMAIN = "cue_reply"


def _reply_key(session_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, None, b"scribelink/v1 cue-reply").derive(session_key)


def _reply_aad(unit: str, session_hex: str) -> bytes:
    return b"scribelink/v1 cue-reply\x00" + unit.encode() + b"\x00" + session_hex.encode()


def seal_reply(session_key: bytes, *, unit: str, session_hex: str, cue_id: int, reply: str,
               at_us: int, device_key: Ed25519PrivateKey) -> str:
    """A scribe device's reply to a cue: signed by the device, sealed under a key derived
    from the session key, so only a holder of the session key could have made it and only
    the unit (and the session's other recipients) can read it. Base64."""
    body = {"cue_id": cue_id, "reply": reply, "device": key_id(ed25519_raw(device_key)),
            "at_us": at_us}
    body["sig"] = sign_message(REPLY_DOMAIN, {**body, "unit": unit, "session": session_hex},
                               device_key)
    nonce = os.urandom(12)
    ct = AESGCM(_reply_key(session_key)).encrypt(nonce, canonical(body),
                                                 _reply_aad(unit, session_hex))
    return b64(nonce + ct)


def open_reply(session_key: bytes, *, unit: str, session_hex: str, sealed: str) -> dict:
    """The reply's body if it opens under this session's key; its device signature is the
    caller's to check (`verify_reply`) against the devices it trusts."""
    raw = unb64(sealed, what="sealed reply")
    if not 12 + 16 < len(raw) <= 2048:
        raise TrustError("sealed reply has an implausible length")
    try:
        plain = AESGCM(_reply_key(session_key)).decrypt(raw[:12], raw[12:],
                                                        _reply_aad(unit, session_hex))
    except Exception as e:  # InvalidTag
        raise TrustError("cue reply does not open under this session's key (forged?)") from e
    try:
        body = json.loads(plain)
    except ValueError as e:
        raise TrustError("cue reply is not JSON") from e
    if not isinstance(body, dict):
        raise TrustError("cue reply must be an object")
    return body


def verify_reply(body: dict, *, unit: str, session_hex: str, device: Device) -> dict:
    if body.get("device") != device.device:
        raise TrustError("cue reply names another device")
    verify_message(REPLY_DOMAIN, {**body, "unit": unit, "session": session_hex},
                   load_ed25519(device.sign_key))
    _int(body, "cue_id")
    _int(body, "at_us")
    _str(body, "reply", max_len=16)
    return body
