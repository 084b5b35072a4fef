"""``gpumat.materialize``: the public dispatcher that wires the host planner to a backend."""

from __future__ import annotations

import numpy as np
import torch

from gpumat.batch import JaggedBatch, Tenant
from gpumat.errors import GpumatError, LeakageError, SchemaError, describe_indices
from gpumat.host.examples import Examples, check_pointers, parse_examples
from gpumat.host.planner import plan
from gpumat.kernels.staged import StagedBatch

BACKENDS = ("auto", "reference", "triton")


def resolve_device(device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise SchemaError(f"invalid device {device!r}: {e}") from None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run: ``auto`` picks Triton on a GPU, the reference elsewhere (never the interpreter)."""
    if backend not in BACKENDS:
        raise SchemaError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "reference":
        return backend
    from gpumat.kernels.triton_decode_gather import INTERPRETED, triton_available

    ok, reason = triton_available(device)
    if backend == "triton":
        if not ok:
            raise GpumatError(f"backend='triton' cannot run on device {device}: {reason}")
        return "triton"
    return "triton" if ok and device.type == "cuda" and not INTERPRETED else "reference"


def run_staged(staged: StagedBatch, backend: str, device: torch.device) -> tuple[dict, np.ndarray]:
    """Run one staged batch; returns (values on ``device``, violations bool [B] on the host).

    The only host synchronization is reading the violation flags (one small copy per batch).
    """
    if backend == "reference":
        from gpumat.reference import materialize_staged_reference

        values, viol = materialize_staged_reference(staged)
        return {c: torch.from_numpy(v).to(device) for c, v in values.items()}, viol
    from gpumat.kernels.triton_decode_gather import materialize_staged_triton

    dev = staged.to(device, non_blocking=True)
    values, viol = materialize_staged_triton(dev, total=staged.total)  # the host knows the size: no device read
    return values, viol.cpu().numpy().astype(bool)


def raise_on_leakage(violations: np.ndarray, ex: Examples) -> None:
    bad = np.flatnonzero(violations)
    if bad.size:
        raise LeakageError(
            f"examples {describe_indices(bad)} materialize events with ts >= request_ts "
            f"(first: user {int(ex.user_id[bad[0]])}, request_ts {int(ex.request_ts[bad[0]])})",
            bad,
        )


def materialize(tier, examples, tenant: Tenant, device="cpu", backend: str = "auto", check_leakage: bool = True) -> JaggedBatch:
    """Rebuild the sequences of ``examples`` for ``tenant`` from ``tier`` (SPEC §2).

    ``examples``: pyarrow Table or Parquet path with ``user_id, version, length, request_ts`` and
    optional ``tail_<c>`` list columns. Returns a ``JaggedBatch`` on ``device`` with one value
    tensor per tenant column (schema dtype), ``offsets`` ``[B + 1]`` and ``lengths`` ``[B]``.

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
    dev = resolve_device(device)
    chosen = resolve_backend(backend, dev)
    tenant.check(tier.schema)
    ex = parse_examples(examples, tier.schema)
    check_pointers(ex, tier)
    staged = plan(tier, ex, tenant, check_leakage)
    values, viol = run_staged(staged, chosen, dev)
    if check_leakage:
        raise_on_leakage(viol, ex)
    offsets = torch.from_numpy(np.asarray(staged.offsets)).to(dev)
    return JaggedBatch(offsets, {c: values[c] for c in tenant.columns}, nbytes_read=staged.nbytes_read)
