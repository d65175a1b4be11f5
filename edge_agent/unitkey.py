"""The unit's signing key: where it lives and how it signs (docs/trust.md, "Keys on the
unit"). It has one of two homes:

- **a file**: Ed25519, PKCS#8 PEM, mode 0600 (`tls/sign.key` in the state dir). Anyone who
  copies the SD card has it.
- **a PKCS#11 token**, named by an RFC 7512 URI: a TPM 2.0 through tpm2-pkcs11, an ATECC608
  through cryptoauthlib's PKCS#11 module (SoftHSM2 stands in for both in the tests). The key
  is made inside the token, sensitive and not extractable, and never leaves it. Ed25519
  where the token has it (CKM_EDDSA); otherwise ECDSA P-256 (CKM_ECDSA over a SHA-256
  digest), which is all a TPM 2.0 or an ATECC608 offers. The binding names the key's type
  (scribelink.trust.UNIT_KEY_TYPES), so verifiers know which it is.

A URI names the token, the key's label and, once it exists, its id; the query names the
module and where the PIN is (RFC 7512's module-path, pin-source or pin-value):

    pkcs11:token=scribelink;object=scribelink-unit-sign;id=%3a%91...
        ?module-path=/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so
        &pin-source=/etc/scribelink/pkcs11.pin

`load(spec)` takes a file path or such a URI and returns a UnitKey whose `sign(data)`
gives scribelink.trust's raw signature form either way. python-pkcs11 is imported only when
a URI is used (the `hsm` extra).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, unquote_to_bytes

from scribelink import trust

URI_SCHEME = "pkcs11:"
# the label the unit's signing key pairs get in a token when the URI names none
DEFAULT_LABEL = "scribelink-unit-sign"
# DER of the OID id-Ed25519 (1.3.101.112): CKA_EC_PARAMS of an Ed25519 key pair
ED25519_PARAMS = bytes.fromhex("06032b6570")


class UnitKeyError(ValueError):
    """The signing key cannot be made, found or used: the message says why."""


class UnitKey(Protocol):
    key_type: str  # scribelink.trust.KEY_ED25519 or KEY_P256
    public_raw: bytes

    def sign(self, data: bytes) -> bytes: ...

    def describe(self) -> dict: ...


def key_id(key: UnitKey) -> str:
    return trust.key_id(key.public_raw)


# ---------------------------------------------------------------------- a file


class FileKey:
    """An Ed25519 (or P-256) private key in a PEM file."""

    def __init__(self, key: Any, path: Path | None = None) -> None:
        self.key = key
        self.path = path
        self.key_type, self.public_raw = trust.unit_public_raw(key)

    @classmethod
    def load(cls, path: str | Path) -> FileKey:
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
        except (OSError, ValueError, TypeError) as e:
            raise UnitKeyError(f"cannot read the unit's signing key {path}: "
                               f"{getattr(e, 'strerror', None) or type(e).__name__}") from e
        try:
            return cls(key, Path(path))
        except trust.TrustError as e:
            raise UnitKeyError(f"{path}: {e}") from e

    @classmethod
    def generate(cls) -> tuple[FileKey, bytes]:
        """A new Ed25519 key and its PEM (PKCS#8, unencrypted: the caller writes it 0600)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return cls(key), pem

    def sign(self, data: bytes) -> bytes:
        return trust.sign_raw(self.key, data)

    def describe(self) -> dict:
        return {"store": "file", "type": self.key_type, "key_id": trust.key_id(self.public_raw)}


# ---------------------------------------------------------------------- a PKCS#11 token


@dataclass(frozen=True)
class Pkcs11Uri:
    """An RFC 7512 PKCS#11 URI (the attributes this module uses: token, object, id in the
    path; module-path, pin-source, pin-value in the query)."""

    path: dict[str, str] = field(default_factory=dict)  # values percent-decoded, id as hex
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        if not text.startswith(URI_SCHEME):
            raise UnitKeyError("a PKCS#11 URI starts with pkcs11:")
        body = text[len(URI_SCHEME):]
        path_part, _, query_part = body.partition("?")
        path: dict[str, str] = {}
        for item in filter(None, path_part.split(";")):
            name, eq, value = item.partition("=")
            if not eq:
                raise UnitKeyError(f"PKCS#11 URI: {item!r} is not NAME=VALUE")
            path[name] = (unquote_to_bytes(value).hex() if name == "id"
                          else unquote(value, errors="strict"))
        query: dict[str, str] = {}
        for item in filter(None, query_part.split("&")):
            name, eq, value = item.partition("=")
            if not eq:
                raise UnitKeyError(f"PKCS#11 URI: {item!r} is not NAME=VALUE")
            query[name] = unquote(value, errors="strict")
        if "module-path" not in query:
            raise UnitKeyError("PKCS#11 URI: module-path= (the token's PKCS#11 module) is "
                               "required")
        return cls(path, query)

    def text(self) -> str:
        def enc(name: str, value: str) -> str:
            if name == "id":  # every byte escaped, as p11tool and OpenSSL print ids
                return "".join(f"%{b:02x}" for b in bytes.fromhex(value))
            return quote(value, safe="/:-_.")

        out = URI_SCHEME + ";".join(f"{k}={enc(k, v)}" for k, v in self.path.items())
        if self.query:
            out += "?" + "&".join(f"{k}={enc(k, v)}" for k, v in self.query.items())
        return out

    def with_id(self, key_id_hex: str) -> Pkcs11Uri:
        return Pkcs11Uri({**self.path, "id": key_id_hex}, dict(self.query))

    @property
    def label(self) -> str:
        return self.path.get("object", DEFAULT_LABEL)

    @property
    def id(self) -> bytes | None:
        return bytes.fromhex(self.path["id"]) if "id" in self.path else None

    def pin(self) -> str | None:
        if "pin-value" in self.query:
            return self.query["pin-value"]
        src = self.query.get("pin-source")
        if src is None:
            return None
        src = src.removeprefix("file://")
        try:
            return Path(src).read_text().strip()
        except OSError as e:
            raise UnitKeyError(f"cannot read the token's PIN from {src}: {e.strerror}") from e


_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()


def _lib(module_path: str):
    try:
        import pkcs11
    except ImportError as e:
        raise UnitKeyError("a PKCS#11 signing key needs python-pkcs11 (the unit's `hsm` "
                           "extra: pip install '.[hsm]')") from e
    with _libs_lock:
        if module_path not in _libs:
            if not os.path.exists(module_path):
                raise UnitKeyError(f"the PKCS#11 module {module_path} is not installed")
            _libs[module_path] = pkcs11.lib(module_path)
        return _libs[module_path]


def _open(uri: Pkcs11Uri, *, rw: bool = False):
    import pkcs11

    lib = _lib(uri.query["module-path"])
    try:
        token = lib.get_token(token_label=uri.path["token"]) if "token" in uri.path else \
            next(iter(lib.get_tokens()))
    except (pkcs11.NoSuchToken, StopIteration, pkcs11.PKCS11Error) as e:
        raise UnitKeyError(f"no PKCS#11 token {uri.path.get('token', '')!r} in "
                           f"{uri.query['module-path']}") from e
    try:
        try:
            return token, token.open(rw=rw, user_pin=uri.pin())
        except pkcs11.UserAlreadyLoggedIn:
            # PKCS#11 logins are per process: another session of ours logged in already
            return token, token.open(rw=rw)
    except pkcs11.PKCS11Error as e:
        raise UnitKeyError(f"cannot open the PKCS#11 token {token.label!r} "
                           f"({type(e).__name__}: wrong PIN, or the token is not ready)") from e


def _point(raw: bytes, key_type: str) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point (some modules give it bare)."""
    size = 32 if key_type == trust.KEY_ED25519 else 65
    if len(raw) == size + 2 and raw[0] == 0x04 and raw[1] == size:
        return raw[2:]
    if len(raw) == size:
        return raw
    raise UnitKeyError(f"the token returned a public key of {len(raw)} bytes for {key_type}")


class Pkcs11Key:
    """A key pair in a PKCS#11 token, used through one session held open (signing is
    serialised: a PKCS#11 session is not for concurrent use)."""

    def __init__(self, uri: Pkcs11Uri) -> None:
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        self.uri = uri
        self.token, self.session = _open(uri)
        self._lock = threading.Lock()
        find: dict = {Attribute.LABEL: uri.label, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
        if uri.id is not None:
            find[Attribute.ID] = uri.id
        try:
            privs = list(self.session.get_objects(find))
        except pkcs11.PKCS11Error as e:
            self.close()
            raise UnitKeyError(f"cannot search the PKCS#11 token: {type(e).__name__}") from e
        if len(privs) != 1:
            self.close()
            raise UnitKeyError(f"the PKCS#11 token holds {len(privs)} signing keys named "
                               f"{uri.text().split('?')[0]} (one was expected)")
        self.private = privs[0]
        kt = self.private[Attribute.KEY_TYPE]
        self.key_type = trust.KEY_ED25519 if kt == KeyType.EC_EDWARDS else trust.KEY_P256
        pub = self.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=uri.label,
                                   id=self.private[Attribute.ID])
        self.public_raw = _point(pub[Attribute.EC_POINT], self.key_type)
        trust.unit_public_key(self.key_type, self.public_raw)  # a key of its type

    def sign(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        with self._lock:
            if self.key_type == trust.KEY_ED25519:
                return self.private.sign(data, mechanism=Mechanism.EDDSA)
            return self.private.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)

    def describe(self) -> dict:
        return {"store": "pkcs11", "type": self.key_type,
                "key_id": trust.key_id(self.public_raw), "token": self.token.label}

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):  # a session that is gone already
            self.session.close()


def token_key_types(uri: Pkcs11Uri) -> list[str]:
    """The unit key types this token can make and sign with, preferred first."""
    from pkcs11 import Mechanism

    token, session = _open(uri)
    session.close()
    have = set(token.slot.get_mechanisms())
    out = []
    if {Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA} <= have:
        out.append(trust.KEY_ED25519)
    if {Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA} <= have:
        out.append(trust.KEY_P256)
    return out


def generate_pkcs11(uri: Pkcs11Uri, key_type: str = "auto") -> Pkcs11Key:
    """Make a key pair inside the token (sensitive, not extractable); -> the key, its URI
    naming it by a fresh id. `key_type` "auto": Ed25519 if the token has it, else P-256."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    can = token_key_types(uri)
    if key_type == "auto":
        if not can:
            raise UnitKeyError("the PKCS#11 token can make neither Ed25519 nor ECDSA P-256 "
                               "keys")
        key_type = can[0]
    elif key_type not in can:
        raise UnitKeyError(f"the PKCS#11 token cannot make {key_type} keys (it can: "
                           f"{', '.join(can) or 'neither'})")
    new_id = os.urandom(8)
    _token, session = _open(uri, rw=True)
    try:
        if key_type == trust.KEY_ED25519:
            params = session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: ED25519_PARAMS}, local=True)
        else:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True)
        params.generate_keypair(
            store=True, label=uri.label, id=new_id,
            public_template={Attribute.VERIFY: True},
            private_template={Attribute.SIGN: True, Attribute.SENSITIVE: True,
                              Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True})
    except pkcs11.PKCS11Error as e:
        raise UnitKeyError(f"the PKCS#11 token did not make the key: {type(e).__name__}") from e
    finally:
        session.close()
    return Pkcs11Key(uri.with_id(new_id.hex()))


def delete_pkcs11(uri: Pkcs11Uri, *, keep: bytes | None = None) -> int:
    """Destroy the token's key pairs under this URI's label: the one its id names, or, with
    no id, every one but `keep`. -> how many objects went."""
    import pkcs11
    from pkcs11 import Attribute

    _token, session = _open(uri, rw=True)
    gone = 0
    try:
        find: dict = {Attribute.LABEL: uri.label}
        if uri.id is not None:
            find[Attribute.ID] = uri.id
        for obj in list(session.get_objects(find)):
            if keep is not None and obj[Attribute.ID] == keep:
                continue
            obj.destroy()
            gone += 1
    except pkcs11.PKCS11Error as e:
        raise UnitKeyError(f"cannot delete keys in the PKCS#11 token: {type(e).__name__}") from e
    finally:
        session.close()
    return gone


# ---------------------------------------------------------------------- either


def is_uri(spec: str) -> bool:
    return spec.startswith(URI_SCHEME)


def load(spec: str | Path) -> FileKey | Pkcs11Key:
    """The unit's signing key from a file path or a pkcs11: URI naming one key."""
    spec = str(spec)
    if is_uri(spec):
        uri = Pkcs11Uri.parse(spec)
        if uri.id is None:
            raise UnitKeyError("the PKCS#11 URI of the unit's signing key must name its id "
                               "(provisioning writes it)")
        return Pkcs11Key(uri)
    return FileKey.load(spec)
