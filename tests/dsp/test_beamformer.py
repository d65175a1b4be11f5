"""The beamformer on its own: it must use the array (spatial gain) and keep the talker."""

from __future__ import annotations

import numpy as np

from edge_agent.dsp.beamformer import WienerBeamformer

BINS, MICS, HOP_S = 257, 4, 0.016


def plane_wave(delays_samples: np.ndarray) -> np.ndarray:
    freqs = np.arange(BINS) / (2 * (BINS - 1))  # cycles per sample
    return np.exp(-2j * np.pi * freqs[:, None] * delays_samples[None, :])  # (K, M)


def power(values: list[np.ndarray]) -> float:
    return float(np.mean(np.abs(np.array(values)) ** 2))


def run(frames: int, talker_on, rng: np.random.Generator, bf: WienerBeamformer | None = None):
    """A directional talker and noise; `bf` (default: the spatial-SPP beamformer) is given
    the talker's presence until its own SPP is ready, or always if the caller's decides."""
    talker_rtf = plane_wave(np.array([0.0, 1.5, 3.0, 1.5]))
    noise_rtf = plane_wave(np.array([0.0, -2.0, -1.0, 2.5]))
    caller = bf is not None
    bf = bf or WienerBeamformer(BINS, MICS, 0, hop_s=HOP_S)
    alive = np.ones(MICS, bool)
    out_talker, out_noise, ref_talker, ref_noise = [], [], [], []
    for t in range(frames):
        s = (rng.standard_normal(BINS) + 1j * rng.standard_normal(BINS)) * talker_on(t)
        v = rng.standard_normal(BINS) + 1j * rng.standard_normal(BINS)
        sensor = 0.05 * (rng.standard_normal((BINS, MICS)) + 1j * rng.standard_normal((BINS, MICS)))
        x_talker = s[:, None] * talker_rtf
        x_noise = v[:, None] * noise_rtf + sensor
        spp = np.full(BINS, 0.99 if talker_on(t) else 0.01)
        if t > frames // 2:  # score the second half, after adaptation
            out_talker.append(bf.apply(x_talker[None])[0])
            out_noise.append(bf.apply(x_noise[None])[0])
            ref_talker.append(x_talker[:, 0])
            ref_noise.append(x_noise[:, 0])
        spp_arg = None if bf.spatial_presence_ready and not caller else spp[None]
        bf.observe((x_talker + x_noise)[None], spp_arg, lambda: alive)
    return power(out_talker), power(out_noise), power(ref_talker), power(ref_noise)


def test_directional_noise_is_cancelled_and_the_talker_kept() -> None:
    rng = np.random.default_rng(0)
    out_t, out_n, ref_t, ref_n = run(
        1200, lambda t: 1.0 if (t // 40) % 2 else 0.0, rng
    )  # 0.64 s turns
    snr_gain_db = 10 * np.log10((out_t / out_n) / (ref_t / ref_n))
    assert snr_gain_db > 6.0, f"spatial SNR gain only {snr_gain_db:.1f} dB"
    assert 0.5 < out_t / ref_t < 2.0, "the talker's level changed by more than 3 dB"


def test_nothing_learned_passes_the_reference_mic() -> None:
    bf = WienerBeamformer(BINS, MICS, 2, hop_s=HOP_S)
    x = np.random.default_rng(1).standard_normal((3, BINS, MICS)) + 0j
    assert np.allclose(bf.apply(x), x[:, :, 2])


def test_at_depth_zero_the_weights_are_the_live_reference_mic_without_a_solve() -> None:
    """The mask-driven beamformer skips its solve at depth 0: the weights are the reference
    mic's, or the first live mic's when it is dead, as a solve trusted not at all gives."""
    rng = np.random.default_rng(2)

    def weights(depth: float, alive: np.ndarray) -> np.ndarray:
        bf = WienerBeamformer(97, MICS, 0, hop_s=HOP_S, caller_presence=True, mask_mwf=True)
        bf.depth = depth
        for _ in range(3 * bf.update_frames):
            x = rng.standard_normal((1, 97, MICS)) + 1j * rng.standard_normal((1, 97, MICS))
            bf.observe(x, rng.uniform(0, 1, (1, 97)), lambda: alive)
        return bf.weights

    every = np.ones(MICS, bool)
    assert np.array_equal(weights(0.0, every), np.eye(MICS)[[0] * 97])
    dead_ref = np.array([False, True, True, True])
    assert np.array_equal(weights(0.0, dead_ref), np.eye(MICS)[[1] * 97])
    # a solve trusted almost not at all lands on the same weights
    assert np.allclose(weights(1e-12, dead_ref), np.eye(MICS)[[1] * 97], atol=1e-9)
    assert not np.allclose(weights(1.0, every), np.eye(MICS)[[0] * 97], atol=1e-3)  # it solves


def _mask_driven(frame_power: float) -> WienerBeamformer:
    """The beamformer as the pipeline drives it: the mask-based MWF on the caller's mask."""
    return WienerBeamformer(
        BINS, MICS, 0, hop_s=HOP_S, caller_presence=True, mask_mwf=True,
        noise_frame_power=frame_power,
    )  # fmt: skip


def _talk_without_pauses(frame_power: float, frames: int = 1200) -> float:
    """Talk that never pauses, through the mask-driven beamformer: in every frame a random
    half of the bins hold a voice's harmonics (direct path and a reflection, the mask at
    0.95) and the rest only the talker's reflection (its tail, the mask at 0.05), over a
    directional noise 20 dB under it. Returns the output's error against the talker's image
    at the reference mic, over the raw reference mic's (its noise), dB."""
    rng = np.random.default_rng(3)
    direct = plane_wave(np.array([0.0, 1.5, 3.0, 1.5]))
    reflection = plane_wave(np.array([0.0, -1.0, 2.0, -2.5]))
    noise = plane_wave(np.array([0.0, -2.0, -1.0, 2.5]))
    bf = _mask_driven(frame_power)
    alive = np.ones(MICS, bool)

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    err_out, err_raw = [], []
    for t in range(frames):
        harmonic = rng.random(BINS) < 0.5
        x_talker = (
            np.where(harmonic, 1.0, 0.0)[:, None] * draw(BINS)[:, None] * direct
            + 0.5 * draw(BINS)[:, None] * reflection
        )
        x_noise = 0.1 * draw(BINS)[:, None] * noise + 0.02 * draw(BINS, MICS)
        x = x_talker + x_noise
        if t > frames // 2:  # after adaptation
            err_out.append(power([bf.apply(x[None])[0] - x_talker[:, 0]]))
            err_raw.append(power([x_noise[:, 0]]))
        bf.observe(x[None], np.where(harmonic, 0.95, 0.05)[None], lambda: alive)
    return float(10 * np.log10(np.mean(err_out) / np.mean(err_raw)))


def test_talk_without_pauses_does_not_teach_the_noise_covariance_the_talkers_tail() -> None:
    """Bin by bin, the mask reads the talker's tail between its harmonics as noise; taught
    it, the MWF cancels the talker's own reverberation (the scribe's target keeps it). The
    frame's share keeps it out: the output stays within 1 dB of the raw mic's error."""
    from edge_agent.dsp.beamformer import NOISE_FRAME_POWER

    assert _talk_without_pauses(NOISE_FRAME_POWER) < 1.0
    assert _talk_without_pauses(0.0) > 3.0  # bin by bin alone: the talker's tail cancelled


def _turns_through_the_mask_driven_beamformer(frame_power: float) -> tuple[float, float]:
    """0.64 s turns, the mask reading the pause frames as noise throughout: (the spatial SNR
    gain, dB; the talker's output level over the reference mic's)."""
    out_t, out_n, ref_t, ref_n = run(
        1200, lambda t: 1.0 if (t // 40) % 2 else 0.0, np.random.default_rng(4),
        _mask_driven(frame_power),
    )  # fmt: skip
    return float(10 * np.log10((out_t / out_n) / (ref_t / ref_n))), out_t / ref_t


def test_pauses_still_teach_the_mask_driven_beamformer_the_noise() -> None:
    """Turns with pauses: the frame's share leaves the directional noise as cancelled as
    bin by bin alone does, and the talker kept."""
    from edge_agent.dsp.beamformer import NOISE_FRAME_POWER

    gain_db, talker = _turns_through_the_mask_driven_beamformer(NOISE_FRAME_POWER)
    bin_by_bin_db, _ = _turns_through_the_mask_driven_beamformer(0.0)
    assert gain_db > 5.0, f"spatial SNR gain only {gain_db:.1f} dB"
    assert gain_db > bin_by_bin_db - 0.5, f"{gain_db:.1f} dB against {bin_by_bin_db:.1f}"
    assert 0.5 < talker < 2.0, "the talker's level changed by more than 3 dB"


def test_a_frame_far_louder_than_its_group_is_not_learned_as_the_noise() -> None:
    """A codec's pop (the same at every mic, 40 dB over the room) in one frame the mask
    reads as noise, amid continuous talk whose few noise frames are all the noise evidence
    there is (the case that lost a 10 dB bench room 5.7 dB for ten seconds): with the
    outlier rule the learned noise keeps the room's level and direction (measured: 2.02
    where the room's is 2.02, and a quarter of it along the pop's direction, as any noise
    from four mics has); without it the pop outweighs ten seconds of the room (80, and 0.97
    along the pop)."""
    rng = np.random.default_rng(8)
    talker = plane_wave(np.array([0.0, 1.5, 3.0, 1.5]))
    noise_dir = plane_wave(np.array([0.0, -2.0, -1.0, 2.5]))
    pop = np.ones((BINS, MICS))

    def learned(outlier_db: float | None) -> tuple[float, float]:
        bf = WienerBeamformer(
            BINS, MICS, 0, hop_s=HOP_S, caller_presence=True, mask_mwf=True,
            outlier_db=outlier_db,
        )  # fmt: skip
        for t in range(625):  # 10 s; a noise-only frame one in eight
            v = rng.standard_normal(BINS) + 1j * rng.standard_normal(BINS)
            x = v[:, None] * noise_dir + 0.1 * (
                rng.standard_normal((BINS, MICS)) + 1j * rng.standard_normal((BINS, MICS))
            )
            talk = t % 8 != 0
            if talk:
                s = 10 * (rng.standard_normal(BINS) + 1j * rng.standard_normal(BINS))
                x = x + s[:, None] * talker
            spp = np.full(BINS, 0.97 if talk else 0.02)
            if t == 5:
                x, spp = x + 100.0 * pop, np.full(BINS, 0.02)
            bf.observe(x[None], spp[None], lambda: np.ones(MICS, bool))
        noise = bf._noise_cov / np.maximum(bf._weights_acc[0], 1e-3)[:, None, None]
        level = float(np.mean(noise[:, 0, 0].real))  # the room's noise there: 2.02
        # how far the learned noise points at the pop (all mics alike) rather than the room
        along = np.einsum("m,kmn,n->k", np.ones(MICS), noise, np.ones(MICS)).real
        share = float(np.mean(along / (MICS * np.einsum("kmm->k", noise).real)))
        return level, share

    level, share = learned(10.0)
    assert 1.6 < level < 2.6, level
    assert share < 0.5, share
    level_without, share_without = learned(None)
    assert level_without > 10 * level, (level_without, level)
    assert share_without > 0.9, share_without
