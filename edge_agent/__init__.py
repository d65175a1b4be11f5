"""Scribelink exam-room unit agent: capture, DSP, seal, spool, uplink, puck and provisioning."""

__version__ = "0.1.0"
