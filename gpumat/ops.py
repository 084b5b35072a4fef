"""One op, one dispatcher: ``decode_gather(staged, backend)`` over every implementation.

The op turns a ``StagedBatch`` (compressed blocks + tile descriptors + tails, built by the host
planner) into the tenant's jagged values and the per-example leakage flags. Its implementations:

============  ==============================================  ==========================
backend       implementation                                  runs on
============  ==============================================  ==========================
reference     ``gpumat.host.reference`` (host codec, NumPy)   host, any target device
numpy         ``gpumat.kernels.np_decode_gather`` (the twin)  host, any target device
triton        ``gpumat.kernels.triton_decode_gather``         CUDA (CPU: interpreter)
torch         ``gpumat.kernels.pt_decode_gather`` (peer)      any torch device
cupy          ``gpumat.kernels.cuda_decode_gather`` (twin)    CUDA with cupy
============  ==============================================  ==========================

Every caller (``materialize``, ``Materializer``, the DALI backend, the benchmarks, the tests)
goes through this module; none imports an implementation directly. Host backends take a
host-resident batch (NumPy arrays); device backends take the batch where it was copied
(``StagedBatch.to`` / ``from_flat``). Results are identical on every backend, bit for bit.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import torch

from gpumat.core.errors import GpumatError, SchemaError
from gpumat.core.staged import StagedBatch


@dataclass(frozen=True)
class _Impl:
    module: str
    function: str
    host: bool  # consumes a host-resident (NumPy) batch; else a device-resident (torch) one


_IMPLS = {
    "reference": _Impl("gpumat.host.reference", "materialize_staged_reference", True),
    "numpy": _Impl("gpumat.kernels.np_decode_gather", "materialize_staged_np", True),
    "triton": _Impl("gpumat.kernels.triton_decode_gather", "materialize_staged_triton", False),
    "torch": _Impl("gpumat.kernels.pt_decode_gather", "materialize_staged_torch", False),
    "cupy": _Impl("gpumat.kernels.cuda_decode_gather", "materialize_staged_cuda", False),
}
BACKENDS = ("auto", *_IMPLS)


def resolve_device(device) -> torch.device:
    """``torch.device(device)``, or ``SchemaError`` for something that names no device."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise SchemaError(f"invalid device {device!r}: {e}") from None


def check_device(device: torch.device) -> None:
    """``GpumatError`` before any work when ``device`` cannot hold a batch on this machine.

    CUDA is checked through the driver (a missing build, no visible device, an index past the
    count); ``meta`` holds no data; any other type must accept a one-element tensor. The check runs
    at the public boundary, never at import.
    """
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise GpumatError(f"device {device} is not available: {build}; use the cpu device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GpumatError(f"device {device} is not available: {torch.cuda.device_count()} CUDA device(s) visible")
        return
    if device.type == "meta":
        raise GpumatError("device meta holds no data: materialized batches need a real device (cpu or cuda)")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, NotImplementedError, AssertionError) as e:
        raise GpumatError(f"device {device} is not available: {' '.join(str(e).split())}; use the cpu device") from None


def pick_device(name) -> torch.device:
    """A device for a command line's ``--device``: ``auto`` is CUDA when present, else the CPU;
    anything else must name a device that works here (checked before any work starts)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = resolve_device(name)
    check_device(device)
    return device


def available(backend: str, device: torch.device) -> tuple[bool, str]:
    """Whether ``backend`` can run for ``device``, and if not, why and what to do instead."""
    if backend in ("reference", "numpy", "torch"):
        return True, f"{backend} ({'host' if _IMPLS[backend].host else device.type})"
    if backend == "triton":
        from gpumat.kernels.triton_decode_gather import triton_available

        return triton_available(device)
    if backend == "cupy":
        if device.type != "cuda":
            return False, f"backend='cupy' needs a CUDA device, got {device}; use backend='reference'"
        try:
            importlib.import_module(_IMPLS["cupy"].module)
        except ImportError as e:
            return False, f"backend='cupy' needs cupy ({e}); pip install 'gpumat[cuda]'"
        return True, "cupy on CUDA"
    raise SchemaError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run: ``auto`` picks Triton on a GPU, the reference elsewhere (never the interpreter)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise SchemaError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        from gpumat.kernels.triton_decode_gather import INTERPRETED

        ok = device.type == "cuda" and not INTERPRETED and available("triton", device)[0]
        return "triton" if ok else "reference"
    ok, reason = available(backend, device)
    if not ok:
        raise GpumatError(f"backend={backend!r} cannot run on device {device}: {reason}")
    return backend


def runs_on_host(backend: str) -> bool:
    """True for the backends that consume a host-resident batch (their results are then copied)."""
    return _IMPLS[backend].host


def decode_gather(staged: StagedBatch, backend: str):
    """Run the decode-gather op on ``staged`` with ``backend`` (a name from ``BACKENDS``, not ``auto``).

    ``staged`` must reside where the backend runs: NumPy arrays for a host backend, tensors on
    the device for the others (moved with ``StagedBatch.to``/``from_flat``, which carry the sizes
    the host knows, so a device backend never reads them back).

    Returns ``(values, violations)``: ``values[col]`` a tensor of the column's schema dtype,
    ``[offsets[-1]]``, for every projected column (CPU tensors for a host backend, else on the
    batch's device), and ``violations`` bool ``[B]`` beside them, True where an example
    materialized ``ts >= request_ts`` (all False when the batch does not check leakage).
    """
    impl = _IMPLS.get(backend)
    if impl is None:
        raise SchemaError(f"decode_gather needs a concrete backend, one of {list(_IMPLS)}; got {backend!r}")
    fn = getattr(importlib.import_module(impl.module), impl.function)
    if impl.host:
        values, viol = fn(staged)
        return {c: torch.from_numpy(v) for c, v in values.items()}, torch.from_numpy(np.asarray(viol) != 0)
    values, viol = fn(staged)
    return values, viol != 0


def run_staged(staged: StagedBatch, backend: str, device: torch.device):
    """One host-resident batch through ``backend`` to ``device``, synchronously.

    Returns ``(values on device, violations bool [B] as NumPy)``; the only host synchronization
    is reading the violation flags (one small copy per batch).
    """
    if runs_on_host(backend):
        values, viol = decode_gather(staged, backend)
        return {c: v.to(device) for c, v in values.items()}, viol.numpy()
    values, viol = decode_gather(staged.to(device, non_blocking=True), backend)
    return values, viol.cpu().numpy()
