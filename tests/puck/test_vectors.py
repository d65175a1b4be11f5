"""tests/vectors/puck_frames.json: every frame decodes to its stated meaning, encoding the
meaning gives the same bytes, and the invalid ones are dropped."""

import json
import struct
from pathlib import Path

import pytest

from scribelink import pucklink

ROOT = Path(__file__).resolve().parents[2]

VECTORS = json.loads((ROOT / "tests" / "vectors" / "puck_frames.json").read_text())


def decode_body(mtype, body):
    if mtype == pucklink.MSG_HEARTBEAT:
        state, seen = struct.unpack(">BI", body)
        return {"state": pucklink.STATE_NAMES[state], "peer_nonce_seen": seen}
    if mtype == pucklink.MSG_ACK:
        n, s = struct.unpack(">IH", body)
        return {"acked_nonce": n, "acked_seq": s}
    if mtype in (pucklink.MSG_PING, pucklink.MSG_PONG):
        return {"token": struct.unpack(">I", body)[0]}
    if mtype == pucklink.MSG_CUE:
        return {"cue_no": struct.unpack(">H", body)[0]}
    if mtype in (
        pucklink.MSG_PRIVACY_TOGGLE,
        pucklink.MSG_PRESENCE_HOLD,
        pucklink.MSG_HOLD_RELEASED,
    ):
        return {"held_ms": struct.unpack(">I", body)[0]}
    if mtype == pucklink.MSG_CUE_SEEN:
        n, c = struct.unpack(">IH", body[:6])
        if len(body) == 6:  # an agent from before replies: "seen"
            return {"puck_nonce": n, "cue_no": c}
        (code,) = struct.unpack(">B", body[6:])
        return {"puck_nonce": n, "cue_no": c, "reply": pucklink.REPLIES[code]}
    if mtype == pucklink.MSG_CONSENT_WANTED:
        return {"wanted": body == b"\x01"}
    if mtype == pucklink.MSG_CONSENT:
        assert body == bytes([pucklink.CONSENT_GIVEN])
        return {"state": "given"}
    if mtype == pucklink.MSG_IDENTIFY:
        return {"duration_ms": struct.unpack(">I", body)[0]}
    if mtype == pucklink.MSG_PRESENCE_WANTED:
        return {"timeout_ms": struct.unpack(">I", body)[0]}
    assert body == b""
    return {}


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["type"])
def test_frame_vector(vec):
    wire = bytes.fromhex(vec["hex"])
    frames = pucklink.FrameReader().feed(wire)
    assert len(frames) == 1
    mtype, nonce, seq, body = frames[0]
    assert pucklink.MSG_NAMES[mtype] == vec["type"] and mtype == vec["type_code"]
    assert (nonce, seq, body.hex()) == (vec["nonce"], vec["seq"], vec["body_hex"])
    decoded = decode_body(mtype, body)
    if mtype == pucklink.MSG_CUE:
        decoded["cue_id"] = pucklink.cue_id(nonce, decoded["cue_no"])
    assert decoded == vec["decoded"]
    assert pucklink.encode_frame(mtype, nonce, seq, body) == wire


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["description"][:20])
def test_invalid_vector_is_dropped(vec):
    reader = pucklink.FrameReader()
    assert reader.feed(bytes.fromhex(vec["hex"])) == []
    assert reader.bad_frames == 1


def test_vectors_cover_every_message_type():
    assert {v["type_code"] for v in VECTORS["frames"]} == set(pucklink.MSG_NAMES)
