"""Black-box differential test of SPEC.md through the public names and the CLI only.

A pure-Python oracle implements SPEC §1-§2 literally (user -> list of events, one snapshot of
lengths per version). Random programs (appends with odd integer widths and extremes, compactions,
reopened and pinned handles, examples with tails, tenants, leakage) run against gpumat with
``backend="reference"`` and ``backend="triton"`` (Triton's interpreter on CPU) and must agree with
the oracle bit for bit, dtypes included; every error must be the type SPEC §5 names. Then: killed
writers, concurrent writers, bit flips in every kind of stored file, and the CLI of SPEC §6.

Tests that take ``where`` run twice: on a local directory and on an ``s3://`` tier of a real S3 API
(moto's server on loopback, tests/s3server.py; SPEC §8). Bit flips on S3 are in test_objstore.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpumat
from gpumat import CorruptionError, GpumatError, LeakageError, PointerError, SchemaError, TierError
from s3server import BUCKET, s3  # noqa: F401 - the fixture


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """Where a test's tiers live: a local directory, or a fresh prefix of a bucket on a loopback S3."""
    if request.param == "local":
        return str(tmp_path)
    request.getfixturevalue("s3")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"

I64MIN, I64MAX = -(2**63), 2**63 - 1
I32MIN, I32MAX = -(2**31), 2**31 - 1
RANGE = {"int64": (I64MIN, I64MAX), "int32": (I32MIN, I32MAX)}
TORCH = {"int64": torch.int64, "int32": torch.int32}
INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
BACKENDS = ("reference", "triton")
STATS: dict[str, int] = {}
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _type_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_unsigned_integer(t):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def fitting_type(rng: random.Random, values) -> pa.DataType:
    """A random Arrow integer type that holds every value."""
    vmin, vmax = (min(values), max(values)) if values else (0, 0)
    ok = [t for t in INT_TYPES if _type_range(t)[0] <= vmin and vmax <= _type_range(t)[1]]
    return rng.choice(ok)


def rand_value(rng: random.Random, dtype: str) -> int:
    lo, hi = RANGE[dtype]
    r = rng.random()
    if r < 0.15:
        return rng.choice([lo, hi, lo + 1, hi - 1, 0, -1])
    if r < 0.3:
        return rng.randint(lo, hi)
    return rng.randint(-300, 300)


def rand_ts(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.04:
        return rng.choice([I64MIN, I64MAX])
    return rng.randint(0, 100)


# ------------------------------------------------------------------------------------------ oracle


MAX_STRIPE = 1 << 20  # docs/DESIGN.md §2: a stripe holds at most 2**20 events
MERGE_ABOVE, FAN_IN = 8, 4  # host/writer.py CompactionPolicy: when an append merges small data files


class Oracle:
    """SPEC §1-§2, literally: histories as lists of event dicts, a snapshot of lengths per version.

    Plus the one rule of a later issue that SPEC §1 does not have: ``compact`` commits a version only
    when it would store the histories in fewer pieces (stripes: an append stores each user's new events
    as ``ceil(k / MAX_STRIPE)`` pieces, a compaction each history as ``ceil(length / MAX_STRIPE)``) or
    fewer data files (each non-empty append writes one at level 0; once more than ``MERGE_ABOVE`` are at
    level 0, the next append merges them and its events into one at level 1, and once more than
    ``FAN_IN`` are at a level L >= 1, into one at level L+1; a compaction of these small tiers writes
    one); otherwise it commits nothing and returns the current version.
    """

    def __init__(self, schema: dict[str, str]):
        self.schema = dict(schema)
        self.hist: dict[int, list[dict]] = {}
        self.snap: list[dict[int, int]] = [{}]
        self.pieces: dict[int, int] = {}
        self.levels: dict[int, int] = {}  # data files per merge level

    @property
    def files(self) -> int:
        return sum(self.levels.values())

    @property
    def version(self) -> int:
        return len(self.snap) - 1

    def append(self, rows: list[tuple[int, dict]]) -> int:
        new: dict[int, int] = {}
        for u, ev in rows:
            self.hist.setdefault(u, []).append(dict(ev))
            new[u] = new.get(u, 0) + 1
        for u, k in new.items():
            self.pieces[u] = self.pieces.get(u, 0) + -(-k // MAX_STRIPE)
        if new:
            lv = self.levels
            due = [L for L in sorted(lv) if L >= 0 and lv[L] > (MERGE_ABOVE if L == 0 else FAN_IN)]
            if due and due[0] == 0:
                lv[0], lv[1] = 0, lv.get(1, 0) + 1
            else:
                if due:
                    lv[due[0]], lv[due[0] + 1] = 0, lv.get(due[0] + 1, 0) + 1
                lv[0] = lv.get(0, 0) + 1
        self.snap.append({u: len(h) for u, h in self.hist.items()})
        return self.version

    def compact(self) -> int:
        fewest = {u: -(-len(h) // MAX_STRIPE) for u, h in self.hist.items()}
        if any(self.pieces[u] > n for u, n in fewest.items()) or self.files > 1:
            self.pieces = fewest
            self.levels = {-1: 1}  # compaction's file: never merged
            self.snap.append(dict(self.snap[-1]))
        return self.version

    def length(self, u: int, v: int) -> int:
        return self.snap[v].get(u, 0)

    def users(self) -> list[int]:
        return sorted(self.hist)

    def materialize(self, examples: list[dict], columns, max_len: int, handle_version: int, check_leakage=True):
        """-> ("ok", offsets, {col: list}) or ("leak", [indices]) or ("pointer",)."""
        for e in examples:
            if e["version"] < 0 or e["length"] < 0 or e["version"] > handle_version:
                return ("pointer",)
            if e["length"] > self.length(e["user_id"], e["version"]):
                return ("pointer",)
        offsets, vals, leaks = [0], {c: [] for c in columns}, []
        for i, e in enumerate(examples):
            s = self.hist.get(e["user_id"], [])[: e["length"]] + list(e["tail"] or [])
            out = s[max(0, len(s) - max_len) :]
            if any(ev["ts"] >= e["request_ts"] for ev in out):
                leaks.append(i)
            offsets.append(offsets[-1] + len(out))
            for c in columns:
                vals[c].extend(ev[c] for ev in out)
        if check_leakage and leaks:
            return ("leak", leaks)
        return ("ok", offsets, vals)


# ------------------------------------------------------------------------------------------ tables


def events_table(rng: random.Random, schema, rows, odd_widths=True) -> pa.Table:
    cols = {}
    uids = [u for u, _ in rows]
    cols["user_id"] = pa.array(uids, fitting_type(rng, uids) if odd_widths else pa.int64())
    order = list(schema)
    rng.shuffle(order)  # column order of the table is free
    for c in order:
        vals = [ev[c] for _, ev in rows]
        if odd_widths and rng.random() < 0.6:
            cols[c] = pa.array(vals, fitting_type(rng, vals))
        else:
            cols[c] = pa.array(vals, pa.int32() if schema[c] == "int32" else pa.int64())
    return pa.table(cols)


def examples_table(rng: random.Random, schema, examples, with_tail: bool, extra=None) -> pa.Table:
    cols = {}
    for k in ("user_id", "version", "length", "request_ts"):
        vals = [e[k] for e in examples]
        cols[k] = pa.array(vals, fitting_type(rng, vals) if rng.random() < 0.3 else pa.int64())
    if with_tail:
        for c, dt in schema.items():
            lists = [[ev[c] for ev in e["tail"]] for e in examples]
            flat = [x for lst in lists for x in lst]
            vt = fitting_type(rng, flat) if rng.random() < 0.3 else (pa.int32() if dt == "int32" else pa.int64())
            cols["tail_" + c] = pa.array(lists, pa.list_(vt))
    if extra:
        cols.update(extra)
    keys = list(cols)
    rng.shuffle(keys)
    return pa.table({k: cols[k] for k in keys})


def rand_schema(rng: random.Random) -> dict[str, str]:
    names = rng.sample(["item_id", "action", "a", "zz", "Surface", "dwell_ms", "x1"], rng.randint(0, 4))
    schema = {"ts": "int64"}
    for n in names:
        schema[n] = rng.choice(["int64", "int32"])
    items = list(schema.items())
    rng.shuffle(items)
    return dict(items)


def rand_event(rng: random.Random, schema) -> dict:
    return {c: (rand_ts(rng) if c == "ts" else rand_value(rng, dt)) for c, dt in schema.items()}


def rand_rows(rng: random.Random, schema, known, n: int) -> list[tuple[int, dict]]:
    """n events; each column follows a random pattern (noise, constant, linear runs near the extremes)."""
    users = [rand_user(rng, known) for _ in range(n)]
    if rng.random() < 0.3:
        users = sorted(users)  # long runs of one user: blocks full of one history
    cols = {}
    for c, dt in schema.items():
        lo, hi = RANGE[dt]
        mode = rng.choice(["noise", "noise", "const", "linear", "linear_hi", "linear_lo"])
        if mode == "noise":
            vals = [rand_ts(rng) if c == "ts" else rand_value(rng, dt) for _ in range(n)]
        elif mode == "const":
            x = rand_value(rng, dt)
            vals = [x] * n
        else:
            step = rng.choice([0, 1, 3, -1, 1000])
            base = {"linear": rng.randint(-50, 50), "linear_hi": hi - abs(step) * n, "linear_lo": lo + abs(step) * n}[mode]
            vals = [base + step * i for i in range(n)]
            if rng.random() < 0.2 and n:
                vals[rng.randrange(n)] = rng.choice([lo, hi])
        cols[c] = vals
    return [(users[i], {c: cols[c][i] for c in schema}) for i in range(n)]


def rand_user(rng: random.Random, known) -> int:
    r = rng.random()
    if known and r < 0.6:
        return rng.choice(known)
    if r < 0.75:
        return rng.choice([I64MIN, I64MAX, 0, -1, 1, I64MIN + 1])
    return rng.randint(-5, 12)


def rand_examples(rng: random.Random, oracle: Oracle, handle_version: int, n: int, with_tail: bool) -> list[dict]:
    out = []
    for _ in range(n):
        u = rand_user(rng, oracle.users())
        v = rng.randint(0, handle_version)
        n_ = rng.randint(0, oracle.length(u, v))
        if rng.random() < 0.3:
            n_ = oracle.length(u, v)
        tail = [rand_event(rng, oracle.schema) for _ in range(rng.choice([0, 0, 1, 2, 5]))] if with_tail else []
        r = rng.random()
        rts = I64MAX if r < 0.5 else (rng.randint(0, 130) if r < 0.95 else I64MIN)
        out.append({"user_id": u, "version": v, "length": n_, "request_ts": rts, "tail": tail})
    return out


def rand_tenant(rng: random.Random, schema) -> gpumat.Tenant:
    cols = rng.sample(list(schema), rng.randint(0, len(schema)))
    L = rng.choice([0, 1, 2, 3, 5, 7, 1000, 2**40, I64MAX])
    return gpumat.Tenant("t%d" % rng.randint(0, 99), cols, L)


# ------------------------------------------------------------------------------------------ checks


def first_mismatch(got: list, want: list) -> str:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"first mismatch at {i}: got {g}, want {w} (len got {len(got)}, want {len(want)})"
    return f"lengths differ: got {len(got)}, want {len(want)}"


def check_batch(batch, expect, schema, columns, rng: random.Random, what: str):
    _, offsets, vals = expect
    B = len(offsets) - 1
    assert isinstance(batch, gpumat.JaggedBatch), what
    assert batch.offsets.dtype == torch.int64 and tuple(batch.offsets.shape) == (B + 1,), what
    assert batch.offsets.tolist() == offsets, f"{what}: offsets " + first_mismatch(batch.offsets.tolist(), offsets)
    assert batch.lengths.dtype == torch.int64 and tuple(batch.lengths.shape) == (B,), what
    assert batch.lengths.tolist() == [offsets[i + 1] - offsets[i] for i in range(B)], what
    assert set(batch.values) == set(columns), f"{what}: columns {list(batch.values)} != {list(columns)}"
    for c in columns:
        t = batch.values[c]
        assert t.dtype == TORCH[schema[c]], f"{what}: column {c} dtype {t.dtype}, schema {schema[c]}"
        assert tuple(t.shape) == (offsets[-1],), f"{what}: column {c} shape {tuple(t.shape)}"
        got = t.tolist()
        assert got == vals[c], f"{what}: column {c}: " + first_mismatch(got, vals[c])
    # to_padded: default width, explicit width, pad value
    longest = max((offsets[i + 1] - offsets[i] for i in range(B)), default=0)
    for width in (None, longest + rng.randint(0, 3)):
        pad = rng.choice([0, -1, 7, -(2**31)])
        dense = batch.to_padded(pad_value=pad, width=width) if width is not None or rng.random() < 0.5 else batch.to_padded(pad_value=pad)
        W = longest if width is None else width
        assert set(dense) == set(columns), what
        for c in columns:
            d = dense[c]
            assert d.dtype == TORCH[schema[c]] and tuple(d.shape) == (B, W), f"{what}: padded {c} {d.dtype} {tuple(d.shape)}"
            want = [vals[c][offsets[i] : offsets[i + 1]] + [pad] * (W - (offsets[i + 1] - offsets[i])) for i in range(B)]
            assert d.tolist() == want, f"{what}: padded {c}"
    if longest > 0:
        with pytest.raises(SchemaError):
            batch.to_padded(width=longest - 1)


def run_and_compare(tier, ex_table, examples, tenant, oracle: Oracle, rng: random.Random, what: str):
    handle_v = tier.version
    for check in (True, False):
        expect = oracle.materialize(examples, tenant.columns, tenant.max_len, handle_v, check)
        STATS[expect[0]] = STATS.get(expect[0], 0) + 1
        for be in BACKENDS + ("auto",):
            tag = f"{what} backend={be} check_leakage={check} tenant={tenant}"
            kw = dict(backend=be, device=rng.choice(["cpu", torch.device("cpu")]))
            if not check:
                kw["check_leakage"] = False
            if expect[0] == "pointer":
                with pytest.raises(PointerError):
                    gpumat.materialize(tier, ex_table, tenant, **kw)
            elif expect[0] == "leak":
                with pytest.raises(LeakageError) as ei:
                    gpumat.materialize(tier, ex_table, tenant, **kw)
                got = sorted(int(i) for i in np.asarray(ei.value.indices).ravel())
                assert got == expect[1], f"{tag}: leakage indices {got} != {expect[1]}"
            else:
                batch = gpumat.materialize(tier, ex_table, tenant, **kw)
                check_batch(batch, expect, oracle.schema, tenant.columns, rng, tag)
        if expect[0] != "leak":
            break  # without a leak, check_leakage=False must give the same; checked once per program below


def check_lengths(tier, oracle: Oracle, rng: random.Random):
    users = oracle.users() + [I64MIN, I64MAX, 123456789]
    for v in sorted({0, tier.version, rng.randint(0, tier.version)}):
        want = [oracle.length(u, v) for u in users]
        got = tier.lengths(users, version=v)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64, type(got)
        assert got.tolist() == want, f"lengths at version {v}: {got.tolist()} != {want}"
    got = tier.lengths(np.asarray(users, dtype=np.int64))
    assert got.tolist() == [oracle.length(u, tier.version) for u in users]
    small = [u for u in users if I32MIN <= u <= I32MAX]
    got = tier.lengths(np.asarray(small, dtype=np.int32))
    assert got.tolist() == [oracle.length(u, tier.version) for u in small]
    got = tier.lengths(pa.array(users, pa.int64()))
    assert got.tolist() == [oracle.length(u, tier.version) for u in users]
    assert tier.lengths([]).tolist() == []
    with pytest.raises(TierError):
        tier.lengths(users, version=tier.version + 1)
    with pytest.raises(TierError):
        tier.lengths(users, version=-1)


# ------------------------------------------------------------------------------------------ random programs


def bad_append(rng: random.Random, tier, uri, schema, oracle: Oracle):
    """An append that violates §3; it must raise SchemaError and commit nothing."""
    rows = [(rand_user(rng, oracle.users()), rand_event(rng, schema)) for _ in range(rng.randint(1, 4))]
    t = events_table(rng, schema, rows, odd_widths=False)
    kind = rng.choice(["range32", "uint64", "float", "null", "missing", "extra", "string_uid", "null_uid"])
    cols32 = [c for c, dt in schema.items() if dt == "int32"]
    if kind == "range32" and cols32:
        c = rng.choice(cols32)
        vals = [rng.choice([I32MAX + 1, I32MIN - 1, I64MAX])] + [ev[c] for _, ev in rows][1:]
        t = t.set_column(t.column_names.index(c), c, pa.array(vals, pa.int64()))
    elif kind in ("range32", "uint64"):
        c = rng.choice(list(schema) + ["user_id"])
        t = t.set_column(t.column_names.index(c), c, pa.array([2**63] + [0] * (t.num_rows - 1), pa.uint64()))
    elif kind == "float":
        c = rng.choice(list(schema) + ["user_id"])
        t = t.set_column(t.column_names.index(c), c, pa.array([1.0] * t.num_rows, pa.float64()))
    elif kind == "null":
        c = rng.choice(list(schema))
        t = t.set_column(t.column_names.index(c), c, pa.array([None] + [0] * (t.num_rows - 1), pa.int64()))
    elif kind == "missing":
        c = rng.choice(list(schema) + ["user_id"])
        t = t.drop_columns([c])
    elif kind == "extra":
        t = t.append_column(rng.choice(["extra", "tail_ts", "label"]), pa.array([0] * t.num_rows, pa.int64()))
    elif kind == "string_uid":
        t = t.set_column(t.column_names.index("user_id"), "user_id", pa.array(["1"] * t.num_rows))
    else:
        t = t.set_column(t.column_names.index("user_id"), "user_id", pa.array([None] * t.num_rows, pa.int64()))
    v0 = tier.version
    with pytest.raises(SchemaError):
        tier.append(t)
    assert tier.version == v0, kind
    assert gpumat.Tier.open(uri).version == v0, f"{kind}: a failed append committed a version"


def random_program(seed: int, root: str, n_ops: int = 7, n_checks: int = 3, files: str | None = None):
    rng = random.Random(seed)
    schema = rand_schema(rng)
    uri = os.path.join(root, f"tier{seed}")
    root = files or root  # where the Parquet inputs go (a local directory for an s3:// tier)
    tier = gpumat.Tier.create(uri, schema)
    assert tier.version == 0 and tier.schema == schema, (tier.schema, schema)
    oracle = Oracle(schema)
    for _ in range(n_ops):
        r = rng.random()
        if r < 0.6:
            rows = rand_rows(rng, schema, oracle.users(), rng.choice([0, 1, 3, 8, 20, 150, 300]))
            events = events_table(rng, schema, rows)
            r2 = rng.random()
            if r2 < 0.15:  # a Parquet path
                path = os.path.join(root, f"ev{seed}_{oracle.version}.parquet")
                pq.write_table(events, path)
                events = path
            elif r2 < 0.25 and events.num_rows:
                events = events.combine_chunks().to_batches()[0]
            elif r2 < 0.35 and events.num_rows > 2:  # several chunks
                events = pa.concat_tables([events.slice(0, 2), events.slice(2)])
            v = tier.append(events)
            assert v == oracle.append(rows) == tier.version
        elif r < 0.8:
            assert tier.compact() == oracle.compact() == tier.version
        else:
            bad_append(rng, tier, uri, schema, oracle)
    check_lengths(tier, oracle, rng)
    handles = [tier, gpumat.Tier.open(uri)]
    for _ in range(n_checks):
        pin = rng.randint(0, oracle.version)
        handles.append(gpumat.Tier.open(uri, version=pin))
    for h in handles:
        assert h.schema == schema
    for i in range(n_checks + 2):
        h = handles[i % len(handles)]
        check_lengths(h, oracle, rng)
        with_tail = rng.random() < 0.6
        exs = rand_examples(rng, oracle, h.version, rng.choice([0, 1, 3, 6]), with_tail)
        extra = {"label": pa.array([float(j) for j in range(len(exs))])} if rng.random() < 0.3 else None
        tab = examples_table(rng, schema, exs, with_tail, extra)
        if rng.random() < 0.2:
            path = os.path.join(root, f"ex{seed}_{i}.parquet")
            pq.write_table(tab, path)
            tab = path
        elif rng.random() < 0.2 and len(exs) > 1:  # several chunks, sliced list arrays
            tab = pa.concat_tables([tab.slice(0, 1), tab.slice(1)])
        tenant = rand_tenant(rng, schema)
        run_and_compare(h, tab, exs, tenant, oracle, rng, f"seed {seed} handle v{h.version}")
        # check_leakage=False on a non-leaking batch: same result as with the check
        exp = oracle.materialize(exs, tenant.columns, tenant.max_len, h.version, False)
        be = rng.choice(BACKENDS)
        check_batch(gpumat.materialize(h, tab, tenant, backend=be, check_leakage=False), exp, schema, tenant.columns, rng,
                    f"seed {seed} {be} no check")
    # pinned handles are read-only
    pinned = handles[-1]
    with pytest.raises(TierError):
        pinned.append(events_table(rng, schema, []))
    with pytest.raises(TierError):
        pinned.compact()
    assert pinned.refresh() == pinned.version
    return tier, oracle


@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**31))
def test_random_programs(seed, tmp_path_factory):
    random_program(seed, str(tmp_path_factory.mktemp("prog")))


@settings(max_examples=6, **SETTINGS)
@given(seed=st.integers(0, 2**31))
def test_random_programs_s3(seed, s3, tmp_path_factory):
    random_program(seed, f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}", files=str(tmp_path_factory.mktemp("prog")))


@settings(max_examples=12, **SETTINGS)
@given(seed=st.integers(0, 2**31), s3_store=st.sampled_from([False, False, True]))
def test_random_programs_packed(seed, s3_store, s3, tmp_path_factory):
    """The same programs with the writer made to pack every run of short histories it can
    (DESIGN.md §2: packs are otherwise kept only where they save 1/8 of a large segment's bytes)."""
    from gpumat.host import writer

    files = str(tmp_path_factory.mktemp("prog"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "PACK_MIN_ROWS", 0)
        mp.setattr(writer, "PACK_MIN_SAVING", -1.0)
        random_program(seed, f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}" if s3_store else files, files=files)


def test_pointer_errors_random(where):
    """Pointers outside §1's bounds: PointerError on both backends, for the handle's version."""
    rng = random.Random(5)
    schema = {"ts": "int64", "item_id": "int32"}
    tier = gpumat.Tier.create(f"{where}/t", schema)
    oracle = Oracle(schema)
    for k in range(3):
        rows = [(u, {"ts": k, "item_id": u % 1000}) for u in (1, 2, 2, I64MAX)]
        tier.append(events_table(rng, schema, rows))
        oracle.append(rows)
    pinned = gpumat.Tier.open(f"{where}/t", version=1)
    tenant = gpumat.Tenant("t", ["item_id"], 10)
    good = {"user_id": 2, "version": 1, "length": 2, "request_ts": 100, "tail": []}
    bads = [
        dict(good, version=4),
        dict(good, version=-1),
        dict(good, length=-1),
        dict(good, length=3),
        dict(good, version=0, length=1),
        dict(good, user_id=99, length=1),
        dict(good, version=I64MAX),
        dict(good, length=I64MAX),
        dict(good, version=I64MIN),
    ]
    for bad in bads:
        for h, hv in ((tier, 3), (pinned, 1)):
            exs = [good, bad] if rng.random() < 0.5 else [bad]
            assert oracle.materialize(exs, ["item_id"], 10, hv)[0] == "pointer" or bad["version"] <= hv
            tab = examples_table(rng, schema, exs, False)
            exp = oracle.materialize(exs, ["item_id"], 10, hv)
            for be in BACKENDS:
                if exp[0] == "pointer":
                    with pytest.raises(PointerError):
                        gpumat.materialize(h, tab, tenant, backend=be)
                else:
                    check_batch(gpumat.materialize(h, tab, tenant, backend=be), exp, schema, ["item_id"], rng, str(bad))
    # pointers at the handle's version on a pinned handle are fine; version 2 is beyond it
    tab = examples_table(rng, schema, [dict(good, version=2)], False)
    with pytest.raises(PointerError):
        gpumat.materialize(pinned, tab, tenant, backend="reference")
    # PointerError is a ValueError
    assert issubclass(PointerError, ValueError) and issubclass(SchemaError, ValueError)
    for cls in (TierError, SchemaError, PointerError, LeakageError, CorruptionError):
        assert issubclass(cls, GpumatError), cls


def test_stale_handles_alternate(where):
    """Two handles append alternately: a stale handle appends on top of the latest; no event is lost."""
    rng = random.Random(11)
    schema = {"ts": "int64", "v": "int64"}
    a = gpumat.Tier.create(f"{where}/t", schema)
    b = gpumat.Tier.open(f"{where}/t")
    oracle = Oracle(schema)
    for k in range(8):
        h = a if k % 2 == 0 else b
        rows = [(rng.choice([1, 2, I64MIN]), {"ts": k, "v": k * 10 + j}) for j in range(rng.randint(0, 4))]
        if k == 5:
            assert h.compact() == oracle.compact()
        else:
            assert h.append(events_table(rng, schema, rows)) == oracle.append(rows)
        assert h.version == oracle.version
    assert a.version == oracle.version - 1 and b.version == oracle.version
    assert a.refresh() == oracle.version
    check_lengths(a, oracle, rng)
    exs = [{"user_id": u, "version": oracle.version, "length": oracle.length(u, oracle.version), "request_ts": I64MAX, "tail": []}
           for u in (1, 2, I64MIN, 3)]
    run_and_compare(b, examples_table(rng, schema, exs, False), exs, gpumat.Tenant("x", ["v", "ts"], 100), oracle, rng, "stale")


# ------------------------------------------------------------------------------------------ errors (§5)


@pytest.fixture()
def small_uri(where):
    return f"{where}/t"


@pytest.fixture()
def small_tier(small_uri):
    schema = {"ts": "int64", "item_id": "int64", "action": "int32"}
    tier = gpumat.Tier.create(small_uri, schema)
    tier.append(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 3], "item_id": [10, 11, 12], "action": pa.array([0, 1, 2], pa.int32())}))
    return tier


def test_tier_errors(where, tmp_path, small_tier, small_uri):
    uri = small_uri
    with pytest.raises(TierError):
        gpumat.Tier.create(uri, {"ts": "int64"})
    with pytest.raises(TierError):
        gpumat.Tier.open(f"{where}/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TierError):
        gpumat.Tier.open(tmp_path / "empty")
    for v in (2, -1, 10**6):
        with pytest.raises(TierError):
            gpumat.Tier.open(uri, version=v)
    for v in (0, 1):
        assert gpumat.Tier.open(uri, version=v).version == v
    pinned = gpumat.Tier.open(uri, version=0)
    for v in (1, -1):
        with pytest.raises(TierError):
            pinned.lengths([1], version=v)
    assert pinned.lengths([1, 2]).tolist() == [0, 0]
    with pytest.raises(TierError):
        pinned.append(pa.table({"user_id": [1], "ts": [1], "item_id": [1], "action": [1]}))
    with pytest.raises(TierError):
        pinned.compact()
    assert gpumat.Tier.open(uri).version == 1
    # a tier created again at the same path after the first handle wrote: still TierError
    with pytest.raises(TierError):
        gpumat.Tier.create(uri, {"ts": "int64", "item_id": "int64", "action": "int32"})


@pytest.mark.parametrize(
    "schema",
    [
        {},
        {"item_id": "int64"},
        {"ts": "int32"},
        {"ts": "int64", "x": "float32"},
        {"ts": "int64", "x": "int16"},
        {"ts": "int64", "user_id": "int64"},
        {"ts": "int64", "tail_x": "int64"},
        {"ts": "int64", "x": None},
        {"ts": "int64", 3: "int64"},
        "ts:int64",
        None,
    ],
)
def test_bad_schemas(tmp_path, schema):
    with pytest.raises(SchemaError):
        gpumat.Tier.create(tmp_path / "t", schema)
    with pytest.raises(TierError):  # nothing was created
        gpumat.Tier.open(tmp_path / "t")


def test_event_errors_commit_nothing(small_tier, small_uri):
    base = {"user_id": [5, 6], "ts": [1, 2], "item_id": [1, 2], "action": pa.array([1, 2], pa.int32())}
    cases = [
        {k: v for k, v in base.items() if k != "action"},
        {k: v for k, v in base.items() if k != "ts"},
        {k: v for k, v in base.items() if k != "user_id"},
        dict(base, extra=[1, 2]),
        dict(base, item_id=pa.array([1.0, 2.0])),
        dict(base, item_id=pa.array(["a", "b"])),
        dict(base, ts=pa.array([1, None], pa.int64())),
        dict(base, user_id=pa.array([1, None], pa.int64())),
        dict(base, action=pa.array([I32MAX + 1, 0], pa.int64())),
        dict(base, action=pa.array([2**31, 0], pa.uint32())),
        dict(base, item_id=pa.array([2**63, 0], pa.uint64())),
        dict(base, user_id=pa.array([2**64 - 1, 0], pa.uint64())),
        dict(base, ts=pa.array([1, 2], pa.timestamp("s"))),
        dict(base, action=pa.array([True, False])),
    ]
    for c in cases:
        with pytest.raises(SchemaError):
            small_tier.append(pa.table(c))
        assert gpumat.Tier.open(small_uri).version == 1
    with pytest.raises(SchemaError):
        small_tier.append({"user_id": [1], "ts": [1]})
    assert gpumat.Tier.open(small_uri).version == 1
    # widths that fit are accepted; an empty table commits a version
    ok = dict(base, user_id=pa.array([5, 6], pa.uint8()), ts=pa.array([1, 2], pa.int8()),
              item_id=pa.array([2**32 - 1, 0], pa.uint32()), action=pa.array([65535, 0], pa.uint16()))
    assert small_tier.append(pa.table(ok)) == 2
    assert small_tier.append(pa.table({k: pa.array([], pa.int64()) for k in base})) == 3
    assert small_tier.lengths([5, 6]).tolist() == [1, 1]


def _ex(**kw):
    base = {"user_id": [1, 2], "version": [1, 1], "length": [2, 1], "request_ts": [100, 100]}
    base.update(kw)
    return pa.table({k: v for k, v in base.items() if v is not None})


TAILS = {"tail_ts": [[5], []], "tail_item_id": [[7], []], "tail_action": pa.array([[1], []], pa.list_(pa.int32()))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_example_errors(small_tier, backend):
    tn = gpumat.Tenant("t", ["item_id", "action"], 8)
    schema_cases = [
        _ex(user_id=None),
        _ex(version=None),
        _ex(length=None),
        _ex(request_ts=None),
        _ex(**{"tail_ts": TAILS["tail_ts"]}),  # partial tail columns
        _ex(**{k: v for k, v in TAILS.items() if k != "tail_action"}),
        _ex(**TAILS, tail_bogus=[[1], []]),  # tail_x for unknown x
        _ex(tail_bogus=[[1], []]),
        _ex(**dict(TAILS, tail_ts=[[5, 6], []])),  # unequal tail lengths inside a row
        _ex(**dict(TAILS, tail_item_id=[[], [7]])),
        _ex(**dict(TAILS, tail_ts=[[5], None])),  # null list
        _ex(**dict(TAILS, tail_ts=pa.array([[None], []], pa.list_(pa.int64())))),  # null value
        _ex(**dict(TAILS, tail_action=pa.array([[I32MAX + 1], []], pa.list_(pa.int64())))),  # out of range
        _ex(**dict(TAILS, tail_ts=pa.array([[1.5], []], pa.list_(pa.float64())))),
        _ex(**dict(TAILS, tail_ts=pa.array([5, 6], pa.int64()))),  # not a list
        _ex(user_id=pa.array([1, None], pa.int64())),
        _ex(request_ts=pa.array([1.0, 2.0])),
        _ex(version=pa.array([2**63, 1], pa.uint64())),
        _ex(length=pa.array(["2", "1"])),
        _ex(user_id=pa.array([2**64 - 1, 1], pa.uint64())),
    ]
    for i, t in enumerate(schema_cases):
        with pytest.raises(SchemaError):
            gpumat.materialize(small_tier, t, tn, backend=backend)
    # fitting widths are accepted, including list<int8> tails and uint8 pointers
    t = _ex(user_id=pa.array([1, 2], pa.uint8()), version=pa.array([1, 1], pa.int8()), length=pa.array([2, 1], pa.uint16()),
            request_ts=pa.array([100, 100], pa.int32()), tail_ts=pa.array([[5], []], pa.list_(pa.int8())),
            tail_item_id=pa.array([[7], []], pa.list_(pa.uint32())), tail_action=pa.array([[1], []], pa.list_(pa.int8())))
    b = gpumat.materialize(small_tier, t, tn, backend=backend)
    assert b.offsets.tolist() == [0, 3, 4] and b.values["item_id"].tolist() == [10, 11, 7, 12]
    assert b.values["action"].dtype == torch.int32 and b.values["action"].tolist() == [0, 1, 1, 2]
    # tenants
    with pytest.raises(SchemaError):
        gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["nope"], 3), backend=backend)
    with pytest.raises(SchemaError):
        gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["user_id"], 3), backend=backend)
    with pytest.raises(SchemaError):
        gpumat.Tenant("t", ["item_id"], -1)
    # padding width below the longest row
    b = gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["item_id"], 8), backend=backend)
    with pytest.raises(SchemaError):
        b.to_padded(width=1)
    assert b.to_padded(width=2)["item_id"].tolist() == [[10, 11], [12, 0]]
    # empty batch
    empty = pa.table({k: pa.array([], pa.int64()) for k in ("user_id", "version", "length", "request_ts")})
    b = gpumat.materialize(small_tier, empty, gpumat.Tenant("t", ["item_id", "action"], 8), backend=backend)
    assert b.offsets.tolist() == [0] and b.lengths.tolist() == [] and b.values["action"].dtype == torch.int32
    assert b.to_padded()["item_id"].shape == (0, 0)


def test_tenant_extremes(small_tier):
    """max_len has no upper bound in SPEC; a pad value must fit the columns (else a typed error)."""
    for L in (2**63 - 1, 2**63, 2**64 + 3, 10**30, np.uint64(2**64 - 1)):
        for be in BACKENDS:
            b = gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["action", "ts"], L), backend=be)
            assert b.offsets.tolist() == [0, 2, 3] and b.values["action"].tolist() == [0, 1, 2]
    b = gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["action", "item_id"], 5), backend="reference")
    assert b.to_padded(pad_value=I32MIN)["action"].tolist() == [[0, 1], [2, I32MIN]]
    for bad in (I32MAX + 1, 2**63, 1.5, None):
        with pytest.raises(SchemaError):
            b.to_padded(pad_value=bad)
    for bad in (1.0, "3", -1):
        with pytest.raises(SchemaError):
            b.to_padded(width=bad)


def test_tenant_columns_any_iterable(small_tier):
    t = gpumat.Tenant("t", (c for c in ["item_id", "ts"]), 4)
    b = gpumat.materialize(small_tier, _ex(), t, backend="reference")
    assert set(b.values) == {"item_id", "ts"} and b.values["item_id"].tolist() == [10, 11, 12]
    for bad in ("item_id", 3, ["item_id", 3], ["ts", "ts"]):
        with pytest.raises(SchemaError):
            gpumat.Tenant("t", bad, 4)


def test_unknown_backend(small_tier):
    for be in ("cuda", "fast", "", None, "REFERENCE"):
        with pytest.raises(SchemaError):
            gpumat.materialize(small_tier, _ex(), gpumat.Tenant("t", ["item_id"], 8), backend=be)


def test_leakage_only_on_materialized_events(small_tier):
    """Leakage is judged on the events kept after truncation, whether or not the tenant reads ts."""
    t = _ex(request_ts=[2, 4])  # user 1: ts [1, 2]; keeping the newest 1 event (ts 2) leaks, newest 0 does not
    for be in BACKENDS:
        for cols in (["item_id"], ["ts"], []):
            with pytest.raises(LeakageError) as ei:
                gpumat.materialize(small_tier, t, gpumat.Tenant("t", cols, 1), backend=be)
            assert sorted(np.asarray(ei.value.indices).tolist()) == [0]
            b = gpumat.materialize(small_tier, t, gpumat.Tenant("t", cols, 0), backend=be)
            assert b.offsets.tolist() == [0, 0, 0]
            b = gpumat.materialize(small_tier, t, gpumat.Tenant("t", cols, 1), backend=be, check_leakage=False)
            assert b.offsets.tolist() == [0, 1, 2]
        t2 = _ex(request_ts=[3, 3], length=[1, 1])  # ts 1 < 3 and ts 3 >= 3 -> example 1
        with pytest.raises(LeakageError) as ei:
            gpumat.materialize(small_tier, t2, gpumat.Tenant("t", ["item_id"], 9), backend=be)
        assert sorted(np.asarray(ei.value.indices).tolist()) == [1]


def test_triton_on_cpu_without_interpreter(small_tier, small_uri):
    code = textwrap.dedent(
        f"""
        import sys, pyarrow as pa, gpumat
        tier = gpumat.Tier.open({small_uri!r})
        ex = pa.table({{"user_id": [1], "version": [1], "length": [2], "request_ts": [100]}})
        try:
            gpumat.materialize(tier, ex, gpumat.Tenant("t", ["item_id"], 4), backend="triton", device="cpu")
        except gpumat.GpumatError as e:
            print("ERR", type(e).__name__, e)
            sys.exit(0)
        print("NOERR")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERR"), r.stdout
    msg = r.stdout.lower()
    assert "reference" in msg and "triton_interpret=1" in msg, r.stdout
    # auto never picks the interpreter, and works everywhere
    code2 = code.replace('backend="triton"', 'backend="auto"')
    r = subprocess.run([sys.executable, "-c", code2], env=env, capture_output=True, text=True, timeout=120)
    assert "NOERR" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ crashes


WRITER = textwrap.dedent(
    """
    import sys, pyarrow as pa, gpumat
    uri, start = sys.argv[1], int(sys.argv[2])
    tier = gpumat.Tier.open(uri)
    print("ready", flush=True)
    i = start
    while True:
        if i % 4 == 3:
            tier.compact()
        else:
            n = 200 + 37 * i
            tier.append(pa.table({"user_id": [(k * 7919 + i) % 13 for k in range(n)], "ts": [i] * n,
                                  "v": [i * 100000 + k for k in range(n)]}))
        i += 1
    """
)


def writer_op(i):
    if i % 4 == 3:
        return None
    n = 200 + 37 * i
    return [((k * 7919 + i) % 13, {"ts": i, "v": i * 100000 + k}) for k in range(n)]


def full_check(uri, oracle: Oracle, rng, backends=("reference",)):
    tier = gpumat.Tier.open(uri)
    assert tier.version == oracle.version
    check_lengths(tier, oracle, rng)
    for v in sorted({0, oracle.version, rng.randint(0, oracle.version)}):
        exs = [{"user_id": u, "version": v, "length": oracle.length(u, v), "request_ts": I64MAX, "tail": []} for u in oracle.users()]
        run_and_compare(gpumat.Tier.open(uri, version=v), examples_table(rng, oracle.schema, exs, False), exs,
                        gpumat.Tenant("all", list(oracle.schema), 10**9), oracle, rng, f"v{v}")


def test_killed_writer(where):
    rng = random.Random(3)
    schema = {"ts": "int64", "v": "int64"}
    uri = f"{where}/t"
    gpumat.Tier.create(uri, schema)
    oracle = Oracle(schema)
    op = 0
    for delay in (0.05, 0.23, 0.41, 0.6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, uri, str(op)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay + rng.random() * 0.1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        committed = gpumat.Tier.open(uri).version
        while oracle.version < committed:
            rows = writer_op(op)
            oracle.compact() if rows is None else oracle.append(rows)
            op += 1
        full_check(uri, oracle, rng)
    # the tier stays writable after the kills (no stuck lock)
    tier = gpumat.Tier.open(uri)
    tier.append(events_table(rng, schema, [(1, {"ts": 1, "v": 1})]))
    oracle.append([(1, {"ts": 1, "v": 1})])
    tier.compact()
    oracle.compact()
    full_check(uri, oracle, rng, BACKENDS)


CONCURRENT = textwrap.dedent(
    """
    import sys, pyarrow as pa, gpumat
    uri, me = sys.argv[1], int(sys.argv[2])
    tier = gpumat.Tier.open(uri)
    for i in range(12):
        if i % 5 == 4:
            tier.compact()
        else:
            tier.append(pa.table({"user_id": [1, 2, 1], "ts": [me, me, me], "v": [i * 10 + me, i, i * 10 + me]}))
    """
)


def test_concurrent_writers_lose_nothing(where):
    uri = f"{where}/t"
    gpumat.Tier.create(uri, {"ts": "int64", "v": "int64"})
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, uri, str(me)]) for me in (1, 2, 3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    tier = gpumat.Tier.open(uri)
    # 30 appends; of the 6 compactions, one that finds nothing to compact (another writer's compaction
    # came just before it) commits nothing, but the first always has work
    ops = [r["operation"] for r in tier.versions()]
    assert ops.count("append") == 30 and 1 <= ops.count("compact") <= 6 and tier.version == len(ops) - 1
    assert tier.lengths([1, 2]).tolist() == [3 * 10 * 2, 3 * 10]
    ex = pa.table({"user_id": [1], "version": [tier.version], "length": [60], "request_ts": [I64MAX]})
    b = gpumat.materialize(tier, ex, gpumat.Tenant("t", ["ts", "v"], 100), backend="reference")
    ts, v = b.values["ts"].tolist(), b.values["v"].tolist()
    for me in (1, 2, 3):
        mine = [x for t, x in zip(ts, v) if t == me]
        want = [i * 10 + me for i in range(12) if i % 5 != 4 for _ in range(2)]
        assert mine == want, (me, mine)


# ------------------------------------------------------------------------------------------ bit flips


def test_bit_flips(tmp_path):
    rng = random.Random(17)
    schema = {"ts": "int64", "item_id": "int64", "action": "int32"}
    src = str(tmp_path / "src")
    tier = gpumat.Tier.create(src, schema)
    oracle = Oracle(schema)
    for k in range(4):
        rows = [(rand_user(rng, oracle.users()), rand_event(rng, schema)) for _ in range(rng.choice([5, 40, 300]))]
        for _, ev in rows:
            ev["ts"] = rng.randint(0, 50)
        tier.append(events_table(rng, schema, rows))
        oracle.append(rows)
        if k == 2:
            tier.compact()
            oracle.compact()
    files = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs
                   if os.path.getsize(os.path.join(d, f)) > 0)
    kinds = {f.split("/")[0] for f in files}
    assert {"_log", "_data"} <= kinds, kinds
    n = 0
    wrong = []
    for f in files:
        size = os.path.getsize(os.path.join(src, f))
        for trial in range(4):
            dst = str(tmp_path / f"c{n}")
            n += 1
            shutil.copytree(src, dst)
            bit = rng.randrange(size * 8) if trial else rng.randrange(max(0, size - 64) * 8, size * 8)  # trailers too
            with open(os.path.join(dst, f), "r+b") as fh:
                fh.seek(bit // 8)
                byte = fh.read(1)[0]
                fh.seek(bit // 8)
                fh.write(bytes([byte ^ (1 << (bit % 8))]))
            try:
                check_flipped(dst, oracle, rng)
            except CorruptionError:
                pass
            except Exception as e:  # noqa: BLE001 - any other outcome is a divergence
                wrong.append(f"{f} bit {bit}: {type(e).__name__}: {str(e)[:300]}")
            shutil.rmtree(dst)
    assert not wrong, "\n".join(wrong)


def check_flipped(uri, oracle: Oracle, rng):
    for v in range(oracle.version, -1, -1):
        h = gpumat.Tier.open(uri) if v == oracle.version else gpumat.Tier.open(uri, version=v)
        assert h.version == v
        assert h.schema == oracle.schema
        users = oracle.users() + [424242]
        assert h.lengths(users).tolist() == [oracle.length(u, v) for u in users]
        exs = [{"user_id": u, "version": v, "length": oracle.length(u, v), "request_ts": I64MAX,
                "tail": [{"ts": 1, "item_id": 2, "action": 3}]} for u in users]
        tab = examples_table(rng, oracle.schema, exs, True)
        exp = oracle.materialize(exs, list(oracle.schema), 10**6, v)
        be = "triton" if rng.random() < 0.1 else "reference"
        b = gpumat.materialize(h, tab, gpumat.Tenant("all", list(oracle.schema), 10**6), backend=be)
        assert b.offsets.tolist() == exp[1], "offsets"
        for c in oracle.schema:
            assert b.values[c].tolist() == exp[2][c], f"silent garbage in column {c}"


# ------------------------------------------------------------------------------------------ CLI (§6)


def gpumat_cli(*args, check=None):
    r = subprocess.run(["gpumat", *map(str, args)], capture_output=True, text=True, timeout=120)
    if check is not None:
        assert r.returncode == check, f"gpumat {args}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def cli_main(capsys, *args):
    from gpumat.cli import main

    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_end_to_end(where, tmp_path, capsys):
    rng = random.Random(23)
    schema = {"ts": "int64", "item_id": "int64", "action": "int32"}
    tier = f"{where}/tier"
    oracle = Oracle(schema)
    rows1 = [(rng.choice([1, 2, I64MAX]), {"ts": rng.randint(0, 50), "item_id": rand_value(rng, "int64"),
                                          "action": rand_value(rng, "int32")}) for _ in range(30)]
    ev1 = str(tmp_path / "ev1.parquet")
    pq.write_table(events_table(rng, schema, rows1), ev1)
    r = gpumat_cli("ingest", tier, ev1, "--schema", "item_id:int64,action:int32", check=0)
    oracle.append(rows1)
    assert gpumat.Tier.open(tier).schema == schema
    rows2 = [(rng.choice([1, 3]), {"ts": rng.randint(0, 50), "item_id": 5, "action": -1}) for _ in range(7)]
    ev2 = str(tmp_path / "ev2.parquet")
    pq.write_table(events_table(rng, schema, rows2), ev2)
    assert cli_main(capsys, "ingest", tier, ev2)[0] == 0
    oracle.append(rows2)
    assert cli_main(capsys, "compact", tier)[0] == 0
    oracle.compact()
    r = gpumat_cli("inspect", tier, check=0)
    assert r.stdout.strip()
    r = gpumat_cli("inspect", tier, "--json", check=0)
    stats = json.loads(r.stdout)
    assert isinstance(stats, dict)
    full_check(tier, oracle, rng)

    # materialize: passthrough columns, input order, list<dtype> per tenant column
    exs = rand_examples(rng, oracle, oracle.version, 7, True)
    for e in exs:
        e["request_ts"] = I64MAX
        for ev in e["tail"]:
            ev["ts"] = min(ev["ts"], I64MAX - 1)
    exs[3]["user_id"] = 999  # unknown user -> empty history
    exs[3]["length"] = 0
    extra = {"label": pa.array([0.5 * i for i in range(7)]), "cand": pa.array([[i, i + 1] for i in range(7)]),
             "name": pa.array([f"r{i}" for i in range(7)])}
    tab = examples_table(rng, schema, exs, True, extra)
    exf, tnf, out = str(tmp_path / "ex.parquet"), str(tmp_path / "tenant.json"), str(tmp_path / "out.parquet")
    pq.write_table(tab, exf)
    for cols, L in ((["action", "item_id"], 5), (["ts"], 0), (["action", "ts", "item_id"], 10**9)):
        with open(tnf, "w") as f:
            json.dump({"name": "m", "columns": cols, "max_len": L}, f)
        for backend in ("reference", "triton", None):
            args = ["materialize", tier, exf, "--tenant", tnf, "--out", out] + (["--backend", backend] if backend else [])
            if not (backend == "reference" and cols == ["ts"]):  # one run through the console script is enough
                rc, so, se = cli_main(capsys, *args)
                assert rc == 0, se
            else:
                gpumat_cli(*args, check=0)
            res = pq.read_table(out)
            assert res.num_rows == 7
            assert res.column("user_id").type == pa.int64()
            assert res.column("user_id").to_pylist() == [e["user_id"] for e in exs]
            exp = oracle.materialize(exs, cols, L, oracle.version)
            for c in cols:
                want_t = pa.list_(pa.int32() if schema[c] == "int32" else pa.int64())
                got_t = res.column(c).type
                assert pa.types.is_list(got_t) or pa.types.is_large_list(got_t), got_t
                assert got_t.value_type == want_t.value_type, f"column {c}: {got_t}, want {want_t}"
                want = [exp[2][c][exp[1][i]: exp[1][i + 1]] for i in range(7)]
                assert res.column(c).to_pylist() == want, c
            for k, arr in extra.items():
                assert res.column(k).type == arr.type and res.column(k).to_pylist() == arr.to_pylist(), k
            for k in ("version", "length", "request_ts") + tuple("tail_" + c for c in schema):
                assert k not in res.column_names or k in cols, k


def one_line_error(rc, err, what):
    assert rc == 2, f"{what}: rc {rc}, stderr {err!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"{what}: stderr is not one line: {err!r}"
    assert "Traceback" not in err, what


def test_cli_errors(tmp_path, capsys):
    tier = str(tmp_path / "tier")
    ev = str(tmp_path / "ev.parquet")
    pq.write_table(pa.table({"user_id": [1, 1], "ts": [1, 2], "item_id": [3, 4]}), ev)
    gpumat_cli("ingest", tier, ev, "--schema", "item_id:int64", check=0)
    bad_ev = str(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"user_id": [1], "ts": [1], "item_id": [1.5]}), bad_ev)
    ex = str(tmp_path / "ex.parquet")
    pq.write_table(pa.table({"user_id": [1], "version": [1], "length": [2], "request_ts": [2]}), ex)
    okex = str(tmp_path / "okex.parquet")
    pq.write_table(pa.table({"user_id": [1], "version": [1], "length": [2], "request_ts": [99]}), okex)
    badptr = str(tmp_path / "badptr.parquet")
    pq.write_table(pa.table({"user_id": [1], "version": [7], "length": [2], "request_ts": [99]}), badptr)
    tn = str(tmp_path / "t.json")
    with open(tn, "w") as f:
        json.dump({"name": "m", "columns": ["item_id"], "max_len": 4}, f)
    badtn = str(tmp_path / "bt.json")
    with open(badtn, "w") as f:
        json.dump({"name": "m", "columns": ["nope"], "max_len": 4}, f)
    negtn = str(tmp_path / "nt.json")
    with open(negtn, "w") as f:
        json.dump({"name": "m", "columns": ["item_id"], "max_len": -1}, f)
    notjson = str(tmp_path / "nj.json")
    with open(notjson, "w") as f:
        f.write("{nope")
    out = str(tmp_path / "o.parquet")
    cases = [
        ("ingest", tier, bad_ev),
        ("ingest", tier, str(tmp_path / "missing.parquet")),
        ("ingest", tier, ev, "--schema", "item_id:float"),
        ("ingest", str(tmp_path / "new"), ev, "--schema", "item_id:int64,x:int32"),
        ("ingest", str(tmp_path / "new"), bad_ev, "--schema", "item_id:int64"),
        ("ingest", str(tmp_path / "new"), bad_ev),
        ("materialize", tier, okex, "--tenant", tn, "--out", str(tmp_path / "nodir" / "o.parquet")),
        ("compact", str(tmp_path / "none")),
        ("inspect", str(tmp_path / "none")),
        ("materialize", tier, ex, "--tenant", tn, "--out", out),  # leakage
        ("materialize", tier, badptr, "--tenant", tn, "--out", out),
        ("materialize", tier, okex, "--tenant", badtn, "--out", out),
        ("materialize", tier, okex, "--tenant", negtn, "--out", out),
        ("materialize", tier, okex, "--tenant", notjson, "--out", out),
        ("materialize", tier, okex, "--tenant", str(tmp_path / "missing.json"), "--out", out),
        ("materialize", tier, str(tmp_path / "missing.parquet"), "--tenant", tn, "--out", out),
        ("materialize", str(tmp_path / "none"), okex, "--tenant", tn, "--out", out),
        ("materialize", tier, tn, "--tenant", tn, "--out", out),  # examples file is not Parquet
        ("materialize", tier, ev, "--tenant", tn, "--out", out),  # events file as examples: missing columns
    ]
    for i, args in enumerate(cases):
        if i in (0, 11):
            r = gpumat_cli(*args)
            one_line_error(r.returncode, r.stderr, args)
        else:
            one_line_error(*cli_main(capsys, *args)[::2], args)
    with pytest.raises(TierError):  # a failed ingest creates no tier
        gpumat.Tier.open(tmp_path / "new")
    assert gpumat.Tier.open(tier).version == 1  # failed ingests committed nothing
    r = gpumat_cli("--debug", "materialize", tier, ex, "--tenant", tn, "--out", out)
    assert r.returncode != 0 and "Traceback" in r.stderr and "LeakageError" in r.stderr
    rc, _, err = cli_main(capsys, "materialize", tier, ex, "--tenant", tn, "--out", out)
    one_line_error(rc, err, "leak")
    with pytest.raises(LeakageError):  # --debug after the command works too
        cli_main(capsys, "materialize", tier, ex, "--tenant", tn, "--out", out, "--debug")
    gpumat_cli("materialize", tier, okex, "--tenant", tn, "--out", out, check=0)
    assert pq.read_table(out).column("item_id").to_pylist() == [[3, 4]]


# ------------------------------------------------------------------------------------------ extremes of size


def test_long_history_crosses_stripes(tmp_path):
    """One user with more than 2**20 events in one append (several stripes), then one more append and
    compacted: windows that straddle the stripe and block boundaries read the right events on both
    backends, pinned or not."""
    n = (1 << 20) + 2000
    rng = np.random.default_rng(0)
    x = rng.integers(I32MIN, I32MAX + 1, n, dtype=np.int64).astype(np.int32)
    ts = np.arange(n, dtype=np.int64)
    uid = np.full(n, I64MIN, np.int64)
    uid[::4099] = 3
    uri = str(tmp_path / "t")
    tier = gpumat.Tier.create(uri, {"ts": "int64", "x": "int32"})
    tier.append(pa.table({"user_id": uid, "ts": ts, "x": x}))
    mine_x, mine_ts = x[uid == I64MIN], ts[uid == I64MIN]
    total = int(mine_x.size)
    assert total > (1 << 20) and tier.lengths([I64MIN, 3]).tolist() == [total, int((uid == 3).sum())]
    lens = [total, total - 1, 1 << 20, (1 << 20) + 1, (1 << 20) - 1, 129, 128, 1, 0]
    ex = pa.table({"user_id": [I64MIN] * len(lens), "version": [1] * len(lens), "length": lens,
                   "request_ts": [I64MAX] * len(lens), "tail_ts": [[1]] * len(lens), "tail_x": [[-5]] * len(lens)})
    assert tier.compact() == 1  # one append from position 0: already as few stripes as compaction writes
    tier.append(pa.table({"user_id": [I64MIN] * 3, "ts": [n, n + 1, n + 2], "x": [1, 2, 3]}))  # a third stripe
    v = tier.compact()
    assert v == 3 and tier.compact() == 3
    for h in (gpumat.Tier.open(uri, version=1), gpumat.Tier.open(uri, version=v)):
        for be in BACKENDS:
            b = gpumat.materialize(h, ex, gpumat.Tenant("t", ["x", "ts"], 257), backend=be)
            for i, m in enumerate(lens):
                lo = max(0, m - 256)
                assert b.row(i)["x"].tolist() == mine_x[lo:m].tolist() + [-5], (be, h.version, m)
                assert b.row(i)["ts"].tolist() == mine_ts[lo:m].tolist() + [1], (be, h.version, m)


def test_many_examples(where):
    rng = random.Random(99)
    schema = {"ts": "int64", "a": "int32", "b": "int64"}
    tier = gpumat.Tier.create(f"{where}/t", schema)
    oracle = Oracle(schema)
    for _ in range(3):
        rows = rand_rows(rng, schema, oracle.users(), 400)
        tier.append(events_table(rng, schema, rows))
        oracle.append(rows)
    exs = rand_examples(rng, oracle, oracle.version, 1500, True)
    for e in exs:
        e["request_ts"] = I64MAX
        for ev in e["tail"]:
            ev["ts"] = min(ev["ts"], I64MAX - 1)
    run_and_compare(tier, examples_table(rng, schema, exs, True), exs, gpumat.Tenant("t", ["b", "a"], 6), oracle, rng, "B=1500")
