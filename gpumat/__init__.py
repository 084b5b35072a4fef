"""gpumat: versioned late materialization of ultra-long user histories, rebuilt on the GPU.

    import gpumat
    tier = gpumat.Tier.create("/data/uih", {"ts": "int64", "item_id": "int64"})
    tier.append(events)                                   # pyarrow Table or Parquet path
    batch = gpumat.materialize(tier, examples, gpumat.Tenant("short", ["item_id"], 256))

See SPEC.md for the contract and docs/DESIGN.md for the formats.
"""

from gpumat.errors import (  # noqa: F401  (errors first: host/ and kernels/ import them)
    CorruptionError,
    GpumatError,
    LeakageError,
    PointerError,
    SchemaError,
    TierError,
)
from gpumat.batch import JaggedBatch, Tenant  # noqa: F401
from gpumat.host.tier import Tier  # noqa: F401
from gpumat.host.logger import ExampleLogger  # noqa: F401
from gpumat.api import materialize  # noqa: F401
from gpumat.materializer import Materializer, MaterializedBatch  # noqa: F401

__version__ = "0.1.0"
__all__ = [
    "CorruptionError", "GpumatError", "LeakageError", "PointerError", "SchemaError", "TierError",
    "JaggedBatch", "Tenant", "Tier", "ExampleLogger", "materialize", "Materializer", "MaterializedBatch",
]
