"""Device side of gpumat: Triton kernels and their NumPy twins (mirrored names, one test file per op).

Nothing here imports ``gpumat.host``; kernels consume the plain staged arrays described in docs/DESIGN.md.
"""
