// The browser's half of scribelink/codec.py (the owner of audio chunk bodies): PCM bodies
// as they are, Opus bodies (20 ms packets, each length-prefixed as in RFC 6716 3.2.1)
// decoded with WebCodecs' AudioDecoder. Chromium's decoder gives 48 kHz whatever it is
// asked for; the console plays and stores 16 kHz, so a small FIR takes it down (delay 7
// samples at 16 kHz, 0.44 ms). The continuity rule is the reference's: consecutive chunks
// share decoder state; a hole up to PLC_MAX_MS is concealed by Opus itself (decoding a
// packet with no frame data, what RFC 6716 calls a lost frame), longer holes and chunks
// out of order start the decoder afresh.

export const CODEC_PCM = 1;
export const CODEC_OPUS = 2;
export const SAMPLE_RATE = 16000;
export const FRAME_SAMPLES = 320; // 20 ms
export const PLC_MAX_MS = 120;
export const DECIMATOR_DELAY = 7; // samples at 16 kHz the output lags libopus' own 16 kHz decode

const OUT_RATE = 48000;
const RATIO = OUT_RATE / SAMPLE_RATE;
const TAPS = 47; // (TAPS-1)/2 = 23 = 3*7 + 2: libopus' 48 kHz output leads its 16 kHz one by 2
const CONFIG = { codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 };
const OUTPUT_TIMEOUT_MS = 2000;

export class CodecError extends Error {}

/** An Opus chunk body -> its packets (throws CodecError on a malformed body). */
export function unpackPackets(body) {
  const out = [];
  let i = 0;
  while (i < body.length) {
    let n = body[i++];
    if (n >= 252) {
      if (i >= body.length) throw new CodecError("Opus body ends inside a packet length");
      n += 4 * body[i++];
    }
    if (n === 0 || i + n > body.length) throw new CodecError("Opus body: packet length 0 or past the end");
    out.push(body.subarray(i, i + n));
    i += n;
  }
  if (!out.length) throw new CodecError("Opus body holds no packet");
  return out;
}

export const framesFor = (sampleCount) => Math.ceil(sampleCount / FRAME_SAMPLES);

/** Whether this browser decodes Opus (WebCodecs needs a secure context: https or localhost). */
export async function opusSupported() {
  if (typeof AudioDecoder === "undefined") return false;
  try {
    return (await AudioDecoder.isConfigSupported(CONFIG)).supported === true;
  } catch {
    return false;
  }
}

function lowpass() {
  // windowed sinc (Blackman), cut-off 7.8 kHz at 48 kHz, unity gain at DC
  const h = new Float64Array(TAPS);
  const m = (TAPS - 1) / 2;
  const fc = 7800 / OUT_RATE;
  let sum = 0;
  for (let k = 0; k < TAPS; k++) {
    const x = k - m;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * k) / (TAPS - 1));
    h[k] = sinc * w;
    sum += h[k];
  }
  for (let k = 0; k < TAPS; k++) h[k] /= sum;
  return h;
}

/** 48 kHz float -> 16 kHz int16, streaming (keeps its history across calls). */
export class Decimator {
  constructor() {
    this.h = lowpass();
    this.reset();
  }

  reset() {
    this.hist = new Float64Array(TAPS - 1); // the previous input samples, oldest first
  }

  process(x) {
    const n = x.length;
    const buf = new Float64Array(TAPS - 1 + n);
    buf.set(this.hist);
    buf.set(x, TAPS - 1);
    const out = new Int16Array(Math.floor(n / RATIO));
    const h = this.h;
    for (let j = 0; j < out.length; j++) {
      const end = TAPS - 1 + j * RATIO; // index of the newest input sample this output sees
      let acc = 0;
      for (let k = 0; k < TAPS; k++) acc += h[k] * buf[end - k];
      const v = Math.round(acc * 32768);
      out[j] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
    }
    this.hist = buf.slice(buf.length - (TAPS - 1));
    return out;
  }
}

/** One session's Opus decoder (one per receive lane: live, archive). Calls must not overlap. */
export class OpusChunkDecoder {
  constructor() {
    this.lastSeq = null;
    this.lastToc = null;
    this.chunkFrames = 0;
    this.resets = 0;
    this.concealedFrames = 0;
    this.decimator = new Decimator();
    this.outs = [];
    this.failure = null;
    this.dec = null;
    this.waiting = null;
    this.ts = 0;
  }

  _open() {
    this.dec = new AudioDecoder({
      output: (a) => {
        const f = new Float32Array(a.numberOfFrames);
        a.copyTo(f, { planeIndex: 0, format: "f32-planar" });
        a.close();
        this.outs.push(f);
        if (this.waiting && this.outs.length >= this.waiting.n) this.waiting.done();
      },
      error: (e) => {
        this.failure = e;
        if (this.waiting) this.waiting.done();
      },
    });
    this.dec.configure(CONFIG);
  }

  reset() {
    if (this.dec && this.dec.state !== "closed") this.dec.reset();
    if (this.dec && this.dec.state !== "closed") this.dec.configure(CONFIG);
    this.decimator.reset();
    this.outs = [];
    this.resets += 1;
  }

  async _run(packets) {
    if (!this.dec || this.dec.state === "closed") {
      this._open();
      this.decimator.reset();
    }
    this.outs = [];
    // one output per packet, in order. No flush(): Chromium ends the stream on a flush and
    // the next packet would start from a fresh decoder state.
    const all = new Promise((resolve) => {
      const timer = setTimeout(resolve, OUTPUT_TIMEOUT_MS);
      this.waiting = { n: packets.length, done: () => { clearTimeout(timer); resolve(); } };
    });
    for (const p of packets) {
      this.dec.decode(new EncodedAudioChunk({ type: "key", timestamp: this.ts, duration: 20000, data: p }));
      this.ts += 20000;
    }
    await all;
    this.waiting = null;
    if (this.failure || this.outs.length < packets.length) {
      const why = this.failure ? String(this.failure) : "no output in time";
      this.failure = null;
      if (this.dec.state !== "closed") this.dec.close();
      this.dec = null;
      throw new CodecError(`the browser's Opus decoder failed: ${why}`);
    }
    const pcm = [];
    for (const f of this.outs) pcm.push(this.decimator.process(f));
    this.outs = [];
    return concatInt16(pcm);
  }

  /** Decode one chunk: {pcm (sampleCount samples), concealed (Opus over the hole before it)}. */
  async decode(body, sampleCount, seq) {
    const packets = unpackPackets(body);
    if (packets.length !== framesFor(sampleCount)) {
      throw new CodecError(`${packets.length} Opus packets for ${sampleCount} samples`);
    }
    let concealed = new Int16Array(0);
    if (this.lastSeq !== null && seq !== this.lastSeq + 1) {
      const missing = (seq - this.lastSeq - 1) * this.chunkFrames;
      if (missing > 0 && missing * 20 <= PLC_MAX_MS && this.lastToc !== null) {
        // a packet with its TOC and no frame: the decoder conceals 20 ms
        const lost = new Uint8Array([this.lastToc & 0xfc]);
        concealed = await this._run(Array.from({ length: missing }, () => lost));
        this.concealedFrames += missing;
      } else {
        this.reset(); // a long hole, or out of order: as a decoder joining here
      }
    }
    let pcm;
    try {
      pcm = await this._run(packets);
    } catch (e) {
      this.lastSeq = null;
      this.dec = null;
      throw e;
    }
    this.lastSeq = seq;
    this.lastToc = packets[packets.length - 1][0];
    if (sampleCount % FRAME_SAMPLES === 0) this.chunkFrames = packets.length;
    return { pcm: pcm.subarray(0, sampleCount), concealed };
  }

  close() {
    if (this.dec && this.dec.state !== "closed") this.dec.close();
  }
}

class PcmDecoder {
  async decode(body, sampleCount) {
    if (body.byteLength !== 2 * sampleCount) throw new CodecError("PCM body length does not match its sample count");
    return { pcm: new Int16Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)), concealed: new Int16Array(0) };
  }

  close() {}
}

export function decoderFor(codec) {
  if (codec === CODEC_OPUS) {
    if (typeof AudioDecoder === "undefined") throw new CodecError("this browser cannot decode Opus (no WebCodecs AudioDecoder; the console needs https)");
    return new OpusChunkDecoder();
  }
  if (codec === CODEC_PCM) return new PcmDecoder();
  throw new CodecError(`no audio decoder for codec ${codec}`);
}

function concatInt16(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Int16Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
