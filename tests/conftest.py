"""Test-session setup shared by every test module.

Triton decides at ``@triton.jit`` time whether a kernel is compiled or interpreted, so the choice
must be made before any module defining kernels is imported, and without asking CUDA (collection
must work on machines without a GPU). Default: the CPU interpreter. ``GPUMAT_TEST_NATIVE=1`` runs
the kernel tests natively on a GPU instead.
"""

import os

if os.environ.get("GPUMAT_TEST_NATIVE") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: the CI box has 2 cores shared with other jobs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["native", "numpy"])
def decoder(request, monkeypatch):
    """Run a test with the host's C codec (host/_native.c: decode, checksums, format 3's parse and
    realign) and again with NumPy's; modules opt in with ``pytestmark = pytest.mark.usefixtures("decoder")``."""
    from gpumat.host import native

    if request.param == "native" and not native.available()[0]:
        pytest.skip(f"C decoder: {native.available()[1]}")
    if request.param == "numpy":
        monkeypatch.setattr(native, "_decode", None)
    return request.param
