"""The array front end: high-pass -> adaptive beamformer -> post-filter -> AGC -> limiter.

A small trained speech mask (mask.py) reads the reference mic and says, per frame and bin,
how much is talker. It drives the beamformer's covariances (a mask-based multichannel
Wiener filter) and is the post-filter, floored at -24 dB and overruled by a Wiener gain
wherever the signal stands clear of the tracked noise floor (so weak speech the mask is
unsure of is kept), by only half of it where the mask is sure the bin is noise. Noise
events (EVENTS: sure noise standing clear of the floor, paper and keys; how sure, by how
noisy the mask reads the room, EVENTS_LOOSE) get the mask at full depth whatever the
room's depth. How deep the rest goes (the depth, 0..1) follows the
room's SNR as the noise floor reads it (depth.py); until the floor has seen a whole
window, the mask's own reading of the room's SNR caps it, since a floor that has not yet
seen a pause reads a clean room as noisy. Two bands may go deeper than that depth in their
own bins, each by its own noise floor's reading, capped the same way by the mask's until
that floor has seen a whole window (BAND_DEPTHS): the rumble below the speech band, and
above 1.5 kHz, where the talker's
reverberant tails that a clean room's score keeps are weak and the mask with its Wiener
overrule gains even in rooms the speech band calls clean. At any depth, steady noise is
taken out of every frame by the Wiener gain on the noise heard deep in the pauses
(_pause_noise_gains), and out of the pauses by the Wiener gain on the tracked floor
(_pause_wiener_gains). docs/dsp.md has the bench's ablations of each choice.

Streaming and causal. Input is cut into hops of 256 samples on a fixed grid, analysed
with a 512-sample sqrt-Hann STFT (50 % overlap), so the output lags the input by
`latency_samples` = 256 samples (16 ms): out[i] is the processed in[i - 256]. A caller
that delivers samples as they come also waits for a hop to fill, so the algorithmic
latency is frame length = 512 samples = 32 ms. Blocks of any length are accepted and
the output does not depend on how the input was cut: everything that adapts does so on
the hop grid.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from edge_agent.dsp.agc import PeakLimiter, SpeechAgc
from edge_agent.dsp.arrays import ArrayGeometry, load_array
from edge_agent.dsp.beamformer import NOISE_FRAME_POWER, WienerBeamformer
from edge_agent.dsp.depth import BandSnr, MaskSnr
from edge_agent.dsp.health import ChannelHealth
from edge_agent.dsp.mask import SpeechMask
from edge_agent.dsp.noise import _POWER_FLOOR, NoiseTracker, PostFilter

_MAX_FRAMES_PER_PASS = 64  # bounds memory when a whole file arrives in one block
# The noise heard in pauses (_pause_noise_gains): learned only in frames this far into a
# pause (the pause weight, eased in over ~50 ms: ~7 frames in), past the loudest of the
# talker's reverberant tail; trusted in full once it has heard this many seconds of them
_PAUSE_NOISE_FROM = 0.9
_PAUSE_NOISE_EVIDENCE_S = 1.0
# ... and never above twice what the latest pause frames held (their power averaged over
# ~0.1 s): a noise that stops (a fan switched off) is let go at the next pause, where the
# slow average, and the tracked floor with its ~2 s minimum window, would still hold it
# for seconds and cut the talker's weak parts (-6 dB SI-SDR in the second after)
_PAUSE_NOISE_RECENT_S = 0.1
_PAUSE_NOISE_RECENT_OVER = 2.0
# ... and lowered to this times the tracker's minimum-statistics floor (the lowest of its
# smoothed power over ~2 s, replaced every 0.4 s; NoiseTracker.run says when) wherever it is
# above it, each time that floor is replaced; it rises again only as pauses teach it. A noise that
# stops while the talk goes on with no pause deep enough to learn from is let go within a
# second: the floor falls in the gaps between words, where the pauses' estimate would hold
# the noise for as long as the talk goes on, capped only by the tracked floor, which rises
# into the talker's reverberant tails (a fan switched off, 30 dB after 5 dB: -1.05 dB
# SI-SDR against the raw mic 2-4 s after, -0.14 now; docs/dsp.md). 2 is about the floor's
# bias for steady noise (a 2 s minimum of this smoothing sits ~3 dB under the mean): a noise
# that goes on is lowered little, and only where it fluctuates
PAUSE_NOISE_OVER_MINIMUM = 2.0
# A mask that has just started (a stream's start, the end of a warm-up) is sure of nothing
# for this long: its sureness that a bin is noise does not cut the Wiener gain's overrule
_MASK_FRESH_S = 0.5
# ln E[P] - E[ln P] for the exponentially distributed power of a bin of steady noise: the
# mean of the log power, raised by it, is the noise power, while a burst (an alarm's pulse,
# a cough in a pause) moves a log average far less than a power average
_EULER_GAMMA = 0.5772156649015329
_HEAP_HELD = 16 << 20  # bytes glibc may keep free at the top of the heap (_hold_freed_heap)
_HEAP_UP_TO = 4 << 20  # blocks up to this size come from the heap, not mmap (ditto)
_heap_held = False


def _hold_freed_heap() -> None:
    """glibc hands the top of its heap back to the OS whenever more than its trim threshold
    is free there, and a pass's temporaries (a few MB) free it and take it back again: the
    page faults cost a fresh process a fifth of its time (ten minutes through one call, this
    machine: real-time factor 0.0100 -> 0.0082; a process that had already run it was fast,
    as is one started with MALLOC_TRIM_THRESHOLD_ set). So the process keeps up to 16 MB
    freed. Setting that also fixes the size from which glibc maps a block of its own
    (mmap) and unmaps it when freed at 128 kB, and a pass's (64 frames, 257 bins) float
    temporaries are just over it: each was a fresh mapping and its page faults (the
    command on ten minutes, single-threaded BLAS: 35 000 -> 129 000 minor faults, +5 % of
    its time, when the mask's reading came to move the overrule's ramps a frame). So blocks
    up to 4 MB come from the heap. Once per process; where the C library has no mallopt
    (not glibc), nothing."""
    global _heap_held
    if _heap_held:
        return
    _heap_held = True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-1, _HEAP_HELD)  # M_TRIM_THRESHOLD
    mallopt(-3, _HEAP_UP_TO)  # M_MMAP_THRESHOLD

#: how fast each mic's DC offset estimate follows the mic (pipeline._dc_offsets). A MEMS mic
#: or its codec may settle for a few hundred ms as the capture opens: followed over 2 s, an
#: offset settling to 500-2000 LSB with a 300 ms time constant left a step in every frame
#: and cost a 30 dB room 4.9 dB from power-on (2.6 after the warm-up), which restarts the
#: file with the estimate at its end. Over 0.25 s: nothing (docs/dsp.md, "Where the stream
#: starts")
DC_TIME_CONSTANT_S = 0.25

#: the speech band: where the room's SNR is read, by the noise floor and by the mask
_SPEECH_BAND_HZ = (250.0, 4000.0)

#: bands whose own noise floor may take the post-filter deeper than the speech band's
#: depth, in its bins only: (from Hz, to Hz, depth 0 at or above this SNR dB, 1 at or below
#: this). Below 250 Hz: HVAC rumble, which a 0 dB room can hold almost all of while the
#: speech band reads 15 dB. Above 1.5 kHz: the mask and its Wiener overrule gain there
#: even in rooms the speech band reads as clean (docs/dsp.md, "Bands that go deeper than
#: the speech band"). Until a band's floor has seen a whole window, the mask's reading of the
#: room caps the band's depth, as it caps the speech band's (that floor may be the talk).
BAND_DEPTHS = (
    (0.0, 250.0, 16.0, 8.0),
    (1500.0, math.inf, 28.0, 18.0),
)

#: noise events: bins the trained mask is sure hold noise (full at or below the first
#: value, none from the second) while they stand clear of the tracked noise floor (the
#: decision-directed Wiener gain: none at or below the first value, full from the second)
#: get the mask at full depth whatever the room's depth. Paper, keys, a dropped instrument:
#: between them the floor is the quiet room, so the room's depth is near 0 exactly where
#: they are loudest (docs/dsp.md, "Where the mask is sure of noise"). Bin by bin below
#: 4 kHz; above it, in broadband events only (ArrayPipeline's `events_broadband`)
EVENTS = ((0.01, 0.02), (0.5, 0.9))

#: how noisy the mask reads the room, for what it may then be trusted with: none of the
#: loosening below at or above the first SNR (dB), all of it at or below the second,
#: linearly between. Its reading is its current one or, if higher, its held one (the room
#: as clean as it has lately read it). In a room it reads clean, a bin it is only fairly
#: sure of is as likely a far talker as noise; in a room it reads noisy (beeps, an alarm,
#: paper at 0-10 dB, which the floor between them reads as clean) it is noise (docs/dsp.md,
#: "How sure of noise an event must be")
READS_NOISY_DB = (24.0, 12.0)

#: how sure the mask must be that a bin is noise for the bin to be an event, below 4 kHz, in
#: a room it reads noisy (READS_NOISY_DB): these (sure, unsure) instead of EVENTS'
EVENTS_LOOSE = (0.03, 0.06)

#: the Wiener gain's overrule (ArrayPipeline's `overrule_below`: lo, hi, kept) in a room the
#: mask reads noisy (READS_NOISY_DB): these instead, so a bin the mask is fairly sure is noise
#: keeps less of a Wiener gain that calls it clear of the floor (docs/dsp.md, "How far the
#: Wiener gain overrules the mask in a room the mask reads noisy")
OVERRULE_LOOSE = (0.1, 0.3, 0.25)

#: a frame's noise events count in full where its mean power per bin above 4 kHz
#: (events_max_hz) is at most the first value (dB) over that from 1 kHz to there, and not at
#: all from the second: a frame brighter than that has the shape of a fricative, and a far
#: talker's fricatives are what the mask takes for paper in a clean room, over minutes of
#: talk (paper and keys are flat or fall above 4 kHz). docs/dsp.md, "Long sessions, and
#: noise events in a frame with a fricative's shape"
EVENTS_FRICATIVE_DB = (0.0, 1.0)

#: a narrow noise event (a tone) counts only as far as it is a sound that comes back: the
#: mask takes a talker's steady harmonics for a tone after minutes of talk without a pause,
#: and those move with the voice's pitch, where a beep or an alarm comes back at its own.
#: Each bin below events_max_hz keeps a history of its events over the last
#: EVENTS_RECUR_S[0] s (a decaying sum, in frames of a full event), leaving out the last
#: EVENTS_RECUR_S[1] s (the sound itself). An event counts:
#: - by how often events came back near its bin (the most within EVENTS_RECUR_BINS[0] of
#:   its frequency: a beep's pitch may drift from one beep to the next): none at or below
#:   EVENTS_RECUR[0] frames, in full from EVENTS_RECUR[1];
#: - in full where no event has been near it, nor around it (out to EVENTS_RECUR_BINS[1]
#:   of its frequency), for a while: the first of a sound (EVENTS_RECUR_NEW: in full at or
#:   below the first, none from the second, frames);
#: - in full in a frame whose events cover at least EVENTS_RECUR_BROAD[1] of the bins from
#:   1 kHz to events_max_hz (paper, keys; none of this from [0]).
#: A run of adjacent event bins is one sound and counts as far as its best bin (a loud
#: tone spreads over its neighbours). docs/dsp.md, "Tones that come back, and a talker's
#: harmonics"
EVENTS_RECUR = (1.0, 3.0)
EVENTS_RECUR_S = (10.0, 0.25)
EVENTS_RECUR_BINS = (0.06, 0.3)
EVENTS_RECUR_NEW = (0.1, 0.2)
EVENTS_RECUR_BROAD = (0.2, 0.3)


def _mask_at_depth(
    talker: np.ndarray, floor: np.ndarray | float, depth: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The trained mask as the post-filter: floored at `floor`, blended toward 1 by
    `depth` (1 - depth (1 - max(talker, floor)); all broadcast). At depth 0, exactly 1."""
    gains = np.maximum(talker, floor, out=out)
    gains -= 1.0
    gains *= depth
    gains += 1.0
    return gains


class ArrayPipeline:
    """Multichannel int16 blocks in, mono int16 out (see the module docstring).

    The keyword arguments after `settle_s` are the trained mask's (docs/dsp.md has the
    bench's ablations of each): `mask` runs it (False: the front end before it, the
    beamformer taught by its spatial SPP and a Wiener post-filter); `mask_mwf` makes the
    beamformer a mask-based MWF (talker and noise covariances over `mask_time_constant_s`,
    each bin held at the reference mic until it has `evidence` of both; the noise covariance
    learns a bin only as far as the whole frame reads as noise too: `noise_frame_power`,
    beamformer.py's NOISE_FRAME_POWER); `mask_gain` makes the mask the post-filter (floored at
    `mask_floor_db`; with `mask_or_wiener`, the larger of it and the Wiener gain).
    `depth_source` says where the depth comes from: "band"
    (the noise floor, depth.py's BandSnr), "mask" (MaskSnr: the room's SNR as the mask
    reads it, 1 at `mask_noisy_snr_db`, 0 at `mask_clean_snr_db`; with `mask_snr_split` s,
    from the bins it is surer than s of, talker or noise, else from its soft split),
    "min"/"max" of the two, or "early": the floor's, capped by the mask's until the floor
    has seen `floor_window_s`. With `mask_hold_s`, the depth of the speech band and of the
    bands that overlap it is also capped by the mask's highest reading of the last
    `mask_hold_s`, counted from `mask_hold_after_s` (depth.py's MaskSnr). `band_depths`
    (with the mask as the post-filter and an adaptive depth): bands whose own floor may take
    their bins deeper (BAND_DEPTHS); until a band's floor has seen `floor_window_s`, its
    depth is capped by the mask's reading (`band_early` "mask", with the mask's reading
    of the room) or is 0 ("wait").
    `overrule_below` (lo, hi, kept): the Wiener gain overrules the mask in full where the
    mask is at or above hi; at or below lo (where the mask is sure the bin is noise) only
    `kept` of it does, linearly between.
    `events` (with `mask_or_wiener`): EVENTS, below `events_max_hz` bin by bin; above it
    (where the mask takes a talker's fricatives for paper) only as far as the frame's
    events are broadband: their mean weight from 1 kHz to `events_max_hz`, full at
    `events_broadband` (None: none above it). Once the mask has run `events_after_s` (it
    is unsure of everything before that). With the mask's reading of the room, by how noisy
    it reads it (`reads_noisy_db`, READS_NOISY_DB): `events_loose` (None: EVENTS' sureness
    always), EVENTS_LOOSE; `overrule_loose` (with `overrule_below`; None: that always),
    OVERRULE_LOOSE. `events_fricative_db` (None: every frame in full): a frame's events only
    as far as it is not as bright as a fricative, EVENTS_FRICATIVE_DB. `events_recur` (None:
    every tone in full): a narrow event only as a sound that comes back, EVENTS_RECUR.
    `pause_wiener_floor_db` (None: off): the Wiener gain on the tracked floor in pauses,
    floored at that x (1 - depth) (_pause_wiener_gains); `pause_noise_floor_db` (None: off):
    the Wiener gain on the noise heard in pauses, a log average over
    `pause_noise_time_constant_s`, in every frame (_pause_noise_gains), lowered to
    `pause_noise_over_minimum` times the tracker's minimum-statistics floor (None: not),
    PAUSE_NOISE_OVER_MINIMUM. `two_step` (False: the decision-directed gains as one step):
    both Wiener gains, the post-filter's and the one on the noise heard in pauses, in two
    steps (noise.py's PostFilter), so a soft onset is not cut in its first frames.
    """

    def __init__(
        self,
        geometry: ArrayGeometry,
        *,
        sample_rate: int = 16000,
        frame_len: int = 512,
        highpass_hz: float = 40.0,
        gain_floor_db: float = -10.0,
        beamform_max_hz: float = 3000.0,
        pause_gain_db: float = 0.0,
        pause_wiener_floor_db: float | None = -12.0,
        pause_wiener_above_floor: float = 2.0,
        pause_noise_floor_db: float | None = -18.0,
        pause_noise_time_constant_s: float = 2.0,
        agc: bool = True,
        beamform: bool = True,
        clean_snr_db: float = 24.0,
        noisy_snr_db: float = 12.0,
        adaptive_depth: bool = True,
        agc_dead_band_db: float = 20.0,
        floor_window_s: float = 6.0,
        tracker_ceiling: float | None = None,
        start_depth: float = 0.0,
        settle_s: float = 2.0,
        mask: bool = True,
        mask_weights: str | None = None,
        mask_gain: bool = True,
        mask_floor_db: float = -24.0,
        mask_mwf: bool = True,
        mask_time_constant_s: float = 1.0,
        spatial_only: bool = True,
        max_restore: float = 4.0,
        depth_source: str = "early",
        mask_clean_snr_db: float = 24.0,
        mask_noisy_snr_db: float = 18.0,
        mask_snr_time_constant_s: float = 5.0,
        mask_settle_s: float = 1.0,
        mask_snr_split: float | None = 0.2,
        mask_hold_s: float | None = 8.0,
        mask_hold_after_s: float = 3.0,
        mask_or_wiener: bool = True,
        evidence: float = 0.15,
        dc_significance: tuple[float, float] | None = (4.0, 8.0),
        dc_time_constant_s: float = DC_TIME_CONSTANT_S,
        beamform_depth_from: float = 0.3,
        floor_rise_db_per_s: float | None = 1.0,
        band_depths: tuple = BAND_DEPTHS,
        band_early: str = "mask",
        overrule_below: tuple[float, float, float] | None = (0.05, 0.2, 0.5),
        events: tuple | None = EVENTS,
        events_max_hz: float = 4000.0,
        events_after_s: float = 2.0,
        events_broadband: float | None = 0.25,
        reads_noisy_db: tuple[float, float] = READS_NOISY_DB,
        events_loose: tuple[float, float] | None = EVENTS_LOOSE,
        overrule_loose: tuple[float, float, float] | None = OVERRULE_LOOSE,
        events_fricative_db: tuple[float, float] | None = EVENTS_FRICATIVE_DB,
        events_recur: tuple[float, float] | None = EVENTS_RECUR,
        noise_frame_power: float = NOISE_FRAME_POWER,
        pause_noise_over_minimum: float | None = PAUSE_NOISE_OVER_MINIMUM,
        two_step: bool = True,
    ) -> None:
        if frame_len % 2:
            raise ValueError("frame_len must be even")
        if not dc_time_constant_s > 0:
            raise ValueError(f"dc_time_constant_s: want > 0 s, got {dc_time_constant_s}")
        _hold_freed_heap()
        self.geometry = geometry
        self.sample_rate = sample_rate
        self.channels = geometry.capture_channels
        self._mic_idx = np.array(geometry.mic_channels)
        first = geometry.mic_channels[0]
        contiguous = geometry.mic_channels == tuple(range(first, first + len(self._mic_idx)))
        # the mics' columns of a block: a view where they are side by side (every array we
        # know), else a gather
        self._mic_cols = slice(first, first + len(self._mic_idx)) if contiguous else self._mic_idx
        mics = len(self._mic_idx)
        ref = geometry.mic_channels.index(geometry.reference_channel)
        self.frame_len, self.hop = frame_len, frame_len // 2
        self.latency_samples = frame_len - self.hop
        hop_s = self.hop / sample_rate
        bins = frame_len // 2 + 1

        # periodic sqrt-Hann for analysis and synthesis: its square sums to 1 at 50 % overlap
        self._window = np.sqrt(np.hanning(frame_len + 1)[:-1])
        self._window_squared = self._window**2
        #: frames whose synthesis was the input frame itself (a clean room: see _run_hops)
        self.frames_as_is = 0
        self._as_is_shortcut = True
        self._history = np.zeros((mics, frame_len - self.hop))  # channel-major: FFTs run along rows
        self._pending_raw = np.zeros((0, mics), np.int16)  # (samples short of a whole hop)
        self._overlap = np.zeros(frame_len - self.hop)
        self._window_spectrum = np.fft.rfft(self._window)
        # each mic's DC offset: the running mean of its hop means for its first
        # `dc_time_constant_s`, then a one-pole average over as long (DC_TIME_CONSTANT_S); a
        # mic stuck at a DC value is silent from the first hop (_dc_offsets; _start_dc)
        self._dc_decay = float(np.exp(-(frame_len // 2) / sample_rate / dc_time_constant_s))
        # ... but in a clean room only as far as it stands out of its own uncertainty: a mic
        # without an offset then passes untouched (its estimate is the talker's low end
        # wandering around zero), one with a real offset loses all of it within a few hops
        self._start_dc(mics)
        self._dc_significance = dc_significance

        self.health = ChannelHealth(mics, hop_s=hop_s)
        # The array is beamformed up to `beamform_max_hz` only: with 57-81 mm between mics
        # it aliases spatially above c / 2d = 3.0 kHz, so above it the reference mic goes straight
        # to the post-filter, at half the cost.
        self._bf_bins = int(beamform_max_hz * frame_len / sample_rate) + 1
        self._beamform = beamform
        self._ref = ref
        self._mask = SpeechMask(mask_weights, hop_s=hop_s) if mask else None
        self._mask_gain = mask and mask_gain
        # the mask is needed every frame if it is the post-filter or reads the room's SNR;
        # otherwise only when the beamformer's covariances are updated
        self._mask_every_frame = mask and (mask_gain or depth_source != "band")
        self._mask_depth = mask and depth_source != "band"
        self._mask_floor_db = mask_floor_db
        self.beamformer = WienerBeamformer(
            self._bf_bins,
            mics,
            ref,
            hop_s=hop_s,
            # the mask is needed only when the covariances are updated: computed then, for
            # the whole group at once, however the caller cut its blocks (unless it is the
            # post-filter too, which needs it every frame)
            caller_presence=(
                False if self._mask is None else (True if self._mask_every_frame else self._mask)
            ),
            mask_mwf=mask and mask_mwf,
            mask_time_constant_s=mask_time_constant_s,
            evidence=evidence,
            spatial_only=spatial_only,
            max_restore=max_restore,
            noise_frame_power=noise_frame_power,
        )
        self.tracker = NoiseTracker(bins, ceiling_over_minimum=tracker_ceiling)
        # Which frames teach the beamformer "noise" is decided by the multichannel SPP
        # (spatial, see beamformer.py); until its statistics exist (~1 s) by the SPP of
        # the mean periodogram over all mics. Never by the beam output's SPP: early on
        # that is the reference mic, and selecting frames where its noise happens to be
        # low biases that mic's noise estimate low and the weights toward it.
        self.array_tracker = NoiseTracker(self._bf_bins)
        self.postfilter = PostFilter(bins, gain_floor_db=gain_floor_db, two_step=two_step)
        # How deep the enhancement goes follows the room's long-term SNR: all the way below
        # `noisy_snr_db`, not at all above `clean_snr_db` (see _update_depths).
        self._adaptive_depth = adaptive_depth
        self._floor_db = gain_floor_db
        self.agc = SpeechAgc(hop_s=hop_s, dead_band_db=agc_dead_band_db)
        self.limiter = PeakLimiter(sample_rate=sample_rate)
        freqs = np.fft.rfftfreq(frame_len, 1 / sample_rate)
        # The HVAC high-pass is a zero-phase gain per bin (4th-order Butterworth magnitude):
        # a minimum-phase IIR would smear the phase of voiced speech's fundamental
        # (100-200 Hz), audibly and in SI-SDR. Each mic's DC offset is removed before.
        self._highpass_gain = 1.0 / np.sqrt(1.0 + (highpass_hz / np.maximum(freqs, 1.0)) ** 8)
        # bins the DC removal and high-pass change by more than 0.1 dB (and the DC bin)
        self._low_bins = int(np.flatnonzero(self._highpass_gain < 0.989)[-1]) + 2
        # above them it is left out (it is within 0.0005 dB of 1 there), so that what it
        # takes is all given back where the room is clean
        self._highpass_gain[self._low_bins :] = 1.0
        self._highpass_removes = 1.0 - self._highpass_gain[: self._low_bins]
        band = np.flatnonzero((freqs >= _SPEECH_BAND_HZ[0]) & (freqs <= _SPEECH_BAND_HZ[1]))
        self._band = slice(int(band[0]), int(band[-1]) + 1)
        self._band_scale = 1.0 / band.size
        self._power_scale = 4.0 / frame_len**2
        # a bin's |X|^2 for 1 LSB rms of white noise (the sqrt-Hann window's energy is N/2):
        # band powers under this are digital silence
        self._quantum_power = (frame_len / 2) / 32768.0**2
        # every band's floor: the same window and rise
        floor = partial(
            BandSnr,
            hop_s=hop_s,
            floor_window_s=floor_window_s,
            floor_rise_db_per_s=floor_rise_db_per_s,
        )
        self.room = floor(
            clean_snr_db=clean_snr_db,
            noisy_snr_db=noisy_snr_db,
            start_depth=start_depth,
            settle_s=settle_s,
            silence_power=self._quantum_power * (self._band.stop - self._band.start),
        )
        # The high-pass and DC removal act where there is something to remove: what they
        # take from the reference mic is given back in proportion to 1 - the low band's own
        # depth (below ~100 Hz), so rumble goes and a quiet room's low end stays.
        self.low_room = floor(
            clean_snr_db=clean_snr_db,
            noisy_snr_db=noisy_snr_db,
            silence_power=self._quantum_power * self._low_bins,
        )
        self.depth = 1.0 if not adaptive_depth else self.room.depth
        # Bands that may go deeper than the speech band says (module docstring, BAND_DEPTHS):
        # each its own floor reading; the spectrum cut into regions at their edges, each
        # region's depth the speech band's or, inside a band, the deeper of the two
        self._band_rooms: list[BandSnr] = []
        self._band_bins: list[tuple[int, int]] = []  # each band's bins, from and to
        self._region_widths: list[int] = []
        self._band_regions: list[int] = []  # which regions the bands are, in band order
        #: the bands the mask's held reading caps: those that overlap the speech band it
        #: reads (not the low band: rumble there is real whatever the mask hears above it)
        self._band_held: list[bool] = []
        if band_early not in ("mask", "wait"):
            raise ValueError(f"band_early: want 'mask' or 'wait', got {band_early!r}")
        #: until a band's floor has seen its window, the mask's reading caps the band (it
        #: may be the talk itself); without that reading, the band waits
        self._band_early_cap = band_early == "mask" and self._mask_depth
        if adaptive_depth and mask and mask_gain:
            edge = 0
            for lo_hz, hi_hz, clean, noisy in band_depths:
                lo = int(np.searchsorted(freqs, lo_hz))
                hi = int(np.searchsorted(freqs, hi_hz))
                if not edge <= lo < hi:
                    raise ValueError(
                        f"band_depths: bands must be in order and apart, got {band_depths}"
                    )
                if lo > edge:
                    self._region_widths.append(lo - edge)
                self._band_regions.append(len(self._region_widths))
                self._region_widths.append(hi - lo)
                self._band_bins.append((lo, hi))
                self._band_held.append(lo_hz < _SPEECH_BAND_HZ[1] and hi_hz > _SPEECH_BAND_HZ[0])
                self._band_rooms.append(
                    floor(
                        clean_snr_db=clean,
                        noisy_snr_db=noisy,
                        settle_s=settle_s,
                        # until its floor has seen a whole window it may be the talk
                        # itself: the mask caps it then (_cap_bands), or it waits
                        wait_s=0.0 if self._band_early_cap else floor_window_s,
                        silence_power=self._quantum_power * (hi - lo),
                    )
                )
                edge = hi
            if band_depths and edge < bins:
                self._region_widths.append(bins - edge)
        self._depth_source = depth_source
        self._mask_snr_split = mask_snr_split
        self._mask_or_wiener = mask_or_wiener
        if overrule_below is not None:
            sure_noise, in_full, kept = overrule_below
            if not (0.0 <= sure_noise < in_full <= 1.0 and 0.0 <= kept <= 1.0):
                raise ValueError(
                    f"overrule_below: want 0 <= lo < hi <= 1, 0 <= kept <= 1; got {overrule_below}"
                )
        if events is not None:
            (sure, unsure), (clear_from, clear) = events
            if not (0.0 <= sure < unsure <= 1.0 and 0.0 <= clear_from < clear <= 1.0):
                raise ValueError(
                    f"events: want ((sure, unsure), (from, clear)) rising in 0..1; got {events}"
                )
        if events_broadband is not None and not 0.0 < events_broadband <= 1.0:
            raise ValueError(f"events_broadband: want a share in (0, 1], got {events_broadband}")
        self._overrule_below = overrule_below
        self._events = events if mask and mask_gain and mask_or_wiener else None
        if not 1000.0 < events_max_hz <= sample_rate / 2:
            raise ValueError(
                f"events_max_hz: want above 1 kHz, at most {sample_rate / 2:g} Hz; "
                f"got {events_max_hz}"
            )
        self._events_bins = min(bins, round(events_max_hz * frame_len / sample_rate))
        self._events_after = round(events_after_s / hop_s)
        self._full_floor = 10 ** (mask_floor_db / 20)
        self._frames_seen = 0
        # the frame the mask started at (the stream's start, or the end of a warm-up): no
        # noise event and no pause until events_after_s after it, and its sureness cuts the
        # Wiener gain's overrule only from _MASK_FRESH_S after it
        self._mask_from = 0
        self._mask_fresh = round(_MASK_FRESH_S / hop_s)
        self._events_broadband = events_broadband
        reads_clean, reads_noisy = reads_noisy_db
        if not reads_clean > reads_noisy:
            raise ValueError(
                f"reads_noisy_db: want the clean SNR above the noisy one, got {reads_noisy_db}"
            )
        if events_loose is not None:
            loose_sure, loose_unsure = events_loose
            sure, unsure = (events or EVENTS)[0]
            if not (sure <= loose_sure < loose_unsure <= 1.0 and unsure <= loose_unsure):
                raise ValueError(
                    "events_loose: want (sure, unsure) in 0..1, no stricter than EVENTS'; "
                    f"got {events_loose}"
                )
        if overrule_loose is not None:
            loose_lo, loose_hi, loose_kept = overrule_loose
            if not (0.0 <= loose_lo < loose_hi <= 1.0 and 0.0 <= loose_kept <= 1.0):
                raise ValueError(
                    f"overrule_loose: want 0 <= lo < hi <= 1, 0 <= kept <= 1; got {overrule_loose}"
                )
        self._events_loose = events_loose
        self._overrule_loose = overrule_loose
        if events_fricative_db is not None and not events_fricative_db[0] < events_fricative_db[1]:
            raise ValueError(
                f"events_fricative_db: want (full, none) rising, dB; got {events_fricative_db}"
            )
        #: (the reading at which none of the loosening, its share per dB below that), if
        #: anything is loosened by the mask's reading of the room; None: nothing is
        self._looseness_scale = (
            (reads_clean, 1.0 / (reads_clean - reads_noisy))
            if self._mask_depth and (events_loose is not None or overrule_loose is not None)
            else None
        )
        self._events_from_bin = round(1000.0 * frame_len / sample_rate)
        # (events up to Nyquist: nothing above them to compare, no shape)
        self._events_fricative = events_fricative_db if self._events_bins < bins else None
        if events_recur is not None and not 0.0 <= events_recur[0] < events_recur[1]:
            raise ValueError(f"events_recur: want (none, full) rising from 0; got {events_recur}")
        self._events_recur = events_recur if self._events is not None else None
        if self._events_recur is not None:
            kb = self._events_bins
            memory_s, skip_s = EVENTS_RECUR_S
            self._recur_decay = math.exp(-hop_s / memory_s)
            #: a frame's history leaves out the frames this close before it (the sound)
            self._recur_held = max(1, round(skip_s / hop_s))
            #: the events' history at each bin below events_max_hz, as of a frame (the
            #: decayed sum of the events up to it, in frames of a full event), and the
            #: frames with events not yet in it: (frame, its events), oldest first. It
            #: changes only at frames with events, so it is the same however the frames
            #: come in
            self._recur_history = np.zeros(kb)
            self._recur_as_of = 0
            self._recur_pending: list[tuple[int, np.ndarray]] = []
            # a bin's neighbours: within near_k bins (at least 1), and from there to far_k
            # (at least 3) as spans [lo, hi) of cumulative sums over the bins from 1 (DC is
            # no neighbour)
            k = np.arange(kb)
            near_frac, far_frac = EVENTS_RECUR_BINS
            near_k = np.maximum(1, np.round(k * near_frac)).astype(int)
            far_k = np.maximum(near_k + 2, np.round(k * far_frac)).astype(int)
            #: (kb, 2 x most near_k + 1): the bins within each bin's near_k (itself where
            #: fewer), to gather and take the most of
            offsets = np.arange(-int(near_k.max()), int(near_k.max()) + 1)
            within = np.abs(offsets)[None, :] <= near_k[:, None]
            gather = k[:, None] + offsets[None, :]
            self._recur_near = np.where(within & (gather >= 1) & (gather < kb), gather, k[:, None])
            spans = (
                np.clip(k - far_k, 1, kb),
                np.clip(k + far_k + 1, 1, kb),
                np.clip(k - near_k, 1, kb),
                np.clip(k + near_k + 1, 1, kb),
            )
            self._recur_spans = spans
            #: (the reciprocal of how many bins are from near_k to far_k away)
            self._recur_ring = 1.0 / np.maximum((spans[1] - spans[0]) - (spans[3] - spans[2]), 1)
        #: "early": the mask's reading caps the floor's depth until the floor has seen a
        #: whole window (before that it may be speech and read a clean room as noisy)
        self._early_until = 0  # (set for each call by _update_depths)
        #: the beamformer departs from the reference mic only above this depth (then
        #: linearly up to all the way at depth 1): at a small depth, a clean room's talkers'
        #: reverberant tails it has learned as noise cost more than it removes
        self._bf_from = beamform_depth_from
        self.mask_room = MaskSnr(
            hop_s=hop_s,
            time_constant_s=mask_snr_time_constant_s,
            clean_snr_db=mask_clean_snr_db,
            noisy_snr_db=mask_noisy_snr_db,
            settle_s=mask_settle_s,
            hold_s=mask_hold_s,
            hold_after_s=mask_hold_after_s,
        )
        self._mask_hold = mask_hold_s is not None and self._mask_depth

        # A frame gain on top of the post-filter, eased in and out over ~50 ms so it cannot
        # click: frames without speech drop a further `pause_gain_db` x depth. Off (0 dB)
        # since 2026-12-06: at -6 dB it cut the weak speech of frames the presence called
        # pauses (TUNE 288 and TEST: STOI at -5 to 5 dB 0.002-0.004 lower, the mean 0.03-0.05
        # dB lower, PESQ-wb the same), and the Wiener gains in and from the pauses take the
        # steady noise out of them now. A
        # second gate that cut frames whose 1-7 kHz spectrum was as flat as noise (paper,
        # clicks) was removed: it also cut recorded speech's fricatives (-0.02 STOI and
        # -0.6 dB SI-SDR at 0 dB SNR on recorded speech; it had been tuned on espeak).
        self._pause_gain = 10 ** (pause_gain_db / 20)
        self._pause_presence = 0.25
        self._gate_rate = 0.3
        self._gate = 1.0
        # In pauses, the Wiener gain on the tracked noise, at any depth: steady noise out of
        # the pauses of rooms the depth leaves alone (_pause_wiener_gains)
        self._pause_wiener = pause_wiener_floor_db
        self._pause_above_floor = pause_wiener_above_floor
        self._pause_weight = 0.0
        # In every frame, at any depth: the Wiener gain on the noise heard in pauses
        # (_pause_noise_gains): steady noise out of the speech too
        self._pause_noise_floor = (
            None if pause_noise_floor_db is None else 10 ** (pause_noise_floor_db / 20)
        )
        self._pause_noise_a = float(np.exp(-hop_s / pause_noise_time_constant_s))
        self._pause_noise_log = np.zeros(bins)  # exponential average of ln power, unnormalised
        self._pause_noise_frames = 0  # frames it has learned from
        self._pause_noise: np.ndarray | None = None  # the estimate after them
        self._pause_noise_recent = np.zeros(bins)  # the latest pause frames' power
        self._pause_noise_recent_a = float(np.exp(-hop_s / _PAUSE_NOISE_RECENT_S))
        self._pause_noise_filter = PostFilter(bins, two_step=two_step)
        # (its gains floored at pause_noise_floor_db, before the min with the gains)
        self._pause_noise_filter.floor = self._pause_noise_floor or 0.0
        self._pause_noise_need = _PAUSE_NOISE_EVIDENCE_S / hop_s  # frames
        self._pause_noise_over_minimum = pause_noise_over_minimum
        self._pauses = pause_wiener_floor_db is not None or pause_noise_floor_db is not None
        self._use_agc = agc
        #: share of speech-band bins holding speech, averaged over the last block (0..1);
        #: internal (the pause gate, the AGC): never published, it says when people talk
        self.speech_presence = 0.0
        self._samples_in = 0
        self._samples_out = 0

    # -- the Stage interface ---------------------------------------------------------
    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(
                f"array {self.geometry.name!r} captures {self.channels} channels: "
                f"expected blocks of shape (n, {self.channels}), got {block.shape}"
            )
        if block.dtype != np.int16:
            raise ValueError(f"expected int16 samples, got {block.dtype}")
        n = block.shape[0]
        self._samples_in += n
        if n == 0:
            return np.zeros(0, np.int16)
        # a long block (a whole file) is taken a slice at a time, so working memory stays
        # that of one slice however much audio arrives in one call
        step = _MAX_FRAMES_PER_PASS * self.hop
        out = np.empty((self._pending_raw.shape[0] + n) // self.hop * self.hop, np.int16)
        filled = 0
        for start in range(0, n, step):
            raw = block[start : start + step, self._mic_cols]
            if self._pending_raw.shape[0]:
                raw = np.concatenate([self._pending_raw, raw])
            piece = self._run(raw)
            out[filled : filled + piece.size] = piece
            filled += piece.size
        self._samples_out += out.size
        return out

    def flush(self) -> np.ndarray:
        """Emit the last partial hop (zero-padded) so total output == total input."""
        owed = self._samples_in - self._samples_out
        if owed <= 0:
            return np.zeros(0, np.int16)
        pad = self.hop - self._pending_raw.shape[0]
        mics = len(self._mic_idx)
        out = self._run(np.concatenate([self._pending_raw, np.zeros((pad, mics), np.int16)]))[:owed]
        self._samples_in = self._samples_out = self._samples_out + out.size
        return out

    def warm_up(self, block: np.ndarray) -> None:
        """Listen to `block` (as `process` takes it) and give nothing out, then start the
        stream afresh: what a unit that has been in the room has learned of it stays (the
        noise trackers and the noise heard in pauses, the room's SNR and the bands', the
        beamformer's statistics, the AGC's gain, the mics' health, the history of noise
        events), while the signal path, the trained mask and the mics' DC offsets start as
        at power-on, and no noise event or pause counts until the mask has settled again
        (events_after_s). A file's front end (`python -m edge_agent process`) warms up on
        the file's first seconds, so a short recording is processed as the unit processes
        a room it has been listening to, not as in its first seconds after power-on.

        Why the mask starts afresh: it reads the audio after the warm-up as a new stream,
        as it was trained; carried across the jump back to the block's start, its state
        could take a talker for noise for seconds (a pause after seconds of continuous
        talk did so in 1-2 % of TUNE's rooms; docs/dsp.md, "Warm-up"). The DC offsets,
        because the file starts again where a settling offset had not yet settled, and
        their estimate finds a steady one again within a few hops (DC_TIME_CONSTANT_S)."""
        self.process(block)
        mics = len(self._mic_idx)
        self._history[...] = 0.0
        self._pending_raw = np.zeros((0, mics), np.int16)
        self._overlap[...] = 0.0
        self.limiter = PeakLimiter(sample_rate=self.sample_rate)
        self._samples_in = self._samples_out = 0
        if self._mask is not None:
            self._mask.reset()
        self._start_dc(mics)
        # (the decision-directed gains' one-frame memory is of the frame before: none)
        self.postfilter.reset()
        self._pause_noise_filter.reset()
        self._pause_weight = 0.0
        self._mask_from = self._frames_seen

    def stats(self) -> dict:
        """Channel health for the unit's status: capture-channel indices of dead and
        clipping mics. No levels and no speech presence: the status travels in clear."""
        mics = self.geometry.mic_channels
        return {
            "dead_channels": [mics[i] for i in np.flatnonzero(self.health.dead)],
            "clipping_channels": [mics[i] for i in np.flatnonzero(self.health.clipping)],
        }

    # -- internals -------------------------------------------------------------------
    def _update_depths(self, band_powers: list, low_powers: list) -> tuple[list, list]:
        """The enhancement depth of each of a run of frames from the speech band's long-term
        SNR (depth.py), and the depth of the high-pass (below ~100 Hz). The post-filter's
        floor, the frame gates and the beamformer's departure from the reference mic all
        scale with the depth: in a clean room the front end is transparent, since there is
        nothing a scribe would hear to remove and every gain that moves distorts. Takes
        the frames' power in the speech band and in the low band."""
        depths = self.room.run(band_powers)
        self.snr_db = self.room.snr_db
        # the mask caps the depth until the floor has seen its window: up to this frame of
        # the call (counted as the floor counts: frames from the start read a 30 dB room of
        # continuous talk at full depth in the gap between the two)
        self._early_until = self.room.before_window(len(band_powers))
        # the low band is noisy if the room is, or if rumble buries its own low end
        lows = [max(d, low) for d, low in zip(depths, self.low_room.run(low_powers), strict=True)]
        return depths, lows

    def _cap_bands(
        self, bands_depths: list, held: list, early: list, start: int, early_until: list
    ) -> list:
        """The bands' depths for a segment's frames (one list a band), capped: by the mask's
        reading of the room (`early`, its depth a frame) until the band's floor has seen its
        window (`early_until`: a band's frames of the call before that), and, in the bands
        that overlap the speech band the mask reads, by its held reading (`held`). `start`
        is the segment's first frame in the call."""
        hold = self._mask_hold and min(held) < 1.0
        capped = []
        for own, overlaps, until in zip(bands_depths, self._band_held, early_until, strict=True):
            before = until - start  # (frames of the segment before the band's window)
            if self._band_early_cap and before > 0:
                own = [min(d, cap) for d, cap in zip(own[:before], early, strict=False)] + own[
                    before:
                ]
            if hold and overlaps:
                own = [min(d, cap) for d, cap in zip(own, held, strict=True)]
            capped.append(own)
        return capped

    def _band_gains(
        self, talker: np.ndarray, depths: list, bands_depths: list
    ) -> np.ndarray | None:
        """The post-filter's gains (T, K) where bands go deeper than the speech band: the
        mask floored at mask_floor_db x depth and blended toward 1 by the depth, each
        region's depth the speech band's (T, a list) or, inside a band, the deeper of it and
        the band's own (bands x T). None if no band went deeper than the speech band: its
        depth then holds everywhere."""
        if max(max(d) for d in bands_depths) <= min(depths):
            return None  # (at full depth, every frame of a noisy room: no need to look)
        own = np.array(bands_depths)
        speech = np.array(depths)
        if not (own > speech).any():
            return None
        widths = self._region_widths
        regions = np.repeat(speech[:, None], len(widths), axis=1)
        regions[:, self._band_regions] = np.maximum(speech[:, None], own.T)
        floors = np.repeat(10 ** (regions * (self._mask_floor_db / 20)), widths, axis=1)
        return _mask_at_depth(talker, floors, np.repeat(regions, widths, axis=1), out=floors)

    def _pause_weights(self, presence: list, above_floor: list, first_frame: int) -> list:
        """How far each frame of a segment is into a pause (0..1): a frame without speech
        (the pause gate's presence, and the speech band within `pause_wiener_above_floor`
        times the tracked noise floor's power, so a soft voice the mask is unsure of is not a
        pause) moves it toward 1, eased in over ~50 ms like the pause gate; speech sets it to
        0 at once (the decision-directed gain lags an onset). Not before the mask has settled
        (2 s, as the events): a stream that opens with a talker has the tracker take the
        talker for the floor and the mask unsure of it, and the talker went 12 dB down.
        `first_frame` is the segment's first frame's index since the start."""
        weights = []
        w = self._pause_weight
        settled_at = self._mask_from + self._events_after
        for k, (p, r) in enumerate(zip(presence, above_floor, strict=True)):
            if (
                p >= self._pause_presence
                or r >= self._pause_above_floor
                or first_frame + k < settled_at
            ):
                w = 0.0
            else:
                w += self._gate_rate * (1.0 - w)
            weights.append(w)
        self._pause_weight = w
        return weights

    def _pause_wiener_gains(
        self, gains: np.ndarray, wiener: np.ndarray, depths: list, weights: list
    ) -> bool:
        """Steady noise out of the pauses, in rooms the depth leaves alone: in a pause (each
        frame's weight, _pause_weights) the gains go down to the decision-directed Wiener gain
        on the tracked noise, floored at `pause_wiener_floor_db` x (1 - depth): what stands
        clear of the floor, a reverberant tail, stays, and at full depth the mask has already
        done it. In place; True if any frame had a weight."""
        assert self._pause_wiener is not None
        if not any(weights):
            return False
        floor = 10 ** (self._pause_wiener * (1.0 - np.array(depths)) / 20)
        target = np.minimum(gains, np.maximum(wiener, floor[:, None]))
        gains -= np.array(weights)[:, None] * (gains - target)
        return True

    def _pause_noise_gains(
        self,
        gains: np.ndarray,
        powers: np.ndarray,
        tracked: np.ndarray,
        replaced: list,
        weights: list,
    ) -> bool:
        """Steady noise out of every frame, speech included, at any depth: the gains go down
        to the decision-directed Wiener gain on the noise heard in pauses, floored at
        `pause_noise_floor_db`. That noise is learned only deep in pauses (_PAUSE_NOISE_FROM),
        as an exponential average of the log power over `pause_noise_time_constant_s` raised
        by Euler's constant: a steady noise's power, which the bursts of an intermittent one
        barely move. Never above the tracked noise floor (`tracked`, T x K), which follows a
        noise that stops within a second or two. Why not the tracked floor alone: in a clean
        room it holds the talker's reverberant tails, and its Wiener gain in speech cost 8 dB
        SI-SDR at 30 dB; the noise deep in the pauses is the room's. Lowered to
        `pause_noise_over_minimum` times the tracker's minimum-statistics floor each time that
        floor is replaced (`replaced`: (frame, the new floor) for those of the segment;
        PAUSE_NOISE_OVER_MINIMUM): a noise that stops under talk without a pause. Eased in
        over the first `_PAUSE_NOISE_EVIDENCE_S` of pauses learned. In place; True if it
        applied to any frame."""
        assert self._pause_noise_floor is not None
        a, a_recent = self._pause_noise_a, self._pause_noise_recent_a
        before = learned = self._pause_noise_frames  # (deep pause frames learned from)
        noise, recent = self._pause_noise, self._pause_noise_recent
        deep = [j for j, w in enumerate(weights) if w >= _PAUSE_NOISE_FROM]
        if noise is None and not deep:
            return False  # (nothing heard in a pause yet)
        frames = len(weights)
        need = self._pause_noise_need
        trusted = before >= need  # (in full, from the start of the segment)
        had = noise is not None
        first = 0 if had else deep[0]
        # where the tracker replaced its minimum-statistics floor, the estimate is lowered to
        # `over` times it wherever it is above
        over = self._pause_noise_over_minimum
        lowered = dict(replaced) if over is not None else {}
        changes = sorted({*deep, *lowered})
        if changes:
            # the estimate after each frame: it moves only in the frames of `changes`
            levels = [noise] if had else []
            log_mean = self._pause_noise_log
            logs = dict(zip(deep, np.log(powers[deep] + 1e-30), strict=True))
            for j in changes:
                if noise is not None and j in lowered:
                    # a bin quieter for a whole sub-window than the noise / `over` says the
                    # noise has fallen: the estimate and its log average go down to it (they
                    # rise again only as pauses teach them)
                    ceiling = over * lowered[j]
                    log_ceiling = np.log(ceiling)
                    log_ceiling -= _EULER_GAMMA
                    log_ceiling *= 1.0 - a**learned
                    log_mean = np.minimum(log_mean, log_ceiling)
                    noise = np.minimum(noise, ceiling)
                if j in logs:
                    log_mean = a * log_mean + (1.0 - a) * logs[j]
                    # (the first pause frame is its own recent average)
                    recent = (
                        a_recent * recent + (1.0 - a_recent) * powers[j] if learned else powers[j]
                    )
                    learned += 1
                    noise = np.exp(log_mean * (1.0 / (1.0 - a**learned)) + _EULER_GAMMA)
                    np.minimum(noise, _PAUSE_NOISE_RECENT_OVER * recent, out=noise)
                if j >= first:
                    levels.append(noise)
            self._pause_noise_log, self._pause_noise_frames = log_mean, learned
            self._pause_noise, self._pause_noise_recent = noise, recent
            # how many changes each frame follows (it included): its row of levels, less
            # one if the segment began with no estimate
            at = [j for j in changes if j >= first]
            passed = np.searchsorted(np.array(at, np.intp), np.arange(first, frames), "right")
            estimate = np.minimum(np.array(levels)[passed - (0 if had else 1)], tracked[first:])
        else:
            assert noise is not None  # (returned above if nothing was heard yet)
            estimate = np.minimum(noise, tracked)  # (the same estimate throughout)
        np.maximum(estimate, _POWER_FLOOR, out=estimate)  # (digital silence: no 0 / 0)
        g = self._pause_noise_filter.run(powers[first:], estimate)  # (floored at the floor)
        now = gains[first:]
        if trusted:
            np.minimum(g, now, out=now)
            return True
        np.minimum(g, now, out=g)
        # eased in: each frame by its own trust, the same arithmetic however the frames were
        # cut into segments (a frame trusted in full takes g as it is): by what it had
        # learned, the deep frames it follows, it included
        followed = np.searchsorted(np.array(deep, np.intp), np.arange(first, frames), "right")
        trust = (before + followed) * (1.0 / need)
        partial = trust < 1.0
        if partial.any():
            g[partial] = now[partial] - trust[partial, None] * (now[partial] - g[partial])
        now[...] = g
        return True

    def _looseness(self) -> float:
        """How noisy the mask reads the room this frame, 0..1 on READS_NOISY_DB's scale: how
        far toward EVENTS_LOOSE and OVERRULE_LOOSE it goes. From its current reading, or
        its held one where that is higher."""
        assert self._looseness_scale is not None
        clean, per_db = self._looseness_scale
        reading = self.mask_room.snr_db
        held = self.mask_room.held_snr_db
        if held > reading:
            reading = held
        if not reading < clean:  # (a reading of nan, before the first frame: none)
            return 0.0
        looseness = (clean - reading) * per_db
        return 1.0 if looseness > 1.0 else looseness

    def _overrule(self, talker: np.ndarray, loose: list | None) -> np.ndarray:
        """How much of the Wiener gain overrules the mask, a bin (T, K): `overrule_below`'s
        ramp, moved toward OVERRULE_LOOSE's as far as `loose` says a frame (None: not)."""
        assert self._overrule_below is not None
        lo, hi, kept = self._overrule_below
        if loose is None or self._overrule_loose is None or not any(loose):
            # (np.interp: a clipped linear ramp in one call)
            return np.interp(talker, (lo, hi), (kept, 1.0))
        loose_lo, loose_hi, loose_kept = self._overrule_loose
        # each frame's ramp (from, width, its rise, kept) in Python floats, the doubles
        # numpy would give, then as one array of columns (T, 1): a few frames, few calls
        ramps = []
        for toward in loose:
            at_lo = lo + toward * (loose_lo - lo)
            at_kept = kept + toward * (loose_kept - kept)
            ramps.append((at_lo, hi + toward * (loose_hi - hi) - at_lo, 1.0 - at_kept, at_kept))
        at_lo, width, rise, at_kept = np.array(ramps).T[:, :, None]
        share = talker - at_lo
        share /= width
        np.maximum(share, 0.0, out=share)  # (= np.clip, at less call overhead)
        np.minimum(share, 1.0, out=share)
        share *= rise
        share += at_kept
        return share

    def _event_gains(
        self,
        talker: np.ndarray,
        wiener: np.ndarray,
        first_frame: int,
        loose: list | None = None,
        powers: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """The post-filter's gains in noise events (EVENTS): the mask at full depth, at each
        bin's event weight; (T, bins below events_max_hz), or (T, all bins) where a
        broadband event reaches above it; None if no bin of the segment is an event.
        `first_frame` is the segment's first frame's index since the start; `loose`, how far
        toward EVENTS_LOOSE's sureness each frame goes below events_max_hz (_looseness; None:
        none); `powers` (T, bins), the frames' power: a frame with a fricative's shape has
        its events only as far as EVENTS_FRICATIVE_DB says (None: every frame in full)."""
        early = self._mask_from + self._events_after - first_frame
        if early >= talker.shape[0] and self._events_recur is None:
            return None  # (nothing counts yet, and no history to keep)
        assert self._events is not None
        (sure, unsure), (clear_from, clear) = self._events
        kb = self._events_bins
        mask = talker[:, :kb]
        ramps = None
        unsure_from = unsure
        if loose is not None and any(loose) and self._events_loose is not None:
            # the sureness ramp a frame: from (sure, unsure) toward EVENTS_LOOSE's; each
            # frame's in Python floats (the doubles numpy would give)
            loose_sure, loose_unsure = self._events_loose
            ramps = []
            for toward in loose:
                at_sure = sure + toward * (loose_sure - sure)
                at_unsure = unsure + toward * (loose_unsure - unsure)
                ramps.append((at_unsure, at_unsure - at_sure))
            unsure_from = max(ramp[0] for ramp in ramps)
        # Most segments have no bin the mask is even unsure of noise in: no weight anywhere
        # (the ramp is 0 from its unsure end on), so no event and nothing for the history
        if not (mask < unsure_from).any():
            return None
        if ramps is not None:
            at_unsure, width = np.array(ramps).T[:, :, None]
            weight = at_unsure - mask
            weight /= width
            np.maximum(weight, 0.0, out=weight)  # (= np.clip, at less call overhead)
            np.minimum(weight, 1.0, out=weight)
        else:
            # (np.interp: a clipped linear ramp in one call)
            weight = np.interp(mask, (sure, unsure), (1.0, 0.0))
        weight *= np.interp(wiener[:, :kb], (clear_from, clear), (0.0, 1.0))
        if not weight.any():
            return None  # (no event below events_max_hz: none above it either)
        if self._events_recur is not None:
            # (the history runs from the first frame: a tone before events_after_s counts)
            self._recurrence(weight, first_frame, max(early, 0))
        if early >= talker.shape[0]:
            return None
        if early > 0:
            weight[:early] = 0.0
        if not weight.any():
            return None  # (none left that counts)
        share = self._events_broadband
        if share is not None:
            # above events_max_hz only as far as the frame's event is broadband: a share of
            # the bins from 1 kHz to there are events too (paper and keys are; a talker's
            # fricatives, which the mask takes for paper, have little below 4 kHz)
            broad = weight[:, self._events_from_bin :].mean(axis=1)
            broad *= 1.0 / share
            np.minimum(broad, 1.0, out=broad)
            if broad.any():
                high = np.interp(talker[:, kb:], (sure, unsure), (1.0, 0.0))
                high *= np.interp(wiener[:, kb:], (clear_from, clear), (0.0, 1.0))
                high *= broad[:, None]
                weight = np.concatenate([weight, high], axis=1)
                mask = talker
        if powers is not None and self._events_fricative is not None:
            weight *= self._not_fricative(powers)[:, None]
        return _mask_at_depth(mask, self._full_floor, weight)

    def _recurrence(self, weight: np.ndarray, first_frame: int, early: int = 0) -> None:
        """Weigh the frames' candidate events, `weight` (T, bins below events_max_hz), in
        place by how far each counts (EVENTS_RECUR): in full where events have come back
        near its bin, where no event has been near or around it for a while (the first of
        a sound), or where the frame's events are broadband; a run of adjacent event bins
        as far as its best bin. `first_frame`: the first frame's index since the start;
        frames before `early` are only added to the history (no event counts there yet)."""
        assert self._events_recur is not None
        if not weight.any():
            return
        rows = np.flatnonzero(weight.any(axis=1))
        a = self._recur_decay
        held = self._recur_held
        pending = self._recur_pending
        histories = np.empty((rows.size, weight.shape[1]))
        for i, row in enumerate(rows.tolist()):
            frame = first_frame + row
            # the history before this frame, leaving out the `held` frames just before it
            upto = frame - held - 1
            while pending and pending[0][0] <= upto:
                at, events = pending.pop(0)
                self._recur_history *= a ** (at - self._recur_as_of)
                self._recur_history += events
                self._recur_as_of = at
            since = max(upto - self._recur_as_of, 0)
            np.multiply(self._recur_history, a**since, out=histories[i])
            pending.append((frame, weight[row].copy()))
        counted = rows >= early
        rows, histories = rows[counted], histories[counted]
        if not rows.size:
            return
        # the events, bin by bin: (row among `rows`, bin), in order
        at_row, at_bin = np.nonzero(weight[rows])
        # near: the most within near_k bins (a beep's pitch may drift from one to the next)
        near = histories[at_row[:, None], self._recur_near[at_bin]].max(axis=1)
        none, full = self._events_recur
        counts = np.interp(near, (none, full), (0.0, 1.0))
        # around: the mean from near_k to far_k bins away; nothing near or around: new
        sums = np.zeros((rows.size, histories.shape[1] + 1))
        np.cumsum(histories, axis=1, out=sums[:, 1:])
        far_lo, far_hi, near_lo, near_hi = (span[at_bin] for span in self._recur_spans)
        around = sums[at_row, far_hi] - sums[at_row, far_lo]
        around -= sums[at_row, near_hi] - sums[at_row, near_lo]
        around *= self._recur_ring[at_bin]
        np.maximum(around, near, out=around)
        new_full, new_none = EVENTS_RECUR_NEW
        np.maximum(counts, np.interp(around, (new_full, new_none), (1.0, 0.0)), out=counts)
        # a run of adjacent event bins is one sound (a loud tone spreads over the bins
        # beside it): each of its bins counts as far as its best
        place = at_row * (histories.shape[1] + 1) + at_bin
        begins = np.ones(place.size, dtype=bool)
        np.not_equal(place[1:], place[:-1] + 1, out=begins[1:])
        run = np.cumsum(begins)
        run -= 1
        counts = np.maximum.reduceat(counts, np.flatnonzero(begins))[run]
        # broadband (paper and keys, not a tone): by the share of bins from 1 kHz with events
        lo, hi = EVENTS_RECUR_BROAD
        upper = at_bin >= self._events_from_bin
        share = np.bincount(at_row[upper], weights=weight[rows[at_row[upper]], at_bin[upper]])
        share = np.concatenate([share, np.zeros(rows.size - share.size)])
        share *= 1.0 / (weight.shape[1] - self._events_from_bin)
        np.maximum(counts, np.interp(share, (lo, hi), (0.0, 1.0))[at_row], out=counts)
        weight[rows[at_row], at_bin] *= counts

    def _not_fricative(self, powers: np.ndarray) -> np.ndarray:
        """(T,) how far each frame's events count, 0..1, by its shape: 1 where its power
        above events_max_hz is at most EVENTS_FRICATIVE_DB's first value over that from 1
        kHz to events_max_hz, 0 from the second (a fricative's shape), linear in dB
        between."""
        assert self._events_fricative is not None
        full, none = self._events_fricative
        above = powers[:, self._events_bins :].mean(axis=1)
        below = powers[:, self._events_from_bin : self._events_bins].mean(axis=1)
        np.maximum(below, _POWER_FLOOR, out=below)
        brighter_db = 10.0 * np.log10(np.maximum(above, _POWER_FLOOR) / below)
        return np.clip((none - brighter_db) * (1.0 / (none - full)), 0.0, 1.0)

    def _combine_depth(self, readings: list, j: int) -> None:
        """Combine the noise floor's depth (set by _update_depths) with the mask's reading of
        the room's SNR for frame j (`readings`, a frame each: MaskSnr.update's arguments), as
        `depth_source` says."""
        d = self.mask_room.update(*readings[j])
        if self._depth_source == "mask":
            self.depth = d
        elif self._depth_source == "max":
            self.depth = max(d, self.depth)
        elif self._depth_source == "min" or j < self._early_until:
            self.depth = min(d, self.depth)
        if self._mask_hold:
            self.depth = min(self.depth, self.mask_room.held_depth)

    def _start_dc(self, mics: int) -> None:
        """The DC offsets' estimate as at power-on: no hop heard yet."""
        self._dc = [0.0] * mics
        self._dc_hops = 0
        self._dc_var = 0.0  # the reference mic's hop means' variance about the estimate
        self._dc_prior = 0.0  # its first hop's own variance: a prior for it

    def _dc_offsets(self, hop_sums: list, hop_vars: list, ref: int | np.ndarray) -> tuple:
        """Each mic's DC offset after each hop (T, M), from the hops' means (`hop_sums`, T
        lists of M, over the hop; `hop_vars` likewise): their running mean over the first
        `dc_time_constant_s`, a one-pole average over as long after that. Also, for the
        reference mic (`ref`: one, or one a hop), (T,), the part of it that does not stand
        out of its own uncertainty (with `dc_significance` (lo, hi): all of it up to lo
        standard errors from zero, none from hi on): what the high-pass gives back in a
        clean room goes with it. The
        standard error is the hop means' own spread about the estimate (until it is known,
        the first hop's sample variance counts as four hops of it) times the estimate's
        weight on the latest hop."""
        frames = len(hop_sums)
        unsure = np.zeros(frames)
        dc, hops, decay = self._dc, self._dc_hops, self._dc_decay
        var, prior = self._dc_var, self._dc_prior
        floor = 1.0 - decay
        gate = self._dc_significance
        # scalar arithmetic on a few mics: the same doubles as numpy's, at less cost a hop
        rows = []
        refs = [ref] * frames if isinstance(ref, int) else ref.tolist()
        per_sample = 1.0 / self.hop
        for t, sums in enumerate(hop_sums):
            ref = refs[t]
            hops += 1
            a = max(1.0 / hops, floor)
            step = [x * per_sample - d for x, d in zip(sums, dc, strict=True)]
            dc = [d + s * a for d, s in zip(dc, step, strict=True)]
            rows.append(dc)
            if gate is None:
                continue
            if hops == 1:
                prior = hop_vars[t][ref]
            s = step[ref]
            var = (1.0 - a) * (var + a * s * s)
            spread = (4.0 * prior + hops * var) / (4.0 + hops) if a > floor else var
            c = dc[ref]
            ratio = abs(c) / math.sqrt(max(spread * a, 1e-30))
            lo, hi = gate
            unsure[t] = c * (1.0 - min(1.0, max(0.0, (ratio - lo) / (hi - lo))))
        self._dc, self._dc_hops = dc, hops
        self._dc_var, self._dc_prior = var, prior
        out = np.array(rows) if rows else np.zeros((0, len(dc)))
        return out, unsure

    def _live_reference(self) -> int | np.ndarray:
        """The reference mic after each hop of the last health update (T,): itself, or while
        health says it is dead the first live mic. It is what the output is
        made from wherever the reference mic would pass (a clean room, the bins above the
        beamformer's, the low end the high-pass took). Hop by hop, so the hand-over does not
        depend on how the caller cut its blocks; the reference mic itself (an int) while it is
        alive throughout, as nearly always."""
        dead = self.health.dead_hops
        if not self.health.any_dead or not dead[:, self._ref].any():
            return self._ref
        alive = ~dead
        return np.where(
            dead[:, self._ref] & alive.any(axis=1), np.argmax(alive, axis=1), self._ref
        )

    def _alive_mics(self, hop: int) -> np.ndarray:
        return ~self.health.dead_hops[hop]

    def _run(self, raw: np.ndarray) -> np.ndarray:
        hop = self.hop
        hops = raw.shape[0] // hop
        used = hops * hop
        # (a copy: raw may be a view of the caller's buffer, which it may reuse)
        self._pending_raw = raw[used:].copy()
        if hops == 0:
            return np.zeros(0, np.int16)
        pieces = []
        for start in range(0, hops, _MAX_FRAMES_PER_PASS):
            stop = min(hops, start + _MAX_FRAMES_PER_PASS)
            pieces.append(self._run_hops(raw[start * hop : stop * hop]))
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        out = self.limiter.process(out)
        out *= 32768.0
        np.rint(out, out=out)
        # (no clip to int16's range: the limiter holds every sample to its ceiling, 0.89 of
        # full scale)
        return out.astype(np.int16)

    def _fill(
        self,
        out_spectra: np.ndarray,
        segment: tuple,
        removed_low: np.ndarray,
        dc_unsure: np.ndarray,
    ) -> None:
        """The output spectra of a segment's frames (start, stop, gains, scales, beam,
        low_kept; the scales and low_kept lists, a frame each): the beam times the gains and
        scales, and the low end the high-pass took, given back as far as the low band is
        clean."""
        start, stop, gains, scales, beam, low_kept = segment
        if any(scale != 1.0 for scale in scales):  # (times 1 changes no bit)
            gains *= np.array(scales)[:, None]
        np.multiply(gains, beam, out=out_spectra[start:stop])
        if any(low_kept):  # (nothing to give back in a noisy room)
            low = self._low_bins
            kept = np.array(low_kept)
            out_spectra[start:stop, :low] += kept[:, None] * removed_low[start:stop]
            if self._dc_significance is not None:
                # the part of the DC estimate that is not surely an offset goes back with
                # the low end: at depth 0 the reference mic passes unchanged
                kept_dc = kept * dc_unsure[start:stop]
                out_spectra[start:stop] += kept_dc[:, None] * self._window_spectrum

    def _run_hops(self, raw: np.ndarray) -> np.ndarray:
        """Whole hops in: raw int16 (n, mics). Processed float out."""
        hop, n = self.hop, self.frame_len
        frames_count = raw.shape[0] // hop
        mics = raw.shape[1]
        # the history and the hops at full scale = 1, channel by channel (M, samples)
        signal = np.empty((mics, n - hop + raw.shape[0]))
        signal[:, : n - hop] = self._history
        np.multiply(raw.T, 1.0 / 32768.0, out=signal[:, n - hop :])
        self._history = signal[:, -(n - hop) :]
        self.health.update(  # (its verdicts, hop sums and powers are read below)
            raw, signal[:, n - hop :].reshape(mics, frames_count, hop)
        )
        # the frames as a strided view of the signal (M, T, N): no copy, no index array
        stride_m, stride_t = signal.strides
        frames = np.ndarray(
            (mics, frames_count, n), signal.dtype, signal, 0, (stride_m, stride_t * hop, stride_t)
        )
        # remove each mic's DC offset (a constant per frame, from the hop sums channel health
        # has just computed) before the window. Only the offset, not each frame's own mean,
        # which is the talker's low end
        ref = self._live_reference()
        offsets, dc_unsure = self._dc_offsets(self.health.hop_sums, self.health.hop_power, ref)
        windowed = frames - offsets.T[:, :, None]
        windowed *= self._window
        spectra = np.fft.rfft(windowed, axis=-1).transpose(1, 2, 0)  # (T, K, M)
        low = self._low_bins
        removed_low = _at(spectra[:, :low], ref) * self._highpass_removes
        spectra[:, :low] *= self._highpass_gain[:low, None]  # it is 1 above them

        listens = self._mask is not None or self._adaptive_depth
        if listens:
            # the mask and the room's readings listen to the (live) reference mic
            ref_spec = _at(spectra, ref)
            ref_power = ref_spec.real**2 + ref_spec.imag**2
            if self._frames_seen == self._mask_from:
                # the stream's first frame (at power-on, and after a warm-up): its first half
                # is the zeros before the stream, which less a mic's DC offset are a step the
                # size of the offset, broadband. The mask's state is born on that frame: with
                # every mic 2000 LSB off zero it read a 30 dB room's talker as noise for ~10 s
                # (-2 to -5 dB SI-SDR). The mask and the room's readings hear the stream's own half
                first_ref = ref if isinstance(ref, int) else int(ref[0])
                first = frames[first_ref, 0] - offsets[0, first_ref]
                first[: n - hop] = 0.0
                first *= self._window
                first_spec = np.fft.rfft(first)
                first_spec[:low] *= self._highpass_gain[:low]
                ref_power[0] = first_spec.real**2 + first_spec.imag**2
        if self._mask_every_frame and self._mask is not None:
            talker_mask = self._mask(ref_power)
            if self._mask_depth:
                # the talkers' and the noise's power in the speech band, as the mask splits it
                in_band = talker_mask[:, self._band]
                band_power = ref_power[:, self._band]
                # (each frame's reading: its talkers' power, its noise's, and the weight of each)
                if self._mask_snr_split is None:
                    mask_speech = np.einsum("tk,tk,tk->t", in_band, in_band, band_power).tolist()
                    in_band = 1.0 - in_band
                    mask_noise = np.einsum("tk,tk,tk->t", in_band, in_band, band_power).tolist()
                    readings = [
                        (s, z, 1.0, 1.0) for s, z in zip(mask_speech, mask_noise, strict=True)
                    ]
                else:
                    # hard decisions: the mean power of the bins the mask is sure hold talkers
                    # against that of the bins it is sure hold noise. Both a frame's in one
                    # array (T, 2, bins): its rows are summed as the frame's own would be
                    below = self._mask_snr_split
                    sure = np.empty((in_band.shape[0], 2, in_band.shape[1]), bool)
                    np.greater(in_band, 1.0 - below, out=sure[:, 0])
                    np.less(in_band, below, out=sure[:, 1])
                    powers_split = (band_power[:, None, :] * sure).sum(axis=2).tolist()
                    readings = [
                        (s, z, n_s, n_z)
                        for (s, z), (n_s, n_z) in zip(
                            powers_split, sure.sum(axis=2).tolist(), strict=True
                        )
                    ]
        if listens:
            # each frame's power in the speech band (summed row by row, as the frame-by-frame
            # sums would be): the room's reading, and the pauses' while the beam is the
            # reference mic
            band_powers = ref_power[:, self._band].sum(axis=1).tolist()
        if self._adaptive_depth:
            # the room's readings, frame by frame: the speech band's, the low band's and each
            # band of BAND_DEPTHS'
            call_room, call_low = self._update_depths(
                band_powers, ref_power[:, :low].sum(axis=1).tolist()
            )
            call_bands = [
                room.run(ref_power[:, lo:hi].sum(axis=1).tolist())
                for room, (lo, hi) in zip(self._band_rooms, self._band_bins, strict=True)
            ]
            bands_early = [room.before_window(frames_count) for room in self._band_rooms]
        out_spectra = np.empty(spectra.shape[:2], complex)
        # whether every frame so far passes the reference mic as it came (depth 0 in both
        # bands, the beamformer on the reference mic, no AGC or pause gain): then the
        # synthesis is the input frame itself, minus the DC offset, and needs no transform
        transparent = True
        unfilled: list = []
        presences = []
        band, band_scale = self._band, self._band_scale
        beamformer, tracker, postfilter, agc = (
            self.beamformer,
            self.tracker,
            self.postfilter,
            self.agc,
        )
        start = 0
        while start < frames_count:
            # the frames up to the next weight update share one set of weights
            stop = min(frames_count, start + beamformer.frames_to_update)
            segment = spectra[start:stop, : self._bf_bins]
            passes_reference = beamformer.passes_reference
            seg_ref = ref if isinstance(ref, int) else ref[start:stop]
            beam_band = None  # (the beam's power in the speech band, a frame, if known)
            if passes_reference and listens:
                # the beam is the (live) reference mic throughout: its spectra and powers as
                # computed above (read only from here on)
                beam, powers = ref_spec[start:stop], ref_power[start:stop]
                beam_band = band_powers[start:stop]
            else:
                if passes_reference and not isinstance(seg_ref, int):
                    # (weights on a dead reference mic, not yet re-solved without it)
                    beamformed = _at(segment, seg_ref)
                else:
                    beamformed = beamformer.apply(segment)
                as_reference = _at(spectra[start:stop, self._bf_bins :], seg_ref)
                beam = np.concatenate([beamformed, as_reference], axis=1)  # (frames, K)
                powers = beam.real**2 + beam.imag**2
            array_spps = None
            if self._mask_every_frame:
                array_spps = talker_mask[start:stop, : self._bf_bins]
            elif self._mask is not None:
                array_spps = ref_power[start:stop]  # the beamformer runs the mask on them
            elif self._beamform and not beamformer.spatial_presence_ready:
                # bootstrap: SPP of the mean periodogram over the mics
                array_powers = np.einsum("tkm,tkm->tk", segment.real, segment.real) + np.einsum(
                    "tkm,tkm->tk", segment.imag, segment.imag
                )
                array_spps = np.stack([self.array_tracker.update(pw) for pw in array_powers])
            count = stop - start
            # (a frame's scalars in lists: a segment is a few frames, and numpy's arrays are
            # made of them only where a computation needs one)
            depths = [1.0] * count
            low_kept = [0.0] * count
            # whether bands or noise events changed the segment's gains from what its depth
            # gives: then its frames are not as they came, even at depth 0
            reshaped = False
            if self._adaptive_depth:
                room_depths, low_depths = call_room[start:stop], call_low[start:stop]
                bands_depths = [d[start:stop] for d in call_bands]
            if self._mask_gain:
                talker = talker_mask[start:stop]
                # the tracked floor after each frame: the Wiener gain's (below) and the
                # pauses' (_pause_weights)
                noise_rows = np.empty_like(talker)
                # (the tracker's minimum-statistics floors it replaced: frame, floor)
                replaced: list = []
                if self._mask_or_wiener:
                    tracker.run(powers, noise_rows, replaced)
                    postfilter.floor = 0.0  # (the mask's own floor applies after the overrule)
                held = [1.0] * count  # (the mask's held reading's cap on the bands)
                # how noisy the mask reads the room, a frame (_looseness)
                loose = [0.0] * count if self._looseness_scale is not None else None
                early = [1.0] * count  # (the mask's reading's, before a band's window)
                for j in range(count):  # the room's SNR, frame by frame (scalars)
                    if self._adaptive_depth:
                        self.depth = room_depths[j]
                        low_kept[j] = 1.0 - low_depths[j]
                        if self._mask_depth:
                            self._combine_depth(readings, start + j)
                            held[j] = self.mask_room.held_depth
                            if loose is not None:
                                loose[j] = self._looseness()
                            early[j] = self.mask_room.depth
                    depths[j] = self.depth
                event_gains = None
                steady = None  # (the Wiener gain for pauses: only with the overrule's)
                if self._mask_or_wiener:
                    # (the decision-directed recursion over the segment's frames at once)
                    wiener = postfilter.run(powers, noise_rows)
                    if self._events is not None:
                        event_gains = self._event_gains(
                            talker, wiener, self._frames_seen + start, loose, powers
                        )
                    # where the signal stands clear of the tracked noise floor the Wiener
                    # gain is ~1: it overrules a mask unsure of weak speech (reverberant
                    # tails, soft syllables), which is what costs clean rooms. Only half of
                    # it where the mask is sure the bin is noise: paper and keys stand as
                    # clear of the floor as speech does (and the half that is left keeps a
                    # voice the mask does not know from vanishing)
                    steady = wiener.copy() if self._pause_wiener is not None else None
                    if self._overrule_below is not None:
                        kept = self._overrule(talker, loose)
                        fresh = self._mask_from + self._mask_fresh - (self._frames_seen + start)
                        if fresh > 0:
                            # a mask in its first half second is sure of nothing yet: it
                            # reads a talker as noise there (after a warm-up the depth
                            # would let that cut the talker: docs/dsp.md, "Warm-up")
                            kept[:fresh] = 1.0
                        wiener *= kept
                    talker = np.maximum(talker, wiener)
                presence = [
                    min(c * (band_scale * 4.0), 1.0)
                    for c in (talker[:, band] > 0.5).sum(axis=1).tolist()
                ]
                if self._band_rooms:
                    bands_depths = self._cap_bands(bands_depths, held, early, start, bands_early)
                band_gains = (
                    self._band_gains(talker, depths, bands_depths)
                    if self._band_rooms
                    else None
                )
                reshaped = band_gains is not None
                if band_gains is not None:
                    gains = band_gains
                elif not any(depths):  # a clean room: exactly what the blend below gives there
                    gains = np.empty_like(talker)
                    gains.fill(1.0)
                else:
                    # the trained mask is the post-filter: floored at mask_floor_db x depth
                    # and blended toward 1 by the depth, so a clean room passes untouched
                    at_depth = np.array(depths)[:, None]
                    floors = 10 ** (at_depth * (self._mask_floor_db / 20))
                    gains = _mask_at_depth(talker, floors, at_depth)
                if event_gains is not None:
                    kb = event_gains.shape[1]
                    np.minimum(gains[:, :kb], event_gains, out=gains[:, :kb])
                    reshaped = True
                if self._mask_or_wiener and self._pauses:
                    if beam_band is None:
                        beam_band = powers[:, band].sum(axis=1).tolist()
                    above_floor = [
                        p / max(floor, 1e-30)
                        for p, floor in zip(
                            beam_band, noise_rows[:, band].sum(axis=1).tolist(), strict=True
                        )
                    ]
                    weights = self._pause_weights(presence, above_floor, self._frames_seen + start)
                    if self._pause_noise_floor is not None:
                        reshaped = self._pause_noise_gains(
                            gains, powers, noise_rows, replaced, weights
                        ) or (
                            reshaped
                        )
                    if steady is not None:
                        reshaped = self._pause_wiener_gains(gains, steady, depths, weights) or (
                            reshaped
                        )
            else:
                spps = np.empty((count, powers.shape[1]))
                gains = np.empty_like(spps)
                for j in range(count):  # the recursive per-bin part, frame by frame
                    tracker.update(powers[j], out=spps[j])
                    if self._adaptive_depth:
                        self.depth = room_depths[j]
                        low_kept[j] = 1.0 - low_depths[j]
                        if self._mask_depth:
                            self._combine_depth(readings, start + j)
                    # the depth is also how far the tracker's noise is believed: in a clean
                    # room what it calls noise is mostly reverberant speech
                    noise_psd = tracker.noise_psd
                    postfilter.floor = 10 ** (self.depth * self._floor_db / 20)
                    if self.depth < 1.0:
                        noise_psd = noise_psd * max(self.depth, 1e-6)
                    postfilter.gain(powers[j], noise_psd, out=gains[j])
                    depths[j] = self.depth
                # share of speech-band bins confidently holding speech: ~0.01 in steady noise
                presence = [
                    min(c * (band_scale * 4.0), 1.0)
                    for c in (spps[:, band] > 0.9).sum(axis=1).tolist()
                ]
            if self._use_agc and max(presence) >= agc.speech_threshold:
                frame_power = (
                    self._power_scale * np.einsum("tk,tk,tk->t", gains, gains, powers)
                ).tolist()
            else:
                frame_power = [0.0] * count  # (the AGC reads a frame's power only in speech)
            scales = [1.0] * count
            as_is = transparent and passes_reference and min(low_kept) == 1.0
            for j, (p, fp, depth) in enumerate(
                zip(presence, frame_power, depths, strict=True)
            ):
                wanted = self._pause_gain**depth if p < self._pause_presence else 1.0
                self._gate += self._gate_rate * (wanted - self._gate)
                if abs(self._gate - wanted) < 1e-12:
                    self._gate = wanted  # (else it stops an ulp short of 1 in a clean room)
                scale = (agc.update(fp, p) if self._use_agc else 1.0) * self._gate
                scales[j] = scale
                as_is = as_is and scale == 1.0 and depth == 0.0
            as_is = as_is and not reshaped
            presences.extend(presence)
            fill = (start, stop, gains, scales, beam, low_kept)
            if as_is:
                unfilled.append(fill)  # (needed only if a later segment is not as it came)
            else:
                transparent = False
                for pending in [*unfilled, fill]:
                    self._fill(out_spectra, pending, removed_low, dc_unsure)
                unfilled.clear()
            if self._beamform:
                beamformer.depth = max(0.0, self.depth - self._bf_from) / (1.0 - self._bf_from)
                beamformer.observe(
                    segment,
                    array_spps,
                    partial(self._alive_mics, stop - 1),
                )
            else:
                beamformer._queued = (beamformer._queued + count) % beamformer.update_frames
            start = stop
        self.speech_presence = sum(presences) / frames_count
        self._frames_seen += frames_count

        if transparent and self._as_is_shortcut:
            # what the inverse transform would give: the reference mic's frames as analysed,
            # less the DC offset that is surely one, times the synthesis window (the same
            # numbers to rounding, at a fraction of the cost; most of a clean room's frames)
            dc = _at(offsets, ref) - dc_unsure
            frames = _at(frames.transpose(1, 2, 0), ref) - dc[:, None]
            frames *= self._window_squared
            self.frames_as_is += frames_count
        else:
            for pending in unfilled:
                self._fill(out_spectra, pending, removed_low, dc_unsure)
            frames = np.fft.irfft(out_spectra, n=n, axis=1) * self._window
        out = frames[:, :hop].copy()
        out[0] += self._overlap
        out[1:] += frames[:-1, hop:]
        self._overlap = frames[-1, hop:]  # (frames is this call's own: a view will do)
        return out.reshape(-1)


def _at(x: np.ndarray, ref: int | np.ndarray) -> np.ndarray:
    """x (T, ..., M) at the reference mic: one for every frame, or one a frame (T,)."""
    if isinstance(ref, int):
        return x[..., ref]
    return np.take_along_axis(x, ref.reshape((-1,) + (1,) * (x.ndim - 1)), axis=-1)[..., 0]


def make_array_pipeline(
    *, channels: int, sample_rate: int, array: str | None = None
) -> ArrayPipeline:
    """Build the array front end for `array` (a name in hardware/arrays/)."""
    geometry = load_array(array)
    if channels != geometry.capture_channels:
        raise ValueError(
            f"array {geometry.name!r} captures {geometry.capture_channels} channels "
            f"(mics on {list(geometry.mic_channels)}), but the unit is configured for {channels}: "
            "fix the capture channel count or the array name in the unit config"
        )
    if sample_rate != 16000:
        raise ValueError(
            f"the array front end runs at 16000 Hz, got {sample_rate}: resample in capture"
        )
    return ArrayPipeline(geometry, sample_rate=sample_rate)
