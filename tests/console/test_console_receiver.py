"""The page's receive rules (js/receiver.js), fed frames sealed here by scribelink's own
envelope code under the vector session's key, in headless Chromium without a relay:
frames before their session_open wait for it, audio is deduplicated on seq (a live repeat
counts as replayed, an archive repeat does not), events are released in order, tampered
frames are counted, declared gaps and the session's close are kept."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from console_support import in_module

from scribelink import envelope as env
from scribelink import messages as msgs

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "envelope.json").read_text())
OPEN = V["session_open"]
KEY = bytes.fromhex(V["session_key"])
SID = bytes.fromhex(OPEN["session"])
T0 = OPEN["started_us"]


def audio(seq: int) -> str:
    pcm = (seq * 1000).to_bytes(2, "little") * 640  # a different level per chunk
    h = env.Header(env.TYPE_AUDIO, SID, seq, T0 + seq * 40_000, OPEN["unit"], sample_count=640)
    return base64.b64encode(env.seal(h, pcm, KEY)).decode()


def event(seq: int, kind: str, at_us: int, **fields) -> str:
    body = json.dumps(msgs.event(kind, at_us=at_us, **fields), separators=(",", ":")).encode()
    h = env.Header(env.TYPE_EVENT, SID, seq, at_us, OPEN["unit"], codec=env.CODEC_NONE,
                   channels=0, sample_rate=0, sample_count=0)
    return base64.b64encode(env.seal(h, body, KEY)).decode()


def test_receive_rules(module_page):
    tampered = bytearray(base64.b64decode(audio(5)))
    tampered[-1] ^= 1
    steps = [
        ["frame", audio(1), "live"],  # before its session_open: held
        ["item", OPEN, "live"],
        ["frame", audio(0), "live"],
        ["frame", audio(1), "live"],  # a live repeat: replayed
        ["frame", audio(2), "archive"],
        ["frame", audio(2), "archive"],  # an archive repeat: nothing to say
        ["frame", event(2, "cue", T0 + 2_000_000, cue_id=1), "live"],
        ["frame", event(0, "session_start", T0), "live"],
        ["frame", event(1, "privacy_pause", T0 + 120_000, audio_seq=3), "live"],
        ["frame", event(3, "privacy_resume", T0 + 5_120_000, audio_seq=3), "live"],
        ["frame", event(1, "privacy_pause", T0 + 120_000, audio_seq=3), "live"],  # replayed
        ["frame", base64.b64encode(bytes(tampered)).decode(), "live"],
        ["frame", base64.b64encode(b"SL\x01junk").decode(), "live"],  # malformed header
        ["item", {"type": "gap", "unit": OPEN["unit"], "session": OPEN["session"],
                  "stream": "audio", "first_seq": 5, "last_seq": 7, "reason": "spool_full"},
         "live"],
        ["item", {"type": "gap", "unit": OPEN["unit"], "session": OPEN["session"],
                  "stream": "audio", "first_seq": 9, "last_seq": 8, "reason": "spool_full"},
         "live"],  # a range that ends before it starts
        ["item", {"type": "session_close", "unit": OPEN["unit"], "session": OPEN["session"],
                  "ended_us": T0 + 9_000_000, "last_audio_seq": 7, "last_event_seq": 3,
                  "reason": "ended"}, "live"],
    ]
    got = in_module(module_page, "/tests/testkit.js", """
        const { b64decode } = await import('/console/js/crypto.js');
        const { rx, log } = await m.recordingReceiver(arg.key);
        for (const [what, x, via] of arg.steps) {
          if (what === "item") rx.sessionItem(x, via); else rx.envelope(b64decode(x), via);
        }
        await rx.chain;
        const s = rx.sessions.get(arg.session);
        return {log, counters: rx.counters, chunks: [...s.chunks.keys()].sort(),
                vias: [...s.chunks.values()].map((c) => c.via).sort(),
                maxSeq: s.maxSeq, lost: [...s.lostAudio].sort(), gaps: s.gaps.length,
                closed: s.close && s.close.reason, events: s.events.map((e) => [e.seq, e.kind, e.t_s]),
                afterPause: s.seqAtTime(5.2), inPause: s.seqAtTime(2.0), duration: s.durationS};""",
        {"key": V["scribe_private_key"], "steps": steps, "session": OPEN["session"]})
    c = got["counters"]
    assert (c["chunks"], c["events"], c["replayed"], c["tampered"], c["malformed"]) == (3, 4, 2, 1, 2)
    assert got["log"][0] == ["open", OPEN["session"]]
    assert got["log"][1] == ["audio", 1, "live"]  # the held frame, once its key was open
    assert got["chunks"] == [0, 1, 2] and got["vias"] == ["archive", "live", "live"]
    # events in their order, whatever order they came in
    assert [e[:2] for e in got["events"]] == [
        [0, "session_start"], [1, "privacy_pause"], [2, "cue"], [3, "privacy_resume"]]
    assert [x for x in got["log"] if x[0] == "event"] == [
        ["event", "session_start", 0], ["event", "privacy_pause", 1], ["event", "cue", 2],
        ["event", "privacy_resume", 3]]
    assert got["lost"] == [5, 6, 7] and got["maxSeq"] == 7 and got["gaps"] == 1
    assert got["closed"] == "ended" and got["duration"] == 9.0
    # after the pause, audio seq 3 plays at the resume's session time (5.12 s)
    assert got["afterPause"] == 3 + 2 and got["inPause"] == 3
