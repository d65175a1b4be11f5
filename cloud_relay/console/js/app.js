// The scribe console's entry: build the store, the views and the controller, and start.
// Everything audible is decrypted in this page; the relay only ever hands over sealed frames.

import { ConsoleController } from "./controller.js";
import { Alerts, Notifier } from "./cues.js";
import { Api } from "./net.js";
import { Prefs } from "./prefs.js";
import { secureContextProblem, showProblem } from "./secure.js";
import { Store } from "./state.js";
import { SignInView } from "./views/signin.js";
import { TopBar } from "./views/topbar.js";

const prefs = new Prefs(sessionStorage, localStorage);
const store = new Store();
const api = new Api({ token: prefs.token });

// Exported so the running console can be looked at from devtools (and tests/console/probe.js);
// nothing in the page reads it.
export const app = new ConsoleController({
  store, api, prefs, alerts: new Alerts(), notifier: new Notifier(), signin: new SignInView(), topbar: new TopBar(),
});
const problem = secureContextProblem(globalThis);
if (problem) showProblem(document, problem);
else app.boot();
