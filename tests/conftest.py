"""Shared fixtures: real mosquitto (mTLS), real relay process, local PKI. And a guard:
with SCRIBELINK_CHECK_WORKTREE=1 (set by `make test`), a run that leaves new or changed
files in the checkout fails, so nothing the tests or the demo write lands in git's view."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import PgCluster, make_broker, make_relay

ROOT = Path(__file__).resolve().parent.parent
UNITS = ["unit-a", "unit-b"]
_WORKTREE_BEFORE: set[str] | None = None


def _worktree_changes() -> set[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


def pytest_sessionstart(session):
    global _WORKTREE_BEFORE
    # (with pytest-xdist the controller checks the whole run; a worker would see files
    # another worker's test has open for the moment)
    if os.environ.get("SCRIBELINK_CHECK_WORKTREE") == "1" and \
            "PYTEST_XDIST_WORKER" not in os.environ:
        _WORKTREE_BEFORE = _worktree_changes()


def pytest_sessionfinish(session, exitstatus):
    if _WORKTREE_BEFORE is None:
        return
    after = _worktree_changes()
    if after is None:
        return
    new = sorted(after - _WORKTREE_BEFORE)
    if new:
        print("\nThe test run changed the checkout (tests must write to tmp dirs):\n  "
              + "\n  ".join(new))
        session.exitstatus = 1


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto with TLS, require_certificate and the unit ACL, on a free port."""
    b = make_broker(tmp_path, UNITS)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def playwright_driver():
    """Playwright's driver, once per run: a second sync_playwright() in the same run fails
    ("Sync API inside the asyncio loop"), so every Chromium fixture launches from this."""
    from playwright import sync_api  # the dev extra

    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster for the whole run, started only if a test asks for it."""
    c = PgCluster()
    yield c
    c.stop()


@pytest.fixture
def relay_store(request):
    """The relay's store URL: SQLite (""), unless a module parametrizes it (tests/relay,
    tests/skeleton/test_relay.py run on both SQLite and PostgreSQL)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgres":
        return request.getfixturevalue("pg_cluster").database()
    return ""


@pytest.fixture
def relay(tmp_path, broker, relay_store):
    """The relay as its own process, connected to `broker`, with an admin user."""
    r = make_relay(tmp_path, broker, store_url=relay_store)
    yield r
    r.stop()
