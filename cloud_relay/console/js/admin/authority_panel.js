// The clinic authority's strip at the top of the admin view: which authority the relay
// serves (its fingerprint, to compare with the one printed by `python -m scribelink.authority
// show`), and unlocking the key file in this page -- file and passphrase stay here; the
// key is a non-extractable WebCrypto key, gone when the page is closed or reloaded.

import { h } from "../dom.js";
import { Authority } from "./authority.js";
import { busy } from "./ui.js";

export function renderAuthorityPanel(root, model, { report, note }) {
  function render() {
    const relay = model.relay || {};
    const a = model.authority;
    const registered = relay.authority_fingerprint;
    const status = a
      ? h("span", { class: "chip ok", id: "authority-state" }, `authority unlocked · ${a.keyId}`)
      : h("span", { class: "chip warn", id: "authority-state" }, "authority locked");
    const mismatch = a && relay.authority && relay.authority !== a.publicB64;
    root.replaceChildren(h("div", { class: "authority-strip" },
      status,
      h("span", { class: "muted" }, registered ? "relay serves " : "the relay knows no clinic authority yet"),
      registered ? h("span", { class: "mono fp", id: "authority-fingerprint", title: "compare with `python -m scribelink.authority show`" }, registered) : null,
      mismatch ? h("span", { class: "error" }, " This key file is not the authority the relay serves!") : null,
      h("div", { class: "spacer" }),
      a ? h("span", { class: "muted" }, "signs in this page only; the relay never sees the key")
        : h("form", { class: "unlock", id: "authority-unlock", onsubmit: (e) => { e.preventDefault(); unlock(e.submitter); } },
          h("label", {}, "Key file ", h("input", { type: "file", id: "authority-file", accept: ".json,application/json", required: true })),
          h("input", { type: "password", id: "authority-passphrase", placeholder: "passphrase", autocomplete: "off", required: true }),
          h("button", { class: "primary", id: "authority-unlock-button", type: "submit" }, "Unlock")),
      a && !registered ? h("button", { class: "primary", id: "authority-register", onclick: (e) => register(e.currentTarget) }, "Register this authority with the relay") : null,
    ));
  }

  async function unlock(button) {
    const file = document.getElementById("authority-file").files[0];
    const pass = document.getElementById("authority-passphrase");
    await busy(button, async () => {
      let doc;
      try {
        doc = JSON.parse(await file.text());
      } catch (e) {
        throw new Error("that file is not a clinic authority key file (not JSON)");
      }
      model.authority = await Authority.unlock(doc, pass.value);
      pass.value = "";
      note(`Clinic authority unlocked for this page: ${model.authority.fingerprint}`);
      render();
      model.changed();
    }, report);
  }

  async function register(button) {
    await busy(button, async () => {
      await model.registerAuthority();
      await model.refresh();
      note("The relay now serves this clinic authority. Units and consoles pin it from now on.");
    }, report);
  }

  // the relay's state changed: redraw, but never under the admin's hands -- a focused
  // field, or a key file or passphrase already given (redrawing would drop them)
  const unlocking = () => document.getElementById("authority-file")?.files.length > 0
    || Boolean(document.getElementById("authority-passphrase")?.value);
  model.onChange(() => {
    if (!root.contains(document.activeElement) && !unlocking()) render();
  });
  render();
}
