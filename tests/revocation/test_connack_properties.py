"""The relay's MQTT client reads the CONNACK's properties (cloud_relay/mqtt5.py): a broker
that assigns the client id (MQTT 5.0, 3.2.2.3.7) is followed, and any property is
stepped over by its type, so one it does not use cannot make it misread another."""

from __future__ import annotations

import struct

import pytest

from cloud_relay import mqtt5


def connack_body(props: bytes, flags: int = 0, code: int = 0) -> bytes:
    return bytes([flags, code]) + mqtt5.varint(len(props)) + props


def test_the_assigned_client_identifier_is_read_past_properties_of_every_type():
    props = (b"\x21" + struct.pack(">H", 1000)  # receive maximum (u16)
             + b"\x11" + struct.pack(">I", 3600)  # session expiry (u32)
             + b"\x26" + mqtt5.utf8("k") + mqtt5.utf8("v")  # user property (pair)
             + b"\x24\x01"  # maximum QoS (byte)
             + b"\x12" + mqtt5.utf8("exam-7")  # assigned client identifier
             + b"\x1f" + mqtt5.utf8("because"))  # reason string
    got = mqtt5.connack_properties(connack_body(props))
    assert got[mqtt5.ASSIGNED_CLIENT_IDENTIFIER] == b"exam-7"
    assert got[0x21] == 1000 and got[0x11] == 3600 and got[0x24] == 1 and 0x26 not in got
    assert mqtt5.connack_properties(connack_body(b"")) == {}
    assert mqtt5.connack_properties(b"\x00\x00") == {}  # MQTT 3-style: no properties


@pytest.mark.parametrize("bad", [
    b"\x12\x00\x05abc",  # a string longer than the properties
    b"\x7e\x00",  # a property id MQTT 5 does not define
    b"\x21\x01",  # a u16 cut short
])
def test_malformed_properties_are_an_error_not_a_guess(bad):
    with pytest.raises(mqtt5.MqttError):
        mqtt5.connack_properties(connack_body(bad))
