"""hardware/alsa/*.conf through real alsa-lib, and hardware/udev through real udevadm.

No microphone array is attached here, so each config is checked twice:
- as written: opening `scribelink_capture` must get all the way down the plug -> dsnoop
  chain to the card lookup ("Cannot get card index for <card>"), proving alsa-lib parses
  every layer;
- with the dsnoop layer (`scribelink_hw`) swapped for a `file` PCM that replays
  hardware-shaped frames (the array's channel count and sample format, each channel
  holding its own number): arecord on `scribelink_capture` must then deliver every
  channel, in order, as 16 kHz S16_LE, which checks the format conversion and that no
  channel is dropped or swapped (hardware/arrays/<array>.json numbers them).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from install_support import ARRAY_CHANNELS, REPO, need

# card id, hardware channels, hardware sample format
HARDWARE = {
    "respeaker-4mic-pi": ("seeed4micvoicec", 4, "S32_LE"),
    "respeaker-6mic": ("seeed8micvoicec", 8, "S32_LE"),
    "respeaker-usb-v2": ("ArrayUAC10", 6, "S16_LE"),
    "respeaker-2mic": ("seeed2micvoicec", 2, "S16_LE"),
}


def test_every_supported_array_has_a_config():
    configs = {p.stem for p in (REPO / "hardware/alsa").glob("*.conf")}
    assert configs == set(HARDWARE) == set(ARRAY_CHANNELS)


def test_channel_counts_agree_with_the_array_geometry():
    """ALSA config, install-unit's agent.toml and the DSP's geometry file agree."""
    for array, (_, hw_channels, _) in HARDWARE.items():
        geometry = json.loads((REPO / "hardware/arrays" / f"{array}.json").read_text())
        assert geometry["capture_channels"] == hw_channels == ARRAY_CHANNELS[array], array
        assert len(geometry["channels"]) == hw_channels, array


def alsa_env(tmp_path: Path, text: str) -> dict:
    conf = tmp_path / "asound.conf"
    conf.write_text(text)
    # Only the distribution's alsa.conf and ours: the host's /etc/asound.conf and
    # ~/.asoundrc stay out of it.
    return dict(
        os.environ, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}", HOME=str(tmp_path)
    )


def arecord(env: dict, channels: int, frames: int, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "arecord",
            "-q",
            "-D",
            "scribelink_capture",
            "-c",
            str(channels),
            "-r",
            "16000",
            "-f",
            "S16_LE",
            "-t",
            "raw",
            "-s",
            str(frames),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("array", sorted(HARDWARE))
def test_config_parses_down_to_the_card(tmp_path, array):
    need("arecord")
    card = HARDWARE[array][0]
    env = alsa_env(tmp_path, (REPO / "hardware/alsa" / f"{array}.conf").read_text())
    result = arecord(env, ARRAY_CHANNELS[array], 160, tmp_path / "out.raw")
    assert result.returncode != 0  # no such card on this machine
    assert f"Cannot get card index for {card}" in result.stderr, result.stderr


@pytest.mark.parametrize("array", sorted(HARDWARE))
def test_capture_pcm_delivers_the_mics_as_16k_s16(tmp_path, array):
    need("arecord")
    _, hw_channels, hw_format = HARDWARE[array]
    frames = 1600
    # Hardware-shaped input: channel c carries the value 100 * (c + 1) in 16-bit terms.
    raw = tmp_path / "hardware.raw"
    pack, shift = ("<i", 16) if hw_format == "S32_LE" else ("<h", 0)
    with raw.open("wb") as f:
        frame = b"".join(struct.pack(pack, (100 * (c + 1)) << shift) for c in range(hw_channels))
        f.write(frame * frames)
    text = (REPO / "hardware/alsa" / f"{array}.conf").read_text()
    text += (
        f'\npcm.!scribelink_hw {{ type file slave.pcm "null" file "/dev/null" '
        f'infile "{raw}" format "raw" }}\n'
    )
    env = alsa_env(tmp_path, text)
    out = tmp_path / "out.raw"
    channels = ARRAY_CHANNELS[array]
    result = arecord(env, channels, 320, out)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert len(data) == 320 * channels * 2
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    expected = [100 * (c + 1) for c in range(hw_channels)]
    for i in range(0, len(samples), channels):
        assert list(samples[i : i + channels]) == expected


def test_hardware_shape_matches_the_dsnoop_slave():
    """The test's idea of each card agrees with what the config asks of the hardware."""
    for array, (card, hw_channels, hw_format) in HARDWARE.items():
        text = (REPO / "hardware/alsa" / f"{array}.conf").read_text()
        assert f'pcm "hw:CARD={card},DEV=0"' in text
        assert f"channels {hw_channels}\n" in text
        assert f"format {hw_format}\n" in text
        assert "rate 16000\n" in text


UDEV_CHECK = r"""
set -e
mount -t tmpfs tmpfs /etc/udev/rules.d
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev
cp "$RULES" /etc/udev/rules.d/
# a passwd/group that know the service user, as on a unit after install-unit
cp /etc/passwd /etc/group "$WORK"/
echo 'scribelink:x:990:990::/var/lib/scribelink:/usr/sbin/nologin' >> "$WORK/passwd"
echo 'scribelink:x:990:' >> "$WORK/group"
mount --bind "$WORK/passwd" /etc/passwd
mount --bind "$WORK/group" /etc/group
udevadm test --action=add /sys/class/tty/tty1 2>&1
"""


def test_udev_rules_parse_cleanly(tmp_path):
    """udevadm (252 has no `verify`) loads the rules; inside a private mount namespace
    so the test writes nothing to this machine's /dev, /run or /etc."""
    need("udevadm")
    need("unshare")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    if not Path("/sys/class/tty/tty1").exists():
        pytest.skip("no /sys/class/tty/tty1 to run the rules against")
    env = dict(
        os.environ, RULES=str(REPO / "hardware/udev/99-scribelink.rules"), WORK=str(tmp_path)
    )
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", UDEV_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Reading rules file: /etc/udev/rules.d/99-scribelink.rules" in result.stdout, (
        result.stdout
    )
    ours = [line for line in result.stdout.splitlines() if "99-scribelink.rules:" in line]
    assert ours == [], ours  # no invalid keys, unknown users or groups


def test_udev_rules_name_the_puck_and_the_service_uart():
    rules = (REPO / "hardware/udev/99-scribelink.rules").read_text()
    logical = rules.replace("\\\n", " ")
    puck = next(line for line in logical.splitlines() if 'SYMLINK+="scribelink-puck"' in line)
    assert 'ATTRS{idVendor}=="2e8a"' in puck and 'ATTRS{idProduct}=="0005"' in puck
    assert 'GROUP="scribelink"' in puck and 'MODE="0660"' in puck
    uart = next(line for line in logical.splitlines() if 'SYMLINK+="scribelink-service"' in line)
    assert 'KERNEL=="ttyAMA0"' in uart and 'GROUP="scribelink"' in uart


def test_usb_array_processed_channel_pcm(tmp_path):
    """`scribelink_processed` (site surveys only) is the XMOS-processed USB channel 0."""
    need("arecord")
    raw = tmp_path / "hardware.raw"
    raw.write_bytes(b"".join(struct.pack("<h", 100 * (c + 1)) for c in range(6)) * 1600)
    text = (REPO / "hardware/alsa/respeaker-usb-v2.conf").read_text()
    text += (
        f'\npcm.!scribelink_hw {{ type file slave.pcm "null" file "/dev/null" '
        f'infile "{raw}" format "raw" }}\n'
    )
    out = tmp_path / "out.raw"
    result = subprocess.run(
        [
            "arecord",
            "-q",
            "-D",
            "scribelink_processed",
            "-c",
            "1",
            "-r",
            "16000",
            "-f",
            "S16_LE",
            "-t",
            "raw",
            "-s",
            "160",
            str(out),
        ],
        env=alsa_env(tmp_path, text),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(struct.unpack("<160h", out.read_bytes())) == {100}
