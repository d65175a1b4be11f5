"""`scripts/bench dsp-stranger`: ours on rooms from a generator it was never near.

`scripts/bench dsp` keeps a TEST set apart, but TEST is drawn by the same code as TUNE: the
same simulator (pyroomacoustics' hybrid model), the same six noise generators, the same
mounts, levels and turn-taking. A front end can learn a generator as well as a room. This
bench draws rooms another way, so that nothing in it was tuned on or trained on:

- **simulation:** image sources only, to the order the room's Sabine RT60 asks for (up to
  24), each wall, the floor and the ceiling with an absorption of its own (so the field is
  not uniform; RT60 is measured, 0.15-1.1 s by Sabine), no air absorption; rooms 2.3-7 m;
- **the array:** its declared geometry, on a wall, a shelf or the ceiling, at any yaw, tilted
  up to 25 degrees, each mic's gain off by up to +-1 dB (the parts' tolerance);
- **speech:** a third kind, flite's voices (kal16, awb, rms, slt: a diphone and three
  statistical voices, nothing the mask was trained on) reading sentences of their own, and
  TEST's recorded voices; one to three talkers 0.4-3.5 m away, pauses of 0.1-2.5 s;
- **noise:** seven kinds neither the bench nor the mask's training has: a diffuse field
  (12 uncorrelated sources of coloured noise along the walls), an oxygen concentrator (hiss
  with a pressure-swing puff every 2-4 s and a compressor's hum), music from a radio
  (chords and a bass line), water running in the sink (on for part of the scene), a siren
  through the window, a label printer (motor whine and clicks, in bursts) and a cart rolled
  past the door (rumble and rattle, moving);
- **levels:** active speech -48 to -20 dBFS, MEMS self-noise -85 to -75 dBFS.

Each scene is 12 s at one of the bench's SNRs (-5 to 30 dB at the reference mic), scored
as `scripts/bench dsp` scores (SI-SDR, STOI, PESQ-wb against the talkers' reverberant
image at the reference mic; ours exactly as `python -m edge_agent process` writes it). It
is for looking, not for tuning: a change chosen on these rooms would make them one more
generator learned. A full run also draws 64 rooms for each other shipped array (its own
mics, the same generator) and scores ours against that array's raw reference mic.

    scripts/bench dsp-stranger                  # 256 rooms, writes the doc
    scripts/bench dsp-stranger --scenes 16 --array-scenes 0 --no-write
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per process: set before numpy loads BLAS

import argparse
import datetime
import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from bench_common import record_section
from bench_dsp import (
    ANCHORS,
    ARRAY,
    OURS,
    RAW,
    SYSTEMS,
    WEBRTC,
    _cached,
    _dsp_version,
    _mean,
    _scored,
    _worst_decile,
)
from bench_dsp_material import (
    FS,
    active_level,
    active_normalise,
    cache_dir,
    check_material,
    recorded_speakers,
    to_16k,
    trim,
)
from bench_dsp_scenes import SNRS_DB, _rotation

#: v2: TEST's recordings without Asterisk's silence prompts (bench_dsp_material.is_speech)
STRANGER_VERSION = "v2"
SEED = 3003  # (TUNE is 1001, TEST 2002)
SECONDS = 12.0
NOISE_KINDS = ("diffuse", "concentrator", "radio", "sink", "siren", "printer", "cart")
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
#: sentences of their own: neither TUNE's nor TEST's, nor the mask's training's
SENTENCES = [
    "Tell me about the pain in your lower back.",
    "I started the new inhaler about a month ago.",
    "Do you get short of breath lying flat at night?",
    "We will repeat the thyroid panel in six weeks.",
    "Can you squeeze my fingers as hard as you can?",
    "The swelling comes and goes, mostly in the evening.",
    "Any blood in the stool or black stools?",
    "I think the dizziness started after the flight.",
    "Follow my finger with your eyes, without moving your head.",
    "Your potassium was a little low on the last test.",
    "She has been coughing at night for about two weeks.",
    "Let me know if this is tender when I press here.",
    "I stopped taking the statin because of the muscle aches.",
    "We should get an x-ray of that wrist today.",
    "How many cups of coffee do you drink a day?",
    "The rash itches more after a hot shower.",
]


@dataclass
class StrangerScene:
    name: str
    speech: str  # "recorded" or "flite"
    snr_db: float
    info: dict
    mixture: np.ndarray  # (n, channels) int16
    reference: np.ndarray  # (n,) float: the talkers' image at the reference mic
    split: str = "stranger"


# -- speech ------------------------------------------------------------------------------
def flite(text: str, voice: str, stretch: float, f0: float) -> np.ndarray:
    """flite's voice reading `text` (cached as the bench's espeak is)."""
    import soundfile as sf

    key = hashlib.sha1(f"flite|{voice}|{stretch:.3f}|{f0:.1f}|{text}".encode()).hexdigest()[:16]
    path = cache_dir() / "flite" / f"{key}.wav"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".wav", delete=False) as tmp:
            pass
        subprocess.run(
            [
                "flite",
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={stretch:.3f}",
                "--setf",
                f"int_f0_target_mean={f0:.1f}",
                "-t",
                text,
                "-o",
                tmp.name,
            ],
            capture_output=True,
            check=True,
        )
        os.replace(tmp.name, path)
    data, rate = sf.read(path)
    return to_16k(data, rate)


def _talk(n: int, rng: np.random.Generator, kind: str, talkers: int) -> list[np.ndarray]:
    """Dry signals, one per talker: turns of one utterance, pauses of 0.1-2.5 s."""
    if kind == "recorded":
        speakers = recorded_speakers("test")
        names = sorted(speakers)
        chosen = [names[int(rng.integers(len(names)))] for _ in range(talkers)]

        def utterance(who: int) -> np.ndarray:
            us = speakers[chosen[who]]
            return us[int(rng.integers(len(us)))].astype(np.float64)
    else:
        voices = [FLITE_VOICES[int(rng.integers(len(FLITE_VOICES)))] for _ in range(talkers)]
        f0s = [float(rng.uniform(90, 220)) for _ in range(talkers)]

        def utterance(who: int) -> np.ndarray:
            text = SENTENCES[int(rng.integers(len(SENTENCES)))]
            x = flite(text, voices[who], float(rng.uniform(0.85, 1.2)), f0s[who])
            return active_normalise(trim(x))

    out = [np.zeros(n) for _ in range(talkers)]
    gains = [1.0] + [float(rng.uniform(0.5, 1.6)) for _ in range(talkers - 1)]
    pos = int(rng.uniform(0.0, 1.5) * FS)
    who = 0
    while pos < n - FS // 2:
        u = utterance(who) * gains[who]
        end = min(n, pos + u.size)
        out[who][pos:end] += u[: end - pos]
        pos = end + int(rng.uniform(0.1, 2.5) * FS)
        if talkers > 1 and rng.random() < 0.7:
            who = int(rng.integers(talkers))
    return out


# -- noise -------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _coloured(n: int, rng: np.random.Generator, slope_db_oct: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec *= np.maximum(f, 20.0) ** (slope_db_oct / (20 * np.log10(2)))
    return _unit(np.fft.irfft(spec, n))


def concentrator(n: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    t = np.arange(n) / FS
    hiss = sosfilt(butter(2, [300, 7000], "bandpass", fs=FS, output="sos"), rng.standard_normal(n))
    period = rng.uniform(2.0, 4.0)
    phase = (t + rng.uniform(0, period)) % period
    puff = 0.35 + 2.0 * np.exp(-phase / rng.uniform(0.15, 0.4))
    mains = float(rng.choice([50.0, 60.0]))
    hum = sum(np.sin(2 * np.pi * 2 * mains * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
    return _unit(_unit(hiss * puff) + 0.3 * _unit(hum))


def radio(n: int, rng: np.random.Generator) -> np.ndarray:
    """Chords and a bass line, a beat apart, through a small speaker (150 Hz-6 kHz)."""
    from scipy.signal import butter, sosfilt

    beat = int(FS * 60 / rng.uniform(80, 140))
    out = np.zeros(n + 4 * beat)
    root = 220 * 2 ** (rng.integers(-5, 6) / 12)
    progression = [0, 5, 7, 3, 8, 10]
    t = np.arange(2 * beat) / FS
    for k, start in enumerate(range(0, n, beat)):
        step = progression[(k // 4) % len(progression)]
        env = np.exp(-t / rng.uniform(0.2, 0.6))
        notes = [step, step + 4, step + 7] if k % 4 else [step - 12, step, step + 4, step + 7]
        for semis in notes:
            f = root * 2 ** (semis / 12)
            tone = sum(np.sin(2 * np.pi * f * h * t) / h**1.5 for h in range(1, 8) if f * h < 7000)
            out[start : start + t.size] += tone * env * rng.uniform(0.5, 1.0)
    out = out[:n]
    return _unit(sosfilt(butter(2, [150, 6000], "bandpass", fs=FS, output="sos"), out))


def sink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Water running into a basin for part of the scene: broadband, fast flutter."""
    from scipy.signal import butter, sosfilt

    x = sosfilt(butter(2, [400, 7000], "bandpass", fs=FS, output="sos"), rng.standard_normal(n))
    flutter = sosfilt(butter(1, 25, "lowpass", fs=FS, output="sos"), rng.standard_normal(n))
    x *= np.exp(1.5 * _unit(flutter) * 0.3)
    on = np.zeros(n)
    start = int(rng.uniform(0.0, 0.5) * n)
    on[start : start + int(rng.uniform(0.3, 0.7) * n)] = 1.0
    ramp = np.convolve(on, np.hanning(int(0.3 * FS)) / (0.15 * FS), mode="same")
    return _unit(x * np.clip(ramp, 0, 1) + 1e-4 * rng.standard_normal(n))


def siren(n: int, rng: np.random.Generator) -> np.ndarray:
    """A wail through the window (glass loses the highs), coming and going."""
    from scipy.signal import butter, sosfilt

    t = np.arange(n) / FS
    period = rng.uniform(2.5, 6.0)
    f = rng.uniform(600, 800) + rng.uniform(500, 800) * (0.5 - 0.5 * np.cos(2 * np.pi * t / period))
    phase = 2 * np.pi * np.cumsum(f) / FS
    tone = sum(np.sin(h * phase) / h for h in (1, 2, 3, 4))
    swell = np.clip(
        np.sin(np.pi * (t / t[-1] * rng.uniform(0.6, 1.0) + rng.uniform(0, 0.4))), 0.1, 1
    )
    return _unit(
        sosfilt(butter(2, rng.uniform(1500, 3000), "lowpass", fs=FS, output="sos"), tone * swell)
    )


def printer(n: int, rng: np.random.Generator) -> np.ndarray:
    """A label printer: bursts of motor whine and head clicks."""
    out = np.zeros(n)
    pos = int(rng.uniform(0, 2) * FS)
    whine_f = rng.uniform(250, 900)
    while pos < n:
        length = int(rng.uniform(0.4, 1.5) * FS)
        t = np.arange(length) / FS
        f = whine_f * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(3, 9) * t))
        phase = 2 * np.pi * np.cumsum(f) / FS
        burst = sum(np.sin(h * phase) / h for h in (1, 2, 3, 5))
        rate = rng.uniform(20, 45)
        for c in np.arange(0, t[-1], 1 / rate):
            i = int(c * FS)
            k = np.arange(min(40, length - i))
            burst[i : i + k.size] += 3 * rng.standard_normal(k.size) * np.exp(-k / 6)
        end = min(n, pos + length)
        out[pos:end] += burst[: end - pos]
        pos = end + int(rng.uniform(1.0, 4.0) * FS)
    return _unit(out + 1e-4 * rng.standard_normal(n))


def cart(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rumble (under 300 Hz) with rattles, louder as it passes."""
    from scipy.signal import butter, sosfilt

    rumble = sosfilt(butter(3, 300, "lowpass", fs=FS, output="sos"), rng.standard_normal(n))
    rattle = np.zeros(n)
    for i in rng.integers(0, n - 200, size=int(rng.uniform(8, 25) * n / FS)):
        k = np.arange(200)
        rattle[i : i + 200] += rng.standard_normal(200) * np.exp(-k / rng.uniform(10, 60))
    rattle = sosfilt(butter(2, [800, 6000], "bandpass", fs=FS, output="sos"), rattle)
    t = np.arange(n) / n
    passing = np.exp(-(((t - rng.uniform(0.3, 0.7)) / 0.2) ** 2))
    return _unit((_unit(rumble) + 0.5 * _unit(rattle)) * (0.15 + passing))


# -- rooms -------------------------------------------------------------------------------
def _mount(board: np.ndarray, dims: np.ndarray, rng: np.random.Generator):
    mount = str(rng.choice(["wall", "shelf", "ceiling"]))
    yaw = _rotation(np.array([0.0, 0, 1]), rng.uniform(0, 2 * np.pi))
    tilt = _rotation(rng.standard_normal(3), np.deg2rad(rng.uniform(0, 25)))
    centre = np.array([rng.uniform(0.3, dims[0] - 0.3), rng.uniform(0.3, dims[1] - 0.3), 0.0])
    if mount == "wall":
        centre[2] = rng.uniform(1.0, 2.3)
        axis = int(rng.integers(2))
        centre[axis] = 0.04 if rng.random() < 0.5 else dims[axis] - 0.04
        normal = np.zeros(3)
        normal[axis] = 1.0
        rot = tilt @ _rotation(np.cross([0, 0, 1.0], normal), np.pi / 2) @ yaw
    elif mount == "shelf":
        centre[2] = rng.uniform(1.1, 1.9)
        rot = tilt @ yaw
    else:
        centre[2] = dims[2] - 0.04
        rot = tilt @ _rotation(np.array([1.0, 0, 0]), np.pi) @ yaw
    mics = np.clip(centre[:, None] + rot @ board.T, 0.02, dims[:, None] - 0.02)
    return mount, centre, mics


def _point(rng, dims, centre, near: tuple[float, float], height: tuple[float, float]):
    for _ in range(500):
        p = np.array(
            [
                rng.uniform(0.25, dims[0] - 0.25),
                rng.uniform(0.25, dims[1] - 0.25),
                rng.uniform(*height),
            ]
        )
        if near[0] <= np.linalg.norm(p - centre) <= near[1]:
            return p
    return p


def _at_wall(rng, dims, height: tuple[float, float]) -> np.ndarray:
    p = np.array(
        [rng.uniform(0.2, dims[0] - 0.2), rng.uniform(0.2, dims[1] - 0.2), rng.uniform(*height)]
    )
    axis = int(rng.integers(2))
    p[axis] = 0.1 if rng.random() < 0.5 else dims[axis] - 0.1
    return p


def build(index: int, array: str = ARRAY) -> StrangerScene:
    import pyroomacoustics as pra

    from edge_agent.dsp.arrays import load_array

    rng = np.random.default_rng([SEED, index])
    speech_kind = "recorded" if index % 2 == 0 else "flite"
    snr_db = float(SNRS_DB[(index // 2) % len(SNRS_DB)])
    n = int(SECONDS * FS)
    dims = np.array([rng.uniform(2.3, 7.0), rng.uniform(2.3, 7.0), rng.uniform(2.3, 3.5)])
    rt60 = float(rng.uniform(0.15, 1.1))
    geometry = load_array(array)
    mount, centre, mics = _mount(geometry.mic_positions_m, dims, rng)

    e_abs, order = pra.inverse_sabine(rt60, dims)
    walls = ("east", "west", "north", "south", "floor", "ceiling")
    # each surface its own absorption around the room's (a carpet, a window, tiles)
    spread = np.clip(e_abs * rng.uniform(0.4, 1.8, size=6), 0.01, 0.95)
    room = pra.ShoeBox(
        dims,
        fs=FS,
        materials={w: pra.Material(float(a)) for w, a in zip(walls, spread, strict=True)},
        max_order=int(min(order, 24)),
        air_absorption=False,
    )

    talkers = int(rng.choice([1, 2, 3], p=[0.25, 0.5, 0.25]))
    dry = _talk(n, rng, speech_kind, talkers)
    sources: list[tuple[np.ndarray, np.ndarray, bool]] = []
    for sig in dry:
        sources.append((_point(rng, dims, centre, (0.4, 3.5), (0.9, 1.9)), sig, True))

    kinds = [str(k) for k in rng.choice(NOISE_KINDS, size=int(rng.integers(1, 4)), replace=False)]
    for kind in kinds:
        level = 10 ** (rng.uniform(-8, 0) / 20)
        if kind == "diffuse":
            slope = rng.uniform(-6, 0)
            for _ in range(12):
                sources.append(
                    (
                        _at_wall(rng, dims, (0.2, dims[2] - 0.2)),
                        _coloured(n, rng, slope) * level / np.sqrt(12),
                        False,
                    )
                )
        elif kind == "cart":
            a, b = _at_wall(rng, dims, (0.3, 0.8)), _at_wall(rng, dims, (0.3, 0.8))
            sig = cart(n, rng) * level
            t = np.arange(n)
            for k in range(5):  # rolled along: cross-faded between five points
                w = np.clip(1 - np.abs(t - (k + 0.5) * n / 5) / (n / 5), 0, 1)
                sources.append((a + (b - a) * k / 4, sig * w, False))
        else:
            make = {
                "concentrator": concentrator,
                "radio": radio,
                "sink": sink,
                "siren": siren,
                "printer": printer,
            }[kind]
            where = {
                "siren": lambda: _at_wall(rng, dims, (1.0, 2.0)),
                "sink": lambda: _at_wall(rng, dims, (0.8, 1.0)),
            }.get(kind, lambda: _point(rng, dims, centre, (0.6, 4.5), (0.3, 2.0)))
            sources.append((where(), make(n, rng) * level, False))

    for p, sig, _ in sources:
        room.add_source(np.clip(p, 0.05, dims - 0.05), signal=sig)
    room.add_microphone_array(mics)
    premix = room.simulate(return_premix=True)[:, :, :n]
    target = np.array([s[2] for s in sources])
    speech, noise = premix[target].sum(0), premix[~target].sum(0)
    rt60_measured = float(pra.experimental.measure_rt60(room.rir[0][0], fs=FS, decay_db=30))

    ref = geometry.mic_channels.index(geometry.reference_channel)
    noise *= np.sqrt(np.mean(speech[ref] ** 2) / np.mean(noise[ref] ** 2) / 10 ** (snr_db / 10))
    gains = 10 ** (rng.uniform(-1, 1, size=(speech.shape[0], 1)) / 20)
    speech, noise = speech * gains, noise * gains
    level = 10 ** (rng.uniform(-48, -20) / 20) / active_level(speech[ref])
    level = min(level, 0.9 / np.abs(speech + noise).max())
    self_noise = rng.standard_normal(speech.shape) * 10 ** (rng.uniform(-85, -75) / 20)
    mixture = (speech + noise) * level + self_noise
    channels = np.zeros((n, geometry.capture_channels))
    channels[:, list(geometry.mic_channels)] = mixture.T
    info = {
        "dims_m": [round(float(d), 2) for d in dims],
        "rt60_measured_s": round(rt60_measured, 2),
        "mount": mount,
        "talkers": talkers,
        "distances_m": [round(float(np.linalg.norm(s[0] - centre)), 2) for s in sources if s[2]],
        "noise": kinds,
    }
    return StrangerScene(
        f"stranger{index:03d}",
        speech_kind,
        snr_db,
        info,
        np.clip(np.round(channels * 32768), -32768, 32767).astype(np.int16),
        speech[ref] * level,
    )


def load(index: int, array: str = ARRAY) -> StrangerScene:
    import json

    mine = "" if array == ARRAY else f"-{array}"
    path = cache_dir() / "stranger" / f"{STRANGER_VERSION}{mine}-{index:03d}.npz"
    if path.exists():
        z = np.load(path)
        return StrangerScene(
            str(z["name"]),
            str(z["speech"]),
            float(z["snr"]),
            json.loads(str(z["info"])),
            z["mixture"],
            z["reference"],
        )
    scene = build(index, array)
    path.parent.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(
            tmp,
            name=scene.name,
            speech=scene.speech,
            snr=scene.snr_db,
            info=json.dumps(scene.info),
            mixture=scene.mixture,
            reference=scene.reference,
        )
    os.replace(tmp.name, path)
    return scene


# -- the bench ---------------------------------------------------------------------------
SCORED = (RAW, WEBRTC, OURS)


def evaluate(job: tuple[int, str, str]) -> dict:
    index, system, version = job

    def compute() -> dict:
        scene = load(index)
        fn = SYSTEMS[system][0]
        row = _scored(scene, system, fn(scene.mixture), system in ANCHORS)
        row["noise"] = scene.info["noise"]
        return row

    return _cached(["stranger", STRANGER_VERSION, ARRAY, index, system, version], compute)


def evaluate_array(job: tuple[int, str, str, str]) -> dict:
    """The raw reference mic or ours on one room drawn for another array (its own mics)."""
    from edge_agent.dsp.arrays import load_array
    from edge_agent.dsp.cli import process_array

    index, array, system, version = job

    def compute() -> dict:
        scene = load(index, array)
        if system == RAW:
            y = scene.mixture[:, load_array(array).reference_channel] / 32768
        else:
            y = process_array(scene.mixture, array) / 32768
        return _scored(scene, system, y)

    return _cached(["stranger", STRANGER_VERSION, array, index, system, version], compute)


def _change(
    by: dict, rooms: list[str], measure: str, system: str = OURS, against: str = RAW
) -> list[float]:
    """`system` minus `against` (the raw mic) on `measure`, a room."""
    return [by[(s, system)][measure] - by[(s, against)][measure] for s in rooms]


def _at(by: dict, rooms: list[str], snr: float, speech: str | None = None) -> list[str]:
    """The rooms at `snr` (and of that kind of speech)."""
    return [
        s for s in rooms if by[(s, RAW)]["snr"] == snr and speech in (None, by[(s, RAW)]["speech"])
    ]


def other_arrays(pool, scenes: int, version: str) -> str:
    """Ours on every other shipped array, on `scenes` rooms drawn for it."""
    from edge_agent.dsp.arrays import available_arrays

    lines = [
        f"The other arrays ({scenes} rooms each from the same generator, drawn for that "
        "array's mics; both kinds of speech together; change from that array's raw "
        "reference mic):",
        "",
        "| array | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | SI-SDR Δ at 0 dB | at 30 dB "
        "| bands below raw (SI-SDR or STOI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for array in [a for a in available_arrays() if a != ARRAY]:
        list(pool.imap_unordered(partial(load, array=array), range(scenes)))
        jobs = [(i, array, system, version) for system in (RAW, OURS) for i in range(scenes)]
        by = {(r["scene"], r["system"]): r for r in pool.imap_unordered(evaluate_array, jobs)}
        rooms = sorted({scene for scene, _ in by})
        below = [
            f"{snr}{speech[0]}"
            for speech in ("recorded", "flite")
            for snr in SNRS_DB
            if any(
                _mean(_change(by, _at(by, rooms, snr, speech), m)) < 0 for m in ("si_sdr", "stoi")
            )
        ]
        d = _change(by, rooms, "si_sdr")
        lines.append(
            f"| {array} | {_mean(d):+.2f} | {_worst_decile(d):+.2f} | "
            f"{_mean(_change(by, rooms, 'stoi')):+.3f} | "
            f"{_mean(_change(by, _at(by, rooms, 0), 'si_sdr')):+.2f} | "
            f"{_mean(_change(by, _at(by, rooms, 30), 'si_sdr')):+.2f} | "
            f"{', '.join(below) or 'none'} |"
        )
    return "\n".join(lines)


def render(rows: list[dict], scenes: int) -> str:
    by = {(r["scene"], r["system"]): r for r in rows}
    names = sorted({r["scene"] for r in rows})
    lines = [
        f"Rooms from another generator (`scripts/bench dsp-stranger`, {scenes} rooms of 12 s; "
        "scripts/bench_dsp_stranger.py says how they differ from the bench's: image sources "
        "only with each surface its own absorption, flite's voices and TEST's recordings, "
        "seven kinds of noise the bench and the mask's training do not have). Change from "
        "the raw reference mic; for looking, not for tuning.",
        "",
        "| speech | system | SI-SDR Δ mean | Δ worst 10 % | STOI Δ mean | PESQ-wb Δ mean "
        + "".join(f"| {s} dB " for s in SNRS_DB)
        + "|",
        "|---|---|---|---|---|---" + "|---" * len(SNRS_DB) + "|",
    ]
    for speech in ("recorded", "flite"):
        mine = [s for s in names if by[(s, RAW)]["speech"] == speech]
        for system in (WEBRTC, OURS):
            d = {m: _change(by, mine, m, system) for m in ("si_sdr", "stoi", "pesq")}
            cells = [
                f"{_mean(_change(by, _at(by, mine, snr), 'si_sdr', system)):+.1f} / "
                f"{_mean(_change(by, _at(by, mine, snr), 'stoi', system)):+.3f}"
                for snr in SNRS_DB
            ]
            lines.append(
                f"| {speech} | {system} | {_mean(d['si_sdr']):+.2f} | "
                f"{_worst_decile(d['si_sdr']):+.2f} | {_mean(d['stoi']):+.4f} | "
                f"{np.nanmean(d['pesq']):+.2f} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "(per SNR: SI-SDR Δ dB / STOI Δ.) By kind of noise (ours, SI-SDR Δ, "
        "rooms holding that noise among others):",
        "",
    ]
    kinds = []
    for kind in NOISE_KINDS:
        holding = [s for s in names if kind in by[(s, RAW)]["noise"]]
        if holding:
            low = [s for s in holding if by[(s, RAW)]["snr"] <= 5]
            kinds.append(
                f"{kind} {_mean(_change(by, holding, 'si_sdr')):+.2f} ({len(holding)} rooms; "
                f"at -5-5 dB {_mean(_change(by, low, 'si_sdr')):+.2f})"
            )
    lines.append("; ".join(kinds) + ".")
    below, under_webrtc = [], []
    for speech in ("recorded", "flite"):
        for snr in SNRS_DB:
            at = _at(by, names, snr, speech)
            if not at:
                continue
            for m in ("si_sdr", "stoi"):
                if _mean(_change(by, at, m)) < 0:
                    below.append(f"{snr}{speech[0]} {'SI-SDR' if m == 'si_sdr' else 'STOI'}")
            if np.nanmean(_change(by, at, "pesq", OURS, WEBRTC)) < 0:
                under_webrtc.append(f"{snr}{speech[0]}")
    lines += [
        "",
        "SNR bands where ours is below the raw mic: " + (", ".join(below) or "none") + "; "
        "where its PESQ-wb is below WebRTC NS's: " + (", ".join(under_webrtc) or "none") + " "
        "(r = recorded, f = flite speech).",
        "",
        f"Measured {datetime.date.today()} with `scripts/bench dsp-stranger --scenes "
        f"{scenes}` (stranger rooms {STRANGER_VERSION}, array `{ARRAY}`).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/bench dsp-stranger", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--scenes", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--array-scenes", type=int, default=64, help="rooms for each other array (0: none)"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    check_material()
    if subprocess.run(["which", "flite"], capture_output=True, check=False).returncode:
        sys.exit("bench dsp-stranger: flite is missing; run scripts/setup --bench on Debian")
    version = _dsp_version()
    jobs = [(i, s, version) for i in range(args.scenes) for s in SCORED]
    with get_context("spawn").Pool(args.jobs) as pool:
        list(pool.imap_unordered(load, range(args.scenes)))  # build each room once
        rows = list(pool.imap_unordered(evaluate, jobs))
        body = render(rows, args.scenes)
        if args.array_scenes:
            body += "\n\n" + other_arrays(pool, args.array_scenes, version)
    print(body)
    if not args.no_write:
        record_section(
            "dsp-stranger",
            "DSP front end on rooms from another generator (`scripts/bench dsp-stranger`)",
            body,
        )
    return 0


if __name__ == "__main__" and Path(sys.argv[0]).name == "bench_dsp_stranger.py":
    sys.exit(main(sys.argv[1:]))
