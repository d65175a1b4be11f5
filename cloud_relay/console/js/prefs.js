// What the console keeps in the browser's storage, and under which names: the sign-in token
// and a message for the next page load (this tab only), the theme, volume and speeds.
// (Acknowledgements are not kept here: they are the room's, in its stream.)

const TOKEN = "scribelink.token";
const MESSAGE = "scribelink.msg";
const THEME = "scribelink.theme";
const VOLUME = "scribelink.volume";
const SPEED = "scribelink.speed";
const MISSED_SPEED = "scribelink.missedSpeed";

export class Prefs {
  constructor(tab = sessionStorage, browser = localStorage) {
    this.tab = tab;
    this.browser = browser;
  }

  get token() { return this.tab.getItem(TOKEN); }
  set token(t) { if (t) this.tab.setItem(TOKEN, t); else this.tab.removeItem(TOKEN); }

  /** A message for the sign-in card after the reload that signing out does. */
  leaveMessage(m) { if (m) this.tab.setItem(MESSAGE, m); }
  takeMessage() {
    const m = this.tab.getItem(MESSAGE) || "";
    this.tab.removeItem(MESSAGE);
    return m;
  }

  get theme() { return this.browser.getItem(THEME) || "dark"; }
  set theme(t) { this.browser.setItem(THEME, t); }

  get volume() { return this._number(VOLUME, 1, 0, 1); }
  set volume(v) { this.browser.setItem(VOLUME, String(v)); }

  get speed() { return this._number(SPEED, 1, 1, 2); }
  set speed(v) { this.browser.setItem(SPEED, String(v)); }

  get missedSpeed() { return this._number(MISSED_SPEED, 1.5, 1, 2); }
  set missedSpeed(v) { this.browser.setItem(MISSED_SPEED, String(v)); }

  _number(name, dflt, lo, hi) {
    const v = Number(this.browser.getItem(name));
    // written by something else, or never: the default rather than a failure
    return this.browser.getItem(name) !== null && Number.isFinite(v) && v >= lo && v <= hi ? v : dflt;
  }
}
