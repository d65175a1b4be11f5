#!/usr/bin/env python3
"""Train the front end's speech mask (edge_agent/dsp/mask.py) offline, with PyTorch.

    .venv/bin/pip install -e '.[bench,train]'      # torch: the CPU build (docs/dsp.md)
    .venv/bin/python scripts/train_dsp_mask.py      # ~25 min on 2 cores; writes the weights

(`--skip` adds a linear map from the features to the output layer; `--init` fine-tunes from
exported weights: docs/dsp.md has the command the shipped weights came from.)

Training data are one-mic mixtures made here, never the bench's scenes: TUNE speech only
(the bench's TUNE recordings and espeak-ng voices and sentences, plus narrowband voices
the bench does not use at all: Codec2's example recordings and Asterisk's Italian
"Menardi" prompts), each talker convolved with its own synthetic room impulse response
(exponential tails, RT60 0.15-1.1 s, direct-to-reverberant ratio from a random distance),
and noise from the bench's generators seeded apart from its scenes (TUNE seed family,
indices 100000 and up), hallway babble from TUNE speech, Asterisk's music on hold, ALSA's
noise sample and procedural noises the bench does not have (coloured noise of any tilt,
modulated noise, random tone complexes, clicks), at SNR -10..30 dB, capture levels -50..-12
dBFS, random mic tilt. No TEST speaker, voice, sentence, room or seed is touched.

The target is the ideal magnitude of the talkers' reverberant image (what the bench scores
against); the loss is the squared error of power-law (0.3) compressed magnitudes of the
masked mixture against it, per clip normalised by its level. `--phase W` adds W x the
uncompressed error against the talkers' phase-sensitive target (what a real gain on the
mixture can give back), where the loud bins count most, as they do in SI-SDR.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import _venv  # noqa: F401, I001  (first: re-executes under the project's .venv)
import argparse
import hashlib
import io
import time
from pathlib import Path

import numpy as np
from bench_dsp_material import (
    ESPEAK_VOICES,
    FS,
    HALLWAY_LINES,
    SENTENCES,
    _deb_members,
    active_normalise,
    cache_dir,
    espeak,
    recorded_speakers,
    to_16k,
    trim,
)
from bench_dsp_scenes import (
    SPLIT_SEEDS,
    beeps,
    fan_noise,
    hvac_noise,
    monitor_alarm,
    paper_and_keys,
)

from edge_agent.dsp.mask import FEATURES, FRAME_LEN, WEIGHTS, MaskFeatures

HOP = FRAME_LEN // 2
WINDOW = np.sqrt(np.hanning(FRAME_LEN + 1)[:-1])
CLIP_S = 6.0
TRAIN_SEED = [SPLIT_SEEDS["tune"], 100_000]  # the TUNE seed family, far from its scene indices
EXTRA_SENTENCES = [
    "Can you tell me when this started?",
    "I have been feeling dizzy in the afternoons.",
    "Let me check your reflexes, just relax your leg.",
    "We will call you with the results on Monday.",
    "Is there any family history of diabetes?",
    "I think it got worse after the weekend.",
    "Take one tablet twice a day with food.",
    "Point to where it hurts the most.",
    "No, I haven't had any problems with that before.",
    "The nurse will come in to take some blood.",
]
# espeak-ng voices for training: the bench's TUNE voices, and other languages with TUNE
# variants (never a TEST base voice or a TEST variant)
EXTRA_VOICES = ["de+m3", "es+f3", "it+m7", "nl+f2", "pt+Andy", "pl+Annie", "en-us+m1", "en+f1"]


# -- material ----------------------------------------------------------------------------
def _narrowband_voices() -> list[np.ndarray]:
    import soundfile as sf

    out = []
    for package, under in (
        ("codec2-examples", "codec2/wav/"),
        ("asterisk-prompt-it-menardi-wav", "sounds/it_IT_f_Menardi/"),
    ):
        try:
            members = _deb_members(package, ".wav", under)
        except RuntimeError as err:
            print(f"train: skipping {package}: {err}")
            continue
        for _name, data in sorted(members.items()):
            x, rate = sf.read(io.BytesIO(data))
            x = trim(to_16k(x, rate))
            if x.size < FS:
                continue
            for k in range(0, x.size, 8 * FS):  # long recordings in turns of <= 8 s
                piece = x[k : k + 8 * FS]
                if piece.size >= FS:
                    out.append(active_normalise(piece).astype(np.float32))
    return out


def _music() -> list[np.ndarray]:
    import G722

    out = []
    try:
        members = _deb_members("asterisk-moh-opsound-g722", ".g722", "moh/")
    except RuntimeError as err:
        print(f"train: skipping music on hold: {err}")
        return out
    for _, data in sorted(members.items()):
        pcm = np.asarray(G722.G722(FS, 64000).decode(data), np.float64)
        out.append((pcm / (np.sqrt(np.mean(pcm**2)) + 1e-9)).astype(np.float32))
    return out


def material() -> dict[str, list[np.ndarray]]:
    """Speech and noise pools (cached): TUNE material and noise the bench does not use."""
    # (v2: the recorded talkers without the silence prompts: bench_dsp_material.is_speech)
    path = cache_dir() / "train-mask-material-v2.npz"
    if path.exists():
        z = np.load(path)
        pools: dict[str, list[np.ndarray]] = {}
        for key in sorted(z.files, key=lambda k: (k.split("|")[0], int(k.split("|")[1]))):
            pools.setdefault(key.split("|")[0], []).append(z[key])
        return pools
    rng = np.random.default_rng(TRAIN_SEED)
    recorded = [u for us in recorded_speakers("tune").values() for u in us]
    synthetic = []
    voices = ESPEAK_VOICES["tune"] + EXTRA_VOICES
    texts = SENTENCES["tune"] + HALLWAY_LINES + EXTRA_SENTENCES
    for i in range(360):
        x = espeak(
            texts[i % len(texts)],
            voices[int(rng.integers(len(voices)))],
            speed=int(rng.integers(120, 200)),
            pitch=int(rng.integers(20, 80)),
        )
        synthetic.append(active_normalise(trim(x)).astype(np.float32))
    n = int(CLIP_S * FS)
    noise = []
    for i in range(300):
        gen = np.random.default_rng([*TRAIN_SEED, i])
        kind = i % 5
        sig = [hvac_noise, fan_noise, paper_and_keys, beeps, monitor_alarm][kind](n, gen)
        noise.append(sig.astype(np.float32))
    pools = {
        "recorded": recorded,
        "synthetic": synthetic,
        "narrowband": _narrowband_voices(),
        "music": _music(),
        "noise": noise,
    }
    np.savez(path, **{f"{k}|{i}": u for k, us in pools.items() for i, u in enumerate(us)})
    return pools


def parametric_voice(
    rng: np.random.Generator, base_hz: float | None = None, formants: bool | None = None
) -> np.ndarray:
    """One utterance (0.8-3.5 s) of a voice no corpus has, made from its parts: a harmonic
    source at any pitch from a low man's to a child's (75-400 Hz) that glides, falls and
    jitters, its harmonics falling off at a random tilt; syllables at 2.5-8 a second, with
    gaps between words; in most utterances formants that move from syllable to syllable
    (a vowel each), in the rest none (a hum, a sung or a muffled voice); now and then a
    fricative's hiss, and breath. The corpora's voices are a few dozen people and espeak:
    a voice outside them (a child, a synthetic or vocoded voice, a song) must still read as
    a talker, never as a noise the events may take out of a clean room. `base_hz` and
    `formants` hold a voice's pitch and kind from one utterance to the next (with neither,
    every draw is as it was)."""
    from scipy.signal import istft, stft

    n = int(rng.uniform(0.8, 3.5) * FS)
    t = np.arange(n) / FS
    base = float(np.exp(rng.uniform(np.log(75.0), np.log(400.0))))
    base = base if base_hz is None else base_hz
    glide = rng.uniform(0.03, 0.3) * np.sin(
        2 * np.pi * rng.uniform(0.2, 3.0) * t + rng.uniform(0, 2 * np.pi)
    )
    fall = rng.uniform(-0.3, 0.1) * t / t[-1]
    jitter = np.convolve(rng.standard_normal(n), np.ones(160) / 160, "same") * rng.uniform(0.0, 0.3)
    f0 = base * np.exp(glide + fall + jitter)
    phase = 2 * np.pi * np.cumsum(f0) / FS
    tilt = rng.uniform(0.6, 1.6)
    x = np.zeros(n)
    for k in range(1, int(7600 / f0.max()) + 1):
        x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) * k**-tilt
    # syllables: each a raised-cosine swell, some followed by a gap between words
    envelope = np.zeros(n)
    hiss = np.zeros(n)
    centres = []
    pos = int(rng.uniform(0.0, 0.1) * FS)
    while pos < n:
        length = int(rng.uniform(1 / 8, 1 / 2.5) * FS)
        end = min(n, pos + length)
        envelope[pos:end] = np.hanning(length + 2)[1:-1][: end - pos] * rng.uniform(0.5, 1.0)
        if rng.random() < 0.25:  # a fricative before the vowel
            burst = min(int(rng.uniform(0.04, 0.15) * FS), end - pos)
            hiss[pos : pos + burst] = np.hanning(burst + 2)[1:-1] * 10 ** (rng.uniform(-12, 0) / 20)
        centres.append((pos + end) // 2)
        pos = end + (int(rng.uniform(0.05, 0.35) * FS) if rng.random() < 0.3 else 0)
    x *= envelope
    x += rng.standard_normal(n) * envelope * rng.uniform(0.0, 0.1)  # breath
    shaped = rng.random() < 0.75  # (drawn even when held: the stream stays the same)
    if formants is not None:
        shaped = formants
    if shaped:  # formants, a vowel each syllable, gliding between them
        freqs, frames, spec = stft(x, FS, nperseg=FRAME_LEN, noverlap=FRAME_LEN - HOP)
        vowels = np.array(
            [
                [rng.uniform(250, 900), rng.uniform(700, 2600), rng.uniform(2100, 3500)]
                for _ in centres
            ]
        )
        vowels[:, 1] = np.maximum(vowels[:, 1], vowels[:, 0] + 200)
        widths = rng.uniform(50, 200, 3)
        at = np.array(centres) / FS
        shape = np.full(spec.shape, 0.02)
        for i in range(3):
            track = np.interp(frames, at, vowels[:, i])
            shape += 1.0 / (1.0 + ((freqs[:, None] - track[None, :]) / (widths[i] / 2)) ** 2)
        x = istft(spec * shape, FS, nperseg=FRAME_LEN, noverlap=FRAME_LEN - HOP)[1][:n]
        x = np.concatenate([x, np.zeros(n - x.size)])
    if hiss.any():
        noise = np.diff(rng.standard_normal(n + 1))  # (tilted up, as a fricative is)
        x += noise * hiss * np.sqrt(np.mean(x**2) / (np.mean((noise * hiss) ** 2) + 1e-20)) * 0.5
    return active_normalise(x).astype(np.float32)


# -- rooms -------------------------------------------------------------------------------
def room_response(rng: np.random.Generator, rt60: float, distance: float, volume: float):
    """A synthetic RIR: the direct path, a few early reflections and an exponential tail
    whose high band dies faster than its low band; energy ratio from the critical distance."""
    length = int(min(1.3 * rt60, 1.2) * FS)
    h = np.zeros(length)
    h[0] = 1.0
    early = int(rng.integers(4, 16))
    taps = rng.integers(int(0.001 * FS), int(0.03 * FS), early)
    h[taps] += rng.uniform(-0.7, 0.7, early)
    t = np.arange(length) / FS
    critical = 0.057 * np.sqrt(volume / rt60)
    reverb_energy = (distance / critical) ** 2 * float((h[: int(0.03 * FS)] ** 2).sum())
    start = int(rng.integers(int(0.002 * FS), int(0.01 * FS)))
    tail = np.zeros(length)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    cut = int(rng.uniform(800, 2500) / FS * length)
    for part, scale in (
        (slice(0, cut), rng.uniform(1.0, 1.3)),
        (slice(cut, None), rng.uniform(0.6, 1.0)),
    ):
        band = np.zeros_like(spectrum)
        band[part] = spectrum[part]
        tail += np.fft.irfft(band, n=length) * np.exp(-6.9 * t / (rt60 * scale))
    tail[:start] = 0
    tail *= np.minimum(1.0, (np.arange(length) - start).clip(0) / (0.005 * FS))
    tail *= np.sqrt(reverb_energy / ((tail**2).sum() + 1e-20))
    return h + tail


# -- simulated rooms ----------------------------------------------------------------------
ROOMS_VERSION = "v1"
ROOM_TALKERS = 3
ROOM_NOISES = 4


def simulated_room(index: int) -> list[np.ndarray]:
    """One shoebox room (pyroomacoustics' image sources plus ray tracing, as simulated exam
    rooms are built), drawn wider than the bench's space: 2.2-7 m, height 2.3-3.4 m, RT60
    0.15-1.1 s, the mic on a wall, a desk, the ceiling or anywhere. Returns the responses
    at that mic of ROOM_TALKERS talker positions (0.4-3.2 m away, 1.0-1.9 m high) and then
    ROOM_NOISES noise positions (anywhere: floor to ceiling, by the walls, far or near),
    each cut where its tail has died. Seeded by `index` alone (TUNE seed family)."""
    import pyroomacoustics as pra
    from bench_dsp_scenes import hybrid_room, place

    rng = np.random.default_rng([*TRAIN_SEED, 31, index])
    dims = np.array([rng.uniform(2.2, 7.0), rng.uniform(2.2, 7.0), rng.uniform(2.3, 3.4)])
    rt60 = rng.uniform(0.15, 1.1)
    mic = np.array([rng.uniform(0.3, d - 0.3) for d in dims])
    mount = int(rng.integers(4))
    if mount == 0:  # a wall
        axis = int(rng.integers(2))
        mic[axis] = 0.05 if rng.random() < 0.5 else dims[axis] - 0.05
        mic[2] = rng.uniform(0.9, 2.3)
    elif mount == 1:  # a desk
        mic[2] = rng.uniform(0.7, 0.95)
    elif mount == 2:  # the ceiling
        mic[2] = dims[2] - 0.05
    talkers = [place(rng, dims, mic, (0.4, 3.2), (1.0, 1.9)) for _ in range(ROOM_TALKERS)]
    noises = [
        place(rng, dims, mic, (0.3, 8.0), (0.1, dims[2] - 0.1), margin=0.1)
        for _ in range(ROOM_NOISES)
    ]
    air, rays = bool(rng.random() < 0.7), int(rng.integers(2000, 5000))
    while True:
        try:
            room = hybrid_room(dims, rt60, air_absorption=air, n_rays=rays)
            break
        except ValueError:  # too dead a room for its size: make it livelier
            rt60 *= 1.15
    for pos in talkers + noises:
        room.add_source(np.clip(pos, 0.05, dims - 0.05))
    room.add_microphone_array(mic[:, None])
    pra.random.seed(int(SPLIT_SEEDS["tune"]) * 1_000_000 + 31_000 + index)
    room.compute_rir()
    keep = int(FS * max(0.3, min(1.3 * rt60, 1.5)))
    return [np.asarray(h[:keep], np.float32) for h in room.rir[0]]


class RirBank:
    """Simulated rooms' responses, built once (both cores) and cached on disk."""

    def __init__(self, count: int, first: int = 0, jobs: int = 2) -> None:
        path = cache_dir() / f"train-mask-rooms-{ROOMS_VERSION}-{first}-{count}.npz"
        if not path.exists():
            from multiprocessing import get_context

            t0 = time.monotonic()
            with get_context("fork").Pool(jobs) as pool:
                rooms = pool.map(simulated_room, range(first, first + count), chunksize=4)
            lengths = np.array([[h.size for h in r] for r in rooms])
            np.savez(
                path, data=np.concatenate([h for r in rooms for h in r]), lengths=lengths
            )
            print(f"train: {count} simulated rooms in {time.monotonic() - t0:.0f} s", flush=True)
        z = np.load(path)
        self.data, self.lengths = z["data"], z["lengths"]
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths.ravel())]).reshape(-1)
        self.count = self.lengths.shape[0]

    def response(self, room: int, source: int) -> np.ndarray:
        i = room * self.lengths.shape[1] + source
        return self.data[self.offsets[i] : self.offsets[i + 1]].astype(np.float64)

    def room(self, rng: np.random.Generator):
        """(talker response, noise response) makers for one room drawn at random: each
        call gives another of its positions (distances are the room's own)."""
        r = int(rng.integers(self.count))

        def cycle(order: list):
            def respond(_distance: tuple[float, float]) -> np.ndarray:
                order.append(order.pop(0))
                return self.response(r, int(order[-1]))

            return respond

        return (
            cycle(list(rng.permutation(ROOM_TALKERS))),
            cycle(list(ROOM_TALKERS + rng.permutation(ROOM_NOISES))),
        )


def convolve(x: np.ndarray, h: np.ndarray, n: int) -> np.ndarray:
    size = 1 << int(np.ceil(np.log2(x.size + h.size)))
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


# -- noise the bench does not have -------------------------------------------------------
def procedural_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(4))
    freqs = np.fft.rfftfreq(n, 1 / FS)
    if kind == 0:  # coloured noise, any tilt
        spec = np.fft.rfft(rng.standard_normal(n)) * np.maximum(freqs, 20.0) ** (
            rng.uniform(-1.5, 0.5) / 2
        )
        x = np.fft.irfft(spec, n)
    elif kind == 1:  # noise whose level moves (traffic, a cart going by)
        base = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.maximum(freqs, 50) ** 0.5, n)
        env = np.cumsum(rng.standard_normal(n // 1600 + 2))
        env = np.interp(np.arange(n), np.arange(env.size) * 1600, env)
        x = base * np.exp(rng.uniform(0.2, 0.8) * (env - env.mean()) / (env.std() + 1e-9))
    elif kind == 2:  # a tone complex that switches on and off (a machine, a ringtone)
        t = np.arange(n) / FS
        x = sum(
            np.sin(2 * np.pi * rng.uniform(150, 4000) * t + rng.uniform(0, 6)) * rng.uniform(0.2, 1)
            for _ in range(int(rng.integers(1, 6)))
        )
        gate = (np.sin(2 * np.pi * rng.uniform(0.2, 2) * t) > rng.uniform(-1, 0.8)).astype(float)
        x = x * np.convolve(gate, np.ones(80) / 80, "same")
    else:  # clicks and knocks
        x = np.zeros(n)
        for _ in range(int(rng.integers(5, 60))):
            i = int(rng.integers(n - 400))
            length = int(rng.integers(20, 400))
            x[i : i + length] += (
                rng.standard_normal(length)
                * np.exp(-np.arange(length) / rng.uniform(10, 150))
                * rng.uniform(0.3, 3)
            )
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def babble(n: int, rng: np.random.Generator, speech: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(rng.integers(2, 7))):
        pos = int(rng.uniform(-1, 1) * FS)
        while pos < n:
            u = speech[int(rng.integers(len(speech)))]
            start = max(pos, 0)
            seg = u[start - pos :]
            end = min(n, start + seg.size)
            out[start:end] += seg[: end - start] * rng.uniform(0.4, 1.0)
            pos = end + int(rng.uniform(0.1, 1.5) * FS)
    if rng.random() < 0.6:  # through a door
        spec = np.fft.rfft(out)
        spec *= 1 / np.sqrt(1 + (np.fft.rfftfreq(n, 1 / FS) / rng.uniform(600, 2500)) ** 4)
        out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def clip_of(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if x.size >= n:
        i = int(rng.integers(x.size - n + 1))
        return x[i : i + n].astype(np.float64)
    return np.resize(x, n).astype(np.float64)


# -- one training clip -------------------------------------------------------------------
#: voices made from their parts (`parametric_voice`) and the share of talkers who speak with
#: one (`--voices`; set before the clip maker forks; None: none, and no draw for it)
_VOICES: tuple[list[np.ndarray], float] | None = None


def _voice_pool(rng: np.random.Generator, pools: dict) -> list[np.ndarray]:
    """A talker's kind of voice: recorded, synthetic or narrowband (or, with `--voices`,
    made from its parts)."""
    if _VOICES is not None and rng.random() < _VOICES[1]:
        return _VOICES[0]
    r = rng.random()
    return pools["recorded"] if r < 0.45 else pools["synthetic"] if r < 0.8 else pools["narrowband"]


def speech_track(n: int, rng: np.random.Generator, pools: dict) -> np.ndarray:
    """One talker's dry turns: utterances with pauses, some leading silence; speed and
    pitch perturbed by resampling (a different vocal tract length)."""
    from scipy.signal import resample_poly

    pool = _voice_pool(rng, pools)
    out = np.zeros(n)
    pos = int(rng.uniform(0, 2.0) * FS) if rng.random() < 0.6 else 0
    while pos < n - FS // 4:
        u = pool[int(rng.integers(len(pool)))].astype(np.float64)
        if rng.random() < 0.5:
            up = int(rng.integers(85, 118))
            u = resample_poly(u, up, 100)
        end = min(n, pos + u.size)
        out[pos:end] += u[: end - pos] * rng.uniform(0.6, 1.4)
        pos = end + int(rng.uniform(0.1, 2.0) * FS)
        if rng.random() < 0.25:
            break
    return out


def conversation(n: int, rng: np.random.Generator, pools: dict, talkers: int) -> list[np.ndarray]:
    """Talk that never pauses for long (the talk the mask read as noise after a short
    pause): each talker keeps one voice, the next utterance follows the last after 20-600
    ms (now and then 0.6-1.5 s), from the clip's first moments to its end. One dry track per
    talker."""
    from scipy.signal import resample_poly

    voices = []
    for _ in range(talkers):
        pool = _voice_pool(rng, pools)
        voices.append((pool, int(rng.integers(85, 118)) if rng.random() < 0.5 else 100))
    out = [np.zeros(n) for _ in range(talkers)]
    pos, last = int(rng.uniform(0, 0.3) * FS), -1
    while pos < n - FS // 8:
        k = int(rng.integers(talkers))
        if k == last and talkers > 1 and rng.random() < 0.7:
            k = (k + 1 + int(rng.integers(talkers - 1))) % talkers
        pool, up = voices[k]
        u = pool[int(rng.integers(len(pool)))].astype(np.float64)
        if up != 100:
            u = resample_poly(u, up, 100)
        end = min(n, pos + u.size)
        out[k][pos:end] += u[: end - pos] * rng.uniform(0.7, 1.3)
        gap = rng.uniform(0.6, 1.5) if rng.random() < 0.1 else rng.uniform(0.02, 0.6)
        pos, last = end + int(gap * FS), k
    return out


def _hard_noise(n: int, rng: np.random.Generator, pools: dict, respond):
    """What the mask missed on the bench's 0 dB rooms: a monitor alarm, equipment beeps or
    hallway babble through a door (far, reverberant), over a weaker steady background."""
    kind = int(rng.integers(3))
    if kind < 2:  # pools["noise"][i] is generator i % 5: 3 beeps, 4 alarm
        x = clip_of(pools["noise"][int(rng.integers(60)) * 5 + 3 + kind], n, rng)
        x = convolve(x, respond((0.5, 4.0)), n)
    else:
        x = babble(n, rng, pools["recorded"] + pools["synthetic"])
        x = convolve(x, respond((2.5, 6.0)), n)
    if rng.random() < 0.6:  # a steady background under it
        bed = clip_of(pools["noise"][int(rng.integers(60)) * 5 + int(rng.integers(3))], n, rng)
        bed = convolve(bed, respond((0.5, 5.0)), n)
        x = x / (np.sqrt(np.mean(x**2)) + 1e-12)
        x = x + bed / (np.sqrt(np.mean(bed**2)) + 1e-12) * 10 ** (rng.uniform(-20, -6) / 20)
    return x


def _switched(noise: np.ndarray, rng: np.random.Generator, pools: dict, respond) -> np.ndarray:
    """The noise switched on partway through the clip (a tap, a fan, a printer), ramped over
    10-300 ms after 0.3-2.5 s of a quieter bed (10-40 dB under it, or the mic's self-noise
    alone), and in a third of the clips off again 1.5-4 s later. The mask had only heard
    noise that runs from a clip's first frame: a steady noise that came on after a quiet
    spell read as talk 3-6 s later (docs/dsp.md, "The mask fine-tuned on noise that
    switches on": not the features' lagging band means, the GRU's own state)."""
    n = noise.size
    gate = np.zeros(n)
    on = int(rng.uniform(0.3, 2.5) * FS)
    off = n
    if rng.random() < 1 / 3:
        off = min(n, on + int(rng.uniform(1.5, 4.0) * FS))
    gate[on:off] = 1.0
    ramp = max(1, int(rng.uniform(0.01, 0.3) * FS))
    gate = np.convolve(gate, np.ones(ramp) / ramp, "full")[:n]
    out = noise * gate
    if rng.random() < 0.7:  # a quieter bed under it, from the first frame
        bed = clip_of(pools["noise"][int(rng.integers(len(pools["noise"])))], n, rng)
        if rng.random() < 0.5:
            bed = procedural_noise(n, rng)
        bed = convolve(bed, respond((0.5, 5.0)), n)
        scale = np.sqrt(np.mean(noise**2) / (np.mean(bed**2) + 1e-20))
        out += bed * scale * 10 ** (-rng.uniform(10, 40) / 20)
    return out


def _stopped(noise: np.ndarray, rng: np.random.Generator, pools: dict, respond) -> np.ndarray:
    """The noise dropped partway through the clip, under talk: a fan or a tap switched off
    or turned down, a cart gone by, a door shut on the hallway. It runs from the clip's
    first frame and falls, over 10 ms to 1 s, 1.5-4.5 s in, by 15-40 dB: to the same
    noise quieter, to a bed of another kind, or to the mic's self-noise alone. The mask
    read the quiet room after such a noise as noisy for seconds while the talk went on, for
    its state had learned the noise (docs/dsp.md, "After a noise stops")."""
    n = noise.size
    gate = np.ones(n)
    off = int(rng.uniform(1.5, 4.5) * FS)
    gate[off:] = 0.0
    ramp = max(1, int(np.exp(rng.uniform(np.log(0.01), np.log(1.0))) * FS))
    gate = np.convolve(np.concatenate([np.ones(ramp - 1), gate]), np.ones(ramp) / ramp, "valid")
    rms = np.sqrt(np.mean(noise[:off] ** 2)) + 1e-12
    kind = rng.random()
    if kind < 0.4:
        bed = noise
    elif kind < 0.85:
        bed = clip_of(pools["noise"][int(rng.integers(len(pools["noise"])))], n, rng)
        if rng.random() < 0.4:
            bed = procedural_noise(n, rng)
        bed = convolve(bed, respond((0.5, 5.0)), n)
    else:
        return noise * gate
    bed = bed * rms / (np.sqrt(np.mean(bed**2)) + 1e-12) * 10 ** (-rng.uniform(15, 40) / 20)
    return noise * gate + bed


def capture_transient(n: int, rng: np.random.Generator) -> np.ndarray:
    """What a codec or a MEMS mic may give as its capture starts: a thump (a damped low
    sine, 8-80 Hz, 3-60 ms), a pop (a one-sided pulse, 1-30 ms) or a click (a few samples),
    or two of them, within the first 30 ms, from -40 to -1 dBFS. The mask heard none: its
    state is born on a stream's first frames, and in a quiet room such a start had it read
    the talker as noise for ten seconds (docs/dsp.md, "Where the stream starts")."""
    out = np.zeros(n)
    for _ in range(1 if rng.random() < 0.7 else 2):
        at = int(rng.uniform(0.0, 0.03) * FS)
        peak = 10 ** (rng.uniform(-40, -1) / 20) * rng.choice([-1.0, 1.0])
        kind = rng.random()
        if kind < 0.4:
            decay = rng.uniform(0.003, 0.06)
            t = np.arange(int(5 * decay * FS)) / FS
            phase = rng.uniform(0, np.pi)
            x = np.exp(-t / decay) * np.sin(2 * np.pi * rng.uniform(8, 80) * t + phase)
        elif kind < 0.75:
            length = max(2, int(rng.uniform(0.001, 0.03) * FS))
            x = np.hanning(2 * length + 1)[length:] if rng.random() < 0.5 else np.hanning(length)
        else:
            x = rng.standard_normal(int(rng.integers(1, 9)))
        x = x[: n - at]
        out[at : at + x.size] += peak * x / (np.abs(x).max() + 1e-12)
    return out


def make_clip(
    rng: np.random.Generator,
    pools: dict,
    focus: float = 0.0,
    rooms: RirBank | None = None,
    simulated: float = 0.0,
    talk: float = 0.0,
    seconds: float = CLIP_S,
    onset: float = 0.0,
    start: float = 0.0,
    stops: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(speech image, noise image) at one mic, float, capture scale. With probability
    `focus` the clip is one of the cases the mask was weakest on (half hard noise at
    -5..5 dB, alarms / beeps / hallway babble; half clean rooms at 20-40 dB whose
    reverberant speech the mask should pass whole); otherwise the base distribution. With
    probability `simulated` (and a bank of `rooms`) every source sounds through one
    simulated room's responses instead of the synthetic ones. With probability `talk` the
    clip is talk that never pauses for long (`conversation`) over the base noise, at
    -5..35 dB. With probability `onset` the base noise switches on partway (`_switched`).
    With probability `start` the clip is the end of a longer one (0.05-3 s cut from its
    front), so its first frame may fall mid-word or mid-burst, as a stream that opens while
    someone talks does, and half of those open on a capture transient
    (`capture_transient`). With probability `stops` the clip's noise drops partway under
    talk (`_stopped`). Every other clip opens on a talker's first sound or a pause.
    `seconds` is the clip's length."""
    lead = int(rng.uniform(0.05, 3.0) * FS) if start > 0 and rng.random() < start else 0
    n = int(seconds * FS) + lead
    rt60 = rng.uniform(0.15, 1.1)
    volume = rng.uniform(25, 120)

    def respond(distance: tuple[float, float]) -> np.ndarray:
        return room_response(rng, rt60, rng.uniform(*distance), volume)

    talker_response = noise_response = respond
    if rooms is not None and simulated > 0 and rng.random() < simulated:
        talker_response, noise_response = rooms.room(rng)
    speech = np.zeros(n)
    mode, tracks = "base", []
    if talk > 0 and rng.random() < talk:
        mode = "talk"
    elif onset > 0 and rng.random() < onset:
        mode = "onset"
    elif stops > 0 and rng.random() < stops:
        mode = "stops"
    elif rng.random() < focus:
        mode = "hard" if rng.random() < 0.5 else "clean"
    talkers = 0 if rng.random() < 0.07 else int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    if mode == "talk" or (mode == "stops" and rng.random() < 0.7):
        talkers = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        tracks = conversation(n, rng, pools, talkers)
    elif mode == "stops":
        talkers = int(rng.choice([1, 2], p=[0.6, 0.4]))
    elif mode == "onset":  # (a quarter without talkers: the noise alone must read as noise)
        talkers = int(rng.choice([0, 1, 2], p=[0.25, 0.45, 0.3]))
    elif mode != "base":
        talkers = int(rng.choice([1, 2], p=[0.6, 0.4]))
    for k in range(talkers):
        dry = tracks[k] if tracks else speech_track(n, rng, pools)
        speech += convolve(dry, talker_response((0.4, 3.2)), n) * rng.uniform(0.5, 1.5)
    noise = np.zeros(n)
    if mode == "hard":
        noise = _hard_noise(n, rng, pools, noise_response)
    for _ in range(int(rng.integers(1, 4)) if mode != "hard" else 0):
        r = rng.random()
        if r < 0.35:
            x = clip_of(pools["noise"][int(rng.integers(len(pools["noise"])))], n, rng)
        elif r < 0.55:
            x = procedural_noise(n, rng)
        elif r < 0.75:
            x = babble(n, rng, pools["recorded"] + pools["synthetic"])
        elif r < 0.85 and pools["music"]:
            x = clip_of(pools["music"][int(rng.integers(len(pools["music"])))], n, rng)
        else:
            x = procedural_noise(n, rng)
        if rng.random() < 0.8:
            x = convolve(x, noise_response((0.5, 5.0)), n)
        noise += x * 10 ** (rng.uniform(-10, 0) / 20)
    if mode == "onset":
        noise = _switched(noise, rng, pools, noise_response)
    snr_db = rng.uniform(-10, 30) if rng.random() < 0.85 else rng.uniform(-5, 10)
    if mode == "hard":
        snr_db = rng.uniform(-5, 5)
    elif mode == "stops":
        snr_db = rng.uniform(-5, 15)  # (while the noise runs)
    elif mode == "talk":
        snr_db = rng.uniform(-5, 35)
    elif mode == "clean":
        snr_db = rng.uniform(20, 40)
    if talkers:
        active = speech[np.abs(speech) > 0]
        frames = speech[: n // 320 * 320].reshape(-1, 320)
        power = (frames**2).mean(1)
        speech_level = np.sqrt(power[power > power.max() * 1e-3].mean()) if active.size else 1.0
        noise *= speech_level / (np.sqrt(np.mean(noise**2)) + 1e-12) / 10 ** (snr_db / 20)
    else:
        speech_level = np.sqrt(np.mean(noise**2)) * 10 ** (rng.uniform(-10, 20) / 20)
    if mode == "stops":
        noise = _stopped(noise, rng, pools, noise_response)
    level = 10 ** (rng.uniform(-50, -12) / 20) / (speech_level + 1e-12)
    speech *= level
    noise *= level
    noise += rng.standard_normal(n) * 10 ** (rng.uniform(-90, -68) / 20)  # mic self-noise
    if rng.random() < 0.5:  # the mic's response: a gentle tilt
        tilt = np.fft.rfftfreq(n, 1 / FS) / 4000.0
        gain = 10 ** (rng.uniform(-3, 3) * np.tanh(tilt - 0.5) / 20)
        speech = np.fft.irfft(np.fft.rfft(speech) * gain, n)
        noise = np.fft.irfft(np.fft.rfft(noise) * gain, n)
    peak = np.abs(speech + noise).max()
    if peak > 0.99:
        speech, noise = speech * 0.99 / peak, noise * 0.99 / peak
    if lead:
        speech, noise = speech[lead:], noise[lead:]
        if rng.random() < 0.5:  # (clipped as the converter would)
            noise = np.clip(speech + noise + capture_transient(noise.size, rng), -1, 1) - speech
    return speech, noise


def stft(x: np.ndarray) -> np.ndarray:
    """(n,) -> (T, bins): the pipeline's grid (sqrt-Hann 512, hop 256, half a frame of
    zeros first)."""
    padded = np.concatenate([np.zeros(FRAME_LEN - HOP), x])
    frames = (padded.size - FRAME_LEN) // HOP + 1
    index = np.arange(frames)[:, None] * HOP + np.arange(FRAME_LEN)
    return np.fft.rfft(padded[index] * WINDOW, axis=-1)


def phase_sensitive_target(talkers: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """|S| cos(angle(S) - angle(Y)): the part of the talkers' spectrum S that lies along the
    mixture's Y, which is all a real gain on the mixture can give back. A gain g leaves
    |g Y - S|^2 = (g |Y| - this)^2 + (what lies across Y), so the error against it is the
    waveform's error up to a part no gain can touch. Negative where the noise has turned
    the bin against the talkers."""
    return (talkers * mixture.conj()).real / (np.abs(mixture) + 1e-12)


def make_batch(
    rng: np.random.Generator,
    pools: dict,
    count: int,
    focus: float = 0.0,
    rooms: RirBank | None = None,
    simulated: float = 0.0,
    talk: float = 0.0,
    seconds: float = CLIP_S,
    onset: float = 0.0,
    start: float = 0.0,
    stops: float = 0.0,
):
    """Features, the mixture's magnitudes, the talkers' magnitudes, and the talkers'
    magnitudes projected on the mixture's phase (|S| cos(angle(S) - angle(Y)): what a real
    gain on the mixture can give back of them, the phase-sensitive target)."""
    feats, noisy, clean, projected = [], [], [], []
    for _ in range(count):
        s, v = make_clip(
            rng, pools, focus, rooms, simulated, talk, seconds, onset, start, stops
        )
        y = stft(s + v)
        talkers = stft(s)
        power = y.real**2 + y.imag**2
        magnitude = np.sqrt(power)
        feats.append(MaskFeatures()(power).astype(np.float32))
        noisy.append(magnitude.astype(np.float32))
        clean.append(np.abs(talkers).astype(np.float32))
        projected.append(phase_sensitive_target(talkers, y).astype(np.float32))
    return np.stack(feats), np.stack(noisy), np.stack(clean), np.stack(projected)


# -- the model ---------------------------------------------------------------------------
def build_model(hidden: int, inputs: int, bins: int, inner: int = 96, skip: bool = False):
    """features -> Linear + tanh -> GRU -> Linear + sigmoid, one mask value per bin. With
    `skip`, the frame's own features also reach the output layer through a linear map (no
    bias): the GRU's state says what the room holds, the frame's fine spectrum where."""
    import torch

    class MaskNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(inputs, inner)
            self.gru = torch.nn.GRU(inner, hidden, batch_first=True)
            self.out = torch.nn.Linear(hidden, bins)
            self.skip = torch.nn.Linear(inputs, bins, bias=False) if skip else None

        def forward(self, x):
            h, _ = self.gru(torch.tanh(self.inp(x)))
            y = self.out(h)
            if self.skip is not None:
                y = y + self.skip(x)
            return torch.sigmoid(y)

    return MaskNet()


#: torch parameter -> its name in the exported .npz (what edge_agent/dsp/mask.py reads)
PARAM_NAMES = {
    "inp.weight": "in_w",
    "inp.bias": "in_b",
    "gru.weight_ih_l0": "gru_w_ih",
    "gru.weight_hh_l0": "gru_w_hh",
    "gru.bias_ih_l0": "gru_b_ih",
    "gru.bias_hh_l0": "gru_b_hh",
    "out.weight": "out_w",
    "out.bias": "out_b",
    "skip.weight": "skip_w",  # (only with --skip)
}


def load_weights(model, params) -> None:
    """Exported weights into the torch model; a model with a skip its weights lack (the
    weights before it) gets a skip of zero, and a wider GRU than theirs gets them widened
    (`widened`), so it computes what those weights did."""
    import torch

    if params["gru_w_hh"].shape[1] < model.gru.hidden_size:  # (weights of a narrower GRU)
        state = model.state_dict()
        fresh = {v: state[k].numpy() for k, v in PARAM_NAMES.items() if k in state}
        params = widened(params, fresh)
    model.load_state_dict(
        {
            k: torch.from_numpy(params[v].astype(np.float32))
            for k, v in PARAM_NAMES.items()
            if v in params
        },
        strict=model.skip is None or "skip_w" in params,
    )
    if model.skip is not None and "skip_w" not in params:
        with torch.no_grad():
            model.skip.weight.zero_()


def widened(params: dict, fresh: dict) -> dict:
    """Exported weights of a narrower GRU placed in a wider one's (`fresh`: the wider model's
    own initial weights, exported names) so that the wider computes what they did (Net2Net's
    wider net): each gate's old units keep their weights; the new units keep their fresh
    weights in, but nothing of theirs reaches the old units or the output layer yet, so a
    run starts as the start weights and gives the new units a part only as far as training
    finds one."""
    old, new = params["gru_w_hh"].shape[1], fresh["gru_w_hh"].shape[1]
    wide = {k: np.array(v, np.float32) for k, v in fresh.items()}
    for name in ("gru_w_ih", "gru_w_hh", "gru_b_ih", "gru_b_hh"):
        for gate in range(3):
            rows = slice(gate * new, gate * new + old)
            part = params[name][gate * old : (gate + 1) * old]
            if name == "gru_w_hh":
                wide[name][rows, :old] = part
                wide[name][rows, old:] = 0.0  # (the new units reach no old unit)
            else:
                wide[name][rows] = part
    wide["out_w"][...] = 0.0
    wide["out_w"][:, :old] = params["out_w"]
    for name in params:
        if not name.startswith(("gru_", "out_w")):
            wide[name] = np.array(params[name], np.float32)
    if "skip_w" not in params:
        wide.pop("skip_w", None)
    return wide


def export(model, path: Path) -> None:
    """Float16 weights: half the size, and the numpy side computes in float32 from them."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez_compressed(
        path, **{v: state[k].astype(np.float16) for k, v in PARAM_NAMES.items() if k in state}
    )


VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "dsp_mask.npz"


def check_and_write_vectors(weights: Path, hidden: int, vectors: Path = VECTORS) -> float:
    """Load the exported (float16) weights into the torch model, run torch and the unit's
    numpy inference on the same power spectra, and write both as the test vector the
    numpy side is checked against (tests/dsp/test_mask.py). Returns the largest gap."""
    import torch

    from edge_agent.dsp.mask import SpeechMask

    params = np.load(weights)
    rng = np.random.default_rng([*TRAIN_SEED, 123])
    s, v = make_clip(rng, material())
    y = stft(s + v)[:32]
    power = (y.real**2 + y.imag**2).astype(np.float32)
    model = build_model(hidden, FEATURES, power.shape[1], skip="skip_w" in params)
    load_weights(model, params)
    model.eval()
    features = MaskFeatures()(power.astype(np.float64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(features)[None])[0].numpy()
    got = SpeechMask(weights)(power.astype(np.float64))
    gap = float(np.abs(got - expected).max())
    vectors.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(vectors, power=power, torch_mask=expected)
    return gap


def loss_fn(mask, noisy, clean, projected=None, phase: float = 0.0):
    """Compressed-magnitude error of the masked mixture, plus a little of the mask's own
    error against the ideal ratio mask (so the mask is a calibrated speech presence too:
    the beamformer's statistics and the room's SNR are read from it). With `phase`, plus
    that much of the uncompressed error of the masked mixture against the talkers'
    phase-sensitive target (`projected`): the error as the waveform has it, where the loud
    bins count most, as they do in SI-SDR."""
    scale = noisy.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-9
    est = (mask * noisy / scale + 1e-8).pow(0.3)
    ref = (clean / scale + 1e-8).pow(0.3)
    ideal = (clean / (noisy + 1e-9)).clamp(0.0, 1.0)
    loss = (est - ref).pow(2).mean() + 0.1 * (mask - ideal).pow(2).mean()
    if phase:
        loss = loss + phase * ((mask * noisy - projected) / scale).pow(2).mean()
    return loss


#: the simulated rooms the clip maker draws from (set before the clip maker forks)
_ROOMS: RirBank | None = None


def _round(job: tuple) -> tuple[np.ndarray, ...]:
    seed, index, count, focus, simulated, talk, seconds, onset, start, stops = job
    rng = np.random.default_rng([*TRAIN_SEED, 7, seed, index])
    return make_batch(
        rng, material(), count, focus, _ROOMS, simulated, talk, seconds, onset, start, stops
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=70, help="rounds of fresh clips")
    parser.add_argument("--clips-per-round", type=int, default=512)
    parser.add_argument("--passes", type=int, default=4, help="passes over each round's clips")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument(
        "--skip", action="store_true", help="the frame's features also reach the output layer"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--init", type=Path, help="start from these exported weights")
    parser.add_argument(
        "--focus",
        type=float,
        default=0.0,
        help="share of clips drawn from the hard cases (alarms, beeps, hallway at -5..5 dB) "
        "and clean rooms (20-40 dB); the rest from the base distribution",
    )
    parser.add_argument(
        "--rooms", type=int, default=0, help="simulated rooms to draw from (0: none)"
    )
    parser.add_argument(
        "--simulated",
        type=float,
        default=0.0,
        help="share of clips heard through a simulated room (--rooms) instead of a "
        "synthetic response",
    )
    parser.add_argument(
        "--talk",
        type=float,
        default=0.0,
        help="share of clips of talk that never pauses for long (20-600 ms between "
        "utterances), at -5..35 dB",
    )
    parser.add_argument(
        "--onset",
        type=float,
        default=0.0,
        help="share of clips whose noise switches on partway (after a quieter bed), and "
        "in a third of them off again",
    )
    parser.add_argument(
        "--start",
        type=float,
        default=0.0,
        help="share of clips cut from a longer one at a random point (a stream that opens "
        "mid-word or mid-burst), half of them opening on a capture transient",
    )
    parser.add_argument(
        "--stops",
        type=float,
        default=0.0,
        help="share of clips whose noise drops by 15-40 dB partway, under talk that in most "
        "of them never pauses for long",
    )
    parser.add_argument(
        "--phase",
        type=float,
        default=0.0,
        help="weight of the uncompressed phase-sensitive error in the loss (0: none)",
    )
    parser.add_argument(
        "--voices",
        type=float,
        default=0.0,
        help="share of talkers whose voice is made from its parts (parametric_voice: any "
        "pitch, formants or none), beside the recorded and synthetic ones",
    )
    parser.add_argument(
        "--voice-formants",
        action="store_true",
        help="with --voices: every voice made from its parts has formants (none a hum, "
        "whose harmonics the switched tones among the noises also have)",
    )
    parser.add_argument(
        "--clip-seconds", type=float, default=CLIP_S, help="each training clip's length"
    )
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="stop after this many minutes (0: no limit)"
    )
    parser.add_argument(
        "--snapshots", type=int, default=0, help="also export every N rounds (<out>.rN.npz)"
    )
    args = parser.parse_args()

    from multiprocessing import get_context

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the other core makes the next round's clips
    pools = material()
    print("train: material", {k: len(v) for k, v in pools.items()}, flush=True)
    # validation: the base distribution (as before) and, when training with focus, as many
    # focus clips; weights are kept on the sum
    vals = [make_batch(np.random.default_rng([*TRAIN_SEED, 99]), pools, 64)]
    if args.focus > 0:
        vals.append(make_batch(np.random.default_rng([*TRAIN_SEED, 98]), pools, 64, 1.0))
    global _ROOMS, _VOICES
    if args.voices > 0:
        formants = True if args.voice_formants else None
        # validation: as many clips in which every talker has a voice of its own, from voices
        # never trained on (the corpora's validation holds none of them)
        rng = np.random.default_rng([*TRAIN_SEED, 93])
        _VOICES = ([parametric_voice(rng, formants=formants) for _ in range(100)], 1.0)
        vals.append(make_batch(np.random.default_rng([*TRAIN_SEED, 92]), pools, 64))
        rng = np.random.default_rng([*TRAIN_SEED, 94])
        _VOICES = ([parametric_voice(rng, formants=formants) for _ in range(400)], args.voices)
    if args.rooms and args.simulated > 0:
        _ROOMS = RirBank(args.rooms)
        # validation rooms of their own, never trained on
        held = RirBank(64, first=1_000_000)
        vals.append(
            make_batch(np.random.default_rng([*TRAIN_SEED, 97]), pools, 64, args.focus, held, 1.0)
        )
    # as many clips of talk without pauses, of noise that switches on, and of streams that
    # open mid-word (half on a capture transient), as the training's clips are long
    for share, seed, family in (
        (args.talk, 96, "talk"),
        (args.onset, 95, "onset"),
        (args.start, 91, "start"),
        (args.stops, 90, "stops"),
    ):
        if share > 0:
            rng = np.random.default_rng([*TRAIN_SEED, seed])
            vals.append(make_batch(rng, pools, 64, seconds=args.clip_seconds, **{family: 1.0}))
    vals_t = [[torch.from_numpy(a) for a in val] for val in vals]
    model = build_model(args.hidden, vals[0][0].shape[2], vals[0][1].shape[2], skip=args.skip)
    if args.init:  # (a skip the start weights lack starts at zero: the run starts as they do)
        load_weights(model, np.load(args.init))

    def validate() -> list[float]:
        model.eval()
        with torch.no_grad():
            return [float(loss_fn(model(f), y, c, p, args.phase)) for f, y, c, p in vals_t]

    start = time.monotonic()
    best = float("inf")
    if args.init:
        v0 = validate()
        best = sum(v0)
        print(f"train: start val {' '.join(f'{v:.4f}' for v in v0)}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    jobs = [
        (
            args.seed,
            r,
            args.clips_per_round,
            args.focus,
            args.simulated,
            args.talk,
            args.clip_seconds,
            args.onset,
            args.start,
            args.stops,
        )
        for r in range(args.rounds)
    ]
    # one round made ahead, no more: a round is ~0.8 GB, and a paused trainer must not let
    # the clip maker run on
    with get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(_round, (jobs[0],))
        for r in range(args.rounds):
            batch = pending.get()
            if r + 1 < args.rounds:
                pending = pool.apply_async(_round, (jobs[r + 1],))
            feats, noisy, clean, projected = (torch.from_numpy(a) for a in batch)
            del batch
            progress = r / args.rounds  # cosine decay over the rounds, or the time limit
            if args.minutes:
                progress = max(progress, (time.monotonic() - start) / (60 * args.minutes))
            lr = args.lr * (0.03 + 0.97 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            gen = torch.Generator().manual_seed(args.seed * 1000 + r)
            for _ in range(args.passes):
                order = torch.randperm(feats.shape[0], generator=gen)
                for i in range(0, feats.shape[0], args.batch):
                    idx = order[i : i + args.batch]
                    loss = loss_fn(
                        model(feats[idx]), noisy[idx], clean[idx], projected[idx], args.phase
                    )
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
            v = validate()
            print(
                f"train: round {r + 1}/{args.rounds} {time.monotonic() - start:.0f}s "
                f"lr {lr:.1e} train {loss.item():.4f} val {' '.join(f'{x:.4f}' for x in v)}",
                flush=True,
            )
            if sum(v) < best:
                best = sum(v)
                export(model, args.out)
            if args.snapshots and (r + 1) % args.snapshots == 0:
                export(model, args.out.with_suffix(f".r{r + 1}.npz"))
            if args.minutes and time.monotonic() - start > 60 * args.minutes:
                print(f"train: stopping after round {r + 1}: {args.minutes} minutes", flush=True)
                break
    if not args.out.exists():
        raise SystemExit("train: nothing beat the starting weights; nothing written")
    gap = check_and_write_vectors(args.out, args.hidden)
    print(f"train: numpy inference vs torch on the exported weights: max gap {gap:.2e}")
    if gap > 1e-4:
        raise SystemExit("train: the numpy inference does not match torch; not shipping")
    digest = hashlib.sha1(args.out.read_bytes()).hexdigest()[:12]
    print(
        f"train: wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, sha1 {digest}), "
        f"best val {best:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
