"""``gpumat bench storage --events FILE``: your events stored as a tier and as tuned store-once Parquet.

The first question about a storage format is what it makes of one's own data. This stores the
events of one Parquet file (``user_id``, ``ts`` and integer columns, as ``gpumat ingest`` takes
them; other columns are left out, and said so) twice:

- as a tier: one append into a fresh tier, what the writer writes (segments with their indexes,
  chunk checksums and trailers, every byte of its data files);
- as tuned store-once Parquet (``host.fatrow.write_store_once``: sorted by user, zstd 3, ``ts``
  DELTA_BINARY_PACKED or what its encoding chooser finds smaller, dictionary on low-cardinality
  columns, 16k-row groups): the whole file, its ``user_id`` column and footer included;

and reports both files' bytes and, per column, the tier's blobs and dictionaries against
Parquet's column chunks, with what the column's fields add to the segment indexes beside them
(its blobs' offsets, sizes and encodings: ``index_share``). ``profiling/short_histories.py``
measures the same way, on MovieLens and shapes made from it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpumat.bench.util import check_outputs, environment, print_targets, report, require_matplotlib, scratch_dir


def events_for_tier(ev: pa.Table) -> tuple[pa.Table, list[str]]:
    """``(events, left out)``: ``user_id``, ``ts`` and the integer columns of ``ev`` in the tier's
    dtypes (int32 stays, any other integer type becomes int64), sorted by user, ties in ``ts`` then
    file order; and the names of the columns left out (not integers). No ``user_id`` or ``ts``
    column, or one that is not integers: ``SchemaError``."""
    from gpumat.core.errors import SchemaError
    from gpumat.host.schema import int_column

    for c in ("user_id", "ts"):
        if c not in ev.column_names:
            raise SchemaError(f"events: no {c!r} column; an events file has user_id, ts and integer columns "
                              f"(it has {', '.join(ev.column_names) or 'none'})")
        if not pa.types.is_integer(ev.schema.field(c).type):
            raise SchemaError(f"events column {c!r} is {ev.schema.field(c).type}; it must hold integers "
                              "(a timestamp as seconds or milliseconds)")
    keep = [c for c in ev.column_names if pa.types.is_integer(ev.schema.field(c).type)]
    dropped = [c for c in ev.column_names if c not in keep]
    # the tier's dtypes: int32 stays, any other integer type becomes int64 (a value that does not
    # fit, or a null: SchemaError, as gpumat ingest says it)
    dtype = {c: "int32" if c not in ("user_id", "ts") and ev.schema.field(c).type == pa.int32() else "int64" for c in keep}
    cols = {c: int_column(ev.column(c), dtype[c], f"events column {c!r}") for c in keep}
    order = np.lexsort((np.arange(ev.num_rows), cols["ts"], cols["user_id"]))
    return pa.table({c: v[order] for c, v in cols.items()}), dropped


def index_share(tier) -> dict:
    """Per column, the bytes its fields (blob offset, bytes, encoding: a constant stripe's value)
    add to the segment indexes: each index packed again (in its own form) without them, the difference."""
    from gpumat.host.segment import _encode_index

    r = tier._reader
    cols = list(r.schema)
    share = dict.fromkeys(cols, 0)
    for i in range(len(r.state.files)):
        s = r.segment(i)
        fields = {"user_id": s.user_id, "start": s.start, "count": s.count}
        if s.cont is not None:
            fields["cont"] = s.cont
        for c in cols:
            fields.update({f"{c}.off": s.off[c], f"{c}.nbytes": s.nwords[c], f"{c}.enc": s.enc[c]})
        form = s.form if s.form > 1 else None  # (as it was written: form 2 or 3; form 1 as this release would)
        whole = len(_encode_index(fields, cols, form=form))
        for c in cols:
            share[c] += whole - len(_encode_index(fields, [x for x in cols if x != c], form=form))
    return share


def compare_stored(ev: pa.Table, workdir: str) -> dict:
    """``ev`` (``events_for_tier``'s) stored as a fresh tier (one append) and as tuned store-once
    Parquet, both in ``workdir``: each file's bytes, each column's, and their ratios."""
    from gpumat.host.fatrow import store_once_table, write_store_once
    from gpumat.host.tier import Tier

    schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
    tier = Tier.create(os.path.join(workdir, "tier"), schema)
    t0 = time.perf_counter()
    tier.append(ev)
    append_s = time.perf_counter() - t0
    st = tier.stats()
    path = os.path.join(workdir, "store_once.parquet")
    file_bytes = write_store_once(store_once_table(tier), path)
    md = pq.ParquetFile(path).metadata
    pq_cols = {}
    for g in range(md.num_row_groups):
        for j in range(md.num_columns):
            c = md.row_group(g).column(j)
            pq_cols[c.path_in_schema] = pq_cols.get(c.path_in_schema, 0) + c.total_compressed_size
    tier_cols = {c: st["columns"][c]["bytes"] for c in schema}
    share = index_share(tier)
    return {
        "users": st["users"], "events": st["events"], "stripes": st["stripes"], "append_s": append_s,
        "tier_file": st["stored_bytes"], "tier_columns": tier_cols, "tier_index_share": share,
        "tier_other": st["stored_bytes"] - sum(tier_cols.values()),  # indexes, chunk checksums, trailers
        "parquet_file": file_bytes, "parquet_columns": pq_cols,
        "x_parquet": st["stored_bytes"] / file_bytes,
        "column_x_parquet": {c: tier_cols[c] / pq_cols[c] for c in schema},
        "column_with_index_x_parquet": {c: (tier_cols[c] + share[c]) / pq_cols[c] for c in schema},
    }


def run_events(args) -> dict:
    from gpumat.core.errors import SchemaError
    from gpumat.host.events import read_events_table

    if args.uri:
        raise SchemaError("--events measures a local tier and Parquet file; leave out --uri")
    if args.plot:
        require_matplotlib("--plot")
    check_outputs(args)
    say = print if args.json != "-" else (lambda *a, **k: None)
    ev, dropped = events_for_tier(read_events_table(args.events))
    if not ev.num_rows:
        raise SchemaError(f"events file {args.events!r} has no events")
    say(f"storing {ev.num_rows:,} events of {args.events} as a tier and as tuned store-once Parquet ...")
    with scratch_dir(args.workdir, "gpumat-bench-stored-") as workdir:
        r = compare_stored(ev, workdir)
    result = {"benchmark": "storage", "environment": environment(), "events_file": os.fspath(args.events),
              "left_out": dropped, "stored": r,
              "targets": {"tier <= tuned store-once Parquet": r["x_parquet"] <= 1.0,
                          "every column <= 1.25x Parquet's": max(r["column_x_parquet"].values(), default=0) <= 1.25}}
    report(result, args, _print_events, _plot_events, say)
    return result


def _print_events(r: dict) -> None:
    s = r["stored"]
    print(f"\n{r['events_file']}: {s['events']:,} events, {s['users']:,} users ({s['events'] / max(s['users'], 1):.1f} a user), "
          f"{s['stripes']:,} stripes; one append into a fresh tier in {s['append_s']:.1f} s")
    if r["left_out"]:
        print(f"(not integers, left out: {', '.join(r['left_out'])})")
    n = max(s["events"], 1)
    print(f"\n{'bytes':<16}{'tier':>13}{'+ index fields':>16}{'Parquet':>13}{'x Parquet':>11}{'(with fields)':>15}"
          f"{'tier B/event':>14}{'Parquet B/event':>17}")
    for c, b in s["tier_columns"].items():
        p, share = s["parquet_columns"][c], s["tier_index_share"][c]
        print(f"{c:<16}{b:>13,}{b + share:>16,}{p:>13,}{b / p:>11.3f}{(b + share) / p:>15.3f}{b / n:>14.3f}{p / n:>17.3f}")
    other_pq = s["parquet_file"] - sum(v for c, v in s["parquet_columns"].items() if c in s["tier_columns"])
    print(f"{'the rest':<16}{s['tier_other']:>13,}{'':>16}{other_pq:>13,}"
          f"   (tier: indexes with user ids and counts, checksums; Parquet: user_id, footer)")
    print(f"{'whole file':<16}{s['tier_file']:>13,}{'':>16}{s['parquet_file']:>13,}{s['x_parquet']:>11.3f}")
    print_targets(r["targets"])


def _plot_events(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["stored"]
    cols = list(s["tier_columns"])
    tier = [s["tier_columns"][c] + s["tier_index_share"][c] for c in cols] + [s["tier_file"]]
    parquet = [s["parquet_columns"][c] for c in cols] + [s["parquet_file"]]
    labels = cols + ["whole file"]
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 4))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [b / 1e6 for b in tier], 0.4, label="tier (a column with its index fields)")
    ax.bar(x + 0.2, [b / 1e6 for b in parquet], 0.4, label="tuned store-once Parquet")
    for i, (a, b) in enumerate(zip(tier, parquet)):
        ax.text(i, max(a, b) / 1e6, f"{a / b:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("MB stored")
    ax.set_title(f"{os.path.basename(r['events_file'])}: {s['events']:,} events, {s['users']:,} users")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
