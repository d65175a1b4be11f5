"""The post-filter where the trained mask is sure a bin is noise (edge_agent/dsp/pipeline.py):
the Wiener gain overrules it only by half there, and noise events (EVENTS) are taken out
at any depth. Paper, keys, a dropped instrument: short bursts that stand as clear of the
tracked noise floor as speech does, in a room whose floor (the quiet between them) reads
as clean."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import FS, speechlike

from edge_agent.dsp.arrays import load_array
from edge_agent.dsp.pipeline import (
    EVENTS,
    EVENTS_FRICATIVE_DB,
    EVENTS_LOOSE,
    EVENTS_RECUR,
    EVENTS_RECUR_BROAD,
    EVENTS_RECUR_NEW,
    EVENTS_RECUR_S,
    OVERRULE_LOOSE,
    READS_NOISY_DB,
    ArrayPipeline,
)


def paper_room(
    seed: int, seconds: float = 8.0, brighter_db: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) int16 and the talker at mic 0: the harmonic talker of conftest and bursts of
    broadband noise (20-60 ms, about six a second, each from its own direction) over a
    quiet bed, at 0 dB SNR overall; white, or `brighter_db` more above 4 kHz."""
    rng = np.random.default_rng(seed)
    s = speechlike(seconds, rng)
    n = s.size
    talker = np.stack([np.roll(s, d) for d in (0, 2, 4, 2)], axis=1)
    noise = np.zeros((n, 4))
    t = 0
    while True:
        t += int(rng.exponential(0.16) * FS) + 1
        length = int(rng.uniform(0.02, 0.06) * FS)
        if t + length >= n:
            break
        burst = rng.standard_normal((length, 4))
        if brighter_db:
            spectrum = np.fft.rfft(burst, axis=0)
            spectrum[np.fft.rfftfreq(length, 1 / FS) >= 4000] *= 10 ** (brighter_db / 20)
            burst = np.fft.irfft(spectrum, length, axis=0)
        burst *= np.hanning(length)[:, None]
        burst *= rng.uniform(0.3, 1.0)
        delays = (0, 3, 5, 1)
        noise[t : t + length] += np.stack([np.roll(burst[:, 0], d) for d in delays], axis=1)
        noise[t : t + length] += 0.2 * burst
    noise += 0.003 * rng.standard_normal((n, 4))
    gain = np.sqrt(np.mean(talker[:, 0] ** 2) / np.mean(noise[:, 0] ** 2))
    scale = 0.05 / np.sqrt(np.mean(talker[:, 0] ** 2))
    mix = (talker + gain * noise) * scale * 32768
    return np.round(mix).astype(np.int16), talker[:, 0] * scale


def run(mix: np.ndarray, *, block: int | None = None, **kw) -> tuple[np.ndarray, ArrayPipeline]:
    """The front end (keywords: ArrayPipeline's) over `mix` in one call, or in calls of
    `block` samples (640: the unit's 40 ms), as `process` aligns it."""
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"), **kw)
    latency = stage.latency_samples
    padded = np.concatenate([mix, np.zeros((latency, 4), np.int16)])
    step = block or padded.shape[0] or 1
    pieces = [stage.process(padded[j : j + step]) for j in range(0, padded.shape[0], step)]
    out = np.concatenate([*pieces, stage.flush()])[latency:]
    return out.astype(np.float64) / 32768, stage


def si_sdr_db(y: np.ndarray, clean: np.ndarray) -> float:
    a = (y @ clean) / (clean @ clean)
    residual = y - a * clean
    return float(10 * np.log10(((a * clean) @ (a * clean)) / (residual @ residual)))


def test_events_are_taken_out_in_a_room_whose_floor_reads_clean() -> None:
    """The floor is the quiet between the bursts, so the room's depth stays 0 and, without
    events, the output is the raw mic's quality. With them the bursts go (measured: +2.0
    to +2.9 dB over no events on four seeds, +3.0 to +4.3 with events in frames of any shape
    too: white bursts are at EVENTS_FRICATIVE_DB's edge; +0.8 to +1.0 with events below 4
    kHz only).
    The Wiener gains in and from the pauses are held off (test_pauses.py,
    test_pause_noise.py): here they take the quiet bed out between syllables and cost this
    harmonic talker's decays 0.1-0.3 dB."""
    quiet = {"pause_wiener_floor_db": None, "pause_noise_floor_db": None}
    for seed in (0, 1):
        mix, clean = paper_room(seed)
        with_events, stage = run(mix, **quiet)
        without, _ = run(mix, events=None, **quiet)
        raw = si_sdr_db(mix[:, 0] / 32768, clean)
        assert stage.depth == 0.0
        assert abs(si_sdr_db(without, clean) - raw) < 0.2
        assert si_sdr_db(with_events, clean) > si_sdr_db(without, clean) + 1.5
        below_4k, _ = run(mix, events_broadband=None, **quiet)
        assert si_sdr_db(with_events, clean) > si_sdr_db(below_4k, clean) + 1.0


def test_the_wiener_gain_overrules_a_mask_sure_of_noise_only_by_half() -> None:
    """At full depth (events off, so only the overrule differs), bursts the mask is sure are
    noise but that stand clear of the floor: the whole Wiener gain would let them through
    (measured: +1.4 dB over the raw mic), half of it takes most of them out (+6.6 dB)."""
    mix, clean = paper_room(0)
    half, _ = run(mix, adaptive_depth=False, events=None)
    whole, _ = run(mix, adaptive_depth=False, events=None, overrule_below=None)
    assert si_sdr_db(half, clean) > si_sdr_db(whole, clean) + 3.0


def test_events_wait_for_the_mask_and_go_above_4_khz_only_when_broadband() -> None:
    """The mask is unsure of everything in its first seconds (a talker's first words read
    as sure noise): no event before 2 s, so the output is the same as without events until
    then. Above 4 kHz a talker's fricatives read as paper: there a frame's events count
    only as far as they are broadband (a quarter of the bins from 1 to 4 kHz are events)."""
    mix, _ = paper_room(2)
    with_events, stage = run(mix)
    without, _ = run(mix, events=None)
    frame = 512
    first = 2 * FS - frame  # the last output samples made of frames before 2 s only
    assert np.array_equal(with_events[:first], without[:first])
    assert not np.array_equal(with_events[2 * FS :], without[2 * FS :])

    # the gains themselves: sure noise that stands clear of the floor -> the mask at full
    # depth (floored at -24 dB); unsure, or at the floor -> 1; a bin's event weight is the
    # product of the two ramps
    (sure, unsure), (clear_from, clear) = EVENTS
    k1, k4 = 32, 128  # 1 and 4 kHz at 31.25 Hz a bin
    assert (stage._events_from_bin, stage._events_bins) == (k1, k4)
    full = 10 ** (-24 / 20)
    talker = np.full((5, 257), 0.5)
    wiener = np.full((5, 257), clear)
    talker[0], talker[1], talker[2] = sure / 2, sure / 2, (sure + unsure) / 2
    wiener[1] = clear_from / 2
    # frame 3: a fricative, sure noise above 4 kHz only; frame 4: an event in a tenth of
    # 1-4 kHz and above 4 kHz
    talker[3, k4:] = sure / 2
    talker[4, k4:] = sure / 2
    talker[4, k1 : k1 + (k4 - k1) // 10] = sure / 2
    gains = stage._event_gains(talker, wiener, first_frame=10_000)
    assert gains is not None and gains.shape == (5, 257)
    assert np.allclose(gains[0], full)  # broadband: every bin
    assert np.allclose(gains[1], 1.0)
    assert np.allclose(gains[2], 1.0 - 0.5 * (1.0 - full))
    assert np.allclose(gains[3], 1.0)  # no event below 4 kHz: none above it
    tenth = (k4 - k1) // 10 / (k4 - k1)
    assert np.allclose(gains[4, k4:], 1.0 - tenth / 0.25 * (1.0 - full))
    assert np.allclose(gains[4, k1 : k1 + 9], full)
    # with events_broadband None, nothing above 4 kHz at all
    narrow = ArrayPipeline(load_array("respeaker-4mic-pi"), events_broadband=None)
    below = narrow._event_gains(talker, wiener, first_frame=10_000)
    assert below is not None and below.shape == (5, k4)
    # before the mask has run 2 s (125 frames), nothing
    assert stage._event_gains(talker, wiener, first_frame=0) is None
    early = stage._event_gains(talker, wiener, first_frame=124)
    assert early is not None and np.allclose(early[0], 1.0) and np.allclose(early[1:], gains[1:])


def test_event_and_overrule_settings_are_checked() -> None:
    geometry = load_array("respeaker-4mic-pi")
    for bad in (
        {"events": ((0.02, 0.01), (0.5, 0.9))},
        {"events": ((0.01, 0.02), (0.9, 0.5))},
        {"overrule_below": (0.2, 0.05, 0.5)},
        {"overrule_below": (0.05, 0.2, 1.5)},
        {"events_broadband": 0.0},
        {"events_loose": (0.005, 0.1)},
        {"events_loose": (0.1, 0.05)},
        {"reads_noisy_db": (12.0, 24.0)},
        {"overrule_loose": (0.3, 0.1, 0.25)},
        {"overrule_loose": (0.1, 0.3, 1.5)},
        {"events_fricative_db": (1.0, 0.0)},
        {"events_recur": (3.0, 1.0)},
        {"events_recur": (-1.0, 3.0)},
        {"events_max_hz": 900.0},
        {"events_max_hz": 9000.0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ArrayPipeline(geometry, **bad)
    ArrayPipeline(
        geometry,
        events=None,
        overrule_below=None,
        events_broadband=None,
        events_fricative_db=None,
    )


def test_how_sure_of_noise_an_event_must_be_follows_the_masks_reading_of_the_room() -> None:
    """EVENTS' sureness (0.01, 0.02) where the mask reads the room at 24 dB or cleaner,
    EVENTS_LOOSE's (0.03, 0.06) at 12 dB or noisier, linearly between, below 4 kHz; the
    reading is the mask's current one or its held one where that is higher (a room it read
    clean lately is clean). In a room it reads clean nothing changes, sample for sample;
    in one it reads noisy, more of the bursts go."""
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"))
    meter = stage.mask_room
    loose_sure, loose_unsure = EVENTS_LOOSE
    assert READS_NOISY_DB == (24.0, 12.0)
    for reading, held, looseness in (
        (30.0, -np.inf, 0.0),
        (24.0, -np.inf, 0.0),
        (18.0, -np.inf, 0.5),
        (12.0, -np.inf, 1.0),
        (3.0, -np.inf, 1.0),
        (6.0, 30.0, 0.0),
        (6.0, 18.0, 0.5),
        (np.nan, -np.inf, 0.0),
    ):
        meter.snr_db, meter.held_snr_db = reading, held
        assert stage._looseness() == pytest.approx(looseness), (reading, held)

    (sure, unsure), (_, clear) = EVENTS
    full = 10 ** (-24 / 20)
    k4 = stage._events_bins
    halfway = (sure + loose_sure) / 2, (unsure + loose_unsure) / 2
    fairly = (loose_sure + loose_unsure) / 2  # fairly sure: above halfway's unsure
    assert unsure < halfway[1] < fairly < loose_unsure
    talker = np.full((4, 257), 0.5)
    wiener = np.full((4, 257), clear)
    talker[:, :k4] = fairly
    talker[3, :k4] = sum(halfway) / 2
    gains = stage._event_gains(talker, wiener, first_frame=10_000, loose=[0.0, 1.0, 0.5, 0.5])
    assert gains is not None
    assert np.allclose(gains[0, :k4], 1.0)  # as sure as EVENTS asks: no event
    assert np.allclose(gains[1, :k4], 1.0 - 0.5 * (1.0 - max(fairly, full)))
    assert np.allclose(gains[2, :k4], 1.0)  # halfway loosened: not sure enough
    assert np.allclose(gains[3, :k4], 1.0 - 0.5 * (1.0 - max(sum(halfway) / 2, full)))
    assert stage._event_gains(talker, wiener, first_frame=10_000, loose=[0.0] * 4) is None

    mix, clean = paper_room(0)

    def reads(snr_db: float, **kw) -> np.ndarray:
        """The front end with the mask's reading of the room pinned at `snr_db`."""
        pinned = ArrayPipeline(load_array("respeaker-4mic-pi"), **kw)
        meter = pinned.mask_room
        update = meter.update

        def pin(*args: float) -> float:
            depth = update(*args)
            meter.snr_db, meter.held_snr_db = snr_db, -np.inf
            return depth

        meter.update = pin  # type: ignore[method-assign]
        latency = pinned.latency_samples
        padded = np.concatenate([mix, np.zeros((latency, 4), np.int16)])
        out = np.concatenate([pinned.process(padded), pinned.flush()])[latency:]
        return out.astype(np.float64) / 32768

    strict = reads(40.0, events_loose=None, overrule_loose=None)
    assert np.array_equal(reads(40.0), strict)
    noisy = reads(0.0)
    assert not np.array_equal(noisy, strict)
    assert si_sdr_db(noisy, clean) > si_sdr_db(strict, clean)
    assert not np.array_equal(noisy, reads(0.0, events_loose=None))
    assert not np.array_equal(noisy, reads(0.0, overrule_loose=None))


def test_the_wiener_gain_overrules_less_where_the_mask_reads_the_room_noisy() -> None:
    """How much of the Wiener gain overrules the mask: `overrule_below`'s ramp (kept at or
    below lo, all of it from hi) where the mask reads the room clean, OVERRULE_LOOSE's where
    it reads it noisy, each of lo, hi and kept moved linearly between (the same reading as
    the events', READS_NOISY_DB)."""
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"))
    lo, hi, kept = stage._overrule_below
    loose_lo, loose_hi, loose_kept = OVERRULE_LOOSE
    assert lo < loose_lo < hi < loose_hi and loose_kept < kept
    values = np.array([0.0, lo, (lo + hi) / 2, hi, loose_hi, 1.0])
    talker = np.tile(values, (3, 1))
    clean = stage._overrule(talker[:1], None)[0]
    assert np.allclose(clean, np.interp(values, (lo, hi), (kept, 1.0)))
    assert np.array_equal(stage._overrule(talker[:1], [0.0])[0], clean)
    ramps = stage._overrule(talker, [0.0, 1.0, 0.5])
    assert np.allclose(ramps[0], clean)
    assert np.allclose(ramps[1], np.interp(values, (loose_lo, loose_hi), (loose_kept, 1.0)))
    half = (lo + loose_lo) / 2, (hi + loose_hi) / 2, (kept + loose_kept) / 2
    assert np.allclose(ramps[2], np.interp(values, half[:2], (half[2], 1.0)))
    assert np.all(ramps[1] <= ramps[0] + 1e-12)  # a noisy reading never overrules more


def test_a_frame_with_a_fricatives_shape_has_no_events() -> None:
    """The mask takes a far talker's fricatives for paper in a clean room: over minutes of
    talk it took 8 dB SI-SDR off two TUNE rooms at 30 dB. A frame's events count in full
    where its power above 4 kHz is no more than EVENTS_FRICATIVE_DB's first value (dB) over
    its power from 1 to 4 kHz (per bin: white noise is 0 dB), none from the second, linear
    between; below 4 kHz and above it alike."""
    full, none = EVENTS_FRICATIVE_DB
    assert (full, none) == (0.0, 1.0)
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"))
    k1, k4 = stage._events_from_bin, stage._events_bins
    powers = np.full((6, 257), 1e-4)
    for row, brighter_db in ((1, -10.0), (2, (full + none) / 2), (3, none), (4, 12.0)):
        powers[row, k4:] *= 10 ** (brighter_db / 10)
    powers[5] = 0.0  # digital silence: no shape, no division by zero
    powers[0, :k1] = 1.0  # (what lies below 1 kHz does not count)
    keep = stage._not_fricative(powers)
    assert np.allclose(keep, [1.0, 1.0, 0.5, 0.0, 0.0, 1.0])

    (sure, _), (_, clear) = EVENTS
    talker = np.full((6, 257), sure / 2)
    wiener = np.full((6, 257), clear)
    any_shape = stage._event_gains(talker, wiener, first_frame=10_000)
    shaped = stage._event_gains(talker, wiener, first_frame=10_000, powers=powers)
    assert any_shape is not None and shaped is not None and shaped.shape == any_shape.shape
    assert np.allclose(shaped[[0, 1, 5]], any_shape[[0, 1, 5]])
    assert np.allclose(shaped[2], 1.0 - 0.5 * (1.0 - any_shape[2]))
    assert np.allclose(shaped[[3, 4]], 1.0)
    off = ArrayPipeline(load_array("respeaker-4mic-pi"), events_fricative_db=None)
    assert np.allclose(off._event_gains(talker, wiener, 10_000, powers=powers), any_shape)


def test_bursts_brighter_than_a_fricative_are_left_to_the_rest_of_the_post_filter() -> None:
    """In the pipeline: bursts 6 dB brighter above 4 kHz than white, in a room whose floor
    reads clean, are not events (the output is within 0.3 dB of that without events), while
    events in frames of any shape take them out as they do white ones."""
    quiet = {"pause_wiener_floor_db": None, "pause_noise_floor_db": None}
    mix, clean = paper_room(0, brighter_db=6.0)
    shaped, stage = run(mix, **quiet)
    assert stage.depth == 0.0
    none, _ = run(mix, events=None, **quiet)
    any_shape, _ = run(mix, events_fricative_db=None, **quiet)
    assert abs(si_sdr_db(shaped, clean) - si_sdr_db(none, clean)) < 0.3
    assert si_sdr_db(any_shape, clean) > si_sdr_db(none, clean) + 1.0


def _recurring(stage: ArrayPipeline, weight: np.ndarray) -> np.ndarray:
    """The frames' candidate events weighed by EVENTS_RECUR: the frames follow the stage's
    last ones."""
    frame = getattr(stage, "_test_next_frame", 0)
    stage._test_next_frame = frame + weight.shape[0]  # type: ignore[attr-defined]
    weighed = weight.copy()
    stage._recurrence(weighed, frame)
    return weighed


def test_a_tone_counts_when_it_comes_back_and_a_narrow_event_that_never_does_not() -> None:
    """Over minutes of talk without a pause the mask takes a talker's harmonics for a tone
    (three TEST rooms fell 3-12 dB under the raw mic at 30 dB). A beep comes back at its
    pitch; the harmonics move with the voice's. EVENTS_RECUR: a narrow event counts by how
    many frames of events its bin (or a bin within 6 % of it) has had over the last 10 s,
    leaving out the last quarter second (none at 1, in full from 3); in full where nothing
    was near or around it (the first of a sound), or where the frame's events are
    broadband; a run of adjacent event bins as far as its best bin."""
    assert EVENTS_RECUR == (1.0, 3.0) and EVENTS_RECUR_S == (10.0, 0.25)
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"))
    kb = stage._events_bins
    quiet = np.zeros((40, kb))  # 0.64 s: more than the quarter second held back

    beep = np.zeros((6, kb))
    beep[:, 59:62] = 1.0  # 1.84-1.9 kHz
    assert np.all(_recurring(stage, beep)[:, 59:62] == 1.0)  # the first: nothing near
    _recurring(stage, quiet)
    assert np.all(_recurring(stage, beep)[:, 59:62] == 1.0)  # back: 18 frames near
    _recurring(stage, quiet)
    drifted = np.zeros((6, kb))
    drifted[:, 62:65] = 1.0  # 5 % higher
    assert np.all(_recurring(stage, drifted)[:, 62:65] == 1.0)

    # a talker's harmonic errors: events scattered about bin 12 (375 Hz), never within one
    # bin of it, then one at 12 itself: neither new there nor come back
    talk = ArrayPipeline(load_array("respeaker-4mic-pi"))
    for k in (9, 15, 8, 16, 9, 15):
        scattered = np.zeros((3, kb))
        scattered[:, k] = 1.0
        _recurring(talk, scattered)
        _recurring(talk, quiet)
    error = np.zeros((3, kb))
    error[:, 12] = 1.0
    assert np.all(_recurring(talk, error)[:, 12] == 0.0)
    # ... unless it is broadband: paper covers more than EVENTS_RECUR_BROAD[1] of 1-4 kHz
    paper = error.copy()
    k1 = stage._events_from_bin
    paper[:, k1 : k1 + int((kb - k1) * EVENTS_RECUR_BROAD[1]) + 1] = 1.0
    assert np.all(_recurring(talk, paper) == paper)
    # ... or one run with a bin that has come back: the run counts as its best bin
    run = error.copy()
    run[:, 9:13] = 1.0  # 9 has had 6 frames of events
    assert np.all(_recurring(talk, run)[:, 9:13] == 1.0)
    # a bin with a whisper of history near it is still new (EVENTS_RECUR_NEW), and one with
    # a single frame is in neither
    new_full, new_none = EVENTS_RECUR_NEW
    assert 0.0 < new_full < new_none < EVENTS_RECUR[0]
    fresh = ArrayPipeline(load_array("respeaker-4mic-pi"))
    whisper = np.zeros((1, kb))
    whisper[0, 100] = new_full / 2
    _recurring(fresh, whisper)
    _recurring(fresh, quiet)
    once = np.zeros((1, kb))
    once[0, 40] = 1.0
    _recurring(fresh, once)
    _recurring(fresh, quiet)
    both = np.zeros((1, kb))
    both[0, [100, 40]] = 1.0
    got = _recurring(fresh, both)
    assert got[0, 100] == 1.0 and got[0, 40] == 0.0


def test_the_events_history_is_the_same_however_the_frames_are_cut() -> None:
    """Frame by frame or in one call: the same weights (the agent's 40 ms blocks and one
    `process` call give the same output, test_pipeline.py)."""
    rng = np.random.default_rng(3)
    kb = 128
    weight = (rng.random((300, kb)) < 0.02) * rng.random((300, kb))
    weight[100:106, 50:53] = 1.0
    weight[160:166, 51:54] = 1.0
    one = weight.copy()
    ArrayPipeline(load_array("respeaker-4mic-pi"))._recurrence(one, 0)
    stage = ArrayPipeline(load_array("respeaker-4mic-pi"))
    cuts = [0, 1, 2, 15, 16, 17, 60, 61, 200, 300]
    parts = [weight[a:b].copy() for a, b in itertools.pairwise(cuts)]
    for start, part in zip(cuts, parts, strict=False):
        stage._recurrence(part, start)
    assert np.array_equal(np.concatenate(parts), one)
    assert not np.array_equal(one, weight)  # (some events did not count)
    assert one[160:166, 51:54].min() == 1.0  # (the second beep came back)


def beeping_room(seed: int, seconds: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) int16 and the talker at mic 0: the harmonic talker of conftest and a pump's
    beeps (1.4 kHz, 0.12 s every 0.7 s, from their own direction) over a quiet bed, the
    beeps 6 dB over the talker."""
    rng = np.random.default_rng(seed)
    s = speechlike(seconds, rng)
    n = s.size
    talker = np.stack([np.roll(s, d) for d in (0, 2, 4, 2)], axis=1)
    tone = np.zeros(n)
    length = int(0.12 * FS)
    shape = np.sin(2 * np.pi * 1400 * np.arange(length) / FS) * np.hanning(length)
    for t in range(int(0.3 * FS), n - length, int(0.7 * FS)):
        tone[t : t + length] += shape
    noise = np.stack([np.roll(tone, d) for d in (0, 3, 5, 1)], axis=1)
    noise += 0.003 * rng.standard_normal((n, 4))
    gain = np.sqrt(np.mean(talker[:, 0] ** 2) / np.mean(noise[:, 0] ** 2)) * 2.0
    scale = 0.05 / np.sqrt(np.mean(talker[:, 0] ** 2))
    mix = (talker + gain * noise) * scale * 32768
    return np.round(mix).astype(np.int16), talker[:, 0] * scale


def test_beeps_that_come_back_are_still_events() -> None:
    """In the pipeline: a pump's beeps are taken out as events whether or not they must come
    back (within 0.1 dB of EVENTS_RECUR off), and events are worth more than 1 dB there."""
    for seed in (0, 1):
        mix, clean = beeping_room(seed)
        recurring, _ = run(mix)
        any_tone, _ = run(mix, events_recur=None)
        none, _ = run(mix, events=None)
        got = si_sdr_db(recurring, clean)
        assert abs(got - si_sdr_db(any_tone, clean)) < 0.1
        assert got > si_sdr_db(none, clean) + 1.0
