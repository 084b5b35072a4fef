"""host/examples.py, where examples come from: ``example_files`` (files, directories, glob patterns,
lists of them, a file whose name looks like a pattern) and ``read_examples_table`` (tables, record
batches, several files with and without tails), and what each refuses."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.errors import SchemaError
from gpumat.host.examples import example_files, parse_examples, read_examples_table

SCHEMA = {"ts": "int64", "item_id": "int64"}


def pointers(users, **more) -> pa.Table:
    n = len(users)
    return pa.table({"user_id": users, "version": [1] * n, "length": [0] * n, "request_ts": [9] * n, **more})


@pytest.fixture
def files(tmp_path):
    """ex/b.parquet and ex/a.parquet (with tails), ex/c.txt, ex/sub/d.parquet, ``ex[1].parquet``, ``ex1.parquet``."""
    d = tmp_path / "ex"
    (d / "sub").mkdir(parents=True)
    pq.write_table(pointers([2, 3]), d / "b.parquet")
    pq.write_table(pointers([1], tail_ts=pa.array([[5]], pa.list_(pa.int64())),
                            tail_item_id=pa.array([[7]], pa.list_(pa.int64()))), d / "a.parquet")
    (d / "c.txt").write_text("not examples")
    pq.write_table(pointers([4]), d / "sub" / "d.parquet")
    pq.write_table(pointers([5]), tmp_path / "ex[1].parquet")
    pq.write_table(pointers([6]), tmp_path / "ex1.parquet")  # what "ex[1].parquet" matches as a pattern
    return tmp_path


def test_example_files(files):
    d = files / "ex"
    a, b = str(d / "a.parquet"), str(d / "b.parquet")
    assert example_files(b) == [b]
    assert example_files(d / "b.parquet") == [b]  # os.PathLike
    assert example_files(str(d)) == [a, b]  # a directory: its *.parquet files, sorted, not recursive
    assert example_files(str(d / "*.parquet")) == [a, b]  # a pattern: sorted
    assert example_files(str(files / "**" / "*.parquet")) == [a, b]  # not recursive either
    assert example_files([b, str(d / "a*.parquet"), str(d / "sub")]) == [b, a, str(d / "sub" / "d.parquet")]  # order kept
    # A file whose name looks like a pattern is that file ("[1]" as a pattern would match "ex1.parquet").
    assert example_files(str(files / "ex[1].parquet")) == [str(files / "ex[1].parquet")]
    assert example_files(str(files / "ex[0-9].parquet")) == [str(files / "ex1.parquet")]  # a pattern otherwise
    assert example_files(os.fsencode(b)) == [b]


@pytest.mark.parametrize("item, words", [
    ("missing.parquet", "examples file '.*missing.parquet' not found"),
    ("ex/*.nothing", "examples pattern '.*' matches no file"),
    ("ex/sub/none/*", "examples pattern '.*' matches no file"),
    ("empty", "examples directory '.*empty' holds no \\*.parquet file"),
])
def test_example_files_that_match_nothing(files, item, words):
    (files / "empty").mkdir()
    (files / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SchemaError, match=words):
        example_files(str(files / item))
    with pytest.raises(SchemaError, match=words):
        example_files([str(files / "ex" / "b.parquet"), str(files / item)])  # one bad name in a list fails it


def test_example_files_bad_arguments(files):
    with pytest.raises(SchemaError, match="an empty list of files"):
        example_files([])
    with pytest.raises(SchemaError, match="expected a path or glob pattern, got int"):
        example_files([str(files / "ex" / "b.parquet"), 3])


def test_read_examples_table_mixed_tails(files):
    d = files / "ex"
    t = read_examples_table(str(d))  # a.parquet has tails, b.parquet has none: its rows get empty tails
    assert t.column("user_id").to_pylist() == [1, 2, 3]
    assert t.column("tail_ts").to_pylist() == [[5], [], []] and t.column("tail_item_id").to_pylist() == [[7], [], []]
    assert t.column_names[:4] == ["user_id", "version", "length", "request_ts"]
    ex = parse_examples(t, SCHEMA)
    assert ex.tail_len.tolist() == [1, 0, 0] and ex.tail_values["item_id"].tolist() == [7]
    t = read_examples_table([str(d / "b.parquet"), str(d / "a.parquet")])  # order of the files given
    assert t.column("user_id").to_pylist() == [2, 3, 1] and t.column("tail_ts").to_pylist() == [[], [], [5]]


def test_read_examples_table_from_memory():
    t = pointers([1, 2])
    assert read_examples_table(t) is t
    rb = t.to_batches()[0]
    assert read_examples_table(rb).equals(t)
    for bad in (3, {"user_id": [1]}, None):
        with pytest.raises(SchemaError, match="examples must be a pyarrow Table, Parquet path"):
            read_examples_table(bad)


def test_read_examples_table_refuses_files_that_disagree(files):
    d = files / "ex"
    pq.write_table(pointers([6], label=[1]), files / "extra.parquet")
    with pytest.raises(SchemaError, match="has columns .*'label'.*, the first file"):
        read_examples_table([str(d / "b.parquet"), str(files / "extra.parquet")])
    pq.write_table(pa.table({"user_id": ["x"], "version": [1], "length": [0], "request_ts": [9]}), files / "str.parquet")
    with pytest.raises(SchemaError, match="examples files disagree on column types"):
        read_examples_table([str(d / "b.parquet"), str(files / "str.parquet")])
    with pytest.raises(SchemaError, match="cannot read examples from '.*c.txt'"):
        read_examples_table(str(d / "c.txt"))
