"""`python -m edge_agent process IN.wav OUT.wav [--array NAME]`: the streaming front end on a file.

Runs exactly the pipeline the unit runs, fed block by block, and writes 16 kHz mono
int16 the same length as the input and time-aligned with it (the pipeline's latency
is trimmed at the start and flushed out at the end).
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

import numpy as np

from edge_agent.dsp.arrays import DEFAULT_ARRAY, available_arrays, load_array

SAMPLE_RATE = 16000
# The output does not depend on the block size (tests/dsp checks it bit for bit); whole
# seconds just spend less time in per-call numpy overhead than the unit's 40 ms chunks.
BLOCK = SAMPLE_RATE


def process_array(samples: np.ndarray, array: str | None = None, block: int = BLOCK) -> np.ndarray:
    """(n, channels) int16 -> (n,) int16, time-aligned with the input."""
    from edge_agent.dsp.pipeline import make_array_pipeline

    stage = make_array_pipeline(channels=samples.shape[1], sample_rate=SAMPLE_RATE, array=array)
    latency = stage.latency_samples
    padded = np.concatenate([samples, np.zeros((latency, samples.shape[1]), np.int16)])
    pieces = [stage.process(padded[i : i + block]) for i in range(0, padded.shape[0], block)]
    pieces.append(stage.flush())
    return np.concatenate(pieces)[latency:]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples; expected 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels()).astype(np.int16), w.getframerate()


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent process",
        description="Run the unit's mic-array front end on a multichannel WAV; write 16 kHz mono.",
    )
    parser.add_argument(
        "input", type=Path, help="multichannel 16-bit WAV, one channel per capture channel"
    )
    parser.add_argument("output", type=Path, help="16 kHz mono 16-bit WAV to write")
    parser.add_argument(
        "--array",
        default=DEFAULT_ARRAY,
        help=f"array geometry, one of: {', '.join(available_arrays())}",
    )
    args = parser.parse_args(argv)
    try:
        geometry = load_array(args.array)
        samples, rate = read_wav(args.input)
    except (OSError, ValueError, wave.Error) as exc:
        print(f"process: {exc}", file=sys.stderr)
        return 2
    if samples.shape[1] != geometry.capture_channels:
        print(
            f"process: {args.input} has {samples.shape[1]} channels "
            f"but array {args.array!r} captures "
            f"{geometry.capture_channels} (mics on channels {list(geometry.mic_channels)}); "
            "pass the matching --array or record all capture channels",
            file=sys.stderr,
        )
        return 2
    if rate != SAMPLE_RATE:
        print(
            f"process: {args.input} is {rate} Hz; the front end runs at {SAMPLE_RATE} Hz",
            file=sys.stderr,
        )
        return 2
    write_wav(args.output, process_array(samples, args.array))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
