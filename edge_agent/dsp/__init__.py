"""The unit's DSP stage: multichannel int16 blocks in, mono int16 out.

`make_stage("off", ...)` passes the reference channel through untouched (the
walking skeleton and `--dsp off`); `make_stage("on", ...)` is the array front end.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Stage(Protocol):
    """A streaming, causal DSP stage. Blocks may be any length."""

    #: samples by which the output lags the input (algorithmic latency)
    latency_samples: int

    def process(self, block: np.ndarray) -> np.ndarray:
        """(n, channels) int16 -> (m,) int16; total output length tracks total input."""

    def flush(self) -> np.ndarray:
        """Emit what is still held back so total output length equals total input length."""

    def stats(self) -> dict:
        """Channel health for the unit's status, which travels in clear: dead and clipping
        channels only (no levels, no speech presence: they say when people talk)."""


class ReferencePassthrough:
    """`--dsp off`: the reference microphone (channel 0), sample for sample."""

    latency_samples = 0

    def __init__(self, channels: int, reference_channel: int = 0) -> None:
        if not 0 <= reference_channel < channels:
            raise ValueError(f"reference channel {reference_channel} not in 0..{channels - 1}")
        self.channels = channels
        self.reference_channel = reference_channel

    def process(self, block: np.ndarray) -> np.ndarray:
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) samples, got {block.shape}")
        return np.ascontiguousarray(block[:, self.reference_channel], dtype=np.int16)

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int16)

    def stats(self) -> dict:
        return {"dead_channels": [], "clipping_channels": []}


def make_stage(mode: str, *, channels: int, sample_rate: int, array: str | None = None) -> Stage:
    """Build the configured DSP stage. `mode` is "off" or "on"."""
    if mode == "off":
        return ReferencePassthrough(channels)
    if mode == "on":
        from edge_agent.dsp.pipeline import make_array_pipeline  # numpy/scipy heavy: import lazily

        return make_array_pipeline(channels=channels, sample_rate=sample_rate, array=array)
    raise ValueError(f"unknown dsp mode {mode!r}: use 'off' or 'on'")
