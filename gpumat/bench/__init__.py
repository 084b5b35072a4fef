"""The benchmarks behind ``gpumat bench``: ``storage`` (tier vs Fat Row and Parquet), ``kernels``
(decode-gather backends against the copy ceilings) and ``e2e`` (training steps fed by the pipeline).

Each module has ``add_arguments(parser)`` and ``run(args)``; results go to JSON (and a PNG) with
the machine, library versions and git commit (``util.environment``).
"""
