"""Small hand-made releases for the format tests (no pip: fake wheels, real signatures),
and the tampering a hostile relay or a bad disk could do to one."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from scribelink import release as rel

HW = rel.hardware_kind()


def make_files(root: Path, version: str = "1.2.0") -> dict[str, Path]:
    files = {
        f"wheels/scribelink-{version}-py3-none-any.whl": b"PK fake wheel " + version.encode(),
        "wheels/numpy-2.0-cp311-cp311-linux_x86_64.whl": b"PK numpy" * 1000,
        "firmware/main.py": b"# puck entry point\n",
        "firmware/pucklink.py": b"# protocol\n",
        "config/agent.toml": b'unit_id = "unit-0001"\n',
    }
    out = {}
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[name] = p
    return out


def make_release(tmp: Path, key, version: str = "1.2.0", hardware: list[str] | None = None,
                 name: str = "r.tar") -> Path:
    src = tmp / f"src-{version}-{name}"
    files = make_files(src, version)
    entries = [rel.file_entry(n, p) for n, p in files.items()]
    body = rel.manifest_body(version=version, hardware=hardware or [HW], files=entries,
                             requirement=f"scribelink[unit]=={version}",
                             created_us=time.time_ns() // 1000)
    out = tmp / name
    rel.write_release(out, rel.sign_manifest(body, key), files)
    return out


def rewrite(src: Path, dst: Path, *, doc=None, replace: dict[str, bytes] | None = None,
            add: dict[str, bytes] | None = None, drop: set[str] | None = None,
            symlink: tuple[str, str] | None = None) -> Path:
    """Copy a release tar member by member, changing what a tamperer would change."""
    replace, add, drop = replace or {}, add or {}, drop or set()
    with tarfile.open(src) as tin, tarfile.open(dst, "w:", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            if m.name in drop:
                continue
            data = tin.extractfile(m).read()
            if m.name == rel.MANIFEST_NAME and doc is not None:
                data = json.dumps(doc).encode()
            data = replace.get(m.name, data)
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
        for name, data in add.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tout.addfile(info)
    return dst
