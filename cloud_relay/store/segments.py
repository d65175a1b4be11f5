"""The archive's packed form: a run of one session's sealed frames (audio or events) in one
blob, each frame rebuilt byte for byte on read. Pure: bytes in, bytes out.

Why: one row per 40 ms chunk cost ~420 bytes at rest for ~110 bytes of Opus (the clear
header, a SHA-256, the hex session id, all of it again in the dedupe index). What varies
from chunk to chunk of a session is only its stream id, seq, capture time, sample count,
flags, arrival time and the ciphertext with its tag; the rest of the clear header
(unit id, session id, codec, channels, rate: `envelope.header_split`) is kept once per
session (its `sessions` row) or once per segment when a frame does not match it. A frame
that is no envelope at all is kept whole ("raw"). docs/archive.md has the numbers.

A segment body:

    format u8 (1) | [capture_us uvarint | sample_count uvarint]  (template segments only)
    | frame*
    frame = ctrl u8 | [id delta zz] | [seq delta zz] | [arrival delta ms zz]
            | [capture residual zz | sample_count uv | flags uv]  (template segments only)
            | length uv | bytes

Frames are in (seq, id) order. Each field is relative to the frame before (the first
frame: to the segment's columns `first_id - 1`, `first_seq - 1`, `received_us` and the
values in the body's head); a ctrl bit says "as predicted" and leaves the field out: id + 1,
seq + 1, the same arrival millisecond, capture time = the previous one + its samples, the
previous sample count, flags 0. `zz` is a zigzag varint, `uv` an unsigned one (LEB128).
Arrival times are kept to the millisecond (the writer stamps them so).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scribelink import envelope as env
from scribelink.varint import VarintError, put_uv, put_zz, read_uv, read_zz

FORMAT = 1
KINDS = ("audio", "event")  # what is packed; clear lifecycle items stay rows
# Bounds on one segment. The spans let readers find a segment by an index range without a
# scan: a reader after stream id X looks at segments with first_id > X - MAX_ID_SPAN, a
# reader at seq S at first_seq > S - MAX_SEQ_SPAN.
MAX_FRAMES = 1000  # 40 s of 40 ms chunks: a closed session's rest in one row
MAX_SEQ_SPAN = 2048
MAX_ID_SPAN = 1 << 22

RAW, ID_NEXT, SEQ_NEXT, RECV_SAME, CAP_PRED, COUNT_SAME, FLAGS_ZERO = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40)


class SegmentError(ValueError):
    """A segment body that does not decode (corrupt, or a format this relay does not know)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One sealed frame as the stream holds it."""

    id: int
    seq: int
    payload: bytes
    received_us: int


@dataclass(frozen=True, slots=True)
class Packed:
    """One segment row: `template` is the header it was packed against (b"" for raw)."""

    template: bytes
    first_seq: int
    last_seq: int
    first_id: int
    last_id: int
    frames: int
    received_us: int
    body: bytes


# ------------------------------------------------------------------------------ planning


Planned = list[tuple[bytes, list[tuple[Stored, "env.HeaderParts | None"]]]]


def plan(frames: Iterable[Stored]) -> Planned:
    """One session's frames of one kind -> runs to pack, each (template, frames in (seq, id)
    order), split so that every run keeps within the segment bounds."""
    groups: dict[bytes, list[tuple[Stored, env.HeaderParts | None]]] = {}
    for f in sorted(frames, key=lambda f: (f.seq, f.id)):
        parts = env.header_split(f.payload)
        groups.setdefault(b"" if parts is None else parts.template, []).append((f, parts))
    runs = []
    for template, members in groups.items():
        run: list = []
        lo_id = hi_id = 0
        for m in members:
            f = m[0]
            if run and (len(run) >= MAX_FRAMES or f.seq - run[0][0].seq >= MAX_SEQ_SPAN
                        or max(hi_id, f.id) - min(lo_id, f.id) >= MAX_ID_SPAN):
                runs.append((template, run))
                run = []
            if not run:
                lo_id = hi_id = f.id
            run.append(m)
            lo_id, hi_id = min(lo_id, f.id), max(hi_id, f.id)
        if run:
            runs.append((template, run))
    return runs


def pack(template: bytes, run: list[tuple[Stored, env.HeaderParts | None]]) -> Packed:
    """Pack one run from `plan`."""
    first = run[0][0]
    first_id = min(f.id for f, _ in run)
    base_ms = min(f.received_us for f, _ in run) // 1000
    out = bytearray((FORMAT,))
    prev_id, prev_seq, prev_ms = first_id - 1, first.seq - 1, base_ms
    prev_cap = prev_count = rate = 0
    if template:
        p0 = run[0][1]
        assert p0 is not None
        put_uv(out, p0.capture_us)
        put_uv(out, p0.sample_count)
        prev_cap, prev_count, rate = p0.capture_us, p0.sample_count, p0.sample_rate
    for f, parts in run:
        ctrl = 0
        fields = bytearray()
        if f.id == prev_id + 1:
            ctrl |= ID_NEXT
        else:
            put_zz(fields, f.id - prev_id - 1)
        if f.seq == prev_seq + 1:
            ctrl |= SEQ_NEXT
        else:
            put_zz(fields, f.seq - prev_seq - 1)
        ms = f.received_us // 1000
        if ms == prev_ms:
            ctrl |= RECV_SAME
        else:
            put_zz(fields, ms - prev_ms)
        if parts is None:
            ctrl |= RAW
            data: bytes | memoryview = f.payload
        else:
            pred = prev_cap + (prev_count * 1_000_000 // rate if rate else 0)
            if parts.capture_us == pred:
                ctrl |= CAP_PRED
            else:
                put_zz(fields, parts.capture_us - pred)
            if parts.sample_count == prev_count:
                ctrl |= COUNT_SAME
            else:
                put_uv(fields, parts.sample_count)
            if parts.flags == 0:
                ctrl |= FLAGS_ZERO
            else:
                put_uv(fields, parts.flags)
            prev_cap, prev_count = parts.capture_us, parts.sample_count
            data = memoryview(f.payload)[parts.body_at:]
        out.append(ctrl)
        out += fields
        put_uv(out, len(data))
        out += data
        prev_id, prev_seq, prev_ms = f.id, f.seq, ms
    return Packed(template, first.seq, run[-1][0].seq, first_id, max(f.id for f, _ in run),
                  len(run), base_ms * 1000, bytes(out))


def unpack(body: bytes, template: bytes | None, *, first_id: int, first_seq: int,
           received_us: int) -> list[Stored]:
    """A segment's frames, exactly as they were stored, in (seq, id) order."""
    try:
        return _unpack(body, template, first_id=first_id, first_seq=first_seq,
                       received_us=received_us)
    except VarintError as e:
        raise SegmentError(f"segment body: {e}") from e


def _unpack(body: bytes, template: bytes | None, *, first_id: int, first_seq: int,
            received_us: int) -> list[Stored]:
    if not body or body[0] != FORMAT:
        raise SegmentError(f"segment format {body[0] if body else None} is not {FORMAT}")
    template = template or b""
    i = 1
    prev_id, prev_seq, prev_ms = first_id - 1, first_seq - 1, received_us // 1000
    prev_cap = prev_count = rate = 0
    if template:
        if len(template) < env.FIXED_LEN:
            raise SegmentError("segment header template too short")
        prev_cap, i = read_uv(body, i)
        prev_count, i = read_uv(body, i)
        rate = int.from_bytes(template[40:44], "big")
    out = []
    n = len(body)
    join = env.header_join
    while i < n:
        ctrl = body[i]
        i += 1
        if ctrl & ID_NEXT:
            fid = prev_id + 1
        else:
            d, i = read_zz(body, i)
            fid = prev_id + 1 + d
        if ctrl & SEQ_NEXT:
            seq = prev_seq + 1
        else:
            d, i = read_zz(body, i)
            seq = prev_seq + 1 + d
        if ctrl & RECV_SAME:
            ms = prev_ms
        else:
            d, i = read_zz(body, i)
            ms = prev_ms + d
        if ctrl & RAW:
            length, i = read_uv(body, i)
            payload = body[i:i + length]
        else:
            if not template:
                raise SegmentError("a templated frame in a raw segment")
            pred = prev_cap + (prev_count * 1_000_000 // rate if rate else 0)
            if ctrl & CAP_PRED:
                cap = pred
            else:
                d, i = read_zz(body, i)
                cap = pred + d
            if ctrl & COUNT_SAME:
                count = prev_count
            else:
                count, i = read_uv(body, i)
            if ctrl & FLAGS_ZERO:
                flags = 0
            else:
                flags, i = read_uv(body, i)
            length, i = read_uv(body, i)
            payload = join(template, flags, seq, cap, count) + body[i:i + length]
            prev_cap, prev_count = cap, count
        if i + length > n:
            raise SegmentError("segment body ends inside a frame")
        i += length
        out.append(Stored(fid, seq, payload, ms * 1000))
        prev_id, prev_seq, prev_ms = fid, seq, ms
    return out
