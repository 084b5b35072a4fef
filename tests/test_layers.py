"""The one-way layers (pyproject's import-linter contracts) and what they buy: storage, the CLI's
storage commands and the kernels' twins import no torch and nothing above their layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_import_linter_contracts(tmp_path):
    pytest.importorskip("importlinter")
    # The design card installs kernels/ and host/ as gpumat.kernels and gpumat.host (package-dir);
    # import-linter walks the file tree, so give it the installed layout: one gpumat/ with both inside.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gpumat", tmp_path / "gpumat", ignore=ignore)
    shutil.copytree(ROOT / "kernels", tmp_path / "gpumat" / "kernels", ignore=ignore)
    shutil.copytree(ROOT / "host", tmp_path / "gpumat" / "host", ignore=ignore)
    proc = _run(f"""
        import sys
        # an editable install's finder would resolve gpumat.* to the source tree: use the copy
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, {str(tmp_path)!r})
        import gpumat.host, gpumat.kernels  # resolved from the copy, before import-linter looks
        assert gpumat.host.__file__.startswith({str(tmp_path)!r}), gpumat.host.__file__
        from importlinter.cli import lint_imports
        sys.exit(lint_imports(config_filename="pyproject.toml", no_cache=True))
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "3 kept" in proc.stdout


def test_host_and_kernels_never_import_the_package_root():
    """``from gpumat import X`` resolves X lazily through the public face (gpumat/__init__.py), which
    import-linter cannot see through: so host/ and kernels/ never import the root package at all."""
    import ast

    bad = []
    for layer in ("host", "kernels"):
        for path in sorted((ROOT / layer).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "gpumat":
                    bad.append(f"{path.name}:{node.lineno} from gpumat import ...")
                if isinstance(node, ast.Import) and any(a.name == "gpumat" for a in node.names):
                    bad.append(f"{path.name}:{node.lineno} import gpumat")
    assert not bad, bad


def _loaded_after(code: str) -> set[str]:
    proc = _run(code + "\nimport sys; print(' '.join(sorted(sys.modules)))")
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_storage_layer_imports_no_torch():
    mods = _loaded_after("import gpumat, gpumat.host.tier, gpumat.host.planner, gpumat.host.examples; gpumat.Tier")
    assert "torch" not in mods and "triton" not in mods


def test_kernel_twin_imports_nothing_above_its_layer():
    mods = _loaded_after("import gpumat.kernels.np_decode_gather")
    ours = {m for m in mods if m.startswith("gpumat")}
    assert all(m == "gpumat" or m.startswith(("gpumat.core", "gpumat.kernels")) for m in ours), sorted(ours)
    assert "torch" not in mods


def test_cli_storage_commands_import_no_torch(tmp_path):
    import gpumat

    tier = gpumat.Tier.create(str(tmp_path / "t"), {"ts": "int64", "item_id": "int64"})
    tier.append(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 3], "item_id": [4, 5, 6]}))
    for argv in (["inspect", str(tmp_path / "t")], ["--version"], ["--help"], ["bench", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpumat", *argv], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "torch" not in imported and "triton" not in imported, argv
