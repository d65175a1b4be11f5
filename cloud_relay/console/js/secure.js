// Before anything else: is this page somewhere the console can work safely? Opened over
// plain http:// by a name other than this machine's, the browser is right to call it
// insecure: WebCrypto is switched off (no keys, no audio) and the password would cross
// the network readable. Say so, on the page, with the address that works -- instead of
// signing in and showing a blank console.

/** What is wrong with where this page runs, or null. `env`: {isSecureContext, location,
 * crypto} (the window, or a stand-in in tests). */
export function secureContextProblem(env) {
  const loc = env.location;
  if (!env.isSecureContext) {
    const https = `https://${loc.host}${loc.pathname}`;
    const local = loc.port ? `http://localhost:${loc.port}${loc.pathname}` : `http://localhost${loc.pathname}`;
    return {
      title: "This page is not secure, so the console is switched off",
      text: `It was opened over plain HTTP at ${loc.protocol}//${loc.host}. Browsers turn off the encryption the console needs (WebCrypto) on such pages, and a password typed here would cross the network readable.`,
      fixes: [
        `Open ${https} instead (the relay serves HTTPS).`,
        "If the browser warns about that address's certificate, install the clinic's ca.pem (made by `python -m cloud_relay init`; ask clinic IT) as a trusted certificate authority, then reload.",
        `For a demo on the relay's own machine: ${local}`,
      ],
      https,
    };
  }
  if (!env.crypto || !env.crypto.subtle) {
    return {
      title: "This browser cannot run the console",
      text: "It has no WebCrypto, which the console needs to open audio sealed for you.",
      fixes: ["Use a current Chromium, Chrome, Edge, Firefox or Safari."],
      https: null,
    };
  }
  return null;
}

/** Show `problem` across the page (visible, not in a hidden card) and keep the sign-in
 * away: nothing should be typed here. */
export function showProblem(doc, problem) {
  const box = doc.createElement("section");
  box.id = "insecure";
  box.className = "insecure";
  box.setAttribute("role", "alert");
  const h = doc.createElement("h1");
  h.textContent = problem.title;
  const p = doc.createElement("p");
  p.textContent = problem.text;
  const ul = doc.createElement("ul");
  for (const fix of problem.fixes) {
    const li = doc.createElement("li");
    li.textContent = fix;
    ul.append(li);
  }
  box.append(h, p, ul);
  if (problem.https) {
    const a = doc.createElement("a");
    a.href = problem.https;
    a.className = "primary";
    a.id = "insecure-https";
    a.textContent = `Go to ${problem.https}`;
    box.append(a);
  }
  for (const id of ["signin", "console"]) {
    const el = doc.getElementById(id);
    if (el) el.hidden = true;
  }
  doc.body.prepend(box);
}
