"""The relay's store package: all of the relay's SQL (`store.py`), its schema as
migrations (`migrations.py`), the SQLite/PostgreSQL connections (`db.py`) and the batching
stream writer (`writer.py`)."""

from cloud_relay.store.db import StoreUnavailable
from cloud_relay.store.store import (
    Batch,
    Frame,
    Store,
    StreamRow,
    User,
    check_password,
    hash_password,
    now_us,
)

__all__ = ["Batch", "Frame", "Store", "StoreUnavailable", "StreamRow", "User",
           "check_password", "hash_password", "now_us"]
