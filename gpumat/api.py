"""``gpumat.materialize``: one batch of examples, one tenant, synchronously (SPEC §2, §4)."""

from __future__ import annotations

import numpy as np
import torch

from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import LeakageError, SchemaError
from gpumat.core.staged import leakage_mode
from gpumat.core.tenant import Tenant
from gpumat.host.examples import check_pointers, parse_examples
from gpumat.host.planner import plan
from gpumat.ops import check_device, resolve_backend, resolve_device, run_staged


def materialize(tier, examples, tenant: Tenant, device="cpu", backend: str = "auto", check_leakage=True) -> JaggedBatch:
    """Rebuild the sequences of ``examples`` for ``tenant`` from ``tier`` (SPEC §2).

    ``examples``: pyarrow Table or Parquet path with ``user_id, version, length, request_ts`` and
    optional ``tail_<c>`` list columns. Returns a ``JaggedBatch`` on ``device`` with one value
    tensor per tenant column (schema dtype), ``offsets`` ``[B + 1]`` and ``lengths`` ``[B]``.
    ``check_leakage``: ``True``/``"strict"`` (every materialized ``ts < request_ts``),
    ``"inclusive"`` (``ts <= request_ts``) or ``False``; a violation is a ``LeakageError``.

    >>> import pyarrow as pa, tempfile, gpumat
    >>> tier = gpumat.Tier.create(tempfile.mkdtemp() + "/t", {"ts": "int64", "item_id": "int64"})
    >>> v = tier.append(pa.table({"user_id": [7, 7, 7, 9], "ts": [1, 2, 3, 1], "item_id": [10, 11, 12, 90]}))
    >>> ex = pa.table({"user_id": [7, 9], "version": [1, 1], "length": [3, 1], "request_ts": [10, 10],
    ...                "tail_ts": [[4], []], "tail_item_id": [[13], []]})
    >>> b = gpumat.materialize(tier, ex, gpumat.Tenant("short", ["item_id"], 2), backend="reference")
    >>> b.offsets.tolist(), b.values["item_id"].tolist()
    ([0, 2, 3], [12, 13, 90])
    """
    if not isinstance(tenant, Tenant):
        raise SchemaError(f"tenant must be a gpumat.Tenant, got {type(tenant).__name__}")
    mode = leakage_mode(check_leakage)
    dev = resolve_device(device)
    check_device(dev)
    chosen = resolve_backend(backend, dev)
    tenant.check(tier.schema)
    ex = parse_examples(examples, tier.schema)
    check_pointers(ex, tier)
    staged = plan(tier, ex, tenant, mode)
    values, viol = run_staged(staged, chosen, dev)
    if mode:
        LeakageError.check(viol, ex.user_id, ex.request_ts, inclusive=mode == "inclusive")
    offsets = torch.from_numpy(np.asarray(staged.offsets)).to(dev)
    return JaggedBatch(offsets, {c: values[c] for c in tenant.columns}, nbytes_read=staged.nbytes_read)
