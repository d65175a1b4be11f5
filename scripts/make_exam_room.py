#!/usr/bin/env python3
"""Make the demo's exam-room recording: a physician and a patient (espeak-ng voices),
reverberant, captured by a 4-mic array (ReSpeaker 4-Mic geometry), HVAC and fan noise.

Deterministic (fixed seed). `python scripts/make_exam_room.py OUT.wav [--seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
C = 343.0

DIALOGUE = [
    ("doc", "Good morning. What brings you in today?"),
    ("pat", "I have had a cough for about two weeks, and it is worse at night."),
    ("doc", "Any fever, chills, or shortness of breath?"),
    ("pat", "A low fever on the weekend. No trouble breathing."),
    ("doc", "Are you taking anything for it right now?"),
    ("pat", "Just honey and lemon tea, and ibuprofen twice a day."),
    ("doc", "Okay. Let me listen to your lungs. Take a deep breath for me."),
    ("pat", "Sure."),
    ("doc", "Your lungs sound clear. I think this is a post viral cough."),
    ("doc", "I will prescribe a benzonatate capsule, one hundred milligrams, three times a day."),
    ("pat", "How long should I take it?"),
    ("doc", "Up to seven days. Come back if the fever returns or it lasts beyond three weeks."),
]
VOICES = {"doc": ("en-us+m3", 150, 45), "pat": ("en-us+f2", 165, 60)}


def tts(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found: run `make setup`")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out),
                        text], check=True, capture_output=True)
        with wave.open(str(out)) as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768
    return signal.resample_poly(x, RATE, rate)


def room_response(rng: np.random.Generator, rt60_s: float, length_s: float) -> np.ndarray:
    """Direct path plus early reflections plus an exponentially decaying diffuse tail."""
    n = int(length_s * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.12
    tail[: int(0.004 * RATE)] = 0
    h = tail
    h[0] = 1.0
    for _ in range(6):
        h[rng.integers(int(0.002 * RATE), int(0.02 * RATE))] += rng.uniform(-0.5, 0.5)
    return h


def make(seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    geo = json.loads((ROOT / "hardware/arrays/respeaker-4mic-pi.json").read_text())
    mics = np.array(geo["mics_m"], dtype=float)[:4]
    n = int(seconds * RATE)
    out = np.zeros((n, 4))
    talkers = {"doc": np.array([1.2, 0.8, 0.0]), "pat": np.array([1.6, -0.9, -0.2])}
    pos = 0
    lines = DIALOGUE * 10
    responses = {k: [room_response(rng, 0.45, 0.35) for _ in range(4)] for k in talkers}
    for who, text in lines:
        if pos >= n:
            break
        x = tts(text, *VOICES[who]) * (0.5 if who == "doc" else 0.4)
        src = talkers[who]
        for m in range(4):
            dist = np.linalg.norm(src - mics[m])
            delay = dist / C * RATE
            y = signal.fftconvolve(x, responses[who][m])[: len(x) + RATE // 4]
            frac = np.interp(np.arange(len(y)) - delay, np.arange(len(y)), y, left=0, right=0)
            seg = frac / max(dist, 0.3)
            end = min(n, pos + len(seg))
            out[pos:end, m] += seg[: end - pos]
        pos += len(x) + int(rng.uniform(0.25, 0.6) * RATE)
    # HVAC: brown-ish rumble from the ceiling, a fan hum with harmonics, diffuse hiss
    rumble = signal.lfilter([1], [1, -0.995], rng.standard_normal((n, 4)), axis=0)
    rumble *= 0.004
    t = np.arange(n)[:, None] / RATE
    hum = 0.006 * (np.sin(2 * np.pi * 120 * t + rng.uniform(0, 6, 4))
                   + 0.5 * np.sin(2 * np.pi * 240 * t + rng.uniform(0, 6, 4)))
    hiss = 0.003 * rng.standard_normal((n, 4))
    out += rumble + hum + hiss
    peak = np.max(np.abs(out))
    return np.clip(out / peak * 0.7 * 32767, -32768, 32767).astype("<i2")


def write_wav(path: Path, x: np.ndarray) -> None:
    """Whole or not at all: several demos (parallel tests) may make the cached file at
    once, and a reader must never open half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x.tobytes())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    write_wav(Path(args.out), make(args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
