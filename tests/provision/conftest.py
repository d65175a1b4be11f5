"""Fixtures for the provisioning tests; the parts themselves are in provision_support.py."""

from __future__ import annotations

import pytest
from provision_support import Cable, write_alsa
from puck_harness import PuckSim  # the one harness for scripts/puck-sim


@pytest.fixture
def cable(tmp_path):
    c = Cable(tmp_path)
    yield c
    c.close()


@pytest.fixture
def alsa_conf(tmp_path):
    d = tmp_path / "alsa"
    d.mkdir()
    return write_alsa(d)


@pytest.fixture
def puck_sim(tmp_path):
    s = PuckSim(tmp_path / "puck")
    yield s
    s.close()
