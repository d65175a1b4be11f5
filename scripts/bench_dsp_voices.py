"""`scripts/bench dsp-voices`: ours on the bench's rooms when the talkers are voices no corpus
has.

The mask was trained on a few dozen recorded people and espeak, and every bench so far
scores it on recorded people, espeak and flite. A clinic also hears children, hoarse and
whispering patients, interpreters' headsets. This bench keeps the bench's rooms (TEST's by
default: the same rooms, noise, levels and turn-taking as `scripts/bench dsp`'s synthetic
half) and gives each talker a voice made from its parts instead
(`train_dsp_mask.parametric_voice`: a harmonic source at the talker's own pitch, 75-400 Hz,
that glides, falls and jitters; syllables at 2.5-8 a second; formants that move from
syllable to syllable; fricatives and breath). Each talker keeps one pitch for the scene,
as a person does. No mask or setting was chosen on these voices.

It scores the raw reference mic, ours (exactly `python -m edge_agent process`) and ours
without the noise events (the one stage that acts at any depth on the mask's word alone),
as `scripts/bench dsp` scores: SI-SDR and STOI against the talkers' reverberant image at
the reference mic. It is for looking: what a voice the mask does not know costs, and where.

    scripts/bench dsp-voices                    # 96 rooms, writes the doc
    scripts/bench dsp-voices --scenes 16 --no-write
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
from bench_dsp import ARRAY, OURS, RAW, _cached, _dsp_version, _mean, _scored, run_ours, run_raw
from bench_dsp_scenes import SCENE_VERSION, SNRS_DB, build_scene

#: the voices' own seed: a talker's pitch and its utterances are drawn from it, never from
#: the mask's training seeds
VOICES_SEED = 9411
VOICES_VERSION = "v1"
NO_EVENTS = "ours without noise events"
SYSTEMS = (RAW, OURS, NO_EVENTS)


def _voice_utterance(split: str, rng: np.random.Generator, voice_index: int) -> np.ndarray:
    """The scene's next utterance for talker `voice_index`: a voice made from its parts, at
    the pitch that talker keeps (75-400 Hz, log-uniform), always with formants."""
    from train_dsp_mask import parametric_voice

    pitch = np.random.default_rng([VOICES_SEED, voice_index]).uniform(np.log(75.0), np.log(400.0))
    return parametric_voice(rng, base_hz=float(np.exp(pitch)), formants=True).astype(np.float64)


def load(split: str, index: int):
    """Scene `index` (odd: the bench's synthetic half) of `split`, its talkers' voices made
    from their parts; kept in memory by the caller only as long as it is scored."""
    return build_scene(split, index, ARRAY, synthetic=_voice_utterance)


def evaluate(job: tuple[str, int, str, str]) -> dict:
    split, index, system, version = job

    def compute() -> dict:
        scene = load(split, index)
        if system == RAW:
            y = run_raw(scene.mixture)
        else:
            y = run_ours(scene.mixture, {"events": None} if system == NO_EVENTS else None)
        row = _scored(scene, system, y)
        row["scene"] = f"voices-{scene.name}"
        return row

    key = ["voices", VOICES_VERSION, SCENE_VERSION, ARRAY, split, index, system]
    return _cached(key if system == RAW else [*key, version], compute)


def render(rows: list[dict], scenes: int, split: str) -> str:
    by = {(r["scene"], r["system"]): r for r in rows}
    names = sorted({r["scene"] for r in rows})

    def change(rooms: list[str], system: str, metric: str) -> list[float]:
        return [by[(s, system)][metric] - by[(s, RAW)][metric] for s in rooms]

    lines = [
        f"The bench's rooms ({split.upper()}, {scenes} rooms of the synthetic half) with "
        "voices no corpus has (`scripts/bench dsp-voices`; each talker a voice made from its "
        "parts at a pitch of its own, 75-400 Hz, with formants). Change from the raw "
        "reference mic, SI-SDR dB / STOI; for looking, not for tuning.",
        "",
        "| system | mean | "
        + " | ".join(f"{s:g} dB" for s in SNRS_DB)
        + " | rooms > 1 dB under raw |",
        "|---|---|" + "---|" * len(SNRS_DB) + "---|",
    ]
    for system in (OURS, NO_EVENTS):
        cells = []
        for snr in SNRS_DB:
            at = [s for s in names if by[(s, RAW)]["snr"] == snr]
            cells.append(
                f"{_mean(change(at, system, 'si_sdr')):+.1f} / "
                f"{_mean(change(at, system, 'stoi')):+.3f}"
                if at
                else "-"
            )
        worse = [d for d in change(names, system, "si_sdr") if d < -1.0]
        lines.append(
            f"| {system} | {_mean(change(names, system, 'si_sdr')):+.2f} / "
            f"{_mean(change(names, system, 'stoi')):+.4f} | "
            + " | ".join(cells)
            + f" | {len(worse)} of {len(names)} |"
        )
    lines += [
        "",
        f"Measured {datetime.date.today()} with `scripts/bench dsp-voices --scenes {scenes}` "
        f"(voices {VOICES_VERSION}, the DSP at {_dsp_version()}).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = split_bench_args(
        "scripts/bench dsp-voices", __doc__, "rooms (the split's odd scenes)", argv
    )
    version = _dsp_version()
    indices = [2 * k + 1 for k in range(args.scenes)]
    jobs = [(args.split, i, s, version) for i in indices for s in SYSTEMS]
    with get_context("spawn").Pool(args.jobs) as pool:
        rows = list(pool.imap_unordered(evaluate, jobs, chunksize=3))
    body = render(rows, args.scenes, args.split)
    print(body)
    if not args.no_write:
        record_section(
            "dsp-voices",
            "DSP front end with voices no corpus has (`scripts/bench dsp-voices`)",
            body,
        )
    return 0


if __name__ == "__main__" and Path(sys.argv[0]).name == "bench_dsp_voices.py":
    sys.exit(main(sys.argv[1:]))
