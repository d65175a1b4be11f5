"""Moved: the console's API is `cloud_relay/api/archive.py`; this name stays for imports."""

from cloud_relay.api.archive import STALE_STATUS_S, room_state, wrapped_for

__all__ = ["STALE_STATUS_S", "room_state", "wrapped_for"]
