"""gpumat: versioned late materialization of ultra-long user histories, rebuilt on the GPU."""

from gpumat.errors import (  # noqa: F401  (errors first: host/ and kernels/ import them)
    CorruptionError,
    GpumatError,
    LeakageError,
    PointerError,
    SchemaError,
    TierError,
)
from gpumat.batch import JaggedBatch, Tenant  # noqa: F401

__version__ = "0.1.0"
