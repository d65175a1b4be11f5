"""The relay suite runs on both stores: every test here that uses the `relay` fixture
(or `relay_store`) runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def relay_store(request):
    if request.param == "postgres":
        return request.getfixturevalue("pg_cluster").database()
    return ""
