"""Stripe tables (DESIGN §1): a stripe stored as codes into a dictionary of its own, right before
its blob: a frequency table (a user who keeps to a few values) or a literal table (a user who
repeats runs of earlier events, whose codes rise by 1 along a run: DELTA blocks of codes)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.core.staged import AUX_CODES, AUX_DELTA, dict_blocks
from gpumat.host import codec, log, native, pages, reader, segment
from gpumat.host.tier import Tier

from test_pages import SCHEMA, assert_flips_caught, check_planned_batches, check_tier_reads, flipped, shorten_dictionaries

USERS = [6000, 700, 1500, 40]  # events per user (user 3 keeps to one value: a constant stripe)


@pytest.fixture(autouse=True)
def _no_classes(monkeypatch):
    """Stripe tables without CLASSES blocks: ``action`` below (each user keeping to 4 of 500 values)
    takes CLASSES blocks of the segment dictionary's codes instead of frequency tables where they
    are allowed, 11% smaller (``test_classes_codes_beat_frequency_tables``), and these tests are
    about the tables."""
    monkeypatch.setattr(pages, "CLASSES_MIN_SAVING", 10.0)


def replays(rng, x, p: float):
    """``x`` (one user's items) with runs of 12 of their earlier items played again, at a fraction
    ``p`` of its events (after the first 24)."""
    n = len(x)
    for s in np.flatnonzero(rng.random(n) < p):
        if s >= 24:
            a = int(rng.integers(0, s - 12))
            k = min(12, n - s)
            x[s : s + k] = x[a : a + k]
    return x


def repeating_columns(rng, sc):
    """``item_id``: each user replays runs of their earlier items (literal tables); ``action``: each
    user keeps to a few of 500 values of their own (frequency tables); ``ts``: rising."""
    items, acts = [], []
    for u, n in enumerate(sc):
        # (ids of 12 bits: tables of values, as tables of codes would store them)
        items.append(replays(rng, rng.integers(0, 4000, n), 0.08))
        own = rng.integers(0, 500, 4)
        a = own[rng.choice(4, n, p=[0.6, 0.2, 0.15, 0.05])]
        o = rng.random(n) < 0.05
        a[o] = rng.integers(0, 500, int(o.sum()))
        if u == 3:
            a[:] = 77
        acts.append(a)
    n = int(sum(sc))
    return {"ts": np.arange(n, dtype=np.int64) * 3, "item_id": np.concatenate(items),
            "action": np.concatenate(acts).astype(np.int32)}


def test_literal_tables_in_c_equal_the_python_twin():
    rng = np.random.default_rng(0)
    for t in range(200):
        sc = rng.integers(0, 300, int(rng.integers(1, 6)))
        n = int(sc.sum())
        x = rng.integers(0, int(rng.integers(1, 20)), n)
        for _ in range(n // 8):  # copied runs
            a, b, k = rng.integers(0, max(n, 1), 2).tolist() + [int(rng.integers(1, 15))]
            if a < b:
                x[b : b + k] = x[a : a + k][: len(x[b : b + k])]
        m, w = int(rng.integers(1, 6)), int(rng.integers(1, 500))
        want = pages._literal_tables(x, sc, m, w)
        if native.available()[0]:
            got = native.literal_tables(x, sc, m, w)
            assert all(np.array_equal(g, e) for g, e in zip(got, want)), t
        lit, nlit, codes = want
        assert np.array_equal(lit[np.repeat(np.cumsum(nlit) - nlit, sc) + codes], x)
        assert (codes < np.repeat(nlit, sc)).all() and int(nlit.sum()) == len(lit)


def test_frequency_tables_most_frequent_first():
    x = np.array([3, 3, 9, 9, 9, -4, 2, 2, 8])
    tv, tc, codes = pages.frequency_tables(x, np.array([6, 3]))
    assert tv.tolist() == [9, 3, -4, 2, 8] and tc.tolist() == [3, 2] and codes.tolist() == [1, 1, 0, 0, 0, 2, 0, 0, 1]


def test_classes_codes_beat_frequency_tables(monkeypatch):
    """Where CLASSES blocks are allowed, ``action``'s segment dictionary codes in them take fewer
    bytes than its stripes' frequency tables did (3,292 against 3,455: every stripe a table or a
    constant, so the segment dictionary nothing indexes is not stored; 3,713 when it was), and no
    table is taken."""
    x = repeating_columns(np.random.default_rng(1), np.array(USERS))["action"].astype(np.int64)
    tables = pages.encode_column_parts(x, np.array(USERS), 128)
    monkeypatch.setattr(pages, "CLASSES_MIN_SAVING", 1 / 32)
    monkeypatch.setattr(pages, "CLASSES_LEVEL_BITS", 0)  # (shapes by their bits alone: the entropy stage's reach)
    classes = pages.encode_column_parts(x, np.array(USERS), 128)
    assert (tables[5] > 0).sum() >= 3 and not (classes[5] > 0).any()
    assert tables[4] == 0 and classes[4] > 0  # (the tables' column keeps no segment dictionary)
    assert len(classes[0]) < 0.96 * len(tables[0])


def test_both_tables_are_taken_where_they_pay():
    rng = np.random.default_rng(1)
    sc = np.array(USERS)
    cols = repeating_columns(rng, sc)
    literal = native.available()[0]  # (the writer weighs literal tables where the C library is built)
    for c, flag in (("item_id", codec.ENC_DELTA if literal else 0), ("action", 0)):
        x = cols[c].astype(np.int64)
        region, off, nbytes, enc, head, lead = pages.encode_column_parts(x, sc, 128)
        plain = pages.encode_column(x, sc, 128, tables=False)[0]
        own = lead > 0
        if not (flag or c == "action"):  # (item ids take literal tables only)
            assert not own.any()
            continue
        # (against the segment dictionary, in frequency order where that pays: 0.89x for action)
        assert own.sum() >= 3 and (enc[own] & codec.ENC_DICT).all() and len(region) < 0.9 * len(plain), c
        assert codec.const_stripes(enc)[3] == (c == "action")
        if flag:  # a literal table's codes: runs rising by 1, DELTA blocks
            assert (enc[own] & flag).any()
        # each table right before its blob: head, the table's blob, then the codes
        for s in np.flatnonzero(own):
            t_at = int(enc[s]) >> 8
            assert t_at + lead[s] == off[s]
            d = pages.decode_dictionary(region[t_at : off[s]], 128)
            codes = pages.decode_blob(region[off[s] : off[s] + nbytes[s]], int(sc[s]), 128)
            assert d[codes].tolist() == x[np.cumsum(sc)[s] - sc[s] : np.cumsum(sc)[s]].tolist()
    # no repeats, or too few: no table
    for x in (rng.integers(0, 1 << 40, 5000), np.arange(5000) * 7):
        assert not pages.encode_column_parts(x, np.array([5000]), 128)[5].any()


@pytest.mark.parametrize("bs", [32, 128])
def test_stripe_tables_read_back_by_windows(tmp_path, monkeypatch, bs):
    """A tier of stripe tables reads back whole, by any block window and by any value range of a
    block, in memory and by ranges, on both decoders; compacted, a flipped byte is caught; its
    entries say ``tables`` (releases before them reject the entry)."""
    monkeypatch.setattr(pages, "CODE_TABLES", False)  # (tables of values: tables of codes below, their dictionary kept)
    rng = np.random.default_rng(bs)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = repeating_columns(rng, sc)
    tables = ("item_id", "action") if native.available()[0] else ("action",)  # (literal tables: with the C library)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, int(sc.sum()), extended=tables)
    t = Tier.open(tmp_path / "t")
    r = t._reader
    assert all((r.blobs(c)[2] & codec.ENC_DICT).any() for c in tables)
    (e,) = [e for _, e in r._files]
    assert e.get("tables") == 1 and log._check_entry(dict(e), "x") == e
    with pytest.raises(CorruptionError, match="bad data file entry"):
        log._check_entry({**e, "tables": 3}, "x")
    # a table read is counted; where its segment's tables of the column take more than
    # TABLES_KEPT_BYTES it is not kept, and the next read reads it again; where they take less, those
    # of at most TABLE_KEPT_ENTRIES entries are kept, and the next read reads only the others
    si = np.arange(len(t.directory()))
    reads = {}
    for cap, entries in ((0, 1 << 30), (1 << 30, 1 << 30), (1 << 30, 0), (reader.TABLES_KEPT_BYTES, reader.TABLE_KEPT_ENTRIES)):
        monkeypatch.setattr(reader, "TABLES_KEPT_BYTES", cap)
        monkeypatch.setattr(reader, "TABLE_KEPT_ENTRIES", entries)
        h = Tier.open(tmp_path / "t")
        h._reader.dict_bytes_read = 0
        want = h.read_blocks("action", si, np.zeros_like(si), h.directory().nblocks[si])
        once = h._reader.dict_bytes_read
        got = h.read_blocks("action", si, np.zeros_like(si), h.directory().nblocks[si])
        reads[cap, entries] = (once, h._reader.dict_bytes_read - once)
        assert all(np.array_equal(a, b) for a, b in zip(want, got)) and np.array_equal(want.dicts, got.dicts)
    (first,) = {v[0] for v in reads.values()}  # (the first read reads every table, whatever is kept)
    assert first > 0 and reads[0, 1 << 30][1] == reads[1 << 30, 0][1] == first and reads[1 << 30, 1 << 30][1] == 0
    assert 0 <= reads[reader.TABLES_KEPT_BYTES, reader.TABLE_KEPT_ENTRIES][1] < first, reads


def test_kept_tables_are_found_at_once(tmp_path, monkeypatch):
    """A segment's kept dictionaries, looked up many at once (``kept_dictionaries``, packed into one
    array), are those looked up one by one; one kept after the packing is found too, an offset never
    kept is not, and ``forget_dictionaries`` drops them all. Reads that find them so (all kept, or
    some kept and some read) give what a fresh reader gives."""
    monkeypatch.setattr(pages, "CODE_TABLES", False)
    rng = np.random.default_rng(7)
    sc = rng.integers(200, 600, 30)
    t = Tier.create(tmp_path / "t", SCHEMA)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **repeating_columns(rng, sc)}))
    si = np.arange(len(t.directory()))
    want = Tier.open(tmp_path / "t")._reader.decode_stripes("action", si)
    r = Tier.open(tmp_path / "t")._reader
    for _ in range(2):  # (the second finds them kept)
        assert np.array_equal(r.decode_stripes("action", si), want)
    for part in (si[::3], si[1::2], si, si[1::2], si[::-1]):  # (others kept, laid out anew; the same again, found laid out)
        assert np.array_equal(r.decode_stripes("action", part), Tier.open(tmp_path / "t")._reader.decode_stripes("action", part))
    (sg,) = [s for s in r._segs if s is not None and s.has_kept_dictionaries()]
    offs = np.array(sorted(sg._dicts), np.int64)
    assert len(offs) > 3
    q = np.r_[offs[::-1], offs[-1] + 1]
    assert not sg.kept_dictionaries(q, 0)[0].any()  # (none of at most 0 entries: larger ones apart)
    found, vals, st, ln = sg.kept_dictionaries(q, 1 << 30)
    assert found.tolist() == [True] * len(offs) + [False]
    for f, o, a, n in zip(found, q.tolist(), st.tolist(), ln.tolist()):
        assert not f or np.array_equal(vals[a : a + n], sg.cached_dictionary(o))
    sg.keep_dictionary(int(offs[-1]) + 1, np.array([5, 6], np.int64))
    found, vals, st, ln = sg.kept_dictionaries(q, 1 << 30)
    assert found.all() and vals[st[-1] : st[-1] + ln[-1]].tolist() == [5, 6]
    del sg._dicts[int(offs[-1]) + 1]
    sg._kept = None
    for k in offs[::2].tolist():  # (some kept, the others read again)
        del sg._dicts[k]
    assert np.array_equal(r.decode_stripes("action", si), want)
    r.forget_dictionaries()
    assert not sg.kept_dictionaries(offs, 1 << 30)[0].any()
    assert np.array_equal(r.decode_stripes("action", si), want)
    monkeypatch.setattr(reader, "TABLE_KEPT_ENTRIES", 0)  # (every one kept apart: found one by one)
    assert np.array_equal(r.decode_stripes("action", si), want)


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_stripe_tables_materialize(tmp_path, backend):
    """Planned batches of a tier with both tables (DELTA blocks of codes among them) equal the
    naive windows on every backend."""
    rng = np.random.default_rng(7)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": users, **repeating_columns(rng, sc)}))
    whole = {u: t.read_history(u) for u in range(len(sc))}
    staged = check_planned_batches(t, whole, rng, np.arange(len(sc)), 40, 2500, backend)
    col = staged.columns["item_id"]
    hdr, words = np.asarray(col.hdr), np.asarray(col.words)
    aw = words[(hdr[dict_blocks(hdr, words), 2] >> 8) - 1]
    if native.available()[0]:  # DELTA blocks of codes (a literal table's), staged
        assert ((aw & (AUX_CODES | AUX_DELTA)) == AUX_CODES | AUX_DELTA).any()


def test_a_code_past_its_table_is_corruption(tmp_path, monkeypatch):
    """A stripe table shorter than its codes (bytes that pass their checksums: a writer's bug) is
    corruption to ``decode_stripes`` on either decoder; a table whose head disagrees with the index,
    when it is read."""
    rng = np.random.default_rng(3)
    sc = np.array(USERS)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **repeating_columns(rng, sc)}))
    with monkeypatch.context() as m:
        shorten_dictionaries(m, 1)
        for native_on in (True, False):
            m.setattr(native, "available", lambda on=native_on: (on and native._decode is not None, ""))
            h = Tier.open(t.uri)
            with pytest.raises(CorruptionError, match="dictionary"):
                h._reader.decode_stripes("action", np.arange(len(h.directory())))
    # compacted into one data file: a table's head read short of its blob, or a flipped bit in it
    t.append(pa.table({"user_id": np.arange(len(sc)), **{c: v[:len(sc)] for c, v in repeating_columns(rng, sc).items()}}))
    t.compact()
    r = Tier.open(t.uri)._reader
    off, _, enc = r.blobs("action")
    s = int(np.flatnonzero((enc & codec.ENC_DICT) != 0)[0])
    seg = r.segment(int(r.directory().seg[s]))
    at = int(enc[s]) >> 8
    with pytest.raises(CorruptionError, match="dictionary"):
        seg.dictionary(at, 128, int(off[s]) - at - 1)
    assert_flips_caught(tmp_path / "t", list(range(len(sc))), 12, (at, int(off[s])))


def test_a_table_before_the_segment_dictionarys_first_codes(tmp_path):
    """A stripe that takes its own table ahead of the first stripe of the segment dictionary's codes
    (the dictionary at the region's start, the table and its blob, then the codes): the segment
    dictionary ends where the table starts, and every stripe reads back (a review's finding: its
    size was taken to its first codes' blob, through the table)."""
    rng = np.random.default_rng(0)
    wide = rng.integers(-(10**15), 10**15, 3000)
    fav = wide[[3, 700, 1400, 2999]][rng.choice(4, 3000, p=[0.6, 0.2, 0.15, 0.05])]
    x = np.concatenate([fav, wide[rng.integers(0, 3000, 20000)]])
    sc = np.array([3000, 20000])
    region, off, nbytes, enc, head, lead = pages.encode_column_parts(x, sc, 128)
    assert head > 0 and lead[0] > 0 and lead[1] == 0 and (enc & codec.ENC_DICT).all()  # (the layout at issue)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat([0, 1], sc), "ts": np.arange(23000), "item_id": x,
                       "action": np.zeros(23000, np.int32)}))
    h = Tier.open(t.uri)
    assert h.read_history(0)["item_id"].tolist() == fav.tolist() and h.read_history(1)["item_id"].tolist() == x[3000:].tolist()
    r = h._reader
    assert sorted(r._dict_sizes("item_id").values()) == sorted([head, int(lead[0])])
    assert r.dict_bytes("item_id") == head + int(lead[0])
    t.compact()
    assert Tier.open(t.uri).read_history(1)["item_id"].tolist() == x[3000:].tolist()


def test_a_segment_without_tables_keeps_its_dictionary(tmp_path):
    """A segment without stripe tables (written before them, or whose stripes take none) keeps its
    dictionaries once read, even one that a single blob uses; a segment with tables keeps only
    those several blobs use."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1 << 40, 5000)
    x = ids[np.minimum(rng.zipf(1.2, 12000), len(ids)) - 1]
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.zeros(12000, np.int64), "ts": np.arange(12000), "item_id": x,
                       "action": np.zeros(12000, np.int32)}))
    h = Tier.open(t.uri)
    r = h._reader
    assert not any(e.get("tables") for _, e in r._files) and (r.blobs("item_id")[2] & codec.ENC_DICT).all()
    reads = []
    for _ in range(3):
        h.read_history(0)
        reads.append(r.dict_bytes_read)
    assert reads[0] > 0 and reads == [reads[0]] * 3


def test_dictionaries_with_the_earlier_heads_read_back(tmp_path, monkeypatch):
    """Segments written before varint heads (``"dicts": 1``: two u64, its entries and its blob's
    bytes) read back beside new ones (``"dicts": 2``) in one version, on both decoders and by
    planned batches; compaction rewrites them in the new form. The new form is what lets a stripe
    table cost a byte or two of head instead of 16."""
    rng = np.random.default_rng(11)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = [repeating_columns(rng, sc)] * 2  # the same events twice: the same dictionaries
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    with monkeypatch.context() as m:
        m.setattr(pages, "DICT_FORM", 1)
        t.append(pa.table({"user_id": users, **cols[0]}))
    t.append(pa.table({"user_id": users + len(sc), **cols[1]}))
    forms = [e.get("dicts") for _, e in Tier.open(t.uri)._reader._files]
    assert forms == [1, 2]
    whole = {u: {c: v[users == u % len(sc)] for c, v in cols[u // len(sc)].items()} for u in range(2 * len(sc))}
    for native_on in (True, False):
        monkeypatch.setattr(native, "available", lambda on=native_on: (on and native._decode is not None, ""))
        h = Tier.open(t.uri)
        for u, want in whole.items():
            got = h.read_history(u)
            assert all(got[c].tolist() == want[c].tolist() for c in want), (u, native_on)
    monkeypatch.undo()
    h = Tier.open(t.uri)
    r = h._reader
    sizes = {}
    for c in ("item_id", "action"):
        sizes[c] = r._dict_sizes(c)
        si = np.arange(len(h.directory()))
        h.read_blocks(c, si, np.zeros_like(si), h.directory().nblocks[si])
    check_planned_batches(h, {u: h.read_history(u) for u in whole}, rng, np.arange(2 * len(sc)), 40, 2500, "numpy")
    # the same dictionaries cost 14 or 15 bytes more each with the earlier heads (16 bytes against a
    # varint of 1 or 2)
    for c in ("item_id", "action") if native.available()[0] else ("action",):  # (literal tables: with the C library)
        olds = [v for k, v in sizes[c].items() if k >> 40 == 0]
        news = [v for k, v in sizes[c].items() if k >> 40 == 1]
        assert len(olds) == len(news) >= 3 and 14 * len(olds) <= sum(olds) - sum(news) <= 15 * len(olds), c
    t.compact()
    h = Tier.open(t.uri)
    assert [e.get("dicts") for _, e in h._reader._files] == [2]
    assert all(h.read_history(u)[c].tolist() == want[c].tolist() for u, want in whole.items() for c in want)


def test_upgrade_rewrites_the_earlier_heads(tmp_path, monkeypatch):
    """One data file with 16-byte dictionary heads: ``gpumat upgrade`` (a compaction) rewrites it
    with varint heads, smaller, the same histories; a second run has nothing left to do."""
    from gpumat.cli import main

    rng = np.random.default_rng(12)
    sc = np.array(USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    cols = repeating_columns(rng, sc)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    with monkeypatch.context() as m:
        m.setattr(pages, "DICT_FORM", 1)
        t.append(pa.table({"user_id": users, **cols}))
    before = Tier.open(t.uri)
    assert [e.get("dicts") for _, e in before._reader._files] == [1]
    assert main(["upgrade", str(tmp_path / "t")]) == 0
    h = Tier.open(t.uri)
    assert h.version == before.version + 1 and [e.get("dicts") for _, e in h._reader._files] == [2]
    assert h.stats()["stored_bytes"] < before.stats()["stored_bytes"]
    assert all(h.read_history(u)[c].tolist() == cols[c][users == u].tolist() for u in range(len(sc)) for c in cols)
    assert main(["upgrade", str(tmp_path / "t")]) == 0 and Tier.open(t.uri).version == h.version


def test_dictionary_heads_at_once_equal_one_by_one(monkeypatch):
    """``pages.dictionary_heads`` (the reader's: all of a batch's dictionaries at once) against
    ``dictionary_head`` one by one, both forms, on good heads and on random damage: the same
    entries and head sizes, or both a ``CorruptionError``; its C parse against its NumPy one: the
    same heads, or the same first bad one."""
    rng = np.random.default_rng(5)
    for trial in range(300):
        k = int(rng.integers(1, 6))
        forms = rng.integers(1, 3, k)
        ents = rng.choice([1, 2, 127, 128, 300, 16383, 16384, 1 << 20, 1 << 26], k)
        parts = []
        for f, e in zip(forms.tolist(), ents.tolist()):
            blob = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8)
            parts.append(np.concatenate([pages.dict_heads([e], [len(blob)], f)[0], blob]))
        lens = np.array([len(p) for p in parts])
        buf = np.concatenate(parts)
        if trial % 2:  # damage: a flipped byte, or a wrong length
            if rng.random() < 0.5:
                buf[int(rng.integers(0, len(buf)))] ^= np.uint8(1 << int(rng.integers(0, 8)))
            else:
                j = int(rng.integers(0, k))
                lens[j] = max(0, lens[j] + int(rng.integers(-3, 4)))
                buf = np.concatenate([buf, np.zeros(8, np.uint8)])
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        if native.available()[0]:  # the C parse (what the reader runs) finds the NumPy parse's first bad head
            cn, ch, cbad = native.dict_heads(buf, starts, lens, forms, pages.DICT_MAX_ENTRIES)
            with monkeypatch.context() as m:
                m.setattr(native, "_decode", None)
                try:
                    want = pages.dictionary_heads(buf, starts, lens, forms)
                    assert cbad == 0 and cn.tolist() == want[0].tolist() and ch.tolist() == want[1].tolist(), trial
                except CorruptionError as e:
                    assert f"dictionary {cbad - 1}:" in str(e), (trial, cbad, str(e))
        one = []
        try:
            for s, n, f in zip(starts.tolist(), lens.tolist(), forms.tolist()):
                if s + n > len(buf):
                    raise CorruptionError("past the buffer")
                one.append(pages.dictionary_head(buf[s : s + n], f))
        except CorruptionError:
            with pytest.raises(CorruptionError):
                pages.dictionary_heads(buf, starts, lens, forms)
            continue
        n, h = pages.dictionary_heads(buf, starts, lens, forms)
        assert list(zip(n.tolist(), h.tolist())) == one, trial
        if trial % 2 == 0:
            assert n.tolist() == ents.tolist()


def test_a_bad_table_head_is_named_by_its_segment_and_place(tmp_path, monkeypatch):
    """A batch's dictionaries are decoded in one pass; a bad one (here a head zeroed after its
    chunks were verified: a writer's bug) is a ``CorruptionError`` naming its segment and byte."""
    monkeypatch.setattr(pages, "CODE_TABLES", False)  # (a zeroed head of a segment with tables of codes: their mark)
    rng = np.random.default_rng(13)
    sc = np.array(USERS)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **repeating_columns(rng, sc)}))
    h = Tier.open(t.uri)
    r = h._reader
    r._small_pool()  # the segment's bytes, read and verified
    pool, base = r._pool3
    k = max(r._dict_sizes("action"))  # (the last dictionary: a stripe table)
    assert base[k >> 40] >= 0
    pool.flags.writeable = True  # (read-only: every read shares them)
    pool[base[k >> 40] + (k & ((1 << 40) - 1))] = 0  # its head: 0 entries
    with pytest.raises(CorruptionError, match=r"segment \S+: dictionary at byte \d+: bad head \(0 entries"):
        h._reader.decode_stripes("action", np.arange(len(h.directory())))


def test_dictionary_heads_outside_their_buffer_are_corruption():
    buf = np.concatenate([pages.dict_heads([5], [3], 2)[0], np.ones(3, np.uint8)])
    n, h = pages.dictionary_heads(buf, [0], [4], [2])
    assert n.tolist() == [5] and h.tolist() == [1]
    for starts, lens, forms in (([-1], [4], [2]), ([0], [5], [2]), ([1 << 62], [1 << 62], [2]), ([1 << 62], [1 << 62], [1]),
                                ([0], [1], [2]), ([0], [4], [3]), ([0], [4], [1])):
        with pytest.raises(CorruptionError):
            pages.dictionary_heads(buf, starts, lens, forms)


def test_dictionary_keys_are_the_same_mix_for_few_and_many():
    """A batch's few dictionary keys are hashed in Python ints, many in NumPy: the same key for the
    same dictionary either way (a device copy kept between batches is found by it)."""
    from gpumat.host.reader import _dict_keys

    rng = np.random.default_rng(7)
    files = [(f"data/{i}.seg", int(rng.integers(0, 1 << 40))) for i in range(3)]
    which, offs = rng.integers(0, 3, 40), rng.integers(0, 1 << 40, 40)
    many = _dict_keys(files, which, offs)  # (over 16: NumPy)
    assert len(set(many)) == 40 and all(0 <= k < 1 << 63 for k in many)
    for n in (1, 5, 16):
        assert _dict_keys(files, which[:n], offs[:n]) == many[:n]


def hashed_replays(rng, sc, catalogue: int = 3000):
    """``item_id`` as a listening history of 64-bit hashed ids (``replay``'s shape: each user replays
    runs of their own earlier items), ``action`` a few values, ``ts`` rising: where a stripe table
    of the values costs 64 bits an entry and one of the segment dictionary's codes about 12."""
    ids = rng.integers(-(1 << 62), 1 << 62, catalogue)
    items = [replays(rng, ids[rng.integers(0, catalogue, n)], 0.1) for n in sc]
    n = int(sum(sc))
    return {"ts": np.arange(n, dtype=np.int64) * 3, "item_id": np.concatenate(items),
            "action": rng.integers(0, 3, n).astype(np.int32)}


HASHED_USERS = [2500, 900, 1700, 300, 40, 1200]


def test_tables_of_codes_where_the_values_are_wide(monkeypatch):
    """Where the column has a segment dictionary, a stripe table may hold its codes (the mark, then
    a table as any other): each looks up, through the segment dictionary, the stripe's values;
    the column is smaller than with tables of values only, and a stripe still indexes the segment
    dictionary itself."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(5)
    sc = np.array(HASHED_USERS)
    x = hashed_replays(rng, sc)["item_id"]
    region, off, nbytes, enc, head, lead = pages.encode_column_parts(x, sc, 128)
    coded = pages.code_tables(region, enc, lead)
    assert head > 0 and coded.sum() >= 3 and ((enc & codec.ENC_DICT) != 0).all()
    assert (((enc >> 8) == 0) & (lead == 0)).any()  # (a stripe of the segment dictionary's own codes)
    seg = pages.decode_dictionary(region[:head], 128)
    first = np.cumsum(sc) - sc
    for s in np.flatnonzero(lead > 0):
        t_at = int(enc[s]) >> 8
        assert t_at + lead[s] == off[s] and region[t_at] == pages.CODE_TABLE_MARK
        table = pages.decode_dictionary(region[t_at + 1 : off[s]], 128)
        codes = pages.decode_blob(region[off[s] : off[s] + nbytes[s]], int(sc[s]), 128)
        assert seg[table[codes]].tolist() == x[first[s] : first[s] + sc[s]].tolist()
    monkeypatch.setattr(pages, "CODE_TABLES", False)
    values_only = pages.encode_column_parts(x, sc, 128)
    assert not pages.code_tables(values_only[0], values_only[3], values_only[5]).any()
    assert len(region) < 0.95 * len(values_only[0])


def test_tables_of_codes_keep_a_stripe_of_the_segment_dictionarys_codes():
    """Every stripe would take a table of codes, or every other stripe is a constant: one stripe
    keeps the segment dictionary's codes (the reader finds the dictionary by it), and the encoder
    never drops the dictionary they index."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(2)
    for users in ([900, 1300, 700], [900, 1300, 700, 50, 60]):
        sc = np.array(users)
        x = hashed_replays(rng, sc)["item_id"]
        x[np.sum(sc[:3]):] = 12345  # (stripes 3 and 4, where there are: constants)
        region, off, nbytes, enc, head, lead = pages.encode_column_parts(x, sc, 128, index_tags=False)
        coded = pages.code_tables(region, enc, lead)
        assert head > 0 and coded.any() or len(users) == 5
        assert not coded.any() or (((enc & codec.ENC_DICT) != 0) & (lead == 0) & ((enc >> 8) == 0)).any()
        if len(users) == 3:
            three = region, off, nbytes, enc, head, lead
        if len(users) == 5:  # one of the constants keeps its codes (the reference), or tables of values
            # and both constants, where those are smaller (the encoder weighs both)
            assert codec.const_stripes(enc)[3:].sum() == 1 if coded.any() else codec.const_stripes(enc)[3:].all()
            with_values = pages._encode_column(x, sc, 128, True, True, True, "values")
            assert len(region) <= len(with_values[0])
    region, off, nbytes, enc, head, lead = three
    with pytest.raises(ValueError, match="no stripe indexes"):
        keep = lead > 0
        pages._without_dead_dictionary(region, off, nbytes, np.where(keep, enc, codec.const_enc(np.zeros(len(enc), np.int64))),
                                       head, lead)


def test_tables_of_codes_never_keep_a_dictionary_that_values_would_drop():
    """Users each of their own 64-bit ids, played again: every stripe takes a table. Tables of codes
    would keep the segment dictionary of all their ids (for them, and one stripe naming it), where
    tables of values let it go: the encoder weighs both and keeps the smaller, here the values."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(0)
    ids = rng.integers(-(1 << 62), 1 << 62, 10**6)
    sc = np.full(12, 3000)
    x = np.concatenate([replays(rng, ids[rng.integers(0, 10**6, n)], 0.3) for n in sc])
    region, off, nbytes, enc, head = pages._plain_or_dictionary(x, sc, 128, True, True)
    per_stripe = pages._without_dead_dictionary(*pages._stripe_tables(x, sc, 128, region, off, nbytes, enc, head))
    assert head > 0 and pages.code_tables(per_stripe[0], per_stripe[3], per_stripe[5]).sum() == len(sc) - 1
    got = pages.encode_column_parts(x, sc, 128)
    assert len(got[0]) < len(per_stripe[0]) and not got[4] and not pages.code_tables(got[0], got[3], got[5]).any()


@pytest.mark.parametrize("bs", [32, 128])
def test_tables_of_codes_read_back_by_windows(tmp_path, monkeypatch, bs):
    """A tier whose stripe tables hold codes reads back whole, by any block window and any value
    range of a block, in memory and by ranges, on both decoders; a flipped byte is caught; its
    entries say ``"tables": 2``, which releases before them reject."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(bs + 1)
    sc = np.array(HASHED_USERS[:4])
    users = np.repeat(np.arange(len(sc)), sc)
    cols = hashed_replays(rng, sc)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, int(sc.sum()), extended=("item_id",))
    r = Tier.open(tmp_path / "t")._reader
    (e,) = [e for _, e in r._files]
    assert e.get("tables") == 2 and log._check_entry(dict(e), "x") == e
    off, _, enc = r.blobs("item_id")
    seg = r.segment(0)
    assert (np.asarray(seg.region())[(enc[(enc & codec.ENC_DICT) != 0] >> 8)] == pages.CODE_TABLE_MARK).any()
    # a whole read, a second one (the segment dictionary kept: only the tables read again), and the
    # tables read without the segment dictionary's own stripes (it is read for them)
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(tmp_path / "t")
        hr = h._reader
        d = h.directory()
        own = (hr.blobs("item_id")[2] >> 8) != (hr.blobs("item_id")[2] >> 8).min()
        sizes = hr._dict_sizes("item_id")
        seg_dict = sizes[int(hr._dsarr["item_id"][0][0])]
        for k, si in enumerate((np.flatnonzero(own), np.arange(len(d)))):
            want = np.concatenate([cols["item_id"][users == d.user_id[s]] for s in si])
            before = hr.dict_bytes_read
            assert hr.decode_stripes("item_id", si).tolist() == want.tolist()
            if k == 0:  # the tables, and the segment dictionary read for them (kept: the next read reads it no more)
                assert hr.dict_bytes_read - before == sum(sizes.values())
            else:
                assert hr.dict_bytes_read - before <= sum(sizes.values()) - seg_dict
            with monkeypatch.context() as m:
                m.setattr(native, "available", lambda: (False, ""))
                assert Tier.open(tmp_path / "t")._reader.decode_stripes("item_id", si).tolist() == want.tolist()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_tables_of_codes_in_packs(tmp_path, monkeypatch, backend):
    """Users of 8 events each (a listener's history cut into pieces: packs of them, DESIGN §2) whose
    packs take tables of codes: every stripe reads back on both decoders, and planned batches
    equal the naive windows."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(21)
    sc = np.array([3000, 2500, 4000, 1500])
    ids = rng.integers(-(1 << 62), 1 << 62, 3000)
    items = np.concatenate([replays(rng, ids[rng.integers(0, 3000, n)], 0.5) for n in sc])
    n = int(sc.sum())
    pos = np.arange(n) - np.repeat(np.cumsum(sc) - sc, sc)
    users = np.repeat(np.arange(len(sc)), sc) * 10_000 + pos // 8
    cols = {"ts": np.arange(n, dtype=np.int64) * 3, "item_id": items, "action": rng.integers(0, 3, n).astype(np.int32)}
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": users, **cols}))
    r = Tier.open(t.uri)._reader
    d = r.directory()
    region = np.asarray(r.segment(0).region())
    enc = r.blobs("item_id")[2]
    assert [e.get("tables") for e in r.state.files.values() if e["path"]] == [2] and (d.count != d.bcount).all()
    assert (region[np.unique(enc >> 8)] == pages.CODE_TABLE_MARK).sum() >= 5  # (tables of codes, of packs)
    si = np.arange(len(d))
    for native_on in (True, False):
        with monkeypatch.context() as m:
            m.setattr(native, "available", lambda on=native_on: (on and native._decode is not None, ""))
            assert Tier.open(t.uri)._reader.decode_stripes("item_id", si).tolist() == items.tolist()
    whole = {int(u): {c: v[users == u] for c, v in cols.items()} for u in np.unique(users)}
    check_planned_batches(t, whole, rng, np.unique(users), 60, 20, backend)


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_tables_of_codes_materialize(tmp_path, backend):
    """Planned batches of a tier with tables of codes equal the naive windows on every backend (the
    host composes a table with its segment dictionary: the kernels gather values, as from any table)."""
    rng = np.random.default_rng(11)
    sc = np.array(HASHED_USERS)
    users = np.repeat(np.arange(len(sc)), sc)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": users, **hashed_replays(rng, sc)}))
    assert [e.get("tables") for _, e in t._reader._files] == [2 if native.available()[0] else None]
    whole = {u: t.read_history(u) for u in range(len(sc))}
    check_planned_batches(t, whole, rng, np.arange(len(sc)), 40, 2500, backend)


def test_a_code_past_the_segment_dictionary_is_corruption(tmp_path, monkeypatch):
    """A table of codes that indexes past its segment dictionary (bytes that pass their checksums: a
    writer's bug; here the dictionary, kept, cut short) is corruption to every read, on both
    decoders; so is one that lies at the segment dictionary's place."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(4)
    sc = np.array(HASHED_USERS)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **hashed_replays(rng, sc)}))
    for native_on in (True, False):
        with monkeypatch.context() as m:
            m.setattr(native, "available", lambda on=native_on: (on and native._decode is not None, ""))
            for read in ("stripes", "history"):
                h = Tier.open(t.uri)
                r = h._reader
                r._dict_sizes("item_id")
                k = int(r._dsarr["item_id"][0][0])
                r.segment(k >> 40).keep_dictionary(k & ((1 << 40) - 1), np.arange(3, dtype=np.int64))
                with pytest.raises(CorruptionError, match="tables of codes.*a code outside its dictionary"):
                    if read == "stripes":
                        r.decode_stripes("item_id", np.arange(len(h.directory())))
                    else:
                        h.read_history(0)
    r = Tier.open(t.uri)._reader
    r._dict_sizes("item_id")
    keys = r._dsarr["item_id"][0]
    with pytest.raises(CorruptionError, match="a table of codes at its segment dictionary.s place"):
        r._decode_with_code_tables("item_id", keys[:1], np.array([0]), np.array([False]), reader._Parts(1),
                                   np.array([0, 2, 5, 0], np.uint8), np.zeros(1, np.int64), np.array([4]),
                                   np.array([2]), np.array([True]), "x", np.array([False]))


def album_plays(rng, n: int, ids: np.ndarray, recent: int = 300) -> np.ndarray:
    """A long listening history of ``n`` events: albums of 12 tracks (``ids``' rows) played in
    order, half of them new, half one of the ``recent`` albums played last (a literal table of
    thousands of entries, its copies reaching back a few pages)."""
    plays = n // 12 + 1
    new = rng.random(plays) < 0.5
    new[0] = True
    albums = rng.integers(0, len(ids), plays)
    for i in np.flatnonzero(~new).tolist():
        albums[i] = albums[rng.integers(max(0, i - recent), i)]
    return ids[albums].reshape(-1)[:n]


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
@pytest.mark.parametrize("wide", [False, True])
def test_windows_read_part_of_long_tables(tmp_path, monkeypatch, backend, wide):
    """A window of a long history whose stripe table covers thousands of entries reads only the
    pages of the table its codes index (DESIGN §1 "Stripe tables"): the last events of each user
    read a fraction of the tables' bytes; planned batches of windows anywhere equal the naive
    windows; the batch's dictionary key names its segment dictionary alone (a device copy of it is
    kept), not the parts of tables after it. Tables of values (ids of 24 bits) and tables of codes (64-bit ids)."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan

    rng = np.random.default_rng(31 + wide)
    sc = np.array([60000, 40000, 900])
    ids = rng.integers(-(1 << 62), 1 << 62, (20000, 12)) if wide else rng.integers(0, 1 << 24, (20000, 12))
    items = np.concatenate([album_plays(rng, int(n), ids) for n in sc])
    n = int(sc.sum())
    users = np.repeat(np.arange(len(sc)), sc)
    cols = {"ts": np.arange(n, dtype=np.int64) * 3, "item_id": items, "action": rng.integers(0, 3, n).astype(np.int32)}
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": users, **cols}))
    r = Tier.open(t.uri)._reader
    assert [e.get("tables") for _, e in r._files] == [2 if wide else 1]
    sizes = r._dict_sizes("item_id")
    keys, size, keep = r._dsarr["item_id"]
    tables = int(size[keep == 0].sum())
    assert (size[keep == 0] > 3 * reader.TABLE_PART_BYTES).sum() >= 2  # (two long tables, of many pages)
    st = Tier.open(t.uri).stats()["columns"]["item_id"]["stripe_tables"]  # (what ``gpumat inspect`` shows)
    assert st["bytes"] == tables and st["count"] == (keep != 1).sum() and st["read_in_part"] >= 2

    def last(h, k):
        u = np.arange(len(sc))
        ex = pa.table({"user_id": u, "version": [h.version] * len(u), "length": h.lengths(u), "request_ts": [10**9] * len(u)})
        return plan(h, parse_examples(ex, SCHEMA), Tenant("t", ["item_id"], k), check_leakage=False)

    h = Tier.open(t.uri)
    got = last(h, 64)
    kept = int(size[keep != 0].sum())  # (the segment dictionary that tables of codes index: read once, kept)
    assert 0 < h._reader.dict_bytes_read - kept < 0.4 * tables, (h._reader.dict_bytes_read, kept, tables, sizes)
    # the batch's dictionaries: the segment dictionary (where the short history's stripe names it),
    # which the key names, then the parts of the tables (which it does not: the device keeps the first)
    col = got.columns["item_id"]
    seg = [len(v) for v in h._reader.segment(0)._dicts.values()] if wide else []
    assert (col.dict_keys is not None) == wide and col.dict_kept == sum(seg) < len(col.dicts)
    whole = {u: {c: v[users == u] for c, v in cols.items()} for u in range(len(sc))}
    calls = []  # (the tables read in part)
    part = reader.VersionReader._table_parts
    monkeypatch.setattr(reader.VersionReader, "_table_parts", lambda self, *a: calls.append(part(self, *a)) or calls[-1])
    for u in (0, 1, 0, 1, 2):  # a window anywhere in one history (its table read in part), then many
        check_planned_batches(t, whole, rng, [u], 1, 300, backend)
    assert sum(map(len, calls)) >= 3, calls
    check_planned_batches(t, whole, rng, np.arange(len(sc)), 40, 300, backend)
    check_planned_batches(t, whole, rng, np.arange(len(sc)), 12, 3000, backend)


def test_blobs_of_pages_decode_to_their_pages_values():
    """Pages ``p0 .. p1`` of blobs of every kind of block (plain, PATCH, RUN, DELTA of codes), cut out
    as blobs of their own (``pages.page_spans``, ``pages.blobs_of_pages``, many at once), decode to
    the values of those pages; an anchor that disagrees is not a span."""
    rng = np.random.default_rng(12)
    shapes = [lambda n: rng.integers(0, 1000, n), lambda n: np.cumsum(rng.integers(0, 5, n)) + 10**9,
              lambda n: np.where(rng.random(n) < 0.02, rng.integers(0, 10**6, n), 7),
              lambda n: np.repeat(rng.integers(0, 50, n // 10 + 1), 10)[:n],
              lambda n: np.maximum(np.cumsum(np.where(rng.random(n) < 0.1, rng.integers(-3000, 10, n), 1)), 0)]
    blobs, want, nbs, p0s, p1s = [], [], [], [], []
    for trial in range(60):
        n = int(rng.integers(2 * 2048 + 1, 7 * 2048))
        v = shapes[trial % 5](n).astype(np.int64)
        reg, off, nb_, _ = pages.encode_stripes(v, np.array([n]), 128, extended=pages.CODES_DELTA if trial % 5 == 4 else True)
        nb = -(-n // 128)
        npg = -(-nb // 16)
        p0 = int(rng.integers(0, npg - 1))
        p1 = int(rng.integers(p0 + 1, npg))
        blobs.append(reg[off[0] : off[0] + nb_[0]])
        want.append(v[2048 * p0 : min(n, 2048 * (p1 + 1))])
        nbs.append(nb), p0s.append(p0), p1s.append(p1)
    bl = np.array([len(b) for b in blobs], np.int64)
    buf, at = np.concatenate(blobs), np.cumsum(bl) - bl
    f0, f1, b0, b1, ok = pages.page_spans(buf, at, nbs, bl, p0s, p1s)
    assert ok.all()
    nf, pb0 = f1 - f0, b0 >> 3
    out, size = pages.blobs_of_pages(buf, at, nbs, p0s, p1s, buf, at + pb0, b0, b1, buf, at + f0, nf)
    got = pages.decode_blobs(out, np.cumsum(size) - size, size, [len(w) for w in want], 128)
    assert got.tolist() == np.concatenate(want).tolist()
    bad = buf.copy()
    bad[at[0] + nbs[0] : at[0] + nbs[0] + 4] = 255  # (page 0's fields past the blob's end)
    assert not pages.page_spans(bad, at[:1], nbs[:1], bl[:1], [0], [1])[4].any()


def test_a_flipped_bit_in_a_table_read_in_part_is_caught(tmp_path, monkeypatch):
    """A segment read by ranges: a bit flipped in the head or in the last page of a long table that
    a window reads in part is a ``CorruptionError`` (its chunk's checksum), not values; restored, the
    window reads."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan

    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # (every segment by ranges of chunks)
    rng = np.random.default_rng(33)
    sc = np.array([60000, 900])
    items = np.concatenate([album_plays(rng, int(n), rng.integers(0, 1 << 24, (20000, 12))) for n in sc])
    n = int(sc.sum())
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), "ts": np.arange(n, dtype=np.int64), "item_id": items,
                       "action": np.zeros(n, np.int32)}))
    r = Tier.open(t.uri)._reader
    r._dict_sizes("item_id")
    keys, size, keep = r._dsarr["item_id"]
    (k,) = np.flatnonzero((keep == 0) & (size >= 3 * reader.TABLE_PART_BYTES))
    at = r.segment(0).base + int(keys[k] & ((1 << 40) - 1))  # (the table's first byte in the data file)
    path = os.path.join(tmp_path / "t", r.segment(0).path)  # (a data file, or a log record holding the segment)
    ex = pa.table({"user_id": [0], "version": [t.version], "length": [int(sc[0])], "request_ts": [10**9]})

    def window():
        h = Tier.open(t.uri)
        return plan(h, parse_examples(ex, SCHEMA), Tenant("t", ["item_id"], 64), check_leakage=False), h

    calls = []
    part = reader.VersionReader._table_parts
    monkeypatch.setattr(reader.VersionReader, "_table_parts", lambda self, *a: calls.append(part(self, *a)) or calls[-1])
    for byte in (at + 1, at + int(size[k]) - 1):  # (its head; its last page's fields)
        with flipped(path, byte), pytest.raises(CorruptionError, match="checksum"):
            window()
    calls.clear()
    got, h = window()
    assert len(calls[-1][0]) == 1  # (read in part)
    from gpumat.ops import decode_gather

    assert decode_gather(got, "reference")[0]["item_id"].tolist() == items[sc[0] - 64 : sc[0]].tolist()


@pytest.mark.parametrize("kept", [0, None])
def test_whole_reads_take_their_plan_over_several_segments(tmp_path, monkeypatch, kept):
    """A read of every row (then any read) of a version whose segments are all pooled takes its
    arguments from the column's plan (``VersionReader._plan3``), gathered by its rows (views for a
    run of rows): over three segments (three segment dictionaries, their stripe tables, unkept
    (``kept`` 0) or kept as the tier keeps them), every column, rows in order, a run inside, a
    permutation, repeats, a constant stripe in each segment (filled among the blobs): the values of
    the path that finds each read's tables and dictionaries itself, and the same stripe-table bytes
    counted (``dict_bytes_read``, for reads without repeats); no plan where it would
    hold a table that the tier does not keep (some of ``item_id``'s tables, kept as the tier keeps
    them: over 64 entries)."""
    if not native.available()[0]:
        pytest.skip("the whole-blob reads run where the C library is built")
    if kept is not None:
        monkeypatch.setattr(reader, "TABLES_KEPT_BYTES", kept)
    rng = np.random.default_rng(8)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    want, users = {}, []
    for part in range(3):
        sc = rng.integers(30, 500, 12)
        u = 100 * part + np.arange(len(sc))
        cols = hashed_replays(rng, sc)
        cols["action"][: sc[0]] = 2  # (a constant stripe: filled among the blobs by the plan)
        t.append(pa.table({"user_id": np.repeat(u, sc), **cols}))
        for c, x in cols.items():
            want.setdefault(c, []).extend(np.split(x.astype(np.int64), np.cumsum(sc)[:-1]))
        users.extend(u.tolist())
    r = Tier.open(t.uri)._reader
    d = r.directory()
    row_of = {x: i for i, x in enumerate(users)}
    pos = np.array([row_of[int(x)] for x in d.user_id])  # (each directory row's user, as appended)
    assert len(np.unique(d.seg)) == 3 and (r._small_pool() and (r._pool3[1] >= 0).all())
    n = len(d)
    for c in want:
        r.decode_stripes(c, np.arange(n))  # (the plan made, the segment dictionaries read: counted once)
        for si in (np.arange(n), np.arange(2, n - 3), rng.permutation(n), rng.integers(0, n, 2 * n)):
            expect = np.concatenate([want[c][pos[s]] for s in si])
            before = r.dict_bytes_read
            assert r.decode_stripes(c, si).tolist() == expect.tolist()
            planned = r.dict_bytes_read - before
            with monkeypatch.context() as m:
                m.setattr(r, "_plans", {c: False})
                before = r.dict_bytes_read
                assert r.decode_stripes(c, si).tolist() == expect.tolist()
                if len(np.unique(si)) == len(si):  # (a table read twice counts twice there, once here)
                    assert r.dict_bytes_read - before == planned, c
        # (no plan where it would hold a table the tier reads anew at each read: some where kept as the tier keeps them)
        assert (r._plans[c] is False) == (kept is None and c == "item_id")
    assert any(p and p[5] is not None for p in r._plans.values()) == (kept == 0)  # (tables of their own: unkept ones)
    assert (r._plans["action"][7][2] == pages.CONST_TAG).sum() == r._blob_kinds("action")[1].sum() >= 2


def test_unkept_tables_decode_in_the_cache(tmp_path, monkeypatch):
    """A whole-blob read (``decode_stripes``) of a column whose stripe tables are not kept reads them
    with the blobs and decodes each just before its blob (``gm_decode_blobs``): the values equal the
    path that decodes every table first, in any stripe order, at every read (the tables' marks and
    heads are kept after the first), from a pooled segment and from one read by ranges; a table
    whose blob is damaged is a ``CorruptionError`` that names it by its place (the batch path, which
    decodes the tables apart, finds it)."""
    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    monkeypatch.setattr(reader, "TABLES_KEPT_BYTES", 0)  # (every table read at each read, as in a large tier)
    rng = np.random.default_rng(31)
    sc = rng.integers(40, 600, 30)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    cols = hashed_replays(rng, sc)
    t.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **cols}))
    want = {u: cols["item_id"][np.repeat(np.arange(len(sc)), sc) == u] for u in range(len(sc))}
    h = Tier.open(t.uri)
    r, d = h._reader, h.directory()
    r._dict_sizes("item_id")
    skeys, _, keep = r._dsarr["item_id"]
    assert (keep == 0).sum() >= 20 and (keep == 1).sum() == 1
    calls = []
    real = native._decode_blobs  # (the calls with tables: their tab argument given)
    monkeypatch.setattr(native, "_decode_blobs", lambda *a: (a[15] is not None and calls.append(1)) or real(*a))
    users = d.user_id
    for si in (np.arange(len(d)), rng.permutation(len(d)), rng.integers(0, len(d), 50)):
        expect = np.concatenate([want[int(users[s])] for s in si])
        for _ in range(2):
            assert r.decode_stripes("item_id", si).tolist() == expect.tolist()
        with monkeypatch.context() as m:  # (every table decoded first: the batch path's way)
            m.setattr(reader.VersionReader, "_own_tables", lambda self, c, si, isd: (np.zeros(len(si), bool),) + (None,) * 3)
            m.setattr(r, "_plans", {})
            assert r.decode_stripes("item_id", si).tolist() == expect.tolist()
        with monkeypatch.context() as m:  # (no plan: each read finds its tables and dictionaries itself)
            m.setattr(r, "_plans", {"item_id": False})
            assert r.decode_stripes("item_id", si).tolist() == expect.tolist()
    # (the first read planned the column: its reads after it took their arguments from the plan)
    assert r._plans["item_id"] and len(calls) == 9 and r._tfacts["item_id"][0][keep == 0].all()
    small = Tier.open(t.uri)._reader  # (a read of a few rows looks up their keys alone: no table of every row's)
    si = rng.permutation(len(d))[:5]
    assert small.decode_stripes("item_id", si).tolist() == np.concatenate([want[int(users[s])] for s in si]).tolist()
    assert "item_id" not in small._drow and "item_id" in r._drow and "item_id" not in small._plans and len(calls) == 10
    # a segment read by ranges (not pooled): the tables' ranges fetched with the blobs', each verified
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)
    big = Tier.open(t.uri)._reader
    si = rng.permutation(len(d))
    assert big.decode_stripes("item_id", si).tolist() == np.concatenate([want[int(users[s])] for s in si]).tolist()
    assert len(calls) == 11 and (big._pool3[1] < 0).all() and big._plans["item_id"] is False
    # a table's first block tag made one no release writes: every read of it fails, naming the tables
    pool, base = r._pool3
    j = int(np.flatnonzero(keep == 0)[3])
    _, _, skip, _ = r._table_facts("item_id", np.array([j]), pool, base[skeys[j] >> 40] + (skeys[j] & ((1 << 40) - 1)), "x")
    bad = pool.copy()
    bad[base[skeys[j] >> 40] + (skeys[j] & ((1 << 40) - 1)) + int(skip[0])] = 0xCC  # (past its mark and head)
    r._pool3, r._plans = (bad, base), {}  # (the plan holds the pool it was made from)
    k = int(skeys[j] & ((1 << 40) - 1))
    with pytest.raises(CorruptionError, match=f"dictionary at byte {k}: .*a block tag that is not an encoding"):
        r.decode_stripes("item_id", np.arange(len(d)))
