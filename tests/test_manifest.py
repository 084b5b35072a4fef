"""Manifests and the tier layout (host/manifest.py): round trip, verification, listing, atomic commit."""

import json
import os

import pytest

from gpumat.core.errors import CorruptionError, TierError
from gpumat.host.manifest import (
    FIELDS,
    MANIFEST_DIR,
    commit_manifest,
    foreign_entries,
    list_versions,
    manifest_bytes,
    manifest_path,
    new_manifest,
    read_manifest,
    tier_root,
    valid_block_size,
)

SCHEMA = {"ts": "int64", "item_id": "int32"}


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / MANIFEST_DIR)
    return str(tmp_path)


def _chain(root, n):
    m = new_manifest(None, "create", SCHEMA, 128, [], [])
    commit_manifest(root, m)
    for i in range(n):
        m = new_manifest(m, "append" if i % 2 == 0 else "compact", SCHEMA, 128,
                         [{"path": f"_segments/{i}.gseg", "size": 10 + i, "index_crc": i}],
                         [{"path": f"_lengths/{i}.arrow", "size": 5, "crc": 7}])
        commit_manifest(root, m)
    return m


def test_round_trip_and_listing(root):
    last = _chain(root, 3)
    assert list_versions(root) == [0, 1, 2, 3]
    got = read_manifest(root, 3)
    assert got == last and set(got) == FIELDS
    assert got["parent"] == 2 and got["op"] == "append" and read_manifest(root, 0)["parent"] is None
    assert list(got["schema"]) == ["ts", "item_id"]  # ts first, whatever the order on disk
    # debris in the directory is not a version
    for name in (".tmp-abc", "00000000000000000009.json.tmp", "x.json"):
        open(os.path.join(root, MANIFEST_DIR, name), "w").close()
    assert list_versions(root) == [0, 1, 2, 3]
    assert list_versions(os.path.join(root, "nope")) == []


def test_commit_never_overwrites(root):
    m = _chain(root, 1)
    again = dict(m, op="compact")
    with pytest.raises(TierError, match="committed by another writer"):
        commit_manifest(root, again)
    assert read_manifest(root, 1)["op"] == "append"
    assert sorted(os.listdir(os.path.join(root, MANIFEST_DIR))) == [f"{v:020d}.json" for v in (0, 1)]  # no temp left


def _rewrite(root, v, mutate):
    m = read_manifest(root, v)
    mutate(m)
    with open(manifest_path(root, v), "wb") as f:
        f.write(manifest_bytes(m))


@pytest.mark.parametrize("mutate", [
    lambda m: m.pop("created_unix"),
    lambda m: m.update(extra=1),
    lambda m: m.update(format="other"),
    lambda m: m.update(format_version=2),
    lambda m: m.update(version=7),
    lambda m: m.update(op="delete"),
    lambda m: m.update(block_size=100),
    lambda m: m.update(block_size=True),
    lambda m: m.update(created_unix="yesterday"),
    lambda m: m.update(schema={"item_id": "int64"}),
    lambda m: m.update(segments={}),
    lambda m: m.update(segments=[{"path": "../x.gseg", "size": 1, "index_crc": 1}]),
    lambda m: m.update(segments=[{"path": "_segments/a/b.gseg", "size": 1, "index_crc": 1}]),
    lambda m: m.update(lengths=[{"path": "_lengths/a.arrow", "size": -1, "crc": 1}]),
    lambda m: m.update(lengths=[{"path": "_lengths/a.arrow", "size": 1}]),
])
def test_checksummed_but_invalid_manifests_are_corruption(root, mutate):
    _chain(root, 1)
    _rewrite(root, 1, mutate)
    with pytest.raises(CorruptionError, match="manifest"):
        read_manifest(root, 1)


def test_damaged_bytes_are_corruption(root):
    _chain(root, 1)
    path = manifest_path(root, 1)
    data = open(path, "rb").read()
    for bad in (data[:-5], data.replace(b'"append"', b'"appenD"'), b"", b"{}\nsha256:" + b"0" * 64):
        with open(path, "wb") as f:
            f.write(bad)
        with pytest.raises(CorruptionError, match="manifest"):
            read_manifest(root, 1)
    with pytest.raises(CorruptionError, match="cannot be read"):
        read_manifest(root, 5)
    body = json.dumps([1]).encode()
    with open(path, "wb") as f:
        f.write(body + b"\nsha256:" + __import__("hashlib").sha256(body).hexdigest().encode())
    with pytest.raises(CorruptionError, match="unexpected fields"):
        read_manifest(root, 1)


def test_helpers(tmp_path):
    assert [valid_block_size(b) for b in (1, 128, 65536, 0, 3, 131072, True, 8.0)] == [True] * 3 + [False] * 5
    assert tier_root("file://" + str(tmp_path)) == str(tmp_path) == tier_root(tmp_path)
    assert tier_root("rel") == os.path.abspath("rel")
    for bad in ("", None, 3):
        with pytest.raises(TierError):
            tier_root(bad)
    assert foreign_entries(str(tmp_path / "missing")) == [] and foreign_entries(str(tmp_path)) == []
    (tmp_path / "_manifests").mkdir()
    (tmp_path / "_manifests" / ".tmp-1").write_bytes(b"")
    (tmp_path / "_lengths").mkdir()
    (tmp_path / "_lock").write_bytes(b"")
    assert foreign_entries(str(tmp_path)) == []
    (tmp_path / "_lengths" / "a.arrow").write_bytes(b"")
    (tmp_path / "z").write_bytes(b"")
    (tmp_path / "_segments").write_bytes(b"")  # a file where a subdirectory belongs
    assert foreign_entries(str(tmp_path)) == ["_lengths", "_segments", "z"]
