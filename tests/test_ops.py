"""The one dispatcher: every decode-gather backend behind ``gpumat.ops.decode_gather`` gives the
reference's bits on random staged batches, and backend/device choices fail as SPEC §5 says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpumat
from gpumat.core.errors import GpumatError, SchemaError
from gpumat.ops import BACKENDS, available, decode_gather, pick_device, resolve_backend, run_staged, runs_on_host

from test_decode_gather import assert_equal_verbose, random_batch

CPU = torch.device("cpu")
HOST_AND_CPU = [b for b in BACKENDS if b != "auto" and available(b, CPU)[0]]


@pytest.mark.parametrize("seed", range(6))
def test_every_backend_equals_the_reference(seed):
    staged, _, _ = random_batch(seed, int(np.random.default_rng(seed).integers(0, 40)), [0, 1, 5, 300][seed % 4],
                                400, 6, ("ts", "item", "act"), seed % 2 == 0)
    want, want_viol = decode_gather(staged, "reference")
    for backend in HOST_AND_CPU:
        got, viol = run_staged(staged, backend, CPU)
        assert set(got) == set(want), backend
        for c in want:
            assert got[c].dtype == want[c].dtype, (backend, c)
            assert_equal_verbose(got[c].numpy(), want[c].numpy(), f"{backend} {c}")
        assert_equal_verbose(viol, want_viol.numpy(), f"{backend} violations")


def test_host_and_device_backends():
    assert runs_on_host("reference") and runs_on_host("numpy")
    assert not runs_on_host("triton") and not runs_on_host("torch") and not runs_on_host("cupy")
    assert "torch" in HOST_AND_CPU and "numpy" in HOST_AND_CPU and "reference" in HOST_AND_CPU


def test_auto_never_picks_the_interpreter():
    assert resolve_backend("auto", CPU) == "reference"


def test_unknown_backend_and_device():
    with pytest.raises(SchemaError, match="unknown backend"):
        resolve_backend("fast", CPU)
    with pytest.raises(SchemaError, match="concrete backend"):
        decode_gather(None, "auto")
    with pytest.raises(SchemaError, match="invalid device"):
        pick_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_fails_before_any_work():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(GpumatError, match="not available"):
            pick_device(name)
    with pytest.raises(GpumatError, match="cupy.*CUDA|CUDA"):
        resolve_backend("cupy", CPU)
    with pytest.raises(GpumatError, match="not available"):
        gpumat.Materializer(object.__new__(gpumat.Tier), [gpumat.Tenant("t", [], 1)], device="cuda")


def test_materialize_with_the_torch_backend_on_cpu(tmp_path):
    import pyarrow as pa

    tier = gpumat.Tier.create(str(tmp_path / "t"), {"ts": "int64", "item_id": "int32"})
    tier.append(pa.table({"user_id": [7, 7, 7, 9], "ts": [1, 2, 3, 1], "item_id": [10, 11, 12, 90]}))
    ex = pa.table({"user_id": [7, 9], "version": [1, 1], "length": [3, 1], "request_ts": [10, 10]})
    tenant = gpumat.Tenant("t", ["item_id", "ts"], 2)
    a = gpumat.materialize(tier, ex, tenant, backend="torch")
    b = gpumat.materialize(tier, ex, tenant, backend="reference")
    assert a.equals(b) and a.values["item_id"].dtype == torch.int32
    with pytest.raises(gpumat.LeakageError):
        gpumat.materialize(tier, ex.set_column(3, "request_ts", pa.array([3, 10])), tenant, backend="torch")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
def test_devices_without_data_or_support_fail_before_any_work():
    for name in ("meta", "mps"):
        with pytest.raises(GpumatError, match=f"device {name}"):
            pick_device(name)
