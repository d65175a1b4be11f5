"""scribelink.release: what a unit accepts and what it refuses, with the reason it gives.
Pure and fast: hand-made releases (fake wheels, real Ed25519 signatures), no pip."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from release_support import HW, make_release, rewrite

from scribelink import release as rel

NOW = 1_800_000_000_000_000


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def refused(code: str, fn, *args, **kw) -> str:
    with pytest.raises(rel.ReleaseError) as e:
        fn(*args, **kw)
    assert e.value.code == code, (e.value.code, str(e.value))
    return str(e.value)


def test_a_signed_release_verifies_and_unpacks_exactly(tmp_path, key):
    r = make_release(tmp_path, key)
    m = rel.verify_release(r, key.public_key())
    assert m.version == "1.2.0" and m.hardware == (HW,) and m.signer == rel.key_id(key)
    dest = tmp_path / "unpacked"
    rel.unpack_release(r, key.public_key(), dest)
    assert (dest / "firmware/main.py").read_bytes() == b"# puck entry point\n"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == sorted(
        [f.path for f in m.files] + [rel.MANIFEST_NAME])


def test_unsigned_release_is_refused(tmp_path, key):
    r = make_release(tmp_path, key)
    doc = rel.read_manifest_doc(r)
    unsigned = {"manifest": doc["manifest"]}
    bad = rewrite(r, tmp_path / "unsigned.tar", doc=unsigned)
    assert "not signed" in refused("unsigned", rel.verify_release, bad, key.public_key())


def test_release_signed_by_another_key_is_refused(tmp_path, key):
    other = Ed25519PrivateKey.generate()
    r = make_release(tmp_path, other)
    msg = refused("wrong_key", rel.verify_release, r, key.public_key())
    assert rel.key_id(other) in msg and rel.key_id(key) in msg


def test_resigning_a_manifest_with_another_key_under_the_pinned_key_id_fails(tmp_path, key):
    """A relay that re-signs with its own key and copies the pinned key id as signer."""
    r = make_release(tmp_path, key)
    doc = rel.read_manifest_doc(r)
    forged = rel.sign_manifest(doc["manifest"], Ed25519PrivateKey.generate())
    forged["signer"] = rel.key_id(key)
    bad = rewrite(r, tmp_path / "forged.tar", doc=forged)
    refused("bad_signature", rel.verify_release, bad, key.public_key())


def test_an_altered_manifest_is_refused(tmp_path, key):
    r = make_release(tmp_path, key)
    doc = rel.read_manifest_doc(r)
    doc["manifest"]["version"] = "9.9.9"
    doc["manifest"]["requirement"] = "scribelink[unit]==9.9.9"
    bad = rewrite(r, tmp_path / "altered.tar", doc=doc)
    assert "altered" in refused("bad_signature", rel.verify_release, bad, key.public_key())


@pytest.mark.parametrize("change", ["replace", "add", "drop", "symlink", "traversal"])
def test_tampered_contents_are_refused_and_nothing_stays_unpacked(tmp_path, key, change):
    r = make_release(tmp_path, key)
    wheel = "wheels/scribelink-1.2.0-py3-none-any.whl"
    kw = {
        "replace": {"replace": {wheel: b"PK evil wheel!!!!!!!"}},
        "add": {"add": {"wheels/evil-1.0-py3-none-any.whl": b"PK"}},
        "drop": {"drop": {"firmware/main.py"}},
        "symlink": {"symlink": ("wheels/link.whl", "/etc/shadow")},
        "traversal": {"add": {"wheels/../../etc/cron.d/x": b"* * * * * root sh"}},
    }[change]
    bad = rewrite(r, tmp_path / f"{change}.tar", **kw)
    refused("tampered", rel.verify_release, bad, key.public_key())
    dest = tmp_path / "dest"
    refused("tampered", rel.unpack_release, bad, key.public_key(), dest)
    assert not dest.exists()
    assert not (tmp_path / "etc").exists()


def test_a_same_size_altered_file_is_caught_by_its_hash(tmp_path, key):
    r = make_release(tmp_path, key)
    bad = rewrite(r, tmp_path / "flip.tar", replace={"firmware/main.py": b"# puck entry poinT\n"})
    msg = refused("tampered", rel.verify_release, bad, key.public_key())
    assert "firmware/main.py" in msg


def test_manifest_paths_cannot_escape(tmp_path, key):
    for path in ("/etc/passwd", "wheels/../x.whl", "other/x", "wheels", "wheels\\x.whl"):
        with pytest.raises(rel.ReleaseError):
            rel.check_member_path(path)


def test_downgrade_same_version_hardware_and_failed_before(tmp_path, key):
    m = rel.verify_release(make_release(tmp_path, key, version="1.2.0"), key.public_key())
    rel.check_applicable(m, running="1.1.9", hardware=HW)  # newer: fine
    assert "older" in refused("downgrade", rel.check_applicable, m, running="1.10.0",
                              hardware=HW)
    rel.check_applicable(m, running="1.10.0", hardware=HW, downgrade_permitted=True)
    refused("same_version", rel.check_applicable, m, running="1.2.0", hardware=HW)
    msg = refused("wrong_hardware", rel.check_applicable, m, running="1.0.0",
                  hardware="linux-aarch64/cpython-311")
    assert "linux-aarch64" in msg
    refused("failed_before", rel.check_applicable, m, running="1.0.0", hardware=HW,
            failed_versions=frozenset({"1.2.0"}))


def test_versions_compare_as_numbers_and_odd_ones_are_refused():
    assert rel.parse_version("1.10.0") > rel.parse_version("1.9.9")
    assert rel.bump("0.1.9") == "0.1.10"
    for bad in ("1", "v1.2", "1.2.3-rc1", "01.2", "1.2.3.4.5", "", None):
        with pytest.raises(rel.ReleaseError):
            rel.parse_version(bad)


def test_downgrade_permit_is_signed_scoped_and_expires(key):
    other = Ed25519PrivateKey.generate()
    body = rel.permit_body(version="1.0.0", units=["exam-3"], issued_us=NOW,
                           expires_us=NOW + 10**9)
    good = json.loads(json.dumps(rel.sign_permit(body, key)))
    ok = rel.verify_permit(good, key.public_key(), version="1.0.0", unit_id="exam-3",
                           now_us=NOW)
    assert ok["version"] == "1.0.0"
    pk = key.public_key()
    refused("bad_permit", rel.verify_permit, good, pk, version="1.0.1", unit_id="exam-3",
            now_us=NOW)
    refused("bad_permit", rel.verify_permit, good, pk, version="1.0.0", unit_id="exam-4",
            now_us=NOW)
    refused("bad_permit", rel.verify_permit, good, pk, version="1.0.0", unit_id="exam-3",
            now_us=NOW + 2 * 10**9)
    refused("bad_permit", rel.verify_permit, rel.sign_permit(body, other), pk,
            version="1.0.0", unit_id="exam-3", now_us=NOW)
    widened = json.loads(json.dumps(good))
    widened["permit"]["units"] = []
    refused("bad_permit", rel.verify_permit, widened, pk, version="1.0.0", unit_id="exam-4",
            now_us=NOW)
    # a release signature is not a permit, nor the other way round (separate domains)
    as_release = {"permit": body, "signer": rel.key_id(key),
                  "sig": rel.sign_manifest(body, key)["sig"]}
    refused("bad_permit", rel.verify_permit, as_release, pk, version="1.0.0",
            unit_id="exam-3", now_us=NOW)


def test_not_a_release_at_all(tmp_path, key):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar" * 100)
    refused("malformed", rel.verify_release, junk, key.public_key())
