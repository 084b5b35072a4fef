"""The one compiled piece: the host codec's C block decoder (host/_native.c, loaded with ctypes by
gpumat.host.native). Optional: where no C compiler is found the build goes on without it and the
NumPy decoder, bit-identical, is used."""

import platform

from setuptools import Extension, setup

# x86-64: POPCNT (every x86-64 CPU since 2008) as one instruction, not libgcc's call; BMI2's pdep is
# chosen at run time (host/_native.c gm_fast_pdep)
_X86 = ["-mpopcnt"] if platform.machine().lower() in ("x86_64", "amd64") else []

setup(ext_modules=[Extension("gpumat.host._native", ["host/_native.c"], optional=True,
                             extra_compile_args=["-O3", "-std=c99", "-fno-strict-aliasing"] + _X86)])
