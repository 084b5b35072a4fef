"""Borrowed codes (DESIGN §1): a column that is a function of another column of its segment (an
item's category of its id) stores a dictionary of one entry per code of that column's segment
dictionary, and its index rows name that column's blobs of codes."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import gpumat.ops
from gpumat.core.errors import CorruptionError
from gpumat.core.tenant import Tenant
from gpumat.host import codec, log, pages, segment, writer
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan
from gpumat.host.tier import Tier

from test_pages import SCHEMA, assert_flips_caught, check_planned_batches, check_tier_reads

USERS = [6000, 700, 1500, 40]  # events per user (user 3 keeps to one item: a constant stripe in both columns)

pytestmark = pytest.mark.usefixtures("decoder")  # on the C codec and on NumPy's (conftest.py)


def item_columns(rng, sc):
    """``item_id``: Zipf-like ids of a catalogue of 3,000; ``action``: each item's category (one of
    40, skewed), a function of ``item_id``; ``ts``: rising."""
    n = int(sum(sc))
    catalogue = rng.integers(10**6, 10**9, 3000)
    item = catalogue[np.minimum(rng.zipf(1.3, n), 3000) - 1]
    first = np.cumsum(sc) - sc
    item[first[3] : first[3] + sc[3]] = catalogue[5]
    category = (rng.zipf(1.5, 3000) % 40).astype(np.int32)
    action = category[np.searchsorted(np.sort(catalogue), item) % 3000]  # (any function of the id)
    action = np.asarray(action, np.int32)
    return {"ts": np.arange(n, dtype=np.int64) * 3, "item_id": item, "action": action}


def lenders(t: Tier) -> dict:
    """Per column, the share of its stripes whose blobs are another column's."""
    r = t._reader
    return {c: float(r.borrowed(c).mean()) for c in SCHEMA}


@pytest.mark.parametrize("bs", [32, 128])
def test_borrowed_codes_read_back_by_windows(tmp_path, monkeypatch, bs):
    """A column that borrows its lender's codes reads back whole, by any block window and by any
    value range of a block, in memory and by ranges; compacted, a flipped byte is caught; its
    entries say ``borrow`` (releases before it reject the entry)."""
    rng = np.random.default_rng(bs)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = item_columns(rng, sc)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, int(sc.sum()), extended=("item_id", "action"))
    t = Tier.open(tmp_path / "t")
    got = lenders(t)
    assert got["action"] > 0.5 and got["item_id"] == got["ts"] == 0, got
    (e,) = [e for _, e in t._reader._files]
    assert e.get("borrow") == 1 and log._check_entry(dict(e), "x") == e
    with pytest.raises(CorruptionError, match="bad data file entry"):
        log._check_entry({**e, "borrow": 2}, "x")
    st = t.stats()["columns"]
    assert st["action"]["borrowed_stripes"] > 0 and st["action"]["bytes"] == st["action"]["dictionary_bytes"]
    assert st["action"]["borrowed_from"] == ["item_id"] and st["item_id"]["borrowed_from"] == []
    assert st["action"]["bytes"] < 0.2 * st["item_id"]["bytes"]


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_borrowed_codes_materialize(tmp_path, monkeypatch, backend):
    """Planned batches of a tier whose ``action`` borrows ``item_id``'s codes equal the naive
    windows on every backend."""
    rng = np.random.default_rng(3)
    sc = np.array(USERS)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **item_columns(rng, sc)}))
    assert lenders(t)["action"] > 0.5
    whole = {u: t.read_history(u) for u in range(len(sc))}
    check_planned_batches(t, whole, rng, np.arange(len(sc)), 40, 2500, backend)
    # users whose stripes are not constant: every block of ``action`` is ``item_id``'s, which the
    # kernels then decode once for both (``borrow_plan``)
    import gpumat.kernels.triton_decode_gather as tdg

    plans = []
    plan_of = tdg.borrow_plan
    monkeypatch.setattr(tdg, "borrow_plan", lambda *a: plans.append(plan_of(*a)) or plans[-1])
    staged = check_planned_batches(t, whole, rng, np.arange(3), 40, 2500, backend)
    assert staged.codes_of("action") == "item_id" and staged.codes_of("item_id") is None
    names = [n for n, _, _ in staged.passes()]
    assert plans == ([(names.index("item_id"), 1 << names.index("action"))] if backend == "triton" else [])
    if backend == "triton":  # the static check takes the launcher's configuration for such a batch
        from gpumat.bench.static import staged_launch

        assert staged_launch(staged)[2][6:] == (names.index("item_id") + 1, 1 << names.index("action"))
        assert staged_launch(staged, borrow=False)[2][6:] == (0, 0)


def test_what_borrows_and_what_does_not():
    """The writer lends the largest column's codes to the columns that are functions of it where
    that saves ``BORROW_MIN_SAVING``; not to a column that is not one (one event that breaks it),
    nor to a column much smaller than the codes it would read (``BORROW_MIN_SHARE``); a lender
    without a segment dictionary is given one where its borrowers pay for it."""
    rng = np.random.default_rng(5)
    sc = np.array([4000, 3000, 1000])
    n = int(sc.sum())
    item = rng.integers(0, 900, n) * 7919 + 13
    cols = ["item_id", "cat", "year", "broken", "flag"]
    values = {"item_id": item, "cat": (item // 7919) % 97, "year": 1900 + (item * 31) % 100,
              "broken": (item // 7919) % 89, "flag": ((item // 7919) % 5 == 0).astype(np.int64)}
    values["broken"][1234] += 1
    blobs = {c: pages.encode_column_parts(values[c], sc, 128) for c in cols}
    out, lender = writer._borrow(cols, values, blobs, sc, 128, True)
    assert lender == {"cat": "item_id", "year": "item_id"}, lender
    for c in ("cat", "year"):  # its dictionary looked up with the lender's codes: its values
        region, off, nb, enc = out[c][:4]
        table = pages.decode_dictionary(region, 128)
        src = out["item_id"]
        at = np.cumsum(sc) - sc
        for s in range(len(sc)):
            got = pages.decode_blob(src[0][off[s] : off[s] + nb[s]], int(sc[s]), 128)
            assert table[got].tolist() == values[c][at[s] : at[s] + sc[s]].tolist()
        assert writer._blob_cost(out[c]) < (1 - pages.BORROW_MIN_SAVING) * writer._blob_cost(blobs[c])
    assert out["broken"] is blobs["broken"] and out["flag"] is blobs["flag"]
    # nothing borrows: the lender is left as it was (not given a dictionary that no one uses)
    two = ["item_id", "flag"]
    out2, lender2 = writer._borrow(two, values, {c: blobs[c] for c in two}, sc, 128, True)
    assert lender2 == {} and all(out2[c] is blobs[c] for c in two)
    # mostly distinct ids (no dictionary to lend), or none that follows: nothing borrowed
    uniq = {"item_id": np.arange(n) * 3, "cat": np.arange(n) % 7}
    assert writer._borrow(["item_id", "cat"], uniq, {c: pages.encode_column_parts(v, sc, 128) for c, v in uniq.items()},
                          sc, 128, True)[1] == {}


def test_a_borrowed_row_must_name_its_lenders_blob(tmp_path, monkeypatch):
    """An index whose borrowed row names bytes that are not the same row's blob of a column whose
    codes are its own is corruption at open."""
    rng = np.random.default_rng(1)
    sc = np.array(USERS)
    cols = item_columns(rng, sc)
    real = segment.encode_segment3

    def shifted(columns, user_id, start, count, blobs, cont=None, lender=None, form=None):
        if lender:
            region, off, nb, enc = blobs["action"]
            blobs = {**blobs, "action": (region, np.asarray(off) + 1, nb, enc)}
        return real(columns, user_id, start, count, blobs, cont, lender, form)

    monkeypatch.setattr(writer, "encode_segment3", shifted)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **cols}))
    with pytest.raises(CorruptionError, match="bad dictionary of column 'action'"):
        Tier.open(tmp_path / "t").read_history(0)


def test_borrowed_codes_survive_compaction_and_flips(tmp_path):
    """Two appends compacted borrow again in the merged segment and read the same; a flipped
    byte of the lender's blobs is caught (both columns read it)."""
    rng = np.random.default_rng(9)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = item_columns(rng, sc)
    table = pa.table({"user_id": users, **cols})
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(table.slice(0, 4000))
    t.append(table.slice(4000))
    t.compact()
    h = Tier.open(tmp_path / "t")
    assert lenders(h)["action"] > 0.5
    for u in range(len(sc)):
        got = h.read_history(u)
        m = users == u
        assert all(got[c].tolist() == cols[c][m].tolist() for c in SCHEMA)
    r = h._reader
    lo = int(r.blobs("item_id")[0].min())
    hi = lo + int(r.blob_bytes("item_id").sum())
    assert_flips_caught(tmp_path / "t", list(range(len(sc))), 8, (lo, hi))
    assert len(os.listdir(tmp_path / "t" / "_data")) == 1


def test_borrowed_bytes_are_counted_once_when_the_lender_is_read_too(tmp_path):
    """A read of a borrower alone needs its lender's blocks (the same bytes as the lender's read);
    read with its lender, those bytes are counted once (``nbytes_read``: the same ranges, one fetch);
    the values are the same either way."""
    rng = np.random.default_rng(4)
    sc = np.array(USERS)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **item_columns(rng, sc)}))
    h = Tier.open(tmp_path / "t")
    d = h.directory()
    si = np.arange(len(d))
    lo, hi = np.zeros_like(si), d.nblocks[si]
    alone = {c: h.read_blocks(c, si, lo, hi) for c in ("item_id", "action")}
    both = h.read_blocks_many(["item_id", "action"], si, lo, hi)
    assert alone["action"][2] == alone["item_id"][2] > 0  # (user 3's constant stripe: no bytes in either)
    assert both["item_id"][2] == alone["item_id"][2] and both["action"][2] == 0
    for c in ("item_id", "action"):
        assert all(np.array_equal(a, b) for a, b in zip(alone[c][:2], both[c][:2]))
        assert np.array_equal(alone[c].dicts, both[c].dicts)
    # read together, the borrower's staged words are its lender's (one array): packed and counted once
    assert both["action"][1] is both["item_id"][1]
    staged = plan(h, parse_examples(pa.table({"user_id": [0, 2], "version": [1, 1], "length": [6000, 1500],
                                              "request_ts": [10**9] * 2,
                                              **{f"tail_{c}": pa.array([[], []], pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                                                 for c, dt in SCHEMA.items()}}), SCHEMA),
                  Tenant("t", ["item_id", "action"], 8000))
    cols = staged.columns
    assert cols["action"].words is cols["item_id"].words
    words = int(np.asarray(cols["item_id"].words).size)
    assert staged.staged_bytes() == sum(np.asarray(a).size * 8 for _, a in staged.arrays()) - 8 * words
    flat, layout = staged.pack()
    assert layout["action.words"] == layout["item_id.words"] and flat.numel() == staged.packed_numel()
    values, _ = gpumat.ops.decode_gather(staged.to("cpu"), "torch")
    want, _ = gpumat.ops.decode_gather(staged, "reference")
    assert all(values[c].tolist() == want[c].tolist() for c in ("item_id", "action"))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_stripe_constant_in_the_lender_is_constant_in_the_borrower(tmp_path, monkeypatch, backend):
    """Where the lender stores a stripe as a constant (here: wherever one is), the borrower stores
    it as its own constant, its value in its index; both read back, by windows and in batches."""
    real = pages._constant_stripes

    def every(values, sc, nbytes, enc):
        cst, _ = real(values, sc, np.full(len(sc), 1 << 40), enc)
        return cst, 0

    monkeypatch.setattr(pages, "_constant_stripes", every)
    rng = np.random.default_rng(11)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = item_columns(rng, sc)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, 128, int(sc.sum()), extended=("item_id", "action"))
    t = Tier.open(tmp_path / "t")
    r = t._reader
    enc = {c: r.blobs(c)[2] for c in ("item_id", "action")}
    assert codec.const_stripes(enc["item_id"]).tolist() == codec.const_stripes(enc["action"]).tolist() == [0, 0, 0, 1]
    assert r.borrowed("action").tolist() == [1, 1, 1, 0]
    assert codec.const_values(enc["action"][3:]).tolist() == [int(cols["action"][-1])]
    whole = {u: t.read_history(u) for u in range(len(sc))}
    check_planned_batches(t, whole, rng, np.arange(len(sc)), 40, 2500, backend)


def test_a_column_constant_in_every_stripe_after_a_borrower(tmp_path):
    """A per-user attribute (every stripe constant, values too wide for the index to take them
    cheaply) beside a borrower: no dictionary nothing indexes is stored (it took bytes, and no start
    marked where its column's part of the region began, so the table before it read as longer),
    and every column reads back; a column that costs nothing is no borrower, and weighs no lender."""
    rng = np.random.default_rng(0)
    sc = rng.integers(500, 3000, 60)
    n = int(sc.sum())
    users = np.repeat(np.arange(len(sc)), sc)
    catalogue = rng.integers(10**6, 10**9, 3000)
    item = catalogue[np.minimum(rng.zipf(1.3, n), 3000) - 1]
    cat = (rng.zipf(1.5, 3000) % 40)[np.searchsorted(np.sort(catalogue), item) % 3000]
    ucat = np.repeat(rng.integers(-2**53, 2**53, 3)[rng.integers(0, 3, len(sc))], sc)
    cols = {"ts": np.arange(n) * 3, "item_id": item, "cat": cat, "ucat": ucat, "zero": np.zeros(n, np.int64)}
    schema = dict.fromkeys(cols, "int64")
    whole = pages.encode_column_parts(ucat, sc, 128)
    assert codec.const_stripes(whole[3]).all() and whole[4] == 0 and not (whole[3] & codec.ENC_DICT).any()
    t = Tier.create(tmp_path / "t", schema, block_size=128)
    t.append(pa.table({"user_id": users, **cols}))
    h = Tier.open(tmp_path / "t")
    assert {c: bool(h._reader.borrowed(c).any()) for c in schema} == {"ts": False, "item_id": False, "cat": True,
                                                                        "ucat": False, "zero": False}
    at = np.cumsum(sc) - sc
    for u in (0, 17, 59):
        got = h.read_history(u)
        assert all(got[c].tolist() == cols[c][at[u] : at[u] + sc[u]].tolist() for c in schema)


def test_a_borrowers_index_fields_are_its_lenders(tmp_path, monkeypatch):
    """A borrower's index fields are stored less its lender's, row by row (its ``c.off`` field's
    parameter names the lender's field); they read back the same; a parameter that names no
    column's own fields (itself, or another borrower) is corruption at open."""
    rng = np.random.default_rng(2)
    sc = np.array(USERS)
    cols = item_columns(rng, sc)
    table = pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **cols})
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(table)
    s = Tier.open(tmp_path / "t")._reader.segment(0)
    fields = {"user_id": s.user_id, "start": s.start, "count": s.count, "cont": s.cont}
    for c in SCHEMA:
        fields.update({f"{c}.off": s.off[c], f"{c}.nbytes": s.nwords[c], f"{c}.enc": s.enc[c]})
    names = segment._index_fields(list(SCHEMA), True)
    m = np.stack([fields[f] for f in names])
    r, params = segment.index_residuals(m)
    k, j = names.index("action.off"), names.index("item_id.off")
    assert segment._lenders(m) == {k: j} and params[k] == j + 1 and not r[k : k + 2].any()
    assert np.array_equal(segment.index_values(r, params), m)
    for bad in ({k: k}, {j: k, k: j}):
        monkeypatch.setattr(segment, "_lenders", lambda m, bad=bad: bad)
        b = Tier.create(tmp_path / f"b{len(bad)}", SCHEMA, block_size=128)
        b.append(table)
        with pytest.raises(CorruptionError, match="cannot be read"):
            Tier.open(tmp_path / f"b{len(bad)}").read_history(0)


def test_borrowed_codes_through_checkpoints_and_merges(tmp_path):
    """Seventeen appends (small segments merged on the way, a checkpoint at version 16): a handle
    opened from the checkpoint's directory snapshot, which spares it the segments' indexes, reads
    every borrower's values back, and stats count its blobs under the lender."""
    rng = np.random.default_rng(6)
    sc = np.array([900, 700, 500, 300])
    n = int(sc.sum())
    users = np.repeat(np.arange(len(sc)), sc)
    cols = item_columns(rng, sc)
    table = pa.table({"user_id": users, **cols})
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    cuts = np.linspace(0, n, 18).astype(int)
    order = np.lexsort((np.arange(n), users))  # (each append: a slice of every user's history, in order)
    pos = np.arange(n) - np.repeat(np.cumsum(sc) - sc, sc)
    frac = pos / np.repeat(sc, sc)
    for a, b in zip(cuts[:-1] / n, cuts[1:] / n):
        take = np.flatnonzero((frac >= a) & (frac < b))
        t.append(table.take(pa.array(order[take])))
    assert t.version == 17 and 16 in log.checkpoint_versions(t._store)
    h = Tier.open(tmp_path / "t")
    assert h._reader.state.directory is not None  # (opened from the snapshot)
    assert h.stats()["columns"]["action"]["borrowed_stripes"] > 0
    at = np.cumsum(sc) - sc
    for u in range(len(sc)):
        got = h.read_history(u)
        assert all(got[c].tolist() == cols[c][at[u] : at[u] + sc[u]].tolist() for c in SCHEMA), u
