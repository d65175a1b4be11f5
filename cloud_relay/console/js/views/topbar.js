// The bar across the top: who is signed in, the link to the relay, this browser's key, the
// theme, sign-out, and the keyboard help overlay.

import { $ } from "../dom.js";

export class TopBar {
  bind({ onSignOut, onTheme }) {
    $("signout").addEventListener("click", () => onSignOut());
    $("theme-toggle").addEventListener("click", () => onTheme());
  }

  who(me) {
    $("who").textContent = `${me.name} · ${me.role}`;
  }

  /** Clinic IT hears nothing: no key, no live link. */
  adminMode() {
    $("key-state").hidden = true;
    $("link-state").hidden = true;
  }

  key(keyId) {
    $("key-state").textContent = `key ${keyId.slice(0, 8)}`;
  }

  link(up) {
    const el = $("link-state");
    el.className = `chip ${up ? "ok" : "bad"}`;
    el.textContent = up ? "relay connected" : "reconnecting…";
  }

  /** Light or dark, remembered by the caller. */
  theme(name) {
    document.documentElement.dataset.theme = name;
  }

  get themeName() {
    return document.documentElement.dataset.theme;
  }

  toggleHelp(show = $("help").hidden) {
    $("help").hidden = !show;
  }
}
