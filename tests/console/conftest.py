"""Console fixtures: the system Chromium driven by Playwright (no `playwright install`),
and helpers to sign a scribe in through the real page."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_support import CHROMIUM, CHROMIUM_ARGS, StaticConsole


@pytest.fixture(scope="session")
def chromium(playwright_driver):
    if not Path(CHROMIUM).exists():  # make setup installs Debian's chromium
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make setup` (or set SCRIBELINK_CHROMIUM)")
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(chromium):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    yield ctx
    ctx.close()


@pytest.fixture(scope="session")
def static_console():
    """The console's static files on a local HTTP server (no relay)."""
    srv = StaticConsole()
    yield srv.url
    srv.close()


@pytest.fixture(scope="module")
def module_page(chromium, static_console):
    """A blank page on the static server, to import the console's modules into. The pure
    modules keep no state between calls, so one page serves a whole test module."""
    ctx = chromium.new_context()
    page = ctx.new_page()
    page.on("pageerror", lambda e: print("pageerror:", e))
    page.goto(static_console + "/")
    yield page
    ctx.close()
