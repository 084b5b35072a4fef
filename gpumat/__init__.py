"""gpumat: versioned late materialization of ultra-long user histories, rebuilt on the GPU.

    import gpumat
    tier = gpumat.Tier.create("/data/uih", {"ts": "int64", "item_id": "int64"})
    tier.append(events)                                   # pyarrow Table or Parquet path
    batch = gpumat.materialize(tier, examples, gpumat.Tenant("short", ["item_id"], 256))

docs/SPEC.md is the contract; docs/DESIGN.md describes the formats and the kernels.

The public names are resolved lazily (PEP 562): ``import gpumat`` and the storage layer
(``gpumat.Tier``) never import torch; ``gpumat.materialize`` and ``gpumat.Materializer`` do.
``__version__`` is the installed package's (pyproject.toml is its one source).
"""

from __future__ import annotations

import importlib
from pathlib import Path

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


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpumat")
    except PackageNotFoundError:
        return _source_version(Path(__file__).resolve().parent.parent / "pyproject.toml")


def _source_version(pyproject: Path) -> str:
    """``[project] version`` of ``pyproject``; ``0+unknown`` when it cannot be read."""
    try:
        import tomllib  # Python 3.11+

        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (ImportError, OSError, ValueError, KeyError, TypeError):
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = value = _version()  # resolved once
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpumat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
