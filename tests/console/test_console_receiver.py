"""The page's receive rules (js/receiver.js), in headless Chromium without a relay.

Held to the reference receiver (cloud_relay/receiver.py) through tests/vectors/trust.json:
a signed session with late, replayed and forged items, forged and edited session opens, a
gap the relay widened, a close it cut short, a device that joins mid-session; the same
counters and the same verdict on completeness, for the first device, the one that joins,
and with the unit's key revoked. Then the rules the page adds for playing: frames before
their open wait for it, a live repeat counts, an archive repeat does not, events come out in
order, a hostile gap is a range, and a reply from an endorsed device is opened and checked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from console_support import in_module
from trustkit import Clinic

from edge_agent.session import gap_message
from scribelink import messages as msgs
from scribelink import trust

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "trust.json").read_text())


def feed(page, private_b64: str, steps: list, *, authority: str, devices=(), revocations=None,
         extra: str = "return {};"):
    """Feed `steps` ([what, x, via]; what: item | frame) to a recording receiver."""
    return in_module(page, "/tests/testkit.js", """
        const { b64decode } = await import('/console/js/crypto.js');
        const { rx, log } = await m.recordingReceiver(arg.key, {authority: arg.authority,
            devices: arg.devices, revocations: arg.revocations});
        for (const [what, x, via] of arg.steps) {
          if (what === "item") rx.sessionItem(x, via); else rx.envelope(b64decode(x), via);
        }
        await rx.chain;
        const more = await (async () => { """ + extra + """ })();
        return {log, counters: rx.counters, more,
                complete: [...rx.sessions.values()].filter((s) => s.complete).map((s) => s.session),
                refused: Object.fromEntries(rx.refused)};""",
        {"key": private_b64, "steps": steps, "authority": authority, "devices": list(devices),
         "revocations": revocations})


def vector_steps() -> list:
    return [["item", it["item"], "live"] if "item" in it else ["frame", it["frame"], "live"]
            for it in V["session"]["items"]]


@pytest.mark.parametrize("who,revoked", [("a", False), ("b", False), ("a", True)])
def test_the_page_gives_the_reference_receivers_verdicts(module_page, who, revoked):
    s = V["session"]
    got = feed(module_page, V["devices"][who]["enc_private"], vector_steps(),
               authority=V["authority"]["public"],
               revocations=s["revoked_from"] if revoked else None)
    want = s["reference_a_revoked" if revoked else f"reference_{who}"]
    for k, v in want["counters"].items():
        assert got["counters"][k] == v, (k, got["counters"], want["counters"])
    assert got["complete"] == want["complete"]
    events = [x[1:] for x in got["log"] if x[0] == "event"]
    assert [[seq, kind] for kind, seq in events] == want["events"]
    # every refused open says why, in words
    assert len(got["refused"]) == (4 if revoked else 3)
    whys = " / ".join(r["why"] for r in got["refused"].values())
    assert ("revoked" in whys) if revoked else ("signature" in whys and "bound to" in whys), whys


# ---------------------------------------------------------------------- the page's own rules


@pytest.fixture(scope="module")
def signed():
    """A session of a unit the test clinic enrolled, sealed to one device of `scribe-t`."""
    clinic = Clinic()
    unit = clinic.unit("unit-t", "Exam T")
    dev = clinic.device("scribe-t")
    sess = clinic.session(unit, [dev], session_key=bytes(range(32)), session_id=bytes(16),
                          started_us=1_790_000_000_000_000, room="Exam T")
    return clinic, unit, dev, sess


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_receive_rules(module_page, signed):
    clinic, unit, dev, s = signed
    t0 = s.started_us
    frames = {}
    for seq in range(8):
        pcm = np.full(640, seq * 1000, "<i2")  # a different level per chunk
        q, f = s.seal_audio(pcm, t0 + seq * 40_000)
        frames[q] = b64(f)
    ev = {}
    for kind, at, fields in (("session_start", t0, {}), ("privacy_pause", t0 + 120_000,
                                                         {"audio_seq": 3}),
                             ("cue", t0 + 2_000_000, {"cue_id": 1}),
                             ("privacy_resume", t0 + 5_120_000, {"audio_seq": 3})):
        q, f = s.seal_event(kind, at, **fields)
        ev[q] = b64(f)
    tampered = bytearray(base64.b64decode(frames[5]))
    tampered[-1] ^= 1
    open_msg = s.open_message().to_dict()
    gap = gap_message("unit-t", s.hex, "audio", 5, 7, "spool_full", t0 + 9_000_000,
                      unit.signer).to_dict()
    hostile = gap_message("unit-t", s.hex, "audio", 8, 2**40, "spool_full", t0 + 9_000_000,
                          unit.signer).to_dict()
    close = s.close_message(t0 + 9_000_000).to_dict()
    close = {**close, "last_audio_seq": 7}
    close["sig"] = trust.sign_message("session_close", close, unit.key)
    # a reply to the cue from the scribe's device, as the relay keeps it in the stream
    sealed = trust.seal_reply(s.key, unit="unit-t", session_hex=s.hex, cue_id=1, reply="got_it",
                              at_us=t0 + 3_000_000, device_key=dev.sign)
    ack = {**msgs.CueAck(unit="unit-t", session=s.hex, sealed=sealed).to_dict(), "cursor": 99}
    stranger = clinic.device("scribe-t")  # endorsed, but not among the devices given the page
    fake_ack = {**msgs.CueAck(unit="unit-t", session=s.hex, sealed=trust.seal_reply(
        s.key, unit="unit-t", session_hex=s.hex, cue_id=1, reply="seen", at_us=t0,
        device_key=stranger.sign)).to_dict(), "cursor": 100}
    steps = [
        ["frame", frames[1], "live"],  # before its session_open: held
        ["item", {**open_msg, "cursor": 1}, "live"],
        ["frame", frames[0], "live"],
        ["frame", frames[1], "live"],  # a live repeat: replayed
        ["frame", frames[2], "archive"],
        ["frame", frames[2], "archive"],  # an archive repeat: nothing to say
        ["frame", ev[2], "live"],
        ["frame", ev[0], "live"],
        ["frame", ev[1], "live"],
        ["frame", ev[3], "live"],
        ["frame", ev[1], "live"],  # replayed
        ["frame", b64(bytes(tampered)), "live"],
        ["frame", b64(b"SL\x01junk"), "live"],  # malformed header
        ["item", {**gap, "cursor": 2, "received_us": t0}, "live"],
        ["item", {**gap, "first_seq": 9, "last_seq": 8, "cursor": 3}, "live"],  # malformed
        ["frame", frames[3], "live"], ["frame", frames[4], "live"],
        ["item", {**hostile, "cursor": 4}, "live"],  # signed, over 2**40 chunks: a range
        ["item", ack, "live"],
        ["item", fake_ack, "live"],  # an endorsed device the page was not told of
        ["item", {**close, "cursor": 5}, "live"],
    ]
    got = feed(module_page, b64(dev.enc.private_bytes_raw()), steps,
               authority=clinic.authority.public_b64(), devices=[dev.endorsement], extra="""
        const s = rx.sessions.get(arg.steps[1][1].session);
        return {chunks: [...s.chunks.keys()].sort(),
                vias: [...s.chunks.values()].map((c) => c.via).sort(),
                maxSeq: s.maxSeq, ranges: s.lostRanges, gaps: s.gaps.length,
                    closed: s.close && s.close.reason,
                events: s.events.map((e) => [e.seq, e.kind, e.t_s]), replies: s.replies,
                afterPause: s.seqAtTime(5.2), inPause: s.seqAtTime(2.0), duration: s.durationS,
                complete: s.complete, lost6: s.isLost(6), lost2: s.isLost(2)};""")
    c, more = got["counters"], got["more"]
    assert (c["chunks"], c["events"], c["replayed"], c["tampered"], c["malformed"],
            c["forged"], c["replies"]) == (5, 4, 2, 1, 2, 1, 1), c
    assert got["log"][0] == ["open", s.hex]
    assert got["log"][1] == ["audio", 1, "live"]  # the held frame, once its key was open
    assert more["chunks"] == [0, 1, 2, 3, 4] and more["vias"].count("archive") == 1
    # events in their order, whatever order they came in
    assert [e[:2] for e in more["events"]] == [
        [0, "session_start"], [1, "privacy_pause"], [2, "cue"], [3, "privacy_resume"]]
    assert more["ranges"] == [[5, 7], [8, 2**40]] and more["gaps"] == 2
    assert more["lost6"] and not more["lost2"]
    assert more["maxSeq"] < 40_000  # the hostile gap did not stretch the timeline to 2**40
    assert more["closed"] == "ended" and more["duration"] == 9.0 and more["complete"]
    assert [(r["cue_id"], r["reply"], r["kind"], r["scribe"]) for r in more["replies"]] == [
        (1, "got_it", "person", "scribe-t")]
    # after the pause, audio seq 3 plays at the resume's session time (5.12 s)
    assert more["afterPause"] == 3 + 2 and more["inPause"] == 3
