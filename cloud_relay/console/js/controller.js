// The console's top level: sign-in and sign-out, then the view for the role (the scribe's
// desk, or clinic IT's), the theme, the help overlay and keyboard routing.
// Phases: signed_out -> starting -> scribe | admin | other.

import { renderAdmin } from "./admin.js";
import { $, h } from "./dom.js";
import { commandFor } from "./keys.js";
import { ScribeDesk } from "./scribe.js";

const EXPIRED = "Your sign-in expired. Sign in again.";

export class ConsoleController {
  constructor({ store, api, prefs, alerts, notifier, signin, topbar }) {
    this.store = store;
    this.api = api;
    this.prefs = prefs;
    this.alerts = alerts;
    this.notifier = notifier;
    this.signin = signin;
    this.topbar = topbar;
    this.phase = "signed_out";
    this.desk = null; // the scribe's desk, once a scribe is signed in
    api.onExpired = () => {
      if (!this.store.me) return false; // a 401 while signing in is a wrong password
      this.signOut(EXPIRED);
      return true;
    };
  }

  /** Wire the page and start: signed in already (this tab's token), or show the card. */
  boot() {
    this.topbar.theme(this.prefs.theme);
    this.signin.bind((creds) => this.signIn(creds));
    this.topbar.bind({
      onSignOut: () => this.signOut(), onTheme: () => this.toggleTheme(),
      onNotify: () => this.notifier.ask().then(() => this.topbar.notifications(this.notifier.permission)),
      onHearing: () => this.desk?.jumpToHearing(),
    });
    document.addEventListener("keydown", (e) => this.onKey(e));
    window.addEventListener("resize", () => this.desk?.redraw());
    const msg = this.prefs.takeMessage();
    if (this.api.token) this.start().catch(() => this.signin.show(msg));
    else this.signin.show(msg);
  }

  async signIn({ user, password }) {
    this.signin.error("");
    this.alerts.unlock(); // a user gesture: the chime may sound later without one
    this.notifier.ask().then(() => this.topbar.notifications(this.notifier.permission));
    try {
      const r = await this.api.call("POST", "/api/login", { user, password });
      this.api.token = r.token;
      this.prefs.token = r.token;
      await this.start();
    } catch (e) {
      this.signin.error(e.status === 401 ? "Wrong user or password." : `Could not sign in: ${e.message}`);
    }
  }

  /** Forget the token and start afresh (a reload drops every key and decoded sample). */
  signOut(message = "") {
    // end the sign-in on the relay too (a copied token stops working); the page does not wait
    if (this.api.token) fetch("/api/logout", { method: "POST", keepalive: true, headers: { Authorization: `Bearer ${this.api.token}` } }).catch(() => {});
    this.prefs.token = null;
    this.api.token = null;
    this.store.me = null;
    this.desk?.stop();
    location.hash = "";
    this.prefs.leaveMessage(message);
    location.reload();
  }

  async start() {
    this.phase = "starting";
    const me = await this.api.call("GET", "/api/me");
    this.store.me = me;
    this.signin.hide();
    this.topbar.who(me);
    if (me.role === "admin") {
      this.topbar.adminMode();
      renderAdmin($("view"), {
        api: (method, path, body) => this.api.call(method, path, body),
        fetchRaw: (path) => fetch(path, { headers: { Authorization: `Bearer ${this.api.token}` } }),
        me: me.user,
      });
      this.phase = "admin";
      return;
    }
    if (me.role !== "scribe") {
      $("view").replaceChildren(h("div", { class: "empty" }, "This console is for scribes and clinic admins."));
      this.phase = "other";
      return;
    }
    this.topbar.notifications(this.notifier.permission);
    this.desk = new ScribeDesk({
      store: this.store, api: this.api, topbar: this.topbar, alerts: this.alerts, notifier: this.notifier,
      prefs: this.prefs, onRefused: () => this.signOut(EXPIRED),
    });
    this.phase = "scribe";
    await this.desk.start(me, location.hash.slice(1));
  }

  onKey(e) {
    const c = commandFor(e);
    if (!c) return;
    if (c.cmd === "help") this.topbar.toggleHelp();
    else if (c.cmd === "closeHelp") this.topbar.toggleHelp(false);
    else if (c.cmd === "theme") this.toggleTheme();
    else if (this.phase === "scribe" && this.desk.receiver) {
      if (c.preventDefault) e.preventDefault();
      this.desk.command(c.cmd, c.arg);
    }
  }

  toggleTheme() {
    const next = this.topbar.themeName === "light" ? "dark" : "light";
    this.topbar.theme(next);
    this.prefs.theme = next;
    this.desk?.redraw();
  }
}
