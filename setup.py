"""The one compiled piece: the host codec's C block decoder (host/_native.c, loaded with ctypes by
gpumat.host.native). Optional: where no C compiler is found the build goes on without it and the
NumPy decoder, bit-identical, is used."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gpumat.host._native", ["host/_native.c"], optional=True,
                             extra_compile_args=["-O3", "-std=c99", "-fno-strict-aliasing"])])
