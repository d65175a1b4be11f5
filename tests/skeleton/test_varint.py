"""scribelink.varint, the spool's and the archive's one varint codec."""

from __future__ import annotations

import pytest

from scribelink import varint


def test_numbers_round_trip_in_order():
    nums = [0, 1, 127, 128, 300, 2**32, 2**63 - 1]
    signed = [0, -1, 1, -64, 64, -(2**40), 2**40]
    out = bytearray()
    for n in nums:
        varint.put_uv(out, n)
    for n in signed:
        varint.put_zz(out, n)
    i, got = 0, []
    for _ in nums:
        n, i = varint.read_uv(out, i)
        got.append(n)
    for _ in signed:
        n, i = varint.read_zz(out, i)
        got.append(n)
    assert got == nums + signed and i == len(out)
    assert bytes(out[:4]) == b"\x00\x01\x7f\x80"  # LEB128: 128 is 0x80 0x01


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff" * 11], ids=["empty", "cut", "too long"])
def test_bytes_that_hold_no_number_are_refused(data):
    with pytest.raises(varint.VarintError):
        varint.read_uv(data, 0)


def test_a_negative_number_is_no_unsigned_varint():
    with pytest.raises(ValueError):
        varint.put_uv(bytearray(), -1)
