"""Every docstring example of every module runs (the API's worked examples are never stale)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import gpumat

# Modules that need an optional dependency to import at all; their examples run where it is installed.
NEEDS = {"gpumat.kernels.cuda_decode_gather": "cupy"}


def _modules() -> list[str]:
    names = ["gpumat"]
    for info in pkgutil.walk_packages(gpumat.__path__, "gpumat."):
        names.append(info.name)
    for sub in ("gpumat.host", "gpumat.kernels"):  # installed from their own folders (package-dir)
        pkg = importlib.import_module(sub)
        names += [sub] + [info.name for info in pkgutil.walk_packages(pkg.__path__, sub + ".")]
    return sorted(set(n for n in names if not n.endswith("__main__")))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    dep = NEEDS.get(name)
    if dep and importlib.util.find_spec(dep) is None:
        pytest.skip(f"{name} needs {dep}")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
