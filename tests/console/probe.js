// Test-only probe for the console. console_support.open_console installs it with Playwright's
// page.add_init_script, so it runs before the page's own scripts on every load; the relay
// never serves it and the page never loads it itself. It looks at the console from outside:
//   - what the player feeds its AudioWorklet (MessagePort.postMessage of "push" blocks),
//   - chimes started (OscillatorNode.start), the cue banner painted (its data-cue),
//   - decoded live audio (a spy on ScribeDesk.prototype.onAudio: capture -> decoded latency),
//   - the running console through the entry module's export (js/app.js `app`).
// Tests call it as window.__probe.<name>(...) through page.evaluate.

(() => {
  if (window.__probe || !location.pathname.startsWith("/console")) return;
  const FED_MAX_SAMPLES = 120 * 48000; // a replay's first 2 minutes are plenty to compare
  const now = () => performance.timeOrigin + performance.now();

  const probe = {
    app: null, // js/app.js `app`: the ConsoleController
    fed: null, // the current replay's blocks: {startSample, parts: [Int16Array], samples}
    lastChime: 0, // Date.now() of the last chime tone started
    latencyMs: [], // live chunks: unit capture clock -> decoded here (one box in tests)
    painted: new Map(), // cue key -> first animation frame with it on the banner
  };
  window.__probe = probe;

  // ------------------------------------------------------------ taps at the page's edges

  const post = MessagePort.prototype.postMessage;
  MessagePort.prototype.postMessage = function (m, ...rest) {
    if (m && m.type === "reset" && m.mode === "replay") probe.fed = { startSample: null, parts: [], samples: 0 };
    else if (m && m.type === "reset" && m.mode === "live") probe.fed = null;
    else if (m && m.type === "push" && probe.fed && probe.fed.samples < FED_MAX_SAMPLES) {
      // the player sends int16 / 32768 as float32: exact, so this gives back its samples
      const pcm = Int16Array.from(m.data, (v) => Math.round(v * 32768));
      if (probe.fed.startSample === null) probe.fed.startSample = m.pos;
      probe.fed.parts.push(pcm);
      probe.fed.samples += pcm.length;
    }
    return post.call(this, m, ...rest);
  };

  const startTone = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    probe.lastChime = Date.now();
    return startTone.apply(this, args);
  };

  addEventListener("DOMContentLoaded", async () => {
    const banner = document.getElementById("cue-banner");
    new MutationObserver(() => {
      const key = banner.dataset.cue;
      if (key && !probe.painted.has(key)) {
        probe.painted.set(key, null);
        requestAnimationFrame(() => probe.painted.set(key, now()));
      }
    }).observe(banner, { attributes: true, attributeFilter: ["data-cue"] });
    // module scripts have run by now: these imports are the page's own instances
    const [{ app }, { ScribeDesk }] = await Promise.all([import("/console/js/app.js"), import("/console/js/scribe.js")]);
    const onAudio = ScribeDesk.prototype.onAudio;
    ScribeDesk.prototype.onAudio = function (s, header, pcm, via) {
      onAudio.call(this, s, header, pcm, via);
      if (via === "live") {
        probe.latencyMs.push(Date.now() - header.captureUs / 1000);
        if (probe.latencyMs.length > 5000) probe.latencyMs.shift();
      }
    };
    probe.app = app;
  });

  // ------------------------------------------------------------ reading the console

  const desk = () => probe.app.desk;
  const cryptoJs = () => import("/console/js/crypto.js");

  async function pcmOf(session) {
    const { concat } = await cryptoJs();
    const s = desk().receiver.sessions.get(session);
    const seqs = [...s.chunks.keys()].sort((a, b) => a - b);
    return { s, seqs, pcm: concat(...seqs.map((q) => new Uint8Array(s.chunks.get(q).pcm.buffer))) };
  }

  Object.assign(probe, {
    ready: () => !!probe.app && (probe.app.phase === "scribe" || probe.app.phase === "admin"),
    linkUp: () => document.getElementById("link-state").classList.contains("ok"),

    sessions: () => [...desk().receiver.sessions.values()].map((s) => ({
      session: s.session, unit: s.unit, maxSeq: s.maxSeq, chunks: s.chunks.size, closed: !!s.close,
      events: s.events.map((e) => ({ kind: e.kind, seq: e.seq, cue_id: e.cue_id, t_s: e.t_s })),
      chunkSamples: s.chunkSamples, sampleRate: s.sampleRate, lost: s.lostAudio.size,
      live: [...s.chunks.values()].filter((c) => c.via === "live").length,
      decoded: [...s.chunks.values()].filter((c) => c.pcm).length,
    })),

    async sessionPcm(session) {
      const { b64encode, sha256Hex } = await cryptoJs();
      const { seqs, pcm } = await pcmOf(session);
      return { sha256: await sha256Hex(pcm), samples: pcm.length / 2, chunks: seqs.length, first: seqs[0], last: seqs[seqs.length - 1], b64: b64encode(pcm) };
    },

    async sessionHash(session) {
      const { sha256Hex } = await cryptoJs();
      const { s, seqs, pcm } = await pcmOf(session);
      return { sha256: await sha256Hex(pcm), samples: pcm.length / 2, chunks: seqs.length, contiguous: seqs.length === s.maxSeq + 1 };
    },

    cues: () => [...probe.app.store.cues.values()].map((c) => ({ ...c, paint_ms: probe.painted.get(c.key) ?? null })),
    counters: () => desk().receiver.counters,
    errors: () => probe.app.store.errors,

    resetLatency() {
      probe.latencyMs.length = 0;
    },

    audioLatency() {
      const p = desk().player;
      const v = [...probe.latencyMs].sort((a, b) => a - b);
      const q = (f) => v[Math.min(v.length - 1, Math.floor(f * (v.length - 1)))];
      return {
        n: v.length, p50_ms: q(0.5), p95_ms: q(0.95), max_ms: v[v.length - 1],
        buffer_target_ms: (p.stats.target / (p.ctx?.sampleRate || 16000)) * 1000,
        output_latency_ms: (p.ctx?.outputLatency || 0) * 1000,
      };
    },

    playback() {
      const p = desk().player;
      return { mode: p.mode, session: p.session?.session, paused: p.paused, positionS: p.positionS,
        playedSample: p.playedSample, stats: p.stats, level: p.level };
    },

    /** The first n samples the current replay fed the worklet, with where they start. */
    async playbackHash(n) {
      const fed = probe.fed;
      if (!fed || fed.startSample === null) return null;
      const out = new Int16Array(Math.min(n, fed.samples));
      let o = 0;
      for (const part of fed.parts) {
        if (o >= out.length) break;
        const take = Math.min(part.length, out.length - o);
        out.set(part.subarray(0, take), o);
        o += take;
      }
      const { sha256Hex } = await cryptoJs();
      return { sha256: await sha256Hex(new Uint8Array(out.buffer)), samples: out.length, startSample: fed.startSample };
    },

    seekTo: (t) => desk().seekTo(t),
    evict: (keep) => desk().evict(keep),
    replayBefore: (key, s) => desk().replayBefore(probe.app.store.cues.get(key), s),
    selectRoom: (u, s) => desk().selectRoom(u, s),
  });
})();
