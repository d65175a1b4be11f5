"""The relay's store package: all of the relay's SQL (`store.py`), its schema as
migrations (`migrations.py`), the SQLite/PostgreSQL connections (`db.py`) and the batching
stream writer (`writer.py`)."""

from cloud_relay.store.accounts import UserExists
from cloud_relay.store.clinic import RoomExists
from cloud_relay.store.db import StoreUnavailable
from cloud_relay.store.store import (
    Batch,
    Frame,
    Store,
    StreamRow,
    User,
    now_us,
)

__all__ = ["Batch", "Frame", "RoomExists", "Store", "StoreUnavailable", "StreamRow", "User",
           "UserExists", "now_us"]
