"""Packs (docs/DESIGN.md §2): runs of short histories sharing blobs, each stripe a range of its
pack's events. Every read path against the model (histories, whole stripes in any order, block
ranges, planned batches through the reference backend), the writer's choice (packs only where the
blobs come out smaller), and damaged pack flags in an index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.core.tenant import Tenant
from gpumat.host import codec, segment, writer
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan
from gpumat.host.reference import materialize_staged_reference
from gpumat.host.tier import Tier
from test_tier import Model, check_version

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}


def short_histories(seed: int, users: int, most: int, t0: int = 1_600_000_000) -> pa.Table:
    """``users`` users of 1 .. ``most`` events each: timestamps seconds to days apart from a start of
    their own, Zipf-like items, a few actions; rows in time order across users."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, most + 1, users)
    uid = np.repeat(rng.permutation(users * 3)[:users], n)
    start = np.repeat(t0 + rng.integers(0, 10**8, users), n)
    ts = start + np.cumsum(rng.choice([0, 2, 30, 3600, 86400], int(n.sum()), p=[0.3, 0.3, 0.2, 0.15, 0.05]))
    order = np.argsort(ts, kind="stable")
    return pa.table({"user_id": uid[order], "ts": ts[order],
                     "item_id": (rng.zipf(1.3, int(n.sum())) % 5000)[order].astype(np.int64),
                     "action": rng.choice(np.arange(4, dtype=np.int32), int(n.sum()), p=[0.7, 0.2, 0.07, 0.03])[order]})


def listening(seed: int, real: int, each: int, cut: int, t0: int = 1_600_000_000) -> pa.Table:
    """``real`` listening histories of ``each`` events cut into users of ``cut`` events (ids
    ``1000 r + i``: one real user's pieces side by side in a segment): item ids of 10^6, 15% of the
    events starting a replay of 12 items that followed a point of the last 300 (an album played
    again), whose source mostly lies in another piece of the same history."""
    rng = np.random.default_rng(seed)
    uid, ts, item = [], [], []
    for r in range(real):
        h: list = []
        while len(h) < each:
            if len(h) > 24 and rng.random() < 0.15:
                s = int(rng.integers(max(0, len(h) - 300), len(h) - 12))
                h += h[s : s + 12]
            else:
                h.append(int(rng.integers(0, 10**6)))
        uid += [r * 1000 + i // cut for i in range(each)]
        ts.append(t0 + r * 10**6 + np.cumsum(rng.integers(60, 400, each)))
        item += h[:each]
    n = len(uid)
    return pa.table({"user_id": np.array(uid), "ts": np.concatenate(ts), "item_id": np.array(item, np.int64),
                     "action": rng.choice(np.arange(3, dtype=np.int32), n, p=[0.8, 0.15, 0.05])})


@pytest.fixture(scope="module", params=["bs8", "bs128", "listening"])
def packed(request, tmp_path_factory):
    """Short histories in packs of a block (blocks of 8 and 128), and pieces of listening histories
    in packs of up to ``writer.PACK_LARGE_EVENTS`` (blocks of 128, packs of several blocks)."""
    t = Tier.create(str(tmp_path_factory.mktemp("packs") / "t"), SCHEMA, block_size=8 if request.param == "bs8" else 128)
    m = Model()
    if request.param == "listening":
        tabs = [listening(0, 16, 1200, 24), listening(1, 8, 700, 8, t0=1_700_000_000), listening(2, 6, 900, 40, t0=1_800_000_000)]
    else:
        tabs = [short_histories(i, users, most) for i, (users, most) in enumerate([(300, 12), (200, 40), (150, 5), (400, 3)])]
    for tab in tabs:
        t.append(tab)
        m.append(tab)
    d = t.directory()
    # packs of a block, or (listening) of several: a replay's source in the pack's table
    assert (d.bcount[~d.owner | (d.skip > 0)] <= writer.PACK_EVENTS).all() != (request.param == "listening")
    return t, m


def test_packs_are_written_and_read_back(packed):
    t, m = packed
    st = t.stats()
    assert st["packed_stripes"] > 0  # short histories share blobs
    d = t.directory()
    assert ((d.skip + d.count <= d.bcount) & (d.bcount >= d.count)).all() and not d.owner.all()
    for v in range(t.version + 1):
        check_version(Tier.open(t.uri, version=v), m, v, users=np.unique(d.user_id)[::7].tolist() + [-5])
    # whole stripes, in any order and repeated: each stripe's own events
    rng = np.random.default_rng(1)
    want = {c: {} for c in SCHEMA}
    for u in np.unique(d.user_id):
        si = d.user_stripes(u)
        for c in SCHEMA:
            h = m.history(int(u), t.version, c)
            for i in si:
                want[c][int(i)] = h[int(d.start[i]) : int(d.start[i] + d.count[i])]
    si = rng.choice(len(d), 3 * len(d))
    for c in SCHEMA:
        got = t.decode_stripes(c, si)
        assert got.tolist() == [x for i in si for x in want[c][int(i)]], c
        # the block path (read_blocks, then the blocks' values, then the stripes' own among them)
        blocks = t.read_blocks(c, si, np.zeros(len(si), np.int64), d.nblocks[si])
        cnt, own = d.block_values(si, t.block_size)
        assert codec.decode_blocks(blocks[0], blocks[1], cnt, dicts=blocks.dicts)[own].tolist() == got.tolist(), c
    # any block window of any stripe: its own events among the blocks' values
    from test_pages import window_values, windows

    whole = {int(u): {c: m.history(int(u), t.version, c) for c in SCHEMA} for u in np.unique(d.user_id)}
    si, lo, hi = windows(rng, d, 400)
    for c in SCHEMA:
        blocks = t.read_blocks(c, si, lo, hi)
        cnt, own = d.block_values(si, t.block_size, lo, hi)
        got = codec.decode_blocks(blocks[0], blocks[1], cnt, dicts=blocks.dicts)[own]
        assert got.tolist() == window_values(whole, d, si, lo, hi, c, t.block_size).tolist(), c
    # the tier compacted: the same histories (packed again where that pays)
    t2 = Tier.open(t.uri)
    t2.compact()
    m.compact()
    check_version(t2, m, t2.version, users=np.unique(d.user_id)[::5].tolist())


@pytest.mark.parametrize("bs", [8, 128])
def test_runs_of_whole_packs_decode_as_their_blobs(tmp_path, monkeypatch, packed, bs):
    """A read of a run of rows that is whole blobs (``Directory.packed_run``: each pack's stripes
    one after another, none left out: a tier of one append, whose rows are in pack order) decodes
    those blobs straight to its values, taking the column's plan by blobs
    (``VersionReader._plan3``); any other run (a pack cut, the packs of several appends, whose
    stripes lie between other users' rows) takes the path that finds each blob once: the same
    values as that path's, and as the model's, every way."""
    from gpumat.host import native

    if not native.available()[0]:
        pytest.skip("the whole-blob reads run where the C library is built")
    t = Tier.create(str(tmp_path / "t"), SCHEMA, block_size=bs)
    m = Model()
    tab = short_histories(7, 600, 3)
    t.append(tab)
    m.append(tab)
    for tier, model, one in ((t, m, True), (*packed, False)):
        r = Tier.open(tier.uri, version=tier.version)._reader  # (a reader of its own: its plans made here)
        d = r.directory()
        rows = d.blob_rows()
        assert len(rows) < len(d) and (d.skip[rows] == 0).all()
        want = {c: {} for c in SCHEMA}
        for u in np.unique(d.user_id):
            for c in SCHEMA:
                h = model.history(int(u), tier.version, c)
                for i in d.user_stripes(u):
                    want[c][int(i)] = h[int(d.start[i]) : int(d.start[i] + d.count[i])]
        n, whole = len(d), 0
        a, b = int(rows[len(rows) // 3]), int(rows[2 * len(rows) // 3])  # (from one blob's first stripe to another's)
        for lo, hi in ((0, n), (a, b), (a, n), (0, b), (a + 1, b), (a, b - 1), (3, n - 2)):
            k = d.packed_run(lo, hi)
            whole += k is not None
            if k is not None:  # (the blobs' values are the run's events, back to back)
                assert d.bcount[rows[k]].sum() == d.count[lo:hi].sum() and rows[k][0] == lo
            si = np.arange(lo, hi)
            for c in SCHEMA:
                expect = [x for i in si for x in want[c][int(i)]]
                assert r.decode_stripes(c, si).tolist() == expect, (c, lo, hi)
                with monkeypatch.context() as mp:  # (no plan: each read finds its blobs' dictionaries itself)
                    mp.setattr(r, "_plans", {c: False})
                    assert r.decode_stripes(c, si).tolist() == expect, (c, lo, hi)
        assert (whole >= 4) if one else (d.packed_run(0, n) is None), whole
        assert any(p for p in r._plans.values()) or not one


def test_planned_batches_of_packed_stripes(packed):
    """Windows of every length over stripes in packs (tiles starting mid-block, blocks holding other
    users' events): the reference backend against each example's naive window (SPEC §2)."""
    t, m = packed
    rng = np.random.default_rng(3)
    d = t.directory()
    users = np.unique(d.user_id)
    B = 300
    u = rng.choice(np.append(users, 10**9), B)
    v = rng.integers(0, t.version + 1, B)
    have = t.length_at(u, v)
    n = np.where(rng.random(B) < 0.4, have, (rng.random(B) * (have + 1)).astype(np.int64))
    tails = [list(range(2_000_000_000, 2_000_000_000 + int(k))) for k in rng.integers(0, 3, B)]
    table = pa.table({"user_id": u, "version": v, "length": n, "request_ts": np.full(B, 2_100_000_000),
                      **{f"tail_{c}": pa.array(tails, pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                         for c, dt in SCHEMA.items()}})
    ex = parse_examples(table, SCHEMA)
    for tenant in (Tenant("short", ["item_id", "action"], 3), Tenant("all", ["ts", "item_id", "action"], 100)):
        staged = plan(t, ex, tenant, check_leakage=True)
        vals, viol = materialize_staged_reference(staged)
        assert not viol.any()
        for e in range(B):
            lo, hi = int(staged.offsets[e]), int(staged.offsets[e + 1])
            h, k = int(staged.hist_len[e]), int(staged.tail_len[e])
            for c in tenant.columns:
                hist = m.history(int(u[e]), int(v[e]), c)[int(n[e]) - h : int(n[e])]
                assert vals[c][lo:hi].tolist() == hist + tails[e][len(tails[e]) - k :], (e, c)


def test_a_pack_block_is_staged_once_a_batch(packed, monkeypatch):
    """A batch that needs one block of a pack for several of its stripes (users in id order, as an
    evaluation pass reads them) stages it once: fewer blocks and bytes than one per stripe, the
    same windows and the same leakage flags, every window against the model."""
    import gpumat.host.planner as planner

    t, m = packed
    d = t.directory()
    users = np.unique(d.user_id)
    rng = np.random.default_rng(4)
    B = len(users)
    v = np.full(B, t.version)
    n = np.where(rng.random(B) < 0.7, t.length_at(users, v), (rng.random(B) * (t.length_at(users, v) + 1)).astype(np.int64))
    ts_cut = rng.choice([2_100_000_000, 1_600_000_000 + 5 * 10**7], B)  # some windows' events are late
    table = pa.table({"user_id": users, "version": v, "length": n, "request_ts": ts_cut})
    ex = parse_examples(table, SCHEMA)
    for tenant in (Tenant("short", ["item_id", "action"], 3), Tenant("all", ["ts", "item_id", "action"], 100)):
        once = plan(t, ex, tenant, check_leakage=True)
        with monkeypatch.context() as mp:
            mp.setattr(planner, "_pack_blocks_once", lambda *a: None)
            each = plan(t, ex, tenant, check_leakage=True)
        K1, K = len(once.columns["item_id"].hdr), len(each.columns["item_id"].hdr)
        assert K1 < K and once.nbytes_read < each.nbytes_read, (K1, K)
        # every block staged is some tile's (none staged for nothing)
        key = set()
        for k in range(len(once.tile_block)):
            key.add(int(once.tile_block[k]))
        assert len(key) == K1
        (a, fa), (b, fb) = materialize_staged_reference(once), materialize_staged_reference(each)
        assert np.array_equal(fa, fb) and fa.any() and not fa.all()
        for c in tenant.columns:
            assert np.array_equal(a[c], b[c]), c
        # every backend reads a block several tiles share (the kernels under Triton's interpreter)
        import torch

        from gpumat.kernels.triton_decode_gather import triton_available
        from gpumat.ops import decode_gather

        dev = once.to("cpu")
        for backend, batch in (("numpy", once), ("torch", dev), ("triton", dev)):
            if backend == "triton" and not triton_available("cpu")[0]:
                continue
            vals, flags = decode_gather(batch, backend)
            assert np.array_equal(np.asarray(flags), fa), backend
            for c in tenant.columns:
                assert torch.equal(torch.as_tensor(vals[c]).cpu(), torch.as_tensor(a[c])), (backend, c)
        for e in range(B):
            lo, h = int(once.offsets[e]), int(once.hist_len[e])
            for c in tenant.columns:
                assert a[c][lo : lo + h].tolist() == m.history(int(users[e]), t.version, c)[int(n[e]) - h : int(n[e])], (e, c)


def test_packs_only_where_the_blobs_are_smaller(tmp_path, monkeypatch):
    """Short histories whose timestamps each step by a constant but start far apart: each stripe's
    own LFOR blocks are a few bytes, a pack's blocks would span the jumps: the writer keeps them
    apart. Histories of 1-4 events (``short_histories``) come out much smaller in packs."""
    rng = np.random.default_rng(5)
    users, each = 400, 20
    uid = np.repeat(np.arange(users), each)
    ts = np.repeat(rng.integers(0, 2**50, users), each) + np.tile(np.arange(each) * 60, users)
    tab = pa.table({"user_id": uid, "ts": ts, "item_id": np.tile(np.arange(each, dtype=np.int64), users),
                    "action": np.zeros(users * each, np.int32)})
    t = Tier.create(str(tmp_path / "apart"), SCHEMA)
    t.append(tab)
    assert t.stats()["packed_stripes"] == 0
    sizes = {}
    for below in (0, writer.PACK_BELOW):
        monkeypatch.setattr(writer, "PACK_BELOW", below)
        monkeypatch.setattr(writer, "PACK_LARGE_BELOW", below and writer.PACK_LARGE_BELOW)  # (0: no packs at all)
        t = Tier.create(str(tmp_path / f"short{below}"), SCHEMA)
        t.append(short_histories(0, 2000, 4))
        sizes[below] = t.stats()["stored_bytes"]
    assert sizes[writer.PACK_BELOW] < 0.8 * sizes[0], sizes  # (about 0.65: 1-4 events a history)


def test_pack_flags_cut_runs_of_short_stripes_greedily_at_a_block():
    """``pack_flags``: only stripes under PACK_BELOW events share a pack; a pack of several holds at
    most PACK_EVENTS events (one block of 128: never a second block for a few events), and a pack
    ends only where the next short stripe would not fit."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        count = np.where(rng.random(300) < 0.8, rng.integers(0, writer.PACK_BELOW, 300), rng.integers(32, 500, 300))
        cont = writer.pack_flags(count)
        small = count < writer.PACK_BELOW
        assert cont[0] == 0 and not (cont.astype(bool) & ~small).any()
        assert not (cont[1:].astype(bool) & ~small[:-1]).any()  # a stripe after a long one starts a pack
        first = np.flatnonzero(cont == 0)
        size = np.add.reduceat(count, first)
        assert (size[np.diff(np.append(first, len(count))) > 1] <= writer.PACK_EVENTS).all()
        nxt = first[1:]  # each pack's end: the next stripe is long, or would not fit
        assert (~small[nxt] | ~small[nxt - 1] | (size[:-1] + count[nxt] > writer.PACK_EVENTS)).all()


def test_packed_timestamps_take_signed_delta_blocks(tmp_path):
    """A pack's timestamps step up within each history and jump back between them: they take DELTA
    SIGNED blocks (the jumps as signed exceptions), and read back as stored."""
    rng = np.random.default_rng(7)
    n = rng.integers(1, 13, 3000)
    uid = np.repeat(np.arange(3000), n)
    step = rng.choice([0, 2, 30, 3600], int(n.sum()), p=[0.4, 0.3, 0.2, 0.1])
    first = np.cumsum(n) - n
    within = np.cumsum(step) - np.repeat(np.cumsum(step)[first], n)  # each history's own steps from 0
    ts = np.repeat(1_600_000_000 + rng.integers(0, 10**8, 3000), n) + within
    tab = pa.table({"user_id": uid, "ts": ts, "item_id": rng.integers(0, 5000, int(n.sum())),
                    "action": np.zeros(int(n.sum()), np.int32)})
    t = Tier.create(str(tmp_path / "t"), SCHEMA)
    m = Model()
    t.append(tab)
    m.append(tab)
    st = t.stats()
    assert st["packed_stripes"] > 2900
    # (encodings count stripes, a pack's rows each; bytes count a pack's blobs once)
    assert st["columns"]["ts"]["encodings"]["SIGNED"] > 0.9 * st["packed_stripes"], st["columns"]["ts"]["encodings"]
    check_version(t, m, t.version)


def _segment_with(tmp_path, name, change):
    """A format-3 segment of one pack of three stripes, its index fields changed by ``change``."""
    from gpumat.host import pages
    from gpumat.host.store import LocalStore

    count = np.array([5, 3, 4])
    blobs = {"v": pages.encode_column(np.arange(12, dtype=np.int64) * 3, np.array([12]), 8)}
    real = segment._encode_index

    def edited(fields, columns, layout=2, form=None):
        fields = {k: np.array(v, np.int64) for k, v in fields.items()}
        change(fields)
        return real(fields, columns, layout, form)

    segment._encode_index = edited
    try:
        bufs, size, crc, _ = segment.encode_segment3(["v"], np.array([1, 2, 3]), np.zeros(3, np.int64), count, blobs,
                                                  cont=np.array([0, 1, 1]))
    finally:
        segment._encode_index = real
    with open(tmp_path / name, "wb") as f:
        for b in bufs:
            f.write(memoryview(b).cast("B"))
    return segment.open_segment(LocalStore(str(tmp_path)), name, 0, size, crc, ["v"], 8)


def test_damaged_pack_flags_are_corruption(tmp_path):
    s = _segment_with(tmp_path, "good", lambda f: None)
    assert s.cont.tolist() == [0, 1, 1] and segment.pack_skips(s.count, s.cont).tolist() == [0, 5, 8]

    def nbytes_differ(f):
        f["v.nbytes"][2] += 1

    def off_differ(f):
        f["v.off"][1] += 1

    for i, change in enumerate([lambda f: f["cont"].__setitem__(1, 2), lambda f: f["cont"].__setitem__(0, 1),
                                nbytes_differ, off_differ]):
        with pytest.raises(CorruptionError, match="pack"):
            _segment_with(tmp_path, f"bad{i}", change)


@pytest.mark.parametrize("kind", ["short", "listening"])
def test_flipped_bits_in_a_packed_file_are_caught(tmp_path, kind):
    """A compacted file of packs (of a block; of several, listening): a bit flipped anywhere in its
    blob region is a ``CorruptionError`` (the chunk checksums) when the histories are read, as for
    any other file."""
    from test_pages import assert_flips_caught

    t = Tier.create(str(tmp_path / "t"), SCHEMA)
    tab = short_histories(4, 2000, 4) if kind == "short" else listening(4, 10, 1200, 24)
    t.append(tab.slice(0, tab.num_rows // 2))
    t.append(tab.slice(tab.num_rows // 2))
    t.compact()  # (two segments into one data file of its own)
    st = Tier.open(t.uri).stats()
    assert st["packed_stripes"] > (1000 if kind == "short" else 400) and st["segments"] == 1
    assert (t.directory().bcount > writer.PACK_EVENTS).any() == (kind == "listening")
    users = np.unique(t.directory().user_id).tolist()
    assert_flips_caught(tmp_path / "t", users, 12)


def test_a_checkpoint_snapshot_of_packs_opens_the_same(tmp_path, monkeypatch):
    """A version opened from a checkpoint's directory snapshot (no segment index read) places each
    packed stripe in its blobs as the indexes do (``skip``, ``bcount``)."""
    from gpumat.host import log

    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(writer, "PACK_MIN_ROWS", 0)
    monkeypatch.setattr(writer, "PACK_MIN_SAVING", -1.0)  # every run of short stripes packed
    t = Tier.create(str(tmp_path / "t"), SCHEMA)
    m = Model()
    for i in range(9):
        tab = short_histories(10 + i, 40, 6)
        t.append(tab)
        m.append(tab)
    import dataclasses

    from gpumat.host.reader import VersionReader
    from gpumat.host.store import LocalStore

    fresh = Tier.open(t.uri)
    assert fresh._reader.state.directory is not None  # opened from the snapshot at version 8
    store = LocalStore(t.uri)
    indexes = VersionReader(store, dataclasses.replace(log.load_state(store, 9), directory=None))  # every index read
    d, want = fresh.directory(), indexes.directory()
    assert (d.skip > 0).any() and np.array_equal(d.skip, want.skip) and np.array_equal(d.bcount, want.bcount)
    assert np.array_equal(d.blob, want.blob) and (d.blob != np.arange(len(d))).any()  # the packs, from either
    check_version(fresh, m, 9, users=np.unique(d.user_id).tolist())


def test_iterate_with_pack_affinity(packed):
    """``Materializer.iterate(affinity="pack")``: a pack's users share batches (``Tier.pack_groups``),
    so an epoch reads fewer bytes; each example once, every batch what ``materialize`` gives for its
    rows, the same batches on the process engine; the affinity is part of the loader's state."""
    import gpumat
    from gpumat.core.errors import SchemaError

    t, _ = packed
    users, group = t.pack_groups()
    assert len(users) and (np.diff(users) > 0).all() and len(np.unique(group)) < len(users)
    d = t.directory()
    u = np.unique(d.user_id)
    rng = np.random.default_rng(8)
    k = rng.integers(1, 4, len(u))  # 1-3 requests a user, at different lengths
    uu = np.repeat(u, k)
    have = t.lengths(uu)
    n = (rng.random(len(uu)) * (have + 1)).astype(np.int64)
    table = pa.table({"user_id": uu, "version": np.full(len(uu), t.version), "length": n,
                      "request_ts": np.full(len(uu), 2_100_000_000)})
    tenant = Tenant("all", ["ts", "item_id", "action"], 16)
    mat = gpumat.Materializer(t, [tenant], backend="reference", sparse_features=False)
    kw = dict(batch_size=32, window=512, seed=3)
    by_user, by_pack = mat.iterate(table, **kw), mat.iterate(table, affinity="pack", **kw)
    got_u, got_p = list(by_user), list(by_pack)
    for got in (got_u, got_p):
        assert np.array_equal(np.sort(np.concatenate([b.rows for b in got])), np.arange(table.num_rows))
    read_u, read_p = sum(b.nbytes_read for b in got_u), sum(b.nbytes_read for b in got_p)
    assert read_p < 0.9 * read_u, (read_p, read_u)
    for b in got_p[:3]:
        assert b["all"].equals(gpumat.materialize(t, table.take(pa.array(b.rows)), tenant, backend="reference"))
    st = by_pack.state_dict()
    assert st["affinity"] == "pack" and by_user.state_dict()["affinity"] == "user"
    with pytest.raises(SchemaError, match="affinity"):
        mat.iterate(table, **kw).load_state_dict(st)
    with pytest.raises(SchemaError, match="affinity"):
        mat.iterate(table, affinity="pack", **kw).load_state_dict({k: v for k, v in by_user.state_dict().items()
                                                                   if k != "affinity"})
    with pytest.raises(SchemaError, match="affinity must be one of"):
        mat.iterate(table, affinity="blob", **kw)
    if t.block_size == 8:  # (one tier is enough for the worker processes)
        proc = list(mat.iterate(table, affinity="pack", engine="process", workers=2, **kw))
        assert len(proc) == len(got_p)
        for a, b in zip(proc, got_p):
            assert np.array_equal(a.rows, b.rows) and a["all"].equals(b["all"]) and a.nbytes_read == b.nbytes_read


def test_pack_affinity_resumes_after_the_tier_moved_on(tmp_path):
    """A pack-affinity loader's state names the version whose packs ordered it: resumed on a tier
    that has taken more appends since (other packs), the loader regroups by that version and serves
    the rest of the epoch exactly (every example once); a sampler's state records its groups."""
    import gpumat
    from gpumat.core.errors import SchemaError
    from gpumat.host.prefetch import AffinitySampler

    t = Tier.create(str(tmp_path / "t"), SCHEMA)
    for i in range(3):
        t.append(short_histories(i, 250, 5))
    u = np.unique(t.directory().user_id)
    table = pa.table({"user_id": u, "version": np.full(len(u), t.version), "length": t.lengths(u),
                      "request_ts": np.full(len(u), 2_100_000_000)})
    tenant = Tenant("all", ["ts", "item_id"], 8)
    kw = dict(batch_size=16, window=256, seed=2, affinity="pack")
    first = gpumat.Materializer(t, [tenant], backend="reference").iterate(table, **kw)
    whole = [b.rows.tolist() for b in first]
    first = gpumat.Materializer(t, [tenant], backend="reference").iterate(table, **kw)
    it = iter(first)
    head = [next(it).rows.tolist() for _ in range(5)]
    state = first.state_dict()
    it.close()
    assert state["pack_version"] == t.version
    before = t.pack_groups()
    t.append(short_histories(9, 400, 4))  # new packs, some of these users among them
    moved = Tier.open(t.uri)
    assert moved.version > state["pack_version"] and not all(np.array_equal(a, b) for a, b in zip(moved.pack_groups(), before))
    resumed = gpumat.Materializer(moved, [tenant], backend="reference").iterate(table, **kw)
    resumed.load_state_dict(state)
    rest = [b.rows.tolist() for b in resumed]
    assert head + rest == whole
    # AffinitySampler: a state saved with other groups is refused (its batches would differ)
    s = AffinitySampler(u, 16, 256, True, 2, groups=before)
    with pytest.raises(SchemaError, match="groups"):
        AffinitySampler(u, 16, 256, True, 2).load_state_dict(s.state_dict())
    AffinitySampler(u, 16, 256, True, 2, groups=before).load_state_dict(s.state_dict())


def test_larger_packs_weighed_on_a_sample(tmp_path, monkeypatch):
    """A large segment's larger packs are first tried on a sample of it (``writer._sample_pays``):
    pieces of listening histories, whose replays reach the other pieces, still take packs of
    several blocks, and read back as written; short histories of Zipf-like items (their packs of a
    block pay, larger ones do not) are not weighed whole a second time."""
    monkeypatch.setattr(writer, "PACK_SAMPLE_EVENTS", 2048)
    calls = []
    real = writer._sample_pays
    monkeypatch.setattr(writer, "_sample_pays", lambda *a: calls.append(real(*a)) or calls[-1])
    tab = listening(3, 12, 1500, 24)
    t = Tier.create(str(tmp_path / "listening"), SCHEMA)
    t.append(tab)
    d = t.directory()
    assert calls == [True] and d.bcount.max() > writer.PACK_EVENTS
    m = Model()
    m.append(tab)
    check_version(t, m, t.version, users=np.unique(d.user_id)[::9].tolist())
    calls.clear()
    t = Tier.create(str(tmp_path / "short"), SCHEMA)
    t.append(short_histories(0, 4000, 30))
    d = t.directory()
    assert calls == [False] and t.stats()["packed_stripes"] > 0 and d.bcount.max() <= writer.PACK_EVENTS


def test_a_tier_without_larger_packs(tmp_path, monkeypatch):
    """``Tier.create(large_packs=False)``: every writer of the tier (appends, a compaction, in any
    handle, across a checkpoint) keeps packs of a block where the default tier takes larger ones,
    and reads back the same histories; only such a tier's version-0 record and checkpoints say so
    (``"large_packs": false``), so a default tier is read by releases before the setting; any
    other value, or the key on a later record, is a ``CorruptionError``."""
    import json

    from gpumat.core.errors import SchemaError
    from gpumat.host import log

    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 3)
    tabs = [listening(4, 12, 1200, 24), listening(5, 10, 1200, 16, t0=1_700_000_000), listening(6, 6, 900, 8, t0=1_800_000_000)]
    m = Model()
    for tab in tabs:
        m.append(tab)
    tiers = {}
    for large in (True, False):
        t = Tier.create(str(tmp_path / f"t{large}"), SCHEMA, large_packs=large)
        for tab in tabs:
            Tier.open(t.uri).append(tab)  # (each append through a new handle: the setting is the tier's)
        tiers[large] = t = Tier.open(t.uri)
        assert t.large_packs is large and t.version >= log.CHECKPOINT_EVERY  # (opened from a checkpoint)
    assert tiers[True].directory().bcount.max() > writer.PACK_EVENTS
    for t in tiers.values():
        check_version(t, m, t.version, users=np.unique(t.directory().user_id)[::5].tolist())
    t = tiers[False]
    assert t.directory().bcount.max() <= writer.PACK_EVENTS and t.stats()["packed_stripes"] > 0
    t.compact()
    t = Tier.open(t.uri)
    assert not t.large_packs and t.directory().bcount.max() <= writer.PACK_EVENTS
    check_version(t, m, len(tabs), users=np.unique(t.directory().user_id)[::5].tolist())  # (compacted: the same histories)
    assert "large_packs" not in log.read_record(tiers[True]._store, 0)[0]
    assert log.read_record(t._store, 0)[0]["large_packs"] is False
    assert log.read_checkpoint_header(t._store, log.CHECKPOINT_EVERY)["large_packs"] is False
    h = log.read_record(t._store, 1)[0]
    for bad, v in (({**log.read_record(t._store, 0)[0], "large_packs": True}, 0), ({**h, "large_packs": False}, 1)):
        with pytest.raises(CorruptionError, match="bad record header"):
            log._check_header(json.loads(json.dumps(bad)), v, "x")
    with pytest.raises(SchemaError, match="large_packs"):
        Tier.create(str(tmp_path / "bad"), SCHEMA, large_packs="no")
