"""`python -m edge_agent process IN.wav OUT.wav [--array NAME] [--cold]`: the front end on a file.

Runs the pipeline the unit runs, fed block by block, and writes 16 kHz mono int16 the
same length as the input and time-aligned with it (the pipeline's latency is trimmed at
the start and flushed out at the end). It first listens to the file's first WARM_UP_S
seconds and gives nothing out (ArrayPipeline.warm_up): the file is then processed as the
unit processes a room it has been listening to, which is what a unit on a clinic's wall
is all day, rather than as in its first seconds after power-on. `--cold` skips that and
gives exactly what the unit gives from power-on. The input may be any WAV a recorder
writes (integer or float samples, plain or extensible header); a file at another rate is
resampled to 16 kHz first (so the output is as long as the input in time), and a file
holding only the array's mics is placed on its mic channels. Each is said on stderr.
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.dsp.arrays import DEFAULT_ARRAY, ArrayGeometry, available_arrays, load_array

if TYPE_CHECKING:
    from edge_agent.dsp.pipeline import ArrayPipeline

SAMPLE_RATE = 16000
# The output does not depend on the block size (tests/dsp checks it bit for bit); long
# blocks just spend less time in per-call numpy overhead than the unit's 40 ms chunks. 64
# whole hops (~1 s) is one pass of the pipeline a call (its _MAX_FRAMES_PER_PASS), with no
# part of a hop to carry into the next call: 1 s blocks (16000) cost ~5 % more.
BLOCK = 64 * 256
#: how much of a file the front end listens to before processing it from its start: the
#: room's estimators have seen their windows by then (the noise floor's, the bands' 6 s);
#: longer files pay for it once (ten minutes: 1.7 % more)
WARM_UP_S = 10.0


def process_array(
    samples: np.ndarray,
    array: str | None = None,
    block: int = BLOCK,
    warm_up_s: float = WARM_UP_S,
    stage: ArrayPipeline | None = None,
) -> np.ndarray:
    """(n, channels) int16 -> (n,) int16, time-aligned with the input; the front end warmed
    up on the first `warm_up_s` seconds (0: from a cold start, as the unit at power-on).
    `stage`: a pipeline built otherwise (the bench's ablations), else the array's."""
    from edge_agent.dsp.pipeline import make_array_pipeline

    if stage is None:
        stage = make_array_pipeline(
            channels=samples.shape[1], sample_rate=SAMPLE_RATE, array=array
        )
    if warm_up_s > 0 and samples.shape[0]:
        # (process() takes a long block a slice at a time: no more memory than a block's)
        stage.warm_up(samples[: int(warm_up_s * SAMPLE_RATE)])
    latency = stage.latency_samples
    # into one preallocated output, the file then `latency` zeros fed as they are (no
    # padded copy of the whole file: an hour of 4-channel audio is 460 MB)
    out = np.empty(samples.shape[0] + latency, np.int16)
    filled = 0

    def take(piece: np.ndarray) -> None:
        nonlocal filled
        out[filled : filled + piece.size] = piece
        filled += piece.size

    for i in range(0, samples.shape[0], block):
        take(stage.process(samples[i : i + block]))
    take(stage.process(np.zeros((latency, samples.shape[1]), np.int16)))
    take(stage.flush())
    assert filled == out.size  # the pipeline gives back exactly what it was given
    return out[latency:]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(n, channels) int16 and the rate, from a WAV as recording tools write it: 8, 16, 24
    or 32-bit integer PCM or 32/64-bit float, plain or WAVE_FORMAT_EXTENSIBLE (sox and
    many recorders write that for more than two channels). 16-bit samples come back
    untouched; others are scaled to 16 bits and rounded (float clipped to full scale).

    Plain 16-bit PCM, what most tools write, is read with the standard library; the rest
    with scipy's reader, whose import (a fifth of a second: it brings scipy.sparse) is
    then paid only by the files that need it."""
    import struct
    import warnings

    plain = _read_plain_16bit(path)
    if plain is not None:
        return plain

    try:
        from scipy.io import wavfile
    except ImportError as exc:  # (a bare `pip install scribelink`, without the unit's extras)
        raise ValueError(
            f"{path} is not plain 16-bit PCM, and reading it needs scipy, which comes with the "
            f"unit's install: pip install 'scribelink[unit]'"
        ) from exc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wavfile.WavFileWarning)  # LIST/INFO chunks and such
        try:
            rate, data = wavfile.read(str(path))
        except ValueError as exc:
            raise ValueError(f"{path}: not a WAV file this can read ({exc})") from exc
        except (EOFError, struct.error, UnboundLocalError) as exc:
            # (scipy's reader on a header cut short: a chunk shorter than it says, or no
            # fmt chunk before the end, which leaves its own rate unset)
            raise ValueError(
                f"{path}: not a WAV file this can read (its header is cut short or damaged)"
            ) from exc
    data = data[:, None] if data.ndim == 1 else data
    if data.dtype == np.int16:
        return data, rate
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned
        return ((data.astype(np.int16) - 128) << 8).astype(np.int16), rate
    if data.dtype == np.int32:  # 24-bit comes left-justified in int32, like 32-bit
        scaled = np.round(data / 65536.0)
    elif data.dtype.kind == "f":  # NaN (a broken writer) is silence, not full scale
        finite = np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
        scaled = np.round(finite * 32768.0)
    else:
        raise ValueError(f"{path}: {data.dtype} samples; expected PCM or float")
    return np.clip(scaled, -32768, 32767).astype(np.int16), rate


def _read_plain_16bit(path: Path) -> tuple[np.ndarray, int] | None:
    """(n, channels) int16 and the rate if `path` is a plain 16-bit PCM WAV the standard
    library reads; None for anything else (extensible headers, other sample formats, not a
    WAV at all): scipy's reader then decides, and says what is wrong. The samples are a
    read-only view of the bytes read (copying ten minutes of 4 channels cost 0.2 s)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return None
            channels, rate = w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None
    data = np.frombuffer(frames, "<i2")
    return data[: data.size - data.size % channels].reshape(-1, channels), rate


def to_capture_layout(
    samples: np.ndarray, rate: int, geometry: ArrayGeometry
) -> tuple[np.ndarray, list[str]]:
    """Fit a recording to what the front end takes: the array's capture channels at
    16 kHz. A file holding only the array's mics (the USB array's four raw mics without
    its processed and playback channels) is placed on the mic channels; another rate is
    resampled (polyphase, linear phase, so the output stays time-aligned). Returns the
    samples and what was done, for the user; raises ValueError where it cannot fit."""
    notes = []
    channels = samples.shape[1]
    if channels != geometry.capture_channels:
        if channels != len(geometry.mic_channels):
            raise ValueError(
                f"has {channels} channels but array {geometry.name!r} captures "
                f"{geometry.capture_channels} (mics on channels {list(geometry.mic_channels)}); "
                "pass the matching --array or record all capture channels"
            )
        full = np.zeros((samples.shape[0], geometry.capture_channels), np.int16)
        full[:, list(geometry.mic_channels)] = samples
        samples = full
        notes.append(
            f"{channels} channels taken as the array's mics (capture channels "
            f"{list(geometry.mic_channels)})"
        )
    if rate != SAMPLE_RATE:
        samples = to_16k(samples, rate)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    return samples, notes


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """(n, channels) int16 at `rate` -> int16 at 16 kHz: a linear-phase polyphase filter
    (scipy's resample_poly), so the result stays time-aligned with the input."""
    if rate == SAMPLE_RATE:
        return samples
    if rate < 8000 or rate > 384000:
        raise ValueError(f"is {rate} Hz; the front end runs at {SAMPLE_RATE} Hz")
    from math import gcd

    try:
        from scipy.signal import resample_poly
    except ImportError as exc:
        raise ValueError(
            f"is {rate} Hz, and resampling it to {SAMPLE_RATE} Hz needs scipy, which comes "
            "with the unit's install: pip install 'scribelink[unit]'"
        ) from exc

    g = gcd(SAMPLE_RATE, rate)
    up, down = SAMPLE_RATE // g, rate // g
    out = np.empty((-(-samples.shape[0] * up // down), samples.shape[1]), np.int16)
    for c in range(samples.shape[1]):  # a channel at a time, in float32: an hour at 48 kHz
        resampled = resample_poly(samples[:, c].astype(np.float32), up, down)  # stays small
        out[:, c] = np.clip(np.round(resampled), -32768, 32767)
    return out


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
        "input",
        type=Path,
        help="multichannel WAV (integer PCM or float, any rate: resampled to 16 kHz), one "
        "channel per capture channel, or one per mic",
    )
    parser.add_argument("output", type=Path, help="16 kHz mono 16-bit WAV to write")
    parser.add_argument(
        "--array",
        default=DEFAULT_ARRAY,
        help=f"array geometry, one of: {', '.join(available_arrays())}",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start as the unit does at power-on, without first listening to the file's "
        f"first {WARM_UP_S:g} s",
    )
    args = parser.parse_args(argv)
    try:
        geometry = load_array(args.array)
        samples, rate = read_wav(args.input)
    except (OSError, ValueError) as exc:
        print(f"process: {exc}", file=sys.stderr)
        return 2
    try:
        samples, notes = to_capture_layout(samples, rate, geometry)
    except ValueError as exc:
        print(f"process: {args.input} {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"process: {args.input}: {note}", file=sys.stderr)
    try:  # before the processing: a long file must not run to nowhere
        with open(args.output, "wb"):
            pass
    except OSError as exc:
        print(f"process: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    warm_up_s = 0.0 if args.cold else WARM_UP_S
    write_wav(args.output, process_array(samples, args.array, warm_up_s=warm_up_s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
