"""Names fixed by the file formats of SPEC §3, shared by every layer."""

POINTER_COLUMNS = ("user_id", "version", "length", "request_ts")  # the columns of a versioned pointer
TAIL_PREFIX = "tail_"  # ``tail_<c>``: the inline tail of schema column ``c``; names with it are reserved
DTYPES = ("int64", "int32")  # the column dtypes a schema may use
