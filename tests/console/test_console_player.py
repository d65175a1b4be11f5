"""The player's worklet (js/worklet.js) rendered offline in headless Chromium: at 1x it
plays the samples it was given, exactly; at 1.5x and 2x it plays them faster with the
pitch kept (WSOLA), so a 440 Hz tone stays at 440 Hz and lasts 1/1.5 as long; and the
position it reports runs at the chosen speed."""

from __future__ import annotations

import numpy as np
import pytest

#: The worklet's reports are port messages, delivered to the page some time after the
#: rendering that sent them (on a loaded machine, after startRendering() has resolved):
#: wait until none has come for 300 ms (at most 10 s) before reading them.
DRAIN = """
        const drain = async (list) => {
          for (let k = 0, seen = -1; k < 100 && seen !== list.length; k++) {
            seen = list.length;
            await new Promise((r) => setTimeout(r, 300));
          }
        };"""


def render(page, static_console: str, *, rate: float, seconds: float, tone_hz: float,
           out_s: float) -> dict:
    return page.evaluate("""async (a) => {""" + DRAIN + """
        const sr = 16000;
        const ctx = new OfflineAudioContext({numberOfChannels: 1, length: Math.round(a.out_s * sr),
            sampleRate: sr});
        await ctx.audioWorklet.addModule(a.base + '/console/js/worklet.js');
        const node = new AudioWorkletNode(ctx, 'scribe-player', {outputChannelCount: [1]});
        node.connect(ctx.destination);
        const ticks = [];
        node.port.onmessage = (e) => ticks.push([e.data.pos, e.data.at]);
        // render one quantum, then hold the clock while the blocks reach the audio thread
        // (port messages arrive asynchronously; offline rendering would run past them)
        const held = ctx.suspend(128 / sr).then(async () => {
          node.port.postMessage({type: 'reset', mode: 'replay'});
          if (a.rate !== 1) node.port.postMessage({type: 'rate', rate: a.rate});
          const n = Math.round(a.seconds * sr);
          const x = new Float32Array(n);
          for (let i = 0; i < n; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * a.tone * i / sr);
          for (let o = 0; o < n; o += 640) {
            node.port.postMessage({type: 'push', data: x.slice(o, o + 640), pos: o});
          }
          await new Promise((r) => setTimeout(r, 300));
          await ctx.resume();
        });
        const buf = await ctx.startRendering();
        await held;
        await drain(ticks);
        return {out: Array.from(buf.getChannelData(0)), ticks};
    }""", {"base": static_console, "rate": rate, "seconds": seconds, "tone": tone_hz,
           "out_s": out_s})


def dominant_hz(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_at_1x_the_worklet_plays_exactly_what_it_was_given(module_page, static_console):
    got = render(module_page, static_console, rate=1, seconds=1.0, tone_hz=440, out_s=1.2)
    out = np.asarray(got["out"], dtype=np.float32)
    nz = np.flatnonzero(np.abs(out) > 1e-6)
    start = nz[0]
    want = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    # the first sample (sin 0 = 0) is indistinguishable from silence: line up on the second
    assert np.allclose(out[start - 1:start - 1 + 16000], want, atol=1e-6)


@pytest.mark.parametrize("rate", [1.5, 2.0])
def test_faster_keeps_the_pitch_and_shortens_the_time(module_page, static_console, rate):
    seconds = 3.0
    got = render(module_page, static_console, rate=rate, seconds=seconds, tone_hz=440,
                 out_s=seconds / rate + 0.6)
    out = np.asarray(got["out"], dtype=np.float32)
    loud = np.flatnonzero(np.abs(out) > 0.05)
    played_s = (loud[-1] - loud[0]) / 16000
    assert abs(played_s - seconds / rate) < 0.12, played_s
    mid = out[loud[0] + 1600:loud[0] + 1600 + 8192]
    assert abs(dominant_hz(mid) - 440) < 8  # not 440 * rate: the pitch is kept
    # a clean tone: the stretch adds little besides it (overlap-add of matched waveforms)
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid)))) ** 2
    k = int(440 * len(mid) / 16000)
    assert spec[k - 6:k + 7].sum() / spec.sum() > 0.97
    # the position the worklet reports runs at the chosen speed
    # (while there is input left to play: past its end the position stands still)
    ticks = [(p, t) for p, t in got["ticks"] if 0 < p < 0.8 * seconds * 16000]
    (p0, t0), (p1, t1) = ticks[2], ticks[-1]
    assert abs((p1 - p0) / 16000 / (t1 - t0) - rate) < 0.1


def test_ticks_from_before_a_reset_do_not_move_the_position(module_page, static_console):
    """The worklet's position reports are asynchronous: one sent while live playback was
    still running can arrive after the page has reset to a replay. Each tick carries the
    epoch of the last reset the worklet took, and the player keeps only current ones
    (a stale tick once put "play what you missed" at the live edge)."""
    got = module_page.evaluate("""async (a) => {""" + DRAIN + """
        const sr = 16000;
        const ctx = new OfflineAudioContext({numberOfChannels: 1, length: sr, sampleRate: sr});
        await ctx.audioWorklet.addModule(a.base + '/console/js/worklet.js');
        const node = new AudioWorkletNode(ctx, 'scribe-player',
            {outputChannelCount: [1], processorOptions: {epoch: 4}});
        node.connect(ctx.destination);
        const epochs = [];
        node.port.onmessage = (e) => epochs.push(e.data.epoch);
        const held = ctx.suspend(0.25).then(async () => {
          node.port.postMessage({type: 'reset', mode: 'replay', epoch: 5});
          node.port.postMessage({type: 'push', data: new Float32Array(8000), pos: 0});
          await new Promise((r) => setTimeout(r, 300));
          await ctx.resume();
        });
        await ctx.startRendering();
        await held;
        await drain(epochs);
        const {Player} = await import(a.base + '/console/js/player.js');
        const p = new Player({onTick: () => {}, fetchRange: async () => {}});
        p.epoch = 5;
        p.playedSample = 100;
        const tick = (epoch, pos) => p._tick({type: 'tick', epoch, pos, peak: 0, rms: 0});
        tick(4, 90000);
        const afterStale = p.playedSample;
        tick(5, 200);
        return {epochs, afterStale, afterCurrent: p.playedSample};
    }""", {"base": static_console})
    assert got["epochs"][0] == 4 and got["epochs"][-1] == 5  # the worklet's, then the reset's
    assert got["epochs"] == sorted(got["epochs"])
    assert got["afterStale"] == 100  # the stale tick changed nothing
    assert got["afterCurrent"] == 200
