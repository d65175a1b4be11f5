"""Helpers for the console tests (imported by test modules; fixtures live in conftest)."""

from __future__ import annotations

import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM = os.environ.get("SCRIBELINK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "probe.js"
# Screenshots the tests take land in run/ (not tracked). docs/screenshots is refreshed on
# purpose: `scripts/screenshots` runs the tests that take them with this set to it.
SCREENSHOTS = Path(os.environ.get("SCRIBELINK_SCREENSHOTS_DIR") or ROOT / "run" / "screenshots")


def open_console(context, base_url: str, user: str | None = None, password: str | None = None,
                 *, ready: bool = True):
    """Open /console with the tests' probe (probe.js: window.__probe) installed before the
    page's scripts; sign in if a user is given (and, with `ready`, wait until the desk runs:
    a device the clinic has not approved yet shows its waiting page instead)."""
    page = context.new_page()
    page.on("pageerror", lambda e: print("pageerror:", e))
    page.add_init_script(path=str(PROBE))
    page.goto(base_url + "/console/")
    poll(page, "() => window.__probe !== undefined && window.__probe.app !== null")
    if user:
        page.fill("#signin-user", user)
        page.fill("#signin-password", password or "")
        page.click("#signin-submit")
        poll(page, "() => window.__probe.ready()" if ready else
             "() => window.__probe.ready() || window.__probe.waiting()", 15)
    return page


def screenshot(page, name: str) -> Path:
    """Save a screenshot of `page` as SCREENSHOTS/name."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path))
    return path


def poll(page, fn: str, timeout_s: float = 10.0, interval_s: float = 0.05):
    """Wait until `fn` (a JS function) returns something truthy. Unlike wait_for_function
    this needs no eval in the page, so it works under the console's strict CSP."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = page.evaluate(fn)
        except Exception as e:  # noqa: BLE001 - navigation in progress, page not ready
            v, err = None, e
        else:
            err = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{fn} stayed falsy for {timeout_s}s" + (f" ({err})" if err else ""))
        time.sleep(interval_s)


# the static server's URL prefixes: the console, and the tests' own modules (testkit.js)
STATIC_MOUNTS = (("/console/", ROOT / "cloud_relay" / "console"),
                 ("/tests/", Path(__file__).parent))


class _ConsoleFiles(SimpleHTTPRequestHandler):
    """STATIC_MOUNTS, and / an empty page to import modules into."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in STATIC_MOUNTS:
            if path.startswith(prefix):
                rel = Path(path[len(prefix):])
                if ".." in rel.parts:
                    break
                return str(root / rel)
        return str(ROOT / "nonexistent")  # 404

    def do_GET(self) -> None:  # http.server calls it by this name
        if self.path == "/":
            body = b"<!doctype html><title>console modules</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


class StaticConsole:
    """The console's static files (and the tests' own modules) on a free loopback port:
    no relay, no CSP. For tests of the page's modules and of the envelope vectors."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ConsoleFiles)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def in_module(page, module: str, body: str, arg=None):
    """Run `body` (the inside of an async JS function) in `page` with `m` bound to the
    module at `module` (under /console/js/, or a path from the server root) and `arg` to
    `arg`; return what it returns."""
    url = module if module.startswith("/") else f"/console/js/{module}"
    return page.evaluate(f"async (arg) => {{ const m = await import('{url}'); {body} }}", arg)
