"""`scripts/bench dsp`: our array front end against the raw mic and single-mic suppressors,
on a wide space of simulated exam rooms that nothing was tuned on (TEST) and on the set the
front end was developed on (TUNE); see bench_dsp_scenes.py for the scene space.

Scores SI-SDR, STOI and PESQ-wb against the reverberant image of the in-room talkers at the
reference mic; reports means, the worst decile and per-SNR figures for recorded and synthetic
speech; measures our real-time factor on ten minutes of 4-channel audio in one `process` call
and in 40 ms blocks, our state memory and our latency. Records the tables in
docs/benchmarks.md between the dsp markers.

    scripts/bench dsp                      # TEST and TUNE, all systems, writes the doc
    scripts/bench dsp --split tune --systems raw,ours --no-write    # development loop
    scripts/bench dsp --split tune --ours postfilter_floor_db=-6 --no-write   # an ablation
    scripts/bench dsp --faults             # only ours on TEST with the array's faults
    scripts/bench dsp --arrays             # only ours on TEST scenes for the other arrays
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per process: set before numpy loads BLAS

import argparse
import hashlib
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import record_section
from bench_dsp_material import FS, cache_dir, check_material
from bench_dsp_scenes import SCENE_VERSION, SNRS_DB, load_scene

ROOT = Path(__file__).resolve().parents[1]
ARRAY = "respeaker-4mic-pi"
REF = 0  # the 4-mic HAT's reference mic


# -- systems -----------------------------------------------------------------------------
def run_raw(mix: np.ndarray) -> np.ndarray:
    return mix[:, REF].astype(np.float64) / 32768


def run_noisereduce(mix: np.ndarray) -> np.ndarray:
    import noisereduce

    return noisereduce.reduce_noise(y=mix[:, REF].astype(np.float64) / 32768, sr=FS)


def run_webrtc(mix: np.ndarray) -> np.ndarray:
    from webrtc_noise_gain import AudioProcessor

    ap = AudioProcessor(0, 3)  # no gain, noise suppression level 3 (high)
    x = mix[:, REF]
    x = np.concatenate([x, np.zeros(-x.size % 160, np.int16)])
    out = [
        np.frombuffer(ap.Process10ms(x[i : i + 160].tobytes()).audio, np.int16)
        for i in range(0, x.size, 160)
    ]
    return np.concatenate(out)[: mix.shape[0]].astype(np.float64) / 32768


def run_rnnoise(mix: np.ndarray) -> np.ndarray:
    from pyrnnoise.rnnoise import FRAME_SIZE, create, destroy, process_mono_frame
    from scipy.signal import resample_poly

    x48 = resample_poly(mix[:, REF].astype(np.float64), 3, 1)
    x48 = np.concatenate([x48, np.zeros(-x48.size % FRAME_SIZE)])
    x48 = np.clip(np.round(x48), -32768, 32767).astype(np.int16)
    state = create()
    try:
        out = [
            process_mono_frame(state, x48[i : i + FRAME_SIZE])[0]
            for i in range(0, x48.size, FRAME_SIZE)
        ]
    finally:
        destroy(state)
    y = resample_poly(np.concatenate(out).astype(np.float64), 1, 3)
    return y[: mix.shape[0]] / 32768


def run_ours(mix: np.ndarray, overrides: dict | None = None) -> np.ndarray:
    """Exactly `python -m edge_agent process` (or, with overrides, the pipeline built with
    them, run the same way: warmed up on the file's first seconds, then from its start)."""
    from edge_agent.dsp.cli import process_array

    if not overrides:
        return process_array(mix, ARRAY).astype(np.float64) / 32768
    from edge_agent.dsp.arrays import load_array
    from edge_agent.dsp.pipeline import ArrayPipeline

    stage = ArrayPipeline(load_array(ARRAY), **overrides)
    return process_array(mix, ARRAY, stage=stage).astype(np.float64) / 32768


def run_ours_cold(mix: np.ndarray) -> np.ndarray:
    """`python -m edge_agent process --cold`: the unit's first seconds after power-on."""
    from edge_agent.dsp.cli import process_array

    return process_array(mix, ARRAY, warm_up_s=0.0).astype(np.float64) / 32768


RAW = "raw reference mic"
OURS = "ours"
OURS_COLD = "ours, from a cold start"  # (`process --cold`: the unit at power-on)
WEBRTC = "WebRTC NS (level 3)"  # (the anchor PESQ-wb is measured against)
SYSTEMS = {
    RAW: (run_raw, "0"),
    "noisereduce": (run_noisereduce, "offline"),
    WEBRTC: (run_webrtc, "10 + lookahead"),
    "RNNoise (pyrnnoise)": (run_rnnoise, "10 @48 kHz"),
    OURS: (run_ours, "32"),
    OURS_COLD: (run_ours_cold, "32"),
}
ANCHORS = ("noisereduce", WEBRTC, "RNNoise (pyrnnoise)")


# -- metrics -----------------------------------------------------------------------------
def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    target = (estimate @ reference) / (reference @ reference + 1e-20) * reference
    residual = estimate - target
    return float(10 * np.log10((target @ target + 1e-20) / (residual @ residual + 1e-20)))


def align(reference: np.ndarray, output: np.ndarray, max_lag: int = 1600) -> np.ndarray:
    """Undo an anchor's constant delay, found by cross-correlation with the clean reference
    (an oracle alignment: it can only flatter the anchors)."""
    from scipy.signal import correlate

    c = correlate(output, reference, mode="full", method="fft")
    mid = reference.size - 1
    lag = int(np.argmax(np.abs(c[mid : mid + max_lag + 1])))
    return np.concatenate([output[lag:], np.zeros(lag)]) if lag else output


def score(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    from pesq import pesq
    from pystoi import stoi

    out = {
        "si_sdr": si_sdr(reference, estimate),
        "stoi": float(stoi(reference, estimate, FS, extended=False)),
    }
    try:
        out["pesq"] = float(pesq(FS, reference, estimate, "wb"))
    except Exception:  # noqa: BLE001 - pesq raises its own types on clips it finds no speech in
        out["pesq"] = float("nan")
    return out


def _dsp_version() -> str:
    h = hashlib.sha1()
    for pattern in ("*.py", "*.npz"):  # the code and the trained mask's weights
        for path in sorted((ROOT / "edge_agent" / "dsp").glob(pattern)):
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _cached(key: list, compute: Any) -> dict:
    """A scene's scores, from the cache under `key` (scene, system, the DSP's source...) or
    from compute() and then cached."""
    digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:20]
    path = cache_dir() / "scores" / f"{digest}.json"
    if path.exists():
        return json.loads(path.read_text())
    row = compute()
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(row))
    return row


def _scored(scene: Any, system: str, y: np.ndarray, align_it: bool = False, **extra) -> dict:
    """The row of `system`'s output `y` on `scene`: cut or padded to the reference's length
    (and, for an anchor, its delay removed), scored against it."""
    n = scene.reference.size
    y = np.asarray(y, np.float64)[:n]
    y = np.concatenate([y, np.zeros(n - y.size)])
    if align_it:
        y = align(scene.reference, y)
    return {
        "scene": scene.name,
        "split": scene.split,
        "speech": scene.speech,
        "snr": scene.snr_db,
        "system": system,
        **extra,
        **score(scene.reference, y),
    }


def evaluate(job: tuple[str, int, str, dict, str]) -> dict:
    """Score one system on one scene; cached by scene, system and (for ours) the DSP's source."""
    split, index, system, overrides, version = job

    def compute() -> dict:
        return _run_system(load_scene(split, index, ARRAY), system, overrides)

    return _cached([SCENE_VERSION, ARRAY, split, index, system, version, overrides], compute)


def _run_system(scene: Any, system: str, overrides: dict) -> dict:
    """The row of `system` (ours with `overrides`) on `scene`, with its CPU time."""
    fn = SYSTEMS[system][0]
    start = time.process_time()
    y = fn(scene.mixture, overrides) if system == OURS else fn(scene.mixture)
    busy = time.process_time() - start
    return _scored(
        scene, system, y, system in ANCHORS, cpu_s=busy, audio_s=scene.reference.size / FS
    )


def _build(job: tuple[str, int]) -> str:
    return load_scene(job[0], job[1], ARRAY).name


# -- cost --------------------------------------------------------------------------------
def cost(minutes: float = 10.0) -> dict:
    """RTF of ten minutes of 4-channel audio through one process() call (after the warm-up
    `process` runs) and in 40 ms blocks from power-on (the unit); state memory; the impulse
    latency."""
    import tracemalloc

    from edge_agent.dsp.arrays import available_arrays, load_array
    from edge_agent.dsp.cli import WARM_UP_S
    from edge_agent.dsp.pipeline import make_array_pipeline

    pieces, total = [], 0
    i = 0
    while total < minutes * 60 * FS:
        s = load_scene("tune", i % 16, ARRAY).mixture
        pieces.append(s)
        total += s.shape[0]
        i += 1
    long = np.concatenate(pieces)[: int(minutes * 60 * FS)]
    audio_s = long.shape[0] / FS
    out: dict = {"minutes": minutes}

    # time and memory in separate runs: tracemalloc slows every allocation it traces; the
    # warm-up on the first seconds counted in, as `process` runs it
    warm = long[: int(WARM_UP_S * FS)]
    stage = make_array_pipeline(channels=4, sample_rate=FS, array=ARRAY)
    start = time.process_time()
    stage.warm_up(warm)
    stage.process(long)
    stage.flush()
    out["rtf_one_call"] = (time.process_time() - start) / audio_s
    stage = make_array_pipeline(channels=4, sample_rate=FS, array=ARRAY)
    tracemalloc.start()
    stage.warm_up(warm)
    stage.process(long)
    stage.flush()
    out["peak_mb_one_call"] = tracemalloc.get_traced_memory()[1] / 1e6
    out["output_mb"] = long.shape[0] * 2 / 1e6
    tracemalloc.stop()

    rtf, stage, _ = _in_40ms_blocks(ARRAY, long)
    out["rtf_40ms"] = rtf
    out["state_kb"] = _state_bytes(stage) / 1e3
    out["clean_share"] = stage.frames_as_is / (long.shape[0] // stage.hop)
    rtf, _, deep = _in_40ms_blocks(ARRAY, long, **FULL_DEPTH)
    out["rtf_40ms_full_depth"], out["full_depth_share"] = rtf, deep
    # every shipped array, two minutes of the same audio on its mics, clean and held deep
    out["by_array"] = {}
    for name in available_arrays():
        geometry = load_array(name)
        x = np.zeros((min(long.shape[0], 120 * FS), geometry.capture_channels), np.int16)
        for k, channel in enumerate(geometry.mic_channels):
            x[:, channel] = long[: x.shape[0], k % long.shape[1]]
        out["by_array"][name] = (
            _in_40ms_blocks(name, x)[0],
            _in_40ms_blocks(name, x, **FULL_DEPTH)[0],
        )

    stage = make_array_pipeline(channels=4, sample_rate=FS, array=ARRAY)
    x = np.zeros((FS, 4), np.int16)
    x[FS // 2] = 16000
    y = np.concatenate([stage.process(x[j : j + 160]) for j in range(0, FS, 160)] + [stage.flush()])
    out["impulse_ms"] = (int(np.argmax(np.abs(y))) - FS // 2) / FS * 1000
    out["frame_ms"] = 1000 * (stage.latency_samples + stage.hop) / FS
    out.update(_command_cost(long, audio_s))
    return out


#: thresholds no room reaches: every frame enhanced, the beamformer solving every group, the
#: clean room's shortcut never taken
FULL_DEPTH = {
    "clean_snr_db": 200.0,
    "noisy_snr_db": 190.0,
    "mask_clean_snr_db": 200.0,
    "mask_noisy_snr_db": 190.0,
}


def _in_40ms_blocks(array: str, audio: np.ndarray, **overrides) -> tuple[float, Any, float]:
    """CPU time / audio time of `audio` through the array's front end in 40 ms blocks (the
    unit's chunks); the stage after it; the share of calls that ended at depth 1."""
    from edge_agent.dsp.arrays import load_array
    from edge_agent.dsp.pipeline import ArrayPipeline

    stage = ArrayPipeline(load_array(array), **overrides)
    block = int(0.040 * FS)
    start, deep, calls = time.process_time(), 0, 0
    for j in range(0, audio.shape[0], block):
        stage.process(audio[j : j + block])
        deep, calls = deep + (stage.depth == 1.0), calls + 1
    stage.flush()
    return (time.process_time() - start) / (audio.shape[0] / FS), stage, deep / calls


#: the command's own code with its peak memory: VmHWM belongs to the process's memory since
#: its exec (ru_maxrss would also count the bench's own memory, inherited across the fork)
_COMMAND = (
    "import sys\nfrom edge_agent.dsp.cli import main\nrc = main(sys.argv[2:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "open(sys.argv[1], 'w').write(hwm)\nsys.exit(rc)"
)


def _command_cost(long: np.ndarray, audio_s: float) -> dict:
    """`python -m edge_agent process`'s work on that audio as a 16 kHz WAV, in a process of
    its own: CPU (user + system: Python's start, the imports, reading, the pipeline,
    writing) from its rusage, and its peak resident memory."""
    import subprocess
    import tempfile
    import wave

    with tempfile.TemporaryDirectory() as tmp:
        src, hwm = Path(tmp) / "in.wav", Path(tmp) / "hwm"
        with wave.open(str(src), "wb") as w:
            w.setnchannels(long.shape[1])
            w.setsampwidth(2)
            w.setframerate(FS)
            w.writeframes(long.astype("<i2").tobytes())
        child = subprocess.Popen(
            [sys.executable, "-c", _COMMAND, str(hwm), str(src), str(Path(tmp) / "o.wav"),
             "--array", ARRAY]
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise RuntimeError(f"process exited with {child.returncode}")
        peak_kb = int(hwm.read_text())
    cpu = usage.ru_utime + usage.ru_stime
    return {"rtf_command": cpu / audio_s, "command_rss_mb": peak_kb / 1e3}


def _state_bytes(obj, seen: set | None = None) -> int:
    """numpy bytes held by an object graph (the stage's state between calls)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_state_bytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_state_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return _state_bytes(vars(obj), seen)
    return 0


# -- report ------------------------------------------------------------------------------
def _mean(vals: list[float]) -> float:
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _worst_decile(vals: list[float]) -> float:
    """Mean of the lowest 10 % (at least one value)."""
    vals = sorted(v for v in vals if np.isfinite(v))
    if not vals:
        return float("nan")
    k = max(1, round(len(vals) / 10))
    return float(np.mean(vals[:k]))


def _rows(
    results: list[dict], system: str, split: str, speech: str | None = None, snr=None
) -> list[dict]:
    return [
        r
        for r in results
        if r["system"] == system
        and r["split"] == split
        and (speech is None or r["speech"] == speech)
        and (snr is None or r["snr"] == snr)
    ]


def _deltas(
    results: list[dict], system: str, split: str, speech: str | None, key: str, snr=None
) -> list[float]:
    raw = {r["scene"]: r[key] for r in _rows(results, RAW, split, speech, snr)}
    return [
        r[key] - raw[r["scene"]]
        for r in _rows(results, system, split, speech, snr)
        if r["scene"] in raw
    ]


def render(
    results: list[dict], systems: list[str], splits: list[str], costs: dict | None, args
) -> str:
    lines: list[str] = []
    split_names = {"test": "TEST (held apart: never tuned on)", "tune": "TUNE (developed on)"}
    for split in splits:
        n_scenes = len({r["scene"] for r in results if r["split"] == split})
        lines += [f"### {split_names[split]}: {n_scenes} scenes", ""]
        for speech in ("recorded", "synthetic"):
            rows_any = _rows(results, RAW, split, speech)
            if not rows_any:
                continue
            lines += [
                (
                    f"**{speech} speech** ({len(rows_any)} scenes). Mean over all SNRs; Δ = change "
                    "from the raw reference mic, scene by scene; worst 10 % = mean of the lowest "
                    "decile of Δ."
                ),
                "",
                "| system | SI-SDR dB | Δ mean | Δ worst 10 % | STOI | Δ mean | Δ worst 10 % "
                "| PESQ-wb | Δ mean | Δ worst 10 % |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for system in systems:
                rows = _rows(results, system, split, speech)
                if not rows:
                    continue
                cells = []
                for key, fmt in (("si_sdr", "{:.2f}"), ("stoi", "{:.3f}"), ("pesq", "{:.2f}")):
                    d = _deltas(results, system, split, speech, key)
                    cells += [
                        fmt.format(_mean([r[key] for r in rows])),
                        "—" if system == RAW else ("{:+" + fmt[2:]).format(_mean(d)),
                        "—" if system == RAW else ("{:+" + fmt[2:]).format(_worst_decile(d)),
                    ]
                lines.append(f"| {system} | " + " | ".join(cells) + " |")
            lines += [
                "",
                f"Per SNR at the reference mic ({speech}): mean SI-SDR dB / STOI / PESQ-wb.",
                "",
                "| system | " + " | ".join(f"{s} dB" for s in SNRS_DB) + " |",
                "|---|" + "---|" * len(SNRS_DB),
            ]
            for system in systems:
                cells = []
                for snr in SNRS_DB:
                    rows = _rows(results, system, split, speech, snr)
                    cells.append(
                        f"{_mean([r['si_sdr'] for r in rows]):.1f} / "
                        f"{_mean([r['stoi'] for r in rows]):.3f} / "
                        f"{_mean([r['pesq'] for r in rows]):.2f}"
                        if rows
                        else "—"
                    )
                if any(c != "—" for c in cells):
                    lines.append(f"| {system} | " + " | ".join(cells) + " |")
            lines.append("")
            if OURS in systems:
                lines.append(_verdict(results, split, speech))
                lines.append("")
    if costs:
        lines += [
            (
                f"Cost (one core): {costs['minutes']:.0f} minutes of 4-channel audio through one "
                f"`process` call: real-time factor {costs['rtf_one_call']:.4f}, peak working "
                f"memory {costs['peak_mb_one_call']:.0f} MB (the mono int16 output alone is "
                f"{costs['output_mb']:.0f} MB); in 40 ms blocks: real-time factor "
                f"{costs['rtf_40ms']:.4f} ({costs['clean_share']:.0%} of the frames clean, "
                f"passed as they came), {costs['rtf_40ms_full_depth']:.4f} held at full depth "
                f"({costs['full_depth_share']:.0%} of the calls at depth 1); "
                f"state between calls {costs['state_kb']:.0f} kB. "
                f"The whole command (`python -m edge_agent process` on that audio as a WAV, "
                f"Python's start, reading and writing included): real-time factor "
                f"{costs['rtf_command']:.4f} in CPU time, peak resident memory "
                f"{costs['command_rss_mb']:.0f} MB. "
                f"Latency: an impulse comes out {costs['impulse_ms']:.0f} ms late; with the hop a "
                f"live caller waits for, {costs['frame_ms']:.0f} ms algorithmic latency."
            ),
            "",
            "In 40 ms blocks by array (two minutes of the same audio on each array's mics; "
            "real-time factor as it comes / held at full depth): "
            + ", ".join(
                f"{name} {clean:.4f} / {deep:.4f}"
                for name, (clean, deep) in costs.get("by_array", {}).items()
            )
            + ".",
            "",
        ]
    rtf = {
        s: sum(r["cpu_s"] for r in results if r["system"] == s)
        / max(1e-9, sum(r["audio_s"] for r in results if r["system"] == s))
        for s in systems
    }
    lines += [
        "Real-time factors over the scenes (CPU time / audio time; 10 s files, so ours includes "
        "start-up): " + ", ".join(f"{s} {rtf[s]:.4f}" for s in systems if s != RAW) + ". "
        "Latency (ms): " + ", ".join(f"{s} {SYSTEMS[s][1]}" for s in systems if s != RAW) + ".",
        "",
        (
            f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} with `scripts/bench dsp "
            f"--scenes {args.scenes}` (scene space {SCENE_VERSION}, array `{ARRAY}`)."
        ),
    ]
    return "\n".join(lines)


def _verdict(results: list[dict], split: str, speech: str) -> str:
    below = []
    for snr in SNRS_DB:
        for key in ("si_sdr", "stoi"):
            d = _deltas(results, OURS, split, speech, key, snr)
            if d and _mean(d) < 0:
                below.append(f"{snr} dB {key.replace('_', '-').upper()} ({_mean(d):+.3f})")
    pesq_below = [
        str(snr)
        for snr in SNRS_DB
        if _rows(results, WEBRTC, split, speech, snr)
        and _mean([r["pesq"] for r in _rows(results, OURS, split, speech, snr)])
        < _mean([r["pesq"] for r in _rows(results, WEBRTC, split, speech, snr)])
    ]
    at0 = _mean(_deltas(results, OURS, split, speech, "si_sdr", 0))
    return (
        f"Ours vs raw ({speech}): {at0:+.1f} dB SI-SDR at 0 dB SNR; "
        "SNR bands where ours is below the raw mic: "
        + (", ".join(below) if below else "none")
        + "; bands where PESQ-wb is below WebRTC NS: "
        + (", ".join(f"{s} dB" for s in pesq_below) if pesq_below else "none")
        + "."
    )


# what each piece of the trained mask gives: ours with pipeline overrides, on TEST
ABLATIONS = {
    "shipped": {},
    "the mask's reading not held (as before 2026-12-06, third session)": {"mask_hold_s": None},
    "the bands waiting for their floor's window (as before 2026-12-06, fourth session)": {
        "band_early": "wait"
    },
    "events as sure of noise as EVENTS whatever the mask reads (as before 2026-12-06, "
    "fourth session)": {"events_loose": None},
    "the Wiener gain's overrule the same whatever the mask reads (as before 2026-12-06, "
    "fourth session)": {"overrule_loose": None},
    "events in frames of any shape, a fricative's too (as before 2026-12-06, fifth session)": {
        "events_fricative_db": None
    },
    "every tone's events, whether or not they come back (as before 2026-12-06, sixth "
    "session)": {"events_recur": None},
    "the beamformer's noise learned bin by bin alone, in frames of talk too (as before "
    "2026-12-06, eighth session)": {"noise_frame_power": 0.0},
    "the noise heard in pauses not lowered to the tracker's floor (as before 2026-12-06, "
    "ninth session)": {"pause_noise_over_minimum": None},
    "the Wiener gains in one decision-directed step (as before 2026-12-07)": {"two_step": False},
    "the pause gate at -6 dB x depth (as before the end of 2026-12-06)": {"pause_gain_db": -6.0},
    "no Wiener gain on the noise heard in pauses, and the pause gate (as before it)": {
        "pause_noise_floor_db": None,
        "pause_gain_db": -6.0,
    },
    "no Wiener gain in pauses either (as before 2026-12-06)": {
        "pause_noise_floor_db": None,
        "pause_wiener_floor_db": None,
        "pause_gain_db": -6.0,
    },
    "no noise events (EVENTS)": {"events": None},
    "the Wiener gain overruling the mask in full, and no noise events (as before them)": {
        "overrule_below": None,
        "events": None,
    },
    "no band going deeper than the speech band (BAND_DEPTHS), and as before the events": {
        "band_depths": (),
        "overrule_below": None,
        "events": None,
    },
    "as before the bands: none, the speech band clean at 20 dB, the mask floored at -18 dB": {
        "overrule_below": None,
        "events": None,
        "band_depths": (),
        "clean_snr_db": 20.0,
        "mask_floor_db": -18.0,
    },
    "the mask's early cap on the depth at 10/16 dB, as before 2026-12-05": {
        "mask_noisy_snr_db": 10.0,
        "mask_clean_snr_db": 16.0,
    },
    "no DC significance gate, no beamformer dead zone (the clean-room changes of 2026-12-05)": {
        "dc_significance": None,
        "beamform_depth_from": 0.0,
    },
    "the room's floor rising freely (no 1 dB/s limit once it has seen its window)": {
        "floor_rise_db_per_s": None
    },
    "the mask alone as the post-filter (no Wiener overrule)": {"mask_or_wiener": False},
    "depth from the noise floor alone (no cap from the mask's room SNR)": {"depth_source": "band"},
    "the previous front end: mask-based MWF, Wiener post-filter, depth over 6 s, full at 5 dB": {
        "mask_gain": False,
        "depth_source": "band",
        "settle_s": 6.0,
        "clean_snr_db": 20.0,
        "noisy_snr_db": 5.0,
        "floor_rise_db_per_s": None,
    },
    "no mask: spatial SPP, Wiener post-filter, depth as the previous": {
        "mask": False,
        "settle_s": 6.0,
        "clean_snr_db": 20.0,
        "noisy_snr_db": 5.0,
        "floor_rise_db_per_s": None,
    },
}


def _summary(rows: list[dict], system: str, split: str) -> list[str]:
    """A table row's cells for `system` against the raw mic: SI-SDR change (mean, worst
    decile), STOI change, SI-SDR change at 0 and at 30 dB, the bands below the raw mic."""
    d_sdr = _deltas(rows, system, split, None, "si_sdr")
    d_stoi = _deltas(rows, system, split, None, "stoi")
    below = [
        f"{snr}{speech[0]}"
        for speech in ("recorded", "synthetic")
        for snr in SNRS_DB
        if any(_mean(_deltas(rows, system, split, speech, k, snr)) < 0 for k in ("si_sdr", "stoi"))
    ]
    at_0, at_30 = (_mean(_deltas(rows, system, split, None, "si_sdr", v)) for v in (0, 30))
    return [
        f"{_mean(d_sdr):+.2f}",
        f"{_worst_decile(d_sdr):+.2f}",
        f"{_mean(d_stoi):+.3f}",
        f"{at_0:+.2f}",
        f"{at_30:+.2f}",
        ", ".join(below) or "none",
    ]


def ablations(pool, split: str, scenes: int) -> str:
    """Ours under each ABLATIONS override on `split`: mean and worst-decile SI-SDR change,
    STOI change, the change at 0 and at 30 dB SNR, and the bands below the raw mic."""
    dsp = _dsp_version()
    lines = [
        (
            f"Ablations ({split.upper()}, {scenes} scenes, recorded and synthetic speech "
            "together; change from the raw reference mic):"
        ),
        "",
        (
            "| ours, with | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | SI-SDR Δ at 0 dB | "
            "at 30 dB | bands below raw (SI-SDR or STOI, either speech) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    raw_jobs = [(split, i, RAW, {}, "1") for i in range(scenes)]
    raw = list(pool.imap_unordered(evaluate, raw_jobs, chunksize=2))
    for name, overrides in ABLATIONS.items():
        jobs = [(split, i, OURS, overrides, dsp) for i in range(scenes)]
        rows = raw + list(pool.imap_unordered(evaluate, jobs, chunksize=2))
        lines.append(f"| {name} | " + " | ".join(_summary(rows, OURS, split)) + " |")
    lines += ["", "(r = recorded, s = synthetic speech; e.g. 30r = the 30 dB recorded scenes.)"]
    return "\n".join(lines)


# -- the real array's faults, on the same scenes ---------------------------------------
def _other_mic(mix: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice([m for m in range(mix.shape[1]) if m != REF]))


def _gains_off(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mix * 10 ** (rng.uniform(-3.0, 3.0, mix.shape[1]) / 20)  # the reference mic's too


def _dead_mic(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mix[:, _other_mic(mix, rng)] = 0.0
    return mix


def _hissing_mic(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = _other_mic(mix, rng)
    mix[:, k] += rng.standard_normal(mix.shape[0]) * mix[:, k].std()
    return mix


def _mics_off_zero(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mix + rng.choice([-1.0, 1.0], mix.shape[1]) * rng.uniform(500.0, 2000.0, mix.shape[1])


def _mics_settling(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    offsets = _mics_off_zero(np.zeros((1, mix.shape[1])), rng)  # (1, mics)
    settle = 1.0 - np.exp(-np.arange(mix.shape[0]) / (rng.uniform(0.1, 0.5) * FS))
    return mix + settle[:, None] * offsets


def _drifting_mic(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import resample

    k, n = _other_mic(mix, rng), mix.shape[0]
    ppm = float(rng.choice([-100.0, 100.0]))
    mix[:, k] = np.resize(resample(mix[:, k], round(n * (1 + ppm * 1e-6))), n)
    return mix


#: a fault applied to a scene's capture before `python -m edge_agent process` hears it (each
#: scene draws which mic, which gains, which direction from its own seed). Geometry is not
#: here: no stage uses the declared mic positions (tests/dsp/test_robustness.py shows the
#: output does not change when they are off). Nor is a dead reference mic: the scenes have
#: the talkers' image at the reference mic only, which a live stand-in cannot be scored on
#: (the test shows the hand-over).
FAULTS = {
    "every mic's gain off, by up to ±3 dB": _gains_off,
    "a mic dead (not the reference)": _dead_mic,
    "a mic hissing at its own level (its own white noise, 0 dB)": _hissing_mic,
    "a mic's clock 100 ppm off (16 samples over the 10 s scene)": _drifting_mic,
    "every mic off zero by a DC offset of its own (500-2000 LSB, either sign)": _mics_off_zero,
    "... settling to it as the capture opens (time constant 0.1-0.5 s)": _mics_settling,
}


def evaluate_fault(job: tuple[str, int, str, str]) -> dict:
    """Ours on one scene whose capture has a fault; cached like evaluate()."""
    split, index, fault, version = job

    def compute() -> dict:
        scene = load_scene(split, index, ARRAY)
        seed = int(hashlib.sha1(fault.encode()).hexdigest()[:8], 16)
        mix = FAULTS[fault](scene.mixture.astype(np.float64), np.random.default_rng([index, seed]))
        mix = np.clip(np.round(mix), -32768, 32767).astype(np.int16)
        return _scored(
            scene, f"{OURS}, {fault}", run_ours(mix), audio_s=scene.reference.size / FS
        )

    return _cached([SCENE_VERSION, ARRAY, split, index, "fault", fault, version], compute)


def faults(pool, split: str, scenes: int) -> str:
    """Ours on `split` with each of FAULTS: the change from the healthy array's raw reference
    mic, and what the fault costs against ours on the healthy array."""
    dsp = _dsp_version()
    lines = [
        (
            f"The real array's faults ({split.upper()}, {scenes} scenes, recorded and synthetic "
            "speech together; change from the healthy array's raw reference mic; the cost is "
            "against ours on the healthy array):"
        ),
        "",
        (
            "| the array | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | SI-SDR Δ at 0 dB | "
            "at 30 dB | cost (SI-SDR, mean) | bands below raw (SI-SDR or STOI, either speech) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = list(
        pool.imap_unordered(
            evaluate,
            [
                (split, i, s, {}, dsp if s == OURS else "1")
                for s in (RAW, OURS)
                for i in range(scenes)
            ],
            chunksize=2,
        )
    )
    healthy = {r["scene"]: r["si_sdr"] for r in rows if r["system"] == OURS}
    for name in ("healthy", *FAULTS):
        system = OURS if name == "healthy" else f"{OURS}, {name}"
        if name != "healthy":
            jobs = [(split, i, name, dsp) for i in range(scenes)]
            rows += list(pool.imap_unordered(evaluate_fault, jobs, chunksize=2))
        cost = _mean([healthy[r["scene"]] - r["si_sdr"] for r in _rows(rows, system, split)])
        cells = _summary(rows, system, split)
        cells.insert(5, f"{cost:.2f} dB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the other arrays, on scenes of their own ---------------------------------------------
def evaluate_array(job: tuple[str, int, str, str, str]) -> dict:
    """The raw reference mic or ours on one scene built for another array (its own mics,
    heard in the same rooms); cached like evaluate()."""
    from edge_agent.dsp.arrays import load_array
    from edge_agent.dsp.cli import process_array

    split, index, array, system, version = job

    def compute() -> dict:
        scene = load_scene(split, index, array)
        if system == RAW:
            y = scene.mixture[:, load_array(array).reference_channel] / 32768
        else:
            y = process_array(scene.mixture, array) / 32768
        return _scored(scene, system, y, array=array)

    return _cached([SCENE_VERSION, array, split, index, system, version], compute)


def other_arrays(pool, split: str, scenes: int) -> str:
    """Ours on every other shipped array, on `scenes` scenes of `split` built for it."""
    from edge_agent.dsp.arrays import available_arrays

    dsp = _dsp_version()
    lines = [
        (
            f"The other arrays ({split.upper()}, {scenes} scenes each, built for that array: "
            "its own mics in the same kinds of room; recorded and synthetic speech together; "
            "change from that array's raw reference mic):"
        ),
        "",
        (
            "| array | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | SI-SDR Δ at 0 dB | "
            "at 30 dB | bands below raw (SI-SDR or STOI, either speech) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for array in [a for a in available_arrays() if a != ARRAY]:
        jobs = [
            (split, i, array, s, dsp if s == OURS else "1")
            for s in (RAW, OURS)
            for i in range(scenes)
        ]
        rows = list(pool.imap_unordered(evaluate_array, jobs, chunksize=2))
        lines.append(f"| {array} | " + " | ".join(_summary(rows, OURS, split)) + " |")
    return "\n".join(lines)


# -- talk without pauses: the same kinds of room, a floor never heard alone ---------------
def evaluate_talk(job: tuple[str, int, str, str, dict, str]) -> dict:
    """One system on one scene of another family of talk (bench_dsp_scenes.TALK); cached
    like evaluate()."""
    split, index, talk, system, overrides, version = job

    def compute() -> dict:
        return _run_system(load_scene(split, index, ARRAY, talk=talk), system, overrides)

    return _cached([SCENE_VERSION, ARRAY, split, talk, index, system, version, overrides], compute)


def _build_talk(job: tuple[str, int, str]) -> str:
    return load_scene(job[0], job[1], ARRAY, talk=job[2]).name


#: what the talk-without-pauses study runs beside ours: the hold it was found by, and the
#: changes since that it weighs on
TALK_ABLATIONS = {
    "the mask's reading not held (as before 2026-12-06, third session)": {"mask_hold_s": None},
    "events and the Wiener gain's overrule the same whatever the mask reads (as before "
    "2026-12-06, fourth session)": {"events_loose": None, "overrule_loose": None},
    "the beamformer's noise learned bin by bin alone, in frames of talk too (as before "
    "2026-12-06, eighth session)": {"noise_frame_power": 0.0},
}


def continuous_talk(pool, split: str, scenes: int) -> str:
    """Ours on `scenes` scenes of `split` whose talkers never pause for long (seeded apart
    from the turns): where the noise floor reads the talk's reverberant tails as noise."""
    dsp = _dsp_version()
    # built first, one worker a scene (two systems' jobs must not build the same one at once)
    pool.map(_build_talk, [(split, i, "continuous") for i in range(scenes)], chunksize=1)
    jobs = [
        (split, i, "continuous", system, overrides, dsp if system == OURS else "1")
        for system, overrides in (
            (RAW, {}),
            (WEBRTC, {}),
            (OURS, {}),
            *((OURS, ablation) for ablation in TALK_ABLATIONS.values()),
        )
        for i in range(scenes)
    ]
    rows = []
    for job, row in zip(jobs, pool.imap(evaluate_talk, jobs, chunksize=2), strict=True):
        rows.append({**row, "system": f"{OURS}, {job[4]}" if job[4] else row["system"]})
    lines = [
        (
            f"Talk without pauses ({split.upper()} family, {scenes} scenes of their own: the "
            "same kinds of room, each utterance 20-250 ms after the last, so the noise floor "
            "is never heard alone; recorded and synthetic speech together; change from the raw "
            "reference mic; PESQ-wb against WebRTC NS's, mean over the scenes):"
        ),
        "",
        (
            "| system | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | SI-SDR Δ at 0 dB | "
            "at 30 dB | bands below raw (SI-SDR or STOI, either speech) | PESQ-wb Δ vs WebRTC |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    web = {r["scene"]: r["pesq"] for r in rows if r["system"] == WEBRTC}
    for system, label in (
        (OURS, "ours"),
        *((f"{OURS}, {ablation}", f"ours, {name}") for name, ablation in TALK_ABLATIONS.items()),
        (WEBRTC, WEBRTC),
    ):
        pesq = _mean([r["pesq"] - web[r["scene"]] for r in rows if r["system"] == system])
        cells = [*_summary(rows, system, split), f"{pesq:+.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_overrides(text: str) -> dict:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, value = item.split("=", 1)
        out[key] = json.loads(value)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench dsp", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenes", type=int, default=96, help="scenes per set (SNR cycles -5..30 dB)"
    )
    parser.add_argument("--split", choices=("test", "tune", "both"), default="both")
    parser.add_argument(
        "--systems", default="", help="comma-separated substrings selecting systems"
    )
    parser.add_argument(
        "--ours",
        action="append",
        default=[],
        help="pipeline keyword overrides, e.g. gain_floor_db=-6 (ablations); repeat it or "
        "separate them with commas",
    )
    parser.add_argument(
        "--snrs", default="", help="only scenes at these SNRs, e.g. 0,30 (development)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes for scenes and scoring"
    )
    parser.add_argument(
        "--no-cost", action="store_true", help="skip the 10-minute cost measurement"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone"
    )
    parser.add_argument("--dump", type=Path, help="write per-scene rows as JSON here")
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="only the trained mask's ablations on TEST (a full run includes them)",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="only the array's faults on TEST (a full run includes them)",
    )
    parser.add_argument(
        "--arrays",
        action="store_true",
        help="only the other arrays, on TEST scenes built for each (a full run includes them)",
    )
    parser.add_argument(
        "--array-scenes", type=int, default=32, help="scenes per other array (SNR cycles)"
    )
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="only talk without pauses, on TEST-family scenes of its own (a full run includes it)",
    )
    parser.add_argument(
        "--continuous-scenes", type=int, default=96, help="scenes of talk without pauses"
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="only the oracle study on TUNE at 0 dB (bench_dsp_oracle.py); a full run includes it",
    )
    args = parser.parse_args(argv)
    check_material()
    if args.oracle:
        from bench_dsp_oracle import run as oracle_study

        print(oracle_study(args.scenes, 0.0, args.jobs))
        return 0
    if args.ablations or args.faults or args.arrays or args.continuous:
        with get_context("fork").Pool(args.jobs) as pool:
            for wanted, study in (
                (args.ablations, lambda: ablations(pool, "test", args.scenes)),
                (args.faults, lambda: faults(pool, "test", args.scenes)),
                (args.arrays, lambda: other_arrays(pool, "test", args.array_scenes)),
                (args.continuous, lambda: continuous_talk(pool, "test", args.continuous_scenes)),
            ):
                if wanted:
                    print(study() + "\n")
        return 0
    splits = ["test", "tune"] if args.split == "both" else [args.split]
    overrides = _parse_overrides(",".join(args.ours))
    systems = [
        s
        for s in SYSTEMS
        if not args.systems or any(p.strip().lower() in s.lower() for p in args.systems.split(","))
    ]
    if RAW not in systems:
        systems.insert(0, RAW)

    ctx = get_context("fork")
    t0 = time.perf_counter()
    wanted = {float(v) for v in args.snrs.split(",") if v.strip()}
    scene_jobs = [
        (split, i)
        for split in splits
        for i in range(args.scenes)
        if not wanted or SNRS_DB[(i // 2) % len(SNRS_DB)] in wanted
    ]
    with ctx.Pool(args.jobs) as pool:
        pool.map(_build, scene_jobs, chunksize=1)
        print(
            f"bench dsp: {len(scene_jobs)} scenes ready in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        # the DSP's source is hashed once, here: workers that imported it keep that code
        dsp = _dsp_version()
        jobs = [
            (sp, i, s, overrides if s == OURS else {}, dsp if s in (OURS, OURS_COLD) else "1")
            for s in systems
            for sp, i in scene_jobs
        ]
        results = []
        for k, row in enumerate(pool.imap_unordered(evaluate, jobs, chunksize=2)):
            results.append(row)
            if (k + 1) % 50 == 0:
                print(f"bench dsp: {k + 1}/{len(jobs)} scored", file=sys.stderr)
        full = not args.no_write and not overrides and args.split == "both" and not wanted
        ablation_table = (
            "\n\n".join(
                (
                    ablations(pool, "test", args.scenes),
                    faults(pool, "test", args.scenes),
                    other_arrays(pool, "test", args.array_scenes),
                    continuous_talk(pool, "test", args.continuous_scenes),
                )
            )
            if full and len(systems) == len(SYSTEMS)
            else ""
        )
    if args.dump:
        args.dump.write_text(json.dumps(results))
    costs = None
    if OURS in systems and not args.no_cost and not overrides:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        costs = cost()
    table = render(results, systems, splits, costs, args)
    if overrides:
        table = f"Ours with overrides {overrides}.\n\n" + table
    if full and len(systems) == len(SYSTEMS):
        from bench_dsp_oracle import run as oracle_study

        table += "\n\n" + ablation_table + "\n\n" + oracle_study(args.scenes, 0.0, args.jobs)
    print(table)
    if full and len(systems) == len(SYSTEMS):
        record_section("dsp", "DSP front end (`scripts/bench dsp`)", _preamble() + table)
    return 0


def _preamble() -> str:
    return (
        "Simulated exam rooms drawn at random (scripts/bench_dsp_scenes.py): room 2.5-6 m, RT60 "
        '0.2-0.9 s (hybrid image-source + ray tracing), the 4-mic HAT on a wall, desk or '
        'ceiling at any rotation, physician and patient 0.5-3 m away taking turns, in half the '
        'scenes a physician who walks and in half a relative who talks too; 1-4 noise sources '
        'among HVAC, hallway babble through a door, equipment beeps, paper and keyboard, a fan '
        'and a monitor alarm; SNR -5 to 30 dB at the reference mic; 10 s each, scored against '
        'the reverberant image of the in-room talkers at the reference mic. '
        "Recorded speech: Asterisk's wideband prompts (five voices), Codec2's and alsa-utils' "
        'recordings; synthetic: espeak-ng. TEST uses other seeds, speakers, espeak voices and '
        'sentences than TUNE. The anchors run on the reference mic (noisereduce: defaults, '
        'whole clip at once, not causal; WebRTC NS level 3 of 0-4, AGC off; RNNoise resampled '
        'to its 48 kHz and back); their constant delay is removed by cross-correlation with the'
        ' clean reference before scoring, which can only flatter them. Ours is scored exactly '
        'as `python -m edge_agent process` writes it: it first listens to the file\'s first '
        '10 s, then processes the file from its start, as a unit that has been listening to '
        'the room would (docs/dsp.md, "Warm-up"); "ours, from a cold start" is `process '
        '--cold`, the unit\'s first seconds after power-on, scored the same way. RNNoise '
        '(pyrnnoise) keeps dry speech '
        '(17 dB SI-SDR against its input, correlation 0.99) but takes these rooms\' far-field '
        'reverberant talkers for noise: fed a scene\'s clean reverberant image alone, at -42 to'
        ' -9 dBFS, it gives it back 10-14 dB quieter at about -3 dB SI-SDR and STOI 0.46, so '
        "its row says how a close-talk suppressor fares at an exam room's distances. "
        'Ours runs its trained speech mask (edge_agent/dsp/speech_mask.npz, trained by '
        'scripts/train_dsp_mask.py on one-mic mixtures of TUNE speech and other noise, never on'
        ' these scenes).\n\n'
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
