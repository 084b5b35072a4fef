"""torchrec interoperability that never imports torchrec: ``Pipelineable`` registration and the KJT import.

torchrec's train pipelines accept a batch only when ``isinstance(batch, Pipelineable)`` holds
(``torchrec.streamable.Pipelineable``, an ``abc.ABC`` with ``to`` and ``record_stream``).
gpumat's batches implement those methods and register as *virtual* subclasses: at once when
``torchrec.streamable`` has already been imported, otherwise the moment it is (a meta-path finder
that wraps the loader of that one module and registers the classes after it runs). Importing
torchrec takes seconds (it loads FBGEMM's operator libraries), so gpumat never imports it just to
register, and ``import gpumat.core.batch`` stays free of torchrec whether or not it is installed.

No torch, no project imports: the bottom layer.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

_STREAMABLE = "torchrec.streamable"
_CLASSES: list[type] = []
_LOCK = threading.Lock()
_HOOK = None


def _register(module) -> None:
    base = getattr(module, "Pipelineable", None)
    if base is not None:
        for cls in list(_CLASSES):
            base.register(cls)  # idempotent


class _RegisteringLoader(importlib.abc.Loader):
    """Runs the real loader of ``torchrec.streamable``, then registers the pending classes."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _register(module)

    def __getattr__(self, name):  # anything else a loader offers (get_source, resources, ...)
        return getattr(self._inner, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds ``torchrec.streamable`` with the other finders and wraps its loader; ignores every other module."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _STREAMABLE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def pipelineable(cls: type) -> type:
    """Class decorator: ``cls`` becomes a virtual subclass of ``torchrec.streamable.Pipelineable``
    as soon as torchrec is (or already was) imported. ``cls`` must define ``to(device,
    non_blocking)`` and ``record_stream(stream)``."""
    global _HOOK
    with _LOCK:
        _CLASSES.append(cls)
        if _HOOK is None:
            _HOOK = _RegisterOnImport()
            sys.meta_path.insert(0, _HOOK)
    # Already imported (before gpumat, or by another thread meanwhile): register now.
    module = sys.modules.get(_STREAMABLE)
    if module is not None:
        _register(module)
    return cls


def torchrec_installed() -> bool:
    """Whether a ``torchrec`` package is installed (found without importing it)."""
    return importlib.util.find_spec("torchrec") is not None


def keyed_jagged_tensor_class():
    """``torchrec.sparse.jagged_tensor.KeyedJaggedTensor`` (imports torchrec: seconds the first time).

    ``ImportError`` with the install recipe when torchrec is missing or does not load (FBGEMM
    built for another torch raises ``OSError`` or ``RuntimeError`` while loading).
    """
    try:
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    except (ImportError, OSError, RuntimeError) as e:
        raise ImportError(
            f"KeyedJaggedTensor needs torchrec ({type(e).__name__}: {e}); install it with "
            "pip install 'gpumat[torchrec]' && pip install --no-deps torchrec==1.9.0 (README.md, 'torchrec')"
        ) from e
    return KeyedJaggedTensor
