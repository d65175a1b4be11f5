// The page an invitation or password-reset link opens (/console/invite.html#CODE): the
// person chooses their own password, so nobody else -- not the admin who invited them --
// ever knows it. The code is taken out of the address bar at once.

import { $ } from "./dom.js";
import { secureContextProblem, showProblem } from "./secure.js";

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = data.detail || r.statusText;
    throw new Error(typeof d === "string" ? d : d.message || JSON.stringify(d));
  }
  return data;
}

async function main() {
  const problem = secureContextProblem(globalThis);
  if (problem) return showProblem(document, problem);
  const code = location.hash.slice(1);
  history.replaceState(null, "", location.pathname); // the code stays out of history
  let inv;
  try {
    inv = await post("/api/invitation", { code });
  } catch (e) {
    $("invite-who").textContent = "";
    $("invite-error").textContent = e.message;
    return;
  }
  $("invite-who").textContent = `${inv.kind === "reset" ? "A new password" : "Welcome"} for ${inv.name} (${inv.user}, ${inv.role}). At least 10 characters; a few words make a good one.`;
  $("invite-user").value = inv.user; // for password managers
  $("invite-submit").disabled = false;
  $("invite-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("invite-error").textContent = "";
    if ($("invite-password").value !== $("invite-again").value) {
      $("invite-error").textContent = "The two passwords differ.";
      return;
    }
    try {
      await post("/api/invitation/accept", { code, password: $("invite-password").value });
    } catch (e) {
      $("invite-error").textContent = e.message;
      return;
    }
    $("invite-password").value = "";
    $("invite-again").value = "";
    $("invite-submit").disabled = true;
    $("invite-done").hidden = false;
  });
}

main();
