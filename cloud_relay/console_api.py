"""Moved: the console's API is `cloud_relay/api/archive.py`; this name stays for imports."""

from cloud_relay.api.archive import room_state, wrapped_for

__all__ = ["room_state", "wrapped_for"]
