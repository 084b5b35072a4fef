"""gpumat/core/tenant.py: what a ``Tenant`` accepts and refuses (always a ``SchemaError`` that names
it), its JSON form (SPEC §3) and the check against a tier schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpumat.core.errors import SchemaError
from gpumat.core.tenant import Tenant

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}


def test_valid_tenants():
    t = Tenant("short", ["item_id", "action"], 256)
    assert (t.name, t.columns, t.max_len) == ("short", ("item_id", "action"), 256)
    assert Tenant("t", iter(["ts", "item_id"]), 1).columns == ("ts", "item_id")  # any iterable, read once
    assert Tenant("t", ("item_id",), np.int32(5)).max_len == 5 and type(Tenant("t", [], np.int64(5)).max_len) is int
    assert Tenant("none", [], 0).columns == ()  # no columns and max_len 0 are normal
    assert Tenant("huge", ["ts"], 2**80).max_len == 2**63 - 1  # no sequence is longer: int64 arithmetic stays safe
    assert Tenant("a", ["ts"], 3) == Tenant("a", ("ts",), 3) and len({Tenant("a", ["ts"], 3), Tenant("a", ("ts",), 3)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.max_len = 3


@pytest.mark.parametrize("name, columns, max_len, words", [
    ("", ["ts"], 1, "name must be a non-empty string"),
    (None, ["ts"], 1, "name must be a non-empty string"),
    (7, ["ts"], 1, "name must be a non-empty string"),
    ("t", "item_id", 1, "columns must be a list of column names"),  # a string is not a list of names
    ("t", None, 1, "columns must be a list of column names"),
    ("t", 5, 1, "columns must be a list of column names"),
    ("t", ["ts", 3], 1, "columns must be a list of column names"),
    ("t", ["ts", "item_id", "ts"], 1, "duplicate columns"),
    ("t", ["ts"], -1, "max_len must be >= 0"),
    ("t", ["ts"], 2.0, "max_len must be an integer"),
    ("t", ["ts"], True, "max_len must be an integer"),
    ("t", ["ts"], "8", "max_len must be an integer"),
    ("t", ["ts"], None, "max_len must be an integer"),
])
def test_invalid_tenants(name, columns, max_len, words):
    with pytest.raises(SchemaError, match=words):
        Tenant(name, columns, max_len)


def test_json_round_trip_and_errors():
    t = Tenant("mid", ["item_id", "ts"], 4096)
    assert t.to_json() == {"name": "mid", "columns": ["item_id", "ts"], "max_len": 4096}
    assert Tenant.from_json(t.to_json()) == t
    for bad, words in (
        ({"name": "t", "columns": ["ts"]}, "exactly the keys"),
        ({"name": "t", "columns": ["ts"], "max_len": 1, "extra": 0}, "exactly the keys"),
        (["t", ["ts"], 1], "exactly the keys"),
        ({"name": "t", "columns": "ts", "max_len": 1}, "'columns' must be a list"),
        ({"name": "t", "columns": ("ts",), "max_len": 1}, "'columns' must be a list"),  # JSON has lists only
        ({"name": "t", "columns": ["ts"], "max_len": -2}, "max_len must be >= 0"),
        ({"name": "", "columns": ["ts"], "max_len": 1}, "name must be"),
    ):
        with pytest.raises(SchemaError, match=words):
            Tenant.from_json(bad)


def test_check_against_a_schema():
    Tenant("t", ["item_id", "action", "ts"], 3).check(SCHEMA)
    Tenant("t", [], 3).check(SCHEMA)
    with pytest.raises(SchemaError, match=r"tenant 't': unknown column\(s\) \['nope', 'user_id'\]"):
        Tenant("t", ["item_id", "nope", "user_id"], 3).check(SCHEMA)  # user_id is the key, not a column
