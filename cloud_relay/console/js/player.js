// Playback controller: one AudioContext at the session's rate, one worklet, a volume, and two
// modes. "live" plays the heard session's newest chunks as they arrive; "replay" plays from a
// position in the session's decoded store at the chosen speed (1x-2x, pitch kept by the
// worklet), fetching from the archive what is not here yet, and falls back to live at 1x
// when it catches up with the live edge. The player is independent of the room on screen:
// the scribe can look at another room while this one keeps playing.

const AHEAD_S = 1.0;
const PUMP_MS = 40;
// a replay within this much of the last sample fed, with nothing newer to feed, is at the
// live edge (the stretcher holds back about a frame it cannot finish without more input)
const CAUGHT_UP_S = 0.15;
export const SPEEDS = Object.freeze([1, 1.25, 1.5, 1.75, 2]);

export class Player {
  constructor({ onTick, fetchRange, onCaughtUp = () => {} }) {
    this.onTick = onTick;
    this.fetchRange = fetchRange; // (session, fromSeq) -> Promise
    this.onCaughtUp = onCaughtUp; // (session): a replay reached the live edge and went live
    this.ctx = null;
    this.node = null;
    this.gain = null;
    this.volume = 1;
    this.speed = 1; // replay speed; live is always 1x
    this.session = null;
    this.mode = "stopped"; // stopped | live | replay
    this.paused = false;
    this.epoch = 0; // resets sent to the worklet: its ticks from before the last are stale
    this.fedSample = 0; // replay: session sample index of the next sample to feed
    this.playedSample = 0;
    this.lastLiveSeq = -1;
    this.level = { peak: 0, rms: 0 };
    this.stats = { buffered: 0, target: 0, underruns: 0, dropped: 0, rate: 1 };
    this.pumpTimer = null;
    this.fetching = false;
  }

  async ensure(sampleRate) {
    if (this.ctx && this.ctx.sampleRate === sampleRate) {
      if (this.ctx.state !== "running") await this.ctx.resume();
      return;
    }
    if (this.ctx) await this.ctx.close();
    this.ctx = new AudioContext({ sampleRate, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, "scribe-player", {
      outputChannelCount: [1], processorOptions: { epoch: this.epoch } });
    this.gain = this.ctx.createGain();
    this.gain.gain.value = this.volume;
    this.node.connect(this.gain).connect(this.ctx.destination);
    this.node.port.onmessage = (e) => this._tick(e.data);
    await this.ctx.resume();
  }

  _tick(m) {
    // a tick sent before the worklet took our last reset speaks of what played before it
    if (m.type !== "tick" || m.epoch !== this.epoch) return;
    if (m.pos >= 0) this.playedSample = m.pos;
    this.level = { peak: m.peak, rms: m.rms };
    this.stats = { buffered: m.buffered, target: m.target, underruns: m.underruns, dropped: m.dropped, playing: m.playing, rate: m.rate };
    this.onTick?.(this);
  }

  get positionS() {
    if (!this.session) return 0;
    const s = this.session;
    const seq = Math.floor(this.playedSample / s.chunkSamples);
    return s.timeOfSeq(seq) + (this.playedSample - seq * s.chunkSamples) / s.sampleRate;
  }

  /** Seconds behind the live edge of an open session being replayed (0 when live). */
  get behindS() {
    const s = this.session;
    if (!s || this.mode !== "replay" || s.close) return 0;
    return Math.max(0, s.liveEdgeS - this.positionS);
  }

  setVolume(v) {
    this.volume = Math.min(1, Math.max(0, v));
    if (this.gain) this.gain.gain.setTargetAtTime(this.volume, this.ctx.currentTime, 0.02);
  }

  /** The replay speed (1x-2x): applies now if replaying, else to the next replay. */
  async setSpeed(speed) {
    this.speed = Math.min(2, Math.max(1, speed));
    if (this.mode === "replay" && this.session) {
      const s = this.session;
      await this.replay(s, Math.floor(this.playedSample / s.chunkSamples) * s.chunkSamples, this.speed);
    }
  }

  async live(session) {
    await this.ensure(session.sampleRate);
    this._stopPump();
    this.session = session;
    this.mode = "live";
    this.paused = false;
    this.node.port.postMessage({ type: "reset", mode: "live", epoch: ++this.epoch });
    this.node.port.postMessage({ type: "pause", paused: false });
    this.lastLiveSeq = session.maxSeq;
  }

  /** A chunk arrived on the live stream; play it if it is the newest of the live session.
   * `concealed`: Opus' concealment of a short hole just before it, played in its place. */
  pushLive(session, seq, pcm, concealed) {
    if (this.mode !== "live" || session !== this.session || seq <= this.lastLiveSeq) return;
    this.lastLiveSeq = seq;
    if (this.paused) return;
    const pos = seq * session.chunkSamples;
    if (concealed && concealed.length) {
      this.node.port.postMessage({ type: "push", data: toFloat(concealed), pos: pos - concealed.length });
    }
    this.node.port.postMessage({ type: "push", data: toFloat(pcm), pos });
  }

  /** Play from session sample `startSample` (chunk-aligned by the caller) at `speed`. */
  async replay(session, startSample, speed = this.speed) {
    await this.ensure(session.sampleRate);
    this._stopPump();
    this.speed = Math.min(2, Math.max(1, speed));
    this.session = session;
    this.mode = "replay";
    this.paused = false;
    this.fedSample = startSample;
    this.playedSample = startSample;
    this.node.port.postMessage({ type: "reset", mode: "replay", epoch: ++this.epoch });
    this.node.port.postMessage({ type: "rate", rate: this.speed });
    this.node.port.postMessage({ type: "pause", paused: false });
    this.pumpTimer = setInterval(() => this._pump(), PUMP_MS);
    await this._pump();
  }

  async _pump() {
    const s = this.session;
    if (this.mode !== "replay" || !s || this.paused) return;
    const ahead = this.fedSample - this.playedSample;
    const fedBefore = this.fedSample;
    const aheadWant = AHEAD_S * this.speed * s.sampleRate;
    if (ahead > aheadWant) return;
    const seq = Math.floor(this.fedSample / s.chunkSamples);
    const off = this.fedSample - seq * s.chunkSamples;
    const want = Math.ceil(aheadWant / s.chunkSamples) + 1;
    const got = s.samplesFrom(seq, want);
    for (const [i, c] of got.entries()) {
      const pcm = i === 0 && c.seq === seq ? c.pcm.subarray(off) : c.pcm;
      const pos = c.seq * s.chunkSamples + (i === 0 && c.seq === seq ? off : 0);
      this.node.port.postMessage({ type: "push", data: toFloat(pcm), pos });
      this.fedSample = c.seq * s.chunkSamples + c.pcm.length;
    }
    const nextSeq = Math.floor(this.fedSample / s.chunkSamples);
    if (got.length < want && nextSeq <= s.maxSeq && !this.fetching) {
      // not decoded here yet: fetch that stretch from the archive
      this.fetching = true;
      try {
        await this.fetchRange(s, nextSeq);
      } finally {
        this.fetching = false;
      }
    } else if (nextSeq > s.maxSeq && !s.close && ahead <= CAUGHT_UP_S * s.sampleRate
               && this.fedSample - fedBefore <= 2 * s.chunkSamples) {
      // caught up with the live edge: live again, at 1x. Everything there is has been fed,
      // the worklet held no more than CAUGHT_UP_S before this pump, and this pump fed at
      // most two chunks (a burst is played out at speed, not handed to live mode, which
      // would skip it). Not only on a pump that found nothing new: with a chunk arriving
      // every pump, that waited on network jitter, once 22 s of 1.5x starving at the edge.
      // What this pump fed goes to live mode, not dropped with the replay's buffer.
      await this.live(s);
      for (const [i, c] of got.entries()) {
        const skip = i === 0 && c.seq === seq ? off : 0;
        this.node.port.postMessage({ type: "push", data: toFloat(c.pcm.subarray(skip)), pos: c.seq * s.chunkSamples + skip });
      }
      this.onCaughtUp(s);
    }
  }

  setPaused(paused) {
    this.paused = paused;
    this.node?.port.postMessage({ type: "pause", paused });
    if (!paused && this.mode === "live") this.node?.port.postMessage({ type: "reset", mode: "live", epoch: ++this.epoch });
  }

  stop() {
    this._stopPump();
    this.mode = "stopped";
    this.session = null;
    this.node?.port.postMessage({ type: "reset", epoch: ++this.epoch });
  }

  _stopPump() {
    if (this.pumpTimer) clearInterval(this.pumpTimer);
    this.pumpTimer = null;
  }
}

function toFloat(pcm) {
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
  return f;
}
