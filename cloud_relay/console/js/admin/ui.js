// Small pieces the admin view's sections share: a modal dialog, an action button that
// shows it is busy and what went wrong, time formatting. No state of their own.

import { h } from "../dom.js";

/** A modal <dialog> with `body` (nodes) and buttons; resolves with the pressed button's
 * value, or null when dismissed. */
export function ask(title, body, buttons = [{ label: "OK", value: true, primary: true }], { id = "admin-dialog", wide = false } = {}) {
  return new Promise((resolve) => {
    document.getElementById(id)?.remove();
    const dlg = h("dialog", { id, class: `admin-dialog${wide ? " wide" : ""}` },
      h("h3", {}, title),
      h("div", { class: "dialog-body" }, body),
      h("div", { class: "dialog-buttons" }, [
        ...buttons.map((b) => h("button", { class: b.primary ? "primary" : b.danger ? "danger" : "", "data-value": String(b.value), onclick: () => { dlg.close(); resolve(b.value); } }, b.label)),
        h("button", { "data-value": "cancel", onclick: () => { dlg.close(); resolve(null); } }, buttons.length ? "Cancel" : "Close"),
      ]));
    dlg.addEventListener("cancel", () => resolve(null));
    dlg.addEventListener("close", () => setTimeout(() => dlg.remove(), 0));
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** A dialog to read (no choice): resolves when closed. */
export const show = (title, body, opts) => ask(title, body, [], opts);

/** Run `fn` for a button: disabled while it runs; errors go to `report(message)`. */
export async function busy(button, fn, report) {
  const before = button?.textContent;
  if (button) { button.disabled = true; button.textContent = "…"; }
  try {
    return await fn();
  } catch (e) {
    report(e.message || String(e));
    return undefined;
  } finally {
    if (button) { button.disabled = false; button.textContent = before; }
  }
}

export const nowUs = () => Date.now() * 1000;

/** A date and time (µs since the epoch), local, to the minute. */
export function fmtWhen(us) {
  if (!us) return "—";
  const d = new Date(us / 1000);
  return `${d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false })}`;
}

/** "in 3 days", "2 h ago" */
export function fmtRel(us) {
  if (!us) return "—";
  const s = (us - nowUs()) / 1e6;
  const a = Math.abs(s);
  const n = a < 90 ? `${Math.round(a)} s` : a < 5400 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
  return s >= 0 ? `in ${n}` : `${n} ago`;
}

export const needsAuthority = "Unlock the clinic authority first (at the top of this page): only it can sign this.";
