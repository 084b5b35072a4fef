"""Names fixed by the file formats of SPEC §3, shared by every layer."""

import numpy as np

POINTER_COLUMNS = ("user_id", "version", "length", "request_ts")  # the columns of a versioned pointer
TAIL_PREFIX = "tail_"  # ``tail_<c>``: the inline tail of schema column ``c``; names with it are reserved
# The column dtypes a schema may use, and the NumPy dtype of each (torch's: ``gpumat.core.batch.TORCH_DTYPES``).
NUMPY_DTYPES = {"int64": np.int64, "int32": np.int32}
