"""The bottom layer of gpumat: what every other layer may import, and which imports nothing above it.

- ``errors``: the typed errors of SPEC §5 (no torch)
- ``names``: column names and dtypes fixed by the file formats (no torch)
- ``tenant``: ``Tenant`` (no torch)
- ``staged``: ``StagedBatch``, the contract between the host planner and the kernels (NumPy;
  torch only when a batch is packed for or moved to a device)
- ``batch``: ``JaggedBatch``, the materialized output, and its ``KeyedJaggedTensor`` (torch)
- ``pipelineable``: torchrec ``Pipelineable`` registration and the KJT import, without importing
  torchrec until it is used (no torch)

``gpumat.host`` and ``gpumat.kernels`` build on this; the public face (``gpumat``) wires them.
"""
