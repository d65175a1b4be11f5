"""Shared fixtures: real mosquitto (mTLS), real relay process, local PKI."""

from __future__ import annotations


import pytest

from support import make_broker, make_relay

UNITS = ["unit-a", "unit-b"]


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto with TLS, require_certificate and the unit ACL, on a free port."""
    b = make_broker(tmp_path, UNITS)
    yield b
    b.stop()


@pytest.fixture
def relay(tmp_path, broker):
    """The relay as its own process, connected to `broker`, with an admin user."""
    r = make_relay(tmp_path, broker)
    yield r
    r.stop()
