"""Audio chunk bodies: PCM and Opus. The one owner of how a sealed audio body is laid out.

Spec: docs/protocol.md, "Audio codecs". Test vectors: tests/vectors/opus_chunks.json.

- `pcm_s16le` (envelope codec 1): mono little-endian int16, `2 x sample_count` bytes.
- `opus` (envelope codec 2): whole Opus packets (RFC 6716), 20 ms each, one after the
  other, each preceded by its length coded as in RFC 6716 section 3.2.1 (one byte below
  252, else two: `252 + (n - 252) % 4`, then `(n - 252) // 4`). A chunk of `sample_count`
  samples carries `ceil(sample_count / frame)` packets; the encoder pads a short last
  frame with silence and the decoder returns exactly `sample_count` samples. Every chunk
  is whole packets, so a receiver can start decoding at any chunk.

The encoder is stateful across the chunks of a session (Opus predicts from the previous
frame). The decoder keeps state across consecutive chunks; when chunks are missing it
runs Opus packet-loss concealment over the hole (up to `PLC_MAX_MS`) and returns the
concealment beside the chunk, so playback can bridge the hole and a file writer can drop
it; past that, or when a chunk comes out of order, it starts afresh, exactly as a decoder
that joins the stream at that chunk.

libopus is reached through `opuslib_next` (ctypes over the system's libopus: Debian's
libopus0), imported only when an Opus chunk is first coded (docs/codec.md says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scribelink import envelope as env

CODECS = ("pcm_s16le", "opus")
SAMPLE_RATE = 16000  # wideband: the unit's rate
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320
BITRATES = (12000, 16000, 24000, 32000, 48000)  # what a clinic may choose (b/s)
DEFAULT_BITRATE = 16000  # what the size bars allow with speech kept good (docs/codec.md)
DEFAULT_COMPLEXITY = 9  # libopus' own default; measured in docs/benchmarks.md (bench:codec)
MAX_PACKET = 1275  # RFC 6716: the largest frame
PLC_MAX_MS = 120  # a hole this short is concealed; a longer one starts the decoder afresh


class CodecError(ValueError):
    """A body that does not decode (bad layout, or a packet libopus refuses)."""


class CodecUnavailable(RuntimeError):
    """libopus or its binding is missing on this machine."""


def codec_id(name: str) -> int:
    try:
        return env.CODEC_IDS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}: one of {', '.join(CODECS)}") from None


def _opus():
    try:
        import opuslib_next
        import opuslib_next.api.decoder
        import opuslib_next.api.encoder
    except ImportError as e:
        raise CodecUnavailable(
            "Opus needs the opuslib-next package (pip install 'scribelink[unit]' or "
            "'[relay]')") from e
    except Exception as e:
        raise CodecUnavailable(
            f"Opus needs libopus: install Debian's libopus0 (apt-get install libopus0): {e}"
        ) from e
    return opuslib_next


def opus_available() -> bool:
    try:
        _opus()
    except CodecUnavailable:
        return False
    return True


# ---------------------------------------------------------------------------- body layout


def pack_packets(packets: list[bytes]) -> bytes:
    """Opus packets -> an Opus chunk body (each packet length-prefixed, RFC 6716 3.2.1)."""
    out = bytearray()
    for p in packets:
        n = len(p)
        if not 0 < n <= MAX_PACKET:
            raise CodecError(f"an Opus packet is 1..{MAX_PACKET} bytes, got {n}")
        if n < 252:
            out.append(n)
        else:
            out += bytes((252 + (n - 252) % 4, (n - 252) // 4))
        out += p
    return bytes(out)


def unpack_packets(body: bytes) -> list[bytes]:
    """An Opus chunk body -> its packets. Raises CodecError on a malformed body."""
    packets, i = [], 0
    while i < len(body):
        n = body[i]
        i += 1
        if n >= 252:
            if i >= len(body):
                raise CodecError("Opus body ends inside a packet length")
            n += 4 * body[i]
            i += 1
        if n == 0 or i + n > len(body):
            raise CodecError("Opus body: packet length 0 or past the end of the body")
        packets.append(body[i : i + n])
        i += n
    if not packets:
        raise CodecError("Opus body holds no packet")
    return packets


def frames_for(sample_count: int) -> int:
    return -(-sample_count // FRAME_SAMPLES)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CodecSettings:
    """What a unit encodes with: the clinic's choice (the relay's `config` message)."""

    codec: str = "opus"
    bitrate: int = DEFAULT_BITRATE
    complexity: int = DEFAULT_COMPLEXITY
    fec: bool = False  # in-band FEC: costs bits, helps only with loss the link does not repair
    dtx: bool = False  # DTX: measured in bench:codec; it changes nothing on room noise

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 6000 <= self.bitrate <= 64000:
            raise ValueError(f"bitrate must be 6000..64000 b/s, got {self.bitrate}")
        if not 0 <= self.complexity <= 10:
            raise ValueError(f"complexity must be 0..10, got {self.complexity}")

    def check_chunk_ms(self, chunk_ms: int) -> None:
        if self.codec == "opus" and chunk_ms % FRAME_MS:
            raise ValueError(f"with Opus, chunk_ms must be a multiple of {FRAME_MS} ms, "
                             f"got {chunk_ms}")


# ---------------------------------------------------------------------------- encoders


class PcmEncoder:
    codec = env.CODEC_PCM_S16LE

    def encode(self, pcm: np.ndarray) -> bytes:
        return np.ascontiguousarray(pcm, dtype="<i2").tobytes()


class OpusEncoder:
    """One session's encoder: 16 kHz mono, VOIP application, voice signal. Stateful."""

    codec = env.CODEC_OPUS

    def __init__(self, settings: CodecSettings, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Opus chunks are {SAMPLE_RATE} Hz, got {sample_rate}")
        o = _opus()
        self._api = o.api.encoder
        self._enc = o.Encoder(SAMPLE_RATE, 1, "voip")
        self._enc.bitrate = settings.bitrate
        self._enc.complexity = settings.complexity
        self._enc.inband_fec = int(settings.fec)
        self._enc.packet_loss_perc = 10 if settings.fec else 0
        self._enc.dtx = int(settings.dtx)
        self._enc.signal = o.SIGNAL_VOICE
        self._enc.max_bandwidth = o.BANDWIDTH_WIDEBAND
        self.lookahead = int(self._enc.lookahead)  # samples the decoded stream lags by
        self._silence = np.zeros(FRAME_SAMPLES, "<i2")

    def encode(self, pcm: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(pcm, dtype="<i2")
        packets = []
        for off in range(0, len(pcm), FRAME_SAMPLES):
            frame = pcm[off : off + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:  # a short last chunk: pad its last frame
                frame = np.concatenate([frame, self._silence[len(frame):]])
            packets.append(self._enc.encode(frame.tobytes(), FRAME_SAMPLES))
        return pack_packets(packets)


def encoder_for(settings: CodecSettings, sample_rate: int = SAMPLE_RATE):
    return OpusEncoder(settings, sample_rate) if settings.codec == "opus" else PcmEncoder()


# ---------------------------------------------------------------------------- decoders


@dataclass(frozen=True)
class Decoded:
    pcm: np.ndarray  # (sample_count,) int16: the chunk
    concealed: np.ndarray  # int16: Opus concealment of the missing chunks just before it


_EMPTY = np.zeros(0, np.int16)


class OpusDecoder:
    """One session's decoder. Feed chunks with their sequence numbers, in any order."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate != SAMPLE_RATE:
            raise CodecError(f"Opus chunks are {SAMPLE_RATE} Hz, got {sample_rate}")
        o = _opus()
        self._o = o
        self._dec = o.Decoder(SAMPLE_RATE, 1)
        self.last_seq: int | None = None
        self._chunk_frames = 0  # frames in the last whole chunk (what a missing one held)
        self.resets = 0
        self.concealed_frames = 0

    def _decode(self, packet: bytes | None) -> np.ndarray:
        data = self._o.api.decoder.decode(self._dec.decoder_state, packet,
                                          len(packet) if packet else 0, FRAME_SAMPLES,
                                          False, channels=1)
        return np.frombuffer(data, "<i2")

    def reset(self) -> None:
        self._dec.reset_state()
        self.resets += 1

    def decode(self, body: bytes, sample_count: int, seq: int | None = None) -> Decoded:
        packets = unpack_packets(body)
        if len(packets) != frames_for(sample_count):
            raise CodecError(f"{len(packets)} Opus packets for {sample_count} samples")
        concealed = _EMPTY
        if seq is not None and self.last_seq is not None and seq != self.last_seq + 1:
            missing = (seq - self.last_seq - 1) * self._chunk_frames
            if 0 < missing * FRAME_MS <= PLC_MAX_MS:
                concealed = np.concatenate([self._decode(None) for _ in range(missing)])
                self.concealed_frames += missing
            else:
                self.reset()  # a long hole, or out of order: as a decoder joining here
        try:
            out = np.concatenate([self._decode(p) for p in packets])
        except self._o.OpusError as e:
            self.reset()
            self.last_seq = None
            raise CodecError(f"libopus refused a packet: {e}") from e
        if seq is not None:
            self.last_seq = seq
        if sample_count % FRAME_SAMPLES == 0:
            self._chunk_frames = len(packets)
        return Decoded(out[:sample_count].copy(), concealed)


class PcmDecoder:
    def decode(self, body: bytes, sample_count: int, seq: int | None = None) -> Decoded:
        if len(body) != 2 * sample_count:
            raise CodecError("PCM body length does not match its sample count")
        return Decoded(np.frombuffer(body, "<i2").copy(), _EMPTY)


def decoder_for(codec: int, sample_rate: int = SAMPLE_RATE):
    if codec == env.CODEC_OPUS:
        return OpusDecoder(sample_rate)
    if codec == env.CODEC_PCM_S16LE:
        return PcmDecoder()
    raise CodecError(f"no audio decoder for codec {codec}")
