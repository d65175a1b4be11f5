"""scribelink.scribews, the Python owner of the scribe WebSocket's own frames, against
tests/vectors/scribe_ws.json (the vectors the console's js/wsproto.js and the relay are
held to): it builds exactly the vectors' frames and refuses the invalid ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribelink import scribews

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "scribe_ws.json").read_text())
OWN_SERVER = [c for c in V["server"] if c["frame"]["type"] in scribews.FRAME_TYPES]


def test_the_close_codes_are_the_vectors():
    assert V["close_codes"] == {"bad_hello": scribews.CLOSE_BAD_HELLO,
                                "unauthorized": scribews.CLOSE_UNAUTHORIZED,
                                "forbidden": scribews.CLOSE_FORBIDDEN}


@pytest.mark.parametrize("case", [c for c in V["client"] if c["frame"]["type"] == "hello"],
                         ids=lambda c: c["name"])
def test_hello_builds_exactly_the_vector(case):
    a = case["args"]
    units = tuple(a["units"]) if "units" in a else None
    hello = scribews.Hello(token=a["token"], cursor=a["cursor"], units=units,
                           batch=a.get("batch", False))
    assert hello.to_dict() == case["frame"]
    assert scribews.Hello.from_dict(case["frame"]) == hello


@pytest.mark.parametrize("case", OWN_SERVER, ids=lambda c: c["name"])
def test_server_frames_round_trip(case):
    frame = case["frame"]
    assert scribews.FRAMES[frame["type"]].from_dict(frame).to_dict() == frame


def test_every_own_server_type_has_a_vector():
    assert {c["frame"]["type"] for c in OWN_SERVER} == {"welcome", "error", "unit_status"}


@pytest.mark.parametrize(
    "case", [c for c in V["server_invalid"]
             if c["text"].startswith("{") and json.loads(c["text"]).get("type")
             in scribews.FRAME_TYPES], ids=lambda c: c["name"])
def test_invalid_server_frames_are_refused(case):
    d = json.loads(case["text"])
    with pytest.raises(scribews.FrameError):
        scribews.FRAMES[d["type"]].from_dict(d)


@pytest.mark.parametrize("case", [c for c in V["client_invalid"] if c["build"] == "hello"],
                         ids=lambda c: c["name"])
def test_invalid_hellos_are_refused(case):
    with pytest.raises(scribews.FrameError):
        scribews.Hello.from_dict({"type": "hello", **case["args"]})


@pytest.mark.parametrize("case", V["binary"], ids=lambda c: c["name"])
def test_binary_messages_read_as_the_vectors_frames(case):
    got = scribews.parse_binary(bytes.fromhex(case["hex"]))
    assert [{"cursor": c, "envelope_hex": e.hex()} for c, e in got] == case["frames"]


@pytest.mark.parametrize("case", [c for c in V["binary"] if len(c["frames"]) > 1
                                  or c["hex"].startswith("00")], ids=lambda c: c["name"])
def test_the_relay_builds_exactly_the_vectors_messages(case):
    frames = [scribews.binary_frame(f["cursor"], bytes.fromhex(f["envelope_hex"]))
              for f in case["frames"]]
    assert scribews.batch_message(frames).hex() == case["hex"]


@pytest.mark.parametrize("case", V["binary_invalid"], ids=lambda c: c["name"])
def test_invalid_binary_messages_are_refused_whole(case):
    with pytest.raises(scribews.FrameError):
        scribews.parse_binary(bytes.fromhex(case["hex"]))
