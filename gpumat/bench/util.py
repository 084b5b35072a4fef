"""What every benchmark report carries: the machine, library versions and the git commit."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


def _git_commit() -> str:
    """This checkout's commit, ``+dirty`` with changes to tracked files; "unknown" without git."""
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + "+dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device_name: str | None = None) -> dict:
    """Machine, versions and commit for a benchmark JSON (no CUDA query unless ``device_name`` is None
    and CUDA is already initialized by the caller)."""
    import numpy
    import pyarrow
    import torch

    # GPUMAT_COMMIT names the code where the checkout's .git cannot (a copy of a working tree sent
    # to another machine with an older .git beside it, as the device tool does: profiling/gpu_session.sh)
    commit = os.environ.get("GPUMAT_COMMIT") or _git_commit()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name or "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "git_commit": commit,
    }


def write_json(obj: dict, path: str | None) -> None:
    """Write ``obj`` to ``path`` ('-' for stdout)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=float)
    if path in (None, "-"):
        print(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def require_matplotlib(option: str) -> None:
    """``GpumatError`` before a long run when ``option`` (a plot) needs matplotlib and it is missing."""
    from gpumat.core.errors import GpumatError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GpumatError(f"{option} needs matplotlib: pip install 'gpumat[plot]' (or drop {option})") from None


def report(result: dict, args, print_table, plot, say) -> None:
    """A benchmark's outputs: ``--json`` (``-``: stdout, and then no table), the table, ``--plot``."""
    if args.json is not None:
        write_json(result, args.json)
        if args.json != "-":
            say(f"json: {args.json}")
    if args.json != "-":
        print_table(result)
    if args.plot:
        plot(result, args.plot)
        say(f"plot: {args.plot}")


def print_targets(targets: dict) -> None:
    """The last line of a benchmark's table: each target, PASS or FAIL."""
    print("\ntargets: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in targets.items()))


def check_output(path, option: str) -> None:
    """``GpumatError`` before a long run when ``path`` (``--json``, ``--plot``, ``--workdir``) cannot be
    written: a directory where a file goes, a file where a directory would be, or no permission.
    Missing parent directories are fine (they are created)."""
    from gpumat.core.errors import GpumatError

    if path in (None, "-"):
        return
    p = Path(path).absolute()
    if p.is_dir() and option != "--workdir":
        raise GpumatError(f"{option} {path}: is a directory")
    parent = p if option == "--workdir" else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise GpumatError(f"{option} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GpumatError(f"{option} {path}: {parent} is not writable")


def check_outputs(args) -> None:
    """``check_output`` for each of ``--json``, ``--plot``, ``--workdir`` a command has."""
    for option in ("json", "plot", "workdir"):
        check_output(getattr(args, option, None), f"--{option}")


def check_empty_dir(path, option: str) -> None:
    """``GpumatError`` before a long run when ``path`` (a ``--workdir``) exists and is not an empty
    directory: the run builds a tier there, and what an earlier run left would be in the way."""
    from gpumat.core.errors import GpumatError

    if path is None:
        return
    p = Path(path)
    if p.is_dir() and any(p.iterdir()):
        raise GpumatError(f"{option} {path} is not empty: pass an empty or new directory")
    if p.exists() and not p.is_dir():
        raise GpumatError(f"{option} {path} is a file: pass an empty or new directory")


def dir_bytes(path) -> int:
    """Bytes of every file under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


@contextlib.contextmanager
def scratch_dir(workdir, prefix: str):
    """A benchmark's working directory: ``workdir`` (``--workdir``, created if missing, kept), or a
    new temporary directory removed at the end, whatever happens."""
    path = workdir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        if workdir is None:
            shutil.rmtree(path, ignore_errors=True)
