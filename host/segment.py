"""The segment file (``.gseg``) of docs/DESIGN.md §2: ``[blob region][index][trailer]``.

- blob region: every (stripe, column) blob of host/codec.py, column-major (all blobs of the first
  schema column in stripe order, then the next column), 8-byte aligned, no gaps;
- index: an Arrow IPC file with one row per stripe, sorted by ``(user_id, start)``: ``user_id``,
  ``start``, ``count`` and per column ``c``: ``c.off`` (byte offset of the blob), ``c.nbytes``,
  ``c.enc`` (0 FOR, 1 LFOR); zero-padded to a multiple of 8 bytes;
- trailer (32 bytes): index offset u64, index length u64 (unpadded), crc32 u64, magic ``GPUMSEG1``.

The crc32 covers the index, its padding and the first 16 trailer bytes (so every byte outside the
blobs is checked: the crc word itself against the manifest's copy, the magic by comparison); the
blobs are covered by their per-block hashes. A reader memory-maps the file and never copies blobs.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gpumat.core.errors import CorruptionError
from gpumat.host import codec

MAGIC = b"GPUMSEG1"
TRAILER = struct.Struct("<QQQ8s")


def _index_crc(index_and_pad: bytes | memoryview, trailer_head: bytes | memoryview) -> int:
    return zlib.crc32(trailer_head, zlib.crc32(index_and_pad)) & 0xFFFFFFFF


def write_segment(path: str, columns: list[str], user_id, start, count, blobs: dict) -> tuple[int, int]:
    """Write a segment file at ``path`` (fsynced) and return ``(size, index_crc)``.

    ``user_id, start, count``: int64 ``[S]`` sorted by ``(user_id, start)``; ``blobs[c]`` is the
    ``(region, blob_off, blob_words, enc)`` of ``codec.encode_stripes`` for column ``c`` over the
    same stripes in the same order.
    """
    fields = {"user_id": user_id, "start": start, "count": count}
    pos = 0  # byte offset of the current column's region
    for c in columns:
        region, blob_off, blob_words, enc = blobs[c]
        fields[f"{c}.off"] = pos + blob_off * 8
        fields[f"{c}.nbytes"] = blob_words * 8
        fields[f"{c}.enc"] = enc
        pos += region.nbytes
    table = pa.table({k: pa.array(np.asarray(v, dtype=np.int64)) for k, v in fields.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    index = sink.getvalue().to_pybytes()
    pad = b"\0" * (-len(index) % 8)
    head = struct.pack("<QQ", pos, len(index))
    crc = _index_crc(index + pad, head)
    with open(path, "wb") as f:
        for c in columns:
            f.write(memoryview(np.ascontiguousarray(blobs[c][0], dtype=np.int64)).cast("B"))
        f.write(index)
        f.write(pad)
        f.write(TRAILER.pack(pos, len(index), crc, MAGIC))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    return size, crc


@dataclass
class Segment:
    """An open, verified segment: its index arrays and the whole file as int64 words (memory-mapped).

    ``off[c]`` / ``nwords[c]``: word offset and length of each stripe's blob of column ``c``.
    """

    path: str
    size: int
    user_id: np.ndarray
    start: np.ndarray
    count: np.ndarray
    off: dict
    nwords: dict
    enc: dict
    words: np.ndarray
    _mmap: object = None

    @property
    def num_stripes(self) -> int:
        return len(self.user_id)


def open_segment(path: str, columns: list[str], size: int, index_crc: int, block_size: int) -> Segment:
    """Memory-map and verify a segment listed in a manifest with ``size`` and ``index_crc``.

    Every failure (missing file, wrong size, bad trailer, index crc, undecodable or inconsistent
    index) is a ``CorruptionError`` naming the file.
    """
    try:
        mm = pa.memory_map(path, "r")
        actual = mm.size()
        if actual != size:
            raise CorruptionError(f"segment {path}: size {actual} bytes, manifest says {size}")
        if size < TRAILER.size or size % 8:
            raise CorruptionError(f"segment {path}: bad size {size}")
        buf = mm.read_buffer(size)
        view = memoryview(buf)
        idx_off, idx_len, crc, magic = TRAILER.unpack(view[size - TRAILER.size :])
        if magic != MAGIC:
            raise CorruptionError(f"segment {path}: bad magic {magic!r}")
        if crc != index_crc:
            raise CorruptionError(f"segment {path}: trailer crc {crc:#x} differs from the manifest's {index_crc:#x}")
        if idx_off % 8 or idx_off + idx_len > size - TRAILER.size or idx_len == 0:
            raise CorruptionError(f"segment {path}: bad index range ({idx_off}, {idx_len})")
        if _index_crc(view[idx_off : size - TRAILER.size], view[size - TRAILER.size : size - 16]) != crc:
            raise CorruptionError(f"segment {path}: index checksum mismatch")
        table = pa.ipc.open_file(pa.BufferReader(buf.slice(idx_off, idx_len))).read_all()
        cols = {}
        want = ["user_id", "start", "count"] + [f"{c}.{k}" for c in columns for k in ("off", "nbytes", "enc")]
        if table.column_names != want:
            raise CorruptionError(f"segment {path}: index columns {table.column_names} differ from {want}")
        for name in want:
            col = table.column(name)
            if col.type != pa.int64() or col.null_count:
                raise CorruptionError(f"segment {path}: index column {name!r} is not non-null int64")
            cols[name] = np.asarray(col.combine_chunks().to_numpy(zero_copy_only=False), dtype=np.int64)
        words = np.frombuffer(buf, dtype=np.int64, count=size // 8)
    except CorruptionError:
        raise
    except (pa.ArrowException, OSError, ValueError, struct.error, TypeError, IndexError) as e:
        raise CorruptionError(f"segment {path}: cannot be read ({type(e).__name__}: {e})") from e
    uid, st, cnt = cols["user_id"], cols["start"], cols["count"]
    S = len(uid)
    bad = (cnt <= 0) | (st < 0)
    if S > 1:
        same = uid[1:] == uid[:-1]
        bad[1:] |= (uid[1:] < uid[:-1]) | (same & (st[1:] < st[:-1] + cnt[:-1]))
    if bad.any():
        raise CorruptionError(f"segment {path}: index rows not sorted or inconsistent (row {int(np.flatnonzero(bad)[0])})")
    nb = (cnt + block_size - 1) // block_size
    off, nwords, enc = {}, {}, {}
    for c in columns:
        o, n, e = cols[f"{c}.off"], cols[f"{c}.nbytes"], cols[f"{c}.enc"]
        if ((o % 8) | (n % 8)).any() or (o < 0).any() or (o + n > idx_off).any() or (n < 8 * codec.HDR_WORDS * nb).any():
            raise CorruptionError(f"segment {path}: blob ranges of column {c!r} out of bounds")
        if ((e != codec.ENC_FOR) & (e != codec.ENC_LFOR)).any():
            raise CorruptionError(f"segment {path}: unknown encoding in column {c!r}")
        off[c], nwords[c], enc[c] = o // 8, n // 8, e
    return Segment(path, size, uid, st, cnt, off, nwords, enc, words, mm)
