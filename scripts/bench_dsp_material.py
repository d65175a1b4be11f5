"""Speech and noise material for `scripts/bench dsp`, fetched from package registries and
cached outside git (`$SCRIBELINK_BENCH_CACHE`, default `~/.cache/scribelink/bench-dsp`).

Recorded human speech comes from Debian packages (downloaded with `apt-get download`,
never installed): the Asterisk core prompts in wideband G.722 (five professional voices:
US English, Mexican Spanish, Canadian French, Italian, Russian), Codec2's 16 kHz reference
recording, and alsa-utils' channel-test voices. Synthetic speech is espeak-ng. The TUNE and
TEST sets get disjoint material: different speakers (or, for the one male voice, different
prompts), different espeak-ng voices and different sentences.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

FS = 16000


def cache_dir() -> Path:
    root = os.environ.get("SCRIBELINK_BENCH_CACHE")
    base = (
        Path(root)
        if root
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "scribelink"
        / "bench-dsp"
    )
    base.mkdir(parents=True, exist_ok=True)
    return base


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    if x.ndim > 1:
        x = x.mean(axis=1)
    if rate == FS:
        return x.astype(np.float64)
    g = gcd(rate, FS)
    return resample_poly(x.astype(np.float64), FS // g, rate // g)


def trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing silence, DC and sub-audio drift (zero-phase high-pass at 50 Hz)."""
    from scipy.signal import butter, sosfiltfilt

    if x.size < 64:
        return x
    x = sosfiltfilt(butter(2, 50, "highpass", fs=FS, output="sos"), x)
    env = np.abs(x) > 0.02 * np.abs(x).max()
    idx = np.flatnonzero(env)
    return x[idx[0] : idx[-1] + 1] if idx.size else x


def _frame_powers(x: np.ndarray) -> np.ndarray:
    """The mean power of each whole 20 ms frame of `x`."""
    frames = x[: x.size // 320 * 320].reshape(-1, 320)
    return (frames**2).mean(axis=1)


def active_level(x: np.ndarray) -> float:
    """The active speech level: RMS over the 20 ms frames within 30 dB of the loudest."""
    power = _frame_powers(x)
    active = power > power.max() * 1e-3
    return np.sqrt(power[active].mean()) if active.any() else 1.0


def active_normalise(x: np.ndarray) -> np.ndarray:
    """Scale to unit active speech level (active_level)."""
    return x / (active_level(x) + 1e-12)


#: a recording whose 20 ms frame levels spread less than this (dB, 10th to 90th percentile)
#: is steady sound, not speech: talk rises and falls with its syllables (the recorded voices
#: spread 11.5-90 dB; Asterisk's silence prompts, codec noise, 0.8-0.9 dB)
SPEECH_LEVEL_SPREAD_DB = 6.0


def level_spread_db(x: np.ndarray) -> float:
    """The spread of `x`'s 20 ms frame levels, dB: 90th percentile minus 10th."""
    db = 10 * np.log10(_frame_powers(x) + 1e-20)
    low, high = np.percentile(db, [10, 90])
    return float(high - low)


def is_speech(x: np.ndarray) -> bool:
    """False for a recording that cannot be a talker's turn: too steady (the level of
    SPEECH_LEVEL_SPREAD_DB) or shorter than one 20 ms frame."""
    return x.size >= 320 and level_spread_db(x) >= SPEECH_LEVEL_SPREAD_DB


# -- recorded speech ---------------------------------------------------------------------
ASTERISK_VOICES = {
    # package -> directory of its prompts; voice, sex
    "asterisk-core-sounds-en-g722": ("en_US_f_Allison", "f"),
    "asterisk-core-sounds-es-g722": ("es_MX_f_Allison", "f"),
    "asterisk-core-sounds-fr-g722": ("fr_CA_f_June", "f"),
    "asterisk-core-sounds-it-g722": ("it_IT_m_Carlo", "m"),
    "asterisk-core-sounds-ru-g722": ("ru_RU_f_IvrvoiceRU", "f"),
}
# which set each recorded voice belongs to; Carlo (the only male voice) is split by prompt
TUNE_VOICES = ("en_US_f_Allison", "es_MX_f_Allison", "ru_RU_f_IvrvoiceRU", "codec2", "alsa")
TEST_VOICES = ("fr_CA_f_June",)
SPLIT_BY_PROMPT = ("it_IT_m_Carlo",)


def _deb(package: str) -> Path:
    """The package's .deb in the cache (apt-get download: no install, no root needed)."""
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    done = subprocess.run(
        ["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False
    )
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise RuntimeError(
            f"could not download Debian package {package} ({done.stderr.strip()[-200:]}); "
            "run `apt-get update` and retry"
        )
    return found[-1]


def _deb_members(package: str, suffix: str, under: str) -> dict[str, bytes]:
    """Files in the package under `under` ending in `suffix` (via dpkg-deb's tar stream)."""
    tar_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(_deb(package))], capture_output=True, check=True
    ).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.endswith(suffix) and under in m.name:
                out[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return out


def _asterisk_voice(package: str) -> dict[str, np.ndarray]:
    import G722

    voice = ASTERISK_VOICES[package][0]
    out = {}
    members = _deb_members(package, ".g722", f"sounds/{voice}/")
    for name, data in sorted(members.items()):
        if "/digits/" in name or "/letters/" in name or "/phonetic/" in name:
            continue  # single words: too short to be a conversational turn
        pcm = np.asarray(G722.G722(FS, 64000).decode(data), np.float64) / 32768
        x = trim(pcm)
        if 1.5 * FS <= x.size <= 12 * FS:
            out[Path(name).stem] = x
    return out


def _codec2() -> dict[str, np.ndarray]:
    import soundfile as sf

    members = _deb_members("codec2-examples", "speech_orig_16k.wav", "codec2/raw/")
    out = {}
    for data in members.values():
        x, rate = sf.read(io.BytesIO(data))
        x = trim(to_16k(x, rate))
        # one 10.8 s recording of several sentences: cut at its pauses into turns
        for k, piece in enumerate(_split_at_pauses(x)):
            out[f"codec2-{k}"] = piece
    return out


def _split_at_pauses(x: np.ndarray, min_s: float = 1.5) -> list[np.ndarray]:
    frames = x[: x.size // 320 * 320].reshape(-1, 320)
    power = (frames**2).mean(axis=1)
    quiet = power < power.max() * 1e-3
    pieces, start, run = [], 0, 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run == 10 and (i - start) * 320 >= min_s * FS:  # 200 ms pause
            pieces.append(trim(x[start * 320 : (i - 5) * 320]))
            start = i - 5
    pieces.append(trim(x[start * 320 :]))
    return [p for p in pieces if p.size >= FS]


def _alsa() -> dict[str, np.ndarray]:
    import soundfile as sf

    out = {}
    for path in sorted(Path("/usr/share/sounds/alsa").glob("*.wav")):
        if path.stem != "Noise":
            data, rate = sf.read(path)
            out[f"alsa-{path.stem}"] = trim(to_16k(data, rate))
    return out


@cache
def recorded_speakers(split: str) -> dict[str, list[np.ndarray]]:
    """{speaker: [utterance, ...]} of real recordings for `split` ("tune" or "test")."""
    # (v2: without Asterisk's silence prompts, which v1 had normalised to speech level)
    path = cache_dir() / f"recorded-{split}-v2.npz"
    if path.exists():
        z = np.load(path)
        out: dict[str, list[np.ndarray]] = {}
        for key in sorted(z.files, key=lambda k: (k.rsplit("|", 1)[0], int(k.rsplit("|", 1)[1]))):
            out.setdefault(key.rsplit("|", 1)[0], []).append(z[key])
        return out
    pools: dict[str, dict[str, np.ndarray]] = {}
    for package, (voice, _) in ASTERISK_VOICES.items():
        if voice in TUNE_VOICES + TEST_VOICES + SPLIT_BY_PROMPT:
            pools[voice] = _asterisk_voice(package)
    pools["codec2"] = _codec2()
    pools["alsa"] = _alsa()
    out = {}
    for voice, utterances in pools.items():
        if voice in SPLIT_BY_PROMPT:
            keep = {
                k: v
                for k, v in utterances.items()
                if (int(hashlib.sha1(k.encode()).hexdigest(), 16) % 2 == 0) == (split == "tune")
            }
        elif voice in (TUNE_VOICES if split == "tune" else TEST_VOICES):
            keep = utterances
        else:
            continue
        # only talk: a steady recording is scored as a talker but is noise (is_speech)
        keep = {k: v for k, v in keep.items() if is_speech(v)}
        # at most 80 prompts per voice, chosen by name hash (stable, no preference)
        names = sorted(keep, key=lambda k: hashlib.sha1(k.encode()).hexdigest())[:80]
        out[voice] = [active_normalise(keep[k]).astype(np.float32) for k in sorted(names)]
    np.savez(path, **{f"{v}|{i}": u for v, us in out.items() for i, u in enumerate(us)})
    # in the order the cached file gives (by speaker): the process that built the file
    # used to get the packages' order, so its scenes' hallway drew other utterances
    return {v: out[v] for v in sorted(out)}


# -- synthetic speech --------------------------------------------------------------------
SENTENCES = {
    "tune": [
        "So how long have you had this chest pain?",
        "Any shortness of breath when you climb the stairs?",
        "I'm going to listen to your lungs now. Take a deep breath for me.",
        "Let's increase the lisinopril to twenty milligrams once a day.",
        "Do you have any allergies to medications?",
        "Is the pain sharp, or more like pressure?",
        "It started about three days ago, mostly in the morning.",
        "Only when I walk up the hill to my house.",
        "I take metformin and a baby aspirin every day.",
        "Penicillin gives me a rash, that's all.",
        "It feels like pressure, right here in the middle.",
        "We'll get an ECG and some blood work before you leave.",
        "She has been more tired than usual since the new medicine.",
        "Does the swelling in your ankles go down overnight?",
    ],
    "test": [
        "When did you first notice the rash on your arm?",
        "Please lie back on the table and relax your stomach.",
        "Your blood pressure is a little high today, one fifty over ninety.",
        "I would like you to stop the ibuprofen for two weeks.",
        "Have you had any fever, chills or night sweats?",
        "The headache gets worse when I bend over.",
        "My father had a heart attack when he was sixty two.",
        "I sleep maybe four or five hours a night.",
        "He keeps forgetting to take the evening dose.",
        "We can refer you to physical therapy for the knee.",
        "Any numbness or tingling in your fingers?",
        "It hurts most after I eat something fatty.",
        "Breathe out slowly, and hold it there.",
        "The cough brings up yellow phlegm in the mornings.",
    ],
}
ESPEAK_VOICES = {
    "tune": ["en-us", "en-us+f3", "en+m3", "en-us+f2", "en+m7", "en-gb+Annie", "en-us+Andy"],
    "test": [
        "en-gb-x-rp",
        "en-gb-scotland+f4",
        "en-029+m2",
        "en-gb-x-rp+f5",
        "en-us+Michael",
        "en-gb+Linda",
        "en-gb-x-gbclan+m5",
    ],
}
HALLWAY_LINES = [
    "Room four is ready for the next patient.",
    "Can someone bring a wheelchair to the front desk?",
    "The lab results came back for Mister Alvarez.",
    "I'll be with you in just a minute.",
    "Doctor Chen, line two please.",
    "Has anyone seen the portable ultrasound?",
    "Your ride is waiting outside.",
    "Please sign in at the window.",
]


def espeak(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    import soundfile as sf

    key = hashlib.sha1(f"{voice}|{speed}|{pitch}|{text}".encode()).hexdigest()[:16]
    path = cache_dir() / "espeak" / f"{key}.wav"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
            capture_output=True,
            check=True,
        ).stdout
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(wav)
        os.replace(tmp.name, path)
    data, rate = sf.read(path)
    return to_16k(data, rate)


def synthetic_utterance(split: str, rng: np.random.Generator, voice_index: int) -> np.ndarray:
    voices = ESPEAK_VOICES[split]
    text = SENTENCES[split][int(rng.integers(len(SENTENCES[split])))]
    voice = voices[voice_index % len(voices)]
    x = espeak(text, voice, speed=int(rng.integers(140, 185)), pitch=int(rng.integers(35, 65)))
    return active_normalise(trim(x))


def check_material() -> None:
    """Fail early, with what to do, if a tool the material needs is missing."""
    for tool in ("espeak-ng", "apt-get", "dpkg-deb"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            sys.exit(f"bench dsp: {tool} is missing; run scripts/setup --bench on Debian")
