// AudioWorklet: plays blocks the page pushes, through a small adaptive jitter buffer.
// Live: start once `target` is buffered, grow the target after an underrun, shrink it
// after a calm stretch, and drop the oldest audio when the buffer runs far ahead (live
// first). Replay: no dropping; the page keeps it fed. Reports position, depth and level.

const MIN_TARGET_S = 0.04;
const MAX_TARGET_S = 0.4;
const CALM_S = 4.0;
const REPORT_S = 0.05;

class ScribePlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {data: Float32Array, pos: session sample index of data[0]}
    this.offset = 0; // read index into queue[0]
    this.buffered = 0;
    this.mode = "live";
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
      this.queue = [];
      this.offset = 0;
      this.buffered = 0;
      this.playing = false;
      this.mode = m.mode || this.mode;
      this.pos = -1;
    } else if (m.type === "pause") {
      this.paused = !!m.paused;
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (this.mode === "live") {
      // far behind live (a burst after a stall): skip ahead to the target depth
      if (this.buffered > this.target + Math.round(0.25 * sampleRate)) this.drop(this.buffered - this.target);
    }
    if (!this.playing && !this.paused && this.buffered >= (this.mode === "live" ? this.target : n)) {
      this.playing = true;
    }
    let i = 0;
    if (this.playing && !this.paused) {
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
        type: "tick", pos: this.pos, buffered: this.buffered, target: this.target,
        playing: this.playing && !this.paused, peak: this.peak,
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
