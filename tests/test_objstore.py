"""Tiers on object storage (host/objstore.py, docs/OBJECT_STORES.md), against a real S3 API: moto's
standalone server on loopback (tests/s3server.py), sometimes behind a proxy that throttles, fails
and drops requests. Nothing of gpumat is mocked: objects land in the bucket, concurrent writer
processes race with conditional PUTs, bits are flipped in stored objects, retries are real."""

import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from gpumat.core.errors import CorruptionError, TierError
from gpumat.host import objstore
from gpumat.host.tier import Tier
from s3server import BUCKET, FaultProxy, client, keys, s3, s3_root  # noqa: F401 - fixtures
from test_tier import SCHEMA, Model, check_version, events

TESTS = os.path.dirname(__file__)


def _bucket_key(root: str, name: str) -> tuple[str, str]:
    bucket, _, prefix = root[len("s3://"):].partition("/")
    return bucket, f"{prefix}/{name}"


def build(uri, n_appends=5, big_at=(2,), compact_at=(3,), auto_compact=True, **kw):
    """A tier with small (inline) appends, a large one (its own data file), a compaction."""
    t = Tier.open(Tier.create(uri, SCHEMA, **kw).uri, auto_compact=auto_compact)
    m = Model()
    for i in range(n_appends):
        tab = events(i, 40000 if i in big_at else 60)
        t.append(tab)
        m.append(tab)
        if i in compact_at:
            t.compact()
            m.compact()
    return t, m


def test_objects_land_in_the_bucket_and_nothing_on_disk(s3, s3_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"{s3_root}/t"
    t, m = build(uri, n_appends=18)  # past a checkpoint (every 16 versions)
    assert type(t.store).__name__ == "ObjectStore" and t.uri == uri
    names = keys(s3, uri)
    kinds = {k.split("/")[0] for k in names}
    assert {"_log", "_data", "_checkpoints", "_runs", "_lock"} <= kinds, kinds
    assert not any(k.startswith("_tmp/") and not k.endswith(".probe") for k in names)
    assert os.listdir(tmp_path) == []  # nothing written locally
    objstore.clear_cache()
    for v in (t.version, 3, 0):
        check_version(Tier.open(uri, version=v), m, v, users=range(-1, 21))
    check_version(Tier.open(f"{s3_root}/t/"), m, t.version, users=range(0, 3))  # a trailing slash is the same tier
    s = Tier.open(uri).io_stats()
    assert s["requests"] <= 12, s  # open: witness, a wave of HEADs, checkpoints listed, checkpoint, runs, records
    with pytest.raises(TierError, match="already exists"):
        Tier.create(uri, SCHEMA)
    assert Tier.exists(uri) and not Tier.exists(f"{s3_root}/nothing")


def test_explicit_filesystem_and_pyarrow_client(s3, s3_root):
    """``filesystem=`` (the URI a path inside it), a SubTreeFileSystem over it, and pyarrow's own S3
    client (GPUMAT_S3_CLIENT=pyarrow: no conditional writes, so read-only)."""
    fs = pafs.S3FileSystem(endpoint_override=s3, access_key="testing", secret_key="testing", region="us-east-1")
    path = s3_root[len("s3://"):] + "/t"
    t = Tier.create(path, SCHEMA, filesystem=fs)
    m = Model()
    for i in range(3):
        tab = events(i, 50)
        t.append(tab)
        m.append(tab)
    sub = pafs.SubTreeFileSystem(s3_root[len("s3://"):], fs)
    check_version(Tier.open("t", filesystem=sub), m, 3)
    os.environ["GPUMAT_S3_CLIENT"] = "pyarrow"
    try:
        r = Tier.open(f"{s3_root}/t")
        assert isinstance(r.store.backend, objstore.ArrowBackend)
        check_version(r, m, 3)
        check_version(Tier.open(f"{s3_root}/t", version=2), m, 2)
        with pytest.raises(TierError, match="read-only"):
            r.append(events(9, 5))
    finally:
        del os.environ["GPUMAT_S3_CLIENT"]
    assert Tier.open(f"{s3_root}/t").version == 3


def test_bad_uris_are_tier_errors_that_say_what_was_tried(s3, s3_root, monkeypatch):
    with pytest.raises(TierError, match="from_uri"):
        Tier.open("nosuchscheme://bucket/t")
    with pytest.raises(TierError, match="does not exist"):
        Tier.create("s3://no-such-bucket-gpumat/t", SCHEMA)
    with pytest.raises(TierError, match="no tier"):
        Tier.open(f"{s3_root}/missing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("GPUMAT_OBJECT_RETRIES", "3")
    t0 = time.monotonic()
    with pytest.raises(TierError, match=r"127\.0\.0\.1:9.*|3 attempts") as ei:
        Tier.open(f"{s3_root}/t")
    assert "attempts" in str(ei.value) and "127.0.0.1:9" in str(ei.value), ei.value
    assert time.monotonic() - t0 < 30


WRITER = textwrap.dedent("""
    import sys, numpy as np, pyarrow as pa
    from gpumat.host.tier import Tier
    uri, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t = Tier.open(uri)
    for i in range(n):
        k = 30000 if i % 4 == 1 else 7  # some appends need a data file of their own
        t.append(pa.table({"user_id": np.arange(k) % 5, "ts": np.full(k, me), "v": me * 10**9 + i * 10**5 + np.arange(k)}))
        if i == 5:
            t.compact()
    print(t.io_stats()["requests"])
""")


def test_two_writer_processes_lose_nothing(s3, s3_root):
    uri = f"{s3_root}/t"
    Tier.create(uri, {"ts": "int64", "v": "int64"})
    n = 8
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(me), str(n)], stdout=subprocess.PIPE, text=True)
             for me in (1, 2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    objstore.clear_cache()
    t = Tier.open(uri)
    ops = [r["operation"] for r in t.versions()]
    assert ops.count("append") == 2 * n and 1 <= ops.count("compact") <= 2 and t.version == len(ops) - 1, ops
    k = [30000 if i % 4 == 1 else 7 for i in range(n)]
    for u in range(5):
        h = t.read_history(u)
        for me in (1, 2):
            mine = h["v"][h["ts"] == me]
            want = np.concatenate([me * 10**9 + i * 10**5 + np.arange(k[i])[np.arange(k[i]) % 5 == u] for i in range(n)])
            assert mine.tolist() == want.tolist(), (u, me)
    # every data file left is referenced by the newest version or by one a later commit superseded
    live = {e["path"] for e in t._reader.state.files.values()}
    data = {f"_data/{x.split('/')[-1]}" for x in keys(s3, uri) if x.startswith("_data/")}
    assert live & data == {p for p in live if p.startswith("_data/")}


def test_flipped_bits_are_corruption_or_harmless(s3, s3_root):
    uri = f"{s3_root}/t"
    t, m = build(uri, n_appends=18, auto_compact=False)
    c = client(s3)
    bucket, prefix = _bucket_key(uri, "")
    objs = sorted(((o["Size"], o["Key"]) for o in c.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
                   if o["Size"] and not o["Key"].endswith((".probe", "_lock"))), reverse=True)
    by_kind = {}
    for size, key in objs:
        by_kind.setdefault(key[len(prefix):].split("/")[0], (size, key))
    targets = [objs[0]] + [v for k, v in sorted(by_kind.items()) if v != objs[0]]
    assert {"_log", "_data", "_checkpoints", "_runs"} <= set(by_kind), by_kind
    rng = random.Random(5)
    outcomes, wrong = [], []
    for size, key in targets:
        original = c.get_object(Bucket=bucket, Key=key)["Body"].read()
        for trial in range(3 if key == objs[0][1] else 2):
            bit = rng.randrange(size * 8) if trial else rng.randrange(max(0, size - 64) * 8, size * 8)
            bad = bytearray(original)
            bad[bit // 8] ^= 1 << (bit % 8)
            c.put_object(Bucket=bucket, Key=key, Body=bytes(bad))
            objstore.clear_cache()  # what another machine would see
            try:
                for v in (t.version, 17, 9):
                    check_version(Tier.open(uri, version=v), m, v, users=range(0, 21))
                outcomes.append("harmless")
            except CorruptionError:
                outcomes.append("corruption")
            except Exception as e:  # noqa: BLE001 - any other outcome is a divergence
                wrong.append(f"{key} bit {bit}: {type(e).__name__}: {str(e)[:200]}")
            c.put_object(Bucket=bucket, Key=key, Body=original)
    objstore.clear_cache()
    assert not wrong, "\n".join(wrong)
    assert "corruption" in outcomes


def test_retries_through_a_throttling_proxy(s3, s3_root):
    """503 SlowDown, 500, dropped connections and PUTs whose answer is lost after they were applied:
    every operation still succeeds, exactly once (a commit whose reply was lost is recognized)."""
    proxy = FaultProxy(s3, slowdown=0.15, error=0.05, reset=0.05, lost_reply=0.15, seed=3)
    try:
        fs = pafs.S3FileSystem(endpoint_override=proxy.endpoint, access_key="testing", secret_key="testing",
                               region="us-east-1")
        path = s3_root[len("s3://"):] + "/t"
        t = Tier.create(path, SCHEMA, filesystem=fs)
        t.store.base_delay_s = t.store.max_delay_s = 0.001
        m = Model()
        for i in range(6):
            tab = events(i, 30000 if i == 2 else 50)
            t.append(tab)
            m.append(tab)
        t.compact()
        m.compact()
        objstore.clear_cache()
        r = Tier.open(path, filesystem=fs)
        r.store.base_delay_s = r.store.max_delay_s = 0.001
        check_version(r, m, 7)
        check_version(Tier.open(path, version=3, filesystem=fs), m, 3)
        assert t.io_stats()["retries"] > 0 and r.io_stats()["retries"] > 0
        assert proxy.counts["slowdown"] and proxy.counts["reset"] and proxy.counts["lost_reply"], proxy.counts
        assert t.vacuum(min_age_s=0)["files_removed"] > 0
        check_version(Tier.open(path, filesystem=fs), m, 7)
    finally:
        proxy.close()
    objstore.clear_cache()
    check_version(Tier.open(f"{s3_root}/t"), m, 7)  # straight to the server: the same tier
    assert [v["version"] for v in Tier.open(f"{s3_root}/t").versions()] == [7]


def test_vacuum_ages_by_last_modified_and_expires(s3, s3_root):
    uri = f"{s3_root}/t"
    t, m = build(uri, n_appends=6, big_at=(1,), compact_at=(3,))
    c = client(s3)
    bucket, _ = _bucket_key(uri, "")
    for debris in ("_data/0123456789abcdef.gseg", "_tmp/x.tmp"):
        c.put_object(Bucket=bucket, Key=_bucket_key(uri, debris)[1], Body=b"x" * 100)
    before = set(keys(s3, uri))
    r = t.vacuum(min_age_s=3600)  # every version and the debris are younger: nothing goes
    assert r["files_removed"] == 0 and set(keys(s3, uri)) == before
    r = t.vacuum(min_age_s=0)  # the files compaction superseded and the debris go (by LastModified)
    after = set(keys(s3, uri))
    assert r["files_removed"] >= 3 and r["bytes_freed"] > 200 and len(before - after) >= 3
    assert "_data/0123456789abcdef.gseg" not in after and "_tmp/x.tmp" not in after
    check_version(Tier.open(uri), m, t.version)
    r = t.vacuum(keep_last=2, min_age_s=0)
    assert r["expired_before"] == t.version - 1
    with pytest.raises(TierError, match="expired"):
        Tier.open(uri, version=2)
    objstore.clear_cache()
    assert Tier.open(uri).lengths(np.arange(20), version=2).tolist() == [m.length(u, 2) for u in range(20)]
    check_version(Tier.open(uri), m, t.version)


def test_repair_after_a_lost_newest_record(s3, s3_root):
    uri = f"{s3_root}/t"
    t, m = build(uri, n_appends=4, big_at=(), compact_at=())
    c = client(s3)
    bucket, key = _bucket_key(uri, f"_log/{t.version:020d}.rec")
    c.delete_object(Bucket=bucket, Key=key)
    objstore.clear_cache()
    with pytest.raises(CorruptionError):
        Tier.open(uri)
    r = Tier.repair(uri)
    assert not r["ok"] and r["intact"] == 3
    r = Tier.repair(uri, roll_back=True)
    assert r["version"] == 5
    t2 = Tier.open(uri)
    check_version(t2, m, 3)
    with pytest.raises(TierError, match="lost"):
        Tier.open(uri, version=4)
    tab = events(7, 20)
    t2.append(tab)
    m.versions = m.versions[:4] + [m.versions[3], m.versions[3]]  # 4 lost, 5 = 3
    m.append(tab)
    check_version(Tier.open(uri), m, 6)


def test_requests_per_batch_one_get_per_run_and_a_warm_cache(s3, s3_root):
    """A planned batch against a large data file: at most one GET per coalesced run of blocks when
    cold, none when the pages are cached; with 20 ms injected per request, the batch costs a few
    round trips, not one per GET (they are concurrent)."""
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import check_pointers, parse_examples
    from gpumat.host.planner import plan

    uri = f"{s3_root}/t"
    rng = np.random.default_rng(0)
    n = 700_000  # over 4 MiB of blobs: the segment is read by ranges, not whole
    users = rng.integers(0, 200, n)
    t = Tier.create(uri, SCHEMA)
    t.append(pa.table({"user_id": users, "ts": np.arange(n), "item_id": rng.integers(-(2**63), 2**63 - 1, n),
                       "action": rng.integers(0, 5, n).astype(np.int32)}))
    assert t.compact() == t.version  # one big compacted file, read by ranges
    lens = t.lengths(np.arange(200))
    pick = rng.choice(200, 64, replace=False)
    ex = pa.table({"user_id": pick, "version": [t.version] * 64, "length": lens[pick], "request_ts": [2**62] * 64})
    tenant = Tenant("mid", ["item_id", "action"], 700)
    objstore.clear_cache()
    h = Tier.open(uri)
    assert not h._reader.segment(0).small
    e = parse_examples(ex, h.schema)
    check_pointers(e, h)
    s0 = h.io_stats()
    staged = plan(h, e, tenant, check_leakage=True)
    d = objstore.IOStats.delta(h.io_stats(), s0)
    assert d["blocks_read"] > 0 and staged.nbytes_read > 0
    assert 0 < d["get"] <= d["block_runs"], d
    s1 = h.io_stats()
    plan(h, e, tenant, check_leakage=True)
    d2 = objstore.IOStats.delta(h.io_stats(), s1)
    assert d2["get"] == 0 and d2["cache_hits"] > 0, d2
    # all columns at once: the same blocks as column by column, in two waves of requests instead of six
    d = h.directory()
    si = np.flatnonzero(np.isin(d.user_id, pick[:8]))
    lo, hi = np.maximum(d.nblocks[si] - 3, 0), d.nblocks[si]
    many = h.read_blocks_many(["item_id", "action", "ts"], si, lo, hi)
    for c in ("item_id", "action", "ts"):
        one = h.read_blocks(c, si, lo, hi)
        assert all(np.array_equal(a, b) for a, b in zip(one[:2], many[c][:2])) and one[2] == many[c][2], c
    h.store.coalesce_gap_bytes = 0  # many GETs: concurrent, so 20 ms each adds a few round trips, not 20 ms x GETs
    walls = {}
    for latency in (0.0, 0.02):
        objstore.clear_cache()
        h.store.inject_latency_s = latency
        t0 = time.perf_counter()
        s2 = h.io_stats()
        plan(h, e, tenant, check_leakage=True)
        walls[latency] = time.perf_counter() - t0
        d3 = objstore.IOStats.delta(h.io_stats(), s2)
    assert d3["get"] >= 30 and walls[0.02] - walls[0.0] < 0.02 * d3["get"] / 4, (walls, d3)
    # the reader keeps the heads (tags, anchors) of the blobs it read: with the page cache cold
    # again, a batch read before takes one wave of GETs (fields and payload), not two
    h.store.inject_latency_s = 0.0
    objstore.clear_cache()
    waves, fetch = [], h.store.fetch

    def counting(reqs):
        s = h.io_stats()
        fetch(reqs)
        if objstore.IOStats.delta(h.io_stats(), s)["get"]:
            waves.append(objstore.IOStats.delta(h.io_stats(), s)["get"])

    h.store.fetch = counting
    try:
        again = plan(h, e, tenant, check_leakage=True)
    finally:
        del h.store.fetch
    assert len(waves) == 1 and h._reader._meta.hits > 0, waves
    assert again.nbytes_read == staged.nbytes_read  # (what the blocks need: the same, kept or read)


def test_bench_storage_on_s3(s3, s3_root, tmp_path):
    """``gpumat bench storage --uri s3://...``: requests and bytes per batch, a loader's waits."""
    import json

    from gpumat.cli import main

    out = tmp_path / "storage.json"
    assert main(["bench", "storage", "--scale", "0.02", "--quiet", "--uri", f"{s3_root}/bench", "--latency-ms", "5",
                 "--loader-batches", "2", "--step-ms", "5", "--batch-size", "32", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["object_store"]
    assert r["uri"] == f"{s3_root}/bench" and set(r["tenants"]) == {"short", "mid", "long"}
    for t in r["tenants"].values():
        assert t["cold"]["blocks"] > 0 and t["warm"]["gets"] == 0 and t["loader"]["batches"] == 2
        assert t["uncached"]["max_gets_over_runs_in_a_batch"] <= 1.0
        assert t["uncached"]["gets"] <= t["uncached_noheads"]["gets"]  # (the heads kept: no more GETs)
    assert any(k.startswith("_log/") for k in keys(s3, f"{s3_root}/bench"))


def test_segment_dictionaries_on_s3(s3, s3_root, monkeypatch):
    """A tier whose bulk segment (a data file of its own) stores item ids as codes into a segment
    dictionary, on S3, read by ranges: planned batches equal the histories, and the dictionary is
    read once per open segment (the second batch reads neither it nor the cached pages)."""
    from gpumat.core.tenant import Tenant
    from gpumat.host import codec, segment
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan
    from gpumat.ops import decode_gather
    from test_pages import zipf_table

    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # every segment by ranges of chunks
    uri = f"{s3_root}/t"
    t = Tier.create(uri, SCHEMA)
    rng = np.random.default_rng(3)
    t.append(zipf_table(rng, np.arange(8), 300_000))
    t.append(zipf_table(rng, np.arange(8), 50, 10**7))
    objstore.clear_cache()
    h = Tier.open(uri)
    assert (h._reader.blobs("item_id")[2] & codec.ENC_DICT).any()
    assert any(e["path"] and e.get("dicts") for e in h._reader.state.files.values())
    ex = pa.table({"user_id": np.arange(8), "version": [h.version] * 8, "length": h.lengths(np.arange(8)),
                   "request_ts": [2**62] * 8})
    e = parse_examples(ex, h.schema)
    tenant = Tenant("t", ["item_id", "ts"], 5000)
    got, _ = decode_gather(plan(h, e, tenant, check_leakage=True), "reference")
    assert h._reader.dict_bytes_read > 0 and h.io_stats()["get"] > 0
    s1 = h.io_stats()
    again, _ = decode_gather(plan(h, e, tenant, check_leakage=True), "reference")
    assert objstore.IOStats.delta(h.io_stats(), s1)["get"] == 0
    want = np.concatenate([h.read_history(u)["item_id"][-5000:] for u in range(8)])
    assert got["item_id"].tolist() == want.tolist() == again["item_id"].tolist()


def test_tables_of_codes_on_s3(s3, s3_root, monkeypatch):
    """A tier whose stripe tables hold codes into the segment dictionary (64-bit hashed ids a user
    plays again), on S3, read by ranges: planned batches of users whose stripes all take tables of
    codes (the segment dictionary then read for them, by a fetch of its own) and of every user equal
    the events written; the second plan reads the tables again, not the segment dictionary (kept)."""
    from gpumat.core.tenant import Tenant
    from gpumat.host import codec, native, segment
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan
    from gpumat.ops import decode_gather
    from test_pages import SCHEMA as SCHEMA3
    from test_stripe_tables import HASHED_USERS, hashed_replays

    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # every segment by ranges of chunks
    uri = f"{s3_root}/codes"
    sc = np.array(HASHED_USERS)
    cols = hashed_replays(np.random.default_rng(9), sc)
    t = Tier.create(uri, SCHEMA3)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **cols}))
    objstore.clear_cache()
    h = Tier.open(uri)
    assert [e.get("tables") for e in h._reader.state.files.values() if e["path"]] == [2]
    enc = h._reader.blobs("item_id")[2]
    coded = np.flatnonzero((enc >> 8) != (enc >> 8).min())  # (the stripes of tables, of codes here)
    assert 0 < len(coded) < len(sc)
    tenant = Tenant("t", ["item_id", "ts"], 3000)
    first = np.cumsum(sc) - sc
    sizes = h._reader._dict_sizes("item_id")
    read = []
    for users in (h.directory().user_id[coded], np.arange(len(sc))):
        h._reader.dict_bytes_read = 0
        ex = pa.table({"user_id": users, "version": [h.version] * len(users), "length": h.lengths(users),
                       "request_ts": [2**62] * len(users)})
        got, _ = decode_gather(plan(h, parse_examples(ex, h.schema), tenant, check_leakage=True), "reference")
        want = np.concatenate([cols["item_id"][first[u] : first[u] + sc[u]][-3000:] for u in users.tolist()])
        assert got["item_id"].tolist() == want.tolist()
        read.append(h._reader.dict_bytes_read)
    seg_dict = sizes[min(sizes)]
    assert read[0] == seg_dict + sum(sizes[int(k)] for k in (h.directory().seg[coded].astype(np.int64) << 40) | (enc[coded] >> 8))
    assert 0 < read[1] <= sum(sizes.values()) - seg_dict and (codec.ENC_DICT & enc).all()


def test_windows_read_part_of_long_tables_on_s3(s3, s3_root, monkeypatch):
    """On S3, read by ranges: the last events of long listening histories read only the pages of
    their stripe tables (of codes) that their codes index, and equal the events written."""
    from gpumat.core.tenant import Tenant
    from gpumat.host import native, reader, segment
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan
    from gpumat.ops import decode_gather
    from test_pages import SCHEMA as SCHEMA3
    from test_stripe_tables import album_plays

    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # every segment by ranges of chunks
    rng = np.random.default_rng(4)
    sc = np.array([50000, 30000])
    ids = rng.integers(-(1 << 62), 1 << 62, (20000, 12))
    items = np.concatenate([album_plays(rng, int(n), ids) for n in sc])
    uri = f"{s3_root}/long"
    t = Tier.create(uri, SCHEMA3)
    n = int(sc.sum())
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), "ts": np.arange(n, dtype=np.int64), "item_id": items,
                       "action": np.zeros(n, np.int32)}))
    objstore.clear_cache()
    h = Tier.open(uri)
    _, size, keep = (h._reader._dict_sizes("item_id"), *h._reader._dsarr["item_id"][1:])
    users = np.arange(len(sc))
    ex = pa.table({"user_id": users, "version": [h.version] * 2, "length": h.lengths(users), "request_ts": [2**62] * 2})
    got, _ = decode_gather(plan(h, parse_examples(ex, h.schema), Tenant("t", ["item_id"], 100), check_leakage=True),
                           "reference")
    first = np.cumsum(sc) - sc
    assert got["item_id"].tolist() == np.concatenate([items[f + k - 100 : f + k] for f, k in zip(first, sc)]).tolist()
    tables = int(size[keep == 0].sum())
    assert (size[keep == 0] >= 3 * reader.TABLE_PART_BYTES).all()
    assert 0 < h._reader.dict_bytes_read - int(size[keep != 0].sum()) < 0.4 * tables
    waves = {}  # sequential fetches of a plan: the same with tables read in part as whole (their heads in the first)
    for part in (reader.TABLE_PART_BYTES, 1 << 62):
        monkeypatch.setattr(reader, "TABLE_PART_BYTES", part)
        objstore.clear_cache()
        h2 = Tier.open(uri)
        plan(h2, parse_examples(ex, h2.schema), Tenant("t", ["ts"], 100), check_leakage=False)  # (the index, first)
        calls = []
        fetch = h2._store.fetch
        monkeypatch.setattr(h2._store, "fetch", lambda reqs: (calls.append(len(reqs)), fetch(reqs))[1])
        plan(h2, parse_examples(ex, h2.schema), Tenant("t", ["item_id"], 100), check_leakage=True)
        waves[part] = len(calls)
    assert len(set(waves.values())) == 1, waves
