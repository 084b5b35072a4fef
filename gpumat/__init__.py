"""gpumat: versioned late materialization of ultra-long user histories, rebuilt on the GPU.

    import gpumat
    tier = gpumat.Tier.create("/data/uih", {"ts": "int64", "item_id": "int64"})
    tier.append(events)                                   # pyarrow Table or Parquet path
    batch = gpumat.materialize(tier, examples, gpumat.Tenant("short", ["item_id"], 256))

docs/SPEC.md is the contract; docs/DESIGN.md describes the formats and the kernels.

The public names are resolved lazily (PEP 562): ``import gpumat`` and the storage layer
(``gpumat.Tier``) never import torch; ``gpumat.materialize`` and ``gpumat.Materializer`` do.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "GpumatError": "gpumat.core.errors",
    "TierError": "gpumat.core.errors",
    "SchemaError": "gpumat.core.errors",
    "PointerError": "gpumat.core.errors",
    "LeakageError": "gpumat.core.errors",
    "CorruptionError": "gpumat.core.errors",
    "Tenant": "gpumat.core.tenant",
    "JaggedBatch": "gpumat.core.batch",
    "Tier": "gpumat.host.tier",
    "ExampleLogger": "gpumat.host.logger",
    "materialize": "gpumat.api",
    "Materializer": "gpumat.materializer",
    "MaterializedBatch": "gpumat.materializer",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpumat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
