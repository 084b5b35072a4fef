"""ExampleLogger: the serving side logs (sealed pointer, unsealed tail) exactly as a plain loop would."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import SchemaError
from gpumat.host.examples import parse_examples
from gpumat.host.logger import ExampleLogger, list_array
from gpumat.host.ranges import ranges
from gpumat.host.tier import Tier

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}


def _events(rng, n, users, t_lo, t_hi):
    return pa.table({
        "user_id": pa.array(rng.choice(users, n).astype(np.int64)),
        "ts": pa.array(rng.integers(t_lo, t_hi, n).astype(np.int64)),
        "item_id": pa.array(rng.integers(-(2**62), 2**62, n).astype(np.int64)),
        "action": pa.array(rng.integers(-5, 5, n).astype(np.int32)),
    })


def _naive_tail(buffer_rows, user, rts):
    """The definition: the user's buffered events with ts < request_ts, in arrival order."""
    return [r for r in buffer_rows if r["user_id"] == user and r["ts"] < rts]


@pytest.fixture
def tier(tmp_path):
    return Tier.create(tmp_path / "tier", SCHEMA)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_request_matches_naive_loop(tier, seed):
    rng = np.random.default_rng(seed)
    users = np.array([3, 7, 11, 2**40, 5])
    log = ExampleLogger(tier)
    log.observe(_events(rng, 50, users, 0, 100))
    assert log.seal() == 1
    # several observe calls, ts out of order within a user (arrival order must be kept)
    chunks = [_events(rng, int(rng.integers(0, 40)), users, 100, 200) for _ in range(3)]
    for c in chunks:
        log.observe(c)
    rows = [r for c in chunks for r in c.to_pylist()]
    req_users = rng.choice(np.append(users, 999), 60)  # 999: a user with no history and no tail
    req_ts = rng.integers(90, 210, 60)
    ex = log.request(req_users, req_ts, passthrough={"label": np.arange(60)})
    assert ex.column_names[:4] == ["user_id", "version", "length", "request_ts"]
    assert ex.column("label").to_pylist() == list(range(60))
    lengths = tier.lengths(req_users)
    for i, row in enumerate(ex.to_pylist()):
        assert row["user_id"] == req_users[i] and row["request_ts"] == req_ts[i]
        assert row["version"] == 1 and row["length"] == lengths[i]
        want = _naive_tail(rows, int(req_users[i]), int(req_ts[i]))
        for c in SCHEMA:
            assert row["tail_" + c] == [w[c] for w in want], (i, c)


def test_output_is_a_spec_examples_table(tier):
    log = ExampleLogger(tier)
    log.observe(pa.table({"user_id": [1, 1], "ts": [5, 6], "item_id": [1, 2], "action": [0, 1]}))
    ex = log.request([1, 2], [7, 7])
    assert ex.schema.field("tail_action").type == pa.list_(pa.int32())
    assert ex.schema.field("tail_item_id").type == pa.list_(pa.int64())
    parsed = parse_examples(ex, tier.schema)
    assert parsed.tail_len.tolist() == [2, 0]
    assert parsed.version.tolist() == [0, 0] and parsed.length.tolist() == [0, 0]


def test_seal_appends_in_arrival_order_and_clears(tier):
    log = ExampleLogger(tier)
    log.observe(pa.table({"user_id": [1, 2, 1], "ts": [30, 10, 20], "item_id": [1, 2, 3], "action": [0, 0, 0]}))
    log.observe(pa.table({"user_id": [1], "ts": [5], "item_id": [4], "action": [1]}))
    assert log.pending == 4
    assert log.seal() == 1
    assert log.pending == 0 and tier.version == 1
    assert tier.read_history(1)["item_id"].tolist() == [1, 3, 4]
    ex = log.request([1, 2], 100)
    assert ex.column("length").to_pylist() == [3, 1]
    assert ex.column("version").to_pylist() == [1, 1]
    assert ex.column("tail_ts").to_pylist() == [[], []]


def test_seal_before_ts_keeps_later_events(tier):
    log = ExampleLogger(tier)
    log.observe(pa.table({"user_id": [1, 1, 1], "ts": [10, 50, 20], "item_id": [1, 2, 3], "action": [0, 0, 0]}))
    assert log.seal(before_ts=30) == 1
    assert tier.read_history(1)["item_id"].tolist() == [1, 3]
    assert log.pending == 1
    ex = log.request([1], [60])
    assert ex.column("length").to_pylist() == [2]
    assert ex.column("tail_item_id").to_pylist() == [[2]]


def test_empty_seal_commits_a_version(tier):
    log = ExampleLogger(tier)
    assert log.seal() == 1 and tier.version == 1


def test_empty_request(tier):
    ex = ExampleLogger(tier).request([], [])
    assert ex.num_rows == 0
    parse_examples(ex, tier.schema)


def test_bad_input_is_a_schema_error(tier):
    log = ExampleLogger(tier)
    good = {"user_id": [1], "ts": [5], "item_id": [1], "action": [0]}
    with pytest.raises(SchemaError, match="missing"):
        log.observe(pa.table({k: v for k, v in good.items() if k != "action"}))
    with pytest.raises(SchemaError, match="extra"):
        log.observe(pa.table({**good, "zzz": [1]}))
    with pytest.raises(SchemaError, match="out of range"):
        log.observe(pa.table({**good, "action": pa.array([2**40], pa.int64())}))
    with pytest.raises(SchemaError):
        log.observe(pa.table({**good, "ts": pa.array([1.5])}))
    assert log.pending == 0  # nothing buffered from a rejected table
    with pytest.raises(SchemaError, match="reserved"):
        log.request([1], [5], passthrough={"tail_x": [1]})
    with pytest.raises(SchemaError, match="reserved"):
        log.request([1], [5], passthrough={"version": [1]})
    with pytest.raises(SchemaError, match="rows"):
        log.request([1, 2], [5, 5], passthrough={"label": [1]})
    with pytest.raises(SchemaError):
        log.request([1, 2], [5])


def test_expand_ranges_and_list_array():
    starts = np.array([4, 0, 9, 2])
    counts = np.array([3, 0, 1, 2])
    assert ranges(starts, counts).tolist() == [4, 5, 6, 9, 2, 3]
    assert ranges(starts, np.zeros(4)).tolist() == []
    col = list_array(np.array([0, 2, 2, 3]), np.array([7, 8, 9]), pa.int32())
    assert col.type == pa.list_(pa.int32()) and col.to_pylist() == [[7, 8], [], [9]]
    assert list_array(np.array([0]), np.array([], dtype=np.int64), pa.int64()).to_pylist() == []


def test_list_array_splits_past_int32_offsets(monkeypatch):
    import gpumat.host.logger as logger_mod

    monkeypatch.setattr(logger_mod, "_MAX_LIST_VALUES", 3)  # stand-in for 2**31 - 1
    offsets = np.array([0, 2, 2, 5, 6, 6, 9])
    col = list_array(offsets, np.arange(9), pa.int64())
    assert col.num_chunks > 1
    assert col.to_pylist() == [[0, 1], [], [2, 3, 4], [5], [], [6, 7, 8]]
