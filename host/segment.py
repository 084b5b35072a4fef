"""The segment file (``.gseg``) of docs/DESIGN.md §2: ``[blob region][index][trailer]``.

- blob region: every (stripe, column) blob of host/codec.py, column-major (all blobs of the first
  schema column in stripe order, then the next column), 8-byte aligned, no gaps;
- index: one row per stripe, sorted by ``(user_id, start)``: ``user_id``, ``start``, ``count`` and per
  column ``c``: ``c.off`` (byte offset of the blob), ``c.nbytes``, ``c.enc`` (0 FOR, 1 LFOR). Stored
  as ``S, F, raw bytes`` (three u64) and the zstd-compressed ``[F, S]`` int64 matrix of the fields,
  each delta-coded along the stripes (a small append's index is a few hundred bytes, not the
  kilobytes of a self-describing format); zero-padded to a multiple of 8 bytes. Format-1 segments
  (magic ``GPUMSEG1``, an Arrow IPC index) are still read;
- trailer (32 bytes): index offset u64, index length u64 (unpadded), crc32 u64, magic ``GPUMSEG2``.

The crc32 covers the index, its padding and the first 16 trailer bytes (so every byte outside the
blobs is checked: the crc word itself against the metadata's copy, the magic by comparison); the
blobs are covered by their per-block hashes.

A segment is a byte range of a file in the tier's store: a data file of its own, or the payload of
a small append's commit record (host/log.py). Readers never memory-map: a small segment's blob
region is read once and kept; a large one is read by ranges, adjacent ranges coalesced into one
read (``Segment.read_words``), so a batch costs a few reads per segment, not one per block.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gpumat.core.errors import CorruptionError
from gpumat.host import codec
from gpumat.host.ranges import ranges

MAGIC = b"GPUMSEG2"
MAGIC_V1 = b"GPUMSEG1"  # an Arrow IPC index (release 0.1)
TRAILER = struct.Struct("<QQQ8s")
_INDEX_HEAD = struct.Struct("<QQQ")
_ZSTD = pa.Codec("zstd")


def _index_fields(columns: list[str]) -> list[str]:
    return ["user_id", "start", "count"] + [f"{c}.{k}" for c in columns for k in ("off", "nbytes", "enc")]


def pack_int_table(fields: dict, names: list[str]) -> bytes:
    """Columns of int64 (equal lengths) as ``S, F, raw bytes`` and the zstd of their delta-coded
    ``[F, S]`` matrix: the compact form of segment indexes and directory snapshots."""
    m = np.stack([np.asarray(fields[f], dtype=np.int64) for f in names]) if names else np.zeros((0, 0), np.int64)
    d = np.diff(m, axis=1, prepend=np.zeros((m.shape[0], 1), np.int64))  # wraps, and cumsum wraps back
    raw = np.ascontiguousarray(d).tobytes()
    return _INDEX_HEAD.pack(m.shape[1], m.shape[0], len(raw)) + _ZSTD.compress(raw, asbytes=True)


def unpack_int_table(data, names: list[str], where: str) -> dict:
    """The columns of ``pack_int_table``; anything else is a ``CorruptionError`` naming ``where``."""
    data = bytes(data)
    if len(data) < _INDEX_HEAD.size:
        raise CorruptionError(f"{where}: table too short")
    S, F, n = _INDEX_HEAD.unpack(data[: _INDEX_HEAD.size])
    if F != len(names) or n != 8 * S * F or S > 1 << 40:
        raise CorruptionError(f"{where}: table has {F} fields x {S} rows; expected {len(names)} fields")
    try:
        raw = _ZSTD.decompress(data[_INDEX_HEAD.size :], decompressed_size=n, asbytes=True)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise CorruptionError(f"{where}: table cannot be decompressed ({e})") from e
    if len(raw) != n:
        raise CorruptionError(f"{where}: table has {len(raw)} bytes, expected {n}")
    m = np.cumsum(np.frombuffer(raw, np.int64).reshape(F, S), axis=1, dtype=np.int64)
    return dict(zip(names, m))


def _encode_index(fields: dict, columns: list[str]) -> bytes:
    return pack_int_table(fields, _index_fields(columns))


def _decode_index(data: bytes, columns: list[str], where: str) -> dict:
    return unpack_int_table(data, _index_fields(columns), f"segment {where}: index")


def _decode_index_v1(data: bytes, columns: list[str], where: str) -> dict:
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    want = _index_fields(columns)
    if table.column_names != want:
        raise CorruptionError(f"segment {where}: index columns {table.column_names} differ from {want}")
    cols = {}
    for name in want:
        col = table.column(name)
        if col.type != pa.int64() or col.null_count:
            raise CorruptionError(f"segment {where}: index column {name!r} is not non-null int64")
        cols[name] = np.asarray(col.combine_chunks().to_numpy(zero_copy_only=False), dtype=np.int64)
    return cols


def _index_crc(index_and_pad: bytes | memoryview, trailer_head: bytes | memoryview) -> int:
    return zlib.crc32(trailer_head, zlib.crc32(index_and_pad)) & 0xFFFFFFFF


def encode_segment(columns: list[str], user_id, start, count, blobs: dict) -> tuple[list, int, int]:
    """The bytes of a segment: ``(buffers, size, index_crc)``; the buffers concatenated are the file.

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
    index = _encode_index(fields, columns)
    pad = b"\0" * (-len(index) % 8)
    head = struct.pack("<QQ", pos, len(index))
    crc = _index_crc(index + pad, head)
    buffers = [np.ascontiguousarray(blobs[c][0], dtype=np.int64) for c in columns]
    buffers += [index, pad, TRAILER.pack(pos, len(index), crc, MAGIC)]
    size = sum(memoryview(b).nbytes for b in buffers)
    return buffers, size, crc


FULL_READ_BYTES = 4 << 20  # a blob region up to this size is read whole, once, and kept
COALESCE_GAP_WORDS = 4096  # ranges closer than 32 KiB are read as one (a store may say otherwise)


@dataclass
class Segment:
    """An open, verified segment: its index arrays, and its blob region read on demand.

    ``off[c]`` / ``nwords[c]``: word offset and length of each stripe's blob of column ``c`` in the
    blob region (``region_words`` words from byte ``base`` of ``path`` in ``store``).
    """

    store: object
    path: str
    base: int
    size: int
    user_id: np.ndarray
    start: np.ndarray
    count: np.ndarray
    off: dict
    nwords: dict
    enc: dict
    region_words: int
    _region: np.ndarray | None = None  # the whole blob region, for a small segment once read

    @property
    def num_stripes(self) -> int:
        return len(self.user_id)

    @property
    def name(self) -> str:
        return self.path if not self.base else f"{self.path}@{self.base}"

    @property
    def small(self) -> bool:
        """Read whole and kept in memory (else read by coalesced ranges)."""
        return self.region_words * 8 <= FULL_READ_BYTES

    def region(self) -> np.ndarray:
        """The whole blob region as int64 words (read once, kept: for small segments)."""
        if self._region is None:
            self._region = np.frombuffer(self.store.read_at(self.path, self.base, self.region_words * 8), np.int64)
        return self._region

    def read_words(self, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Words ``[starts[i], starts[i] + lens[i])`` of the blob region, concatenated in order (int64).

        Ranges must lie inside the region (the caller checked them against the index). Small
        segments are served from memory; large ones by coalesced reads of the ranges' union.
        """
        reqs, finish = self.words_request(starts, lens)
        self.store.fetch(reqs)
        return finish()

    def words_request(self, starts, lens):
        """``read_words`` in two steps, so that a caller can fetch the ranges of several segments at
        once: ``(reqs, finish)``: the ``(path, offset, byte view)`` reads to ``store.fetch``, and the
        function that returns the words once they are filled. Ranges closer than the store's
        ``coalesce_gap_bytes`` are read as one (32 KiB locally; more on an object store, where a
        request costs more than the bytes of a small hole)."""
        starts = np.asarray(starts, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        total = int(lens.sum())
        if total == 0:
            return [], lambda: np.zeros(0, np.int64)
        if self.small:
            return [], lambda: self.region()[ranges(starts, lens)]
        keep = lens > 0
        st, ln = starts[keep], lens[keep]
        order = np.argsort(st, kind="stable")
        s_sorted, e_sorted = st[order], (st + ln)[order]
        # runs: a new run starts where a range begins past everything before it plus the gap
        gap = int(getattr(self.store, "coalesce_gap_bytes", 8 * COALESCE_GAP_WORDS)) // 8
        reach = np.maximum.accumulate(e_sorted)
        new = np.ones(len(s_sorted), bool)
        new[1:] = s_sorted[1:] > reach[:-1] + gap
        run_id = np.cumsum(new) - 1
        run_lo = s_sorted[new]
        run_hi = np.maximum.reduceat(e_sorted, np.flatnonzero(new))
        run_len = run_hi - run_lo
        buf = np.empty(int(run_len.sum()), np.int64)
        run_at = np.cumsum(run_len) - run_len
        view = memoryview(buf).cast("B")
        reqs = [(self.path, self.base + 8 * lo, view[8 * at : 8 * (at + n)])
                for lo, n, at in zip(run_lo.tolist(), run_len.tolist(), run_at.tolist())]

        def finish():
            where = np.empty(len(st), np.int64)  # each kept range's start inside ``buf``
            where[order] = run_at[run_id] + (s_sorted - run_lo[run_id])
            return buf[ranges(where, ln)]

        return reqs, finish


def known_segment(store, path: str, base: int, size: int, region_words: int) -> Segment:
    """A segment whose index a verified checkpoint already holds (host/log.py's directory snapshot):
    its blocks can be read (and are verified by their hashes) without reading its index again."""
    z = np.zeros(0, np.int64)
    return Segment(store, path, base, size, z, z, z, {}, {}, {}, region_words)


def open_segment(store, path: str, base: int, size: int, index_crc: int, columns: list[str], block_size: int) -> Segment:
    """Read and verify the index of the segment at bytes ``[base, base + size)`` of ``path``.

    Every defect (missing or short file, bad trailer, index crc, undecodable or inconsistent index)
    is a ``CorruptionError`` naming the file; an OS failure that is not bad bytes is a ``TierError``.
    """
    where = path if not base else f"{path}@{base}"
    try:
        if size < TRAILER.size or size % 8:
            raise CorruptionError(f"segment {where}: bad size {size}")
        tail = store.read_at(path, base + size - TRAILER.size, TRAILER.size, fresh=True)
        idx_off, idx_len, crc, magic = TRAILER.unpack(tail)
        if magic not in (MAGIC, MAGIC_V1):
            raise CorruptionError(f"segment {where}: bad magic {magic!r}")
        if crc != index_crc:
            raise CorruptionError(f"segment {where}: trailer crc {crc:#x} differs from the recorded {index_crc:#x}")
        if idx_off % 8 or idx_off + idx_len > size - TRAILER.size or idx_len == 0:
            raise CorruptionError(f"segment {where}: bad index range ({idx_off}, {idx_len})")
        index_and_pad = store.read_at(path, base + idx_off, size - TRAILER.size - idx_off)
        if _index_crc(index_and_pad, tail[:16]) != crc:
            raise CorruptionError(f"segment {where}: index checksum mismatch")
        decode = _decode_index if magic == MAGIC else _decode_index_v1
        cols = decode(index_and_pad[:idx_len], columns, where)
    except CorruptionError:
        raise
    except (pa.ArrowException, ValueError, struct.error, TypeError, IndexError) as e:
        raise CorruptionError(f"segment {where}: cannot be read ({type(e).__name__}: {e})") from e
    uid, st, cnt = cols["user_id"], cols["start"], cols["count"]
    S = len(uid)
    bad = (cnt <= 0) | (st < 0)
    if S > 1:
        same = uid[1:] == uid[:-1]
        bad[1:] |= (uid[1:] < uid[:-1]) | (same & (st[1:] < st[:-1] + cnt[:-1]))
    if bad.any():
        raise CorruptionError(f"segment {where}: index rows not sorted or inconsistent (row {int(np.flatnonzero(bad)[0])})")
    nb = (cnt + block_size - 1) // block_size
    off, nwords, enc = {}, {}, {}
    for c in columns:
        o, n, e = cols[f"{c}.off"], cols[f"{c}.nbytes"], cols[f"{c}.enc"]
        if ((o % 8) | (n % 8)).any() or (o < 0).any() or (o + n > idx_off).any() or (n < 8 * codec.HDR_WORDS * nb).any():
            raise CorruptionError(f"segment {where}: blob ranges of column {c!r} out of bounds")
        if ((e != codec.ENC_FOR) & (e != codec.ENC_LFOR)).any():
            raise CorruptionError(f"segment {where}: unknown encoding in column {c!r}")
        off[c], nwords[c], enc[c] = o // 8, n // 8, e
    return Segment(store, path, base, size, uid, st, cnt, off, nwords, enc, idx_off // 8)
