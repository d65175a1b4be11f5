// The bar across the top: who is signed in, what the scribe is hearing (any room, whichever is
// on screen), the link to the relay, the clinic authority this browser trusts and this
// device's key, notifications, the theme, sign-out, and the keyboard help overlay.

import { $, fmtDur } from "../dom.js";

export class TopBar {
  bind({ onSignOut, onTheme, onNotify, onHearing }) {
    $("signout").addEventListener("click", () => onSignOut());
    $("theme-toggle").addEventListener("click", () => onTheme());
    $("notify").addEventListener("click", () => onNotify());
    $("hearing").addEventListener("click", () => onHearing());
  }

  who(me) {
    $("who").textContent = `${me.name} · ${me.role}`;
  }

  /** Clinic IT hears nothing: no key, no live link. */
  adminMode() {
    for (const id of ["key-state", "link-state", "clinic", "notify", "hearing"]) $(id).hidden = true;
  }

  /** This device (js/device.js): its id, and the clinic authority it pinned. */
  device(d) {
    const k = $("key-state");
    k.textContent = `device ${d.id.slice(0, 8)}`;
    k.title = `This browser is one of your devices (“${d.keys.label}”). Its private keys never leave it.`;
    const c = $("clinic");
    c.hidden = false;
    c.textContent = `clinic ${d.authority.fingerprint.slice(0, 9)}`;
    c.title = `The clinic authority this browser trusts: ${d.authority.fingerprint}`;
  }

  link(up) {
    const el = $("link-state");
    el.className = `chip ${up ? "ok" : "bad"}`;
    el.textContent = up ? "relay connected" : "relay unreachable";
  }

  notifications(permission) {
    // offered only while the browser has not been asked; granted or refused, it stays so
    $("notify").hidden = permission !== "default";
  }

  /** "Now hearing": the room and session the player plays, wherever the scribe looks. */
  hearing(player, store) {
    const el = $("hearing");
    const s = player.session;
    if (!s || player.mode === "stopped") {
      el.hidden = true;
      return;
    }
    const room = store.rooms.get(s.unit)?.room || s.unit;
    const how = player.paused ? "paused" : player.mode === "live" ? "live"
      : `replay ${player.speed}×${player.behindS > 1 ? ` · ${fmtDur(player.behindS)} behind live` : ""}`;
    const text = `Hearing ${room} · ${how}`;
    if (el.textContent !== text) el.textContent = text;
    el.hidden = false;
    el.dataset.unit = s.unit;
    el.classList.toggle("elsewhere", s.unit !== store.selectedUnit);
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
