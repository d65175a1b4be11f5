"""Shared fixtures: real mosquitto (mTLS), real relay process, local PKI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from support import PgCluster, make_broker, make_relay  # noqa: E402

UNITS = ["unit-a", "unit-b"]


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto with TLS, require_certificate and the unit ACL, on a free port."""
    b = make_broker(tmp_path, UNITS)
    yield b
    b.stop()


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
