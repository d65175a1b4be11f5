"""Sealed diagnostics bundles: the one owner of their format. A unit seals a bundle to the
X25519 key of the admin who asked (HPKE, the suite scribelink.envelope wraps session keys
with); the relay stores and forwards it and cannot read it; the admin opens it with
`scripts/diagnostics open`.

    bundle = "SLDIAG1" || HPKE single-shot seal(gzip(JSON), recipient, info)
    info = "scribelink/v1 diagnostics|" || unit || "|" || request_id

The info binds a bundle to its unit and request: a relay cannot pass one unit's bundle off
as another's, or answer a request with an old bundle.
"""

from __future__ import annotations

import base64
import gzip
import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scribelink import envelope as env

MAGIC = b"SLDIAG1"
MAX_PLAIN_BYTES = 16 << 20


class BundleError(ValueError):
    pass


def info(unit_id: str, request_id: str) -> bytes:
    return b"scribelink/v1 diagnostics|" + unit_id.encode() + b"|" + request_id.encode()


def seal(bundle: dict, *, recipient_b64: str, unit_id: str, request_id: str) -> bytes:
    try:
        recipient = env.load_public_key(base64.b64decode(recipient_b64, validate=True))
    except ValueError as e:
        raise BundleError("the recipient is not a base64 X25519 public key") from e
    plain = gzip.compress(json.dumps(bundle, sort_keys=True).encode(), mtime=0)
    return MAGIC + env.HPKE_SUITE.encrypt(plain, recipient, info=info(unit_id, request_id))


def open_bundle(sealed: bytes, private_key: X25519PrivateKey, *, unit_id: str,
                request_id: str) -> dict:
    if not sealed.startswith(MAGIC):
        raise BundleError("not a Scribelink diagnostics bundle")
    try:
        plain = env.HPKE_SUITE.decrypt(sealed[len(MAGIC):], private_key,
                                       info=info(unit_id, request_id))
    except Exception as e:  # InvalidTag: wrong key, wrong unit/request, altered
        raise BundleError("the bundle does not open with this key for this unit and "
                          "request (wrong key, or altered)") from e
    data = gzip.decompress(plain)
    if len(data) > MAX_PLAIN_BYTES:
        raise BundleError("bundle too large")
    return json.loads(data)
