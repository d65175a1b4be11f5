"""The console decodes Opus chunks (js/codec.js on WebCodecs' AudioDecoder, in the system
Chromium) as the Python reference does (scribelink/codec.py): the body layout exactly,
the decoded audio within decoder tolerance, in order, across a concealed hole, across a
long hole and when joining mid-stream. Vectors: tests/vectors/opus_chunks.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from console_support import in_module

V = json.loads((Path(__file__).parents[2] / "tests" / "vectors" / "opus_chunks.json").read_text())

DECODE = """
const crypto = await import('/console/js/crypto.js');
const key = await crypto.importSessionKey(crypto.fromHex(arg.key));
const byseq = new Map(arg.chunks.map((c) => [c.seq, c]));
const dec = new m.OpusChunkDecoder();
const out = [];
for (const seq of arg.seqs) {
  const c = byseq.get(seq);
  const { header, body } = await crypto.openEnvelope(crypto.b64decode(c.frame), key);
  const d = await dec.decode(body, header.sampleCount, header.seq);
  out.push({ seq, codec: header.codec, pcm: crypto.b64encode(new Uint8Array(d.pcm.slice().buffer)),
             concealed: crypto.b64encode(new Uint8Array(d.concealed.slice().buffer)) });
}
dec.close();
return { out, resets: dec.resets, concealedFrames: dec.concealedFrames,
         supported: await m.opusSupported() };
"""


def pcm(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), "<i2").astype(float)


@pytest.mark.parametrize("name", ["in_order", "holes", "join_mid_stream"])
def test_the_browser_decodes_each_scenario_like_the_reference(module_page, name):
    scenario = V["scenarios"][name]
    r = in_module(module_page, "codec.js", DECODE, {
        "key": V["session_key"], "chunks": V["chunks"], "seqs": [i["seq"] for i in scenario]})
    assert r["supported"]
    want, got = [], []
    for item, o in zip(scenario, r["out"], strict=True):
        assert o["codec"] == 2
        assert len(pcm(o["pcm"])) == len(pcm(item["pcm"]))  # exactly the chunk's samples
        assert len(pcm(o["concealed"])) == item["concealed_samples"]
        want += [pcm(item["concealed"]), pcm(item["pcm"])]
        got += [pcm(o["concealed"]), pcm(o["pcm"])]
    want_all, got_all = np.concatenate(want), np.concatenate(got)
    # Chromium decodes at 48 kHz and js/codec.js takes it to 16 kHz: a fixed small delay,
    # then the same signal (libopus both sides; the residue is the two resampling paths)
    d = 7
    a, b = want_all[:-d], got_all[d:]
    snr = 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))
    assert snr > 20, f"{name}: browser vs reference {snr:.1f} dB"
    if name == "holes":
        assert (r["concealedFrames"], r["resets"]) == (2, 1)


def test_the_body_layout_matches_the_reference_exactly(module_page):
    r = in_module(module_page, "codec.js", """
        const crypto = await import('/console/js/crypto.js');
        const packets = m.unpackPackets(crypto.b64decode(arg.body)).map((p) => crypto.b64encode(p));
        const refused = [];
        for (const c of arg.malformed) {
          try { m.unpackPackets(crypto.b64decode(c.body)); refused.push(false); }
          catch (e) { refused.push(e instanceof m.CodecError); }
        }
        return { packets, refused };""", V["layout"])
    assert r["packets"] == V["layout"]["packets"]
    assert r["refused"] == [True] * len(V["layout"]["malformed"])


def test_the_receiver_stores_decoded_audio_and_counts_an_undecodable_body(module_page):
    """Through js/receiver.js, as the live path: an Opus body that authenticates but does
    not decode is counted malformed; the rest of the session decodes."""
    r = in_module(module_page, "receiver.js", """
        const crypto = await import('/console/js/crypto.js');
        const key = await crypto.importSessionKey(crypto.fromHex(arg.key));
        const rx = new m.Receiver({ keyId: 'x' }, {});
        const open = { session: arg.session, unit: arg.unit, sample_rate: 16000, chunk_ms: 40,
            started_us: 1 };
        // a session the trust checks have let in (js/receiver.js _start does the same)
        const s = new m.SessionState(open, key, { via: 'wrap' });
        rx.sessions.set(s.session, s);
        for (const c of arg.frames) await rx.envelope(crypto.b64decode(c), 'live');
        return { counters: rx.counters, stored: [...s.chunks.keys()],
                 lengths: [...s.chunks.values()].map((c) => c.pcm.length) };""", {
        "key": V["session_key"], "session": V["session"], "unit": V["unit_id"],
        "frames": [c["frame"] for c in V["chunks"][:5]] + [_sealed_garbage()]})
    assert r["counters"]["malformed"] == 1 and r["counters"]["chunks"] == 5
    assert r["stored"] == [0, 1, 2, 3, 4] and r["lengths"] == [640] * 5


def _sealed_garbage() -> str:
    from scribelink import codec as codecs
    from scribelink import envelope as env

    h = env.Header(env.TYPE_AUDIO, bytes.fromhex(V["session"]), 5, 2, V["unit_id"],
                   codec=env.CODEC_OPUS, sample_count=640)
    body = codecs.pack_packets([b"\x48\x01"])  # one packet where two belong
    return base64.b64encode(env.seal(h, body, bytes.fromhex(V["session_key"]))).decode()
