"""`scripts/bench dsp-starts`: does it matter where the stream starts?

Every other bench runs a scene from its first sample, which is a pause or a talker's first
sound. A unit's capture opens whenever a session starts, a privacy pause ends or the capture
comes back, and a file may be cut anywhere: its first frame then falls mid-word or
mid-burst, and a codec or MEMS mic may open on a transient (a thump, a pop, a click). The
mask's state is born on the stream's first frames; what it holds should not depend on
where they fell.

For each room of the split (TEST by default) this runs ours on the scene from its first
sample, from three later starts (0.02-1.5 s in, drawn per room from this bench's own seed)
and from its first sample with a capture transient added to every mic in its first 30 ms
(a thump, a pop or a click, -20 to -3 dBFS, drawn likewise). Every run is scored on the same
part of the scene, from 5 s to its end, 3.5 s or more after any start (SI-SDR and STOI
against the talkers' reverberant image at the reference mic, as `scripts/bench dsp`). Ours
runs as `python -m edge_agent process` does (warmed up on the file's first seconds) and
from a cold start (the unit).

    scripts/bench dsp-starts                    # 96 rooms, writes the doc
    scripts/bench dsp-starts --scenes 16 --no-write
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per process: set before numpy loads BLAS

import datetime
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from bench_common import record_section, split_bench_args
from bench_dsp import (
    ARRAY,
    OURS,
    OURS_COLD,
    _cached,
    _dsp_version,
    _mean,
    _worst_decile,
    si_sdr,
)
from bench_dsp_material import FS
from bench_dsp_scenes import SCENE_VERSION, load_scene

#: this bench's own seed: the later starts and the transients are drawn from it alone
STARTS_SEED = 5077
STARTS_VERSION = "v2"
LATER_STARTS = 3
SCORED_FROM_S = 5.0
SYSTEMS = (OURS, OURS_COLD)
FROM_START, LATER, TRANSIENT = (
    "from the scene's start",
    "from a later start (0.02-1.5 s in)",
    "opening on a capture transient",
)


def transient(n: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A capture's opening transient, the same at every mic: a thump (a damped 10-60 Hz
    sine, 5-40 ms), a pop (a one-sided pulse, 2-20 ms) or a click (1-4 samples), starting in
    the first 30 ms, its peak -20 to -3 dBFS, in int16 units."""
    at = int(rng.uniform(0.0, 0.03) * FS)
    peak = 32768 * 10 ** (rng.uniform(-20, -3) / 20) * rng.choice([-1.0, 1.0])
    kind = ("thump", "pop", "click")[int(rng.integers(3))]
    if kind == "thump":
        decay = rng.uniform(0.005, 0.04)
        t = np.arange(int(6 * decay * FS)) / FS
        x = np.exp(-t / decay) * np.sin(2 * np.pi * rng.uniform(10, 60) * t)
    elif kind == "pop":
        x = np.exp(-np.arange(int(rng.uniform(0.002, 0.02) * FS * 4)) / (rng.uniform(2, 20) * 16))
    else:
        x = np.ones(int(rng.integers(1, 5)))
    out = np.zeros(n)
    x = x[: n - at]
    out[at : at + x.size] = peak * x / np.abs(x).max()
    return kind, out


def _ours(mix: np.ndarray, system: str) -> np.ndarray:
    from edge_agent.dsp.cli import process_array

    warm = {} if system == OURS else {"warm_up_s": 0.0}
    return process_array(mix, ARRAY, **warm).astype(np.float64) / 32768


def _scores(reference: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from pystoi import stoi

    return si_sdr(reference, y), float(stoi(reference, y, FS, extended=False))


def evaluate(job: tuple[str, int, str, str]) -> dict:
    """One room, one system: the raw mic's and each start's scores on the scored part."""
    split, index, system, version = job

    def compute() -> dict:
        scene = load_scene(split, index, ARRAY)
        rng = np.random.default_rng([STARTS_SEED, index])
        offsets = sorted(int(rng.uniform(0.02, 1.5) * FS) for _ in range(LATER_STARTS))
        kind, bump = transient(scene.mixture.shape[0], rng)
        scored = slice(int(SCORED_FROM_S * FS), scene.reference.size)
        reference = scene.reference[scored]
        raw = scene.mixture[scored, 0] / 32768
        runs = {}
        for name, offset, mix in (
            (FROM_START, 0, scene.mixture),
            *((f"{LATER} {k}", off, scene.mixture[off:]) for k, off in enumerate(offsets)),
            (
                TRANSIENT,
                0,
                np.clip(np.rint(scene.mixture + bump[:, None]), -32768, 32767).astype(np.int16),
            ),
        ):
            y = _ours(mix, system)
            runs[name] = _scores(reference, y[scored.start - offset : scored.stop - offset])
        return {
            "scene": scene.name,
            "speech": scene.speech,
            "snr": scene.snr_db,
            "system": system,
            "transient": kind,
            "raw": _scores(reference, raw),
            "runs": runs,
        }

    return _cached(
        ["starts", STARTS_VERSION, SCENE_VERSION, ARRAY, split, index, system, version], compute
    )


def render(rows: list[dict], scenes: int, split: str) -> str:
    lines = [
        f"Where the stream starts ({split.upper()}, {scenes} rooms, recorded and synthetic "
        f"speech; `scripts/bench dsp-starts`). Each room scored from {SCORED_FROM_S:g} s to "
        "its end, however its stream started; change from the raw reference mic, SI-SDR dB / "
        'STOI; "under its own start": runs more than 1 dB SI-SDR under the same room run '
        "from its first sample.",
        "",
        "| system | where the stream starts | mean | worst 10 % | under its own start | "
        "the worst of them |",
        "|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        mine = [r for r in rows if r["system"] == system]
        for variant in (FROM_START, LATER, TRANSIENT):
            deltas, stois, under = [], [], []
            for r in mine:
                own = r["runs"][FROM_START][0]
                for name, (si, st) in r["runs"].items():
                    if not name.startswith(variant):
                        continue
                    deltas.append(si - r["raw"][0])
                    stois.append(st - r["raw"][1])
                    if variant != FROM_START:
                        under.append(si - own)
            worse = [d for d in under if d < -1.0]
            lines.append(
                f"| {system} | {variant} | {_mean(deltas):+.2f} / {_mean(stois):+.4f} | "
                f"{_worst_decile(deltas):+.2f} | "
                + (f"{len(worse)} of {len(under)} | {min(under):+.1f} dB |" if under else "- | - |")
            )
    lines += [
        "",
        f"Measured {datetime.date.today()} with `scripts/bench dsp-starts --scenes {scenes}` "
        f"(starts {STARTS_VERSION}, the DSP at {_dsp_version()}).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = split_bench_args("scripts/bench dsp-starts", __doc__, "rooms (the split's first)", argv)
    version = _dsp_version()
    jobs = [(args.split, i, s, version) for i in range(args.scenes) for s in SYSTEMS]
    with get_context("spawn").Pool(args.jobs) as pool:
        rows = list(pool.imap_unordered(evaluate, jobs, chunksize=2))
    body = render(rows, args.scenes, args.split)
    print(body)
    if not args.no_write:
        record_section(
            "dsp-starts",
            "DSP front end: where the stream starts (`scripts/bench dsp-starts`)",
            body,
        )
    return 0


if __name__ == "__main__" and Path(sys.argv[0]).name == "bench_dsp_starts.py":
    sys.exit(main(sys.argv[1:]))
