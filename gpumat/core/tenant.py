"""``Tenant``: one model's view of the histories (SPEC §1): the columns it reads and its ``max_len``.

Pure Python and NumPy: storage code and the planner use it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpumat.core.errors import SchemaError

_I64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Tenant:
    """One model's view of the histories: the feature ``columns`` it reads and its ``max_len``.

    >>> Tenant("short", ["item_id", "action"], 256)
    Tenant(name='short', columns=('item_id', 'action'), max_len=256)
    """

    name: str
    columns: tuple[str, ...]
    max_len: int

    def __init__(self, name: str, columns, max_len: int):
        if not isinstance(name, str) or not name:
            raise SchemaError(f"tenant name must be a non-empty string, got {name!r}")
        try:
            cols = None if isinstance(columns, str) else tuple(columns)  # once: columns may be an iterator
        except TypeError:
            cols = None
        if cols is None or not all(isinstance(c, str) for c in cols):
            raise SchemaError(f"tenant {name!r}: columns must be a list of column names, got {columns!r}")
        if len(set(cols)) != len(cols):
            raise SchemaError(f"tenant {name!r}: duplicate columns in {list(cols)}")
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)):
            raise SchemaError(f"tenant {name!r}: max_len must be an integer, got {max_len!r}")
        if max_len < 0:
            raise SchemaError(f"tenant {name!r}: max_len must be >= 0, got {max_len}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "columns", cols)
        # No sequence can hold more than 2**63 - 1 events, so a larger max_len means the same (and keeps the
        # planner's int64 arithmetic from overflowing).
        object.__setattr__(self, "max_len", min(int(max_len), _I64_MAX))

    def check(self, schema: dict[str, str]) -> None:
        """Raise ``SchemaError`` if a column is not in ``schema``."""
        unknown = [c for c in self.columns if c not in schema]
        if unknown:
            raise SchemaError(f"tenant {self.name!r}: unknown column(s) {unknown}; schema has {sorted(schema)}")

    @classmethod
    def from_json(cls, obj) -> "Tenant":
        """Build from the JSON object of SPEC §3 (``{"name", "columns", "max_len"}``)."""
        if not isinstance(obj, dict) or set(obj) != {"name", "columns", "max_len"}:
            raise SchemaError(f"tenant JSON must have exactly the keys name, columns, max_len; got {obj!r}")
        if not isinstance(obj["columns"], list):
            raise SchemaError(f"tenant JSON 'columns' must be a list, got {obj['columns']!r}")
        return cls(obj["name"], obj["columns"], obj["max_len"])

    def to_json(self) -> dict:
        return {"name": self.name, "columns": list(self.columns), "max_len": self.max_len}
