// AudioWorklet: plays blocks the page pushes, through a small adaptive jitter buffer.
// Live: start once `target` is buffered, grow the target after an underrun, shrink it
// after a calm stretch, and drop the oldest audio when the buffer runs far ahead (live
// first). Replay: no dropping; the page keeps it fed; at a speed other than 1x the audio is
// time-stretched with WSOLA (waveform-similarity overlap-add), so speech keeps its pitch.
// Reports position (the session sample playing), depth and level.

const MIN_TARGET_S = 0.04;
const MAX_TARGET_S = 0.4;
const CALM_S = 4.0;
const REPORT_S = 0.05;
const MIN_RATE = 0.5;
const MAX_RATE = 2.0;

/**
 * WSOLA time-stretch: frames of N samples (Hann window) laid out every N/2 samples of output,
 * taken every rate*N/2 samples of input, each shifted by up to +-D samples to the place that
 * best continues the previous frame (cross-correlation), so the waveform joins without
 * phase jumps and the pitch stays. Pull-based: `out(n)` asks `take()` for input.
 */
class Stretcher {
  constructor(frame) {
    this.N = frame;
    this.H = frame / 2;
    this.D = Math.round(frame / 4);
    this.win = new Float32Array(frame);
    for (let i = 0; i < frame; i++) this.win[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / frame);
    this.reset(1);
  }

  reset(rate) {
    this.rate = rate;
    this.buf = new Float32Array(8 * this.N);
    this.len = 0;
    this.base = -1; // session sample of buf[0]
    this.ana = this.D; // analysis position (buf index) of the next frame
    this.prev = -1; // buf index where the previous frame started
    this.acc = new Float32Array(this.N);
    this.ready = new Float32Array(0);
    this.readyPos = 0; // input sample (buf index) the next ready sample came from
  }

  push(data, pos) {
    if (this.base < 0) this.base = pos;
    if (this.len + data.length > this.buf.length) {
      // drop what no frame can reach any more, then grow if still needed
      const keep = Math.max(0, Math.min(this.prev, Math.floor(this.ana)) - this.D - 1);
      if (keep > 0) {
        this.buf.copyWithin(0, keep, this.len);
        this.len -= keep;
        this.base += keep;
        this.ana -= keep;
        this.prev -= keep;
        this.readyPos -= keep;
      }
      if (this.len + data.length > this.buf.length) {
        const bigger = new Float32Array(2 * (this.len + data.length));
        bigger.set(this.buf.subarray(0, this.len));
        this.buf = bigger;
      }
    }
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  /** Input samples still waiting to be played, in input time. */
  get pendingInput() {
    return Math.max(0, this.len - Math.floor(this.ana));
  }

  /** Session sample playing now (approximately: the frame being faded in). */
  get position() {
    return this.base + Math.round(this.readyPos);
  }

  /** One hop: true if it made H more samples ready. */
  hop() {
    const { N, H, D, buf } = this;
    const nominal = Math.round(this.ana);
    if (nominal + D + N > this.len) return false;
    let start = nominal;
    if (this.prev >= 0) {
      const natural = this.prev + H;
      if (natural + N > this.len) return false;
      let best = -Infinity;
      for (let d = -D; d <= D; d += 2) {
        const p = nominal + d;
        if (p < 0) continue;
        let c = 0;
        for (let i = 0; i < N; i += 4) c += buf[p + i] * buf[natural + i];
        if (c > best) {
          best = c;
          start = p;
        }
      }
    }
    const acc = this.acc;
    for (let i = 0; i < N; i++) acc[i] += this.win[i] * buf[start + i];
    const done = acc.slice(0, H);
    acc.copyWithin(0, H);
    acc.fill(0, N - H);
    const r = new Float32Array(this.ready.length + H);
    r.set(this.ready);
    r.set(done, this.ready.length);
    this.ready = r;
    this.readyPos = start;
    this.prev = start;
    this.ana += this.rate * H;
    return true;
  }

  /** Up to n stretched samples (fewer if the input ran out). */
  out(n) {
    while (this.ready.length < n && this.hop());
    const take = Math.min(n, this.ready.length);
    const o = this.ready.subarray(0, take);
    this.ready = this.ready.slice(take);
    return o;
  }
}

class ScribePlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.epoch = options?.processorOptions?.epoch ?? 0; // the page's count of resets
    this.queue = []; // {data: Float32Array, pos: session sample index of data[0]}
    this.offset = 0; // read index into queue[0]
    this.buffered = 0;
    this.mode = "live";
    this.rate = 1;
    this.stretch = new Stretcher(sampleRate >= 32000 ? 1024 : 512);
    this.playing = false; // false = filling to target
    this.paused = false;
    this.target = Math.round(0.08 * sampleRate);
    this.calm = 0;
    this.underruns = 0;
    this.dropped = 0;
    this.pos = -1;
    this.peak = 0;
    this.sumSq = 0;
    this.n = 0;
    this.sinceReport = 0;
    this.port.onmessage = (e) => this.command(e.data);
  }

  command(m) {
    if (m.type === "push") {
      this.queue.push({ data: m.data, pos: m.pos });
      this.buffered += m.data.length;
    } else if (m.type === "reset") {
      this.epoch = m.epoch ?? this.epoch; // ticks carry it: the page drops older ones
      this.queue = [];
      this.offset = 0;
      this.buffered = 0;
      this.playing = false;
      this.mode = m.mode || this.mode;
      if (this.mode === "live") this.rate = 1;
      this.stretch.reset(this.rate);
      this.pos = -1;
    } else if (m.type === "pause") {
      this.paused = !!m.paused;
    } else if (m.type === "rate") {
      const r = Math.min(MAX_RATE, Math.max(MIN_RATE, Number(m.rate) || 1));
      if (this.mode === "live" && r !== 1) return; // live has nothing to run ahead into
      if (r !== this.rate) {
        // the page follows a rate change with a reset and a fresh feed from where it plays
        this.rate = r;
        this.stretch.reset(r);
      }
    }
  }

  /** Move up to `count` queued samples to the stretcher. */
  feedStretch(count) {
    while (count > 0 && this.queue.length) {
      const head = this.queue[0];
      const take = Math.min(count, head.data.length - this.offset);
      this.stretch.push(head.data.subarray(this.offset, this.offset + take), head.pos + this.offset);
      this.offset += take;
      this.buffered -= take;
      count -= take;
      if (this.offset >= head.data.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (this.mode === "live") {
      // far behind live (a burst after a stall): skip ahead to the target depth
      if (this.buffered > this.target + Math.round(0.25 * sampleRate)) this.drop(this.buffered - this.target);
    }
    if (!this.playing && !this.paused && this.buffered + this.stretch.pendingInput >= (this.mode === "live" ? this.target : n)) {
      this.playing = true;
    }
    let i = 0;
    if (this.playing && !this.paused) {
      if (this.rate !== 1 && this.mode !== "live") {
        // keep the stretcher a few frames ahead, then take what it made
        const want = Math.ceil(this.rate * n) + 3 * this.stretch.N;
        if (this.stretch.pendingInput < want) this.feedStretch(want - this.stretch.pendingInput);
        const got = this.stretch.out(n);
        out.set(got, 0);
        i = got.length;
        if (i) this.pos = this.stretch.position;
        if (i < n && !this.queue.length) this.playing = false;
      } else {
        while (i < n && this.queue.length) {
          const head = this.queue[0];
          const take = Math.min(n - i, head.data.length - this.offset);
          out.set(head.data.subarray(this.offset, this.offset + take), i);
          this.pos = head.pos + this.offset + take;
          this.offset += take;
          i += take;
          this.buffered -= take;
          if (this.offset >= head.data.length) {
            this.queue.shift();
            this.offset = 0;
          }
        }
        if (i < n) {
          // ran dry: in live mode that is jitter, so buffer a little more next time
          this.playing = false;
          if (this.mode === "live") {
            this.underruns += 1;
            this.calm = 0;
            this.target = Math.min(Math.round(MAX_TARGET_S * sampleRate), Math.round(this.target * 1.5));
          }
        } else if (this.mode === "live") {
          this.calm += n;
          if (this.calm > CALM_S * sampleRate) {
            this.calm = 0;
            this.target = Math.max(Math.round(MIN_TARGET_S * sampleRate), Math.round(this.target * 0.85));
          }
        }
      }
    }
    out.fill(0, i);
    for (let k = 0; k < i; k++) {
      const v = out[k];
      const a = v < 0 ? -v : v;
      if (a > this.peak) this.peak = a;
      this.sumSq += v * v;
    }
    this.n += n;
    this.sinceReport += n;
    if (this.sinceReport >= REPORT_S * sampleRate) {
      this.port.postMessage({
        type: "tick", epoch: this.epoch, at: currentTime, pos: this.pos, buffered: this.buffered + this.stretch.pendingInput, target: this.target,
        playing: this.playing && !this.paused, peak: this.peak, rate: this.rate,
        rms: Math.sqrt(this.sumSq / Math.max(1, this.n)), underruns: this.underruns, dropped: this.dropped,
      });
      this.sinceReport = 0;
      this.peak = 0;
      this.sumSq = 0;
      this.n = 0;
    }
    return true;
  }

  drop(count) {
    while (count > 0 && this.queue.length) {
      const head = this.queue[0];
      const left = head.data.length - this.offset;
      const take = Math.min(left, count);
      this.offset += take;
      this.buffered -= take;
      this.dropped += take;
      count -= take;
      if (this.offset >= head.data.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
  }
}

registerProcessor("scribe-player", ScribePlayer);
