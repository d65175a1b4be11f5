"""Helpers for the console tests (imported by test modules; fixtures live in conftest)."""

from __future__ import annotations

import os
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


def open_console(context, base_url: str, user: str | None = None, password: str | None = None):
    """Open /console with the tests' probe (probe.js: window.__probe) installed before the
    page's scripts; sign in if a user is given."""
    page = context.new_page()
    page.on("pageerror", lambda e: print("pageerror:", e))
    page.add_init_script(path=str(PROBE))
    page.goto(base_url + "/console/")
    poll(page, "() => window.__probe !== undefined && window.__probe.app !== null")
    if user:
        page.fill("#signin-user", user)
        page.fill("#signin-password", password or "")
        page.click("#signin-submit")
        poll(page, "() => window.__probe.ready()", 15)
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
