"""Console fixtures: the system Chromium driven by Playwright (no `playwright install`),
and helpers to sign a scribe in through the real page."""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def chromium():
    from playwright import sync_api  # the dev extra

    if not Path(CHROMIUM).exists():  # make setup installs Debian's chromium
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make setup` (or set SCRIBELINK_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    yield ctx
    ctx.close()
