"""Cut the mono stream into fixed-length chunks stamped with their capture time. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_CHUNK_MS = 20
MAX_CHUNK_MS = 200


@dataclass(frozen=True)
class Chunk:
    pcm: np.ndarray  # (n,) int16
    first_sample: int  # index of pcm[0] in the session's sample clock
    capture_us: int  # wall-clock time of pcm[0]


class Chunker:
    def __init__(self, *, sample_rate: int, chunk_ms: int, start_us: int) -> None:
        if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
            raise ValueError(f"chunk_ms must be {MIN_CHUNK_MS}..{MAX_CHUNK_MS}, got {chunk_ms}")
        if (sample_rate * chunk_ms) % 1000:
            raise ValueError(f"{chunk_ms} ms is not a whole number of samples at {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.chunk_samples = sample_rate * chunk_ms // 1000
        self.start_us = start_us
        self._buf = np.zeros(0, dtype=np.int16)
        self._next_sample = 0  # session sample index of _buf[0]

    def _stamp(self, sample_index: int) -> int:
        return self.start_us + (sample_index * 1_000_000) // self.sample_rate

    def push(self, mono: np.ndarray) -> list[Chunk]:
        buf = np.concatenate([self._buf, mono.astype(np.int16, copy=False)])
        n = (len(buf) // self.chunk_samples) * self.chunk_samples
        out = []
        for off in range(0, n, self.chunk_samples):
            idx = self._next_sample + off
            out.append(Chunk(buf[off : off + self.chunk_samples].copy(), idx, self._stamp(idx)))
        self._buf = buf[n:].copy()
        self._next_sample += n
        return out

    @property
    def pending(self) -> int:
        """Samples held for the next chunk."""
        return len(self._buf)

    def skip(self, samples: int) -> None:
        """Advance the sample clock over an interval that was not captured (privacy pause)."""
        if len(self._buf):
            raise RuntimeError("flush() before skipping")
        self._next_sample += samples

    def flush(self) -> Chunk | None:
        """The last, shorter chunk (end of session or before a pause), if any."""
        if not len(self._buf):
            return None
        idx = self._next_sample
        chunk = Chunk(self._buf.copy(), idx, self._stamp(idx))
        self._next_sample += len(self._buf)
        self._buf = np.zeros(0, dtype=np.int16)
        return chunk
