"""The enrolment code (scribelink/enrolcode.py): the vectors byte for byte, the layout
recomputed with the standard library, forgiving reading of hand-typed codes, refusals that
say what to do, room for fields a later version adds, and a QR that holds it compactly."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from scribelink import enrolcode

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" /
                      "enrolment_codes.json").read_text())


def from_fields(fields: dict) -> enrolcode.EnrolCode:
    f = dict(fields)
    f["secret"] = bytes.fromhex(f["secret"])
    if "recovery_public_key" in f:
        f["recovery_public_key"] = bytes.fromhex(f["recovery_public_key"])
    return enrolcode.EnrolCode(**f)


@pytest.mark.parametrize("v", VECTORS["codes"], ids=lambda v: v["name"])
def test_codes_encode_and_decode_as_the_vectors_say(v):
    code = from_fields(v["fields"])
    assert code.payload().hex() == v["payload_hex"]
    assert code.text() == v["text"]
    assert enrolcode.parse(v["text"]) == code
    assert code.proof() == v["proof"] and code.enrolment_id() == v["enrolment_id"]
    assert enrolcode.proof_hash(code.proof()) == v["proof_hash"]


@pytest.mark.parametrize("v", VECTORS["codes"], ids=lambda v: v["name"])
def test_vectors_follow_the_written_layout(v):
    """Recompute every part from the spec with the standard library and cryptography."""
    text = v["text"]
    assert text.startswith("SL:")
    b32 = text[3:].replace("-", "")
    assert all(len(g) == 5 for g in text[3:].split("-")[:-1])
    raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    assert raw.hex() == v["payload_hex"]
    body, crc = raw[:-4], struct.unpack(">I", raw[-4:])[0]
    assert zlib.crc32(body) == crc and body[0] == 1
    fields, i = {}, 1
    while i < len(body):
        tag, length = body[i], body[i + 1]  # every vector field is shorter than 128 bytes
        fields[tag] = body[i + 2:i + 2 + length]
        i += 2 + length
    secret = bytes.fromhex(v["fields"]["secret"])
    assert fields[0x01] == secret and fields[0x06].decode() == v["fields"]["unit_id"]
    assert fields[0x05].decode() == v["fields"]["room"]
    relay = v["fields"]["relay_url"]
    assert fields[0x02].decode() == relay.removeprefix("https://")  # the usual scheme elided
    proof = HKDF(hashes.SHA256(), 32, None, b"scribelink enrol v1 proof").derive(secret)
    assert proof.hex() == v["proof"]
    assert hashlib.sha256(proof.hex().encode()).hexdigest() == v["proof_hash"]
    assert proof.hex() not in text and secret.hex() not in v["proof_hash"]


@pytest.mark.parametrize("v", VECTORS["accepted"], ids=lambda v: v["name"])
def test_readable_variants_are_accepted(v):
    want = next(from_fields(c["fields"]) for c in VECTORS["codes"] if c["name"] == v["fields_as"])
    assert enrolcode.parse(v["text"]) == want


@pytest.mark.parametrize("v", VECTORS["refused"], ids=lambda v: v["name"])
def test_bad_codes_are_refused_with_what_to_do(v):
    with pytest.raises(enrolcode.EnrolCodeError) as e:
        enrolcode.parse(v["text"])
    assert v["error"] in e.value.message and e.value.action


def test_an_unknown_optional_field_survives_a_round_trip():
    v = next(a for a in VECTORS["accepted"] if "optional" in a["name"])
    code = enrolcode.parse(v["text"])
    assert code.unknown == ((0x40, b"abc"),)
    assert enrolcode.parse(code.text()).unknown == code.unknown


def test_the_qr_holds_the_code_in_alphanumeric_mode():
    import segno

    code = from_fields(VECTORS["codes"][0]["fields"])
    qr = segno.make(code.text(), error="m")
    assert qr.mode == "alphanumeric" and qr.version <= 10


def test_printing_a_code_never_shows_its_secret():
    code = from_fields(VECTORS["codes"][0]["fields"])
    assert code.secret.hex() not in repr(code) and code.secret.hex() not in str(code)


texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(room=texts, clinic=texts, unit=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
       expires=st.none() | st.integers(0, 2**32 - 1), port=st.integers(1, 65535))
def test_any_code_reads_back_and_any_one_typo_is_caught(room, clinic, unit, expires, port):
    code = enrolcode.EnrolCode.new(relay_url=f"https://relay.example:{port}",
                                   broker_url=f"mqtts://broker.example:{port}", clinic=clinic,
                                   room=room, unit_id=unit, expires_at=expires)
    text = code.text()
    assert enrolcode.parse(text) == code
    i = 3 + (hash(room) % (len(text) - 3))
    if text[i] != "-":
        typo = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1:]
        with pytest.raises(enrolcode.EnrolCodeError):
            enrolcode.parse(typo)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400))
def test_garbage_never_crashes_the_reader(data):
    text = data if isinstance(data, str) else "SL:" + base64.b32encode(data).decode()
    try:
        enrolcode.parse(text)
    except enrolcode.EnrolCodeError:
        pass
