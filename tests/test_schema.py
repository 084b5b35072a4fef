"""host/schema.py: ``check_schema`` (what a tier schema may be, in a stable order) and the integer rule
of SPEC §3 (``int_column``, ``list_column``): any integer width when every value fits, else a
``SchemaError``; one map of dtypes for NumPy and Arrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import SchemaError
from gpumat.core.names import NUMPY_DTYPES
from gpumat.host.schema import PA_TYPES, check_schema, int_column, list_column

I32 = np.iinfo(np.int32)


def test_check_schema_orders_ts_first():
    out = check_schema({"item_id": "int64", "action": "int32", "ts": "int64"})
    assert list(out.items()) == [("ts", "int64"), ("action", "int32"), ("item_id", "int64")]
    assert type(out) is dict and check_schema({"ts": "int64"}) == {"ts": "int64"}


@pytest.mark.parametrize("schema, words", [
    (None, "non-empty dict"),
    ({}, "non-empty dict"),
    ([("ts", "int64")], "non-empty dict"),
    ({"ts": "int64", "": "int64"}, "non-empty strings"),
    ({"ts": "int64", 3: "int64"}, "non-empty strings"),
    ({"ts": "int64", "user_id": "int64"}, "'user_id' is the key"),
    ({"ts": "int64", "tail_x": "int64"}, "names starting with 'tail_' are reserved"),
    ({"ts": "int64", "x": "float32"}, "dtype must be 'int64' or 'int32'"),
    ({"ts": "int64", "x": np.int64}, "dtype must be 'int64' or 'int32'"),
    ({"item_id": "int64"}, "must contain 'ts'"),
    ({"ts": "int32"}, "'ts' must be 'int64'"),
])
def test_check_schema_refuses(schema, words):
    with pytest.raises(SchemaError, match=words):
        check_schema(schema)


def test_one_map_of_dtypes():
    assert set(PA_TYPES) == set(NUMPY_DTYPES) == {"int64", "int32"}
    for name, np_type in NUMPY_DTYPES.items():
        assert PA_TYPES[name] == pa.from_numpy_dtype(np_type)


@pytest.mark.parametrize("values, arrow_type", [
    ([1, -2, 3], pa.int8()), ([1, 2, 3], pa.uint16()), ([I32.min, I32.max], pa.int64()), ([0, 2**32 - 1], pa.uint32()),
])
def test_int_column_accepts_any_width_that_fits(values, arrow_type):
    for col in (pa.array(values, arrow_type), pa.chunked_array([pa.array(values[:1], arrow_type), pa.array(values[1:], arrow_type)]),
                np.array(values, dtype=arrow_type.to_pandas_dtype())):
        out = int_column(col, "int64", "c")
        assert out.dtype == np.int64 and out.tolist() == values
    if min(values) >= I32.min and max(values) <= I32.max:
        assert int_column(pa.array(values, arrow_type), "int32", "c").dtype == np.int32


def test_int_column_refuses():
    with pytest.raises(SchemaError, match=r"events column 'x': value out of range for int32 \(min 0, max 2147483648\)"):
        int_column(pa.array([0, I32.max + 1]), "int32", "events column 'x'")
    with pytest.raises(SchemaError, match="out of range for int32"):
        int_column(pa.array([I32.min - 1]), "int32", "c")
    with pytest.raises(SchemaError, match="out of range for int64"):
        int_column(pa.array([2**63], pa.uint64()), "int64", "c")
    with pytest.raises(SchemaError, match="out of range for int64"):
        int_column(np.array([2**64 - 1], np.uint64), "int64", "c")
    with pytest.raises(SchemaError, match="c: expected an integer column, got double"):
        int_column(pa.array([1.0]), "int64", "c")  # even a whole float
    with pytest.raises(SchemaError, match="expected an integer column, got string"):
        int_column(pa.array(["1"]), "int64", "c")
    with pytest.raises(SchemaError, match="c: expected integers, got dtype float64"):
        int_column(np.array([1.0]), "int64", "c")
    with pytest.raises(SchemaError, match=r"c: 1 null value\(s\)"):
        int_column(pa.array([1, None], pa.int64()), "int64", "c")
    assert int_column(pa.array([], pa.int16()), "int32", "c").dtype == np.int32  # empty: nothing to range-check


def test_list_column():
    col = pa.array([[1, 2], [], [3]], pa.list_(pa.int16()))
    offsets, values = list_column(col, "int64", "tail")
    assert offsets.tolist() == [0, 2, 2, 3] and values.tolist() == [1, 2, 3] and values.dtype == np.int64
    offsets, values = list_column(col.slice(1), "int32", "tail")  # a slice: offsets start at 0
    assert offsets.tolist() == [0, 0, 1] and values.tolist() == [3] and values.dtype == np.int32
    chunked = pa.chunked_array([col.slice(0, 1), col.slice(1)])
    assert list_column(chunked, "int64", "tail")[0].tolist() == [0, 2, 2, 3]
    with pytest.raises(SchemaError, match=r"tail: 1 null list\(s\)"):
        list_column(pa.array([[1], None], pa.list_(pa.int64())), "int64", "tail")
    with pytest.raises(SchemaError, match="tail: expected a list<int64> column, got int64"):
        list_column(pa.array([1]), "int64", "tail")
    with pytest.raises(SchemaError, match="expected list<int64>, got list<item: double>"):
        list_column(pa.array([[1.0]]), "int64", "tail")
    with pytest.raises(SchemaError, match=r"tail \(list values\): value out of range for int32"):
        list_column(pa.array([[2**40]]), "int32", "tail")
