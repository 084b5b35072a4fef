"""decode_gather + gather_tail: Triton kernels vs their NumPy twin vs a plain-Python oracle of SPEC §2.

The staged batches are built here, by a tiny encoder written with Python integers (exact, no
wrapping surprises), from explicit user histories, so the expected output comes straight from
the contract (``S = history[:n] ++ tail``, keep the newest ``L``), independent of the tiling.

Runs under ``TRITON_INTERPRET=1`` on CPU (tests/conftest.py), natively on a GPU with
``GPUMAT_TEST_NATIVE=1``.
"""

import os
import sys

if os.environ.get("GPUMAT_TEST_NATIVE") != "1":  # before any kernel module is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpumat.core.errors import GpumatError
from gpumat.kernels.np_decode_gather import decode_values_np, materialize_staged_np
from gpumat.core.staged import StagedBatch, StagedColumn
from gpumat.kernels.triton_decode_gather import materialize_staged_triton, triton_available
from gpumat.host.pages import RADIX_G, RADIX_W, radix_log2_bits

DEVICE = "cuda" if os.environ.get("GPUMAT_TEST_NATIVE") == "1" else "cpu"
BS = 128
M64 = 1 << 64
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
SENTINEL = -0x5A5A5A5A5A5A5A5B  # poison: no test value equals it
SCHEMA = {"ts": "int64", "item": "int64", "act": "int32"}


# ----------------------------------------------------------------------------- a tiny encoder


def signed(u: int) -> int:
    u %= M64
    return u - M64 if u >= 1 << 63 else u


def pack_bits(residuals, w: int) -> list[int]:
    """Little-endian bit stream: value k occupies bits [k*w, (k+1)*w) (DESIGN §1)."""
    stream = 0
    for k, r in enumerate(residuals):
        assert 0 <= r < (1 << w) or (w == 0 and r == 0)
        stream |= r << (k * w)
    nwords = -(-len(residuals) * w // 64)
    return [(stream >> (64 * i)) & (M64 - 1) for i in range(nwords)]


def encode_block(x: list[int]):
    """(base, slope, w, residuals) with x[k] == base + slope*k + r[k]: FOR or LFOR, fewer bits wins."""
    best = None
    slopes = [0]
    if len(x) > 1:
        s = (x[-1] - x[0]) // (len(x) - 1)
        if I64_MIN <= s <= I64_MAX:
            slopes.append(s)
    for slope in slopes:
        base = min(v - slope * k for k, v in enumerate(x))
        r = [v - slope * k - base for k, v in enumerate(x)]
        w = max(r).bit_length()
        if w <= 64 and (best is None or w < best[2]):
            best = (signed(base), slope, w, r)
    return best


def encode_patch(x: list[int], rng, w1=None):
    """A PATCH block of x (DESIGN §4), or None: the FOR/LFOR line, low w1 bits of every residual,
    a bitmap of the residuals with more, and their (r >> w1) - 1 in w2 <= 31 bits."""
    base, slope, w, r = encode_block(x)
    if w == 0:
        return None
    w1 = int(rng.integers(0, w)) if w1 is None else w1
    hit = [int(v >> w1 != 0) for v in r]
    exc = [(v >> w1) - 1 for v in r if v >> w1]
    w2 = max(exc).bit_length() if exc else 0
    if not exc or w2 > 31:
        return None
    return ("patch", base, slope, w1, [v & ((1 << w1) - 1) for v in r], hit, w2, exc)


def encode_delta(x: list[int], rng, patch: bool = False):
    """A DELTA block of x (DESIGN §4), or None: the line ``x[0] + dmin k`` (dmin the smallest step, mod
    2^64), and each step's excess over dmin (0 at position 0) as FOR bits, or (``patch``) as PATCH low
    bits and exceptions; the decoders prefix-sum them."""
    steps = [(x[k] - x[k - 1]) % M64 for k in range(1, len(x))]
    dmin = min((signed(d) for d in steps), default=0)
    o = [0] + [(d - dmin) % M64 for d in steps]
    w = max(o).bit_length()
    if not patch:
        return ("delta", signed(x[0]), dmin, w, o, [0] * len(x), 0, [])
    if w == 0:
        return None
    w1 = int(rng.integers(0, w))
    hit = [int(v >> w1 != 0) for v in o]
    exc = [(v >> w1) - 1 for v in o if v >> w1]
    w2 = max(exc).bit_length() if exc else 0
    if not exc or w2 > 31:
        return None
    return ("delta_patch", signed(x[0]), dmin, w1, [v & ((1 << w1) - 1) for v in o], hit, w2, exc)


def encode_delta_signed(x: list[int], rng):
    """A DELTA SIGNED block of x (DESIGN §4), or None: DELTA PATCH whose line step ``dmin`` is any of
    the steps, so the steps below it are exceptions too: signed high parts ``o >> w1`` (arithmetic),
    stored as ``zigzag - 1`` in w2 <= 31 bits and staged as int32 words."""
    steps = [signed(x[k] - x[k - 1]) for k in range(1, len(x))]
    if not steps:
        return None
    dmin = steps[int(rng.integers(len(steps)))]
    o = [0] + [signed(d - dmin) for d in steps]
    w1 = int(rng.integers(0, 24))
    hit = [int(v >> w1 != 0) for v in o]
    exc = [(2 * (v >> w1) if v >= 0 else -2 * (v >> w1) - 1) - 1 for v in o if v >> w1]
    w2 = max(exc).bit_length() if exc else 0
    if not exc or w2 > 31:
        return None
    return ("delta_signed", signed(x[0]), dmin, w1, [v & ((1 << w1) - 1) for v in o], hit, w2, exc)


def encode_radix(x: list[int]):
    """A RADIX block of x (DESIGN §1), or None: digits ``x - min`` of an alphabet of R = their
    spread + 1, g of them a w-bit code (g, w: the format's table for R), the first digit lowest."""
    lo, R = min(x), max(x) - min(x) + 1
    if R > 256 or not RADIX_G[R]:
        return None
    g, w = int(RADIX_G[R]), int(RADIX_W[R])
    dig = [v - lo for v in x]
    codes = [sum(d * R**j for j, d in enumerate(dig[i : i + g])) for i in range(0, len(dig), g)]
    return ("radix", signed(lo), 0, w, codes, R, g, dig)


def unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def encode_run(x: list[int]):
    """A RUN block of x: a bitmap of run starts, and the runs' values as a FOR/LFOR line."""
    hit = [int(k == 0 or x[k] != x[k - 1]) for k in range(len(x))]
    base, slope, w, r = encode_block([v for v, h in zip(x, hit) if h])
    return ("run", base, slope, w, r, hit, 0, [])


def stage_block(blk, words: list[int]) -> int:
    """Append a block's staged words to ``words`` and return its meta (DESIGN §4): a plain block's
    packed residuals; a PATCH / RUN block's aux word, values, bitmap and exceptions, each from a
    64-bit word, the aux word's rank prefixes counted here; a DICT block's aux word (kind 3) and
    packed codes (where its dictionary starts goes into its base, ``stage``)."""
    if blk[0] == "dict":
        _, base, slope, w, r, _, _ = blk
        words.append(3)
        meta = (len(words) << 8) | 0x80 | w
        words.extend(pack_bits(r, w))
        return meta
    if blk[0] == "radix":
        _, base, slope, w, codes, R, g, _ = blk
        words.append(16 | (R << 8) | (g << 18) | int(radix_log2_bits(np.array([R]))[0]))
        meta = (len(words) << 8) | 0x80 | w
        words.extend(pack_bits(codes, w))
        return meta
    if blk[0] not in ("patch", "run", "delta", "delta_patch", "delta_signed"):
        base, slope, w, r = blk
        meta = (len(words) << 8) | w
        words.extend(pack_bits(r, w))
        return meta
    kind, base, slope, w, vals, hit, w2, exc = blk
    vw, bw = pack_bits(vals, w), (pack_bits(hit, 1) if kind != "delta" else [])
    bits = sum(b << (64 * i) for i, b in enumerate(bw))
    pre = [bin(bits & ((1 << (32 * g)) - 1)).count("1") for g in range(4)]
    code = {"patch": 1, "run": 2, "delta": 4, "delta_patch": 5, "delta_signed": 13}[kind]
    aux = code | (2 * len(vw) << 8) | (2 * (len(vw) + len(bw)) << 18)
    aux |= sum(p << (32 + 8 * g) for g, p in enumerate(pre))
    words.append(aux)
    meta = (len(words) << 8) | 0x80 | w
    # high parts, a 32-bit word each (DELTA SIGNED: int32)
    words.extend(vw + bw + pack_bits([unzigzag(x + 1) % (1 << 32) if kind == "delta_signed" else x + 1 for x in exc], 32))
    return meta


def block_values(blk, cnt: int) -> list[int]:
    """The values a block (any kind) holds, from its own fields (Python integers)."""
    if blk[0] == "patch":
        _, base, slope, w1, low, hit, w2, exc = blk
        rank = [sum(hit[:k]) for k in range(cnt)]
        return [signed(base + slope * k + low[k] + ((exc[rank[k]] + 1) << w1 if hit[k] else 0)) for k in range(cnt)]
    if blk[0] in ("delta", "delta_patch", "delta_signed"):
        _, base, slope, w1, low, hit, w2, exc = blk
        rank = [sum(hit[:k]) for k in range(cnt)]
        hi = [unzigzag(e + 1) for e in exc] if blk[0] == "delta_signed" else [e + 1 for e in exc]
        o = [low[k] + (hi[rank[k]] << w1 if hit[k] else 0) for k in range(cnt)]
        return [signed(base + slope * k + sum(o[: k + 1])) for k in range(cnt)]
    if blk[0] == "radix":
        _, base, slope, w, codes, R, g, _ = blk
        return [signed(base + slope * k + codes[k // g] // R ** (k % g) % R) for k in range(cnt)]
    if blk[0] == "run":
        _, base, slope, w, r, hit, _, _ = blk
        idx = [sum(hit[: k + 1]) - 1 for k in range(cnt)]
        return [signed(base + slope * i + r[i]) for i in idx]
    if blk[0] == "dict":
        _, base, slope, w, r, _, d = blk
        return [d[(base + slope * k + r[k]) % M64] for k in range(cnt)]
    base, slope, w, r = blk
    return [signed(base + slope * k + r[k]) for k in range(cnt)]


def raw_block(rng, cnt: int, w: int):
    """A block from random parameters: exercises any width with any base/slope (values wrap)."""
    base = int(rng.integers(I64_MIN, I64_MAX, endpoint=True))
    slope = int(rng.choice([0, 1, -1, I64_MAX, I64_MIN, int(rng.integers(-(1 << 40), 1 << 40))]))
    r = [int(v) for v in rng.integers(0, 1 << w, size=cnt, dtype=np.uint64, endpoint=False)] if 0 < w < 64 else (
        [int(v) for v in rng.integers(0, M64 - 1, size=cnt, dtype=np.uint64, endpoint=True)] if w == 64 else [0] * cnt
    )
    vals = [signed(base + slope * k + rr) for k, rr in enumerate(r)]
    return (base, slope, w, r), vals


def make_history(rng, n: int, dtype: str, is_ts: bool, bs: int = BS, aux: bool = False):
    """(values, blocks) of one user's column: blocks of BS, the last one partial. ``aux``: values
    with runs and outliers, stored as PATCH or RUN blocks where they can be."""
    if aux:
        return make_aux_history(rng, n, dtype, is_ts, bs)
    vals, blocks = [], []
    t0 = int(rng.integers(0, 1 << 40))
    for start in range(0, n, bs):
        cnt = min(bs, n - start)
        if is_ts:
            gaps = rng.integers(0, 1000, size=cnt)
            if rng.random() < 0.2:
                gaps[rng.integers(cnt)] = 1 << 33  # a large jump: a wide residual
            x = [t0 + int(g) for g in np.cumsum(gaps)]
            t0 = x[-1]
            blocks.append(encode_block(x))
        elif dtype == "int32":
            kind = rng.integers(3)
            if kind == 0:
                x = [int(rng.integers(I32_MIN, I32_MAX, endpoint=True))] * cnt
            elif kind == 1:
                x = [int(v) for v in rng.integers(I32_MIN, I32_MAX, size=cnt, endpoint=True)]
                x[0], x[-1] = I32_MIN, I32_MAX
            else:
                x = [int(v) for v in rng.integers(0, 7, size=cnt)]
            blocks.append(encode_block(x))
        else:
            kind = rng.integers(4)
            if kind == 0:
                blk, x = raw_block(rng, cnt, int(rng.integers(0, 65)))
                blocks.append(blk)
            elif kind == 1:  # int64 min and max in one block: w = 64
                x = [int(v) for v in rng.integers(I64_MIN, I64_MAX, size=cnt, endpoint=True)]
                x[0] = I64_MIN
                x[-1] = I64_MAX
                blocks.append(encode_block(x))
            elif kind == 2:  # constant block: w = 0
                x = [int(rng.choice([I64_MIN, I64_MAX, int(rng.integers(-1000, 1000))]))] * cnt
                blocks.append(encode_block(x))
            else:
                x = [int(v) for v in rng.integers(-(1 << 20), 1 << 20, size=cnt)]
                blocks.append(encode_block(x))
        vals.extend(x)
    return vals, blocks


def make_aux_history(rng, n: int, dtype: str, is_ts: bool, bs: int):
    """Like make_history, with blocks of repeats (RUN), of rare outliers (PATCH) and of differences
    (DELTA, DELTA PATCH, DELTA SIGNED) and of small alphabets (RADIX) at random; timestamps sometimes
    jump back (a pack's histories)."""
    vals, blocks = [], []
    t0 = int(rng.integers(0, 1 << 40))
    lim = (I32_MIN, I32_MAX) if dtype == "int32" else (I64_MIN, I64_MAX)
    for start in range(0, n, bs):
        cnt = min(bs, n - start)
        if is_ts:  # equal timestamps (a session), a few gaps
            gaps = rng.integers(0, 1000, size=cnt) * (rng.random(cnt) < 0.4)
            if rng.random() < 0.3:
                gaps[rng.integers(cnt)] = 1 << int(rng.integers(20, 40))
            if rng.random() < 0.3:  # the next histories of a pack: jumps back
                gaps[rng.integers(0, cnt, size=int(rng.integers(1, 6)))] = -rng.integers(1, 1 << 26, size=1)
            x = [t0 + int(g) for g in np.cumsum(gaps)]
            t0 = x[-1]
        else:
            kind = rng.integers(3)
            if kind == 0:  # mostly small, rare huge outliers of any sign
                x = [int(v) for v in rng.integers(0, 1 << int(rng.integers(0, 8)), size=cnt)]
                for k in rng.integers(0, cnt, size=int(rng.integers(1, 4))):
                    x[k] = int(rng.integers(*lim, endpoint=True))
            elif kind == 1:  # runs of repeated values
                x = [int(v) for v in np.repeat(rng.integers(*lim, size=cnt, endpoint=True), rng.integers(1, 9, size=cnt))[:cnt]]
            elif rng.random() < 0.5:  # a small alphabet (RADIX), anywhere in the range
                R = int(rng.choice([3, 5, 6, 10, 17, 100, 200]))
                at = int(rng.integers(lim[0], lim[1] - R, endpoint=True))
                x = [at + int(v) for v in rng.integers(0, R, size=cnt)]
            else:
                x = [int(v) for v in rng.integers(-50, 50, size=cnt)]
        cands = [encode_patch(x, rng), encode_run(x), encode_delta(x, rng), encode_delta(x, rng, True),
                 encode_delta_signed(x, rng), encode_radix(x)] if cnt <= 128 else []
        cands = [c for c in cands if c is not None]
        blk = cands[int(rng.integers(len(cands)))] if cands and rng.random() < 0.8 else encode_block(x)
        assert block_values(blk, cnt) == [signed(v) for v in x]
        blocks.append(blk)
        vals.extend(x)
    return vals, blocks


def encode_dict(x: list[int], key, d: list[int]):
    """A DICT block of x: its codes into dictionary ``d`` (which holds every value of x) as a
    FOR / LFOR line; ``key`` names the dictionary."""
    code = {v: i for i, v in enumerate(d)}
    base, slope, w, r = encode_block([code[v] for v in x])
    return ("dict", base, slope, w, r, key, d)


def with_dicts(rng, histories: dict, bs: int = BS, share: float = 0.6) -> dict:
    """Histories with about ``share`` of each (user, column)'s blocks turned into DICT blocks, codes
    into a dictionary of that user's values (sorted, with unused values among them, so that codes
    and starts are not trivial)."""
    out = {}
    for u, cols in histories.items():
        out[u] = {}
        for c, (vals, blocks) in cols.items():
            lim = (I32_MIN, I32_MAX) if SCHEMA[c] == "int32" else (I64_MIN, I64_MAX)
            extra = [int(v) for v in rng.integers(*lim, size=int(rng.integers(0, 20)), endpoint=True)]
            d = sorted(set(vals) | set(extra))
            out[u][c] = (vals, [encode_dict(vals[j * bs : (j + 1) * bs], (u, c), d) if rng.random() < share else blk
                                for j, blk in enumerate(blocks)])
    return out


def stage(histories, examples, columns, L, check_leakage, rng, bs=BS):
    """Build a host StagedBatch (DESIGN §4) for a tenant (columns, L).

    histories: {user: {col: (values, blocks)}}; examples: list of (user, n, tail {col: list}, request_ts).
    check_leakage: True / "strict" (ts >= request_ts leaks), "inclusive" (ts > request_ts leaks) or False.
    Returns (staged, expected {col: np array}, expected violations).
    """
    inclusive = check_leakage == "inclusive"
    staged_cols = list(columns) + (["ts"] if check_leakage and "ts" not in columns else [])
    B = len(examples)
    hist_len, tail_len, tail_src = [], [], []
    windows, needed = [], set()
    tail_cat = {c: [] for c in staged_cols}
    expected = {c: [] for c in columns}
    tail_pos = 0
    exp_viol = np.zeros(B, dtype=np.int32)
    for e, (u, n, tail, rts) in enumerate(examples):
        m = len(tail["ts"])
        t = min(m, L)
        h = min(n, L - t)
        hist_len.append(h)
        tail_len.append(t)
        tail_src.append(tail_pos + (m - t))  # the used tail is the newest t of the m carried
        tail_pos += m
        for c in staged_cols:
            tail_cat[c].extend(tail[c])
        windows.append((u, n - h, n))
        needed.update((u, j) for j in range((n - h) // bs, -(-n // bs)) if h > 0)
        # the contract, directly: S = history[:n] ++ tail, newest L events
        for c in set(columns) | {"ts"}:
            S = histories[u][c][0][:n] + tail[c]
            out = S[max(0, len(S) - L) :]
            if c in columns:
                expected[c].extend(out)
            if c == "ts" and check_leakage and any(v > rts if inclusive else v >= rts for v in out):
                exp_viol[e] = 1
    offsets = np.concatenate([[0], np.cumsum(np.array(hist_len, dtype=np.int64) + np.array(tail_len, dtype=np.int64))]).astype(np.int64)
    order = sorted(needed)
    kidx = {key: i for i, key in enumerate(order)}
    cols = {}
    for c in staged_cols:
        hdr, words, dicts, dict_at = [], [], [], {}
        for u, j in order:
            blk = histories[u][c][1][j]
            base, slope = blk[:2] if len(blk) == 4 else blk[1:3]
            if blk[0] == "dict" and blk[5] not in dict_at:  # each dictionary staged once, where first used
                dict_at[blk[5]] = len(dicts)
                dicts.extend(blk[6])
            start = dict_at[blk[5]] if blk[0] == "dict" else 0  # a DICT block's line: code + start
            hdr.append([signed(base + start), signed(slope), stage_block(blk, words)])
        words.append(0)  # the +1 zero word of DESIGN §4
        cols[c] = StagedColumn(
            c,
            SCHEMA[c],
            np.array(hdr, dtype=np.int64).reshape(-1, 3),
            np.array([signed(x) for x in words], dtype=np.int64),
            np.array(tail_cat[c], dtype=np.int64),
            project=c in columns,
            dicts=np.array(dicts, dtype=np.int64) if dict_at else None,
        )
    tiles = []
    for e, (u, a, b) in enumerate(windows):
        for j in range(a // bs, -(-b // bs)) if b > a else ():
            lo, hi = max(a, j * bs), min(b, (j + 1) * bs)
            tiles.append((kidx[(u, j)], lo - j * bs, hi - lo, offsets[e] + lo - a, e))
    rng.shuffle(tiles)  # the kernels must not depend on the tile order
    tiles = np.array(tiles, dtype=np.int64).reshape(-1, 5)
    staged = StagedBatch(
        bs,
        cols,
        offsets,
        np.array(hist_len, dtype=np.int64),
        np.array(tail_src, dtype=np.int64),
        np.array(tail_len, dtype=np.int64),
        np.array([ex[3] for ex in examples], dtype=np.int64),
        *(np.ascontiguousarray(tiles[:, i]) for i in range(5)),
        check_leakage=check_leakage,
    )
    np_dt = {"int64": np.int64, "int32": np.int32}
    expected = {c: np.array(v, dtype=np_dt[SCHEMA[c]]) for c, v in expected.items()}
    return staged, expected, exp_viol


def random_batch(seed, B, L, max_hist, max_tail, columns, check_leakage, n_users=None, bs=BS, aux=False, dicts=False):
    rng = np.random.default_rng(seed)
    n_users = n_users or max(1, B // 2)
    hist_sizes = [int(rng.choice([0, 1, bs - 1, bs, bs + 1, int(rng.integers(0, max_hist + 1))])) for _ in range(n_users)]
    histories = {
        u: {c: make_history(rng, hist_sizes[u], SCHEMA[c], c == "ts", bs, aux) for c in SCHEMA} for u in range(n_users)
    }
    if dicts:
        histories = with_dicts(rng, histories, bs)
    examples = []
    for _ in range(B):
        u = int(rng.integers(n_users))
        N = hist_sizes[u]
        n = int(rng.choice([0, N, int(rng.integers(0, N + 1))]))
        m = int(rng.choice([0, int(rng.integers(0, max_tail + 1))]))
        last = histories[u]["ts"][0][n - 1] if n else 0
        tail = {"ts": [last + int(g) for g in np.cumsum(rng.integers(1, 100, size=m))]}
        tail["item"] = [int(v) for v in rng.integers(I64_MIN, I64_MAX, size=m, endpoint=True)]
        tail["act"] = [int(v) for v in rng.integers(I32_MIN, I32_MAX, size=m, endpoint=True)]
        S = histories[u]["ts"][0][:n] + tail["ts"]
        used = S[max(0, len(S) - L) :]
        if used and rng.random() < 0.4:  # a leak: request_ts at or below a materialized ts
            rts = int(rng.choice(used))
        else:
            rts = (max(used) + 1) if used else int(rng.integers(-5, 5))
        examples.append((u, n, tail, rts))
    return stage(histories, examples, columns, L, check_leakage, rng, bs)


# ----------------------------------------------------------------------------- comparisons


def assert_equal_verbose(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    bad = np.argwhere(got != want)
    if bad.size:
        first = [tuple(int(i) for i in idx) for idx in bad[:5]]
        detail = ", ".join(f"{i}: got {got[i]} want {want[i]}" for i in first)
        raise AssertionError(f"{what}: {len(bad)} of {got.size} differ; first at {detail}")


def run_triton(staged, padded_width=None, pad_value=0, poison=True, launch=None):
    dev = staged.to(DEVICE)
    out = None
    if poison and padded_width is None:
        out = {
            c: torch.full((staged.total,), SENTINEL if col.dtype == "int64" else -0x5A5A5A5B, dtype=getattr(torch, col.dtype), device=DEVICE)
            for c, col in staged.columns.items()
            if col.project
        }
    values, viol = materialize_staged_triton(dev, padded_width=padded_width, pad_value=pad_value, out=out, **(launch or {}))
    return {c: v.cpu().numpy() for c, v in values.items()}, viol.cpu().numpy()


def check_all(staged, expected, exp_viol, padded_width=None, pad_value=0, launch=None):
    got, viol = run_triton(staged, padded_width, pad_value, launch=launch)
    twin, tviol = materialize_staged_np(staged, padded_width=padded_width, pad_value=pad_value)
    assert set(got) == set(expected) == set(twin)
    offsets = staged.offsets
    for c, want in expected.items():
        if padded_width is not None:
            B = len(offsets) - 1
            dense = np.full((B, padded_width), pad_value, dtype=want.dtype)
            for b in range(B):
                dense[b, : offsets[b + 1] - offsets[b]] = want[offsets[b] : offsets[b + 1]]
            want = dense
        assert_equal_verbose(twin[c], want, f"twin {c}")
        assert_equal_verbose(got[c], want, f"triton {c}")
    assert_equal_verbose(tviol, exp_viol, "twin violations")
    assert_equal_verbose(viol, exp_viol, "triton violations")


# ----------------------------------------------------------------------------- tests


def test_decode_values_every_width():
    """decode_values_np against the Python encoder for every width 0..64 and extreme base/slope."""
    rng = np.random.default_rng(0)
    for w in range(65):
        for cnt in (1, 7, BS):
            (base, slope, ww, r), vals = raw_block(rng, cnt, w)
            words = pack_bits(r, ww) + [0]
            hdr = np.array([[signed(base), signed(slope), ww]], dtype=np.int64)
            got = decode_values_np(hdr, np.array([signed(x) for x in words], dtype=np.int64), np.zeros(cnt, np.int64), np.arange(cnt))
            assert_equal_verbose(got, np.array(vals, dtype=np.int64), f"w={w} cnt={cnt}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.sampled_from([1, 2, 5, 13, 31]),
    L=st.sampled_from([0, 1, 3, 100, 129, 300, 1000]),
    max_tail=st.sampled_from([0, 3, 150]),
    columns=st.sampled_from([("item",), ("act",), ("ts",), ("item", "act", "ts"), ("act", "item")]),
    check=st.sampled_from([False, True, "inclusive"]),
    launch=st.sampled_from([{}, {"tiles_per_prog": 1, "ex_per_prog": 1}, {"tiles_per_prog": 4, "ex_per_prog": 4}]),
)
def test_random_batches_jagged(seed, B, L, max_tail, columns, check, launch):
    """Many programs (small launch shapes, as on a GPU) or one big one: same result."""
    staged, expected, exp_viol = random_batch(seed, B, L, 700, max_tail, columns, check)
    check_all(staged, expected, exp_viol, launch=launch)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.sampled_from([1, 5, 31]),
    L=st.sampled_from([1, 100, 129, 1000]),
    columns=st.sampled_from([("item",), ("act",), ("item", "act", "ts")]),
    check=st.sampled_from([False, True]),
    bs=st.sampled_from([32, 128]),
    launch=st.sampled_from([{}, {"tiles_per_prog": 1, "ex_per_prog": 1}, {"launch": (2, 2, 1)}]),
    padded=st.booleans(),
)
def test_patch_and_run_blocks(seed, B, L, columns, check, bs, launch, padded):
    """PATCH and RUN blocks (their aux words, bitmaps, exceptions, built here with Python integers)
    decode to the contract in the kernel, its twin and the contract's own lane formula."""
    staged, expected, exp_viol = random_batch(seed, B, L, 600, 40, columns, check, bs=bs, aux=True)
    check_all(staged, expected, exp_viol, padded_width=max(L, 1) if padded else None, launch=launch)


def test_patch_blocks_without_low_bits():
    """A flag column all of whose blocks are PATCH without low bits (the kernel's no-load path,
    NOBITS_MASK) or constants, beside ordinary columns."""
    rng = np.random.default_rng(7)
    histories = {}
    for u in range(6):
        n = int(rng.integers(1, 700))
        flags = [int(v) for v in np.where(rng.random(n) < 0.7, 0, rng.integers(1, 5, n))]
        blocks = []
        for start in range(0, n, BS):
            x = flags[start : start + BS]
            blocks.append(encode_patch(x, rng, 0) if any(x) else encode_block(x))
        histories[u] = {"act": (flags, blocks), "ts": make_history(rng, n, "int64", True),
                        "item": make_history(rng, n, "int64", False, aux=True)}
    examples = []
    for _ in range(12):
        u = int(rng.integers(6))
        n = len(histories[u]["act"][0])
        examples.append((u, int(rng.integers(0, n + 1)), {"ts": [], "item": [], "act": []}, 1 << 62))
    for check in (False, True):
        staged, expected, exp_viol = stage(histories, examples, ("act", "item"), 300, check, rng)
        assert staged.max_width("act") == 0 and staged.aux("act") == 1
        check_all(staged, expected, exp_viol)


def test_radix_only_columns():
    """Columns whose only aux blocks are RADIX ones (a rating, a 3-kind action in int32; no RUN
    block beside them), decoded through the last blocks of their words: a RADIX block's codes
    take fewer words than its positions would, and its last blocks must not be judged by those."""
    rng = np.random.default_rng(11)
    histories = {}
    for u in range(6):
        n = int(rng.integers(1, 700))
        cols = {}
        for name, R, lo in (("item", 5, 1), ("act", 3, -1)):
            vals = [lo + int(v) for v in rng.integers(0, R, n)]
            blocks = []
            for start in range(0, n, BS):
                x = vals[start : start + BS]
                blocks.append(encode_radix(x) or encode_block(x))
            cols[name] = (vals, blocks)
        histories[u] = {**cols, "ts": make_history(rng, n, "int64", True)}
    examples = []
    for _ in range(12):
        u = int(rng.integers(6))
        n = len(histories[u]["act"][0])
        examples.append((u, int(rng.integers(0, n + 1)), {"ts": [], "item": [], "act": []}, 1 << 62))
    for u in histories:  # every history's newest events: its last blocks
        examples.append((u, len(histories[u]["act"][0]), {"ts": [], "item": [], "act": []}, 1 << 62))
    for check in (False, True):
        staged, expected, exp_viol = stage(histories, examples, ("act", "item"), 300, check, rng)
        assert staged.aux("act") == 16 and staged.aux("item") == 16
        check_all(staged, expected, exp_viol)


def test_radix_fp32_digits_are_exact():
    """The Triton kernel's RADIX digit, in float32 as it computes it (``floor((code + 0.5) *
    2^(-r log2 R))``, then mod R by ``rcp(R)``), equals the integer definition for every alphabet
    with a code, every code and every digit place; also with 1 / R^r off by 2^-18 and rcp(R) by
    2^-22 either way (more than ``ex2.approx`` and the rounding of log2 R and of the products can
    add), so the exactness does not hang on one GPU's last bit."""
    for R in range(3, 257):
        g = int(RADIX_G[R])
        if not g:
            continue
        code = np.arange(R**g, dtype=np.int64)
        l2r = (radix_log2_bits(np.array([R])) >> np.uint64(32)).astype(np.uint32).view(np.float32)[0]
        for r in range(g):
            want = code // R**r % R
            for f in (1.0, 1 + 2.0**-18, 1 - 2.0**-18):
                inv = np.float32(np.exp2(-(np.float32(r) * l2r)).astype(np.float32) * np.float32(f))
                q2 = np.floor((code.astype(np.float32) + np.float32(0.5)) * inv)
                for fr in (1.0, 1 + 2.0**-22, 1 - 2.0**-22):
                    rcp = np.float32(np.float32(1) / np.float32(R) * np.float32(fr))
                    dig = q2 - np.floor((q2 + np.float32(0.5)) * rcp) * np.float32(R)
                    assert (dig.astype(np.int64) == want).all(), (R, r, f, fr)


def test_decode_values_patch_and_run():
    """The contract's lane formula against the blocks' own values, every width and exception width."""
    rng = np.random.default_rng(1)
    for trial in range(300):
        cnt = int(rng.integers(1, 129))
        _, blocks = make_aux_history(rng, cnt, "int64", bool(trial % 3 == 0), 128)
        words = []
        meta = stage_block(blocks[0], words)
        words.append(0)
        blk = blocks[0]
        base, slope = blk[:2] if len(blk) == 4 else blk[1:3]
        hdr = np.array([[signed(base), signed(slope), meta]], np.int64)
        got = decode_values_np(hdr, np.array([signed(x) for x in words], np.int64), np.zeros(cnt, np.int64), np.arange(cnt))
        assert_equal_verbose(got, np.array(block_values(blk, cnt), np.int64), f"trial {trial}")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.sampled_from([1, 5, 31]),
    L=st.sampled_from([1, 129, 1000]),
    columns=st.sampled_from([("item",), ("act",), ("item", "act", "ts")]),
    check=st.sampled_from([False, True]),
    bs=st.sampled_from([32, 128]),
    aux=st.booleans(),
    launch=st.sampled_from([{}, {"tiles_per_prog": 1, "ex_per_prog": 1}, {"launch": (2, 2, 1)}]),
    padded=st.booleans(),
)
def test_dict_blocks(seed, B, L, columns, check, bs, aux, launch, padded):
    """DICT blocks (codes into the column's dictionaries, DESIGN §4), among plain blocks and, with
    ``aux``, PATCH and RUN blocks of the same column: the kernel, its twin, the plain-PyTorch peer
    and the reference backend against the contract (ts too: the leakage check reads looked-up values)."""
    from gpumat.host.reference import materialize_staged_reference
    from gpumat.kernels.pt_decode_gather import materialize_staged_torch

    staged, expected, exp_viol = random_batch(seed, B, L, 600, 40, columns, check, bs=bs, aux=aux, dicts=True)
    check_all(staged, expected, exp_viol, padded_width=max(L, 1) if padded else None, launch=launch)
    ref, rviol = materialize_staged_reference(staged)
    values, viol = materialize_staged_torch(staged.to("cpu"), total=staged.total)
    for c, want in expected.items():
        assert_equal_verbose(ref[c], want, f"reference {c}")
        assert_equal_verbose(values[c].numpy(), want, f"torch peer {c}")
    assert_equal_verbose(rviol.astype(np.int32), exp_viol, "reference violations")
    assert_equal_verbose(viol.numpy(), exp_viol, "torch peer violations")


def with_borrowers(staged, rng, lender="item", dtypes=("int32", "int64", "int32"), prefix="b"):
    """``staged`` with a column per ``dtypes`` that borrows ``lender``'s codes (DESIGN §1): its
    very words, its slopes and ``meta``, its own bases (each block's dictionary start, as the host
    folds it in) and its own dictionaries (a value per code)."""
    src = staged.columns[lender]
    for k, dt in enumerate(dtypes):
        hdr = src.hdr.copy()
        D = 0 if src.dicts is None else len(src.dicts)
        start = rng.integers(0, 3, size=len(hdr))  # each block's own dictionary start
        hdr[:, 0] += start  # (a plain block of the lender's: another base line, as the twin reads it)
        hi = 2**31 if dt == "int32" else 2**63
        dicts = rng.integers(-hi, hi, size=D + 3, dtype=np.int64)
        tails = rng.integers(-hi, hi, size=len(src.tail_values), dtype=np.int64)
        staged.columns[f"{prefix}{k}"] = StagedColumn(f"{prefix}{k}", dt, hdr, src.words, tails, True, dicts)
    return staged


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    aux=st.booleans(),
    check=st.booleans(),
    launch=st.sampled_from([{}, {"tiles_per_prog": 1, "ex_per_prog": 1}, {"launch": (2, 2, 1)}]),
    padded=st.booleans(),
)
# (an int32 borrower whose changed header makes a PATCH block 51 bits wide: its exceptions add
# nothing to the low 32 bits; the kernel shifted them by 51 & 31)
@example(seed=1, aux=True, check=False, launch={}, padded=False)
def test_borrowed_codes_decoded_once(seed, aux, check, launch, padded):
    """Columns whose blocks are another's (borrowed codes: the same words, slopes and ``meta``, their
    own bases and dictionaries) take the lender's decoded lines in the same launch (``borrow_plan``):
    every column as the twin decodes it on its own, int64 and int32 borrowers of an int64 lender,
    int32 ones of an int32 lender; a 64-bit borrower of a 32-bit lender, and a column whose
    headers differ, decode on their own."""
    from gpumat.host.workers import pack_staged, staged_from_skeleton, staged_skeleton
    from gpumat.kernels.triton_decode_gather import borrow_plan

    rng = np.random.default_rng(seed)
    # int32 borrowers of an int32 lender (the 32-bit line lent as it is)
    staged, _, _ = random_batch(seed, 7, 300, 400, 20, ("item", "act", "ts"), check, aux=aux, dicts=True)
    staged = with_borrowers(staged, rng, "act", ("int32", "int32"), "a")
    names = [n for n, _, _ in staged.passes()]
    out64 = sum(1 << c for c, n in enumerate(names) if staged.columns[n].dtype == "int64" or n == "ts")
    assert borrow_plan(staged, (out64,) + (0,) * 7) == (names.index("act"), 1 << names.index("a0") | 1 << names.index("a1"))
    expected, exp_viol = materialize_staged_np(staged)
    check_all(staged, expected, exp_viol, launch=launch)
    # int32 and int64 borrowers of an int64 lender
    staged, _, _ = random_batch(seed, 7, 300, 400, 20, ("item", "act", "ts"), check, aux=aux, dicts=True)
    staged = with_borrowers(staged, rng)
    expected, exp_viol = materialize_staged_np(staged)
    if padded:
        check_all(staged, expected, exp_viol, padded_width=300, launch=launch)
    else:
        check_all(staged, expected, exp_viol, launch=launch)
    names = [n for n, _, _ in staged.passes()]
    assert {n: staged.codes_of(n) for n in ("b0", "b1", "b2", "act")} == {"b0": "item", "b1": "item", "b2": "item", "act": None}
    dev = staged.to(DEVICE)
    assert dev.codes_lent() == staged.codes_lent()  # (carried to the device copy: no host sync to find it)
    flat = np.zeros(staged.packed_numel(), np.int64)
    _, layout = staged.pack()
    assert layout["b1.words"] == layout["item.words"]  # (the words laid out once)
    pack_staged(staged, flat, layout)
    assert staged_from_skeleton(staged_skeleton(staged), flat, layout).codes_lent() == staged.codes_lent()
    out64 = sum(1 << c for c, n in enumerate(names) if staged.columns[n].dtype == "int64" or n == "ts")
    lender, mask = borrow_plan(staged, (out64,) + (0,) * 7)
    assert (names[lender], mask) == ("item", sum(1 << names.index(n) for n in ("b0", "b1", "b2")))
    # an int32 lender cannot lend a 64-bit line: b1 (int64) borrows from no one
    lender, mask = borrow_plan(staged, (out64 & ~(1 << names.index("item")),) + (0,) * 7)
    assert (names[lender], mask) == ("item", sum(1 << names.index(n) for n in ("b0", "b2")))
    # headers that differ past the base: decoded on their own, and still right
    staged.columns["b2"].hdr = staged.columns["b2"].hdr.copy()
    staged.columns["b2"].hdr[:, 1] += 1
    assert staged.codes_of("b2") is None or not len(staged.columns["b2"].hdr)  # (no blocks: nothing differs)
    expected, exp_viol = materialize_staged_np(staged)
    check_all(staged, expected, exp_viol, launch=launch)


def test_dict_codes_past_the_dictionary_are_clamped():
    """A code past the column's dictionaries reads its last entry, and a column whose DICT blocks
    come with an empty dictionary reads 0: the contract's definition, which every backend (and the
    kernel's memory safety) follows."""
    from gpumat.host.reference import materialize_staged_reference
    from gpumat.kernels.pt_decode_gather import materialize_staged_torch

    staged, _, _ = random_batch(5, 6, 300, 400, 10, ("item", "act"), False, dicts=True)
    for c in ("item", "act"):
        col = staged.columns[c]
        if col.dicts is not None:
            col.dicts = col.dicts[: max(1, len(col.dicts) // 3)] if c == "item" else col.dicts[:0]
    twin, _ = materialize_staged_np(staged)
    got, _ = run_triton(staged)
    ref, _ = materialize_staged_reference(staged)
    pt, _ = materialize_staged_torch(staged.to("cpu"), total=staged.total)
    for c in twin:
        assert_equal_verbose(got[c], twin[c], f"triton {c}")
        assert_equal_verbose(ref[c], twin[c], f"reference {c}")
        assert_equal_verbose(pt[c].numpy(), twin[c], f"torch peer {c}")
    # the definition itself: one DICT block with codes 0..3 into a dictionary of 2 entries from 1
    h = np.array([[0 + 1, 1, (1 << 8) | 0x80 | 0]])  # LFOR codes 0, 1, 2, 3 (0 bits), + start 1
    w = np.array([3, 0], np.int64)
    dv = decode_values_np(h, w, np.zeros(4, np.int64), np.arange(4), np.array([9, 8, 7], np.int64))
    assert dv.tolist() == [8, 7, 7, 7]
    assert decode_values_np(h, w, np.zeros(4, np.int64), np.arange(4), np.zeros(0, np.int64)).tolist() == [0] * 4


def test_dict_survives_packing_and_workers():
    """A batch with dictionaries crosses pack / from_flat and the workers' skeleton intact, and its
    device copy still knows which columns take the DICT path."""
    from gpumat.host.workers import pack_staged, staged_from_skeleton, staged_skeleton

    staged, expected, exp_viol = random_batch(11, 7, 400, 500, 20, ("item", "act", "ts"), True, dicts=True)
    assert any(col.dicts is not None for col in staged.columns.values())
    kinds = {c: staged.aux(c) for c in staged.columns}
    assert any(k & 4 for k in kinds.values())
    moved = staged.to(DEVICE)
    assert {c: moved.aux(c) for c in staged.columns} == kinds
    flat = np.zeros(staged.packed_numel(), np.int64)
    _, layout = staged.pack()
    pack_staged(staged, flat, layout)
    back = staged_from_skeleton(staged_skeleton(staged), flat, layout)
    values, viol = materialize_staged_np(back)
    for c, want in expected.items():
        assert_equal_verbose(values[c], want, f"unpacked {c}")
    assert_equal_verbose(viol, exp_viol, "unpacked violations")
    got, gviol = materialize_staged_triton(moved)
    for c, want in expected.items():
        assert_equal_verbose(got[c].cpu().numpy(), want, f"device copy {c}")


@pytest.mark.parametrize("bs,lanes", [(8, None), (256, 32), (4096, None)])
def test_other_block_sizes(bs, lanes, monkeypatch):
    """Tiers may use any power-of-two block size; blocks wider than the lanes loop in the kernel."""
    import gpumat.kernels.triton_decode_gather as tdg

    if lanes:
        monkeypatch.setattr(tdg, "MAX_LANES", lanes)
    for seed, pw in ((bs, None), (bs + 1, 3 * bs)):
        staged, expected, exp_viol = random_batch(seed, 7, 2 * bs + 3, 3 * bs, 9, ("item", "act", "ts"), True, bs=bs)
        pw = None if pw is None else max(pw, int(np.diff(staged.offsets).max()))
        check_all(staged, expected, exp_viol, padded_width=pw, launch={"tiles_per_prog": 2})


@pytest.mark.parametrize("pad_value", [0, -7])
def test_padded_wider_than_longest(pad_value):
    staged, expected, exp_viol = random_batch(11, 9, 260, 600, 40, ("item", "act", "ts"), True)
    lengths = np.diff(staged.offsets)
    check_all(staged, expected, exp_viol, padded_width=int(lengths.max()) + 5, pad_value=pad_value)


def test_padded_exact_width_and_ts_only_for_check():
    staged, expected, exp_viol = random_batch(12, 7, 200, 500, 20, ("act",), True)
    assert not staged.columns["ts"].project
    check_all(staged, expected, exp_viol, padded_width=int(np.diff(staged.offsets).max()))


def _boundary_batch(mode):
    """Examples whose newest materialized ts sits exactly at, just under or past request_ts."""
    rng = np.random.default_rng(5)
    hist = {0: {c: make_history(rng, 300, SCHEMA[c], c == "ts") for c in SCHEMA}}
    ts = hist[0]["ts"][0]
    tail_ts = [ts[-1] + 10, ts[-1] + 20]
    tail = {"ts": tail_ts, "item": [1, 2], "act": [3, 4]}
    no_tail = {"ts": [], "item": [], "act": []}
    examples = [
        (0, 300, no_tail, ts[-1]),  # newest history ts == request_ts: strict leak, inclusive fine
        (0, 300, no_tail, ts[-1] + 1),  # strictly before: fine
        (0, 300, tail, tail_ts[-1]),  # in the tail, ts == request_ts
        (0, 300, tail, tail_ts[-1] + 1),
        (0, 250, no_tail, ts[40]),  # the window ts[150:250] is past request_ts: a leak in both modes
        (0, 300, tail, tail_ts[-1] - 1),  # the newest tail event is past request_ts: both modes
        (0, 100, no_tail, ts[99] + 1),  # positions >= n (later, leaking events) are never read
        (0, 0, no_tail, -(1 << 62)),  # an empty example never leaks
    ]
    return stage(hist, examples, ("item",), 100, mode, rng)


@pytest.mark.parametrize("mode, want", [
    (True, [1, 0, 1, 0, 1, 1, 0, 0]),
    ("strict", [1, 0, 1, 0, 1, 1, 0, 0]),
    ("inclusive", [0, 0, 0, 0, 1, 1, 0, 0]),
    (False, [0] * 8),
])
def test_leakage_flags_exact_boundary(mode, want):
    """strict: ts == request_ts is a leak, ts == request_ts - 1 is not; inclusive: only ts > request_ts
    is; in the history and in the tail, on every backend of the op (reference, NumPy twin, Triton,
    the PyTorch peer), jagged and padded."""
    from gpumat.ops import decode_gather

    staged, expected, exp_viol = _boundary_batch(mode)
    assert exp_viol.tolist() == want
    check_all(staged, expected, exp_viol)
    check_all(staged, expected, exp_viol, padded_width=101)
    for backend in ("reference", "numpy", "torch"):
        values, viol = decode_gather(staged if backend != "torch" else staged.to("cpu"), backend)
        assert_equal_verbose(viol.numpy().astype(np.int32), exp_viol, f"{backend} violations ({mode})")
        assert_equal_verbose(values["item"].numpy(), expected["item"], f"{backend} values ({mode})")


def test_leakage_mode_survives_the_device_copy():
    staged, _, _ = _boundary_batch("inclusive")
    assert staged.inclusive and staged.to("cpu").inclusive and staged.to("cpu").check_leakage == "inclusive"
    with pytest.raises(GpumatError, match="check_leakage"):
        _boundary_batch("sometimes")[0].passes().__next__()


def test_empty_and_degenerate_batches():
    # B = 0
    staged, expected, exp_viol = stage({}, [], ("item", "act"), 10, True, np.random.default_rng(0))
    got, viol = run_triton(staged)
    assert viol.shape == (0,) and all(v.shape == (0,) for v in got.values())
    got, viol = run_triton(staged, padded_width=3)
    assert all(v.shape == (0, 3) for v in got.values())
    # max_len 0: zero tiles, zero output, nothing to flag
    staged, expected, exp_viol = random_batch(3, 6, 0, 300, 5, ("item", "ts"), True)
    assert staged.num_tiles == 0 and staged.total == 0
    check_all(staged, expected, exp_viol)
    check_all(staged, expected, exp_viol, padded_width=4, pad_value=9)
    # only tails (n = 0 everywhere) and only histories (no tails)
    rng = np.random.default_rng(4)
    hist = {0: {c: make_history(rng, 200, SCHEMA[c], c == "ts") for c in SCHEMA}}
    tail = {"ts": [10**15, 10**15 + 1, 10**15 + 2], "item": [I64_MIN, 0, I64_MAX], "act": [I32_MIN, 0, I32_MAX]}
    no_tail = {"ts": [], "item": [], "act": []}
    for exs in ([(0, 0, tail, 10**16), (0, 0, no_tail, 0)], [(0, 200, no_tail, 10**16), (0, 77, no_tail, 10**16)]):
        staged, expected, exp_viol = stage(hist, exs, ("item", "act"), 128, True, rng)
        check_all(staged, expected, exp_viol)


def _bulk_blocks(n, rng):
    """A large batch built vectorized: every block has w = 8 (the residuals are the packed bytes),
    so value k of block b is ``base_b + slope_b * k + byte``; the expected output is a formula."""
    K = -(-n // BS)
    base = rng.integers(I64_MIN, I64_MAX, size=K, endpoint=True)
    slope = rng.integers(-(1 << 30), 1 << 30, size=K)
    resid = rng.integers(0, 256, size=(K, BS), dtype=np.uint8)
    words = np.concatenate([resid.reshape(-1).view(np.int64), [0]])
    hdr = np.stack([base, slope, ((np.arange(K) * (BS // 8)) << 8) | 8], axis=1).astype(np.int64)
    with np.errstate(over="ignore"):
        hist_vals = (base.astype(np.uint64)[:, None] + slope.astype(np.uint64)[:, None] * np.arange(BS, dtype=np.uint64)
                     + resid.astype(np.uint64)).view(np.int64).reshape(-1)[:n]
    return hdr, words, hist_vals


def test_long_history_million_events():
    """One example whose window is a 10^6-event history (7813 tiles), plus a short neighbour."""
    rng = np.random.default_rng(8)
    n = 10**6
    hdr, words, hv = _bulk_blocks(n, rng)
    # example 0: the whole history; example 1: the newest 1000 of a 5000-prefix with L = n
    wins = [(0, n), (0, 5000)]
    offsets = np.array([0, n, n + 5000], dtype=np.int64)
    tiles = []
    for e, (a, b) in enumerate(wins):
        j = np.arange(a // BS, -(-b // BS))
        lo = np.maximum(a, j * BS)
        hi = np.minimum(b, (j + 1) * BS)
        tiles.append(np.stack([j, lo - j * BS, hi - lo, offsets[e] + lo - a, np.full_like(j, e)], axis=1))
    tiles = np.concatenate(tiles)
    col = StagedColumn("item", "int64", hdr, words, np.zeros(0, np.int64))
    z = np.zeros(2, np.int64)
    staged = StagedBatch(BS, {"item": col}, offsets, np.array([n, 5000]), z, z, z, *(tiles[:, i].copy() for i in range(5)),
                         check_leakage=False)
    want = np.concatenate([hv, hv[:5000]])
    got, viol = run_triton(staged)
    assert_equal_verbose(got["item"], want, "10^6-event history")
    assert viol.tolist() == [0, 0]


def test_hundred_thousand_examples():
    """10^5 examples sharing one user's blocks (deduplicated staging), short windows and tails."""
    rng = np.random.default_rng(9)
    B, L, N = 100_000, 40, 300
    hist = {0: {c: make_history(rng, N, SCHEMA[c], c == "ts") for c in SCHEMA}}
    tails = [{c: [] for c in SCHEMA}] + [
        {"ts": [10**15 + i for i in range(k)], "item": list(range(k)), "act": list(range(-k, 0))} for k in (1, 2, 45)
    ]
    ns = rng.integers(0, N + 1, size=B)
    ks = rng.integers(0, len(tails), size=B)
    rts = np.where(rng.random(B) < 0.01, 0, 10**16)
    examples = [(0, int(ns[i]), tails[ks[i]], int(rts[i])) for i in range(B)]
    staged, expected, exp_viol = stage(hist, examples, ("act",), L, True, rng)
    check_all(staged, expected, exp_viol)


def _device_batch_without_host_sizes(staged):
    """The batch moved to the device, then stripped of what the host knew (sizes, widths, longest
    tail), as for a batch built on the device: the kernels must take their always-right paths."""
    dev = staged.to(DEVICE)
    dev.known_total = dev.known_history = dev.known_max_tail = dev.known_max_width = None
    return dev


@pytest.mark.parametrize("seed", [21, 22])
def test_specializations_agree(seed):
    """The launch specializes on what the host knows (32-bit path for columns whose blocks are all
    <= 32 bits wide, tail rows as wide as the longest tail); without that knowledge (a device-built
    batch) it takes the 3-word path and looped tails. Same results either way, narrow and wide data."""
    staged, expected, exp_viol = random_batch(seed, 9, 300, 900, 150, ("item", "act", "ts"), True)
    dev = staged.to(DEVICE)
    assert dev.known_max_tail == int(staged.tail_len.max()) and set(dev.known_max_width) == set(staged.columns)
    bare = _device_batch_without_host_sizes(staged)
    assert bare.max_width("item") == 64
    for d in (dev, bare):
        values, viol = materialize_staged_triton(d, total=staged.total)
        for c, want in expected.items():
            assert_equal_verbose(values[c].cpu().numpy(), want, f"{c} (known sizes: {d is dev})")
        assert_equal_verbose(viol.cpu().numpy(), exp_viol, "violations")


def test_one_compiled_kernel_per_schema(monkeypatch):
    """A GPU compiles a kernel per specialization key: Triton keys each int argument on == 1 and
    % 16 and each pointer on 16-byte alignment, inside tuples too, where ``do_not_specialize`` does
    not reach. Batches of one schema and launch shape must share one key whatever their sizes, or
    every new pattern of word and dictionary counts would stop training for a compile. The key is
    computed from the launcher's real arguments with Triton's own specializer (the interpreter
    never compiles, so only this shows it)."""
    import inspect

    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    import gpumat.kernels.triton_decode_gather as k

    calls = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((self.kernel, args, kw))

    for name in ("_history_kernel", "_tail_kernel"):
        monkeypatch.setattr(k, name, Recorder(getattr(k, name)))
    from gpumat.bench.kernels import synthetic_staged

    raw = set()
    for seed in range(24):  # the bench tenant's schema (DICT item_id, PATCH action), batches of many sizes
        staged = synthetic_staged(1 + 5 * seed, 40 + 13 * seed, seed=seed)
        raw.add(tuple(c.words.size % 16 == 0 for c in staged.columns.values()))
        materialize_staged_triton(staged.to(DEVICE), total=staged.total)
    assert len(raw) > 1  # some batch's word count is a multiple of 16, some other's not

    keys = {}
    for kernel, args, kw in calls:
        names = kernel.arg_names
        # (a JITFunction on a GPU, an InterpretedFunction under TRITON_INTERPRET=1)
        dns = set(getattr(kernel, "do_not_specialize", None) or kernel.kwargs.get("do_not_specialize", ()))
        params = inspect.signature(kernel.fn).parameters
        given = dict(zip(names, args)) | {n: v for n, v in kw.items() if n in params}
        runtime = {n: v for n, v in given.items() if "constexpr" not in str(params[n].annotation)}
        const = tuple(sorted((n, v) for n, v in given.items() if n not in runtime))
        key = tuple(native_specialize_impl(BaseBackend, v, False, n not in dns, True) for n, v in sorted(runtime.items()))
        keys.setdefault((kernel.fn.__name__, const), set()).add(key)
    assert any(name == "_history_kernel" for name, _ in keys) and any(name == "_tail_kernel" for name, _ in keys)
    for (name, const), ks in keys.items():
        assert len(ks) == 1, f"{name}: {len(ks)} keys for one schema and launch shape: {sorted(ks)[:2]}"
    assert len(calls) > len(keys)  # some schema was launched more than once
    for n in (1, 8, 16, 17, 2**30 - 1):  # (the launcher's limit keeps a count under 2^30)
        assert native_specialize_impl(BaseBackend, (k.opaque_count(n),), False, True, True) == (("i32",), ("",))


@pytest.mark.skipif(DEVICE != "cuda", reason="counts the compiled kernels on a GPU (GPUMAT_TEST_NATIVE=1)")
def test_one_compile_per_launch_shape_on_the_device():
    """On a GPU, batches of one schema whose word counts vary compile the history kernel at most
    once per launch shape (``launch_for`` of the batch's length bucket) and the tail kernel once per
    tail shape: Triton's own cache (``device_caches[device][0]``, keyed by the specialization)."""
    from gpumat.bench.kernels import synthetic_staged
    import gpumat.kernels.triton_decode_gather as k

    def compiled(fn):
        return sum(len(c[0]) for c in fn.device_caches.values())

    if k._autotune_requested():
        pytest.skip("autotuning compiles every candidate launch")
    before = compiled(k._history_kernel), compiled(k._tail_kernel)
    shapes, tails, residues = set(), set(), set()
    for seed in range(12):
        staged = synthetic_staged(3 + 5 * seed, 300, seed=seed)  # (seeds 6, 8, 10, 11: a count divisible by 16)
        residues.add(tuple(c.words.size % 16 == 0 for c in staged.columns.values()))
        dev = staged.to(DEVICE)
        shapes.add(k.launch_for(k.len_bucket(dev)))
        tails.add(k.tail_shape(dev.known_max_tail, k._launch_shapes()[1]))
        k.materialize_staged_triton(dev, total=staged.total)
    torch.cuda.synchronize()
    assert len(residues) > 1  # (the counts' pattern varies: the old launch compiled per pattern)
    assert compiled(k._history_kernel) - before[0] <= len(shapes)
    assert compiled(k._tail_kernel) - before[1] <= len(tails)


@pytest.mark.parametrize("seq", [2, 3])
def test_one_warp_programs_walking_several_tiles(seq, monkeypatch):
    """The GPU shape: one tile at a time, SEQ tiles per program (the last program partly empty)."""
    import gpumat.kernels.triton_decode_gather as tdg

    monkeypatch.setattr(tdg, "GPU_TILES_SEQ", seq)
    for s_ in (25, 26):
        staged, expected, exp_viol = random_batch(s_, 7, 300, 900, 20, ("item", "act", "ts"), True)
        check_all(staged, expected, exp_viol, launch={"tiles_per_prog": 1})
        pw = int(np.diff(staged.offsets).max()) + 3
        check_all(staged, expected, exp_viol, padded_width=pw, launch={"tiles_per_prog": 1})


@pytest.mark.parametrize("launch", [(2, 3, 1), (4, 2, 2), (2, 1, 2), (1, 3, 1, 64)])
def test_groups_of_tiles_walked_in_turn(launch):
    """Every launch the tuner may pick (TP tiles side by side, SEQ groups in turn, a cap on
    registers, which the interpreter does not apply): the last program partly empty, padded and
    jagged, with the leakage check; a launch of another shape is refused."""
    from gpumat.kernels.triton_decode_gather import LAUNCH_CHOICES

    assert all(len(c) in (3, 4) for c in LAUNCH_CHOICES) and any(len(c) == 4 for c in LAUNCH_CHOICES)
    staged, expected, exp_viol = random_batch(27, 9, 300, 900, 20, ("item", "act", "ts"), True)
    check_all(staged, expected, exp_viol, launch={"launch": launch})
    pw = int(np.diff(staged.offsets).max()) + 2
    check_all(staged, expected, exp_viol, padded_width=pw, launch={"launch": launch})
    for bad in ((1, 2), (1, 2, 1, 8), (1, 2, 3), (1, 2, 1, 64, 0)):
        with pytest.raises(GpumatError, match="launch"):
            run_triton(staged, launch={"launch": bad})


def test_narrow_columns_take_the_32_bit_path():
    """Blocks of at most 32 bits decode the same with the 2-word path as with the 3-word one."""
    rng = np.random.default_rng(23)
    hist = {u: {c: make_history(rng, 400, SCHEMA[c], c == "ts") for c in SCHEMA} for u in range(3)}
    examples = [(u, n, {"ts": [], "item": [], "act": []}, 2**62) for u in range(3) for n in (1, 129, 400)]
    staged, expected, exp_viol = stage(hist, examples, ("item", "act"), 300, True, rng)
    dev = staged.to(DEVICE)
    for name in staged.columns:
        w = staged.max_width(name)
        assert dev.known_max_width[name] == w
    narrow = [c for c in staged.columns if staged.max_width(c) <= 32]
    assert narrow, "the histories should have some columns of narrow blocks"
    wide = _device_batch_without_host_sizes(staged)
    for d in (dev, wide):
        values, viol = materialize_staged_triton(d, total=staged.total)
        for c, want in expected.items():
            assert_equal_verbose(values[c].cpu().numpy(), want, c)


def test_corrupt_headers_never_read_outside_the_words():
    """A header whose word offset or width points past the staged words (which the host's checksums
    rule out) must not fault: the tile reads inside the column's words instead. The values of such
    a tile are unspecified; every other tile is still right."""
    staged, expected, _ = random_batch(24, 5, 300, 900, 0, ("item",), False)
    hdr = staged.columns["item"].hdr.copy()
    bad_block = int(staged.tile_block[0])
    hdr[bad_block, 2] = (10**9 << 8) | 7  # word offset far past the end
    staged.columns["item"].hdr = hdr
    values, _ = materialize_staged_triton(staged.to(DEVICE), total=staged.total)
    got = values["item"].cpu().numpy()
    untouched = np.ones(staged.total, dtype=bool)
    for t in np.flatnonzero(staged.tile_block == bad_block):
        untouched[staged.tile_out[t] : staged.tile_out[t] + staged.tile_cnt[t]] = False
    assert_equal_verbose(got[untouched], expected["item"][untouched], "tiles with good headers")


@pytest.mark.parametrize("seed", [31, 32])
def test_unmasked_value_loads_read_only_the_packed_slack(seed, monkeypatch):
    """A packed batch leaves ``WORDS_SLACK`` zero words after every column's words, so the history
    kernel loads values unmasked (its dead lanes read at most a chunk past the last live value);
    a batch whose words end their storage takes the masked loads. Both equal the reference, on
    tiles that start and end mid-block, the last block of each column too."""
    import dataclasses

    import gpumat.kernels.triton_decode_gather as tdg
    from gpumat.core.staged import WORDS_SLACK

    staged, expected, exp_viol = random_batch(seed, 12, 200, 700, 4, ("item", "act"), True, aux=seed % 2 == 0)
    flat, layout = staged.pack()
    for name, (off, shape) in layout.items():
        if name.endswith(".words"):
            assert (flat[off + shape[0]: off + shape[0] + WORDS_SLACK] == 0).all(), name
    rooms = []
    real = tdg._room_after
    monkeypatch.setattr(tdg, "_room_after", lambda t: rooms.append(real(t)) or rooms[-1])
    packed = staged.to(DEVICE)
    assert tdg.len_bucket(packed) < tdg.SLACK_MIN_BUCKET  # short windows: masked loads, the room not even asked
    materialize_staged_triton(packed, total=staged.total)
    assert not rooms
    monkeypatch.setattr(tdg, "SLACK_MIN_BUCKET", -1)  # as for long windows
    bare = dataclasses.replace(packed, columns={n: dataclasses.replace(c, words=c.words.clone())
                                                for n, c in packed.columns.items()})
    for d, unmasked in ((packed, True), (bare, False)):
        rooms.clear()
        values, viol = materialize_staged_triton(d, total=staged.total)
        assert rooms and (min(rooms) >= BS + 1) == unmasked
        for c, want in expected.items():
            assert_equal_verbose(values[c].cpu().numpy(), want, c)
        assert viol.cpu().numpy().tolist() == list(exp_viol)


@pytest.mark.skipif(DEVICE != "cpu" or not sys.platform.startswith("linux"), reason="guard pages: the interpreter, Linux")
@pytest.mark.parametrize("case", ["plain", "aux-one", "dict", "deadex-one", "bs64"])
def test_unmasked_value_loads_stay_inside_the_room(case):
    """The SLACK path with each column's words followed by exactly the room the launcher asks for,
    then a page no access is allowed to (``tests/guard_words.py``, in a child process: a read past
    the room kills it), on the GPU's one-tile shape and the interpreter's, plain, PATCH / RUN /
    DELTA and DICT blocks, dead tiles, blocks of 64: the values and flags are the reference's."""
    import subprocess

    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "guard_words.py"), case],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.returncode, proc.stderr[-2000:])


def test_triton_available_messages(monkeypatch):
    ok, why = triton_available("cuda")
    assert ok, why
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = triton_available("cpu")
    assert not ok and "backend='reference'" in why and "TRITON_INTERPRET=1" in why
    ok, why = triton_available("not a device")
    assert not ok


def test_rejects_host_arrays_and_check_without_ts():
    staged, _, _ = random_batch(1, 2, 10, 100, 2, ("item",), False)
    with pytest.raises(GpumatError, match="StagedBatch.to"):
        materialize_staged_triton(staged)
    staged.check_leakage = True  # but no ts staged: must not silently pass every example
    with pytest.raises(GpumatError, match="'ts'"):
        materialize_staged_triton(staged.to(DEVICE))
    with pytest.raises(GpumatError, match="'ts'"):
        materialize_staged_np(staged)


def test_torch_peer_matches_twin():
    """The bench's plain-PyTorch peer must compute the same thing, or its timings mean nothing."""
    from gpumat.bench.kernels import synthetic_staged
    from gpumat.kernels.pt_decode_gather import materialize_staged_torch

    from gpumat.bench.kernels import COLUMNS, DELTA_TS_COLUMNS

    # plain; PATCH, RUN and DELTA; and DICT blocks
    for aux, dicts in ((False, False), (True, False), (True, True)):
        staged, expected, exp_viol = random_batch(21, 9, 260, 600, 40, ("item", "act", "ts"), True, aux=aux, dicts=dicts)
        values, viol = materialize_staged_torch(staged.to("cpu"), total=staged.total)
        for c, want in expected.items():
            assert_equal_verbose(values[c].numpy(), want, f"torch peer {c}")
        assert_equal_verbose(viol.numpy(), exp_viol, "torch peer violations")
    for cols in (COLUMNS, DELTA_TS_COLUMNS):  # the bench batches (DELTA PATCH ts: the static check's variant)
        syn = synthetic_staged(B=6, L=300, seed=0, columns=cols)
        syn.columns["ts"].project = True  # (stored too, so that its values are compared)
        twin, tviol = materialize_staged_np(syn)
        values, viol = materialize_staged_torch(syn.to("cpu"), total=syn.total)
        got, gviol = run_triton(syn)
        for c in twin:
            assert_equal_verbose(values[c].numpy(), twin[c], f"torch peer synthetic {c}")
            assert_equal_verbose(got[c], twin[c], f"triton synthetic {c}")
        assert_equal_verbose(gviol, tviol, "triton synthetic violations")


def test_cuda_twin_matches():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA GPU")
    except cp.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA GPU")
    from gpumat.kernels.cuda_decode_gather import materialize_staged_cuda

    for pw, mode, aux, dicts in ((None, True, False, False), (400, True, False, False), (None, "inclusive", False, False),
                                 (None, True, True, False), (400, "inclusive", True, False), (None, True, True, True),
                                 (400, True, False, True)):
        staged, expected, exp_viol = random_batch(31, 13, 300, 900, 60, ("item", "act", "ts"), mode, aux=aux, dicts=dicts)
        twin, tviol = materialize_staged_np(staged, padded_width=pw, pad_value=-3)
        values, viol = materialize_staged_cuda(staged.to("cuda"), padded_width=pw, pad_value=-3)
        for c in twin:
            assert_equal_verbose(values[c].cpu().numpy(), twin[c], f"cuda twin {c}")
        assert_equal_verbose(viol.cpu().numpy(), tviol, "cuda twin violations")


def test_cuda_twin_compiles_for_hopper_and_ampere_without_spills(tmp_path):
    """The CUDA C twin's source (which only cupy compiles at run time) compiles with nvcc for sm_90
    and sm_80, every kernel without a stack or local memory: checked on any machine with nvcc,
    GPU or not."""
    import ast
    import re
    import shutil
    import subprocess

    import gpumat.kernels
    from gpumat.bench.static import _tools

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH")
    path = os.path.join(os.path.dirname(gpumat.kernels.__file__), "cuda_decode_gather.py")
    tree = ast.parse(open(path).read())
    (src,) = [n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "_SOURCE"]
    (tmp_path / "twin.cu").write_text(src)
    for arch in (90, 80):
        out = tmp_path / f"twin{arch}.cubin"
        subprocess.run([nvcc, "--std=c++14", f"-arch=sm_{arch}", "-cubin", "-o", str(out), str(tmp_path / "twin.cu")],
                       check=True, capture_output=True, text=True)
        usage = subprocess.run([os.path.join(_tools(), "cuobjdump"), "-res-usage", str(out)], check=True,
                               capture_output=True, text=True).stdout
        funcs = re.findall(r"Function (\w+):\s+REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
        assert {f for f, *_ in funcs} == {"decode_gather_i64", "decode_gather_i32", "gather_tail_i64", "gather_tail_i32"}
        assert all(stack == "0" and local == "0" for _, _, stack, local in funcs), usage


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_writes_into_given_arrays(seed):
    """``materialize_staged_reference(staged, out)`` (the process workers' decode straight into shared
    memory) gives the same values and flags, in the arrays given; a wrong array is refused."""
    from gpumat.host.reference import materialize_staged_reference

    staged, _, _ = random_batch(seed, 13, 300, 700, 150, ("item", "act", "ts"), True)
    want, want_viol = materialize_staged_reference(staged)
    out = {c: np.full(staged.total, -7, dtype=np.dtype(staged.columns[c].dtype)) for c in want}
    got, viol = materialize_staged_reference(staged, out)
    assert np.array_equal(viol, want_viol)
    for c in want:
        assert got[c] is out[c] and np.array_equal(out[c], want[c]) and out[c].dtype == want[c].dtype
    bad = dict(out, act=np.zeros(staged.total + 1, dtype=out["act"].dtype))
    with pytest.raises(ValueError, match="act"):
        materialize_staged_reference(staged, bad)
