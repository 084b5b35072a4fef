"""Constants per row of a pack (DESIGN §2 "Packs"): in a pack of short histories, a column whose
rows are each one value (a user's age joined into the events) stores no blob; each row's index
entry holds its own value, as a user's own stripe does (``pages.pack_row_constants``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.host import codec, log, pages, segment, writer
from gpumat.host.ranges import ranges
from gpumat.host.tier import Tier

from test_pages import SCHEMA, assert_flips_caught, check_planned_batches, check_windows

pytestmark = pytest.mark.usefixtures("decoder")  # on the C codec and on NumPy's (conftest.py)


def short_users(rng, users: int = 900, seed_ages: int = 7):
    """``users`` histories of 2-20 events (they pack): ``item_id`` any of 5,000 ids, ``action`` the
    user's age band (one of ``seed_ages`` values, int32; drawn anew at about one user in 6, the
    others keeping the one before's, as a real user's history cut into pieces, each piece a user),
    ``ts`` rising; the users' ids and the events' columns."""
    sc = rng.integers(2, 21, users)
    n = int(sc.sum())
    uid = np.repeat(np.arange(users) * 3 + 1, sc)
    ages = np.array([1, 18, 25, 35, 45, 50, 56][:seed_ages])
    cols = {"ts": np.arange(n, dtype=np.int64) * 7 + 10**6, "item_id": rng.integers(0, 5000, n) * 977,
            "action": np.repeat(ages[rng.integers(0, len(ages), users)][np.cumsum(rng.random(users) < 1 / 6)], sc).astype(np.int32)}
    return uid, cols


def row_constant_packs(t: Tier) -> np.ndarray:
    """Per directory stripe of ``t``: a stripe of a pack whose ``action`` rows are each a constant,
    not all one."""
    r = t._reader
    d = r.directory()
    enc = r.blobs("action")[2]
    packed = (d.bcount != d.count) & codec.const_stripes(enc)
    multi = np.zeros(len(d), bool)
    for b in np.unique(d.blob[packed]):
        m = d.blob == b
        multi[m] = len(np.unique(enc[m])) > 1
    return packed & multi


@pytest.mark.parametrize("bs", [32, 128])
def test_row_constants_read_back_by_windows(tmp_path, monkeypatch, bs):
    """A tier of short histories whose ``action`` is a value per user: its packs store it as each
    row's constant; every column reads back whole (C and NumPy decoders), by any block window (a
    pack's block holds every row's value at its positions), in memory and by ranges; the entry says
    ``rowconst`` (releases before it reject the entry) and its index is of form 3."""
    rng = np.random.default_rng(bs)
    uid, cols = short_users(rng)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=bs)
    t.append(pa.table({"user_id": uid, **cols}))
    h = Tier.open(tmp_path / "t")
    assert row_constant_packs(h).mean() > 0.5
    (e,) = [e for _, e in h._reader._files]
    assert e.get("rowconst") == 1 and e.get("index") == 3 and log._check_entry(dict(e), "x") == e
    with pytest.raises(CorruptionError, match="bad data file entry"):
        log._check_entry({**e, "rowconst": 2}, "x")
    users = np.unique(uid)
    whole = {int(u): h.read_history(int(u)) for u in users}
    for c in SCHEMA:
        assert np.concatenate([whole[int(u)][c] for u in users]).tolist() == cols[c].tolist()
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(tmp_path / "t")
        check_windows(h, whole, rng, 300, bs)
        d = h.directory()
        first = np.cumsum(d.count) - d.count
        want = np.concatenate([whole[int(u)]["action"] for u in d.user_id[np.unique(d.user_id, return_index=True)[1]]])
        order = rng.permutation(len(d))
        assert h._reader.decode_stripes("action", order).tolist() == want[ranges(first[order], d.count[order])].tolist()


def test_row_constants_in_whole_reads(tmp_path, monkeypatch, decoder):
    """Whole reads (``decode_stripes`` of every row, then of runs of whole packs) of a tier of one
    append whose ``action`` packs hold constants per row (half the users; the others' vary): no plan for that column (a pack of them
    has no blob, but a value a row: ``VersionReader._plan3``), plans for the others, and every
    column's values the same as without plans (a review's finding: each row of such a pack read
    back as its first row's value)."""
    if decoder != "native":
        pytest.skip("the whole-blob reads of the C decoder: runs once, with it")
    rng = np.random.default_rng(9)
    uid, cols = short_users(rng)
    var = uid > np.median(uid)  # (the later half of the users' action varies: their packs hold blobs)
    cols["action"][var] = rng.integers(0, 9, int(var.sum()))
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=32)
    t.append(pa.table({"user_id": uid, **cols}))
    r = Tier.open(tmp_path / "t")._reader
    d = r.directory()
    assert 0.2 < row_constant_packs(Tier.open(tmp_path / "t")).mean() < 0.8 and len(d.blob_rows()) < len(d)
    rows = d.blob_rows()
    for c in SCHEMA:
        for lo, hi in ((0, len(d)), (int(rows[3]), int(rows[-3]))):
            si = np.arange(lo, hi)
            got = r.decode_stripes(c, si)
            with monkeypatch.context() as m:
                m.setattr(r, "_plans", {c: False})
                assert got.tolist() == r.decode_stripes(c, si).tolist(), (c, lo, hi)
            pos = np.searchsorted(np.unique(uid), d.user_id[si])  # (one stripe a user: its events in order)
            starts = np.r_[0, np.cumsum(np.bincount(np.searchsorted(np.unique(uid), uid)))][:-1]
            assert got.tolist() == cols[c][ranges(starts[pos], d.count[si])].tolist(), (c, lo, hi)
    assert r._plans["action"] is False and r._plans["ts"] and r._plans["item_id"]


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_row_constants_materialize(tmp_path, backend):
    """Planned batches (a pack's block staged once for all its rows the batch needs) equal the
    naive windows on every backend."""
    rng = np.random.default_rng(5)
    uid, cols = short_users(rng, 600)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": uid, **cols}))
    assert row_constant_packs(t).mean() > 0.5
    users = np.unique(uid)
    whole = {int(u): t.read_history(int(u)) for u in users}
    check_planned_batches(t, whole, rng, users, 300, 40, backend)


def test_which_packs_take_row_constants():
    """A pack whose rows are each one value, not all one, takes constants per row where its blob is
    larger than what their steps add to the index; not a pack with a row of two values, nor where
    the blob is the smaller; the values decode back from the parts."""
    count = np.array([20, 20, 20, 20, 20, 20, 10, 10, 10, 3, 5, 4])
    cont = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1])  # packs: rows 0-5, 6-8, 9-11
    per_row = np.array([7, 7, 7, 40, 40, 40, 3, 3, 3, 11, 11, 11])
    values = np.repeat(per_row, count) * 1000
    values[np.cumsum(count)[10] - 1] += 5  # (the last pack's second row: two values)
    packs = np.add.reduceat(count, np.flatnonzero(cont == 0))
    parts = pages.encode_column_parts(values, packs, 128)
    assert not codec.const_stripes(parts[3]).any()
    region, off, nb, enc, head, lead = pages.pack_row_constants(values, count, cont, parts)
    # (the second pack, all one value, keeps its blob of 2 bytes: its value's step from the row
    # before would take more in the index)
    cst = codec.const_stripes(enc)
    assert cst.tolist() == [True] * 6 + [False] * 6
    assert codec.const_values(enc[:6]).tolist() == (per_row[:6] * 1000).tolist()
    at = np.cumsum(count) - count
    for p, r in ((1, 6), (2, 9)):
        tag = int(codec.enc_tags(enc[r]))
        blob = pages.decode_blob(region[off[r] : off[r] + nb[r]], int(packs[p]), 128, tag=tag if tag >= 0 else None)
        assert blob.tolist() == values[at[r] : at[r] + packs[p]].tolist()
        assert (nb[r : r + 3] == nb[r]).all() and (off[r : r + 3] == off[r]).all()
    assert (off[:6] == off[6]).all() and not nb[:6].any()  # (no blob: where the next one starts)
    # rows of one event each, each another value of a narrow range far from 0: the blob (their
    # offsets from a base, 20 bits each) is cheaper than the steps (21 bits and a sign), left as it was
    one = np.ones(12, np.int64)
    wide = 10**12 + np.random.default_rng(2).integers(0, 2**20, 12)
    assert pages.pack_row_constants(wide, one, (np.arange(12) > 0).astype(np.int64),
                                    pages.encode_column_parts(wide, np.array([12]), 128)) is None


def test_a_pack_that_mixes_constant_and_blob_rows_is_corruption(tmp_path, monkeypatch):
    """A pack's rows name one blob, or are each a constant: an index where one row of a pack is a
    constant and the next names a blob is corruption at open (an index of form 2: form 3 cannot
    hold it, and refuses to write it)."""
    rng = np.random.default_rng(1)
    uid, cols = short_users(rng, 500)
    real, real_entry = segment.encode_segment3, writer._format_entry

    def mixed(columns, user_id, start, count, blobs, cont=None, lender=None, form=None):
        region, off, nb, enc = blobs["action"]
        if len(enc) == len(user_id):
            c = np.flatnonzero(np.asarray(cont) == 1)[0]
            enc = np.array(enc)
            enc[c] = blobs["item_id"][3][0] & codec.ENC_FLAGS
            blobs = {**blobs, "action": (region, off, nb, enc)}
        return real(columns, user_id, start, count, blobs, cont, lender, 2)  # (form 3 refuses to write it)

    monkeypatch.setattr(writer, "encode_segment3", mixed)
    monkeypatch.setattr(writer, "_format_entry", lambda *a: {**real_entry(*a[:5]), "index": 2})
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": uid, **cols}))
    with pytest.raises(CorruptionError, match="a pack's rows name different blobs of column 'action'"):
        Tier.open(tmp_path / "t").read_history(int(uid[0]))
    # a directory (as from a checkpoint's snapshot, which open_segment does not check) that says so:
    # a read of such a pack's block of the column refuses it
    monkeypatch.undo()
    ok = Tier.create(tmp_path / "ok", SCHEMA, block_size=128)
    ok.append(pa.table({"user_id": uid, **cols}))
    r = ok._reader
    d = r.directory()
    s = np.flatnonzero(row_constant_packs(ok) & (d.skip > 0))[0]
    r._dir_cols["action"][2][s] = 0  # (a FOR blob, in a pack whose other rows are constants)
    with pytest.raises(CorruptionError, match="some constant, some not"):
        r.read_blocks("action", np.array([d.blob[s]]), np.array([0]), np.array([1]))


def test_row_constants_through_checkpoints_merges_and_compaction(tmp_path):
    """Seventeen appends (merged on the way; a checkpoint at version 16, whose directory snapshot
    spares the segments' indexes) and a compaction: every history reads back, by batches too,
    and a flipped byte of the compacted file is caught."""
    rng = np.random.default_rng(6)
    uid, cols = short_users(rng, 1200)
    table = pa.table({"user_id": uid, **cols})
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    n = table.num_rows
    users = np.unique(uid)
    # each append: the newest events of a 17th of the users (whole short histories, so they pack)
    part = np.searchsorted(users, uid) % 17
    for k in range(17):
        t.append(table.filter(pa.array(part == k)))
    assert t.version == 17
    h = Tier.open(tmp_path / "t")
    assert h._reader.state.directory is not None and row_constant_packs(h).any()
    for u in rng.choice(users, 40).tolist():
        got = h.read_history(u)
        m = uid == u
        assert all(got[c].tolist() == cols[c][m].tolist() for c in SCHEMA)
    whole = {int(u): h.read_history(int(u)) for u in users}
    check_planned_batches(h, whole, rng, users, 200, 40, "reference")
    t.compact()
    c = Tier.open(tmp_path / "t")
    assert row_constant_packs(c).mean() > 0.5 and sum(e["events"] for _, e in c._reader._files) == n
    assert all(c.read_history(int(u))["action"].tolist() == whole[int(u)]["action"].tolist() for u in users[::7])
    assert_flips_caught(tmp_path / "t", users[:3].tolist(), 6)


def test_the_index_form_follows_the_row_constants(tmp_path, monkeypatch):
    """A segment with constants per row of a pack has an index of form 3 (their values' steps in
    one byte plane, not three: a smaller index than form 2's, which reads the same); one without
    has form 2, as before, and compaction leaves neither for being older."""
    rng = np.random.default_rng(8)
    uid, cols = short_users(rng, 2000)
    table = pa.table({"user_id": uid, **cols})
    sizes = {}
    for form in (2, 3):
        with monkeypatch.context() as m:
            m.setattr(segment, "INDEX_FORM", form)
            t = Tier.create(tmp_path / f"f{form}", SCHEMA, block_size=128)
            t.append(table)
            (e,) = [e for _, e in t._reader._files]
            assert e["index"] == form and e.get("rowconst") == 1
            sizes[form] = t.stats()["stored_bytes"]
    assert sizes[3] < sizes[2], sizes
    h2, h3 = Tier.open(tmp_path / "f2"), Tier.open(tmp_path / "f3")
    for u in np.unique(uid)[::37].tolist():
        a, b = h2.read_history(u), h3.read_history(u)
        assert all(a[c].tolist() == b[c].tolist() == cols[c][uid == u].tolist() for c in SCHEMA)
    # long histories (no packs): form 2; neither form is rewritten by compaction for its form
    long = Tier.create(tmp_path / "long", SCHEMA, block_size=128)
    long.append(pa.table({"user_id": np.repeat([1, 2], 3000), "ts": np.arange(6000), "item_id": rng.integers(0, 99, 6000),
                          "action": np.repeat(np.array([3, 4], np.int32), 3000)}))
    assert [e["index"] for _, e in long._reader._files] == [2]
    assert not any(writer.older_format(e) for t in (long, h3) for _, e in t._reader._files)
