"""Microphone-array geometry: the JSON files in hardware/arrays/, read by the DSP.

A unit's config names its array by file name without `.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_ARRAY = "respeaker-4mic-pi"
# hardware/arrays/*.json, shipped inside the package (links in geometries/, which a wheel
# turns into files), so an installed unit finds them without the source tree
ARRAYS_DIR = Path(__file__).resolve().parent / "geometries"


@dataclass(frozen=True)
class ArrayGeometry:
    """One array as the DSP sees it. Channel indices are capture-channel indices."""

    name: str
    capture_channels: int
    mic_channels: tuple[int, ...]
    #: (len(mic_channels), 3) positions in metres, in mic_channels order
    mic_positions_m: np.ndarray
    #: capture-channel index of the reference microphone
    reference_channel: int

    @property
    def aperture_m(self) -> float:
        d = self.mic_positions_m[:, None, :] - self.mic_positions_m[None, :, :]
        return float(np.sqrt((d**2).sum(-1)).max())


def available_arrays(arrays_dir: Path = ARRAYS_DIR) -> list[str]:
    return sorted(p.stem for p in arrays_dir.glob("*.json"))


def load_array(name: str | None = None, arrays_dir: Path = ARRAYS_DIR) -> ArrayGeometry:
    """Load `hardware/arrays/<name>.json` (default: the ReSpeaker 4-Mic Pi HAT)."""
    name = name or DEFAULT_ARRAY
    path = arrays_dir / f"{name}.json"
    if not path.is_file():
        raise ValueError(
            f"unknown mic array {name!r}: no {path}; known arrays: {', '.join(available_arrays(arrays_dir))}"
        )
    spec = json.loads(path.read_text())
    positions = np.asarray(spec["mics_m"], dtype=np.float64)
    capture_channels = int(spec.get("capture_channels", len(positions)))
    if positions.shape != (capture_channels, 3):
        raise ValueError(
            f"{path}: mics_m must hold [x, y, z] for each of {capture_channels} channels"
        )
    kinds = {int(c["index"]): c["kind"] for c in spec.get("channels", [])}
    mic_channels = tuple(i for i in range(capture_channels) if kinds.get(i, "mic") == "mic")
    if not mic_channels:
        raise ValueError(f"{path}: no channel of kind 'mic'")
    reference = int(spec.get("reference_channel", mic_channels[0]))
    if reference not in mic_channels:
        raise ValueError(
            f"{path}: reference_channel {reference} is not a mic channel {mic_channels}"
        )
    return ArrayGeometry(
        name=name,
        capture_channels=capture_channels,
        mic_channels=mic_channels,
        mic_positions_m=positions[list(mic_channels)],
        reference_channel=reference,
    )
