"""LEB128 varints, unsigned and zigzag-signed: the compact numbers of the unit's spool
records (edge_agent/spool.py) and the relay's archive segments (cloud_relay/store/segments.py).
Pure: bytes in, bytes out."""

from __future__ import annotations

MAX_SHIFT = 63  # past 64 bits a number is corrupt, not big


class VarintError(ValueError):
    """Bytes that do not hold a varint: they end inside one, or it runs past 64 bits."""


def put_uv(out: bytearray, n: int) -> None:
    """Append n >= 0 as an unsigned varint."""
    if n < 0:
        raise ValueError("unsigned varint of a negative number")
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_zz(out: bytearray, n: int) -> None:
    """Append any integer as a zigzag varint (small magnitudes, either sign, stay short)."""
    put_uv(out, n << 1 if n >= 0 else ((-n) << 1) - 1)


def read_uv(b: bytes | memoryview, i: int) -> tuple[int, int]:
    """The unsigned varint at b[i:] and the offset after it."""
    n = shift = 0
    while True:
        if i >= len(b):
            raise VarintError("the bytes end inside a number")
        if shift > MAX_SHIFT:
            raise VarintError("a number longer than 64 bits")
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7


def read_zz(b: bytes | memoryview, i: int) -> tuple[int, int]:
    """The zigzag varint at b[i:] and the offset after it."""
    n, i = read_uv(b, i)
    return (n >> 1) if not n & 1 else -((n + 1) >> 1), i
