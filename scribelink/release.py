"""Signed releases of the unit software: the manifest, its signature, and every check a unit
makes before anything in a release is unpacked or run. The one owner of the release
format (docs/updates.md); scripts/release builds and signs, the unit verifies and unpacks,
the relay only reads the version to show it (it holds no key, and its word counts for
nothing).

A release is an uncompressed tar (its wheels are compressed already):

    release.json        the signed manifest, always the first member
    wheels/*.whl        the unit package and every dependency: the unit installs offline
    firmware/*.py       the cue puck's firmware with its protocol module (pucklink.py)
    config/agent.toml   the agent config defaults of this release

release.json is {"manifest": {...}, "signer": KEY_ID, "sig": BASE64} with
sig = Ed25519(release key, "scribelink/v1 release" || 0x00 || canonical(manifest)).
The canonical JSON and key ids are scribelink.trust's (one signing encoding for the
project); the domain is this module's, so a release signature never verifies as anything
else and nothing else verifies as a release. The release key is its own key, not the
clinic authority: whoever builds the software is not whoever decides who hears a room.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import sysconfig
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scribelink import trust

FORMAT = "scribelink-release/1"
MANIFEST_NAME = "release.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_RELEASE_BYTES = 1 << 30  # 1 GiB: a unit release is ~70 MB
MAX_FILES = 500
TOP_DIRS = ("wheels", "firmware", "config")
RELEASE_DOMAIN = b"release"
PERMIT_DOMAIN = b"release-permit"
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 16

# Why a release is refused; the unit reports the code and the sentence to the admin view.
REFUSALS = ("malformed", "unsigned", "wrong_key", "bad_signature", "tampered", "downgrade",
            "same_version", "wrong_hardware", "failed_before", "bad_permit")


class ReleaseError(ValueError):
    """A release (or permit) the unit must not install: `code` is one of REFUSALS."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def to_dict(self) -> dict:
        return {"code": self.code, "reason": str(self)}


# ---------------------------------------------------------------------------- versions


def parse_version(text: Any) -> tuple[int, ...]:
    """`1.4.2` -> (1, 4, 2). Releases are dotted numbers (2 to 4 of them), nothing else, so
    "newer" means one thing on every unit."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ReleaseError("malformed", f"release version {text!r} is not dotted numbers "
                           "such as 1.4.2")
    return tuple(int(x) for x in text.split("."))


def bump(version: str) -> str:
    """The next patch version: 0.1.0 -> 0.1.1."""
    parts = list(parse_version(version))
    parts[-1] += 1
    return ".".join(map(str, parts))


def hardware_kind() -> str:
    """What this machine can run: wheels are built for one platform and one Python ABI
    (linux-aarch64/cpython-311 on a Pi 4 or 5, linux-x86_64/cpython-311 on a PC)."""
    return f"{sysconfig.get_platform()}/{sys.implementation.cache_tag}"


# ---------------------------------------------------------------------------- keys


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ReleaseError("malformed", f"{path} is not a PEM release key "
                           "(make one with `scripts/release keygen`)") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("malformed", f"{path} is not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The pinned form: base64 of the raw 32-byte public key, one line."""
    return trust.b64(trust.ed25519_raw(key)) + "\n"


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        return trust.load_ed25519(Path(path).read_text().strip())
    except (trust.TrustError, ValueError) as e:
        raise ReleaseError("malformed", f"{path}: not a release public key (base64 of 32 "
                           "bytes, as `scripts/release keygen` writes K.pub)") from e


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    return trust.key_id(trust.ed25519_raw(key))


# ---------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    version: str
    hardware: tuple[str, ...]
    files: tuple[FileEntry, ...]
    requirement: str  # what pip installs from wheels/: "scribelink[unit]==VERSION"
    created_us: int
    signer: str | None  # key id, or None when unsigned

    def file(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _signed_bytes(domain: bytes, body: dict) -> bytes:
    return trust.DOMAIN + domain + b"\x00" + trust.canonical(body)


def check_member_path(path: Any) -> str:
    """A path in a release: relative, POSIX, under one of TOP_DIRS, no `..`, no oddities."""
    if not isinstance(path, str) or not 0 < len(path) <= 200:
        raise ReleaseError("malformed", f"bad file path in release: {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ReleaseError("malformed", f"release file path {path!r} escapes the release")
    if len(p.parts) < 2 or p.parts[0] not in TOP_DIRS:
        raise ReleaseError("malformed", f"release file {path!r} is not under "
                           f"{', '.join(d + '/' for d in TOP_DIRS)}")
    if not re.match(r"^[A-Za-z0-9._+/-]+$", path):
        raise ReleaseError("malformed", f"release file path {path!r} has unexpected characters")
    return path


def manifest_body(*, version: str, hardware: list[str], files: list[FileEntry],
                  requirement: str, created_us: int) -> dict:
    parse_version(version)
    return {"format": FORMAT, "version": version, "hardware": sorted(set(hardware)),
            "requirement": requirement, "created_us": created_us,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size}
                      for f in sorted(files, key=lambda f: f.path)]}


def sign_manifest(body: dict, key: Ed25519PrivateKey) -> dict:
    return {"manifest": body, "signer": key_id(key),
            "sig": trust.b64(key.sign(_signed_bytes(RELEASE_DOMAIN, body)))}


def parse_manifest(doc: Any) -> Manifest:
    """The manifest's fields, checked for shape only (no signature: the relay's view)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict):
        raise ReleaseError("malformed", "release.json must hold a manifest object")
    m = doc["manifest"]
    if m.get("format") != FORMAT:
        raise ReleaseError("malformed", f"not a {FORMAT} manifest (format "
                           f"{m.get('format')!r})")
    version = m.get("version")
    parse_version(version)
    hardware = m.get("hardware")
    if not isinstance(hardware, list) or not hardware or \
            not all(isinstance(h, str) and 0 < len(h) <= 64 for h in hardware):
        raise ReleaseError("malformed", "manifest: hardware must list what the release runs on")
    raw_files = m.get("files")
    if not isinstance(raw_files, list) or not 0 < len(raw_files) <= MAX_FILES:
        raise ReleaseError("malformed", "manifest: files must be a non-empty list")
    files, seen = [], set()
    for f in raw_files:
        if not isinstance(f, dict):
            raise ReleaseError("malformed", "manifest: malformed file entry")
        path = check_member_path(f.get("path"))
        digest, size = f.get("sha256"), f.get("size")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ReleaseError("malformed", f"manifest: {path}: sha256 must be 64 hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or \
                not 0 <= size <= MAX_RELEASE_BYTES:
            raise ReleaseError("malformed", f"manifest: {path}: bad size")
        if path in seen:
            raise ReleaseError("malformed", f"manifest lists {path} twice")
        seen.add(path)
        files.append(FileEntry(path, digest, size))
    requirement = m.get("requirement")
    if not isinstance(requirement, str) or not requirement.endswith(f"=={version}"):
        raise ReleaseError("malformed", "manifest: requirement must pin the release version")
    created = m.get("created_us")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise ReleaseError("malformed", "manifest: created_us must be a timestamp")
    signer = doc.get("signer") if isinstance(doc.get("signer"), str) else None
    return Manifest(version, tuple(hardware), tuple(files), requirement, created, signer)


def verify_manifest(doc: Any, public_key: Ed25519PublicKey) -> Manifest:
    """The manifest, if the pinned release key signed exactly this manifest."""
    manifest = parse_manifest(doc)
    if "sig" not in doc or doc.get("sig") in (None, ""):
        raise ReleaseError("unsigned", "the release is not signed: build it with "
                           "`scripts/release build --key K`")
    try:
        sig = trust.unb64(doc.get("sig"), what="release signature", length=64)
    except trust.TrustError as e:
        raise ReleaseError("bad_signature", f"release signature is malformed: {e}") from e
    pinned = key_id(public_key)
    if manifest.signer != pinned:
        raise ReleaseError("wrong_key", f"the release is signed by key {manifest.signer}, not "
                           f"by the release key this unit pinned ({pinned})")
    try:
        public_key.verify(sig, _signed_bytes(RELEASE_DOMAIN, doc["manifest"]))
    except (InvalidSignature, trust.TrustError) as e:
        raise ReleaseError("bad_signature", "the release signature does not verify: the "
                           "manifest was altered after signing") from e
    return manifest


# ---------------------------------------------------------------------------- may this unit take it


def permit_body(*, version: str, units: list[str], issued_us: int, expires_us: int) -> dict:
    """A downgrade permit: the release key's holder allows `version` to replace a newer
    one on `units` (empty: every unit) until `expires_us`."""
    parse_version(version)
    return {"version": version, "units": sorted(set(units)), "issued_us": issued_us,
            "expires_us": expires_us}


def sign_permit(body: dict, key: Ed25519PrivateKey) -> dict:
    return {"permit": body, "signer": key_id(key),
            "sig": trust.b64(key.sign(_signed_bytes(PERMIT_DOMAIN, body)))}


def verify_permit(doc: Any, public_key: Ed25519PublicKey, *, version: str, unit_id: str,
                  now_us: int) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("permit"), dict):
        raise ReleaseError("bad_permit", "the downgrade permit is malformed")
    body = doc["permit"]
    if doc.get("signer") != key_id(public_key):
        raise ReleaseError("bad_permit", "the downgrade permit is not signed by the pinned "
                           "release key")
    try:
        sig = trust.unb64(doc.get("sig"), what="permit signature", length=64)
        public_key.verify(sig, _signed_bytes(PERMIT_DOMAIN, body))
    except (InvalidSignature, trust.TrustError) as e:
        raise ReleaseError("bad_permit", "the downgrade permit's signature does not verify") from e
    if body.get("version") != version:
        raise ReleaseError("bad_permit", f"the downgrade permit is for {body.get('version')!r}, "
                           f"not {version}")
    units = body.get("units")
    if not isinstance(units, list) or (units and unit_id not in units):
        raise ReleaseError("bad_permit", "the downgrade permit does not name this unit")
    expires = body.get("expires_us")
    if not isinstance(expires, int) or expires < now_us:
        raise ReleaseError("bad_permit", "the downgrade permit has expired")
    return body


def check_applicable(manifest: Manifest, *, running: str, hardware: str,
                     downgrade_permitted: bool = False,
                     failed_versions: frozenset[str] = frozenset()) -> None:
    """May a unit running `running` on `hardware` install this (already verified) release?"""
    if hardware not in manifest.hardware:
        raise ReleaseError("wrong_hardware", f"release {manifest.version} is built for "
                           f"{', '.join(manifest.hardware)}; this unit is {hardware}")
    if manifest.version in failed_versions:
        raise ReleaseError("failed_before", f"release {manifest.version} already failed its "
                           "health check on this unit; build a fixed release with a new version")
    try:
        have = parse_version(running)
    except ReleaseError:
        have = (0,)  # a unit whose own version is unknown takes any signed release
    want = parse_version(manifest.version)
    if want == have:
        raise ReleaseError("same_version", f"this unit already runs {running}")
    if want < have and not downgrade_permitted:
        raise ReleaseError("downgrade", f"release {manifest.version} is older than the "
                           f"{running} this unit runs; a downgrade needs a permit signed with "
                           "the release key (`scripts/release permit-downgrade`)")


# ---------------------------------------------------------------------------- the tar


def read_manifest_doc(tar_path: str | Path) -> dict:
    """release.json from a release tar, unverified. It must be the first member."""
    try:
        with tarfile.open(tar_path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or not first.isfile():
                raise ReleaseError("malformed", f"the release's first member must be "
                                   f"{MANIFEST_NAME}")
            if first.size > MAX_MANIFEST_BYTES:
                raise ReleaseError("malformed", f"{MANIFEST_NAME} is too large")
            f = tar.extractfile(first)
            assert f is not None
            data = f.read()
    except (tarfile.TarError, OSError) as e:
        raise ReleaseError("malformed", f"not a release tar: {e}") from e
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ReleaseError("malformed", f"{MANIFEST_NAME} is not JSON") from e
    if not isinstance(doc, dict):
        raise ReleaseError("malformed", f"{MANIFEST_NAME} must be an object")
    return doc


def _members(tar: tarfile.TarFile, manifest: Manifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
    """Every file of the release, in tar order, each checked against the manifest before it
    is handed out: no member the manifest does not list, no link, device or directory
    trick, no duplicate, and (checked by the caller when the stream ends) none missing."""
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME:
        raise ReleaseError("malformed", f"the release's first member must be {MANIFEST_NAME}")
    seen: set[str] = set()
    while (member := tar.next()) is not None:
        if not member.isfile():
            raise ReleaseError("tampered", f"release member {member.name!r} is not a regular "
                               "file (links and devices are refused)")
        entry = manifest.file(member.name)
        if entry is None:
            raise ReleaseError("tampered", f"release member {member.name!r} is not in the "
                               "signed manifest")
        if member.name in seen:
            raise ReleaseError("tampered", f"release member {member.name!r} appears twice")
        seen.add(member.name)
        if member.size != entry.size:
            raise ReleaseError("tampered", f"{member.name} does not match the signed manifest "
                               f"({member.size} bytes, signed as {entry.size}): altered after "
                               "signing")
        f = tar.extractfile(member)
        assert f is not None
        yield entry, f
    missing = sorted({f.path for f in manifest.files} - seen)
    if missing:
        raise ReleaseError("tampered", f"release is missing {', '.join(missing[:3])}")


def _copy_hashed(src: IO[bytes], entry: FileEntry, out: IO[bytes] | None) -> None:
    h = hashlib.sha256()
    n = 0
    while True:
        block = src.read(CHUNK)
        if not block:
            break
        n += len(block)
        h.update(block)
        if out is not None:
            out.write(block)
    if n != entry.size or h.hexdigest() != entry.sha256:
        raise ReleaseError("tampered", f"{entry.path} does not match the signed manifest "
                           "(altered after signing)")


def verify_release(tar_path: str | Path, public_key: Ed25519PublicKey) -> Manifest:
    """Signature, then every member's hash: the whole release as signed, or ReleaseError.
    Nothing is written anywhere."""
    size = os.path.getsize(tar_path)
    if size > MAX_RELEASE_BYTES:
        raise ReleaseError("malformed", f"release is {size} bytes; the limit is "
                           f"{MAX_RELEASE_BYTES}")
    manifest = verify_manifest(read_manifest_doc(tar_path), public_key)
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for entry, f in _members(tar, manifest):
                _copy_hashed(f, entry, None)
    except (tarfile.TarError, OSError) as e:
        raise ReleaseError("tampered", f"release tar is damaged: {e}") from e
    return manifest


def unpack_release(tar_path: str | Path, public_key: Ed25519PublicKey, dest: str | Path
                   ) -> Manifest:
    """Verify and unpack in one pass into `dest` (which must not exist yet); every file is
    hashed as it is written, and on any mismatch `dest` is removed. The caller renames
    `dest` into place only after this returns."""
    dest = Path(dest)
    doc = read_manifest_doc(tar_path)
    manifest = verify_manifest(doc, public_key)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for entry, f in _members(tar, manifest):
                target = dest / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as out:  # never follows or replaces anything
                    _copy_hashed(f, entry, out)
                target.chmod(0o644)
        (dest / MANIFEST_NAME).write_bytes(json.dumps(doc, sort_keys=True).encode())
    except BaseException:
        _rmtree(dest)
        raise
    return manifest


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_release(out: str | Path, signed_doc: dict, files: dict[str, Path]) -> None:
    """The tar: release.json first, then the files in manifest order, with fixed owners,
    modes and times so the same inputs give the same bytes."""
    manifest = parse_manifest(signed_doc)
    created_s = manifest.created_us // 1_000_000
    tmp = Path(str(out) + ".tmp")
    with tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data_file: IO[bytes], size: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o644, created_s
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, data_file)

        body = json.dumps(signed_doc, sort_keys=True, indent=1).encode()
        add(MANIFEST_NAME, io.BytesIO(body), len(body))
        for entry in manifest.files:
            with open(files[entry.path], "rb") as f:
                add(entry.path, f, entry.size)
    os.replace(tmp, out)


def file_entry(path: str, source: Path) -> FileEntry:
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return FileEntry(check_member_path(path), h.hexdigest(), source.stat().st_size)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
