"""Deploy fixtures: a relay host as `python -m cloud_relay init` makes it, running."""

from __future__ import annotations

import contextlib

import pytest
from deploykit import clinic_relay_running


@pytest.fixture
def clinic_relay_for(tmp_path):
    """init DIR --host HOST, then the broker and the relay as init configured them:
    -> (DIR, https port, broker port, init's CompletedProcess)."""
    with contextlib.ExitStack() as stack:
        yield lambda host: stack.enter_context(clinic_relay_running(tmp_path, host))
