"""Voices no corpus has keep a clean room.

The mask was trained on a few dozen recorded people and espeak. A talker outside them (a
child, a high or a deep voice, a synthetic one) must still read as a talker: the noise
events act on the mask's word alone, at any depth, so a voice the mask takes for a noise
is cut out of the very rooms the front end should leave alone (the weights before the
fine-tune on voices made from their parts lost 1.2-17 dB here, docs/dsp.md). The voices
come from `parametric_voice`, each held at one pitch, with formants; their seeds are not
the training's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FS, array_scene
from test_events import si_sdr_db

from edge_agent.dsp.cli import process_array

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

AFTER = slice(2 * FS, None)  # once the first pause has shown the room's floor


def voice_scene(base_hz: float, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """conftest.array_scene, 8 s, its talker one held voice's utterances with pauses."""
    import train_dsp_mask as train

    rng = np.random.default_rng([5, int(base_hz), seed])
    talk = np.zeros(0)
    while talk.size < 8 * FS:
        utterance = train.parametric_voice(rng, base_hz=base_hz, formants=True)
        talk = np.concatenate([talk, utterance, np.zeros(int(rng.uniform(0.2, 0.8) * FS))])
    return array_scene(seconds=8.0, snr_db=snr_db, seed=seed, talk=talk[: 8 * FS])


@pytest.mark.parametrize("base_hz", [100.0, 170.0, 220.0, 260.0, 310.0, 370.0])
def test_a_voice_at_any_pitch_keeps_a_clean_room(base_hz: float) -> None:
    """A deep man's voice to a child's, at 30 dB: the output is at least as good as the raw
    mic (within 0.5 dB)."""
    mix, clean = voice_scene(base_hz, snr_db=30.0, seed=0)
    out = process_array(mix, "respeaker-4mic-pi").astype(np.float64) / 32768
    raw = mix[:, 0].astype(np.float64) / 32768
    assert si_sdr_db(out[AFTER], clean[AFTER]) >= si_sdr_db(raw[AFTER], clean[AFTER]) - 0.5
