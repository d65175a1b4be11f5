// What the console keeps in the browser's storage, and under which names: the sign-in token
// and a message for the next page load (this tab only), the theme and acknowledged cues.

const TOKEN = "scribelink.token";
const MESSAGE = "scribelink.msg";
const THEME = "scribelink.theme";
const ACKED = "scribelink.acked";

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

  get acked() {
    try {
      const keys = JSON.parse(this.browser.getItem(ACKED) || "[]");
      return Array.isArray(keys) ? keys : [];
    } catch (e) {
      return []; // written by something else: start afresh rather than fail to load
    }
  }

  set acked(keys) { this.browser.setItem(ACKED, JSON.stringify(keys)); }
}
