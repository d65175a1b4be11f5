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
    hello = scribews.Hello(token=a["token"], cursor=a["cursor"], units=units)
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
