// How a cue reaches the scribe beyond the banner: a soft chime (again every 20 s while a cue
// is open) and the window title. Which cues are open is the store's (js/state.js).

const CHIME_REPEAT_MS = 20000;
const TITLE = "Scribelink console";
// two soft tones, a fifth apart: noticeable over a dictation, not an alarm
const TONES_HZ = [659.25, 987.77];
const TONE_GAP_S = 0.16;

export class Alerts {
  constructor() {
    this.ctx = null; // one AudioContext for the chime, made on the first user gesture
    this.lastChimeMs = 0;
  }

  /** Call from a user gesture (the sign-in click): browsers let audio start only after one. */
  unlock() {
    if (!this.ctx) this.ctx = new AudioContext();
    if (this.ctx.state !== "running") this.ctx.resume();
    return this.ctx;
  }

  /** A new cue is open in `room`. */
  raise(room, nowMs) {
    this.chime(nowMs);
    document.title = `● Cue — ${room} · Scribelink`;
  }

  /** No cue is open any more. */
  clear() {
    document.title = TITLE;
  }

  /** Called every half second: chime again while cues wait. */
  remind(openCount, nowMs) {
    if (openCount && nowMs - this.lastChimeMs > CHIME_REPEAT_MS) this.chime(nowMs);
  }

  chime(nowMs) {
    this.lastChimeMs = nowMs;
    const ctx = this.unlock();
    const t0 = ctx.currentTime + 0.01;
    for (const [i, f] of TONES_HZ.entries()) {
      const at = t0 + i * TONE_GAP_S;
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      o.type = "sine";
      o.frequency.value = f;
      g.gain.setValueAtTime(0, at);
      g.gain.linearRampToValueAtTime(0.22, at + 0.02);
      g.gain.exponentialRampToValueAtTime(0.001, at + 0.6);
      o.connect(g).connect(ctx.destination);
      o.start(at);
      o.stop(at + 0.65);
    }
  }
}
