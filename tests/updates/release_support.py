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


# ---------------------------------------------------------------------- tiny real releases


def make_wheel(out_dir: Path, version: str) -> Path:
    """A real (installable) but tiny `scribelink` wheel: the installer does not care what
    a release's code is, only that pip installs it from the release alone."""
    import base64
    import hashlib
    import zipfile

    name = f"scribelink-{version}"
    files = {
        "scribelink/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{name}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: scribelink\n"
                                       f"Version: {version}\nProvides-Extra: unit\n").encode(),
        f"{name}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}.dist-info/RECORD,,")
    files[f"{name}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    whl = out_dir / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return whl


def make_installable_release(tmp: Path, key, version: str, pip_wheel: Path,
                             name: str | None = None) -> Path:
    src = tmp / f"mini-{version}-{name or 'r'}"
    files = {"wheels/" + pip_wheel.name: pip_wheel}
    whl = make_wheel(src / "wheels", version)
    files["wheels/" + whl.name] = whl
    for rel_path, data in (("firmware/main.py", b"# puck\n"), ("config/agent.toml", b"")):
        p = src / rel_path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel_path] = p
    entries = [rel.file_entry(n, p) for n, p in files.items()]
    body = rel.manifest_body(version=version, hardware=[HW], files=entries,
                             requirement=f"scribelink[unit]=={version}",
                             created_us=time.time_ns() // 1000)
    out = tmp / (name or f"mini-{version}.tar")
    rel.write_release(out, rel.sign_manifest(body, key), files)
    return out


# --------------------------------------------------------------------- a relay with a unit listener


def make_update_relay(tmp: Path, b) -> tuple:
    """The relay as a process (tests/support.py) with its unit HTTPS listener on: a server
    certificate from the clinic CA, client certificates required."""
    from support import Relay

    from cloud_relay import broker as brk
    from cloud_relay import pki

    d = tmp / "relay"
    d.mkdir(parents=True, exist_ok=True)
    ca = pki.CA.load(Path(b.pki["ca"]), Path(b.pki["ca_key"]))
    server = pki.write_identity(ca, d / "tls", "relay-https",
                                server_names=["127.0.0.1", "localhost"], client=False)
    port, unit_port = brk.free_port(), brk.free_port()
    conf = d / "relay.toml"
    conf.write_text(
        f'data_dir = "{d / "data"}"\nhttp_port = {port}\nbroker_url = "{b.url}"\n'
        f'broker_ca_file = "{b.pki["ca"]}"\nbroker_cert_file = "{b.pki["relay"].cert}"\n'
        f'broker_key_file = "{b.pki["relay"].key}"\n'
        f'ca_cert_file = "{b.pki["ca"]}"\nca_key_file = "{b.pki["ca_key"]}"\n'
        f'unit_https_port = {unit_port}\nunit_https_cert_file = "{server.cert}"\n'
        f'unit_https_key_file = "{server.key}"\n'
        'test_only_weak_password_hash = true\n')
    r = Relay(d, f"http://127.0.0.1:{port}", conf)
    r.add_user("admin", "admin", "admin-password")
    r.start()
    return r, unit_port
