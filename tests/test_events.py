"""Event tables (host/events.py): SPEC §3's columns and integer rule, the file errors, and that the tier
and the serving logger share the one validation."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.errors import SchemaError
from gpumat.host.events import read_events, read_events_table
from gpumat.host.logger import ExampleLogger
from gpumat.host.tier import Tier

SCHEMA = {"ts": "int64", "action": "int32", "item_id": "int64"}
OK = {"user_id": [1, 2], "ts": [1, 2], "item_id": [3, 4], "action": [5, 6]}

BAD = [
    ({k: v for k, v in OK.items() if k != "action"}, "missing"),
    ({k: v for k, v in OK.items() if k != "user_id"}, "missing"),
    ({**OK, "extra": [1, 2]}, "extra"),
    ({**OK, "item_id": pa.array([1.0, 2.0])}, "integer"),
    ({**OK, "ts": pa.array([1, None], pa.int64())}, "null"),
    ({**OK, "action": pa.array([0, 2**31], pa.int64())}, "out of range"),
    ({**OK, "item_id": pa.array([0, 2**63], pa.uint64())}, "out of range"),
    ({**OK, "user_id": pa.array(["a", "b"])}, "integer"),
    ({**OK, "ts": pa.array([1, 2], pa.timestamp("s"))}, "integer"),
    ({**OK, "action": pa.array([True, False])}, "integer"),
]


@pytest.mark.parametrize("table,msg", BAD)
def test_bad_tables(table, msg):
    with pytest.raises(SchemaError, match=msg):
        read_events(pa.table(table), SCHEMA)


def test_duplicate_columns():
    t = pa.Table.from_arrays([pa.array([1]), pa.array([1]), pa.array([1]), pa.array([1]), pa.array([1])],
                             names=["user_id", "ts", "item_id", "action", "ts"])
    with pytest.raises(SchemaError, match="duplicate"):
        read_events(t, SCHEMA)


def test_widths_that_fit_and_the_result():
    t = pa.table({**OK, "user_id": pa.array([1, 2], pa.uint8()), "item_id": pa.array([0, 2**63 - 1], pa.uint64()),
                  "action": pa.array([-1, 7], pa.int8())})
    ev = read_events(t, SCHEMA)
    assert list(ev) == ["user_id", "ts", "action", "item_id"]
    assert ev["user_id"].dtype == np.int64 and ev["ts"].dtype == np.int64
    assert ev["action"].dtype == np.int32 and ev["item_id"].dtype == np.int64  # each column in its schema dtype
    assert ev["item_id"].tolist() == [0, 2**63 - 1] and ev["action"].tolist() == [-1, 7]
    # several chunks, a RecordBatch, an empty table
    two = pa.concat_tables([pa.table(OK).slice(0, 1), pa.table(OK).slice(1)])
    assert read_events(two, SCHEMA)["item_id"].tolist() == [3, 4]
    assert read_events(pa.table(OK).to_batches()[0], SCHEMA)["ts"].tolist() == [1, 2]
    assert read_events(pa.table(OK).slice(0, 0), SCHEMA)["user_id"].size == 0


def test_events_table_sources(tmp_path):
    t = pa.table(OK)
    assert read_events_table(t) is t
    assert read_events_table(t.to_batches()[0]).equals(t)
    pq.write_table(t, tmp_path / "e.parquet")
    assert read_events_table(tmp_path / "e.parquet").equals(t)
    assert read_events_table(str(tmp_path / "e.parquet")).equals(t)
    for bad in ({"user_id": [1]}, [1, 2], None, 3):
        with pytest.raises(SchemaError, match="Parquet path or a pyarrow Table"):
            read_events_table(bad)


def test_missing_and_unreadable_files(tmp_path):
    missing = str(tmp_path / "missing.parquet")
    for src in (missing, tmp_path / "missing.parquet"):
        with pytest.raises(SchemaError) as e:
            read_events_table(src)
        assert str(e.value) == f"events file {missing!r} not found"
        with pytest.raises(SchemaError, match="not found"):
            read_events(src, SCHEMA)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SchemaError) as e:
        read_events_table(junk)
    assert str(e.value).startswith(f"cannot read events file {str(junk)!r}: ") and "\n" not in str(e.value)


def test_tier_and_logger_share_the_validation(tmp_path):
    tier = Tier.create(tmp_path / "t", SCHEMA)
    log = ExampleLogger(tier)
    for table, msg in BAD:
        for check in (tier.append, log.observe):
            with pytest.raises(SchemaError, match=msg):
                check(pa.table(table))
    assert tier.version == 0 and log.pending == 0
    # the logger takes tables only (no Parquet paths), as before
    pq.write_table(pa.table(OK), tmp_path / "e.parquet")
    with pytest.raises(SchemaError, match="must be a pyarrow Table"):
        log.observe(str(tmp_path / "e.parquet"))
    log.observe(pa.table(OK).to_batches()[0])
    assert log.pending == 2
