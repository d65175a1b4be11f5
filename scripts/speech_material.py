"""Recorded human speech for the tests and benchmarks that judge audio quality: Codec2's
16 kHz reference recording (Debian's codec2-examples, fetched once with `apt-get download`
into the bench cache, never installed) and the alsa-utils channel-test voices. Nobody here wrote or
tuned either; scripts/bench_dsp_material.py fetches and caches them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

RATE = 16000


def recorded_speech(seconds: float) -> np.ndarray:
    """`seconds` of real recordings, int16 at 16 kHz: the Codec2 sentences, then the ALSA
    voices with 100 ms between them, repeated if needed."""
    import bench_dsp_material as material
    import soundfile as sf

    members = material._deb_members("codec2-examples", "speech_orig_16k.wav", "codec2/raw/")
    if not members:
        raise RuntimeError("codec2-examples holds no speech_orig_16k.wav any more")
    x, rate = sf.read(io.BytesIO(next(iter(members.values()))))
    parts = [material.to_16k(x, rate)]
    for path in sorted(Path("/usr/share/sounds/alsa").glob("*.wav")):
        if path.stem != "Noise":
            y, r = sf.read(path)
            parts += [material.to_16k(y, r), np.zeros(RATE // 10)]
    speech = np.concatenate(parts)
    n = int(seconds * RATE)
    speech = np.tile(speech, -(-n // len(speech)))[:n]
    return np.clip(np.round(speech * 32767), -32768, 32767).astype(np.int16)


def delay_removed(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 1600
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Both signals cut to their overlap after taking out the decoded one's constant delay
    (found by cross-correlation over the first seconds)."""
    from scipy.signal import correlate

    n = min(len(reference), len(decoded), 5 * RATE)
    c = correlate(decoded[:n].astype(float), reference[:n].astype(float), mode="full",
                  method="fft")
    mid = n - 1
    lag = int(np.argmax(c[mid:mid + max_lag + 1]))
    d = decoded[lag:]
    m = min(len(reference), len(d))
    return reference[:m].astype(float) / 32768, d[:m].astype(float) / 32768, lag
