"""Format 3 (host/pages.py, host/segment.py): the compact layout round-trips to format 2's blocks,
its C and NumPy paths agree, every malformed page or flipped byte is a CorruptionError, and tiers
of both formats (and mixed ones) read the same."""

import itertools
import contextlib
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpumat.core.errors import CorruptionError
from gpumat.host import codec, log, native, pages, segment, writer
from gpumat.host.ranges import ranges
from gpumat.host.tier import Tier

I64 = np.iinfo(np.int64)
SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}


pytestmark = pytest.mark.usefixtures("decoder")  # every test on the C codec and on NumPy's (conftest.py)


def columns(rng, n):
    """Columns shaped like real ones and adversarial ones: timestamps, ids, flags, full-range."""
    return [
        np.cumsum(rng.integers(0, 1000, n)) + 1_700_000_000,
        rng.integers(I64.min, I64.max, n, endpoint=True),
        rng.integers(0, 3, n),
        (np.arange(n) * -7 + 11),
        rng.integers(-5, 2 ** int(rng.integers(1, 63)), n),
        np.zeros(n, np.int64),
    ]


def decode_all(region, off, nbytes, sc, bs):
    return np.concatenate([pages.decode_blob(region[o : o + n], int(c), bs)
                           for o, n, c in zip(off.tolist(), nbytes.tolist(), sc.tolist())])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=6), st.sampled_from([1, 4, 8, 128, 256]), st.integers(0, 2**32))
def test_round_trip_and_same_blocks_as_format2(counts, bs, seed):
    rng = np.random.default_rng(seed)
    sc = np.array(counts, np.int64)
    for x in columns(rng, int(sc.sum())):
        x = x.astype(np.int64)
        region, off, nbytes, enc = pages.encode_stripes(x, sc, bs)
        assert region.dtype == np.uint8 and int(nbytes.sum()) == region.size and (off == np.cumsum(nbytes) - nbytes).all()
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        # where no PATCH / RUN / DELTA / RADIX block pays, the same block choice as format 2 (the same staged blocks)
        r2, off2, nw2, enc2 = codec.encode_stripes(x, sc, bs)
        plain = (enc & (codec.ENC_PATCH | codec.ENC_RUN | codec.ENC_DELTA | codec.ENC_RADIX)) == 0  # (extended where they pay)
        assert enc[plain].tolist() == enc2[plain].tolist()
        assert region.size < 8 * r2.size


def windows(rng, d, k):
    """``k`` random block windows ``(stripe, lo, hi)`` of the directory ``d`` (some empty)."""
    si = rng.integers(0, len(d), k)
    lo = rng.integers(0, d.nblocks[si])
    return si, lo, lo + rng.integers(0, d.nblocks[si] - lo + 1)


def window_values(whole, d, si, lo, hi, c, bs):
    """The stripes' own events among what ``read_blocks`` of those windows holds (``d.block_values``
    picks them out: in a pack, a stripe's blocks also hold its neighbours'): slices of the users'
    whole histories. A stripe's block k holds its blobs' positions ``bs (b0 + k) ..``, its own
    events from blob position ``skip``."""
    p = lambda s, k: int(min(max(bs * (d.b0[s] + k) - d.skip[s], 0), d.count[s]))  # noqa: E731
    return np.concatenate([whole[int(d.user_id[s])][c][d.start[s] + p(s, a) : d.start[s] + p(s, b)]
                           for s, a, b in zip(si, lo, hi)])


def check_windows(h, whole, rng, k, bs):
    """``read_blocks`` of ``k`` random block windows of tier ``h``, every column: the slices of the
    users' ``whole`` histories they hold."""
    d = h.directory()
    si, lo, hi = windows(rng, d, k)
    for c in SCHEMA:
        got_ = h.read_blocks(c, si, lo, hi)
        cnt, own = d.block_values(si, bs, lo, hi)
        got = codec.decode_blocks(got_[0], got_[1], cnt, dicts=got_.dicts)[own]
        assert got.tolist() == window_values(whole, d, si, lo, hi, c, bs).tolist(), c


def test_any_block_window_reads_only_what_it_needs(tmp_path, monkeypatch):
    """read_blocks of random windows of stripes of many pages = slices of the whole history, in
    memory and by ranges; the bytes counted are the tags, anchors and fields of the windows' pages
    and the windows' own payload, not whole pages."""
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    rng = np.random.default_rng(4)
    n = 3000
    t.append(pa.table({"user_id": np.repeat([0, 1, 2], n), "ts": np.sort(rng.integers(0, 10**12, 3 * n)),
                       "item_id": rng.integers(0, 2**40, 3 * n), "action": rng.integers(0, 3, 3 * n).astype(np.int32)}))
    whole = {u: t.read_history(u) for u in range(3)}
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(t.uri)
        d = h.directory()
        si, lo, hi = windows(rng, d, 40)
        hdr, words, nbytes = h.read_blocks("item_id", si, lo, hi)
        cnt, own = d.block_values(si, 8, lo, hi)
        got = codec.decode_blocks(hdr, words, cnt)[own]
        want = window_values(whole, d, si, lo, hi, "item_id", 8)
        assert got.tolist() == want.tolist()
        one = h.read_blocks("item_id", [0], [100], [101])[2]
        assert one < 200  # its payload (8 40-bit values: 40 bytes), its page's 16 tags, 2 anchors and 16 bases
        assert h.read_blocks("item_id", [0], [0], [d.nblocks[0]])[2] > 40 * one


def aux_columns(rng, n):
    """Columns that take PATCH and RUN blocks: bursts of equal timestamps, a sparse flag, rare outliers."""
    ts = np.cumsum(rng.integers(1, 1000, n) * (rng.random(n) < 0.4)) + 1_700_000_000
    ts[rng.integers(0, n, n // 200)] += 1 << 30  # session gaps
    flag = np.where(rng.random(n) < 0.85, 0, rng.integers(1, 8, n))
    small = rng.integers(0, 16, n)
    small[rng.integers(0, n, n // 50)] = rng.integers(2**20, 2**34, n // 50)  # high parts of <= 31 bits
    return {"ts": np.sort(ts), "item_id": small, "action": flag.astype(np.int32)}


def check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n, extended=tuple(SCHEMA)):
    """A tier of ``cols`` (``users`` per event) reads its values back whole, by any block window
    (the newest blocks too: the last page), decoded whole, padded and by any value range of a block,
    in memory and by ranges, the ``extended`` columns' staged blocks with the aux flag; with
    128-value blocks, a flipped byte of a compacted file is caught."""
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=bs)
    t.append(pa.table({"user_id": users, **cols}))
    U = int(np.max(users)) + 1  # (users 0 .. U - 1, in order)
    whole = {u: t.read_history(u) for u in range(U)}
    for c in SCHEMA:
        assert np.concatenate([whole[u][c] for u in range(U)]).tolist() == cols[c].tolist()
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(t.uri)
        d = h.directory()
        si, lo, hi = windows(rng, d, 60)
        lo[:4], hi[:4] = d.nblocks[si[:4]] - 1, d.nblocks[si[:4]]  # the newest block: the last page
        for c in SCHEMA:
            got_ = h.read_blocks(c, si, lo, hi)
            hdr, words, nbytes = got_
            assert (hdr[:, 2] & 0x80).any() or c not in extended
            cnt, own = d.block_values(si, bs, lo, hi)
            every = codec.decode_blocks(hdr, words, cnt, dicts=got_.dicts)  # (with a pack's neighbours' events)
            got = every[own]
            want = window_values(whole, d, si, lo, hi, c, bs)
            assert got.tolist() == want.tolist()
            assert codec.decode_blocks_padded(hdr, words, bs, dicts=got_.dicts)[
                np.arange(bs)[None, :] < cnt[:, None]][own].tolist() == want.tolist()
            a = rng.integers(0, cnt)  # a value range of each block: what the reference backend decodes
            b = a + rng.integers(1, cnt - a + 1)
            part = codec.decode_blocks(hdr, words, b - a, lo=a, dicts=got_.dicts)
            assert part.tolist() == every[ranges(np.cumsum(cnt) - cnt + a, b - a)].tolist()
    if bs == 128:  # a flipped bit in extended blobs is caught as in any other (one compacted data file)
        f = Tier.create(tmp_path / "f", SCHEMA, block_size=bs)
        table = pa.table({"user_id": users, **cols})
        f.append(table.slice(0, n // 2))
        f.append(table.slice(n // 2))
        f.compact()
        assert_flips_caught(tmp_path / "f", list(range(U)), 15)


@pytest.mark.parametrize("bs", [32, 128])
def test_patch_and_run_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """PATCH and RUN blocks (chosen where they pay) decode to the values, whole and by any block
    window, one page (fields first) or many (whole pages read), in memory and by ranges; the staged
    blocks carry the aux flag."""
    rng = np.random.default_rng(bs)
    n = 9000
    users = np.repeat([0, 1, 2, 3], [n - 300, 100, 150, 50])
    cols = aux_columns(rng, n)
    for x in cols.values():
        sc = np.array([n - 300, 100, 150, 50])
        region, off, nbytes, _ = pages.encode_stripes(x.astype(np.int64), sc, bs)
        plain, _, _, _ = pages.encode_stripes(x.astype(np.int64), sc, bs, extended=False)
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        assert region.size < 0.875 * plain.size  # each of these columns pays for its PATCH / RUN blocks
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def four_stripes(make, seed: int):
    """``(rng, n, sc, users, cols)``: ``make``'s columns of 9000 events in four stripes (users) of
    8700, 100, 150 and 50 events."""
    rng = np.random.default_rng(seed)
    n = 9000
    sc = np.array([n - 300, 100, 150, 50])
    return rng, n, sc, np.repeat(np.arange(4), sc), make(rng, n)


def delta_columns(rng, n):
    """Columns that take DELTA blocks: timestamps of small steps with rare long gaps (DELTA PATCH), a
    random walk with steps of both signs (DELTA, a negative line slope), an int32 walk."""
    ts = np.cumsum(rng.integers(0, 40, n) + np.where(rng.random(n) < 0.02, rng.integers(10**4, 10**7, n), 0))
    walk = np.cumsum(rng.integers(-20, 20, n)) + 10**15
    walk32 = np.cumsum(rng.integers(-30, 31, n)).astype(np.int32)
    return {"ts": ts + 1_700_000_000, "item_id": walk, "action": walk32}


@pytest.mark.parametrize("bs", [32, 128])
def test_delta_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """DELTA and DELTA PATCH blocks are chosen where they save DELTA_MIN_SAVING, and decode to the
    values whole, by any block window and by any value range of a block (the prefix sum starts at
    the block's first value whatever the window), in memory and by ranges; a flipped byte is caught."""
    rng, n, sc, users, cols = four_stripes(delta_columns, 10 + bs)
    kinds = set()
    for name, x in cols.items():
        region, off, nbytes, enc = pages.encode_stripes(x.astype(np.int64), sc, bs)
        # (a walk's line fits blocks of 32 well: DELTA saves it too little there)
        assert (enc & codec.ENC_DELTA).any() or (bs < 128 and name != "ts"), name
        plain, _, _, _ = pages.encode_stripes(x.astype(np.int64), sc, bs, extended=False)
        assert region.size < (1 - pages.DELTA_MIN_SAVING) * plain.size or not (enc & codec.ENC_DELTA).any()
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        kinds |= set(pages.tag_kind(region[off[0] : off[0] + (sc[0] + bs - 1) // bs]).tolist())
    assert {pages.KIND_DELTA, pages.KIND_DELTA_PATCH} <= kinds
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n, tuple(SCHEMA) if bs == 128 else ("ts",))


def pack_columns(rng, n):
    """Columns shaped like a pack's (a run of short histories back to back, DESIGN §2): timestamps
    that step up within a history and jump back or ahead between histories (DELTA SIGNED), the
    same in milliseconds (never repeated), and an int32 column of the same shape (the kernels'
    32-bit path)."""
    lens = rng.integers(1, 32, n)
    first = np.zeros(n, bool)
    first[np.cumsum(lens)[np.cumsum(lens) < n]] = True
    first[0] = True
    step = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 300, n)) + np.where(rng.random(n) < 0.03, 10**5, 0)
    start = rng.integers(9 * 10**8, 10**9, n)  # each history's first timestamp: anywhere in three years
    hist = np.cumsum(first) - 1
    within = np.cumsum(step) - np.cumsum(step)[np.flatnonzero(first)][hist]
    ts = start[hist] + within
    ms = step * 1000 + rng.integers(1, 1000, n)  # the same in milliseconds, never repeated
    within_ms = np.cumsum(ms) - np.cumsum(ms)[np.flatnonzero(first)][hist]
    return {"ts": ts, "item_id": start[hist] * 1000 + within_ms, "action": (ts - 9 * 10**8).astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_signed_delta_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A pack's timestamps take DELTA SIGNED blocks (steps below the line's are exceptions with a
    sign: the jumps back between histories), chosen where they pay, and decode to the values whole,
    by any block window and by any value range of a block, in memory and by ranges; with 128-value
    blocks a flipped byte of a compacted file is caught."""
    rng, n, sc, users, cols = four_stripes(pack_columns, 30 + bs)
    for name, x in cols.items():
        region, off, nbytes, enc = pages.encode_stripes(x.astype(np.int64), sc, bs)
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        assert (enc[0] & codec.ENC_SIGNED) and (enc[0] & codec.ENC_DELTA), name
        kinds = pages.tag_kind(region[off[0] : off[0] + (sc[0] + bs - 1) // bs])
        assert (kinds == pages.KIND_DELTA_SIGNED).mean() > 0.5, name
        # unsigned DELTA PATCH alone (the line's step the smallest, most negative, step) takes far more
        unsigned = pages._Candidates(codec.fit_blocks(x.astype(np.int64), sc, bs), 0, 10, True)
        assert unsigned.size(unsigned.kinds((0, 1, 2, 4, 5))) > 1.15 * unsigned.size(unsigned.kinds(pages._ALL_KINDS))
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def test_signed_delta_exceptions_at_their_limits():
    """DELTA SIGNED round-trips steps at the edges of its fields: jumps of +-2^30 high parts (31-bit
    exceptions), wrapping 64-bit steps, and a block whose only exception is its one negative step."""
    rng = np.random.default_rng(9)
    n = 4096
    base = np.cumsum(rng.integers(0, 4, n))
    for jump in (-(1 << 30), (1 << 30) - 1, -(1 << 40), 1 << 40, I64.min, I64.max):
        x = base.copy()
        at = rng.integers(1, n, 40)
        with np.errstate(over="ignore"):
            for a in at:
                x[a:] += np.int64(jump) // 2 if jump in (I64.min, I64.max) else jump
        region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), 128)
        assert pages.decode_blob(region, n, 128).tolist() == x.tolist(), jump
    x = base.copy()
    x[1000:] -= 7
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), 128)
    assert pages.decode_blob(region, n, 128).tolist() == x.tolist()


def radix_columns(rng, n):
    """Columns of small alphabets that take RADIX blocks: a 5-star rating (7-bit codes of 3 digits),
    an action of 3 kinds (8-bit codes of 5) in int32, and 10 levels over a line (LFOR + digits)."""
    rating = rng.choice(np.arange(1, 6), n, p=[0.06, 0.11, 0.26, 0.35, 0.22])
    return {"ts": 1_700_000_000 + np.arange(n) * 1000 + rng.integers(0, 10, n), "item_id": rating,
            "action": rng.integers(0, 3, n).astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_radix_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """Small alphabets take RADIX blocks (g digits a code), chosen where they pay, and decode to the
    values whole, by any block window (a window that starts or ends inside a code) and by any value
    range of a block, in memory and by ranges; with 128-value blocks a flipped byte of a compacted
    file is caught."""
    rng, n, sc, users, cols = four_stripes(radix_columns, 50 + bs)
    for name, x in cols.items():
        region, off, nbytes, enc = pages.encode_stripes(x.astype(np.int64), sc, bs)
        plain, _, _, _ = pages.encode_stripes(x.astype(np.int64), sc, bs, extended=False)
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        if name == "ts":
            assert not (enc & codec.ENC_RADIX).any()  # (a wide alphabet: no gain)
            continue
        if bs == 32 and name == "action":  # (7 codes of 8 bits for 32 values of 2 bits: no gain)
            continue
        assert (enc[0] & codec.ENC_RADIX), name
        # (the rating's 3 bits a value -> 2.33; blocks of 32 pay their tags and bases four times as often)
        assert region.size < (0.85 if name == "item_id" and bs == 128 else 0.95) * plain.size, (name, region.size, plain.size)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n, ("item_id", "action") if bs == 128 else ("item_id",))


def sparse_columns(rng, n):
    """Columns whose bitmaps are stored sparse, as positions: day-granular timestamps (RUN blocks of a
    few runs), a walk of small steps with rare jumps (DELTA PATCH blocks of a few exceptions) and a
    value set in one event in a hundred (a watch time: PATCH blocks of a few exceptions, no low bits)."""
    days = np.cumsum((rng.random(n) < 0.02) * rng.integers(1, 400, n))
    walk = np.cumsum(rng.integers(0, 3, n) + np.where(rng.random(n) < 0.01, rng.integers(10**5, 10**7, n), 0))
    flag = np.where(rng.random(n) < 0.01, rng.integers(1, 2**20, n), 0)
    return {"ts": 1_600_041_600 + 86_400 * days, "item_id": walk + 10**12, "action": flag.astype(np.int32)}


def flag_columns(rng, n):
    """Columns that take FLAG blocks (compact sparse PATCH blocks): a flag set in 1% of events (a
    purchase), one set in 5% (a like), and a value in 2% of events, else 0 (a watch time)."""
    return {"ts": np.where(rng.random(n) < 0.01, 1, 0), "item_id": (rng.random(n) < 0.05).astype(np.int64),
            "action": np.where(rng.random(n) < 0.02, rng.integers(1, 3600, n), 0).astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_flag_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A sparse PATCH block of no low bits and no slope based where its page's line is (a flag's,
    a rare value's) is a FLAG block: its exception count in its tag, no fields (exceptions of 0
    bits) or only their width. Its columns decode whole, by any block window and by any value
    range of a block, in memory and by ranges; they take far fewer bytes than as PATCH blocks with
    fields; a flipped byte of a compacted file is caught."""
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (this few flags' plain payload is under 1 KiB)
    rng, n, sc, users, cols = four_stripes(flag_columns, 90 + bs)
    for name, x in cols.items():
        x = x.astype(np.int64)
        region, off, nbytes, enc = pages.encode_stripes(x, sc, bs)
        tags = np.concatenate([region[o : o + -(-c // bs)] for o, c in zip(off, sc)]) & 0x7F
        lo = pages.TAG_FLAG_W2 if name == "action" else pages.TAG_FLAG
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        with monkeypatch.context() as m:
            m.setattr(pages, "FLAG_MAX_E", 0)  # as before FLAG blocks
            old, _, _, _ = pages.encode_stripes(x, sc, bs)
        assert ((tags >= lo) & (tags < lo + pages.FLAG_MAX_E)).sum() > 0.5 * (tags != 0).sum(), (name, np.unique(tags))
        assert region.size < (0.8 if bs == 128 else 0.9) * old.size, (name, region.size, old.size)
    # a flag based at 7: its blocks start where no page's line is (0 at a page's start), so they are
    # no FLAG blocks, and are weighed as the PATCH blocks they are (a review's case: never larger)
    x = (7 + (rng.random(20000) < 0.05)).astype(np.int64)
    with monkeypatch.context() as m:
        m.setattr(pages, "FLAG_MAX_E", 0)
        old, _, _, _ = pages.encode_stripes(x, np.full(500, 40), bs)
    assert pages.encode_stripes(x, np.full(500, 40), bs)[0].size <= old.size
    # a stripe of no values among others decodes to none, on both decoders
    r, o, nb, _ = pages.encode_stripes(np.arange(10), np.array([0, 10]), 8)
    assert pages.decode_blobs(r, o, nb, np.array([0, 10]), 8).tolist() == list(range(10))
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def gap_columns(rng, n):
    """Columns whose RUN blocks store their run starts as gaps: a value per user in histories of 8
    events (a pack of short histories), runs of 1-11 equal ids, and runs of 3-6 of values under 1000."""
    return {"ts": np.repeat(rng.integers(1, 21, n // 8 + 1), 8)[:n] + 1_600_000_000,
            "item_id": np.repeat(rng.integers(0, 50, n), rng.integers(1, 12, n))[:n],
            "action": np.repeat(rng.integers(0, 1000, n), rng.integers(3, 7, n))[:n].astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_run_starts_as_gaps_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A RUN block of many short runs stores its run starts as gaps of a few bits each (tag 75)
    where that takes fewer bits than a bitmap or 7-bit positions; such blocks decode whole, by any
    block window and by any value range of a block, in memory and by ranges, and take fewer bytes
    than without gaps; a flipped byte of a compacted file is caught."""
    rng, n, sc, users, cols = four_stripes(gap_columns, 110 + bs)
    gapped = set()
    for name, x in cols.items():
        x = x.astype(np.int64)
        region, off, nbytes, enc = pages.encode_stripes(x, sc, bs)
        tags = np.concatenate([region[o : o + -(-c // bs)] for o, c in zip(off, sc)]) & 0x7F
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        with monkeypatch.context() as m:
            m.setattr(pages, "RUN_GAPS", False)
            old, _, _, _ = pages.encode_stripes(x, sc, bs)
        # (in blocks of 32, 5-bit positions of a few runs are smaller than gaps and their field)
        assert region.size <= old.size and (bs == 32 or region.size < 0.95 * old.size), (name, region.size, old.size)
        assert bs == 32 or (tags == pages.TAG_RUN_GAPS).mean() > 0.5, (name, np.unique(tags))
        gapped |= set(tags.tolist())
    assert pages.TAG_RUN_GAPS in gapped  # (in blocks of 32: the 1-11 runs of ids)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def test_run_gaps_past_their_block_are_corruption(monkeypatch):
    """A RUN block's gaps that put a run start at or past its block's end, or a gap width wider
    than a position, is a ``CorruptionError`` on both decoders."""
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (one block: extended blocks pay)
    x = np.repeat(np.array([9, 2, 14, 0, 7, 11, 3, 15, 5, 1, 12, 6, 10, 4, 13, 8]) * 5, 8)  # 16 runs of 8: gaps of 7
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([128]), 128)
    assert region[0] & 0x7F == pages.TAG_RUN_GAPS
    assert pages.decode_blob(region, 128, 128).tolist() == x.tolist()
    tags = region[:1].astype(np.int64)
    fe = pages.fields_end(region, np.array([1]), np.array([len(region)]), pages.fields_per_block(tags), "t")
    blk = pages.parse_fields(region, np.array([1]), fe, tags, np.array([128]), np.array([0]))
    assert blk.w2[0] == 3 and blk.nv[0] == 16
    for width in (7, 8):  # the gaps' width field (the last): 7 bits (the gaps read run past the
        wide = region.copy()  # block, or the payload past the blob), 8 (wider than a position)
        wide[int(fe[0]) - 1] = width
        with pytest.raises(CorruptionError):
            pages.decode_blob(wide, 128, 128)
    # gaps that add up past the block: 15 gaps of 7 bits, the last ones 127
    y = np.repeat(np.arange(16) * 7 % 16, [1] * 14 + [57, 57])
    region, _, _, _ = pages.encode_stripes(y, np.array([128]), 128)
    assert region[0] & 0x7F == pages.TAG_RUN_GAPS and pages.decode_blob(region, 128, 128).tolist() == y.tolist()
    tags = region[:1].astype(np.int64)
    fe = pages.fields_end(region, np.array([1]), np.array([len(region)]), pages.fields_per_block(tags), "t")
    blk = pages.parse_fields(region, np.array([1]), fe, tags, np.array([128]), np.array([0]))
    at = 8 * int(fe[0]) + int(blk.nv[0] * blk.w[0])  # the first gap's bit
    v = int.from_bytes(region.tobytes(), "little")
    w = v | (((1 << int(blk.w2[0])) - 1) << (at + 13 * int(blk.w2[0])))  # the 14th gap at its widest
    bad = np.frombuffer(w.to_bytes(len(region), "little"), np.uint8)
    with pytest.raises(CorruptionError, match="ascend|bitmap"):
        pages.decode_blob(bad, 128, 128)


def levels_columns(rng, n):
    """Columns that take LEVELS blocks: small alphabets whose values fall in frequency, 4 kinds at
    70/20/5/5% (an action type), 3 at 80/15/5% above a large base, and 12 values at 50/20/10/8/...%
    (a tab: levels and a tail of 3 bits)."""
    tab = np.r_[0.5, 0.2, 0.1, 0.08, np.full(8, 0.12 / 8)]
    return {"ts": rng.choice(4, n, p=[0.7, 0.2, 0.05, 0.05]) + 1_600_000_000,
            "item_id": rng.choice(3, n, p=[0.8, 0.15, 0.05]) + 10**12,
            "action": rng.choice(12, n, p=tab).astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_levels_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A block of a small alphabet whose values fall in frequency is a LEVELS block (tags 112..127):
    a bitmap of the values above the base, one of those above base + 1 among them, and so on, then
    a tail of a few bits past the last level. Such blocks decode whole, by any block window and by
    any value range of a block, in memory and by ranges (staged as PATCH blocks of no low bits),
    take fewer bytes than without LEVELS, and a flipped byte of a compacted file is caught."""
    rng, n, sc, users, cols = four_stripes(levels_columns, 130 + bs)
    for name, x in cols.items():
        x = x.astype(np.int64)
        region, off, nbytes, enc = pages.encode_stripes(x, sc, bs)
        tags = np.concatenate([region[o : o + -(-c // bs)] for o, c in zip(off, sc)]) & 0x7F
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        assert (enc & codec.ENC_PATCH).all()  # (staged as PATCH blocks)
        with monkeypatch.context() as m:
            m.setattr(pages, "LEVELS_MAX", 0)  # as before LEVELS blocks
            old, _, _, _ = pages.encode_stripes(x, sc, bs)
        assert (tags >= pages.TAG_LEVELS).mean() > (0.5 if bs == 128 else 0.3), (name, np.unique(tags))  # (32: FLAG too)
        assert region.size < (0.95 if bs == 128 else 0.98) * old.size, (name, region.size, old.size)
        if name == "action":
            assert ((tags - pages.TAG_LEVELS) & 3 == 3).any()  # (a tail of 3 bits)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def flipped_payload_bits_agree(monkeypatch, region, fe: int, blk):
    """Each flipped bit of a one-block blob's payload (from byte ``fe``; ``blk`` its parsed block)
    gives other values or a ``CorruptionError``, the same on both decoders and on both stagings (C's
    and NumPy's: what a read stages; the chunk checksums catch it in a tier)."""
    def staged(blob):
        try:
            return [w.tolist() for w in pages.stage_blocks(blob, np.array([8 * fe]), blk)]
        except CorruptionError as e:
            return type(e)

    for bit in range(8 * fe, 8 * len(region)):
        bad = region.copy()
        bad[bit >> 3] ^= 1 << (bit & 7)
        a, b = both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128)
        assert type(a) is type(b) and (isinstance(a, CorruptionError) or a.tolist() == b.tolist()), bit
        c = staged(bad)
        with monkeypatch.context() as m:
            m.setattr(native, "_decode", None)
            assert staged(bad) == c, bit
        assert (c is CorruptionError) == isinstance(a, CorruptionError), bit


def classes_columns(rng, n):
    """Columns that take CLASSES blocks: skewed alphabets too wide for LEVELS, in frequency order
    from their base: 300 values falling as 1/k (a category), 3000 as 1/k^1.2 above a large base (an
    item's rank), 72 as 1/k^1.3 (a release year's rank)."""
    def zipf(d, a):
        p = 1 / np.arange(1, d + 1) ** a
        return rng.choice(d, n, p=p / p.sum())

    return {"ts": zipf(300, 1.0) + 1_600_000_000, "item_id": zipf(3000, 1.2) + 10**12,
            "action": zipf(72, 1.3).astype(np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_classes_blocks_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A block of a skewed alphabet too wide for LEVELS is a CLASSES block (tags 240, 244, 248,
    252): levels of bitmaps choose each value's class, each class a range of values of its own low
    width, the tail's the widest. Such blocks decode whole (C and NumPy alike), by any block window
    and by any value range of a block, in memory and by ranges (staged as PATCH blocks of ``w_0``
    low bits, by C and by NumPy alike), take fewer bytes than without CLASSES, and a flipped byte
    of a compacted file is caught."""
    rng, n, sc, users, cols = four_stripes(classes_columns, 170 + bs)
    taken = bs == 128
    for name, x in cols.items():
        x = x.astype(np.int64)
        region, off, nbytes, enc = pages.encode_stripes(x, sc, bs)
        tags = np.concatenate([region[o : o + -(-c // bs)] for o, c in zip(off, sc)])
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        assert (enc & codec.ENC_PATCH).all()  # (staged as PATCH blocks)
        with monkeypatch.context() as m:  # the encoder's C (native.classes_pack) and NumPy: the same bytes
            m.setattr(native, "_decode", None)
            assert pages.encode_stripes(x, sc, bs)[0].tobytes() == region.tobytes()
        with monkeypatch.context() as m:
            m.setattr(pages, "CLASSES_MIN_SAVING", 10.0)  # as before CLASSES blocks
            old, _, _, _ = pages.encode_stripes(x, sc, bs)
        assert (pages.tag_kind(tags) == pages.KIND_CLASSES).sum() == pages.is_classes(tags).sum()
        if bs == 128:  # (blocks of 32: their fields are a larger share; there PATCH blocks may stay)
            assert pages.is_classes(tags).mean() > 0.5, (name, np.unique(tags))
            assert region.size < 0.97 * old.size, (name, region.size, old.size)
        else:
            assert region.size <= old.size, (name, region.size, old.size)
            taken |= pages.is_classes(tags).any()
        # the staging (a read's): C's and NumPy's the same words
        nb = -(-int(sc[0]) // bs)
        blob = region[off[0] : off[0] + nbytes[0]]
        t0 = blob[:nb].astype(np.int64)
        anc = np.frombuffer(blob[nb : nb + 8 * -(-nb // 16)].tobytes(), "<u4").reshape(-1, 2).astype(np.int64)
        fs, fe = anc[:, 0], np.append(anc[1:, 0], len(blob))
        cnt = np.minimum(bs, int(sc[0]) - bs * np.arange(nb))
        blk = pages.parse_fields(blob, fs, fe, t0, cnt, np.arange(nb) // 16)
        bits = blk.bits()
        src = 8 * (nb + 8 * len(anc)) + np.cumsum(bits) - bits
        hdr, words = pages.stage_blocks(blob, src, blk)
        with monkeypatch.context() as m:
            m.setattr(native, "_decode", None)
            blk2 = pages.parse_fields(blob, fs, fe, t0, cnt, np.arange(nb) // 16)
            hdr2, words2 = pages.stage_blocks(blob, src, blk2)
        assert all((getattr(blk, f) == getattr(blk2, f)).all() for f in pages.Blocks.FIELDS)
        assert hdr.tolist() == hdr2.tolist() and words.tolist() == words2.tolist()
        assert codec.decode_blocks(hdr, words, cnt).tolist() == x[: int(sc[0])].tolist()
    assert taken
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def test_classes_decode_without_pdep_and_pack_refusals(decoder):
    """The C decoder's portable deposit (``GPUMAT_NO_PDEP=1``: the path of CPUs without a fast
    ``pdep``) and its scalar classes (``GPUMAT_NO_AVX512=1``: CPUs without AVX-512 VBMI) read CLASSES
    blocks as the ``pdep`` and AVX-512 paths and NumPy do, in child processes (the choice is made once
    per process), with tails of up to 24 bits, and LEVELS blocks (with AVX-512: as CLASSES); and ``native.classes_pack`` refuses a block out of range
    or past its words, writing nothing."""
    if decoder != "native":
        pytest.skip("about the C decoder's paths: runs once, with the C codec")
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from gpumat.host import native, pages\n"
        "rng = np.random.default_rng(5)\n"
        "for n, top in ((5000, 3000), (3000, 70), (4000, 1 << 18), (3000, 1 << 24)):\n"
        "    x = np.minimum(rng.zipf(1.3, n), top).astype(np.int64) + 10**9\n"
        "    sc = np.array([n // 3, n // 3, n - 2 * (n // 3)])\n"
        "    region, off, nbytes, enc = pages.encode_stripes(x, sc, 128)\n"
        "    tags = region[off[0] : off[0] + -(-sc[0] // 128)]\n"
        "    assert pages.is_classes(tags).any(), np.unique(tags)\n"
        "    got = pages.decode_blobs(region, off, nbytes, sc, 128)\n"
        "    assert got.tolist() == x.tolist()\n"
        "    np_ = np.concatenate([pages.decode_blob(region[o : o + b], c, 128) for o, b, c in zip(off, nbytes, sc)])\n"
        "    assert np_.tolist() == x.tolist()\n"
        "pages.EXT_MIN_BITS = 0\n"  # (LEVELS blocks, as CLASSES of no low bits with AVX-512: 4000 values pay for them)
        "for p in ([0.7, 0.2, 0.05, 0.05], [0.9, 0.04, 0.03, 0.02, 0.01]):\n"
        "    x = rng.choice(len(p), 4000, p=p).astype(np.int64) - 5\n"
        "    region, off, nbytes, enc = pages.encode_stripes(x, np.array([4000]), 128)\n"
        "    tags = region[off[0] : off[0] + 32].astype(np.int64)\n"
        "    assert ((tags & 0x7F) >= pages.TAG_LEVELS).any() and not pages.is_classes(tags).any(), tags\n"
        "    assert pages.decode_blobs(region, off, nbytes, np.array([4000]), 128).tolist() == x.tolist()\n"
        "print('ok')\n")
    for no_pdep, no_avx512 in (("1", "1"), ("0", "1"), ("0", "0")):
        env = {**os.environ, "GPUMAT_NO_PDEP": no_pdep, "GPUMAT_NO_AVX512": no_avx512}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (no_pdep, no_avx512, out.stderr[-2000:])
    r = np.array([[0, 1, 5, 9]], np.uint64)
    width, start = pages.classes_shape(np.array([1 | (3 << 4)]), np.array([1]))  # classes 0..1, then a tail of 3 bits
    buf = np.zeros(4, np.uint64)
    native.classes_pack(r, [4], [1], start, width, [0], [1], buf)  # (4 values: 1 level, bits 1 + 1 + 3 + 3)
    assert buf.any()
    for cnt, L, nw in (([5], [1], [1]), ([4], [0], [1]), ([4], [1], [0]), ([4], [1], [9])):
        buf = np.zeros(4, np.uint64)
        with pytest.raises(ValueError):
            native.classes_pack(r, cnt, L, start, width, [0], nw, buf)
        assert not buf.any()


def one_page(region: np.ndarray, n: int) -> tuple:
    """A blob of ``n`` values in one page (``encode_stripes`` of a stripe of at most a page's blocks):
    ``(nb, tags, fe, cnt)``: its blocks, their tags, where its fields end, each block's values."""
    nb = -(-n // 128)
    tags = region[:nb].astype(np.int64)
    fe = pages.fields_end(region, np.array([nb]), np.array([len(region)]),
                          np.array([int(pages.fields_per_block(tags).sum())]), "t")
    return nb, tags, fe, codec.block_counts(np.array([n]), 128)[1]


def test_patch_costs_in_c_equal_numpys(monkeypatch, decoder):
    """The encoder's PATCH search (``pages._patch_costs``: the cheapest low width, its exceptions'
    width and count, FLAG blocks where asked) in C gives NumPy's numbers: residuals of every width
    up to 64 bits, mostly small ones, blocks of 1 to 128 values, widths out of reach."""
    if decoder != "native":
        pytest.skip("compares the C search with NumPy's: runs once, with the C codec")
    rng = np.random.default_rng(13)
    for t in range(300):
        n, lanes = int(rng.integers(0, 40)), int(rng.choice([1, 7, 128]))
        cnt = rng.integers(1, lanes + 1, n)
        top = np.maximum(rng.integers(0, 65, (n, 1)), 1).astype(np.uint64)
        r = rng.integers(0, 1 << 62, (n, lanes), dtype=np.int64).astype(np.uint64) << np.uint64(2) >> (np.uint64(64) - top)
        r[rng.random((n, lanes)) < 0.7] = rng.integers(0, 4)
        if t % 5 == 0 and n:
            r[:, 0] = np.uint64(2**64 - 1)
        r[np.arange(lanes)[None, :] >= cnt[:, None]] = 0
        w, flag = rng.integers(0, 66, n), (rng.random(n) < 0.5 if t % 2 else None)
        got = pages._patch_costs(r, cnt, w, flag)
        with monkeypatch.context() as m:
            m.setattr(native, "available", lambda: (False, None))
            want = pages._patch_costs(r, cnt, w, flag)
        assert all(g.tolist() == x.tolist() for g, x in zip(got, want)), t


def test_classes_patch_in_c_writes_numpys_stream(monkeypatch, decoder):
    """CLASSES blocks staged as PATCH blocks: C's stream (each word written whole, in order, into
    memory that was not zeroed) holds NumPy's bits, the same widths, exceptions and offsets, and
    nothing past its last block's bits but a zero word."""
    if decoder != "native":
        pytest.skip("compares the C staging with NumPy's: runs once, with the C codec")
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)
    monkeypatch.setattr(pages, "CLASSES_MIN_SAVING", 0)
    rng = np.random.default_rng(12)
    for top in (40, 3000, 1 << 18, 1 << 24):
        x = np.minimum(rng.zipf(1.3, 1500), top).astype(np.int64) + 77
        region, _, _, _ = pages.encode_stripes(x, np.array([len(x)]), 128)
        nb, tags, fe, cnt = one_page(region, len(x))
        blk = pages.parse_fields(region, np.array([nb]), fe, tags, cnt, np.zeros(nb, np.int64))
        cl = np.flatnonzero(blk.kind == pages.KIND_CLASSES)
        assert len(cl) > nb // 2, (top, tags)
        bits = blk.bits()
        src = 8 * int(fe[0]) + np.cumsum(bits) - bits
        sub = blk.take(cl)
        got = native.classes_patch(region, src[cl], sub.cnt, sub.sp, sub.w2, sub.mid)
        want, w0, w2, e, boff = pages._classes_stream(region, src[cl], sub)
        assert got is not None and [a.tolist() for a in got[1:]] == [w2.tolist(), e.tolist(), boff.tolist()], top
        total = int((sub.cnt * w0 + sub.cnt + e * w2).sum())
        stream = np.unpackbits(got[0], bitorder="little")
        assert len(got[0]) == 8 * (-(-total // 64) + 1) and not stream[total:].any(), top
        assert stream[:total].tolist() == np.unpackbits(np.asarray(want, np.uint8), bitorder="little")[:total].tolist(), top


def test_classes_levels_pay_for_their_decode(monkeypatch):
    """Each level of a CLASSES shape past its first is weighed at ``CLASSES_LEVEL_BITS`` bits more a
    block than it takes (a level costs the decoders a class): on Zipf codes that 4 levels would
    code a little smaller, the shapes take fewer levels, the column a few bytes more, the values
    the same; weighed by bits alone (0) they take more."""
    monkeypatch.setattr(pages, "CLASSES_MIN_SAVING", 0)  # (CLASSES blocks wherever they are smaller)
    rng = np.random.default_rng(8)
    p = 1 / np.arange(1, 3001) ** 0.9
    x = rng.choice(3000, 20_000, p=p / p.sum()).astype(np.int64)
    got = {}
    for bits in (0, pages.CLASSES_LEVEL_BITS):
        monkeypatch.setattr(pages, "CLASSES_LEVEL_BITS", bits)
        region, off, nbytes, enc = pages.encode_stripes(x, np.array([len(x)]), 128)
        tags = region[: -(-len(x) // 128)].astype(np.int64)
        cl = pages.is_classes(tags)
        assert cl.mean() > 0.5 and pages.decode_blob(region, len(x), 128).tolist() == x.tolist(), bits
        got[bits] = (len(region), (1 + ((tags[cl] - pages.TAG_CLASSES) >> 2)).mean())
    (n0, lv0), (n1, lv1) = got[0], got[pages.CLASSES_LEVEL_BITS]
    assert lv1 < lv0 and n0 <= n1 < 1.02 * n0, got


def test_bad_classes_blocks_are_corruption(monkeypatch):
    """A CLASSES block whose levels and classes are not the bits its field says, whose first level has
    no bit set, or whose shape is out of range is a ``CorruptionError``; a flipped bit gives other
    values or an error, the same on both decoders and both stagings; its one-block blob reads with its
    tag in the index (``move_tags``)."""
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (one block: extended blocks pay)
    monkeypatch.setattr(pages, "CLASSES_MIN_SAVING", 0)  # (and CLASSES blocks)
    monkeypatch.setattr(pages, "CLASSES_LEVEL_BITS", 0)  # (of the fewest bits, its levels not weighed)
    rng = np.random.default_rng(4)
    p = 1 / np.arange(1, 301)
    x = rng.choice(300, 128, p=p / p.sum()).astype(np.int64)
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([128]), 128)
    assert pages.is_classes(region[:1]).all() and pages.decode_blob(region, 128, 128).tolist() == x.tolist()
    tags = region[:1].astype(np.int64)
    fe = pages.fields_end(region, np.array([1]), np.array([len(region)]), pages.fields_per_block(tags), "t")
    blk = pages.parse_fields(region, np.array([1]), fe, tags, np.array([128]), np.array([0]))
    assert blk.kind[0] == pages.KIND_CLASSES and blk.sp[0] == 1 + ((region[0] - pages.TAG_CLASSES) >> 2)
    assert int(blk.bits()[0]) == 128 + int(blk.mid[0]) and blk.slope[0] == 0
    got = pages.classes_residuals(region, np.array([8 * int(fe[0])]), blk)
    assert (got.astype(np.int64) + blk.base[0]).tolist() == x.tolist()
    # its fields: the base, the bits after the first level, the shape
    fields, _ = pages.varint_decode(region[1 : int(fe[0])])
    assert len(fields) == 3 and fields[1] == blk.mid[0] and fields[2] == blk.w2[0]
    for shape in (int(blk.w2[0]) | (31 << (4 * int(blk.sp[0]))), 1 << (4 * int(blk.sp[0]) + 5)):  # a tail of 31 bits; past it
        bad_f = pages.varint_bytes(np.array([fields[0], fields[1], shape], np.uint64))[0]
        bad = np.concatenate([region[:1], bad_f, region[int(fe[0]) :]])
        for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128):
            assert isinstance(got, CorruptionError) and "range" in str(got), got
    for change in (1, -1):  # its bits after the first level, one more or less
        bad_f = pages.varint_bytes(np.array([fields[0], int(fields[1]) + change, fields[2]], np.uint64))[0]
        bad = np.concatenate([region[:1], bad_f, region[int(fe[0]) :]])
        for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128):
            assert isinstance(got, CorruptionError), change
    bad = region.copy()
    bad[int(fe[0]) : int(fe[0]) + 16] = 0  # no bit on the first level: no value past class 0
    for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128):
        assert isinstance(got, CorruptionError), got
    # its tag in the index: the blob after it, the tag given (host/segment.py's index form 2)
    r2, off2, nb2, enc2 = pages.move_tags(region, off, nbytes, enc, np.array([128]), 128)
    t2 = codec.enc_tags(enc2)
    assert t2[0] == region[0] and (pages.tag_flags(t2) == (enc2 & codec.ENC_FLAGS)).all()
    a, b = both_decoders(monkeypatch, r2, off2, nb2, [128], 128, tags=t2)
    assert a.tolist() == b.tolist() == x.tolist()

    flipped_payload_bits_agree(monkeypatch, region, int(fe[0]), blk)


def test_bad_levels_blocks_are_corruption(monkeypatch):
    """A LEVELS block whose levels and tail are not the bits its field says, or whose first level
    has no bit set, is a ``CorruptionError``; and the same on both decoders."""
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (one block: extended blocks pay)
    monkeypatch.setattr(pages, "BARE_LEVELS", False)  # (a LEVELS block with its fields: BARE ones below)
    x = np.random.default_rng(3).choice(4, 128, p=[0.7, 0.2, 0.05, 0.05]).astype(np.int64)
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([128]), 128)
    assert region[0] >= pages.TAG_LEVELS and pages.decode_blob(region, 128, 128).tolist() == x.tolist()
    tags = region[:1].astype(np.int64)
    fe = pages.fields_end(region, np.array([1]), np.array([len(region)]), pages.fields_per_block(tags), "t")
    blk = pages.parse_fields(region, np.array([1]), fe, tags, np.array([128]), np.array([0]))
    assert blk.kind[0] == pages.KIND_LEVELS and blk.sp[0] == 1 + ((region[0] - pages.TAG_LEVELS) >> 2)
    assert int(blk.mid[0]) == int(blk.bits()[0]) - 128
    extra = int(fe[0]) - 1  # its field: the bits after the first level (one byte here)
    assert region[extra] == blk.mid[0] < 128
    for change in (1, -1):
        bad = region.copy()
        bad[extra] = int(bad[extra]) + change
        for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128):
            assert isinstance(got, CorruptionError), change
    bad = region.copy()
    bad[int(fe[0]) : int(fe[0]) + 16] = 0  # no bit on the first level: no value above the base
    for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [128], 128):
        assert isinstance(got, CorruptionError) and ("LEVELS" in str(got) or "bitmap" in str(got)), got
    # a flipped bit of a level: other values, or an error, the same on both decoders and both
    # stagings (C's and NumPy's: what a read stages; the chunk checksums catch it in a tier)
    flipped_payload_bits_agree(monkeypatch, region, int(fe[0]), blk)


def test_bare_levels_blocks(tmp_path, monkeypatch):
    """A blob of one LEVELS block based at 0 (a short stripe of an action type) is a BARE LEVELS block
    (tags 241..255 but CLASSES' 244, 248, 252): no fields, its bits after the first level walked from
    its levels. Such blobs take 1.5 bytes or more fewer each than without them, decode on both decoders (its tag
    in its index, or 255 in its blob), reads back from a tier by any window, and its entry says
    ``bare``. As the first of a blob's two blocks, or cut short, it is a ``CorruptionError`` on both
    decoders, and each flipped bit gives the same values or the same error on both."""
    rng = np.random.default_rng(5)
    tab = np.r_[0.5, 0.2, 0.1, 0.08, np.full(8, 0.12 / 8)]
    sc = rng.integers(20, 60, 200)
    for p in ([0.7, 0.2, 0.05, 0.05], [0.8, 0.15, 0.05], tab):
        x = rng.choice(len(p), int(sc.sum()), p=p).astype(np.int64)
        region, off, nb, enc = pages.encode_stripes(x, sc, 128)
        bare = pages.is_bare(region[off])
        assert bare.mean() > 0.5 and (enc[bare] & codec.ENC_PATCH).all(), np.unique(region[off])
        with monkeypatch.context() as m:
            m.setattr(pages, "BARE_LEVELS", False)
            old = pages.encode_stripes(x, sc, 128)[0]
        assert region.size <= old.size - 1.5 * bare.sum(), (region.size, old.size, bare.sum())
        a, b = both_decoders(monkeypatch, region, off, nb, sc, 128)
        assert a.tolist() == b.tolist() == x.tolist()
        r2, off2, nb2, enc2, *_ = pages.encode_column_parts(x, sc, 128, dictionary=False, constant=False, tables=False)
        t2 = codec.enc_tags(enc2)
        assert pages.bare_blobs(r2, off2, nb2, enc2) and ((t2 >= 0) | (r2[off2] == 255)).all()
        assert (pages.tag_flags(t2[t2 >= 0]) == (enc2[t2 >= 0] & codec.ENC_FLAGS)).all()
        a, b = both_decoders(monkeypatch, r2, off2, nb2, sc, 128, tags=t2)
        assert a.tolist() == b.tolist() == x.tolist()
    assert (r2[off2] == 255).any()  # (a tab: 4 levels and a tail of 3 bits, its tag kept in its blob)
    # a BARE LEVELS tag on the first of two blocks; a blob cut short: errors on both decoders
    x = rng.choice(4, 200, p=[0.7, 0.2, 0.05, 0.05]).astype(np.int64)
    with monkeypatch.context() as m:
        m.setattr(pages, "EXT_MIN_BITS", 0)
        region, off, nb, enc = pages.encode_stripes(x, np.array([200]), 128)
    assert region[0] >= pages.TAG_LEVELS and not pages.is_bare(region[:2]).any()
    bad = region.copy()
    bad[0] = pages.TAG_CLASSES + 5  # (2 levels and a tail of a bit)
    for got in both_decoders(monkeypatch, bad, [0], [len(bad)], [200], 128):
        assert isinstance(got, CorruptionError), got
    x = x[:36]
    with monkeypatch.context() as m:
        m.setattr(pages, "EXT_MIN_BITS", 0)
        region, off, nb, enc = pages.encode_stripes(x, np.array([36]), 128)
    assert pages.is_bare(region[:1]).all()
    for cut in range(1, len(region)):
        for got in both_decoders(monkeypatch, region[:cut], [0], [cut], [36], 128):
            assert isinstance(got, CorruptionError), cut
    for bit in range(8, 8 * len(region)):
        bad = region.copy()
        bad[bit >> 3] ^= 1 << (bit & 7)
        a, b = both_decoders(monkeypatch, bad, [0], [len(bad)], [36], 128)
        assert type(a) is type(b) and (isinstance(a, CorruptionError) or a.tolist() == b.tolist()), bit
    # through a tier: short users whose action is a tab (the other two columns are based above 0)
    sc = rng.integers(30, 120, 150)
    n, users = int(sc.sum()), np.repeat(np.arange(len(sc)), sc)
    cols = levels_columns(rng, n)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, 128, n, extended=())
    r = Tier.open(tmp_path / "t")._reader
    (e,) = [e for _, e in r._files]
    assert e.get("bare") == 1 and log._check_entry(dict(e), "x") == e
    with pytest.raises(CorruptionError, match="bad data file entry"):
        log._check_entry({**e, "bare": 2}, "x")
    tags = codec.enc_tags(r.blobs("action")[2])
    assert pages.is_bare(tags).any(), np.unique(tags)  # (and tag 255: in its blob)


def test_every_chunk_and_dictionary_codes_weigh_levels_and_radix(monkeypatch):
    """The encoder weighs every kind in every chunk of blocks it chooses (``codec._ENC_CHUNK`` at a
    time, with or without DELTA): LEVELS and RADIX blocks in a column's later chunks as in its first
    (a review found the cost columns shifted by one without DELTA, so that later chunks and
    dictionary codes never took either), and LEVELS for a dictionary's codes in frequency order."""
    rng = np.random.default_rng(5)
    x = rng.choice(4, 3 * 8192 * 8 // 2, p=[0.7, 0.2, 0.05, 0.05]).astype(np.int64)
    fit = codec.fit_blocks(x, np.array([len(x)]), 32)
    for delta in (True, False):
        c = pages._Candidates(fit, 0, 64, delta)
        assert c.cost.shape == (64, pages.KIND_CLASSES + 1)
        assert (c.kinds((pages.KIND_PLAIN, pages.KIND_PATCH, pages.KIND_LEVELS)) == pages.KIND_LEVELS).mean() > 0.5
    monkeypatch.setattr(codec, "_ENC_CHUNK", 512)  # (chunks of 512 blocks: the same choice per chunk)
    for kind, col in ((pages.TAG_LEVELS, x), (pages.TAG_RADIX, rng.integers(0, 5, len(x)))):
        region, off, nbytes, enc = pages.encode_stripes(col.astype(np.int64), np.array([len(col)]), 32)
        tags = region[: -(-len(col) // 32)] & 0x7F
        last = tags[-512:]
        assert ((last >= kind) & (last < kind + (16 if kind == pages.TAG_LEVELS else 1))).mean() > 0.5, np.unique(last)
        assert pages.decode_blob(region, len(col), 32).tolist() == col.tolist()
    # a dictionary's codes: four spread values at 70/20/5/5%, codes in frequency order as LEVELS
    vals = np.array([99_999, 7, 10**12, -3])[x[:20_000]]
    out, off, nbytes, enc, head, _ = pages.encode_column_parts(vals, np.array([len(vals)]), 128)
    assert enc[0] & codec.ENC_DICT
    tags = out[head : head + -(-len(vals) // 128)] & 0x7F
    assert (tags >= pages.TAG_LEVELS).mean() > 0.5, np.unique(tags)
    d = pages.decode_dictionary(out[:head], 128)
    got = pages.decode_blobs(out, off, nbytes, np.array([len(vals)]), 128, d, np.array([0]), np.array([len(d)]))
    assert got.tolist() == vals.tolist()


def dense_bitmaps(monkeypatch):
    """The encoder as before sparse bitmaps: every bitmap one bit a value."""
    monkeypatch.setattr(pages, "_bitmap_cost", lambda cnt, ones: np.broadcast_to(
        np.asarray(cnt).reshape((len(cnt),) + (1,) * (np.ndim(ones) - 1)), np.shape(ones)))
    monkeypatch.setattr(pages, "sparse_pays", lambda cnt, ones: np.zeros(np.shape(cnt), bool))
    monkeypatch.setattr(pages, "RUN_GAPS", False)


@pytest.mark.parametrize("bs", [32, 128])
def test_sparse_bitmaps_round_trip_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A bitmap with few set bits (a PATCH block's few exceptions, a RUN block's few runs) is stored
    as their positions where that is smaller, in every kind with a bitmap; such blocks decode to the
    values whole, by any block window and by any value range of a block, in memory and by ranges,
    and take fewer bytes than with one bit a value; with 128-value blocks a flipped byte of a
    compacted file is caught."""
    rng, n, sc, users, cols = four_stripes(sparse_columns, 70 + bs)
    tags = set()
    for name, x in cols.items():
        region, off, nbytes, enc = pages.encode_stripes(x.astype(np.int64), sc, bs)
        assert decode_all(region, off, nbytes, sc, bs).tolist() == x.tolist()
        assert enc[0] & codec.ENC_SPARSE, name
        tags |= set((region[off[0] : off[0] + (sc[0] + bs - 1) // bs] & 0x7F).tolist())
        with monkeypatch.context() as m:
            dense_bitmaps(m)
            dense, doff, dn, denc = pages.encode_stripes(x.astype(np.int64), sc, bs)
        assert not (denc & codec.ENC_SPARSE).any() and decode_all(dense, doff, dn, sc, bs).tolist() == x.tolist()
        assert region.size < (0.9 if bs == 128 else 0.97) * dense.size, (name, region.size, dense.size)
    assert {pages.TAG_RUN_SPARSE, pages.TAG_DELTA_PATCH_SPARSE} <= tags
    assert pages.TAG_PATCH_SPARSE in tags or tags & set(range(pages.TAG_FLAG, pages.TAG_FLAG_LAST + 1))  # (FLAG: compact PATCH)
    # a pack's timestamps with few jumps back: DELTA SIGNED with a sparse bitmap
    r = np.random.default_rng(bs)
    x = np.cumsum(r.integers(0, 8, n) - np.where(r.random(n) < 0.02, 10**6, 0)) + 10**9
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), bs)
    assert decode_all(region, off, nbytes, np.array([n]), bs).tolist() == x.tolist()
    assert pages.TAG_DELTA_SIGNED_SPARSE in (region[: -(-n // bs)] & 0x7F), np.unique(region[: -(-n // bs)] & 0x7F)
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n)


def constant_columns(rng, users):
    """A label that is always 1 (implicit feedback), a feature that is one value per user (its
    country) but for one event of user 1, and real timestamps."""
    n = len(users)
    country = np.array([7, -3, 10**15, 7, 40, 41, 42, 43])[users]
    country[np.flatnonzero(users == 1)[5]] = 8
    return {"ts": np.cumsum(rng.integers(0, 1000, n)) + 1_700_000_000, "item_id": country,
            "action": np.ones(n, np.int32)}


@pytest.mark.parametrize("bs", [32, 128])
def test_constant_stripes_take_no_bytes_and_read_by_windows(tmp_path, monkeypatch, bs):
    """A stripe whose values are all one value has no blob (``ENC_CONST``: the value in its index
    entry); the other stripes of the column are stored as before. Such a tier reads back whole, by
    any block window and by any value range of a block (plain blocks of width 0), in memory and by
    ranges; a flipped byte of a compacted file is caught; its entries say ``const``."""
    rng = np.random.default_rng(bs)
    n = 9000
    users = np.repeat(np.arange(4), [n - 300, 100, 150, 50])
    cols = constant_columns(rng, users)
    sc = np.array([n - 300, 100, 150, 50])
    for c, want in (("action", [1, 1, 1, 1]), ("item_id", [1, 0, 1, 1])):
        x = cols[c].astype(np.int64)
        # (without stripe tables, so that the region is the blobs alone: tables and constants, below)
        region, off, nbytes, enc = pages.encode_column(x, sc, bs, tables=False)
        assert codec.const_stripes(enc).astype(int).tolist() == want, c
        assert codec.const_values(enc[codec.const_stripes(enc)]).tolist() == [x[o] for o, k in zip(np.cumsum(sc) - sc, want) if k]
        assert nbytes[codec.const_stripes(enc)].tolist() == [0] * sum(want) and region.size == nbytes.sum()
        assert off.tolist() == sorted(off.tolist()) and (off <= region.size).all()
        assert region.size < (1 if c == "action" else 0.25) * pages.encode_column(x, sc, bs, constant=False, tables=False)[0].size + 1
    # constant stripes that would cost the others their dictionary stay blobs (a review's case)
    r_ = np.random.default_rng(0)
    sc2 = np.array([150] * 13 + [180] * 7)
    x = np.concatenate([np.ones(13 * 150), r_.choice([1, 1000], 7 * 180)]).astype(np.int64)
    assert len(pages.encode_column(x, sc2, bs)[0]) <= len(pages.encode_column(x, sc2, bs, constant=False)[0])
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, bs, n, extended=())
    r = Tier.open(tmp_path / "t")._reader
    assert codec.enc_counts(r.blobs("action")[2])["CONST"] == 4 and r.blobs("action")[1].sum() == 0
    assert codec.enc_counts(r.blobs("item_id")[2])["CONST"] == 3
    assert all(e.get("const") == 1 for _, e in r._files)


def test_constant_stripes_in_packs_and_without_the_c_decoder(tmp_path, monkeypatch):
    """Short histories packed into shared blobs: a pack whose values are all one is constant; a
    column constant per user is not constant per pack: its packs' rows are each a constant of their
    own (``pages.pack_row_constants``, tests/test_row_constants.py). Every history
    reads back (whole stripes decoded with and without the C decoder; planned batches of the
    reference backend), and constant stripes make a tier of a constant column smaller than the
    same tier without them."""
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan
    import gpumat.ops

    rng = np.random.default_rng(3)
    users = np.sort(rng.integers(0, 400, 6000))
    u = np.unique(users)
    tab = pa.table({"user_id": users, "ts": np.arange(len(users)) * 3 + 10**9, "item_id": users * 11 + 5,
                    "action": np.ones(len(users), np.int32)})
    sizes = {}
    for const in (True, False):
        with monkeypatch.context() as m:
            if not const:
                m.setattr(pages, "_constant_stripes", lambda *a: (None, 0))
                m.setattr(pages, "pack_row_constants", lambda *a: None)
            t = Tier.create(tmp_path / f"t{const}", SCHEMA, block_size=128)
            t.append(tab)
            sizes[const] = t.stats()["stored_bytes"]
    r = Tier.open(t.uri.replace("tFalse", "tTrue"))._reader
    d = r.directory()
    assert (d.bcount != d.count).any()  # packs
    assert codec.const_stripes(r.blobs("action")[2]).all()
    # (an id growing by 11 a user: a step of a byte a row in the index, less than its packs' RUN blocks)
    packed = d.bcount != d.count
    enc = r.blobs("item_id")[2]
    assert codec.const_stripes(enc[packed]).all() and len(np.unique(enc[packed])) == len(np.unique(d.user_id[packed]))
    assert all(e.get("rowconst") == 1 and e["index"] in (2, 3) for _, e in r._files)  # (whichever index is smaller)
    assert sizes[True] < sizes[False], sizes
    h = Tier.open(tmp_path / "tTrue")
    first = np.cumsum(d.count) - d.count
    for c in SCHEMA:
        want = tab.column(c).to_numpy().astype(np.int64)
        assert h._reader.decode_stripes(c, np.arange(len(d))).tolist() == want.tolist()
        # any order, repeats: constant stripes, packs' stripes and the others each to their place
        si = np.concatenate([rng.permutation(len(d)), rng.integers(0, len(d), 50)])
        assert h._reader.decode_stripes(c, si).tolist() == want[ranges(first[si], d.count[si])].tolist()
        with monkeypatch.context() as m:
            m.setattr(native, "available", lambda: (False, None))
            assert Tier.open(h.uri)._reader.decode_stripes(c, np.arange(len(d))).tolist() == want.tolist()
    B = 32
    ex_u = rng.choice(u, B)
    n = (rng.random(B) * (h.length_at(ex_u, np.ones(B, np.int64)) + 1)).astype(np.int64)
    table = pa.table({"user_id": ex_u, "version": np.ones(B, np.int64), "length": n,
                      "request_ts": np.full(B, 1 << 40),
                      **{f"tail_{c}": pa.array([[] for _ in range(B)], pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                         for c, dt in SCHEMA.items()}})
    tenant = Tenant("t", ["action", "item_id", "ts"], 50)
    values, _ = gpumat.ops.decode_gather(plan(h, parse_examples(table, SCHEMA), tenant), "reference")
    for c in tenant.columns:
        want = []
        for e in range(B):
            hist = tab.column(c).to_numpy()[users == ex_u[e]][: int(n[e])].tolist()
            want += hist[max(0, len(hist) - tenant.max_len):]
        assert values[c].tolist() == want, c


def test_a_bad_constant_stripe_in_an_index_is_corruption(tmp_path):
    """An index entry that says a constant stripe but has bytes, or other flags, or a dictionary's
    flag beside it (then its bits 8.. are the dictionary's place), is a ``CorruptionError`` when
    the segment is opened; a data file entry whose ``const`` is not 1 is one too."""
    from gpumat.host import log
    from gpumat.host.store import LocalStore

    sc = np.array([300, 200])
    x = np.concatenate([np.full(300, 9), np.arange(200) * 7])
    good = pages.encode_column(x, sc, 128)
    assert codec.const_stripes(good[3]).tolist() == [True, False] and good[2][0] == 0
    store = LocalStore(str(tmp_path))
    e0 = int(good[3][0])
    bad = [  # (nbytes, enc)
        (np.array([1, good[2][1] - 1]), good[3]),                          # bytes
        (good[2], np.array([e0 | codec.ENC_LFOR, good[3][1]])),            # another flag
        (good[2], np.array([e0 | codec.ENC_DICT, good[3][1]])),            # a dictionary's place
    ]
    for i, (nb, enc) in enumerate([(good[2], good[3])] + bad):
        # (an index of form 2, which holds anything: form 3 refuses to write a constant with flags)
        bufs, size, crc, _ = segment.encode_segment3(["v"], np.array([0, 1]), np.array([0, 0]), sc, {"v": (good[0], good[1], nb, enc)},
                                                  form=2)
        with open(tmp_path / f"s{i}", "wb") as f:
            for b in bufs:
                f.write(memoryview(b).cast("B"))
        if i == 0:
            s = segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128)
            assert codec.const_values(s.enc["v"][:1]).tolist() == [9]
            continue
        with pytest.raises(CorruptionError, match="constant stripe|out of bounds|dictionary|unknown encoding"):
            segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128)
    e = {"path": log.DATA_DIR + "/x", "offset": 0, "size": 8, "index_crc": 0, "events": 1, "level": 0, "format": 3, "const": 1}
    assert log._check_entry(dict(e), "x") == e
    for b in ({**e, "const": 2}, {k: v for k, v in e.items() if k != "format"}):
        with pytest.raises(CorruptionError, match="bad data file entry"):
            log._check_entry(b, "x")


def test_sparse_positions_that_do_not_ascend_are_corruption(monkeypatch):
    """A sparse bitmap's positions must ascend inside their block (a RUN block's after position 0,
    which always starts a run): a repeated, descending or out-of-block position, or a RUN block's
    0, is a ``CorruptionError`` on both decoders."""
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (one block of a flag: extended blocks pay)
    flag = np.zeros(100, np.int64)
    flag[[5, 9]] = 1
    patch = flag + 3  # (based at 3, not where the page's line is: a PATCH block, not a FLAG one)
    runs = np.repeat([7, 300, 301], [40, 20, 40])  # run starts 40, 60
    for x, tag, good in ((patch, pages.TAG_PATCH_SPARSE, (5, 9)), (flag, pages.TAG_FLAG + 1, (5, 9)),
                         (runs, pages.TAG_RUN_SPARSE, (40, 60))):
        region, off, nbytes, enc = pages.encode_stripes(x, np.array([100]), 128)
        assert region[0] & 0x7F == tag and enc[0] & codec.ENC_SPARSE
        assert pages.decode_blob(region, 100, 128).tolist() == x.tolist()
        tags = region[:1].astype(np.int64)  # one page, fields first: [tag][fields][values, positions, ...]
        fe = pages.fields_end(region, np.array([1]), np.array([len(region)]), pages.fields_per_block(tags), "t")
        blk = pages.parse_fields(region, np.array([1]), fe, tags, np.array([100]), np.array([0]))
        at = 8 * int(fe[0]) + int(blk.nv[0] * blk.w[0])  # the first position's bit
        v = int.from_bytes(region.tobytes(), "little")
        assert ((v >> at) & 127, (v >> (at + 7)) & 127) == good
        for bad in ((9, 5), (5, 5), (5, 100), (0, 60)):
            if tag != pages.TAG_RUN_SPARSE and bad == (0, 60):  # (a PATCH block's 0 is a position like any)
                continue
            w = (v & ~((1 << 14) - 1 << at)) | (bad[0] | bad[1] << 7) << at
            blob = np.frombuffer(w.to_bytes(len(region), "little"), np.uint8)
            with pytest.raises(CorruptionError, match="ascend|bitmap"):
                pages.decode_blob(blob, 100, 128)


def test_radix_tables_and_fields():
    """Each alphabet's code: the fewest bits a digit (part of the format: a block stores only R), no
    gain no RADIX; a RADIX block's R of no code (a power of two, one digit a code) is a
    ``CorruptionError`` on both decoders."""
    assert (pages.RADIX_G[[3, 5, 6, 10]] == [5, 3, 5, 3]).all() and (pages.RADIX_W[[3, 5, 6, 10]] == [8, 7, 13, 10]).all()
    assert (pages.RADIX_G[[0, 1, 2, 4, 8, 16, 256]] == 0).all()  # powers of two (and one digit) gain nothing
    assert (pages.RADIX_W[3:] <= 16).all() and (pages.RADIX_W[3:] > 0).sum() > 100
    n = 3000  # (extended blocks only in a column of at least 1 KiB of plain payload)
    x = np.random.default_rng(1).integers(1, 6, n)
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), 128)
    assert enc[0] & codec.ENC_RADIX and pages.decode_blob(region, n, 128).tolist() == x.tolist()
    for R, ok in ((5, True), (3, True), (4, False), (2, False), (300, False)):  # one block's fields: base, R
        fbuf = pages.varint_bytes(np.array([pages.zigzag(np.array([7]))[0], R], np.uint64))[0]
        args = (fbuf, np.array([0]), np.array([len(fbuf)]), np.array([pages.TAG_RADIX]), np.array([100]), np.array([0]))
        if ok:
            b = pages.parse_fields(*args)
            assert (b.w2[0], b.e[0], b.w[0], b.nv[0]) == (R, pages.RADIX_G[R], pages.RADIX_W[R], -(-100 // pages.RADIX_G[R]))
        else:
            with pytest.raises(CorruptionError, match="out of range"):
                pages.parse_fields(*args)


_CHILD = "import hashlib\nimport numpy as np\nfrom gpumat.host import pages\n"  # (with_and_without_avx512's codes)
# (both(*a, **k) in a child: pages.decode_blobs with the C decoder and with NumPy's, the same values or both a
# CorruptionError ('bad'), the result added to the hash h)
_CHILD_BOTH = (
    "from gpumat.core.errors import CorruptionError\n"
    "from gpumat.host import native\n"
    "c_decode = native._decode\n"
    "def both(*a, **k):\n"
    "    got = []\n"
    "    for use_c in (True, False):\n"
    "        native._decode = c_decode if use_c else None\n"
    "        try:\n"
    "            got.append(pages.decode_blobs(*a, **k).tolist())\n"
    "        except CorruptionError:\n"
    "            got.append('bad')\n"
    "    native._decode = c_decode\n"
    "    assert got[0] == got[1], (a[3], list(k))\n"
    "    h.update(repr(got[0]).encode())\n"
    "    return got[0]\n")


def test_radix_decode_with_and_without_avx512(decoder):
    """RADIX blocks of every alphabet that has a code (R 3..255: each a blob of one block, built
    here), of lengths about every multiple of 8 and of g, flat and on a slope, with codes up to
    2^w - 1 (those past R^g give other digits), decode the same with the C decoder's AVX-512 digits
    (``gm_radix_x512``: each digit a quotient by R^j), its scalar chain (``GPUMAT_NO_AVX512=1``)
    and NumPy, in child processes (the choice is made once per process)."""
    code = _CHILD + (
        "rng = np.random.default_rng(9)\n"
        "h, blocks = hashlib.sha256(), 0\n"
        "for R in range(3, 256):\n"
        "    g, w = int(pages.RADIX_G[R]), int(pages.RADIX_W[R])\n"
        "    if not g:\n"
        "        continue\n"
        "    for n in sorted({1, 7, 8, 9, g - 1, g, g + 1, 8 * g - 1, 8 * g + 1, 63, 100, 127, 128} - {0}):\n"
        "        for slope in (0, int(rng.integers(-9, 10))):\n"
        "            codes = rng.integers(0, 1 << w, -(-n // g))\n"
        "            codes[: len(codes) // 2] %= R ** g  # (half of them valid codes)\n"
        "            base = int(rng.integers(-(10**12), 10**12))\n"
        "            f = [int(pages.zigzag(np.array([base]))[0])] + ([int(pages.zigzag(np.array([slope]))[0])] if slope else []) + [R]\n"
        "            bits = ((codes[:, None] >> np.arange(w)) & 1).astype(np.uint8).reshape(-1)\n"
        "            blob = np.concatenate([[pages.TAG_RADIX | (0x80 if slope else 0)], pages.varint_bytes(np.array(f, np.uint64))[0],\n"
        "                                   np.packbits(bits, bitorder='little')]).astype(np.uint8)\n"
        "            c = pages.decode_blobs(blob, [0], [len(blob)], [n], 128)\n"
        "            p = pages.decode_blob(blob, n, 128)\n"
        "            d = (codes[np.arange(n) // g] // R ** (np.arange(n) % g)) % R\n"
        "            assert c.tolist() == p.tolist() == (base + slope * np.arange(n) + d).tolist(), (R, n, slope)\n"
        "            h.update(c.tobytes())\n"
        "            blocks += 1\n"
        "print(blocks, h.hexdigest())\n")
    assert len(with_and_without_avx512(decoder, code, 2000)[0][1]) == 64


def test_plain_values_with_and_without_avx512(decoder):
    """FOR and LFOR blocks of every width 1..32 (the AVX-512 path takes 1..25 straight from the blob's
    bytes, 16 values a vector: ``gm_plain_x512``), of lengths 1 to 300 around the multiples of 16 and
    past a block, flat and on a slope, from bases near both ends of int64; PATCH and RUN blocks (their low bits and runs the
    same path; RADIX blocks' codes: ``test_radix_decode_with_and_without_avx512``); each blob alone
    in its buffer, so that the last vector's load meets the buffer's end: decoded alike with
    AVX-512, without (``GPUMAT_NO_AVX512=1``) and by NumPy, in child processes (the choice is made
    once per process)."""
    code = _CHILD + (
        "rng = np.random.default_rng(33)\n"
        "h, blobs = hashlib.sha256(), 0\n"
        "def check(x, extended):\n"
        "    global blobs\n"
        "    r, off, nb, _ = pages.encode_stripes(x, np.array([len(x)]), 128, extended=extended)\n"
        "    blob = np.ascontiguousarray(r[off[0]: off[0] + nb[0]])\n"
        "    c = pages.decode_blobs(blob, [0], [len(blob)], [len(x)], 128)\n"
        "    assert c.tolist() == pages.decode_blob(blob, len(x), 128).tolist() == x.tolist(), (len(x), extended)\n"
        "    h.update(c.tobytes())\n"
        "    blobs += 1\n"
        "for w in range(1, 33):\n"
        "    for n in (1, 7, 15, 16, 17, 31, 33, 100, 127, 128, 129, 300):\n"
        "        for slope in (0, int(rng.integers(-(1 << 20), 1 << 20))):\n"
        "            base = int(rng.choice([rng.integers(-(1 << 62), 1 << 62), -(1 << 63) + 5, (1 << 63) - (1 << 34)]))\n"
        "            r = rng.integers(0, 1 << w, n)\n"
        "            r[rng.integers(0, n)] = (1 << w) - 1  # (a value of the full width)\n"
        "            x = np.int64(base) + np.int64(slope) * np.arange(n, dtype=np.int64) + r.astype(np.int64)\n"
        "            check(x, False)\n"
        "    x = rng.integers(0, 1 << min(w, 20), 1000).astype(np.int64)\n"
        "    x[rng.random(1000) < 0.03] += 1 << 40  # (PATCH: rare wide values)\n"
        "    check(x, True)\n"
        "    check(np.repeat(rng.integers(0, 1 << w, 200), rng.integers(1, 9, 200)).astype(np.int64), True)  # (RUN)\n"
        "print(blobs, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 800)


def with_and_without_avx512(decoder: str, code: str, least: int) -> list:
    """The words ``python -c code`` prints, run with the C decoder's AVX-512 paths and with
    ``GPUMAT_NO_AVX512=1`` (child processes: the choice is made once per process): the same both
    ways, the first a count over ``least``. About the C decoder's paths: runs once, with it
    (``decoder`` ``"native"``)."""
    import subprocess
    import sys

    if decoder != "native":
        pytest.skip("about the C decoder's paths: runs once, with the C codec")

    outs = []
    for no_avx512 in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "GPUMAT_NO_AVX512": no_avx512},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (no_avx512, out.stderr[-2000:])
        outs.append(out.stdout.split())
    assert outs[0] == outs[1] and int(outs[0][0]) > least, outs
    return outs


def test_radix_blocks_with_a_slope_predict_the_next_base():
    """RADIX digits over a sloped line (LFOR): each block's base is predicted from where the block
    before it ended, at its values (not its codes), so a page of them parses on both decoders."""
    rng = np.random.default_rng(4)
    n = 128 * 40 + 37  # (3-bit residuals: over the 8192 bits of payload extended blocks need)
    d = rng.integers(0, 5, n)
    d[::128] = 0  # (each block's first digit 0: the fitted line's slope is 7)
    x = 1_000_000 + 7 * np.arange(n) + d
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), 128)
    tags = region[: -(-n // 128)]
    assert (pages.tag_kind(tags) == pages.KIND_RADIX).mean() > 0.9 and (tags & pages.TAG_LFOR).all()
    assert pages.decode_blob(region, n, 128).tolist() == x.tolist()


def test_delta_only_where_it_saves_enough():
    """DELTA costs the kernels a prefix sum per tile: a column whose DELTA blocks would save less than
    DELTA_MIN_SAVING of its bytes keeps its other blocks (timestamps whose steps are as wide as
    their spread around a line: the bench tier's)."""
    rng = np.random.default_rng(5)
    n = 20000
    steady = np.arange(n) * 1000 + rng.integers(0, 256, n)  # jitter around a steady rate: 8-bit residuals, 9-bit steps
    region, _, _, enc = pages.encode_stripes(steady, np.array([n]), 128)
    assert not (enc & codec.ENC_DELTA).any()
    bursty = np.cumsum(rng.integers(0, 8, n) + np.where(rng.random(n) < 0.01, 10**6, 0))
    region, _, _, enc = pages.encode_stripes(bursty, np.array([n]), 128)
    assert (enc & codec.ENC_DELTA).all()
    without, _, _, _ = pages.encode_stripes(bursty, np.array([n]), 128, extended=False)
    assert region.size < 0.5 * without.size


def test_delta_fields_and_tags_out_of_range_are_corruption():
    """A DELTA block's width past 64, a DELTA PATCH block's exceptions past their width, or a tag no
    release writes (a FLAG or LEVELS tag with the slope's bit: every 7-bit tag is an encoding since
    LEVELS) is a ``CorruptionError`` on both decoders."""
    n = 2000
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.integers(0, 6, n) + np.where(rng.random(n) < 0.05, 10**6, 0))
    region, off, nbytes, enc = pages.encode_stripes(x, np.array([n]), 128)
    assert (enc & codec.ENC_DELTA).all()
    assert pages.decode_blob(region, n, 128).tolist() == x.tolist()
    bad = region.copy()
    for t in (pages.TAG_FLAG, pages.TAG_FLAG_W2, pages.TAG_FLAG_LAST):  # (LEVELS tags with the bit: CLASSES, BARE LEVELS)
        bad[0] = t | pages.TAG_LFOR
        with pytest.raises(CorruptionError, match="not an encoding|tag"):
            pages.decode_blob(bad, n, 128)
    caught = 0
    for at in range(16, 120):  # the one-page blob's fields (fields first), each set to a big value
        bad = region.copy()
        bad[at] = 0x7F
        try:
            got = pages.decode_blob(bad, n, 128)
        except CorruptionError:
            caught += 1
            continue
        assert len(got) == n
    assert caught > 10


def test_a_dictionary_with_delta_blocks_flags_its_stripes(tmp_path):
    """Sorted distinct ids take DELTA blocks in their segment dictionary; the column's stripes then
    carry ``ENC_DELTA`` (so that releases before DELTA refuse the segment at open, not mid-read)
    and the segment opens and decodes."""
    from gpumat.host.store import LocalStore

    rng = np.random.default_rng(6)
    ids = rng.choice(10**7, 20000, replace=False)
    sc = np.array([100_000, 60_000])
    x = rng.choice(ids, int(sc.sum()))
    region, off, nbytes, enc, head, _ = pages.encode_column_parts(x, sc, 128)
    assert (enc & codec.ENC_DICT).all() and (enc & codec.ENC_DELTA).all()
    n, h = pages.dictionary_head(region[:head], pages.DICT_FORM)
    assert (pages.tag_kind(region[h:][: -(-n // 128)]) & pages.AUX_DELTA).any()
    assert pages.decode_dictionary(region[:head], 128).tolist() == np.unique(x).tolist()
    store = LocalStore(str(tmp_path))
    bufs, size, crc, _ = segment.encode_segment3(["item_id"], np.array([0, 1]), np.array([0, 0]), sc,
                                              {"item_id": (region, off, nbytes, enc)})
    with open(tmp_path / "s", "wb") as f:
        for b in bufs:
            f.write(memoryview(b).cast("B"))
    s = segment.open_segment(store, "s", 0, size, crc, ["item_id"], 128)
    d, _ = s.dictionary(int(s.enc["item_id"][0]) >> 8, 128, head)
    assert d.tolist() == np.unique(x).tolist()


def test_extended_blocks_only_in_tiers_of_small_blocks(tmp_path):
    """PATCH / RUN / DELTA blocks cover one 128-lane tile (the kernels' aux path and scan): a blob
    that has one in a tier of larger blocks, or a segment index that says so, is a
    ``CorruptionError`` on both decoders (the encoder never writes one)."""
    from gpumat.host.store import LocalStore

    rng = np.random.default_rng(4)
    sc = np.full(60, 100)
    x = delta_columns(rng, int(sc.sum()))["ts"]
    region, off, nbytes, enc = pages.encode_stripes(x, sc, 128)
    s = int(np.flatnonzero(enc & codec.ENC_DELTA)[0])
    blob = region[off[s] : off[s] + nbytes[s]]  # one block of 100 values: the same bytes at any block size >= 100
    assert pages.decode_blob(blob, 100, 128).tolist() == x[100 * s : 100 * s + 100].tolist()
    with pytest.raises(CorruptionError, match="over 128"):
        pages.decode_blob(blob, 100, 256)
    store = LocalStore(str(tmp_path))
    bufs, size, crc, _ = segment.encode_segment3(["ts"], np.arange(60), np.zeros(60, np.int64), sc,
                                              {"ts": (region, off, nbytes, enc)})
    with open(tmp_path / "s", "wb") as f:
        for b in bufs:
            f.write(memoryview(b).cast("B"))
    assert segment.open_segment(store, "s", 0, size, crc, ["ts"], 128).enc["ts"].tolist() == enc.tolist()
    with pytest.raises(CorruptionError, match="unknown encoding"):
        segment.open_segment(store, "s", 0, size, crc, ["ts"], 256)


def test_patch_and_run_fields_out_of_range_are_corruption():
    n = 2000  # one page (16 blocks), more than EXT_MIN_BITS of plain payload
    x = np.where(np.random.default_rng(0).random(n) < 0.9, 0, 1000).astype(np.int64)
    region, off, nbytes, _ = pages.encode_stripes(x, np.array([n]), 128)
    assert (pages.tag_kind(region[:16]) == pages.KIND_PATCH).all()
    assert pages.decode_blob(region, n, 128).tolist() == x.tolist()
    for at in range(16, 80):  # every field byte of the one-page blob (fields first), set to a big value
        bad = region.copy()
        bad[at] = 0x7F
        try:
            got = pages.decode_blob(bad, n, 128)
        except CorruptionError:
            continue
        assert len(got) == n  # a changed base or slope still decodes, to other values


def test_realign_and_chunk_hash_c_equals_numpy(monkeypatch):
    rng = np.random.default_rng(5)
    buf = rng.integers(0, 256, 5003).astype(np.uint8)
    K = 300
    nbits = rng.integers(0, 2000, K)
    src = rng.integers(0, 8 * buf.size - nbits)
    src[:3] = 8 * buf.size - nbits[:3]  # ranges that end at the buffer's very end
    nw = (nbits + 63) >> 6
    dst = np.cumsum(nw) - nw
    out = np.zeros(int(nw.sum()), np.uint64)
    pages.realign(buf, src, nbits, out, dst)
    bits = np.unpackbits(buf, bitorder="little")
    for k in range(K):
        want = np.zeros(64 * nw[k], np.uint8)
        want[: nbits[k]] = bits[src[k] : src[k] + nbits[k]]
        got = np.unpackbits(out[dst[k] : dst[k] + nw[k]].view(np.uint8), bitorder="little")
        assert (got == want).all(), k
    with pytest.raises(CorruptionError, match="outside"):
        pages.realign(buf, np.array([8 * buf.size - 5]), np.array([6]), np.zeros(1, np.uint64), np.array([0]))
    for n in (0, 1, 63, 64, 65, 2047, 2048, 2049, 2111, 4096 + 70, 5003):  # (AVX-512: whole groups of 8 words, then words)
        h = segment.chunk_hash(buf[:n], 2048, 7)
        ids = np.arange(7, 7 + len(h)) * 3 + (n % 2) * (1 << 40)  # chunks of several runs, in one call (far ones too)
        hi = segment.chunk_hash(buf[:n], 2048, ids)
        monkeypatch.setattr(native, "_decode", None)
        assert h.tolist() == segment.chunk_hash(buf[:n], 2048, 7).tolist()
        assert hi.tolist() == segment.chunk_hash(buf[:n], 2048, ids).tolist()
        monkeypatch.undo()
        assert len(h) == -(-n // 2048) and (n < 2048 or h[0] != hi[0] or ids[0] == 7)
        if len(h) > 1:  # some chunks only, at their places (the last one short): as if hashed back to back
            pick = np.sort(rng.choice(len(h), int(rng.integers(1, len(h) + 1)), replace=False))
            at = 2048 * pick
            ha = segment.chunk_hash(buf[:n], 2048, ids[pick], at)
            assert ha.tolist() == hi[pick].tolist()
            monkeypatch.setattr(native, "_decode", None)
            assert segment.chunk_hash(buf[:n], 2048, ids[pick], at).tolist() == ha.tolist()
            monkeypatch.undo()


def test_chunk_hash_with_and_without_avx512(decoder):
    """The C chunk checksums with AVX-512 (``gm_chunk_x512``: 8 words a vector) and without
    (``GPUMAT_NO_AVX512=1``, its scalar loop) agree with NumPy's, on buffers whose chunks end inside a
    group of 8 words, and at chunk positions of many runs, in child processes (the choice is made
    once per process)."""
    code = (
        "import numpy as np\n"
        "from gpumat.host import native, segment\n"
        "rng = np.random.default_rng(3)\n"
        "buf = rng.integers(0, 256, 50_000).astype(np.uint8)\n"
        "out = []\n"
        "for n in list(range(0, 200)) + list(range(2040, 2120)) + [49_999, 50_000]:\n"
        "    ids = rng.integers(0, 1 << 45, -(-n // 2048))\n"
        "    h = segment.chunk_hash(buf[:n], 2048, ids)\n"
        "    c, native._decode = native._decode, None\n"
        "    assert h.tolist() == segment.chunk_hash(buf[:n], 2048, ids).tolist(), n\n"
        "    native._decode = c\n"
        "    out += h.tolist()\n"
        "print(len(out), sum(out))\n")
    with_and_without_avx512(decoder, code, 300)


def test_varints():
    v = np.array([0, 1, 127, 128, 2**35, 2**63, 2**64 - 1], np.uint64)
    b, n = pages.varint_bytes(v)
    got, end = pages.varint_decode(b)
    assert got.tolist() == v.tolist() and n.tolist() == [1, 1, 1, 2, 6, 10, 10]
    d = np.array([0, -1, 1, I64.min, I64.max], np.int64)
    assert pages.unzigzag(pages.zigzag(d)).tolist() == d.tolist()
    with pytest.raises(CorruptionError, match="past the end"):
        pages.varint_decode(np.array([0x80, 0x80], np.uint8))
    with pytest.raises(CorruptionError, match="longer than 64"):
        pages.varint_decode(np.array([0xFF] * 10 + [0x01], np.uint8))


def test_malformed_pages_are_corruption():
    x = np.arange(300, dtype=np.int64) * 3
    region, off, nbytes, _ = pages.encode_stripes(x, np.array([300]), 128)
    assert pages.decode_blob(region, 300, 128).tolist() == x.tolist()
    bad_tag = region.copy()
    bad_tag[0] = pages.TAG_FLAG_LAST | pages.TAG_LFOR  # a FLAG block has no slope: no encoding (LEVELS tags with it: CLASSES, BARE)
    with pytest.raises(CorruptionError, match="not an encoding"):
        pages.decode_blob(bad_tag, 300, 128)
    for t in range(65, pages.TAG_LAST + 1):  # a plain block's tag read as another kind: its fields no longer match
        bad_tag[0] = t
        try:
            got = pages.decode_blob(bad_tag, 300, 128)
        except CorruptionError:
            continue
        # (but a FLAG block has no field or one, a LEVELS block two, and a one-page blob's fields come
        # first: its bytes may still parse as fields and payload; what catches a flipped tag is its
        # chunk's checksum)
        assert t >= pages.TAG_FLAG and len(got) == 300, t
    with pytest.raises(CorruptionError):
        pages.decode_blob(region[:-1], 300, 128)  # a field cut short
    with pytest.raises(CorruptionError):
        pages.decode_blob(region[:2], 300, 128)
    extra = np.concatenate([region, [0]]).astype(np.uint8)  # one varint too many
    with pytest.raises(CorruptionError, match="fields"):
        pages.decode_blob(extra, 300, 128)
    long_x = np.arange(128 * 40, dtype=np.int64) ** 2
    r2, _, _, _ = pages.encode_stripes(long_x, np.array([len(long_x)]), 128)
    anchor1 = 40 + 8  # tags (40 blocks), then (u32 fields byte, u32 payload bit) per page
    for field, value in ((0, r2.size + 5), (1, 3)):  # page 1's fields past the blob; its payload bit wrong
        bad = r2.copy()
        bad[anchor1 + 4 * field : anchor1 + 4 * field + 4] = np.frombuffer(np.uint32(value).tobytes(), np.uint8)
        with pytest.raises(CorruptionError, match="anchors"):
            pages.decode_blob(bad, len(long_x), 128)


def events(seed, n, users=30):
    rng = np.random.default_rng(seed)
    return pa.table({"user_id": rng.integers(0, users, n), "ts": np.sort(rng.integers(0, 10**12, n)),
                     "item_id": rng.integers(0, 1000, n), "action": rng.integers(0, 3, n).astype(np.int32)})


def histories(t):
    return {u: {c: v.tolist() for c, v in t.read_history(u).items()} for u in range(30)}


def test_mixed_format_tier_reads_the_same_and_compact_upgrades(tmp_path, monkeypatch):
    """Files written by a format-2 release, then appends in format 3: every read path agrees (small
    segments in memory, large ones by ranges; block windows across both formats in one request);
    a checkpoint's snapshot opens format-3 files without their indexes; compaction rewrites the
    format-2 files."""
    monkeypatch.setattr(writer, "SEGMENT_FORMAT", 2)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    for i in range(3):
        t.append(events(i, 2000))
    t.compact()  # a large format-2 file
    t.append(events(9, 50))
    monkeypatch.setattr(writer, "SEGMENT_FORMAT", 3)
    for i in range(20):  # past a checkpoint (every 16th version)
        t.append(events(10 + i, 60))
    fmts = [e.get("format", 2) for e in t._reader.state.files.values()]
    assert 2 in fmts and 3 in fmts
    want = histories(t)
    for full in (1 << 30, 0):  # regions in memory; every segment read by ranges of chunks
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        fresh = Tier.open(t.uri)
        assert histories(fresh) == want
        d = fresh.directory()
        si = np.arange(len(d))
        hdr, words, nbytes = fresh.read_blocks("ts", si, np.zeros(len(si), np.int64), d.nblocks[si])
        cnt, own = d.block_values(si, 8)
        vals = codec.decode_blocks(hdr, words, cnt)[own]
        assert vals.tolist() == np.concatenate([fresh.read_history(int(u))["ts"] for u in np.unique(d.user_id)]).tolist()
        assert nbytes > 0 and words[-1] == 0
    before = t.version
    assert t.compact() == before + 1
    assert all(e.get("format") == 3 for e in t._reader.state.files.values())
    assert histories(Tier.open(t.uri)) == want
    assert histories(Tier.open(t.uri, version=before)) == want


def test_format3_is_smaller_and_every_flipped_region_byte_is_caught(tmp_path, monkeypatch):
    sizes = {}
    for fmt in (2, 3):
        monkeypatch.setattr(writer, "SEGMENT_FORMAT", fmt)
        t = Tier.create(tmp_path / f"t{fmt}", SCHEMA, block_size=128)
        for i in range(3):
            t.append(events(i, 4000))
        t.compact()
        sizes[fmt] = t.stats()["stored_bytes"]
    assert sizes[3] < 0.95 * sizes[2]  # 0.89 here: the headers (32 bytes a block and column) are most of the gain
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # ranges: each read verifies its chunks
    assert_flips_caught(tmp_path / "t3", range(30), 25)


def assert_flips_caught(tier_dir, users, n, span=None):
    """A bit flipped in any of ``n`` random bytes of the tier's one data file's blob region (or of
    bytes ``span = (lo, hi)`` of it) is a ``CorruptionError`` (its chunk checksum) when the users'
    histories are read; restored, it reads."""
    data = tier_dir / "_data"
    (path,) = [data / n for n in os.listdir(data)]
    lo, hi = span or (0, Tier.open(tier_dir)._reader.segment(0).region_bytes)
    for byte in np.random.default_rng(0).integers(lo, hi, n).tolist():
        with flipped(path, byte), pytest.raises(CorruptionError, match="checksum"):
            fresh = Tier.open(tier_dir)
            for u in users:
                fresh.read_history(u)
    Tier.open(tier_dir).read_history(users[0])


@contextlib.contextmanager
def flipped(path, byte: int):
    """Byte ``byte`` of file ``path`` with a bit flipped while inside; restored after."""
    with open(path, "r+b") as f:
        f.seek(byte)
        b = f.read(1)[0]
        f.seek(byte)
        f.write(bytes([b ^ 0x10]))
    try:
        yield
    finally:
        with open(path, "r+b") as f:
            f.seek(byte)
            f.write(bytes([b]))


def test_an_entry_that_names_the_wrong_format_is_corruption(tmp_path):
    from gpumat.core.errors import CorruptionError as CE
    from gpumat.host.reader import VersionReader

    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    t.append(events(0, 100))
    state = t._reader.state
    for e in state.files.values():
        e.pop("format")  # as if a format-2 file: the file's magic says 3
    with pytest.raises(CE, match="format 3, its entry says 2"):
        VersionReader(t._store, state).directory()


def test_take_ranges_is_the_gather_of_its_ranges():
    from gpumat.host.ranges import take_ranges

    rng = np.random.default_rng(2)
    for dt in (np.uint8, np.int64):
        src = rng.integers(0, 100, 1000).astype(dt)
        starts = rng.integers(0, 900, 30)
        lens = rng.integers(0, 100, 30)
        assert take_ranges(src, starts, lens).tolist() == src[ranges(starts, lens)].tolist()
        out = np.zeros(int(lens.sum()) + 7, dt)
        at = np.cumsum(lens) - lens + 7  # after 7 untouched elements
        take_ranges(src, starts, lens, out, at)
        assert out[7:].tolist() == src[ranges(starts, lens)].tolist() and not out[:7].any()
    objs = np.array([object()] * 4, dtype=object)  # never copied as raw pointers
    assert take_ranges(objs, [1], [2]).tolist() == objs[1:3].tolist()
    assert take_ranges(np.arange(5), [9], [0]).tolist() == []  # an empty range anywhere


def test_unique_is_numpys_unique():
    """``ranges.unique`` (no sort where the keys are in order, a count per value for integers of a
    small span, a sort and a search otherwise) gives NumPy's arrays: values, first places, inverse
    and counts, on sorted, unsorted, repeated, constant, extreme and empty keys, short and long, of
    narrow integer types, uint64 past 2^63, bool and floats with NaN."""
    from gpumat.host.ranges import unique

    rng = np.random.default_rng(3)
    for i in range(400):
        n = int(rng.integers(1024, 3000)) if i % 2 else int(rng.integers(0, 40))
        a = rng.integers(-5, 1 << int(rng.integers(1, 50)), n)
        if i % 3 == 0:
            a = np.sort(a)
        if i % 4 == 0:
            a = np.repeat(a, rng.integers(1, 4, len(a)))
        if i % 7 == 0 and len(a):
            a[:] = a[0]
        if i % 11 == 0:
            a = a - a.min(initial=0) + (np.iinfo(np.int64).max - 5000)  # (near the top: no wrap)
        a = a.astype(np.int32 if i % 5 == 0 and a.max(initial=0) < 2**31 else np.int64)
        check_unique(unique, a)
    # other types: narrow ones (their span in int64), uint64 past 2^63, bool, floats (NumPy's NaN rules)
    for a in (rng.integers(-128, 128, 2000).astype(np.int8), rng.integers(-30000, 30000, 20000).astype(np.int16),
              np.uint64(2**63) + rng.integers(0, 500, 3000).astype(np.uint64), rng.integers(0, 2, 3000).astype(bool),
              np.uint64(2**64 - 1) - rng.integers(0, 3000, 3000).astype(np.uint64), np.array([1.0, np.nan, 0.0, np.nan])):
        check_unique(unique, a)


def check_unique(unique, a):
    for ri, rv, rc in itertools.product((False, True), repeat=3):
        got, want = unique(a, ri, rv, rc), np.unique(a, return_index=ri, return_inverse=rv, return_counts=rc)
        got, want = (got if isinstance(got, tuple) else (got,)), (want if isinstance(want, tuple) else (want,))
        assert len(got) == len(want)
        assert all(g.dtype == w.dtype and np.array_equal(g, w.reshape(-1), equal_nan=g.dtype.kind == "f")
                   for g, w in zip(got, want)), (a, ri, rv, rc)


def test_ranges_in_c_equals_numpy(monkeypatch, decoder):
    """``ranges`` in C and in NumPy: the same values on random starts (int64 extremes: they wrap as
    NumPy's sums do) and counts (negative ones too: the NumPy body decides those)."""
    if decoder != "native":
        pytest.skip("compares the C ranges with NumPy's: runs once, with the C codec")
    rng = np.random.default_rng(4)

    def one(s, c):
        try:
            return ranges(s, c).tolist()
        except (IndexError, ValueError) as e:  # (negative counts: what NumPy's steps make of them)
            return type(e)

    def both(s, c):
        a = one(s, c)
        with monkeypatch.context() as m:
            m.setattr(native, "_decode", None)
            return a, one(s, c)

    for t in range(1500):
        k = int(rng.integers(0, 20))
        s = rng.integers(-2**63, 2**63 - 1, k, dtype=np.int64) if t % 3 == 0 else rng.integers(-50, 50, k)
        c = rng.integers(0 if t % 5 else -2, 6, k)
        a, b = both(s, c)
        assert a == b, (s, c)


def test_copy_ranges_refuses_ranges_outside_its_arrays(decoder):
    if decoder != "native":
        pytest.skip("about the C copy: runs once, with the C codec")
    src, out = np.zeros(8, np.uint8), np.zeros(8, np.uint8)
    for s_at, d_at, n in (([2**62], [0], [2**62]), ([0], [2**62], [2**62]), ([4], [0], [5]), ([-1], [0], [1])):
        with pytest.raises(ValueError, match="outside"):
            native.copy_ranges(src, np.array(s_at), out, np.array(d_at), np.array(n))
    with pytest.raises(ValueError, match="non-object"):
        native.copy_ranges(np.zeros(2, object), np.array([0]), np.zeros(2, object), np.array([0]), np.array([1]))


def zipf_table(rng, users, n, ts0=0):
    """Events whose item ids repeat as real ones do (Zipf, 40-bit ids): a segment dictionary pays."""
    ids = rng.integers(0, 1 << 40, 5000)
    return pa.table({"user_id": np.sort(rng.choice(users, n)), "ts": ts0 + np.arange(n),
                     "item_id": ids[np.minimum(rng.zipf(1.2, n), len(ids)) - 1],
                     "action": rng.integers(0, 3, n).astype(np.int32)})


def test_segment_dictionary_is_kept_only_where_it_pays():
    rng = np.random.default_rng(1)
    sc = np.array([7000, 3000, 10])
    zipf = zipf_table(rng, [0], int(sc.sum()))["item_id"].to_numpy()
    region, off, nbytes, enc, head, _ = pages.encode_column_parts(zipf, sc, 128)
    plain = pages.encode_stripes(zipf, sc, 128)[0]
    assert (enc & codec.ENC_DICT).all() and (enc >> 8 == 0).all() and len(region) < (1 - pages.DICT_MIN_SAVING) * len(plain)
    codes = decode_all(region, off, nbytes, sc, 128)
    d = pages.decode_dictionary(region[:head], 128)
    uniq, counts = np.unique(zipf, return_counts=True)  # (sorted, or by frequency where a sample says it pays)
    assert sorted(d.tolist()) == uniq.tolist() and ((np.diff(d) > 0).all() or d[0] == uniq[counts.argmax()])
    assert d[codes].tolist() == zipf.tolist()
    for x, why in ((rng.integers(0, 1 << 40, 10000), "distinct ids"), (zipf[:100], "a small append"),
                   (np.arange(10000) * 3, "a line: LFOR is smaller")):
        # (the segment dictionary alone: a small append's repeats may take a stripe table, below)
        r2, _, _, e2 = pages.encode_column(x, np.array([len(x)]), 128, tables=False, index_tags=False)
        assert not (e2 & codec.ENC_DICT).any(), why
        assert r2.tolist() == pages.encode_stripes(x, np.array([len(x)]), 128)[0].tolist(), why


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_segment_dictionary_reads_and_materializes(tmp_path, monkeypatch, backend):
    """A tier whose item ids are stored as codes into segment dictionaries (a bulk load, a
    compacted merge, small appends without one; more than 16 versions, so a checkpoint's snapshot
    opens the files without their indexes): block windows read in memory and by ranges decode to
    the values, and planned batches of every backend equal the naive windows."""
    rng = np.random.default_rng(5)
    users = np.array([1, 2, 3, 4, 5])
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=32)
    t.append(zipf_table(rng, users, 20000))
    t.append(zipf_table(rng, users[:3], 9000, 10**6))
    for i in range(16):
        t.append(zipf_table(rng, users, 40, 2 * 10**6 + 100 * i))
    whole = {int(u): t.read_history(int(u)) for u in users}
    seen = set()
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(t.uri)
        assert h._reader.state.directory is not None  # opened from a checkpoint's snapshot
        d = h.directory()
        enc = h._reader.blobs("item_id")[2]
        seen |= {bool(x) for x in enc & codec.ENC_DICT}
        si, lo, hi = windows(rng, d, 50)
        got = h.read_blocks("item_id", si, lo, hi)
        assert h._reader.dict_bytes_read > 0 and h.read_blocks("item_id", si, lo, hi)[2] == got[2]  # read once
        cnt, own = d.block_values(si, 32, lo, hi)
        want = window_values(whole, d, si, lo, hi, "item_id", 32)
        assert got.dicts is not None and codec.decode_blocks(got[0], got[1], cnt, dicts=got.dicts)[own].tolist() == want.tolist()
        pad = codec.decode_blocks_padded(got[0], got[1], 32, dicts=got.dicts)
        assert pad[np.arange(32)[None, :] < cnt[:, None]][own].tolist() == want.tolist()
        assert all(h.read_history(int(u))["item_id"].tolist() == whole[int(u)]["item_id"].tolist() for u in users)
    assert seen == {True, False}  # the large segments have dictionaries, the small appends do not
    # their entries say so: a release that cannot read dictionaries rejects the entry (unknown key)
    # instead of reading codes as values through a checkpoint's snapshot
    from gpumat.host import log

    r = Tier.open(t.uri)._reader
    seg_of = r.directory().seg
    has = np.zeros(len(r._files), bool)
    for c in SCHEMA:
        has[np.unique(seg_of[(r.blobs(c)[2] & codec.ENC_DICT) != 0])] = True
    assert [e.get("dicts") == pages.DICT_FORM for _, e in r._files] == has.tolist() and 0 < has.sum() < len(has)
    e = dict(next(e for _, e in r._files if e.get("dicts")))
    assert log._check_entry(dict(e), "x") == e and log._check_entry({**e, "dicts": 1}, "x")["dicts"] == 1
    for bad in ({**e, "dicts": 3}, {**e, "dicts": True}, {k: v for k, v in e.items() if k != "format"}):
        with pytest.raises(CorruptionError, match="bad data file entry"):
            log._check_entry(bad, "x")
    import copy
    import pickle

    b = h.read_blocks("item_id", si, lo, hi)
    for c2 in (pickle.loads(pickle.dumps(b)), copy.copy(b)):
        assert c2.dict_keys == b.dict_keys and np.array_equal(c2.dicts, b.dicts) and np.array_equal(c2[1], b[1])
    if backend == "reference":  # compacted into one file with one dictionary: a flipped bit in it is caught
        t.compact()
        enc = Tier.open(t.uri)._reader.blobs("item_id")[2]
        assert (enc & codec.ENC_DICT).all()
        assert all(Tier.open(t.uri).read_history(int(u))["item_id"].tolist() == whole[int(u)]["item_id"].tolist()
                   for u in users)
        monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)
        at = int(enc[0]) >> 8
        assert_flips_caught(tmp_path / "t", [int(x) for x in users], 8, (at, at + 200))
    staged = check_planned_batches(t, whole, rng, users, 24, 3000, backend)
    assert staged.columns["item_id"].dicts is not None and staged.aux("item_id") & 4


def check_planned_batches(t, whole, rng, users, B, max_len, backend):
    """Planned batches of ``B`` random examples of ``users`` (random versions and lengths, tails of
    0-2 events of 7) of tier ``t`` for a tenant of ``item_id`` and ``action`` (at most ``max_len``
    events, the leakage check on) equal the naive windows of ``whole`` on ``backend``; returns the
    staged batch."""
    import gpumat.ops
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan

    u = rng.choice(users, B)
    v = rng.integers(1, t.version + 1, B)
    n = (rng.random(B) * (t.length_at(u, v) + 1)).astype(np.int64)
    m = rng.integers(0, 3, B)
    table = pa.table({"user_id": u, "version": v, "length": n, "request_ts": np.full(B, 10**9),
                      **{f"tail_{c}": pa.array([[7] * int(k) for k in m], pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                         for c, dt in SCHEMA.items()}})
    ex = parse_examples(table, SCHEMA)
    tenant = Tenant("t", ["item_id", "action"], max_len)
    staged = plan(Tier.open(t.uri), ex, tenant, check_leakage=True)
    values, viol = gpumat.ops.decode_gather(staged if backend in ("reference", "numpy") else staged.to("cpu"), backend)
    for c in tenant.columns:
        want = []
        for e in range(B):
            hist = whole[int(u[e])][c][: int(n[e])].tolist() + [7] * int(ex.tail_len[e])
            want += hist[max(0, len(hist) - tenant.max_len):]
        assert values[c].tolist() == want, c
    assert not viol.any()
    return staged


def day_table(rng, users, n, day0=18_000):
    """Events with day-granular timestamps (a segment dictionary of days, its codes in RUN blocks:
    a day's events repeat its code) and an id that is one small value but in 1% of events, where it
    is a 41-bit one (codes in PATCH blocks: the values' exceptions are too wide for PATCH)."""
    days = day0 + np.cumsum(rng.random(n) < 0.03)
    ids = np.where(rng.random(n) < 0.01, rng.integers(1 << 40, 1 << 41, n), 5)
    return pa.table({"user_id": np.sort(rng.choice(users, n)), "ts": days * 86_400, "item_id": ids,
                     "action": rng.integers(0, 3, n).astype(np.int32)})


@pytest.mark.parametrize("backend", ["reference", "numpy", "triton", "torch"])
def test_dictionary_codes_in_run_and_patch_blocks(tmp_path, monkeypatch, backend):
    """A segment dictionary's codes take RUN blocks (a day's timestamps) and PATCH blocks (an id
    with rare wide values) where they pay: far smaller than the values' own blocks or codes in FOR
    blocks; such blocks stage as PATCH / RUN blocks with ``AUX_CODES`` (looked up like DICT
    blocks), and read by block windows, whole stripes and planned batches of every backend (the
    leakage check on the coded ``ts`` too) they give the values."""
    import gpumat.ops
    from gpumat.core.staged import AUX_CODES, dict_blocks
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan

    rng = np.random.default_rng(8)
    users = np.arange(1, 9)
    tab = day_table(rng, users, 30000)
    sc = np.bincount(np.searchsorted(users, tab.column("user_id").to_numpy()))
    for c, kind in (("ts", codec.ENC_RUN), ("item_id", codec.ENC_PATCH)):
        x = tab.column(c).to_numpy()
        region, off, nbytes, enc = pages.encode_column(x, sc, 128, tables=False)  # (the segment dictionary's codes)
        assert (enc & codec.ENC_DICT).all() and (enc & kind).any(), c
        with monkeypatch.context() as m:  # codes in FOR / LFOR blocks only, as before
            m.setattr(pages, "CODES", None)
            assert len(region) < 0.8 * len(pages.encode_column(x, sc, 128, tables=False)[0]), c
        assert len(region) < 0.8 * len(pages.encode_stripes(x, sc, 128)[0]), c
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(tab)
    whole = {int(u): t.read_history(int(u)) for u in users}
    for c in ("ts", "item_id"):
        want = tab.column(c).to_numpy()
        assert np.concatenate([whole[int(u)][c] for u in users]).tolist() == want.tolist()
        h = Tier.open(t.uri)
        d = h.directory()
        assert np.concatenate([h._reader.decode_stripes(c, np.arange(len(d)))]).tolist() == want.tolist()
        monkeypatch.setattr(native, "available", lambda: (False, None))  # the block path of decode_stripes
        assert np.concatenate([Tier.open(t.uri)._reader.decode_stripes(c, np.arange(len(d)))]).tolist() == want.tolist()
        monkeypatch.undo()
        si, lo, hi = windows(rng, d, 40)
        got = h.read_blocks(c, si, lo, hi)
        coded = dict_blocks(got[0], got[1])
        aw = got[1][(got[0][coded, 2] >> 8) - 1]
        assert ((aw & AUX_CODES) != 0).any() and ((aw & 3) == (2 if c == "ts" else 1)).any(), c
        cnt, own = d.block_values(si, 128, lo, hi)
        assert codec.decode_blocks(got[0], got[1], cnt, dicts=got.dicts)[own].tolist() == \
            window_values(whole, d, si, lo, hi, c, 128).tolist()
    B = 24
    u = rng.choice(users, B)
    n = (rng.random(B) * (t.length_at(u, np.ones(B, np.int64)) + 1)).astype(np.int64)
    last = np.array([whole[int(x)]["ts"][k - 1] if k else 0 for x, k in zip(u, n)])
    rts = last + np.where(rng.random(B) < 0.3, 0, 1)  # some examples see their last event at request_ts: leakage
    table = pa.table({"user_id": u, "version": np.ones(B, np.int64), "length": n, "request_ts": rts,
                      **{f"tail_{c}": pa.array([[] for _ in range(B)], pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                         for c, dt in SCHEMA.items()}})
    ex = parse_examples(table, SCHEMA)
    tenant = Tenant("t", ["ts", "item_id"], 700)
    staged = plan(Tier.open(t.uri), ex, tenant, check_leakage=True)
    assert staged.aux("ts") & 4 and staged.aux("ts") & 2 and staged.aux("item_id") & 4 and staged.aux("item_id") & 1
    values, viol = gpumat.ops.decode_gather(staged if backend in ("reference", "numpy") else staged.to("cpu"), backend)
    for c in tenant.columns:
        want = []
        for e in range(B):
            hist = whole[int(u[e])][c][: int(n[e])].tolist()
            want += hist[max(0, len(hist) - tenant.max_len):]
        assert values[c].tolist() == want, c
    assert np.asarray(viol).astype(bool).tolist() == [bool(k) and r <= l for k, r, l in zip(n, rts, last)]


def skewed_columns(rng, n):
    """Ratings drawn 60/20/10/5/5% independently of the user (an Amazon mix: the most frequent is
    the largest), a 3-kind action at 85/10/5%, and real-looking timestamps."""
    return {"ts": np.cumsum(rng.integers(0, 1000, n)) + 1_700_000_000,
            "item_id": rng.choice([5, 4, 3, 2, 1], n, p=[0.6, 0.2, 0.1, 0.05, 0.05]),
            "action": rng.choice([2, 0, 1], n, p=[0.85, 0.1, 0.05]).astype(np.int32)}


def test_a_skewed_small_alphabet_takes_a_dictionary_in_frequency_order(tmp_path, monkeypatch):
    """A small alphabet whose most frequent value is not its smallest: its dictionary in descending
    frequency (code 0 the most frequent), its codes in PATCH blocks with no low bits, is smaller
    than the values' RADIX / PATCH blocks and than a sorted dictionary's codes; such a tier reads by
    windows and catches flipped bytes. A column whose dictionary does not pay keeps its blocks."""
    rng, n, sc, users, cols = four_stripes(skewed_columns, 5)
    for c in ("item_id", "action"):
        x = cols[c].astype(np.int64)
        # (the segment dictionary alone; the same stripes' own tables: test_stripe_tables_*)
        region, off, nbytes, enc, head, _ = pages.encode_column_parts(x, sc, 128, tables=False)
        assert (enc & codec.ENC_DICT).all() and (enc & codec.ENC_PATCH).any(), c
        d = pages.decode_dictionary(region[:head], 128)
        assert d[0] == np.bincount(x).argmax() and d.tolist() != sorted(d.tolist()), c
        assert d[decode_all(region, off, nbytes, sc, 128)].tolist() == x.tolist()  # (codes, looked up)
        with monkeypatch.context() as m:
            m.setattr(pages, "FREQ_MAX_ENTRIES", 0)
            m.setattr(pages, "FREQ_SAMPLED_ENTRIES", 0)
            assert len(region) < 0.87 * len(pages.encode_column(x, sc, 128, tables=False)[0]), c
    y = rng.integers(0, 5, n)  # uniform: no dictionary pays
    assert not (pages.encode_column(y, sc, 128)[3] & codec.ENC_DICT).any()
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, 128, n, extended=("item_id", "action"))


def category_columns(rng, n):
    """A category of about 600 values that follows Zipf items (a click log's: skewed, its frequent
    values anywhere in its range), a 3-kind action, timestamps."""
    items = rng.zipf(1.2, n) % 20000
    return {"ts": np.cumsum(rng.integers(0, 1000, n)) + 1_700_000_000,
            "item_id": items * 2654435761 % 600 + 1000,
            "action": rng.choice([2, 0, 1], n, p=[0.85, 0.1, 0.05]).astype(np.int32)}


def test_a_skewed_large_alphabet_takes_frequency_order_where_a_sample_says_so(tmp_path, monkeypatch):
    """An alphabet over ``FREQ_MAX_ENTRIES`` values, skewed: a sample of its stripes encoded both
    ways says the frequency order pays (its frequent codes a few low bits in PATCH blocks), and the
    column is then smaller than with the sorted dictionary; such a tier reads back on every path.
    A uniform alphabet, or one over ``FREQ_SAMPLED_ENTRIES``, keeps its dictionary sorted."""
    rng, n, sc, users, cols = four_stripes(category_columns, 7)
    x = cols["item_id"].astype(np.int64)
    region, off, nbytes, enc, head, _ = pages.encode_column_parts(x, sc, 128, tables=False)
    d = pages.decode_dictionary(region[:head], 128)
    assert len(d) > pages.FREQ_MAX_ENTRIES and d[0] == np.bincount(x).argmax()
    assert (np.diff(d) < 0).any() and (enc & codec.ENC_DICT).all() and (enc & codec.ENC_PATCH).any()
    assert d[decode_all(region, off, nbytes, sc, 128)].tolist() == x.tolist()
    with monkeypatch.context() as m:
        m.setattr(pages, "FREQ_SAMPLED_ENTRIES", pages.FREQ_MAX_ENTRIES)
        r2, _, _, e2, h2, _ = pages.encode_column_parts(x, sc, 128, tables=False)
        assert len(region) < 0.9 * len(r2)
        assert not (e2 & codec.ENC_DICT).any() or (np.diff(pages.decode_dictionary(r2[:h2], 128)) > 0).all()
    y = rng.integers(0, 600, n) * 7 + 1000  # uniform: within a bit of log2 D, never weighed
    uniq, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    assert not pages._frequency_pays(y, codes.reshape(-1), counts, np.argsort(-counts, kind="stable"), uniq, sc, 128,
                                     False)
    # stripes of very different sizes are sampled by blocks: one stripe of a value beside one of
    # all the others is weighed on the large one (a sample of stripes would take the small one)
    big = np.concatenate([x[:1], np.tile(x, 64)])  # (over 2 x FREQ_SAMPLE_BLOCKS blocks)
    sc2 = np.array([1, len(big) - 1])
    u2, c2, n2 = np.unique(big, return_inverse=True, return_counts=True)
    assert pages._frequency_pays(big, c2.reshape(-1), n2, np.argsort(-n2, kind="stable"), u2, sc2, 128, True)
    r3, _, _, e3, h3, _ = pages.encode_column_parts(y, sc, 128, tables=False)
    assert not (e3 & codec.ENC_DICT).any() or (np.diff(pages.decode_dictionary(r3[:h3], 128)) > 0).all()
    check_tier_reads(tmp_path, monkeypatch, rng, cols, users, 128, n, extended=("item_id", "action"))


def test_codes_in_radix_blocks_are_corruption():
    """A blob of codes (DICT) decodes its PATCH, RUN and DELTA blocks (a stripe table's codes) and
    looks their values up; one that holds a RADIX block (which the encoder never gives codes) is a
    ``CorruptionError`` on both decoders."""
    rng = np.random.default_rng(3)
    n = 4000
    d = np.unique(rng.integers(-(10**15), 10**15, 300))
    runs = np.repeat(rng.integers(0, len(d), n), rng.integers(1, 30, n))[:n]
    region, off, nbytes, enc = pages.encode_stripes(runs, np.array([n]), 128, pages.CODES)
    assert enc[0] & codec.ENC_RUN
    got = pages.decode_blobs(region, [0], [len(region)], [n], 128, d, np.array([0]), np.array([len(d)]))
    assert got.tolist() == d[runs].tolist()
    walk = np.cumsum(rng.integers(0, 3, n)) % len(d)  # DELTA blocks
    region, off, nbytes, enc = pages.encode_stripes(walk, np.array([n]), 128, pages.CODES_DELTA)
    assert enc[0] & codec.ENC_DELTA
    got = pages.decode_blobs(region, [0], [len(region)], [n], 128, d, np.array([0]), np.array([len(d)]))
    assert got.tolist() == d[walk].tolist()
    region, off, nbytes, enc = pages.encode_stripes(rng.integers(0, 5, n), np.array([n]), 128)
    assert enc[0] & codec.ENC_RADIX
    with pytest.raises(CorruptionError, match="RADIX"):
        pages.decode_blobs(region, [0], [len(region)], [n], 128, d, np.array([0]), np.array([len(d)]))


def test_a_bad_dictionary_entry_in_an_index_is_corruption(tmp_path):
    """An index whose ``enc`` names a dictionary that does not end before its blob is a
    ``CorruptionError`` when the segment is opened; one that names a place where no dictionary is
    (every stripe may have its own: stripe tables), when the dictionary is read (codes in PATCH, RUN
    or DELTA blocks are not: a blob of codes that holds RADIX blocks is, when it is read)."""
    from gpumat.host.store import LocalStore

    rng = np.random.default_rng(2)
    sc = np.array([6000, 4000])
    x = zipf_table(rng, [0], int(sc.sum()))["item_id"].to_numpy()
    good = pages.encode_column_parts(x, sc, 128)
    assert (good[3] & codec.ENC_DICT).all()
    store = LocalStore(str(tmp_path))
    late = np.array([good[3][0], good[3][1] + ((int(good[1][1]) - 1) << 8)])  # no room for a head and a blob
    for i, enc in enumerate([good[3], np.array([good[3][0], good[3][1] + (1 << 8)]), np.full(2, 1 << 8), late]):
        bufs, size, crc, _ = segment.encode_segment3(["item_id"], np.array([0, 0]), np.array([0, 6000]), sc,
                                                  {"item_id": (*good[:3], enc)})
        with open(tmp_path / f"s{i}", "wb") as f:
            for b in bufs:
                f.write(memoryview(b).cast("B"))
        if i == 0:
            s = segment.open_segment(store, f"s{i}", 0, size, crc, ["item_id"], 128)
            d, nb = s.dictionary(int(s.enc["item_id"][0]) >> 8, 128, good[4])
            assert sorted(d.tolist()) == np.unique(x).tolist() and nb == good[4] and s.dictionary(0, 128, good[4])[1] == 0
            continue
        if i == 1:  # a second dictionary, at byte 1: opens, and is corruption when read
            s = segment.open_segment(store, f"s{i}", 0, size, crc, ["item_id"], 128)
            with pytest.raises(CorruptionError, match="dictionary"):
                s.dictionary(1, 128, int(s.off["item_id"][1]) - 1)
            continue
        with pytest.raises(CorruptionError, match="dictionary|unknown encoding|constant stripe"):
            segment.open_segment(store, f"s{i}", 0, size, crc, ["item_id"], 128)



def shorten_dictionaries(m, k: int) -> None:
    """Make every dictionary a reader decodes (``pages.decode_dictionaries``) its first ``k``
    entries, as a writer's bug would leave them (bytes that pass their checksums)."""
    real = pages.decode_dictionaries

    def short(*a, **kw):
        vals, cnt = real(*a, **kw)
        pos, keep = np.cumsum(cnt) - cnt, np.minimum(cnt, k)
        return np.concatenate([vals[p : p + n] for p, n in zip(pos.tolist(), keep.tolist())]), keep

    m.setattr(pages, "decode_dictionaries", short)


def test_index_values_that_would_wrap_are_corruption(tmp_path):
    """A segment whose index (its crc right: a writer's bug, not a flipped bit) holds blob ranges or
    counts that overflow int64 when added is a ``CorruptionError`` at open, never a wrapped range."""
    from gpumat.host.store import LocalStore

    sc = np.array([300, 200])
    x = np.arange(500, dtype=np.int64) * 7
    good = pages.encode_column(x, sc, 128)
    store = LocalStore(str(tmp_path))
    big = np.iinfo(np.int64).max
    bad = [  # (off, nbytes, count)
        (np.array([0, big - 4]), good[2], sc),          # o + n wraps negative
        (good[1], np.array([good[2][0], big]), sc),     # n past the region
        (good[1], np.array([good[2][0], -big]), sc),    # n negative
        (good[1], good[2], np.array([300, 1 << 62])),   # a count whose block count would wrap
    ]
    for i, (o, n, cnt) in enumerate([(good[1], good[2], sc)] + bad):
        bufs, size, crc, _ = segment.encode_segment3(["v"], np.array([0, 1]), np.array([0, 0]), cnt, {"v": (good[0], o, n, good[3])})
        with open(tmp_path / f"s{i}", "wb") as f:
            for b in bufs:
                f.write(memoryview(b).cast("B"))
        if i == 0:
            assert segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128).count.tolist() == [300, 200]
            continue
        with pytest.raises(CorruptionError, match="out of bounds|inconsistent"):
            segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128)

def blob_set(rng, short: bool = False):
    """Blobs of every kind at odd byte offsets in one buffer, random bytes between them: plain FOR /
    LFOR (one page and many, blocks over 128 values), PATCH, RUN (with gaps too), FLAG, LEVELS, DELTA,
    DELTA PATCH and DELTA SIGNED, and codes into segment dictionaries (in FOR / LFOR, PATCH, RUN,
    LEVELS and DELTA blocks).
    ``short``: most blobs of one block (twice as many blobs).
    Returns ``(buf, boff, blen, count, bs, dicts, dstart, dlen, want)``."""
    bs = int(rng.choice([8, 32, 128]))
    parts, boff, blen, count, dstart, dlen, want, dicts = [], [], [], [], [], [], [], []
    at = 0
    for kind in np.concatenate([rng.permutation(7) for _ in range(1 + short)]):
        n = int(rng.integers(1, bs + 3 if short else 40 * bs))
        if kind == 6:  # DELTA / DELTA PATCH / DELTA SIGNED blocks (ids: a walk; an int32 walk; a pack's columns)
            kind = 2
            x = (delta_columns if rng.random() < 0.5 else pack_columns)(rng, n)[str(rng.choice(["ts", "item_id", "action"]))]
            x = x.astype(np.int64)
        elif kind == 0:
            x = np.sort(rng.integers(0, 10**12, n))
        elif kind == 1:
            x = rng.integers(I64.min, I64.max, n, endpoint=True)
        elif kind in (2, 3):
            # (PATCH, RUN; their sparse bitmaps; RADIX)
            cols = [aux_columns, sparse_columns, radix_columns, flag_columns, gap_columns, levels_columns][
                int(rng.choice(6, p=[0.2, 0.2, 0.15, 0.15, 0.15, 0.15]))](rng, n)
            x = cols["item_id" if kind == 2 else "action"].astype(np.int64)
        else:  # codes into a dictionary of distinct values
            d = np.unique(rng.integers(-(10**15), 10**15, int(rng.integers(1, 300))))
            # (codes in runs: RUN blocks; mostly one code: PATCH blocks; a walk: DELTA blocks, a
            # literal table's codes)
            walk = kind == 5 and rng.random() < 0.5
            x = np.repeat(rng.integers(0, len(d), n), rng.integers(1, 20, n))[:n] if kind == 4 else \
                np.cumsum(rng.integers(-1, 3, n)) % len(d) if walk else \
                np.where(rng.random(n) < 0.05, rng.integers(0, len(d), n), 0)
            dstart.append(sum(len(v) for v in dicts))
            dlen.append(len(d))
            dicts.append(d)
            want.append(d[x])
        region, off, nbytes, _ = pages.encode_stripes(x.astype(np.int64), np.array([n]), bs, extended=True if kind < 4
                                                      else pages.CODES_DELTA if walk else pages.CODES)
        pad = int(rng.integers(0, 5))  # (random bytes between blobs: a blob's last word is read past its end)
        parts += [rng.integers(0, 256, pad, dtype=np.uint8), region]
        boff.append(at + pad)
        blen.append(len(region))
        at += pad + len(region)
        count.append(n)
        if kind < 4:
            dstart.append(0)
            dlen.append(0)
            want.append(x)
    dcat = np.concatenate(dicts).astype(np.int64) if dicts else np.zeros(0, np.int64)
    return (np.concatenate(parts), np.array(boff), np.array(blen), np.array(count), bs, dcat, np.array(dstart),
            np.array(dlen), np.concatenate(want))


def both_decoders(monkeypatch, *args, **kw):
    """``pages.decode_blobs`` with the C decoder and with NumPy's: (values or the error) of each
    (given ``out``, each to a copy of it: the one would overwrite the other's values)."""
    got = []
    for use_c in (True, False):
        if not use_c:
            monkeypatch.setattr(native, "_decode", None)
        try:
            got.append(pages.decode_blobs(*args, **{**kw, **({"out": kw["out"].copy()} if "out" in kw else {})}))
        except CorruptionError as e:
            got.append(e)
        monkeypatch.undo()
    return got


def test_decode_blobs_c_equals_numpy_on_blobs_and_on_every_corruption(monkeypatch, decoder):
    """``pages.decode_blobs`` (the tier's column decode, DESIGN §5: one pass from a blob's bytes to
    its values) gives the values on blobs of every kind, with and without their dictionaries; and
    on blobs with flipped bytes, cut short, or with codes past their dictionary, C and NumPy agree:
    the same values, or both a ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    for seed in range(4):
        check_decode_blobs_agree(monkeypatch, np.random.default_rng(seed), 120)


def tabled_set(rng, stripes: int = 40):
    """Stripes of ids replayed from a segment dictionary, stored as stripe tables do (DESIGN §1):
    ``(buf, boff, blen, count, seg_dict, tables, want)``: each stripe's blob holds codes into its
    own table (DELTA-coded: the table lists the stripe's ids in their first order); a table is a
    blob of codes into the segment dictionary (a table of codes) or, one in four, of the ids
    themselves; every fifth stripe has none (its blob's codes index the segment dictionary) and
    every seventh shares the table of the stripe before it; ``tables`` as ``pages.decode_blobs``
    takes them, over a buffer of their own."""
    sd = np.unique(rng.integers(-(1 << 62), 1 << 62, 3000))
    blobs, tabs, tab, want, tdl = [], [], [], [], []
    for s in range(stripes):
        n = int(rng.choice([1, 7, 8, 9, 127, 128, 129, 300, 1000]))
        if s % 7 == 6 and tab and tab[-1] >= 0:  # (the table before: this stripe's ids among its entries)
            entries = tabs[-1][1]
            code = rng.integers(0, len(entries), n)
            want.append(sd[entries[code]] if tabs[-1][0] else entries[code])
            blobs.append(code)
            tab.append(tab[-1])
            continue
        ids = rng.integers(0, len(sd), max(n // 2, 1))[np.minimum(np.cumsum(rng.random(n) < 0.5), max(n // 2, 1) - 1)]
        if s % 5 == 4:  # codes straight into the segment dictionary
            blobs.append(ids)
            tab.append(-1)
            want.append(sd[ids])
            continue
        first, code = np.unique(ids, return_index=True, return_inverse=True)[1:]
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        entries = ids[np.sort(first)]
        coded = s % 4 != 3
        tabs.append((coded, entries if coded else sd[entries]))
        tab.append(len(tabs) - 1)
        blobs.append(rank[code.reshape(-1)])
        want.append(sd[entries[rank[code.reshape(-1)]]])
    count = np.array([len(b) for b in blobs])
    buf, boff, blen, _ = pages.encode_stripes(np.concatenate(blobs).astype(np.int64), count, 128, extended=pages.CODES_DELTA)
    tcnt = np.array([len(e) for _, e in tabs])
    tbuf, toff, tlen, _ = pages.encode_stripes(np.concatenate([e for _, e in tabs]).astype(np.int64), tcnt, 128,
                                               extended=pages.CODES)
    coded = np.array([c for c, _ in tabs])
    tables = (np.array(tab), tbuf, toff, tlen, tcnt, np.zeros(len(tabs), np.int64), np.where(coded, len(sd), 0))
    return buf, boff, blen, count, sd, tables, np.concatenate(want)


def test_decode_blobs_with_tables_c_equals_numpy(monkeypatch, decoder):
    """Blobs whose codes index stripe tables decoded just before them (``tables``: the C decoder's
    ``gm_decode_blobs`` with tables, no table written out; NumPy's, the tables first, then the blobs): tables of
    codes into the segment dictionary and of values, tables shared by consecutive blobs, blobs with
    none, each to a caller's place; C and NumPy give the stripes' values, and on flipped bytes of
    the blobs or of the tables, a table cut short or one entry short, the same values or both a
    ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        buf, boff, blen, count, sd, tables, want = tabled_set(rng)
        dlen = np.where(tables[0] < 0, len(sd), 0)
        args = (buf, boff, blen, count, 128, sd, np.zeros(len(count), np.int64), dlen)
        a, b = both_decoders(monkeypatch, *args, tables=tables)
        assert a.tolist() == b.tolist() == want.tolist()
        order = rng.permutation(len(count))
        dst = np.empty(len(count), np.int64)
        dst[order] = np.cumsum(count[order] + 2) - count[order]
        for got in both_decoders(monkeypatch, *args, tables=tables, out=np.full(int((count + 2).sum()), -7, np.int64),
                                 dst=dst):
            assert got[ranges(dst, count)].tolist() == want.tolist() and (got == -7).sum() == 2 * len(count)
        raised = 0
        for t in range(60):
            bb, tb, tl, tc = buf.copy(), tables[1].copy(), tables[3].copy(), tables[4].copy()
            if t % 6 == 0:
                tl[rng.integers(len(tl))] -= int(rng.integers(1, 5))  # a table cut short
            elif t % 6 == 1:
                tc[rng.integers(len(tc))] -= 1  # a table one entry short of its blob
            else:
                for at in rng.integers(0, len(bb) if t % 2 else len(tb), int(rng.integers(1, 4))):
                    (bb if t % 2 else tb)[at] ^= np.uint8(1 << int(rng.integers(8)))
            bad = (tables[0], tb, tables[2], np.maximum(tl, 0), np.maximum(tc, 1), *tables[5:])
            a, b = both_decoders(monkeypatch, bb, *args[1:], tables=bad, where="fuzz")
            if isinstance(a, CorruptionError) or isinstance(b, CorruptionError):
                assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError), (seed, t, a, b)
                raised += 1
            else:
                assert a.tolist() == b.tolist(), (seed, t)
        assert raised > 15
    for use_c in (True, False):
        with monkeypatch.context() as m:
            if not use_c:
                m.setattr(native, "_decode", None)
            with pytest.raises(ValueError):  # (a blob naming a table that is not there)
                pages.decode_blobs(*args, tables=(np.full(len(count), len(tables[4])), *tables[1:]))
            with pytest.raises(ValueError):  # (tables of codes without the dictionaries they index)
                pages.decode_blobs(buf, boff, blen, count, 128, tables=tables)


def test_tagged_bare_levels_blobs_in_place(monkeypatch, decoder):
    """A BARE LEVELS blob whose tag is in the index (a short history's one block) is decoded in place
    by the C decoder (``gm_one_blob``: no copy, no parse), as the blob path decodes it after its tag:
    values and codes into a dictionary (one entry short of the largest: a ``CorruptionError``), and
    on flipped bits and cut lengths the same values as NumPy's or both a ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    rng = np.random.default_rng(17)
    raised = checked = 0
    for wide, m in ((False, 4), (True, 4), (False, 12)):  # (12 kinds: tails of 2 and 3 bits)
        kinds = rng.integers(1 << 40, 1 << 50, m) if wide else np.arange(m)
        sc = rng.integers(5, 129, 200)
        p = 0.5 ** np.arange(m)
        v = kinds[rng.choice(m, int(sc.sum()), p=p / p.sum())]
        region, off, nb, e, head, _ = pages.encode_column_parts(v, sc, 128)
        tags = codec.enc_tags(e)
        if wide:  # (codes keep their tag in their blob: moved to the index here, as move_tags moves values')
            assert ((e & codec.ENC_DICT) != 0).all() and (tags < 0).all()
            tags, off, nb = region[off].astype(np.int64), off + 1, nb - 1
        bare = np.flatnonzero((tags >= 0) & pages.is_bare(np.maximum(tags, 0)))
        assert len(bare) > 150 and (m == 4 or len(np.unique((tags[bare] - 112) & 3)) == 3)
        d = pages.decode_dictionary(region[:head], 128) if wide else None
        first = np.cumsum(sc) - sc
        for t, k in enumerate(bare[:120].tolist()):
            one = dict(tags=tags[k : k + 1]) | ({} if d is None else dict(dicts=d, dstart=[0], dlen=[len(d)]))
            a, b = both_decoders(monkeypatch, region, off[k : k + 1], nb[k : k + 1], sc[k : k + 1], 128, **one)
            assert a.tolist() == b.tolist() == v[first[k] : first[k] + sc[k]].tolist()
            if wide:  # (a dictionary one entry short of the stripe's largest code)
                x = pages.decode_blobs(region, off[k : k + 1], nb[k : k + 1], sc[k : k + 1], 128, tags=tags[k : k + 1])
                a, b = both_decoders(monkeypatch, region, off[k : k + 1], nb[k : k + 1], sc[k : k + 1], 128,
                                     **one | dict(dlen=[int(x.max())]))
                assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError) or x.max() == 0, (a, b)
            bad, ln = region.copy(), nb[k : k + 1].copy()
            if t % 4 == 0:
                ln -= int(rng.integers(1, 3))
            else:
                for at in rng.integers(off[k], off[k] + nb[k], int(rng.integers(1, 4))).tolist():
                    bad[at] ^= np.uint8(1 << int(rng.integers(8)))
            a, b = both_decoders(monkeypatch, bad, off[k : k + 1], np.maximum(ln, 0), sc[k : k + 1], 128, **one)
            checked += 1
            if isinstance(a, CorruptionError) or isinstance(b, CorruptionError):
                assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError), (wide, t, a, b)
                raised += 1
            else:
                assert a.tolist() == b.tolist(), (wide, t)
    assert raised > checked // 10


def test_constant_stripes_among_blobs(monkeypatch, decoder):
    """``tags[s] == pages.CONST_TAG``: no blob ``s``, but ``count[s]`` copies of the value ``boff[s]``
    (a plan's constant stripes among its blobs), with blobs of codes and of values around them, to a
    caller's places: C and NumPy give the same values."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    rng = np.random.default_rng(12)
    buf, boff, blen, count, bs, dicts, dstart, dlen, want = blob_set(rng)
    c = rng.random(len(count)) < 0.3
    c[0] = c[-1] = True
    v = rng.integers(-(2**63), 2**63 - 1, len(count))
    parts = np.split(want, np.cumsum(count)[:-1])
    expect = np.concatenate([np.full(n, x) if k else p for p, n, x, k in zip(parts, count, v, c)])
    order = rng.permutation(len(count))
    dst = np.empty(len(count), np.int64)
    dst[order] = np.cumsum(count[order]) - count[order]
    args = (buf, np.where(c, v, boff), blen, count, bs, dicts, dstart, dlen)
    tags = np.where(c, pages.CONST_TAG, -1)
    a, b = both_decoders(monkeypatch, *args, tags=tags)
    assert a.tolist() == b.tolist() == expect.tolist()
    for x in both_decoders(monkeypatch, *args, tags=tags, out=np.full(int(count.sum()), -7, np.int64), dst=dst):
        assert x[ranges(dst, count)].tolist() == expect.tolist()


def test_decode_blobs_checks_every_position_before_writing(decoder):
    """``native.decode_blobs`` (``gm_decode_blobs``) checks every position it is given in C, before
    it writes anything: an output place, a dictionary's range, a table's index or its dictionary's
    range outside its array, even at the last blob alone, is a ``ValueError`` that names it, and the
    caller's array is untouched."""
    if decoder != "native":
        pytest.skip("about the C decoder's argument checks: runs once, with the C decoder")
    rng = np.random.default_rng(5)
    buf, boff, blen, count, sd, tables, want = tabled_set(rng)
    S, T = len(count), len(tables[4])
    dstart, dlen = np.zeros(S, np.int64), np.where(tables[0] < 0, len(sd), 0)
    dst = np.cumsum(count) - count

    def run(dst=dst, dstart=dstart, dlen=dlen, tables=tables, dicts=sd):
        out = np.full(int(count.sum()) + 4, -7, np.int64)
        try:
            return native.decode_blobs(buf, boff, blen, count, dst, 128, out, dicts, dstart, dlen, None, tables)
        finally:
            run.out = out

    assert run()[0] == 0 and run.out[:-4].tolist() == want.tolist()
    last = S - 1
    plain = int(np.flatnonzero(tables[0] < 0)[-1])  # (the last blob whose dictionary is the segment's)
    cases = [("output positions outside", dict(dst=np.r_[dst[:-1], len(run.out) - count[-1] + 1])),
             ("output positions outside", dict(dst=np.r_[dst[:-1], -1])),
             ("a dictionary outside", dict(dlen=np.r_[dlen[:plain], len(sd) + 1, dlen[plain + 1:]])),
             ("a dictionary outside", dict(dstart=np.r_[dstart[:plain], 1, dstart[plain + 1:]])),
             ("a dictionary outside", dict(dlen=np.r_[dlen[:plain], -1, dlen[plain + 1:]])),
             ("each below T", dict(tables=(np.r_[tables[0][:last], T], *tables[1:]))),
             ("a table's dictionary outside", dict(tables=(*tables[:6], np.r_[tables[6][:-1], len(sd) + 1]))),
             ("a table's dictionary outside", dict(tables=(*tables[:6], np.r_[tables[6][:-1], -1]))),
             ("a table's dictionary outside", dict(dicts=None, dlen=None, dstart=None))]
    for what, kw in cases:
        with pytest.raises(ValueError, match=what):
            run(**kw)
        assert (run.out == -7).all(), what
    with pytest.raises(ValueError, match="int64"):  # (sizes and types: in Python, before the call)
        run(dst=dst[:-1])


def test_delta_codes_with_and_without_avx512(decoder):
    """DELTA blocks (a stripe table's codes, ``CODES_DELTA``: ids replayed, or first seen in order),
    their prefix sum in vectors with AVX-512 (``gm_prefix_x512``, then the lookups unchecked where
    the largest code is below the dictionary's size) and in the scalar chain, decode alike as
    values and as codes, in blocks of every length mod 8; a dictionary one entry short of the
    largest code is a ``CorruptionError`` both ways."""
    code = _CHILD + (
        "from gpumat.core.errors import CorruptionError\n"
        "rng = np.random.default_rng(5)\n"
        "h, bad, delta = hashlib.sha256(), 0, 0\n"
        "for n in (1000, 3001, 3007, 6000):\n"
        "    new = np.cumsum(rng.random(n) < 0.5)\n"
        "    for x in (np.where(rng.random(n) < 0.7, new, (rng.random(n) * new).astype(np.int64)),\n"
        "              np.cumsum(rng.integers(0, 3, n))):\n"
        "        r, off, nb, _ = pages.encode_stripes(x.astype(np.int64), np.array([n]), 128, extended=pages.CODES_DELTA)\n"
        "        tags = r[off[0] : off[0] + -(-n // 128)] & 0x7F\n"
        "        delta += int(((tags >= 67) & (tags <= 69)).sum() + ((tags >= 73) & (tags <= 74)).sum())\n"
        "        got = pages.decode_blobs(r, off, nb, [n], 128)\n"
        "        assert got.tolist() == x.tolist(), n\n"
        "        h.update(got.tobytes())\n"
        "        for D in (int(x.max()) + 1, int(x.max()) + 40):\n"
        "            d = rng.integers(-(1 << 62), 1 << 62, D)\n"
        "            got = pages.decode_blobs(r, off, nb, [n], 128, d, [0], [D])\n"
        "            assert got.tolist() == d[x].tolist(), (D, n)\n"
        "            h.update(got.tobytes())\n"
        "        try:\n"
        "            pages.decode_blobs(r, off, nb, [n], 128, d, [0], [int(x.max())])\n"
        "        except CorruptionError:\n"
        "            bad += 1\n"
        "assert delta > 40, delta\n"
        "print(bad, delta, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 7)


def replayed_codes(rng, n: int, longest: int = 40, repeat: float = 0.15) -> np.ndarray:
    """``n`` codes of a stripe's ids into its table in their first order, as a user's replays make
    them: new ids (the next codes), replays of a stretch of earlier ones (codes stepping by one),
    an id repeated (codes stepping by none; a share ``repeat`` of the runs), in runs of 1 to
    ``longest``."""
    x, top = [], 0
    while len(x) < n:
        k, what = int(rng.integers(1, longest + 1)), rng.random()
        if what < 0.3 * (1 - repeat) or not top:
            x += range(top, top + k)
            top += k
        elif what < 1 - repeat:
            a = int(rng.integers(0, top))
            x += range(a, min(a + k, top))
        else:
            x += [int(rng.integers(0, top))] * k
    return np.array(x[:n], np.int64)


def runs_blob(cnt: int, pos: list, xs: list, w2: int, base: int = 3, sparse: bool = True) -> np.ndarray:
    """A blob of one DELTA SIGNED block of codes on a line of step 1 with no low bits, built by hand
    (host/pages.py's layout: tag, fields, payload): exceptions at positions ``pos`` (as given: out of
    order or past the block where a test wants them so), stored as ``xs`` of ``w2`` bits; its
    positions a sparse bitmap's or a bitmap."""
    def leb(v):
        out = []
        while True:
            out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
            v >>= 7
            if not v:
                return out

    fields = leb(2 * base) + leb(2) + leb(0) + leb(w2) + leb(len(pos))  # (zigzag(base), zigzag(1), w, w2, e)
    pb = int(cnt - 1).bit_length()
    bits = [(p >> i) & 1 for p in pos for i in range(pb)] if sparse else [int(i in pos) for i in range(cnt)]
    bits += [(x >> i) & 1 for x in xs for i in range(w2)]
    bits += [0] * (-len(bits) % 8)
    pay = [sum(bits[8 * k + i] << i for i in range(8)) for k in range(len(bits) // 8)]
    return np.array([pages.TAG_LFOR | (74 if sparse else 69)] + fields + pay, np.uint8)


def test_runs_of_codes_with_and_without_avx512(decoder):
    """DELTA PATCH / DELTA SIGNED blocks of codes with no low bits on a line of step 1 (a stripe's
    replayed ids, ``replayed_codes``: ``gm_runs`` copies each run between two exceptions from the
    dictionary instead of summing and looking up code by code; with AVX-512 16 entries at a time,
    past the run where the block and the entries readable allow): every run length, each bitmap
    form (a stripe's runs long, short, mostly repeats), through a stripe table decoded in the cache
    (``tables``), an int64 dictionary and the narrowed uint16 / uint32 copies of a kept one, give
    NumPy's values with the C decoder's AVX-512 paths and without (child processes), nothing
    written past a blob; a dictionary one entry short of the largest code is a
    ``CorruptionError`` on all three, and so is a table one entry short; on flipped bits, and on
    blocks built with positions equal, out of order or past the block, all three give the same
    values or a ``CorruptionError``."""
    import inspect

    code = _CHILD + _CHILD_BOTH + inspect.getsource(replayed_codes) + inspect.getsource(runs_blob) + (
        "from gpumat.host.ranges import ranges\n"
        "rng = np.random.default_rng(11)\n"
        "h, runs, bad, fuzz = hashlib.sha256(), 0, 0, 0\n"
        "for n in (1, 15, 16, 17, 100, 128, 129, 700, 3000):\n"
        "    x = np.concatenate([replayed_codes(rng, n, *shape) for shape in ((40, 0.15), (10, 0.0), (30, 0.9))])\n"
        "    cnt = np.full(3, n, np.int64)\n"
        "    r, off, nb, _ = pages.encode_stripes(x, cnt, 128, extended=pages.CODES_DELTA)\n"
        "    for s in range(3):\n"
        "        t = r[off[s] : off[s] + -(-n // 128)]\n"
        "        runs += int(np.isin(t & 0x7F, (68, 69, 73, 74)).sum())\n"
        "    D = int(x.max()) + 1\n"
        "    for lo, span in ((-(1 << 62), 1 << 62), (5, 1 << 15), (-(1 << 40), 1 << 31)):\n"
        "        d = rng.integers(lo, lo + span, max(D, 1 << 15))\n"
        "        d.setflags(write=False)\n"
        "        for _ in range(2):  # (a kept dictionary: narrowed at its second use)\n"
        "            assert both(r, off, nb, cnt, 128, d, np.zeros(3, np.int64), np.full(3, D)) == d[x].tolist()\n"
        "        if D > 1:  # (n 1: one code, 0; a dictionary of none is none)\n"
        "            bad += both(r, off, nb, cnt, 128, d, np.zeros(3, np.int64), np.full(3, D - 1)) == 'bad'\n"
        "    vals = rng.integers(-(1 << 62), 1 << 62, 3 * D)\n"
        "    tbuf, toff, tlen, _ = pages.encode_stripes(vals, np.full(3, D, np.int64), 128)\n"
        "    for tc in (D, D - 1):\n"
        "        tables = (np.arange(3), tbuf, toff, tlen, np.full(3, tc, np.int64), np.zeros(3, np.int64), np.zeros(3, np.int64))\n"
        "        got = both(r, off, nb, cnt, 128, tables=tables)\n"
        "        if tc == D:\n"
        "            assert got == np.concatenate([vals[D * s + x[n * s : n * (s + 1)]] for s in range(3)]).tolist()\n"
        "            dst = np.array([2 * (n + 16), n + 16, 0])  # (in reverse, 16 apart: nothing written past a blob)\n"
        "            o = pages.decode_blobs(r, off, nb, cnt, 128, tables=tables, out=np.full(3 * (n + 16), -7, np.int64), dst=dst)\n"
        "            assert (o == -7).sum() == 48 and o[ranges(dst, cnt)].tolist() == got\n"
        "            for f in range(40):  # (flipped bits: positions out of order or past the block, other steps)\n"
        "                rb = r.copy()\n"
        "                for at in rng.integers(0, len(rb), int(rng.integers(1, 4))):\n"
        "                    rb[at] ^= np.uint8(1 << int(rng.integers(8)))\n"
        "                fuzz += both(rb, off, nb, cnt, 128, tables=tables) == 'bad'\n"
        "        else:\n"
        "            bad += got == 'bad'\n"
        "d = np.arange(1000) * 7 + 11  # (blocks built by hand: positions at 0, past, equal, out of order)\n"
        "for cnt, pos, xs, ok in ((100, [10, 20, 99], [1, 3, 0], 1), (100, [0, 5], [1, 1], 1), (1, [0], [2], 1),\n"
        "                         (100, [10, 20, 20], [1, 1, 1], 0), (100, [10, 5], [1, 1], 0), (100, [10, 100], [1, 1], 0)):\n"
        "    for sparse in (True, False) if ok else (True,):\n"
        "        blob = runs_blob(cnt, pos, xs, 3, sparse=sparse)\n"
        "        got = both(blob, [0], [len(blob)], [cnt], 128, d, [0], [1000])\n"
        "        assert (got != 'bad') == bool(ok), (cnt, pos)\n"
        "assert bad == 3 * 8 + 9 and fuzz > 100, (bad, fuzz)\n"
        "print(runs, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 60)


def test_plain_codes_looked_up_as_unpacked_with_and_without_avx512(decoder):
    """FOR blocks of codes (widths 1 to 20, blocks of every length mod 16, codes from a base past 0)
    into a dictionary of 64-bit entries and into the narrowed 16 / 32-bit copies of a kept one: with
    AVX-512 each 16 codes are looked up as they are unpacked (``gm_plain_dict*_x512``), without it
    unpacked, then looked up; both give NumPy's values, and with the dictionary one entry short of
    the largest code, or short of the codes' base, a ``CorruptionError`` (child processes: the
    choice is made once per process)."""
    code = _CHILD + _CHILD_BOTH + (
        "rng = np.random.default_rng(12)\n"
        "h, bad, plain = hashlib.sha256(), 0, 0\n"
        "for w in (1, 2, 5, 8, 12, 13, 17, 20):  # (a dictionary past the codes: 2^w entries)\n"
        "    cnt = np.array([1, 7, 15, 16, 17, 100, 128, 300], np.int64)\n"
        "    base = int(rng.integers(1, 50))  # (a dictionary of base entries: one at least)\n"
        "    x = base + rng.integers(0, 1 << w, int(cnt.sum()))\n"
        "    r, off, nb, _ = pages.encode_stripes(x, cnt, 128, extended=False)\n"
        "    plain += int(sum(((r[o : o + -(-c // 128)] & 0x7F) <= 64).sum() for o, c in zip(off, cnt)))\n"
        "    S, D = len(cnt), int(x.max()) + 1\n"
        "    for lo, span in ((-(1 << 62), 1 << 62), (5, 1 << 15), (-(1 << 40), 1 << 31)):  # (64, 16, 32-bit entries)\n"
        "        d = rng.integers(lo, lo + span, max(D + 5, 1 << 15))\n"
        "        d.setflags(write=False)\n"
        "        for dl in (D + 5, D, D):  # (a kept dictionary: narrowed at its second use)\n"
        "            assert both(r, off, nb, cnt, 128, d, np.zeros(S, np.int64), np.full(S, dl)) == d[x].tolist()\n"
        "        for dl in (D - 1, base):\n"
        "            bad += both(r, off, nb, cnt, 128, d, np.zeros(S, np.int64), np.full(S, dl)) == 'bad'\n"
        "assert bad == 48, bad\n"
        "print(plain, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 60)


def test_classes_codes_past_their_dictionary_by_one(monkeypatch, decoder):
    """CLASSES blocks of dictionary codes: the tail class's range reaches past the dictionary, the
    codes do not. The C decoder then looks them up unchecked, from the largest code of the highest
    class; C and NumPy decode them alike, and with the dictionary cut to the largest code (one code
    past it) both raise ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    rng = np.random.default_rng(8)
    p = 1 / np.arange(1, 3001) ** 1.2
    x = rng.choice(3000, 40 * 128, p=p / p.sum())
    region, off, nbytes, _ = pages.encode_stripes(x.astype(np.int64), np.array([len(x)]), 128, extended=pages.CODES)
    assert pages.is_classes(region[off[0] : off[0] + 40]).mean() > 0.5
    d = np.unique(rng.integers(-(10**15), 10**15, 4000))[: int(x.max()) + 1]
    args = (region, off, nbytes, np.array([len(x)]), 128, d, np.array([0]))
    a, b = both_decoders(monkeypatch, *args, np.array([len(d)]))
    assert a.tolist() == b.tolist() == d[x].tolist()
    a, b = both_decoders(monkeypatch, *args, np.array([len(d) - 1]), where="cut")
    assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError) and "dictionary" in str(a), (a, b)


def test_short_classes_codes_with_and_without_avx512(decoder):
    """Stripes of 5 to 128 codes into a segment dictionary of 4 to 300 wide ids, each one CLASSES or
    BARE LEVELS block (``gm_classes_x512`` touches only the vectors that hold a block's values): each decodes to
    its events with AVX-512 and without, and with the dictionary cut to the stripe's largest code
    (one entry short) each is a ``CorruptionError`` both ways, wherever in the block that code lies
    (the largest that proves the lookups unchecked is taken over every vector that holds values)."""
    code = _CHILD + (
        "from gpumat.core.errors import CorruptionError\n"
        "from gpumat.host import codec\n"
        "rng = np.random.default_rng(4)\n"
        "h, bad, checked, cls, bare = hashlib.sha256(), 0, 0, 0, 0\n"
        "for kinds, a in ((4, 1.0), (30, 2.0), (300, 1.5)):\n"
        "    ids, p = rng.integers(1 << 40, 1 << 50, kinds), 1 / np.arange(1, kinds + 1) ** a\n"
        "    sc = rng.integers(5, 129, 300)\n"
        "    v = ids[rng.choice(kinds, int(sc.sum()), p=p / p.sum())]\n"
        "    region, off, nb, e, head, _ = pages.encode_column_parts(v, sc, 128)\n"
        "    tags, d, first = codec.enc_tags(e), pages.decode_dictionary(region[:head], 128), np.cumsum(sc) - sc\n"
        "    t = np.where(tags >= 0, tags, region[off])\n"
        "    cls, bare = cls + int(pages.is_classes(t).sum()), bare + int(pages.is_bare(t).sum())\n"
        "    for k in range(len(sc)):\n"
        "        one = (region, off[k : k + 1], nb[k : k + 1], sc[k : k + 1], 128)\n"
        "        x = pages.decode_blobs(*one, tags=tags[k : k + 1])\n"
        "        got = pages.decode_blobs(*one, d, [0], [len(d)], tags=tags[k : k + 1])\n"
        "        assert got.tolist() == v[first[k] : first[k] + sc[k]].tolist() == d[x].tolist(), (kinds, k)\n"
        "        h.update(got.tobytes())\n"
        "        if x.max() > 0:\n"
        "            checked += 1\n"
        "            try:\n"
        "                pages.decode_blobs(*one, d, [0], [int(x.max())], tags=tags[k : k + 1])\n"
        "            except CorruptionError:\n"
        "                bad += 1\n"
        "assert bad == checked and cls > 400 and bare > 200, (bad, checked, cls, bare)\n"
        "print(bad, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 800)


def test_small_dictionaries_with_and_without_avx512(decoder):
    """Codes into dictionaries of 1..17 entries (the AVX-512 lookups take those of at most 16 a permute,
    ``gm_finish_x512``), in blocks of every length mod 8, of codes proven below the dictionary's size
    and not, decode to their entries with AVX-512 and without (``GPUMAT_NO_AVX512=1``), alike; a
    dictionary one entry short of its codes is a ``CorruptionError`` both ways (child processes: the
    choice is made once per process)."""
    code = _CHILD + (
        "from gpumat.core.errors import CorruptionError\n"
        "rng = np.random.default_rng(21)\n"
        "h, bad = hashlib.sha256(), 0\n"
        "for D in range(1, 18):\n"
        "    d = rng.integers(-(1 << 62), 1 << 62, D)\n"
        "    for n in (1, 7, 8, 9, 63, 128, 129, 300, 1000 + D):\n"
        "        for x in (rng.integers(0, D, n), np.repeat(rng.integers(0, D, n // 5 + 1), 5)[:n], np.full(n, D - 1)):\n"
        "            r, off, nb, _ = pages.encode_stripes(x.astype(np.int64), np.array([n]), 128, extended=pages.CODES)\n"
        "            got = pages.decode_blobs(r, off, nb, [n], 128, d, [0], [D])\n"
        "            assert got.tolist() == d[x].tolist(), (D, n)\n"
        "            h.update(got.tobytes())\n"
        "            if x.max() > 0:\n"
        "                try:\n"
        "                    pages.decode_blobs(r, off, nb, [n], 128, d, [0], [int(x.max())])\n"
        "                except CorruptionError:\n"
        "                    bad += 1\n"
        "print(bad, h.hexdigest())\n")
    with_and_without_avx512(decoder, code, 300)


def test_narrowed_dictionaries_decode_alike(monkeypatch, decoder):
    """A large read-only dictionary is looked up in a narrow copy (``native.narrowed``: uint16 where
    its entries span less than 2^16, uint32 less than 2^32) from its second use on, through any view
    of the whole array; codes in FOR, DELTA and CLASSES blocks decode to the same values as NumPy's
    at every use, and a code past the dictionary is still a ``CorruptionError``. A part of an array,
    a writable one, and a small one are looked up as they are."""
    if decoder != "native":
        pytest.skip("about the C decoder's lookups: runs once, with the C codec")
    rng = np.random.default_rng(12)
    D = native.NARROW_MIN_ENTRIES + 77
    p = 1 / np.arange(1, D + 1) ** 1.1
    for lo, span, dt in ((-5, 1 << 16, np.uint16), (-(10**12), 1 << 32, np.uint32), (I64.min, 1 << 63, np.int64)):
        d = lo + rng.integers(0, span, D, dtype=np.int64)
        d[rng.integers(D)], d[rng.integers(D)] = lo, lo + span - 1  # (its least and its most)
        d.flags.writeable = False
        for codes in (pages.CODES, pages.CODES_DELTA):
            x = np.concatenate([rng.integers(0, D, 3000), rng.choice(D, 3000, p=p / p.sum()),
                                np.cumsum(rng.integers(-2, 4, 2000)) % D, [D - 1]])
            region, off, nbytes, _ = pages.encode_stripes(x.astype(np.int64), np.array([len(x)]), 128, extended=codes)
            args = (region, off, nbytes, np.array([len(x)]), 128)
            for use in range(3):  # (the first use remembers it; the second copies it)
                a, b = both_decoders(monkeypatch, *args, d[:], np.array([0]), np.array([D]))
                assert a.tolist() == b.tolist() == d[x].tolist(), (dt, codes, use)
            tab, at = native.narrowed(d.reshape(-1))
            assert tab.dtype == dt and (at == (lo & ((1 << 64) - 1)) if dt != np.int64 else at == 0)
            a, b = both_decoders(monkeypatch, *args, d, np.array([0]), np.array([D - 1]), where="cut")
            assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError) and "dictionary" in str(a)
        part = d[1:]  # (a part of an array: its own entries, never narrowed)
        for use in range(2):
            assert native.narrowed(part)[0].dtype == np.int64 and native.narrowed(d.copy())[0].dtype == np.int64
        x = rng.integers(0, D - 1, 500)
        region, off, nbytes, _ = pages.encode_stripes(x, np.array([len(x)]), 128, extended=pages.CODES)
        a, b = both_decoders(monkeypatch, region, off, nbytes, np.array([len(x)]), 128, part, np.array([0]), np.array([D - 1]))
        assert a.tolist() == b.tolist() == part[x].tolist()
    import gc
    import weakref

    wide = np.arange(D, dtype=np.int64) << 40  # (a table that stays wide is not kept alive by the memo)
    wide.flags.writeable = False
    for use in range(3):
        assert native.narrowed(wide[:])[0].dtype == np.int64
    gone = weakref.ref(wide)
    del wide
    gc.collect()
    assert gone() is None
    small = np.arange(100, dtype=np.int64)
    small.flags.writeable = False
    assert native.narrowed(small)[0] is small and native.narrowed(small)[0] is small


def check_decode_blobs_agree(monkeypatch, rng, tries: int) -> None:
    buf, boff, blen, count, bs, dicts, dstart, dlen, want = blob_set(rng)
    a, b = both_decoders(monkeypatch, buf, boff, blen, count, bs, dicts, dstart, dlen)
    assert a.tolist() == want.tolist() and b.tolist() == want.tolist()
    # each blob to a caller's array, in another order, between untouched values
    order = rng.permutation(len(count))
    dst = np.empty(len(count), np.int64)
    dst[order] = np.cumsum(count[order] + 3) - count[order]
    for got in both_decoders(monkeypatch, buf, boff, blen, count, bs, dicts, dstart, dlen,
                             out=np.full(int((count + 3).sum()), -7, np.int64), dst=dst):
        keep = np.ones(len(got), bool)
        keep[ranges(dst, count)] = False
        assert got[ranges(dst, count)].tolist() == want.tolist() and (got[keep] == -7).all()
    with pytest.raises(ValueError):
        pages.decode_blobs(buf, boff, blen, count, bs, dicts, dstart, dlen, out=np.zeros(int(count.sum()) - 1, np.int64),
                           dst=np.cumsum(count) - count)
    raised = 0
    for t in range(tries):
        bad, bl, dl = buf.copy(), blen.copy(), dlen.copy()
        if t % 10 == 0:
            bl[rng.integers(len(bl))] -= int(rng.integers(1, 9))  # a blob cut short
        elif t % 10 == 1 and (dl > 0).any():
            dl[np.flatnonzero(dl > 0)[0]] = 1  # a dictionary smaller than its codes
        else:
            for at in rng.integers(0, len(bad), int(rng.integers(1, 4))):
                bad[at] ^= np.uint8(1 << int(rng.integers(8)))
        a, b = both_decoders(monkeypatch, bad, boff, np.maximum(bl, 0), count, bs, dicts, dstart, dl, where="fuzz")
        if isinstance(a, CorruptionError) or isinstance(b, CorruptionError):
            assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError), (t, a, b)
            assert "fuzz: blob" in str(a) and "fuzz: blob" in str(b)
            assert str(a).split(":")[1] == str(b).split(":")[1], (t, a, b)  # (the same blob named)
            raised += 1
        else:
            assert a.tolist() == b.tolist(), t
    assert raised > tries // 8  # damage to tags, anchors, fields, lengths; a flipped payload bit is a checksum's to catch


def test_decode_stripes_decodes_whole_blobs_as_the_block_path_does(tmp_path, monkeypatch):
    """``decode_stripes`` (whole blobs, one pass each with the C decoder) equals the block read path
    (``read_blocks`` + ``decode_blocks``) on a tier with PATCH, RUN and DICT columns, in memory
    (decoded in place from the pooled regions, which reads leave as they were), by ranges, and one
    segment of each, in any stripe order; a flipped byte of a read blob is still caught."""
    rng = np.random.default_rng(3)
    n = 12000
    cols = aux_columns(rng, n)
    zipf = zipf_table(rng, [0], n)["item_id"].to_numpy()
    cols["item_id"] = zipf
    users = np.repeat(np.arange(6), [n - 500, 100, 100, 100, 100, 100])
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=128)
    t.append(pa.table({"user_id": users, **cols}))
    t.append(pa.table({"user_id": users[:300], **{c: v[:300] for c, v in cols.items()}}))
    small = int(Tier.open(t.uri)._reader._region_bytes().min())
    for full in (1 << 30, 0, small):  # every segment pooled (decoded in place), none, one of the two
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(t.uri)
        r, d = h._reader, h.directory()
        assert (r.seg_formats() == 3).all()
        r._small_pool()
        pool = r._pool3[0].copy()
        assert (r._pool3[1] >= 0).sum() == {1 << 30: 2, 0: 0, small: 1}[full]
        for c in SCHEMA:
            for si in (rng.permutation(len(d)), np.flatnonzero(r._pool3[1][d.seg] >= 0)):
                got = r.decode_stripes(c, si)
                b = h.read_blocks(c, si, np.zeros_like(si), d.nblocks[si])
                cnt, own = d.block_values(si, 128)
                assert got.tolist() == codec.decode_blocks(b[0], b[1], cnt, dicts=b.dicts)[own].tolist(), c
        assert (r._dir_cols["item_id"][2] & codec.ENC_DICT).any()
        assert np.array_equal(r._pool3[0], pool) and not r._pool3[0].flags.writeable  # reads leave it as read
    # a dictionary shorter than its codes (bytes that pass their checksums: a writer's bug) is
    # corruption to decode_stripes on either decoder; a batch's lookup clamps, by contract
    with monkeypatch.context() as m:
        shorten_dictionaries(m, 10)
        h = Tier.open(t.uri)
        with pytest.raises(CorruptionError, match="dictionary"):
            h._reader.decode_stripes("item_id", np.arange(len(h.directory())))
    t.compact()  # (one data file)
    assert_flips_caught(tmp_path / "t", list(range(6)), 12)


def test_staging_in_c_equals_numpy_on_bitmaps_and_signed_exceptions(monkeypatch, decoder):
    """``stage_blocks`` three ways: in C in one pass (``gm_stage_blocks``), in C piece by piece (what
    runs when that pass refuses a block: sparse bitmaps in ``gm_stage_bitmaps``, DELTA SIGNED
    exceptions unzigzagged in ``gm_unpack_exceptions``, LEVELS in ``gm_stage_levels``, aux words in
    ``gm_stage_aux``) and in NumPy: the same words on good blobs and on flipped payload bits, or all
    a ``CorruptionError`` (what a read stages; a tier's chunk checksums catch such flips first); every
    kind of block, some as dictionary codes."""
    if decoder != "native":
        pytest.skip("compares the C staging with NumPy's: runs once, with the C codec")
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)  # (short columns: extended blocks pay)
    rng = np.random.default_rng(11)

    def staged(blob, src, blk, codes):
        try:
            return [w.tolist() for w in pages.stage_blocks(blob, src, blk, codes)]
        except CorruptionError as e:
            return type(e)

    def three(blob, src, blk, codes):
        got = [staged(blob, src, blk, codes)]
        with monkeypatch.context() as m:
            m.setattr(native, "stage_blocks", lambda *a: None)  # (the one-pass C refuses: piece by piece)
            got.append(staged(blob, src, blk, codes))
            m.setattr(native, "_decode", None)
            got.append(staged(blob, src, blk, codes))
        return got

    seen = set()
    def levels_and_runs(rng, n):
        return {"levels": rng.choice(4, n, p=[0.7, 0.2, 0.05, 0.05]),
                "runs": np.repeat(rng.integers(0, 1 << 20, n), rng.choice([1, 40], n, p=[0.9, 0.1]))[:n]}  # (a dense RUN bitmap)

    for gen in (sparse_columns, gap_columns, flag_columns, delta_columns, pack_columns, aux_columns, radix_columns,
                levels_and_runs):
        for name, x in gen(rng, 1500).items():
            x = np.asarray(x, np.int64)
            region, _, _, _ = pages.encode_stripes(x, np.array([len(x)]), 128)
            nb, tags, fe, cnt = one_page(region, len(x))  # (12 blocks: one page, its fields after the tags, then its payload)
            if (pages.tag_kind(tags) == pages.KIND_PLAIN).all():
                continue
            blk = pages.parse_fields(region, np.array([nb]), fe, tags, cnt, np.zeros(nb, np.int64))
            bits = blk.bits()
            src = 8 * int(fe[0]) + np.cumsum(bits) - bits
            seen |= {(int(k), int(f)) for k, f in zip(blk.kind, blk.sp)}
            good = staged(region, src, blk, None)
            assert good is not CorruptionError and codec.decode_blocks(
                np.array(good[0]), np.array(good[1]), cnt).tolist() == x.tolist(), (gen.__name__, name)
            # as codes into a dictionary (any kind but RADIX): the aux word says so (or a DICT one is added)
            codes = (rng.random(nb) < 0.5) & (blk.kind != pages.KIND_RADIX)
            f = np.stack((blk.kind, blk.w, blk.nv, blk.w2, blk.e, blk.cnt, blk.sp, blk.mid, src, codes)).astype(np.int64)
            assert native.stage_blocks(region, f) is not None, (gen.__name__, name)  # (good blocks: the one pass takes them)
            for c in (None, codes):
                a = three(region, src, blk, c)
                assert a[0] == a[1] == a[2] and a[0] is not CorruptionError, (gen.__name__, name)
            for bit in rng.choice(np.arange(8 * int(fe[0]), 8 * len(region)), 60):
                bad = region.copy()
                bad[bit >> 3] ^= np.uint8(1 << (bit & 7))
                a = three(bad, src, blk, codes if bit & 1 else None)
                assert a[0] == a[1] == a[2], (gen.__name__, name, bit)
    assert {(pages.KIND_PATCH, pages.SP_POSITIONS), (pages.KIND_RUN, pages.SP_POSITIONS), (pages.KIND_RUN, pages.SP_GAPS),
            (pages.KIND_DELTA_SIGNED, pages.SP_POSITIONS), (pages.KIND_RADIX, 0), (pages.KIND_PATCH, 0),
            (pages.KIND_RUN, 0), (pages.KIND_DELTA, 0)} <= seen, seen
    assert any(k == pages.KIND_LEVELS for k, _ in seen), seen


def test_parse_fields_in_c_equals_numpy(monkeypatch, decoder):
    """``parse_fields`` in C (the varints, then each block's kind, bitmap form and range checks) and
    in NumPy: the same blocks on good pages of every kind, and on pages with flipped field bits the
    same blocks or the same ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C parse with NumPy's: runs once, with the C codec")
    monkeypatch.setattr(pages, "EXT_MIN_BITS", 0)
    rng = np.random.default_rng(5)

    def parsed(region, nb, fe, tags, cnt):
        try:
            b = pages.parse_fields(region, np.array([nb]), fe, tags, cnt, np.zeros(nb, np.int64), "t")
            return [getattr(b, f).astype(np.int64).tolist() for f in pages.Blocks.FIELDS]
        except CorruptionError as e:  # (which: fields not the page's varints, or out of range)
            return "out of range" if "out of range" in str(e) else "not its varints"

    levels = lambda rng, n: {"levels": rng.choice(4, n, p=[0.7, 0.2, 0.05, 0.05])}  # noqa: E731
    errors = 0
    for gen in (sparse_columns, gap_columns, flag_columns, delta_columns, aux_columns, radix_columns, levels):
        for name, x in gen(rng, 700).items():
            x = np.asarray(x, np.int64)
            region, _, _, _ = pages.encode_stripes(x, np.array([len(x)]), 128)
            nb, tags, fe, cnt = one_page(region, len(x))
            for t in range(40 if int(fe[0]) > nb else 1):
                bad = region.copy()
                if t:  # (a flipped bit of the fields; some parse, out of range or not)
                    bit = int(rng.integers(8 * nb, 8 * int(fe[0])))
                    bad[bit >> 3] ^= np.uint8(1 << (bit & 7))
                a = parsed(bad, nb, fe, tags, cnt)
                with monkeypatch.context() as m:
                    m.setattr(native, "_decode", None)
                    assert parsed(bad, nb, fe, tags, cnt) == a, (gen.__name__, name, t)
                errors += a == "out of range"
    assert errors  # (the range checks were reached)


def test_fields_end_in_c_equals_numpy(monkeypatch, decoder):
    """``fields_end`` in C and in NumPy: the same ends, or both a ``CorruptionError``, on random bytes,
    starts (some negative or past the buffer), limits and counts."""
    if decoder != "native":
        pytest.skip("compares the C scan with NumPy's: runs once, with the C codec")
    rng = np.random.default_rng(2)

    def ends(buf, start, limit, nvar):
        try:
            return pages.fields_end(buf, start, limit, nvar, "t").tolist()
        except CorruptionError:
            return None

    for _ in range(400):
        buf = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8)
        k = int(rng.integers(1, 5))
        start = rng.integers(-3, len(buf) + 3, k)
        limit = rng.integers(0, len(buf) + 3, k)
        nvar = rng.integers(0, 6, k)
        a = ends(buf, start, limit, nvar)
        with monkeypatch.context() as m:
            m.setattr(native, "_decode", None)
            assert ends(buf, start, limit, nvar) == a, (buf.tolist(), start, limit, nvar)


def short_history_columns(rng, users: int, bs: int) -> pa.Table:
    """Short histories (1 .. ``bs + 3`` events: most one block, some two) of a timestamp, an id
    stored in a few repeated values, and an action of Taobao's mix (page view / cart / favourite /
    buy at 89.5 / 5.5 / 3 / 2%): plain, FLAG, LEVELS, PATCH and RUN blocks, some codes into a
    segment dictionary."""
    n = rng.integers(1, bs + 4, users)
    uid = np.repeat(np.arange(users), n)
    N = int(n.sum())
    ts = 600_000_000 + np.cumsum(rng.choice([0, 1, 60, 3600], N, p=[0.3, 0.3, 0.3, 0.1]))  # (before the batches' requests)
    item = np.where(rng.random(N) < 0.8, 1000, rng.integers(0, 1 << 40, N))
    action = rng.choice(4, N, p=[0.895, 0.055, 0.03, 0.02]).astype(np.int32)
    return pa.table({"user_id": uid, "ts": ts, "item_id": item, "action": action})


@pytest.mark.parametrize("bs", [8, 32, 128])
def test_tags_in_the_index_read_as_tags_in_the_blob(tmp_path, monkeypatch, bs, decoder):
    """A blob of one block that is not codes has its tag in its index ``enc`` (an index of form 2,
    its data file's entry ``"index": 2``), not its bytes: short histories read back the same by
    every path (whole histories with the C and the NumPy decoder; block windows in memory and by
    ranges; planned batches) as a tier written without (form 1, as releases before it wrote,
    which opens beside it and which compaction rewrites), in fewer stored bytes."""
    rng = np.random.default_rng(bs)
    users = 600 if decoder == "native" else 200  # (NumPy's reads: ~25 ms a history)
    table = short_history_columns(rng, users, bs)
    if bs < 128:  # (packs of 128 events: blobs of several blocks, which keep their tags)
        monkeypatch.setattr(writer, "PACK_BELOW", 0)
        monkeypatch.setattr(writer, "PACK_LARGE_BELOW", 0)
    monkeypatch.setattr(segment, "INDEX_FORM", 1)
    old = Tier.create(tmp_path / "old", SCHEMA, block_size=bs)
    old.append(table)
    monkeypatch.setattr(segment, "INDEX_FORM", 2)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=bs)
    t.append(table)
    assert [e.get("index") for e in t._reader.state.files.values()] == [2]
    assert [e.get("index") for e in old._reader.state.files.values()] == [None]
    d = t.directory()
    for c in SCHEMA:
        off, nb, enc = t._reader.blobs(c)
        tag = codec.enc_tags(enc)
        assert (tag[d.bcount > bs] < 0).all() and (tag[(enc & codec.ENC_DICT) != 0] < 0).all()
        assert (codec.enc_tags(old._reader.blobs(c)[2]) < 0).all()
    assert sum((codec.enc_tags(t._reader.blobs(c)[2]) >= 0).sum() for c in SCHEMA) > users // 6
    assert t.stats()["stored_bytes"] < old.stats()["stored_bytes"]
    whole = {u: old.read_history(u) for u in range(users)}
    for c_decoder in (True, False) if decoder == "native" else (False,):  # (the NumPy run: NumPy's already)
        with monkeypatch.context() as m:
            if not c_decoder:
                m.setattr(native, "_decode", None)
            fresh = Tier.open(t.uri)
            for u in range(users):
                got = fresh.read_history(u)
                assert all(got[c].tolist() == whole[u][c].tolist() for c in SCHEMA), u
    for full in (1 << 30, 0):
        monkeypatch.setattr(segment, "FULL_READ_BYTES", full)
        h = Tier.open(t.uri)
        check_windows(h, whole, rng, 200, bs)
        check_planned_batches(h, whole, rng, np.arange(users), 64, bs + 2, "reference")
    # the old tier, appended to and compacted: its form-1 file rewritten in form 2, the same histories
    old.append(short_history_columns(rng, 50, bs))
    assert sorted(e.get("index", 1) for e in old._reader.state.files.values()) == [1, 2]
    want = {u: old.read_history(u) for u in range(users)}
    old.compact()
    assert {e.get("index") for e in old._reader.state.files.values()} == {2}
    fresh = Tier.open(old.uri)
    assert all(fresh.read_history(u)["action"].tolist() == want[u]["action"].tolist() for u in range(users))


def test_a_bad_tag_in_an_index_is_corruption(tmp_path):
    """A tag in an index ``enc`` (form 2) that is no encoding (FLAG tags have no slope's bit; LEVELS
    tags with it are CLASSES or BARE LEVELS), on a blob of several blocks, or with
    bits past its byte is a ``CorruptionError`` when the segment is opened; so is a form-2 index
    whose data file's entry does not say so, and an entry ``index`` other than 2 or 3."""
    from gpumat.core.errors import CorruptionError as CE
    from gpumat.host import log
    from gpumat.host.store import LocalStore

    sc = np.array([5, 300])
    x = np.concatenate([np.arange(5) * 3, np.arange(300) % 7])
    good = pages.encode_column(x, sc, 128)
    assert codec.enc_tags(good[3]).tolist()[1] == -1 and codec.enc_tags(good[3])[0] >= 0
    store = LocalStore(str(tmp_path))
    e0, e1 = int(good[3][0]), int(good[3][1])
    sh = codec.ENC_TAG_SHIFT
    bad = [
        np.array([(e0 & ~(0xFF << sh)) | ((pages.TAG_FLAG | pages.TAG_LFOR) + 1) << sh, e1]),  # a FLAG tag with a slope
        np.array([(e0 & ~(0xFF << sh)) | (pages.TAG_FLAG_W2 | pages.TAG_LFOR) + 1 << sh, e1]),  # a FLAG one of w2, too
        np.array([e0, e1 | (3 << sh)]),                                                          # a blob of 3 blocks
        np.array([e0 | (1 << (sh + 8)), e1]),                                                    # past its byte
    ]
    for i, enc in enumerate([good[3]] + bad):
        bufs, size, crc, _ = segment.encode_segment3(["v"], np.array([0, 1]), np.array([0, 0]), sc, {"v": (good[0], good[1], good[2], enc)})
        with open(tmp_path / f"s{i}", "wb") as f:
            for b in bufs:
                f.write(memoryview(b).cast("B"))
        if i == 0:
            s = segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128)
            assert s.form == segment.INDEX_FORM
            got = pages.decode_blobs(good[0], s.off["v"], s.nwords["v"], sc, 128, tags=codec.enc_tags(s.enc["v"]))
            assert got.tolist() == x.tolist()
            continue
        with pytest.raises(CE, match="bad block tag in the index"):
            segment.open_segment(store, f"s{i}", 0, size, crc, ["v"], 128)
    e = {"path": log.DATA_DIR + "/x", "offset": 0, "size": 8, "index_crc": 0, "events": 1, "level": 0, "format": 3, "index": 2}
    assert log._check_entry(dict(e), "x") == e
    assert log._check_entry({**e, "index": 3}, "x")["index"] == 3
    for b in ({**e, "index": 1}, {**e, "index": 4}, {k: v for k, v in e.items() if k != "format"}):
        with pytest.raises(CE, match="bad data file entry"):
            log._check_entry(b, "x")
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    t.append(events(0, 100))
    for f in t._reader.state.files.values():
        f.pop("index")  # as if a release before form 2 had written it: the index says 2
    from gpumat.host.reader import VersionReader

    with pytest.raises(CE, match="index of form 2, its entry says 1"):
        VersionReader(t._reader.store, t._reader.state).directory()
    # a directory (as from a checkpoint's snapshot, which open_segment does not check) whose tag in
    # the index names a blob of several blocks: the block path refuses it, it reads no tag it lacks
    t2 = Tier.create(tmp_path / "t2", SCHEMA, block_size=8)
    t2.append(events(1, 300, users=3))
    r = t2._reader
    d = r.directory()
    several = np.flatnonzero(d.bblocks > 1)[:1]
    r._dir_cols["ts"][2][several] |= 3 << codec.ENC_TAG_SHIFT
    with pytest.raises(CE, match="several blocks with its tag in its index"):
        r.read_blocks("ts", several, np.zeros(1, np.int64), d.nblocks[several])


def test_tags_in_the_index_c_equals_numpy_on_every_corruption(monkeypatch, decoder):
    """``pages.decode_blobs`` given the tags of one-block blobs (``move_tags``: the blobs without
    their first byte): the values of every kind; on flipped bytes and tags, blobs cut short, C and
    NumPy agree, naming the same blob; a tag on a blob of several blocks is a ``CorruptionError``."""
    if decoder != "native":
        pytest.skip("compares the C decoder with NumPy's: runs once, with the C decoder")
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        buf, boff, blen, count, bs, dicts, dstart, dlen, want = blob_set(rng, short=True)
        one = (count <= bs) & (rng.random(len(count)) < 0.7)
        tags = np.where(one, buf[boff].astype(np.int64), -1)
        boff, blen = boff + one, blen - one  # (the tag byte left where it was: a byte between blobs)
        a, b = both_decoders(monkeypatch, buf, boff, blen, count, bs, dicts, dstart, dlen, tags=tags)
        assert a.tolist() == want.tolist() and b.tolist() == want.tolist()
        raised = 0
        for t in range(120):
            bad, bl, tg = buf.copy(), blen.copy(), tags.copy()
            if t % 10 == 0:
                bl[rng.integers(len(bl))] -= int(rng.integers(1, 3))
            elif t % 10 == 1 and one.any():
                tg[rng.choice(np.flatnonzero(one))] ^= 1 << int(rng.integers(8))
            else:
                for at in rng.integers(0, len(bad), int(rng.integers(1, 4))):
                    bad[at] ^= np.uint8(1 << int(rng.integers(8)))
            a, b = both_decoders(monkeypatch, bad, boff, np.maximum(bl, 0), count, bs, dicts, dstart, dlen,
                                 where="fuzz", tags=tg)
            if isinstance(a, CorruptionError) or isinstance(b, CorruptionError):
                assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError), (t, a, b)
                assert str(a).split(":")[1] == str(b).split(":")[1], (t, a, b)  # (the same blob named)
                raised += 1
            else:
                assert a.tolist() == b.tolist(), t
        assert raised > 12
    for L in (1 << 40, (1 << 63) - 5):  # a length past the buffer: refused before any copy, by both
        a, b = both_decoders(monkeypatch, np.zeros(16, np.uint8), [0], [L], [3], 4, tags=[3])
        assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError), (L, a, b)
    several = np.flatnonzero(count > bs)
    if len(several):
        tg = np.full(len(count), -1)
        tg[several[0]] = 1
        a, b = both_decoders(monkeypatch, buf, boff, blen, count, bs, dicts, dstart, dlen, tags=tg)
        assert isinstance(a, CorruptionError) and isinstance(b, CorruptionError)
