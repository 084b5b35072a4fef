"""The estimate before stripe tables (built since, DESIGN.md §1 "Stripe tables": a 16-byte table
head, a shortest copy of 3): a history stored as a table of its own values and, per event, a code
into that table.

Two shapes of ``short_histories.py``'s variants are where tuned Parquet beats the tier by most,
and both are a user repeating themselves, which zstd finds and the tier's blocks (each value on a
line over the segment's range) do not:

- ``replay``: a listening history, albums and playlists played again (ML-1M's item ids): runs of
  earlier events again, in order;
- ``favourites``: an artist or a creator per event, each user keeping to a few of their own.

Per user (one stripe), three ways to store a column, each as the writer would store its parts
(``host.pages``' own encoder, block size 128, one segment):

- **as now**: ``encode_column`` without stripe tables (blocks, segment dictionary and all);
- **literal table** (``pages.literal_tables``, the writer's parse since): each history parsed
  greedily into literals and copies, LZ77-style but against
  its *literal stream* only: at each event, the longest run of at least ``--min-match`` events
  equal to a run of the literals so far (the last 8 places each ``min-match`` literals were seen,
  a source at most ``--window`` literals back) is a copy, else the event is a literal. The table:
  the literals (``encode_column``); the codes: per event the index of its literal
  (``encode_stripes``: a literal run or a copy is a run of indices rising by 1, which DELTA blocks
  of slope 1 take, the jumps as exceptions);
- **frequency table**: the history's distinct values, most frequent first; the codes: their
  ranks (LEVELS, PATCH, RADIX blocks take small skewed codes);

plus a varint of the table's entries. Either table decodes as ``table[code]``: the kernels' DICT
lookup (a block's value line is an index into the column's dictionaries) reads it once the table
is decoded, with no new lane code. For comparison, the copies as **pieces** (three small
integers a copy, ``pieces``, as three columns of stripes: the literals since the last copy, the copy's length
past ``min-match``, its source's distance back in literals; a reader finds an event's piece, then
reads its literal): fewer bytes than codes, but a lookup the kernels do not have. Then per
stripe the smallest of as now and the two tables, against Parquet's column
(``short_histories.measure``). What a window read pays with literal tables: for each user's last
``--window-events`` events, the 128-literal blocks its codes point into, and the whole table's
blocks (what a reader that cannot see the codes before it reads must read), against the blocks
of the window as now. ::

    python profiling/stripe_tables_estimate.py [--variants real,replay,favourites] [--min-match 4] [--window 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import short_histories as sh  # noqa: E402

from gpumat.host import pages  # noqa: E402

BS = 128


def pieces(codes: np.ndarray, m: int) -> list:
    """One history's literal table codes (``pages.literal_tables``: each event's literal) as pieces
    ``(literals before it, copy length - m, source distance back in literals, output start, source
    literal)``: each a run of new literals, then a copy (a run of codes below the literals so far,
    rising by 1); a last run of literals is a piece whose copy fields are 0."""
    c = np.asarray(codes, np.int64)
    n = len(c)
    before = np.maximum.accumulate(np.r_[-1, c[:-1]]) + 1 if n else c  # the literals before each event
    copy = c < before
    start = copy.copy()
    start[1:] &= (c[1:] != c[:-1] + 1) | ~copy[:-1]
    out, at = [], 0
    s = np.flatnonzero(start).tolist()
    for a, b in zip(s, s[1:] + [n]):
        e = a + int(np.argmin(copy[a:b])) if not copy[a:b].all() else b  # the copy's end: the next literal
        out.append((int(before[a]) - at, e - a - m, int(before[a] - c[a]), a, int(c[a])))
        at = int(before[a])
    nl = int(before[-1] + (not copy[-1])) if n else 0
    if nl > at:
        out.append((nl - at, 0, 0, n, nl))
    return out


def literal_index(pieces: list, m: int) -> list:
    """Per event, the literal it is: ``pieces`` back to their codes (the estimate checks every
    user with it)."""
    idx, at = [], 0
    for run, extra, back, _start, src in pieces:
        idx += range(at, at + run)
        at += run
        if back:
            idx += range(src, src + extra + m)
    return idx


def window_blocks(n: int, pieces: list, m: int, last: int) -> tuple[int, int]:
    """The 128-literal blocks that the last ``last`` of ``n`` events read, and the blocks the same
    window reads without copies."""
    lo = max(0, n - last)
    plain = (n - 1) // BS - lo // BS + 1
    need = set()
    out = lit = 0  # each piece: literals [lit, lit + run) as events [out, start), then a copy from src
    for run, extra, back, start, src in pieces:
        a = max(out, lo)
        if a < start:
            need.update(range((lit + a - out) // BS, (lit + start - out - 1) // BS + 1))
        lit += run
        out = start
        if back:
            end = start + extra + m
            a = max(start, lo)
            if a < end:
                need.update(range((src + a - start) // BS, (src + end - start - 1) // BS + 1))
            out = end
    return len(need), plain


def _encoded(values, counts, dictionary: bool = True) -> tuple[int, np.ndarray]:
    """The writer's bytes of ``values`` as stripes of ``counts``, as it stored them before stripe
    tables: (shared: a segment dictionary, per stripe)."""
    v, c = np.asarray(values, np.int64), np.asarray(counts, np.int64)
    region, _off, nb, _enc = pages.encode_column(v, c, BS, tables=False) if dictionary else pages.encode_stripes(v, c, BS)
    return int(region.size - nb.sum()), nb.astype(np.int64)


def estimate(ev, column: str, m: int, window: int, last: int) -> dict:
    r = sh.measured(ev)
    u, x = sh._col(ev, "user_id"), sh._col(ev, column).astype(np.int64)
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1, len(u)]
    sc = np.diff(first)
    lits, lsc, idx = pages.literal_tables(x, sc, m, window)  # the writer's parse
    ftab, fsc, fcode = pages.frequency_tables(x, sc)
    toks, tsc = [], []
    blocks = plain = whole = 0
    lfirst = np.cumsum(lsc) - lsc
    for s, (a, b) in enumerate(zip(first[:-1].tolist(), first[1:].tolist())):
        pc = pieces(idx[a:b], m)
        if literal_index(pc, m) != idx[a:b].tolist():
            raise AssertionError(f"the pieces of the events {a}:{b} do not give their codes back")
        toks += [p[:3] for p in pc]
        tsc.append(len(pc))
        nb, pb = window_blocks(b - a, pc, m, last)
        blocks += nb
        plain += pb
        whole += -(-int(lsc[s]) // BS)
    if not (lits[np.repeat(lfirst, sc) + idx] == x).all():
        raise AssertionError("the literal tables do not give the events back")
    t = np.array(toks, np.int64).reshape(-1, 3)
    now_head, now = _encoded(x, sc)
    lit_head, lit_nb = _encoded(lits, lsc)
    _, lcode_nb = _encoded(idx, sc, dictionary=False)
    f_head, f_nb = _encoded(ftab, fsc)
    _, fcode_nb = _encoded(fcode, sc, dictionary=False)
    entries = pages.varint_len(np.array(lsc)), pages.varint_len(np.array(fsc))  # a table's entries, per stripe
    options = np.stack([now, lit_nb + lcode_nb + entries[0], f_nb + fcode_nb + entries[1]])
    pick = options.argmin(axis=0)
    best = int(options.min(axis=0).sum()) + sum(h for h, k in ((now_head, 0), (lit_head, 1), (f_head, 2)) if (pick == k).any())
    pieces_b = sum(int(pages.encode_stripes(t[:, k], np.array(tsc), BS)[0].size) for k in range(3))
    pq = r["parquet_columns"][column]
    sizes = {"now": now_head + int(now.sum()), "pieces": lit_head + int(lit_nb.sum()) + pieces_b,
             "literal_table": lit_head + int(options[1].sum()), "frequency_table": f_head + int(options[2].sum()),
             "per_stripe_best": best}
    return {"column": column, "events": len(x), "literals": len(lits), "distinct_per_stripe": len(ftab),
            "copies": int((t[:, 2] > 0).sum()), "parquet": pq, "bytes": sizes,
            "x_parquet": {k: v / pq for k, v in sizes.items()},
            "stripes_by_choice": dict(zip(["now", "literal_table", "frequency_table"], np.bincount(pick, minlength=3).tolist())),
            "window_events": last, "window_literal_blocks": blocks, "window_whole_table_blocks": whole,
            "window_blocks_without_copies": plain}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="real,replay,favourites")
    ap.add_argument("--min-match", type=int, default=4)
    ap.add_argument("--window", type=int, default=4096, help="a copy's source at most this many literals back")
    ap.add_argument("--window-events", type=int, default=200, help="the read estimate's window: each user's last N")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ev = sh.load_events("ml1m")
    out = {"dataset": "ml1m", "min_match": args.min_match, "window": args.window, "runs": {}}
    print("x Parquet's column (its bytes); stripes: the stripes that take each (as now / literal table / frequency table); "
          f"window: each user's last {args.window_events} events, the 128-value blocks they read (literal table: "
          "those its codes point into / the whole table / as now)\n")
    print("| variant | column | literals, distinct / events | as now | copies as pieces | literal table | frequency table | "
          "per stripe, the smallest | Parquet B | stripes | window |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in args.variants.split(","):
        shaped = sh.VARIANTS[v](ev, np.random.default_rng(0))
        for c in [sh.changes(v)] if sh.changes(v) else [c for c in shaped.column_names if c not in ("user_id", "ts")]:
            r = estimate(shaped, c, args.min_match, args.window, args.window_events)
            out["runs"][f"{v}:{c}"] = r
            x = r["x_parquet"]
            print(f"| {v} | {c} | {r['literals'] / r['events']:.2f}, {r['distinct_per_stripe'] / r['events']:.2f} | "
                  f"{x['now']:.3f} | {x['pieces']:.3f} | {x['literal_table']:.3f} | {x['frequency_table']:.3f} | "
                  f"**{x['per_stripe_best']:.3f}** | {r['parquet']:,} | "
                  f"{' / '.join(str(n) for n in r['stripes_by_choice'].values())} | {r['window_literal_blocks']:,} / "
                  f"{r['window_whole_table_blocks']:,} / {r['window_blocks_without_copies']:,} |", flush=True)
    sh.dump(out, args.json)
    return out


if __name__ == "__main__":
    main()
