"""Fat Row baseline: the stored sequences are SPEC §2's sequences for every tenant, checked against a
plain Python loop over ``Tier.read_history``; reads project columns and count footer bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.tenant import Tenant
from gpumat.core.errors import PointerError, SchemaError
from gpumat.host.fatrow import FatRowReader, write_fat_rows
from gpumat.host.logger import ExampleLogger
from gpumat.host.tier import Tier

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32", "dur": "int32"}
TENANTS = (
    Tenant("zero", ["item_id"], 0),
    Tenant("short", ["item_id", "action"], 3),
    Tenant("mid", ["action", "ts"], 17),
    Tenant("long", ["item_id", "ts", "dur"], 200),
)


def _events(rng, users, counts, t0):
    owner = np.repeat(users, counts)
    n = owner.size
    return pa.table({
        "user_id": pa.array(owner.astype(np.int64)),
        "ts": pa.array(t0 + np.arange(n, dtype=np.int64)),  # increasing: serving order
        "item_id": pa.array(rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64)),
        "action": pa.array(rng.integers(-3, 3, n).astype(np.int32)),
        "dur": pa.array(rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, n, dtype=np.int32)),
    })


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tier with 3 sealed versions and examples that point at each, with and without tails."""
    rng = np.random.default_rng(7)
    tier = Tier.create(tmp_path_factory.mktemp("fr") / "tier", SCHEMA)
    log = ExampleLogger(tier)
    users = np.array([1, 2, 3, 4, 10**12], dtype=np.int64)
    logged = []
    t = 0
    for day in range(3):
        counts = rng.integers(0, 120, users.size)
        counts[0] = 0 if day == 0 else counts[0]  # user 1: empty first version
        log.observe(_events(rng, users, counts, t))
        t += int(counts.sum())
        req_users = rng.choice(np.append(users, 77), 25)  # 77: never seen, empty sequence
        logged.append(log.request(req_users, rng.integers(t - 60, t + 5, 25),
                                  passthrough={"label": np.arange(25) + 100 * day}))
        log.seal()
        t += 1
        if day == 1:
            tier.compact()
    return tier, pa.concat_tables(logged)


def _naive(tier, examples, tenant):
    """SPEC §2 by the definition, one example at a time."""
    out = []
    for row in examples.to_pylist():
        h = tier.read_history(row["user_id"], version=row["version"])
        S = [{c: int(h[c][p]) for c in SCHEMA} for p in range(row["length"])]
        S += [{c: row["tail_" + c][k] for c in SCHEMA} for k in range(len(row["tail_ts"]))]
        S = S[max(0, len(S) - tenant.max_len):]
        out.append({c: [e[c] for e in S] for c in tenant.columns})
    return out


def _rows(batch, tenant):
    return [{c: batch.row(b)[c].tolist() for c in tenant.columns} for b in range(batch.batch_size)]


def test_fat_rows_equal_naive_materialization(built, tmp_path):
    tier, examples = built
    path = tmp_path / "fat.parquet"
    nbytes = write_fat_rows(examples, tier, TENANTS, path, row_group_bytes=4096)
    pf = pq.ParquetFile(path)
    assert nbytes == path.stat().st_size and pf.metadata.num_row_groups > 3
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    t = pf.read()
    # seq_ columns in the tier's schema order (ts first, then sorted)
    assert t.column_names == ["user_id", "request_ts", "label"] + ["seq_" + c for c in tier.schema]
    assert t.column("label").equals(examples.column("label"))
    assert t.schema.field("seq_dur").type == pa.list_(pa.int32())
    union = Tenant("union", ["ts", "item_id", "action", "dur"], 200)
    assert [{c: r["seq_" + c] for c in union.columns} for r in t.to_pylist()] == _naive(tier, examples, union)

    reader = FatRowReader(path)
    assert reader.num_rows == examples.num_rows and reader.max_len == 200
    for tenant in TENANTS:
        want = _naive(tier, examples, tenant)
        batch, nb = reader.read(tenant)
        assert _rows(batch, tenant) == want, tenant.name
        for c in tenant.columns:
            assert str(batch.values[c].dtype) == f"torch.{SCHEMA[c]}"
        assert nb == reader.epoch_nbytes(tenant)
        # a few rows in any order, from a few row groups: fewer bytes
        rows = np.array([40, 3, 41, 70, 3])
        part, nb_part = reader.read(tenant, rows=rows)
        assert _rows(part, tenant) == [want[i] for i in rows]
        assert 0 < nb_part < nb
        part, _ = reader.read(tenant, rows=slice(10, 20))
        assert _rows(part, tenant) == want[10:20]
        # one epoch in batches: same rows, each row group counted once
        got, total = [], 0
        for b, nb_b in reader.iter_epoch(tenant, batch_size=9):
            got += _rows(b, tenant)
            total += nb_b
        assert got == want and total == nb


def test_projection_reads_fewer_bytes(built, tmp_path):
    tier, examples = built
    path = tmp_path / "fat.parquet"
    write_fat_rows(examples, tier, TENANTS, path)
    reader = FatRowReader(path)
    by_name = {t.name: reader.epoch_nbytes(t) for t in TENANTS}
    # no length pushdown: a max_len-0 tenant still reads its whole column
    assert by_name["zero"] > 0
    assert by_name["short"] > by_name["zero"] and by_name["long"] > by_name["short"]


def test_errors(built, tmp_path):
    tier, examples = built
    with pytest.raises(SchemaError):
        write_fat_rows(examples, tier, [Tenant("x", ["nope"], 4)], tmp_path / "a.parquet")
    with pytest.raises(SchemaError):
        write_fat_rows(examples, tier, [], tmp_path / "a.parquet")
    bad = examples.set_column(2, "length", pa.array(np.full(examples.num_rows, 10**6, dtype=np.int64)))
    with pytest.raises(PointerError):
        write_fat_rows(bad, tier, TENANTS, tmp_path / "b.parquet")
    path = tmp_path / "c.parquet"
    write_fat_rows(examples, tier, TENANTS[:2], path)
    reader = FatRowReader(path)
    with pytest.raises(SchemaError, match="max_len"):
        reader.read(Tenant("big", ["item_id"], 4))
    with pytest.raises(SchemaError, match="not stored"):
        reader.read(Tenant("t", ["dur"], 2))
    with pytest.raises(SchemaError, match="outside"):
        reader.read(TENANTS[1], rows=[examples.num_rows])
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(SchemaError, match="Fat Row"):
        FatRowReader(tmp_path / "plain.parquet")


def test_empty_examples(built, tmp_path):
    tier, examples = built
    path = tmp_path / "e.parquet"
    write_fat_rows(examples.slice(0, 0), tier, TENANTS, path)
    batch, nb = FatRowReader(path).read(TENANTS[3])
    assert batch.batch_size == 0 and nb == 0 and batch.values["dur"].dtype.is_signed


def test_examples_without_tails(built, tmp_path):
    tier, examples = built
    bare = examples.select([n for n in examples.column_names if not n.startswith("tail_")])
    path = tmp_path / "bare.parquet"
    write_fat_rows(bare, tier, TENANTS, path)
    empty_tails = examples.select(bare.column_names)
    for c in SCHEMA:
        list_type = pa.list_(pa.from_numpy_dtype(np.dtype(SCHEMA[c])))
        empty_tails = empty_tails.append_column("tail_" + c, pa.array([[]] * examples.num_rows, list_type))
    batch, _ = FatRowReader(path).read(TENANTS[3])
    assert _rows(batch, TENANTS[3]) == _naive(tier, empty_tails, TENANTS[3])


def test_tuned_fat_rows_sorted_and_equal(built, tmp_path):
    """The strongest Fat Row: rows sorted by (user, request_ts), chosen encodings, same sequences."""
    tier, examples = built
    path = tmp_path / "tuned.parquet"
    write_fat_rows(examples, tier, TENANTS, path, tuned=True)
    t = pq.read_table(path)
    order = np.lexsort((examples.column("request_ts").to_numpy(), examples.column("user_id").to_numpy()))
    assert t.column("user_id").to_numpy().tolist() == examples.column("user_id").to_numpy()[order].tolist()
    assert t.column("label").to_numpy().tolist() == examples.column("label").to_numpy()[order].tolist()
    md = pq.ParquetFile(path).metadata
    assert md.row_group(0).column(0).compression == "ZSTD"
    sorted_ex = examples.take(pa.array(order))
    reader = FatRowReader(path)
    for tenant in TENANTS:
        batch, nb = reader.read(tenant)
        assert _rows(batch, tenant) == _naive(tier, sorted_ex, tenant), tenant.name
    # an encoding named by the caller is the one written
    path2 = tmp_path / "tuned2.parquet"
    write_fat_rows(examples, tier, TENANTS, path2, tuned=True, encodings={c: "PLAIN" for c in SCHEMA})
    encs = pq.ParquetFile(path2).metadata.row_group(0).column(3).encodings
    assert "RLE_DICTIONARY" not in encs and "DELTA_BINARY_PACKED" not in encs
    empty = tmp_path / "tuned_empty.parquet"
    write_fat_rows(examples.slice(0, 0), tier, TENANTS, empty, tuned=True)
    assert FatRowReader(empty).read(TENANTS[3])[0].batch_size == 0


def test_store_once_reader_equals_naive(built, tmp_path):
    """Each event once in Parquet (sorted by user, tuned, small row groups): every example's
    sequence is SPEC §2's, whatever version its pointer names; bytes count the row groups read."""
    from gpumat.host.fatrow import StoreOnceReader, choose_encodings, store_once_table, write_store_once

    tier, examples = built
    table = store_once_table(tier)
    for u in np.unique(table.column("user_id").to_numpy()).tolist():
        h = tier.read_history(u)
        mine = table.filter(pa.compute.equal(table.column("user_id"), u))
        for c in SCHEMA:
            assert mine.column(c).to_numpy().tolist() == np.asarray(h[c]).tolist()
    path = tmp_path / "once.parquet"
    size = write_store_once(table, path, row_group_size=64)
    assert size == path.stat().st_size
    reader = StoreOnceReader(path)
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    batches = [examples.slice(i, 9) for i in range(0, examples.num_rows, 9)]
    for tenant in TENANTS:
        got, nbytes = [], 0
        for batch, nb in reader.iter_epoch(tenant, batches):
            got += _rows(batch, tenant)
            nbytes += nb
            for c in tenant.columns:
                assert str(batch.values[c].dtype) == f"torch.{SCHEMA[c]}"
        assert got == _naive(tier, examples, tenant), tenant.name
        assert (nbytes > 0) == (tenant.name == "long") or tenant.name in ("short", "mid")
    bad = examples.set_column(2, "length", pa.array(np.full(examples.num_rows, 10**6, dtype=np.int64)))
    with pytest.raises(PointerError):
        next(reader.iter_epoch(TENANTS[1], [bad]))
    with pytest.raises(SchemaError, match="sorted"):
        write_store_once(table.take(pa.array(np.arange(table.num_rows)[::-1])), tmp_path / "x.parquet")
    # the chooser picks the smallest candidate: a sorted column gains from delta coding
    ts = pa.table({"ts": pa.array(np.cumsum(np.random.default_rng(0).integers(1, 50, 50_000)))})
    assert choose_encodings(ts, {"ts": "ts"}, {"compression": "zstd"})["ts"] == "DELTA_BINARY_PACKED"
