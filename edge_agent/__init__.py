"""Scribelink exam-room unit agent: capture, DSP, seal, spool, uplink, puck and provisioning."""

from scribelink import __version__

__all__ = ["__version__"]
