"""The tier's metadata (host/log.py): commit records, checkpoints, the witness, rebuilding a version's
state; metadata that grows linearly with versions and opens that do not replay the whole history."""

import os

import numpy as np
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.host import log, segment, writer
from gpumat.host.store import LocalStore
from gpumat.host.tier import Tier
from test_tier import SCHEMA, Model, _flip, check_version, events


def _append(tier, model, seeds, n, users):
    """Append ``events(i, n, users)`` for each seed ``i`` to the tier (opened afresh each time when
    ``tier`` is a uri) and to the model."""
    for i in seeds:
        tab = events(i, n, users=users)
        (Tier.open(tier) if isinstance(tier, str) else tier).append(tab)
        model.append(tab)


def test_checkpoints_bound_the_replay(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 8)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    _append(t, m, range(30), 7, users=5)
    store = LocalStore(t.uri)
    assert log.checkpoint_versions(store) == [8, 16, 24]
    reads = []
    real = log.read_record
    monkeypatch.setattr(log, "read_record", lambda s, v: reads.append(v) or real(s, v))
    for v in (30, 24, 17, 3):
        reads.clear()
        check_version(Tier.open(t.uri, version=v) if v != 30 else Tier.open(t.uri), m, v, users=range(5))
        start = max([c for c in (0, 8, 16, 24) if c <= v])
        assert sorted(set(reads)) == list(range(start + 1 if start else 0, v + 1)), (v, reads)
    # runs stay few: a binary counter of run sizes
    assert len(log.read_checkpoint_header(store, 24)["runs"]) <= 3


def test_metadata_grows_linearly(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 16)
    t = Tier.create(tmp_path / "t", SCHEMA)  # small segments merge (the default policy): live files stay few

    def meta():
        return sum(os.path.getsize(os.path.join(d, f)) for sub in ("_checkpoints", "_runs")
                   for d, _, fs in os.walk(os.path.join(t.uri, sub)) for f in fs)

    sizes = {}
    for i in range(1, 161):
        t.append(events(i, 3, users=20))
        if i in (40, 160):
            sizes[i] = meta()
    # checkpoints list live files and runs, never every version: 4x the versions, well under 16x the bytes
    assert sizes[160] < 8 * sizes[40], sizes


def test_the_witness_names_the_newest_version(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    store = LocalStore(t.uri)
    assert log.read_witness(store) == 0
    t.append(events(0, 5))
    assert log.read_witness(store) == 1 == log.latest_version(store)
    # a damaged witness is ignored (the log decides), never trusted
    _flip(os.path.join(t.uri, "_lock"), 9)
    assert log.read_witness(store) is None and log.latest_version(store) == 1
    os.unlink(os.path.join(t.uri, "_lock"))
    assert log.latest_version(store) == 1 and Tier.open(t.uri).append(events(1, 5)) == 2


def test_damaged_or_missing_newest_record_is_corruption_never_a_rollback(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    for i in range(3):
        t.append(events(i, 10))
    rec = os.path.join(t.uri, "_log", f"{3:020d}.rec")
    _flip(rec, os.path.getsize(rec) // 2)
    with pytest.raises(CorruptionError, match="version 3"):
        Tier.open(t.uri)
    os.unlink(rec)
    with pytest.raises(CorruptionError, match="version 3"):
        Tier.open(t.uri)
    with pytest.raises(CorruptionError, match="repair"):
        t.append(events(9, 1))  # the writer that made version 3: it must not write over the loss either
    assert Tier.open(t.uri, version=2).version == 2  # older versions still open
    assert sorted(os.listdir(os.path.join(t.uri, "_log"))) == [f"{v:020d}.rec" for v in range(3)]


def test_records_are_verified(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    t.append(events(0, 10))
    store = LocalStore(t.uri)
    h, rows, at = log.read_record(store, 1)
    assert h["op"] == "append" and h["version"] == 1 and h["parent"] == 0 and rows[0].size > 0
    assert h["add"][0]["path"] is None  # a small append's data is inline
    data = open(os.path.join(t.uri, "_log", f"{1:020d}.rec"), "rb").read()
    for cut in (len(data) - 1, 40, 8):
        with open(os.path.join(t.uri, "_log", f"{1:020d}.rec"), "wb") as f:
            f.write(data[:cut])
        with pytest.raises(CorruptionError):
            log.read_record(store, 1)


# ----------------------------------------------------------------------------- int tables


def _random_table(rng, S, names, kind):
    f = {}
    for n in names:
        if kind == 0:  # anything an int64 holds: every residual wraps and unwraps
            f[n] = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, S, dtype=np.int64, endpoint=True)
        elif kind == 1:  # extremes
            f[n] = rng.choice(np.array([0, 1, -1, 2**62, 2**63 - 1, -(2**63)], np.int64), S)
        else:  # an index's shape: sorted users, small counts, blobs back to back
            f[n] = rng.integers(0, 1000, S).astype(np.int64)
    if kind == 2 and S:
        f["user_id"] = np.sort(rng.integers(0, max(1, S // 3), S))
    return f


@pytest.mark.parametrize("layout", [1, 2])
def test_int_tables_round_trip_both_layouts(layout):
    rng = np.random.default_rng(layout)
    for trial in range(150):
        names = segment._index_fields([f"c{i}" for i in range(trial % 4)])
        f = _random_table(rng, int(rng.integers(0, 50)), names, trial % 3)
        # (any int64 fields: an index of form 2, which takes any; form 3's: test_index_forms_round_trip_any_fields)
        for predict in ((lambda m: segment.index_residuals(m, 2), segment.index_values), segment.DELTA):
            data = segment.pack_int_table(f, names, predict, layout)
            back = segment.unpack_int_table(data, names, "t", predict)
            assert all(np.array_equal(back[n], f[n]) for n in names), (trial, predict)
            with pytest.raises(CorruptionError, match="t: table"):
                segment.unpack_int_table(data, names + ["more"], "t", predict)
            with pytest.raises(CorruptionError, match="t: table"):
                segment.unpack_int_table(data[:-3], names, "t", predict)


def test_layout_2_indexes_are_smaller():
    """An index of blobs back to back, counts and sizes in proportion: layout 2 predicts offsets from
    the blob before and sizes from the counts, and keeps each field's high bytes apart."""
    rng = np.random.default_rng(0)
    S, cols = 2000, ["ts", "item_id", "rating"]
    count = rng.integers(1, 400, S)
    f = {"user_id": np.arange(S) * 3, "start": np.zeros(S, np.int64), "count": count}
    pos = 0
    for c, rate in zip(cols, (0.9, 1.4, 0.4)):
        nb = (count * rate + rng.integers(0, 9, S)).astype(np.int64)
        f[f"{c}.off"] = pos + np.concatenate(([0], np.cumsum(nb)[:-1]))
        f[f"{c}.nbytes"], f[f"{c}.enc"] = nb, rng.integers(0, 2, S)
        pos += int(nb.sum())
    v1, v2 = segment._encode_index(f, cols, layout=1), segment._encode_index(f, cols)
    assert len(v2) < 0.5 * len(v1), (len(v1), len(v2))
    back, form = segment._decode_index(v2, cols, "t")
    assert form == segment.INDEX_FORM
    assert all(np.array_equal(back[k], f[k]) for k in f)


@pytest.mark.parametrize("form", [1, 2, 3])
def test_index_forms_round_trip_any_fields(form):
    """Every form of a segment index gives back any fields, packs' rows, wrapping values and odd
    ``enc`` values included: DICT places up and down, constant stripes (form 3: packs of a
    constant per row too, their values or their steps), tags in the index with their flags as the
    encoder writes them or not, and values no writer writes (form 3: any but a negative ``enc``, a
    constant with flags, a dictionary's place 2^54 from the last, or a pack led by a constant with
    a blob after it, which it refuses)."""
    from gpumat.host import codec, pages

    rng = np.random.default_rng(form)
    cols = ["a", "b"]
    for trial in range(30):
        S = int(rng.integers(1, 300))
        cont = (rng.random(S) < 0.3).astype(np.int64)
        cont[0] = 0
        f = {"user_id": np.sort(rng.integers(0, 50, S)), "start": rng.integers(0, 1000, S),
             "count": rng.integers(1, 200, S), "cont": cont}
        for c in cols:
            tag = rng.integers(0, 200, S)
            kinds = rng.integers(0, 5, S)
            enc = np.select([kinds == 0, kinds == 1, kinds == 2, kinds == 3],
                            [rng.integers(0, 256, S) & ~codec.ENC_DICT,                                 # flags
                             codec.ENC_DICT | (rng.integers(0, 1 << 30, S) << 8),                       # a place
                             codec.const_enc(rng.integers(-(10**12), 10**12, S)),                       # constant
                             pages.tag_flags(tag) | ((tag + 1) << codec.ENC_TAG_SHIFT)],                # a tag
                            rng.integers(-(1 << 62) if form < 3 else 0, 1 << (62 if form < 3 else 53), S))  # anything
            f[f"{c}.off"] = rng.integers(-(1 << 62), 1 << 62, S)
            f[f"{c}.nbytes"] = rng.integers(0, 1 << 20, S)
            f[f"{c}.enc"] = enc
        for k in list(f):  # a pack's rows repeat their first row's blob (half the trials: the table takes any)
            if "." in k and trial % 2:
                v = f[k].copy()
                for i in np.flatnonzero(cont):
                    v[i] = v[i - 1]
                f[k] = v
        if form == 3:  # a pack led by a constant: a constant in every row (its own, or its leader's: steps of 0)
            for c in cols:
                e = f[f"{c}.enc"]
                e[codec.const_stripes(e) & ((e & codec.ENC_FLAGS) != 0)] &= ~codec.ENC_CONST  # (a constant has no flags)
                for i in np.flatnonzero(cont):
                    if codec.const_stripes(e[i - 1]):
                        e[i] = e[i - 1] if trial % 3 else codec.const_enc(rng.integers(-99, 99, 1))[0]
        data = segment.pack_int_table(f, segment._index_fields(cols), (lambda m: segment.index_residuals(m, form),
                                                                       segment.index_values))
        back, got = segment._decode_index(data, cols, "t")
        assert got == form
        assert all(np.array_equal(back[k], f[k]) for k in f), trial
    if form == 3:
        f["a.enc"][0] = -5
        with pytest.raises(ValueError, match="no negative enc"):
            segment.index_residuals(np.stack([f[k] for k in segment._index_fields(cols)]), 3)
        # the writer's choice passes over a form that cannot hold the fields: form 2 holds any
        assert segment.smaller_form(f, cols, (2, 3)) == 2
        bufs, size, crc, got = segment.encode_segment3(cols, f["user_id"], f["start"], f["count"],
                                                       {c: (np.zeros(0, np.uint8), np.zeros(S, np.int64), np.zeros(S, np.int64),
                                                            f[f"{c}.enc"]) for c in cols}, f["cont"], None, (2, 3))
        assert got == 2


def test_tiers_written_with_layout_1_tables_still_open(tmp_path, monkeypatch):
    """Releases before layout 2 wrote every index, directory snapshot and length table in layout 1:
    such a tier opens and reads the same, and its next versions write layout 2 beside them."""
    real, real_index, pack_below = segment.pack_int_table, segment._encode_index, writer.PACK_BELOW
    large_below = writer.PACK_LARGE_BELOW
    monkeypatch.setattr(segment, "pack_int_table", lambda f, n, predict=segment.DELTA, layout=2: real(f, n, predict, 1))
    monkeypatch.setattr(segment, "_encode_index", lambda f, c, layout=2, form=None: real_index(f, c, 1))
    monkeypatch.setattr(writer, "PACK_BELOW", 0)  # (no packs before layout 2)
    monkeypatch.setattr(writer, "PACK_LARGE_BELOW", 0)
    monkeypatch.setattr(segment, "INDEX_FORM", 1)  # (nor tags in the index)
    real_dir = log.dir_fields
    monkeypatch.setattr(log, "dir_fields", lambda schema, packs=True: real_dir(schema, False))  # (nor skip, bcount)
    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 4)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    _append(t, m, range(6), 40, users=6)
    monkeypatch.setattr(segment, "pack_int_table", real)
    monkeypatch.setattr(segment, "_encode_index", real_index)
    monkeypatch.setattr(writer, "PACK_BELOW", pack_below)
    monkeypatch.setattr(writer, "PACK_LARGE_BELOW", large_below)
    monkeypatch.setattr(segment, "INDEX_FORM", 2)
    monkeypatch.setattr(log, "dir_fields", real_dir)
    _append(t.uri, m, range(6, 10), 40, users=6)
    for v in (3, 6, 10):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(6))
