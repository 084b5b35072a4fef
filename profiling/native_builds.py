"""Another build of ``host/_native.c`` beside the checkout's, for paired A/Bs in one process (the results
scripts' ``ab_so.py`` / ``so_ab.py``): ``old, new, use = swap(OLD_C)`` compiles ``OLD_C`` here with
setup.py's flags and gives the two sets of ``host.native``'s ctypes functions; ``use(old)`` / ``use(new)``
puts one set in place. The old build must have the checkout's ABI (the same functions and signatures)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sysconfig
import tempfile


def swap(old_c: str):
    from gpumat.host import native

    so = os.path.join(tempfile.mkdtemp(prefix="gpumat-ab-"), "old.so")
    subprocess.check_call(["gcc", "-shared", "-fPIC", "-O3", "-std=c99", "-fno-strict-aliasing", "-mpopcnt",
                           "-I", sysconfig.get_paths()["include"], old_c, "-o", so])
    lib = ctypes.CDLL(so)
    names = [n for n in dir(native) if n.startswith("_") and isinstance(getattr(native, n), ctypes._CFuncPtr)]
    new = {n: getattr(native, n) for n in names}
    old = {}
    for n, f in new.items():
        g = getattr(lib, f.__name__)
        g.restype, g.argtypes = f.restype, f.argtypes
        old[n] = g

    def use(fs):
        for n, f in fs.items():
            setattr(native, n, f)

    return old, new, use
