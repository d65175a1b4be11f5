// Test-only probe for the console. console_support.open_console installs it with Playwright's
// page.add_init_script, so it runs before the page's own scripts on every load; the relay
// never serves it and the page never loads it itself. It looks at the console from outside:
//   - what the player feeds its AudioWorklet (MessagePort.postMessage of "push" blocks),
//   - chimes started (OscillatorNode.start), the cue banner painted (its data-cue),
//   - decoded live audio (a spy on ScribeDesk.prototype.onAudio: capture -> decoded latency),
//   - the running console through the entry module's export (js/app.js `app`),
//   - system notifications the page raises (a spy on the Notification constructor; the real
//     one still runs), and the page's visibility, which a test may set to "hidden" as if the
//     EHR window were in front (document.hidden is what the page reads).
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
    notifications: [], // {title, body, tag, n}: what the page raised, newest last
    hidden: false,
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

  // the page hidden, as when another window is in front
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => probe.hidden });
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => (probe.hidden ? "hidden" : "visible") });
  probe.setHidden = (hidden) => {
    probe.hidden = hidden;
    document.dispatchEvent(new Event("visibilitychange"));
  };

  if (window.Notification) {
    const Real = window.Notification;
    const Spy = function Notification(title, options = {}) {
      const n = new Real(title, options);
      probe.notifications.push({ title, body: options.body, tag: options.tag, n });
      return n;
    };
    Object.defineProperty(Spy, "permission", { get: () => Real.permission });
    Spy.requestPermission = (...a) => Real.requestPermission(...a);
    Spy.prototype = Real.prototype;
    window.Notification = Spy;
  }

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
    ScribeDesk.prototype.onAudio = function (s, header, pcm, via, ...rest) {
      onAudio.call(this, s, header, pcm, via, ...rest);
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
    // (decoded chunks only: the page drops decoded audio it is unlikely to play, js/state.js evict)
    const seqs = [...s.chunks.keys()].filter((q) => s.chunks.get(q).pcm).sort((a, b) => a - b);
    return { s, seqs, pcm: concat(...seqs.map((q) => new Uint8Array(s.chunks.get(q).pcm.buffer))) };
  }

  Object.assign(probe, {
    ready: () => !!probe.app && (probe.app.phase === "admin" || (probe.app.phase === "scribe" && !!probe.app.desk?.receiver)),
    waiting: () => !!document.getElementById("waiting-approval"),
    device: () => probe.app.desk?.device ? { id: probe.app.desk.device.id, endorsed: probe.app.desk.device.endorsed,
      siblings: probe.app.desk.device.siblings().map((d) => d.device), pending: probe.app.desk.device.pending.map((d) => d.device) } : null,
    shown: () => ({ unit: probe.app.store.selectedUnit, session: probe.app.store.selectedSession }),
    notified: () => probe.notifications.map(({ title, body, tag }) => ({ title, body, tag })),
    clickNotification: (i) => probe.notifications.at(i).n.dispatchEvent(new Event("click")),
    linkUp: () => document.getElementById("link-state").classList.contains("ok"),

    sessions: () => [...desk().receiver.sessions.values()].map((s) => ({
      session: s.session, unit: s.unit, maxSeq: s.maxSeq, chunks: s.chunks.size, closed: !!s.close,
      events: s.events.map((e) => ({ kind: e.kind, seq: e.seq, cue_id: e.cue_id, t_s: e.t_s })),
      chunkSamples: s.chunkSamples, sampleRate: s.sampleRate, lost: s.lostRanges.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, s.maxSeq) - a + 1), 0), complete: s.complete,
      openedVia: s.openedVia, consent: s.consent, recipients: s.recipients.map((r) => r.device).filter(Boolean),
      replies: s.replies,
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

    // the last k live chunks' latencies, in arrival order
    latencyTail: (k) => probe.latencyMs.slice(-k),

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
      return { mode: p.mode, session: p.session?.session, unit: p.session?.unit, paused: p.paused, positionS: p.positionS,
        playedSample: p.playedSample, stats: p.stats, level: p.level, speed: p.speed, volume: p.volume, behindS: p.behindS };
    },
    refused: () => Object.fromEntries(desk().receiver.refused),
    unopened: () => [...desk().receiver.unopened.keys()],

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
    // a test that reads a whole session's decoded audio after its close: the page's periodic
    // eviction (no argument) drops what nothing plays, so hold it off; evict(keep) still runs
    holdDecoded() {
      const d = desk();
      const own = Object.getPrototypeOf(d).evict;
      d.evict = (keep) => (keep ? own.call(d, keep) : 0);
    },
    replayBefore: (key, s) => desk().replayBefore(probe.app.store.cues.get(key), s),
    selectRoom: (u, s) => desk().selectRoom(u, s),
  });
})();
