"""`scripts/bench dsp-sessions`: the front end over sessions longer than the bench's scenes.

A clinic's unit runs all day, but `scripts/bench dsp` scores 10 s files (`process` warms up
on a file's first 10 s, then processes it from its start), and a 10 s file cannot show what
a room does to the front end after minutes. Here each scene's talkers and noise (their
images at every mic, as bench_dsp_scenes.build_scene makes them) are laid end to end into
one long file of the same room, and ours is scored 10 s at a time against the raw reference
mic (SI-SDR and STOI, each segment against its own talkers' image):

- **held**: the room at its own SNR, and re-levelled to 30 dB (every room clean), for 40 s:
  the first 10 s (as the bench's scenes are processed) against the 30 s after it;
- **a noise that comes and goes**: 30 dB for 30 s, 5 dB for 30 s, 30 dB again for 20 s
  (a fan switched on, then off), each segment against the same room held at that SNR
  (its segments after the first).

    scripts/bench dsp-sessions                      # 96 TEST scenes, writes the doc
    scripts/bench dsp-sessions --split tune --scenes 24 --no-write

Scores are cached by scene and the DSP's source, as `scripts/bench dsp`'s are; the scenes
are rebuilt each time they are scored (the images are not cached: ~5 MB a scene).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per process: set before numpy loads BLAS

import argparse
import datetime
import sys
from multiprocessing import get_context

import numpy as np
from bench_common import record_section
from bench_dsp import (
    ARRAY,
    _cached,
    _dsp_version,
    _mean,
    _worst_decile,
    run_ours,
    run_raw,
    si_sdr,
)
from bench_dsp_material import FS, check_material
from bench_dsp_scenes import SCENE_VERSION, build_scene

SEGMENT_S = 10.0
HELD_SEGMENTS = 4
#: the noise that comes and goes: the SNR of each 10 s segment
COMES_AND_GOES = (30.0, 30.0, 30.0, 5.0, 5.0, 5.0, 30.0, 30.0)
CLEAN_DB = 30.0
#: a room "below the raw mic" after its first 10 s: by more than this, SI-SDR
BELOW_DB = 1.0
#: what else runs on the clean rooms (every room re-levelled to CLEAN_DB), beside ours
CLEAN_ABLATIONS = {
    "events in frames of any shape, a fricative's too (as before 2026-12-06, fifth "
    "session)": {"events_fricative_db": None},
    "every tone's events, whether or not they come back (as before 2026-12-06, sixth "
    "session)": {"events_recur": None},
    "no noise events (EVENTS)": {"events": None},
}
#: what else runs on the noise that comes and goes, beside ours
CAME_ABLATIONS = {
    "the noise heard in pauses not lowered to the tracker's floor (as before 2026-12-06, "
    "ninth session)": {"pause_noise_over_minimum": None},
}


def lay_end_to_end(
    images: dict, snrs: list[float], capture_channels: int, mic_channels: tuple, ref: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The talkers' and the noise's images ((mics, n) each) laid end to end, one copy a
    segment, the noise scaled so that each segment's SNR at mic `ref` is `snrs`' entry:
    ((segments x n, capture_channels) int16 as the array captures it, with the mics'
    self-noise; (segments x n,) the talkers' image at `ref` on the same scale)."""
    speech, noise = images["speech"], images["noise"]
    own = 10 * np.log10(np.sum(speech[ref] ** 2) / np.sum(noise[ref] ** 2))
    mics = np.concatenate([speech + noise * 10 ** ((own - snr) / 20) for snr in snrs], axis=1)
    level = min(1.0, 0.7 / np.abs(mics).max())  # (the loudest moment does not clip)
    channels = np.zeros((mics.shape[1], capture_channels))
    rng = np.random.default_rng(0)
    # the mics' self-noise (-80 dBFS, as the scenes'): no stretch of digital silence
    channels[:, list(mic_channels)] = mics.T * level + rng.standard_normal(mics.T.shape) * 1e-4
    capture = np.clip(np.round(channels * 32768), -32768, 32767).astype(np.int16)
    return capture, np.tile(speech[ref], len(snrs)) * level


def _segments(reference: np.ndarray, estimate: np.ndarray) -> list[tuple[float, float]]:
    """(SI-SDR, STOI) of each SEGMENT_S of `estimate` against `reference`."""
    from pystoi import stoi

    n = int(SEGMENT_S * FS)
    return [
        (si_sdr(reference[i : i + n], estimate[i : i + n]),
         float(stoi(reference[i : i + n], estimate[i : i + n], FS, extended=False)))
        for i in range(0, reference.size - n + 1, n)
    ]


def evaluate_session(job: tuple[str, int, str]) -> dict:
    """The raw mic's and ours' segment scores on one scene's sessions; cached."""
    split, index, version = job

    def compute() -> dict:
        from edge_agent.dsp.arrays import load_array

        geometry = load_array(ARRAY)
        scene = build_scene(split, index, ARRAY, keep_images=True)
        ref = geometry.mic_channels.index(geometry.reference_channel)
        row: dict = {"scene": scene.name, "speech": scene.speech, "snr": scene.snr_db}
        sessions = {
            "own": [scene.snr_db] * HELD_SEGMENTS,
            "clean": [CLEAN_DB] * HELD_SEGMENTS,
            "noisy": [COMES_AND_GOES[3]] * HELD_SEGMENTS,
            "comes_and_goes": list(COMES_AND_GOES),
        }
        for name, snrs in sessions.items():
            capture, reference = lay_end_to_end(
                scene.images, snrs, geometry.capture_channels, geometry.mic_channels, ref
            )
            row[name] = {
                "raw": _segments(reference, run_raw(capture)),
                "ours": _segments(reference, run_ours(capture)),
            }
            if name == "comes_and_goes":
                for label, overrides in CAME_ABLATIONS.items():
                    row[f"comes_and_goes, {label}"] = {
                        "raw": row[name]["raw"],
                        "ours": _segments(reference, run_ours(capture, overrides)),
                    }
            if name == "clean":
                for label, overrides in CLEAN_ABLATIONS.items():
                    row[f"clean, {label}"] = {
                        "raw": row[name]["raw"],
                        "ours": _segments(reference, run_ours(capture, overrides)),
                    }
        return row

    key = [SCENE_VERSION, ARRAY, split, index, "sessions", version, HELD_SEGMENTS, CLEAN_DB]
    return _cached([*key, list(COMES_AND_GOES), CLEAN_ABLATIONS, CAME_ABLATIONS], compute)


def _deltas(row: dict, session: str, measure: int) -> list[float]:
    """Ours minus the raw mic, a segment."""
    s = row[session]
    return [o[measure] - r[measure] for o, r in zip(s["ours"], s["raw"], strict=True)]


def render(rows: list[dict], split: str) -> str:
    lines = [
        f"{split.upper()}, {len(rows)} scenes, recorded and synthetic speech together: each "
        "room's talkers and noise laid end to end into one long file of that room, scored "
        f"{SEGMENT_S:.0f} s at a time; change from the raw reference mic, SI-SDR dB (STOI).",
        "",
        "**Held**: 40 s of the room as it is, through `process` (which first listens to "
        "the file's first 10 s: those 10 s are processed as by a unit that knows the room, "
        "as every bench scene is); the 30 s after them are what a unit that has been running "
        f"for a while hears. A room below the raw mic: its last 30 s more than "
        f"{BELOW_DB:.0f} dB under it.",
        "",
        "| the room | scenes | first 10 s | the 30 s after: mean | worst 10 % | rooms below "
        "the raw mic |",
        "|---|---|---|---|---|---|",
    ]
    groups = (
        ("at its own SNR, -5 to 15 dB", "own", lambda r: r["snr"] <= 15),
        ("at its own SNR, 20 to 30 dB", "own", lambda r: r["snr"] >= 20),
        (f"every room re-levelled to {CLEAN_DB:.0f} dB", "clean", lambda r: True),
        *(
            (f"the same, ours with {label}", f"clean, {label}", lambda r: True)
            for label in CLEAN_ABLATIONS
        ),
        (f"every room re-levelled to {COMES_AND_GOES[3]:.0f} dB", "noisy", lambda r: True),
    )
    for label, session, take in groups:
        chosen = [r for r in rows if take(r)]
        if not chosen:
            continue
        first = _mean([_deltas(r, session, 0)[0] for r in chosen])
        first_stoi = _mean([_deltas(r, session, 1)[0] for r in chosen])
        later = [_mean(_deltas(r, session, 0)[1:]) for r in chosen]
        later_stoi = _mean([_mean(_deltas(r, session, 1)[1:]) for r in chosen])
        below = [r["scene"] for r, d in zip(chosen, later, strict=True) if d < -BELOW_DB]
        lines.append(
            f"| {label} | {len(chosen)} | {first:+.2f} ({first_stoi:+.4f}) | "
            f"{_mean(later):+.2f} ({later_stoi:+.4f}) | {_worst_decile(later):+.2f} | "
            f"{len(below)}{' (' + ', '.join(below) + ')' if below else ''} |"
        )
    # the noise that comes and goes, a segment, against the room held at that SNR
    held = {CLEAN_DB: "clean", COMES_AND_GOES[3]: "noisy"}
    head = " | ".join(f"{k * SEGMENT_S:.0f}-{(k + 1) * SEGMENT_S:.0f} s" for k in range(8))
    came = [_mean([_deltas(r, "comes_and_goes", 0)[k] for r in rows]) for k in range(8)]
    steady = [
        _mean([_mean(_deltas(r, held[snr], 0)[1:]) for r in rows]) for snr in COMES_AND_GOES
    ]
    lines += [
        "",
        f"**A noise that comes and goes**: the room at {CLEAN_DB:.0f} dB for 30 s, at "
        f"{COMES_AND_GOES[3]:.0f} dB for 30 s (the noise 25 dB up at once), then at "
        f"{CLEAN_DB:.0f} dB again; SI-SDR change from the raw mic a segment, and the same "
        "room held at that segment's SNR (its last 30 s, above):",
        "",
        f"| | {head} |",
        "|---|" + "---|" * 8,
        "| SNR | " + " | ".join(f"{s:.0f} dB" for s in COMES_AND_GOES) + " |",
        "| ours | " + " | ".join(f"{d:+.2f}" for d in came) + " |",
        *(
            f"| ours with {label} | "
            + " | ".join(
                f"{_mean([_deltas(r, f'comes_and_goes, {label}', 0)[k] for r in rows]):+.2f}"
                for k in range(8)
            )
            + " |"
            for label in CAME_ABLATIONS
        ),
        "| the room held there | " + " | ".join(f"{d:+.2f}" for d in steady) + " |",
        "",
        f"Measured {datetime.date.today().isoformat()} with `scripts/bench dsp-sessions "
        f"--split {split} --scenes {len(rows)}` (scene space {SCENE_VERSION}, array `{ARRAY}`).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench dsp-sessions", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--split", choices=("test", "tune"), default="test", help="the scene set (TEST: held apart)"
    )
    parser.add_argument("--scenes", type=int, default=96, help="rooms (SNR cycles -5..30 dB)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes, a room each"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    check_material()
    version = _dsp_version()
    jobs = [(args.split, i, version) for i in range(args.scenes)]
    with get_context("fork").Pool(args.jobs) as pool:
        rows = pool.map(evaluate_session, jobs, chunksize=1)
    table = render(rows, args.split)
    print(table)
    if not args.no_write:
        record_section(
            "dsp-sessions",
            "DSP front end over long sessions (`scripts/bench dsp-sessions`)",
            table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
