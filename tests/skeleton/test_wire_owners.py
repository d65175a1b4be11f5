"""No hand-built copy of a wire message outside its owner (issue 12, "one owner per
contract"): every dict literal or dict(...) call in the packages whose "type" is one of a
wire vocabulary's message types must sit in that vocabulary's owner module; everywhere
else builds the message through the owner's dataclasses. Scans the source with ast, so a
string that merely mentions a type is not a finding; names file:line for each one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scribelink import fleet, scribews
from scribelink import messages as msgs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scribelink", "edge_agent", "cloud_relay", "scripts")

# modules whose dicts reuse the wire's type names for another contract, and which one
NOT_WIRE = {
    # the reference receiver's event log (events.jsonl, read by the tests), one record per
    # message it accepted, with its own fields (recv_us, devices): not a wire message
    "cloud_relay/receiver.py",
}

# owner module -> the message types it owns (taken from the owners, so a new type is covered)
OWNERS: dict[str, frozenset[str]] = {
    "scribelink/messages.py": frozenset(
        {*msgs.SESSION_TYPES, *msgs.CONTROL_TYPES, msgs.Status.TYPE}),
    "scribelink/fleet.py": frozenset(fleet.CONTROL_KINDS),
    "scribelink/scribews.py": frozenset(scribews.FRAME_TYPES),
}


def _type_value(node: ast.AST) -> str | None:
    """The constant "type" of a dict display or dict(...) call, else None."""
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values, strict=True):
            if isinstance(k, ast.Constant) and k.value == "type" and \
                    isinstance(v, ast.Constant) and isinstance(v.value, str):
                return v.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        for kw in node.keywords:
            if kw.arg == "type" and isinstance(kw.value, ast.Constant) and \
                    isinstance(kw.value.value, str):
                return kw.value.value
    return None


def hand_built(source: str, path: str) -> list[str]:
    """`path:line: type` for each wire message built by hand in `source` outside its owner."""
    own = OWNERS.get(path, frozenset())
    if path in NOT_WIRE:
        return []
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        t = _type_value(node)
        if t is None or t in own:
            continue
        owners = [o for o, types in OWNERS.items() if t in types]
        if owners:
            found.append(f"{path}:{node.lineno}: {t!r} (owner: {owners[0]})")
    return sorted(found)


def test_the_check_finds_a_hand_built_message_and_passes_the_owners_own():
    src = ('x = {"type": "gap", "session": s}\n'
           'y = dict(type="welcome", user=u)\n'
           'z = {"type": "not_a_wire_type"}\n'
           'w = {"kind": "gap"}\n')
    assert hand_built(src, "edge_agent/x.py") == [
        "edge_agent/x.py:1: 'gap' (owner: scribelink/messages.py)",
        "edge_agent/x.py:2: 'welcome' (owner: scribelink/scribews.py)",
    ]
    assert hand_built('x = {"type": "gap"}\n', "scribelink/messages.py") == []


def test_every_owner_exists_and_owns_types():
    for path, types in OWNERS.items():
        assert (ROOT / path).is_file(), path
        assert types, path


def _sources(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "scripts":  # and the scripts without a .py suffix
        files += sorted(f for f in (ROOT / package).iterdir() if f.is_file() and not f.suffix
                        and f.read_bytes().startswith(b"#!/usr/bin/env py"))
    return files


@pytest.mark.parametrize("package", PACKAGES)
def test_no_wire_message_is_built_outside_its_owner(package):
    found = []
    for f in _sources(package):
        rel = f.relative_to(ROOT).as_posix()
        found += hand_built(f.read_text(), rel)
    assert not found, "build these through their owner's dataclasses:\n" + "\n".join(found)
