"""The hardware package is complete: the BOM has every part a unit needs, the guides
link to files that exist, and the boot settings in the docs are the ones install-unit
writes."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

from install_support import REPO

HW = REPO / "hardware"
BOM_COLUMNS = ["part", "supplier", "supplier part number", "quantity", "approx cost USD", "notes"]
# (what a newcomer must be able to buy, a phrase its BOM line contains)
REQUIRED_PARTS = [
    ("Pi 4", "Raspberry Pi 4"),
    ("Zero 2 W alternative", "Zero 2 W"),
    ("default array", "ReSpeaker 4-Mic Array for Raspberry Pi"),
    ("6-mic alternative", "6-Mic Circular Array"),
    ("USB v2 alternative", "USB Mic Array v2.0"),
    ("puck MCU", "Raspberry Pi Pico"),
    ("puck button", "push button"),
    ("puck ring", "12 x WS2812"),
    ("puck cable", "USB cable for the puck"),
    ("power supply", "Power supply for the Pi 4"),
    ("SD card", "microSD card, industrial"),
    ("enclosure", "Enclosure"),
    ("HAT standoffs", "M2.5 x 11 mm"),
    ("wall mounting", "Wall anchors"),
    ("service cable", "USB to 3.3 V TTL serial cable"),
    ("service pigtail", "Service pigtail"),
    ("privacy sign", "Privacy sign"),
]


def bom_rows() -> list[dict]:
    with (HW / "bom.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == BOM_COLUMNS
        return list(reader)


def test_bom_has_every_part_with_a_cost_and_quantity():
    rows = bom_rows()
    for what, phrase in REQUIRED_PARTS:
        assert any(phrase in r["part"] for r in rows), f"BOM lacks the {what} ({phrase!r})"
    for r in rows:
        assert all(r[c].strip() for c in BOM_COLUMNS[:5]), r
        float(r["approx cost USD"])
        assert re.match(r"\d", r["quantity"]), r


def test_guides_link_only_to_files_that_exist():
    for doc in ["README.md", "assembly.md", "wiring.md", "mounting.md"]:
        text = (HW / doc).read_text()
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            assert (HW / target).exists(), f"{doc} links to missing {target}"


def test_wiring_documents_what_install_unit_writes(tmp_path):
    wiring = (HW / "wiring.md").read_text()
    for needle in [
        "enable_uart=1",
        "dtoverlay=disable-bt",
        "dtoverlay=seeed-4mic-voicecard",
        "dtoverlay=seeed-8mic-voicecard",
        "dtoverlay=seeed-2mic-voicecard",
        "console=serial0",
        "GPIO14",
        "GPIO15",
        "| 6 | GND",
        "3.3 V TTL",
        "2e8a:0005",
        "/dev/scribelink-puck",
        "/dev/scribelink-service",
    ]:
        assert needle in wiring, needle
    root = tmp_path / "root"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/install-unit"), "--root", str(root)],
        check=True,
        capture_output=True,
    )
    config = (root / "boot/firmware/config.txt").read_text()
    settings = [line for line in config.splitlines() if "=" in line and not line.startswith("#")]
    for line in settings:
        assert line in wiring, f"config.txt line {line!r} is not documented in wiring.md"


def test_assembly_covers_every_stage():
    text = (HW / "assembly.md").read_text()
    for needle in [
        "Raspberry Pi OS Lite (64-bit)",
        "bookworm",
        "seeed-voicecard",
        "scripts/install-unit --array",
        "scripts/provision --port",
        "scripts/flash-puck",
        "6_channels_firmware.bin",
        "tamper",
    ]:
        assert needle in text, needle


def test_mounting_guide_has_the_placement_rules_and_a_checklist():
    text = (HW / "mounting.md").read_text()
    for needle in [
        "2 m",
        "HVAC",
        "sink",
        "door",
        "fan",
        "1.2–1.5 m",
        "raceway",
        "Privacy signage",
        "- [ ]",
    ]:
        assert needle in text, needle
    assert text.count("- [ ]") >= 10
