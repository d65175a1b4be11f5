"""Fixtures for the update tests: a release key, pip's own wheel (every release carries
one, so the next update can install with it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scribelink import release as rel


@pytest.fixture(scope="session")
def release_key(tmp_path_factory):
    key = Ed25519PrivateKey.generate()
    d = tmp_path_factory.mktemp("release-key")
    (d / "release.key").write_bytes(rel.private_key_pem(key))
    (d / "release.key.pub").write_text(rel.public_key_text(key))
    return key, d / "release.key", d / "release.key.pub"


@pytest.fixture(scope="session")
def pip_wheel(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pip-wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(d),
                        "pip"], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return next(d.glob("pip-*.whl"))
