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

/**
 * System notifications (the Notification API) while the page is hidden (the EHR in front): a
 * cue, an outage, the relay back. A click brings the console forward and jumps to the room.
 * Nothing is shown while the page is visible: the banner and the chime are there.
 */
export class Notifier {
  constructor(win = window) {
    this.win = win;
    this.shown = new Map(); // tag -> Notification, so an update replaces the last one
  }

  get available() {
    return "Notification" in this.win;
  }

  get permission() {
    return this.available ? this.win.Notification.permission : "unsupported";
  }

  /** Ask once, from a user gesture (the sign-in click, or the top bar's bell). */
  async ask() {
    if (this.permission !== "default") return this.permission;
    try {
      return await this.win.Notification.requestPermission();
    } catch (e) {
      return "denied";
    }
  }

  /** `onClick(unit, session)`: what a click on it does (after focusing the page). */
  notify(title, body, { tag, unit = null, session = null, onClick = () => {} } = {}) {
    if (!this.win.document.hidden || this.permission !== "granted") return null;
    this.shown.get(tag)?.close();
    const n = new this.win.Notification(title, { body, tag, renotify: true, requireInteraction: true });
    n.addEventListener("click", () => {
      this.win.focus();
      onClick(unit, session);
      n.close();
    });
    this.shown.set(tag, n);
    return n;
  }
}
