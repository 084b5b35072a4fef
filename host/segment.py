"""The segment file (``.gseg``) of docs/DESIGN.md §2: ``[blob region][index][trailer]``.

- blob region: every (stripe, column) blob of host/codec.py, column-major (all blobs of the first
  schema column in stripe order, then the next column), 8-byte aligned, no gaps;
- index: one row per stripe, sorted by ``(user_id, start)``: ``user_id``, ``start``, ``count`` and per
  column ``c``: ``c.off`` (byte offset of the blob), ``c.nbytes``, ``c.enc`` (0 FOR, 1 LFOR). Stored
  as an int table (``pack_int_table``): format-3 segments in layout 2 (each field less what the
  rows and fields before predict, in byte planes, zstd: about 4 B a stripe on ML-1M and ML-100K),
  format-2 ones in layout 1 (the ``[F, S]`` int64 matrix of the fields, each delta-coded along the
  stripes); zero-padded to a multiple of 8 bytes. Format-1 segments (magic ``GPUMSEG1``, an Arrow
  IPC index) are still read;
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
from gpumat.host import codec, native, pages
from gpumat.host.ranges import group_starts, ranges, restart_cumsum, take_ranges, unique

MAGIC = b"GPUMSEG2"
MAGIC_V1 = b"GPUMSEG1"  # an Arrow IPC index (release 0.1)
MAGIC_V3 = b"GPUMSEG3"  # format 3: the compact blob layout of host/pages.py, checksums per chunk
TRAILER = struct.Struct("<QQQ8s")
TRAILER_V3 = struct.Struct("<QQQQ8s")  # region bytes, index offset, index length, crc32, magic
CHUNK_BYTES = 2048  # format 3: one u32 checksum per this many bytes of the blob region
_INDEX_HEAD = struct.Struct("<QQQ")
_ZSTD = pa.Codec("zstd")


def _index_fields(columns: list[str], cont: bool = True) -> list[str]:
    """A segment index's fields: layout 2 has ``cont`` (the stripe's events follow the row before's
    in the same blobs: a pack of short histories, DESIGN §2); layout 1 has not (no packs)."""
    head = ["user_id", "start", "count"] + (["cont"] if cont else [])
    return head + [f"{c}.{k}" for c in columns for k in ("off", "nbytes", "enc")]


def _restart_sum(x: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``x`` restarted at each row where ``cont`` is false (int64, wrapping)."""
    return restart_cumsum(x, ~np.asarray(cont, bool))


def pack_sizes(count: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Per row, the events of its blobs: its own count, or for the rows of a pack (a row with
    ``cont == 0`` and the ``cont != 0`` rows after it) the pack's sum (int64 arithmetic, wrapping:
    callers bound ``count`` first)."""
    first = group_starts(cont == 0)
    if not len(first):
        return np.zeros(0, np.int64)
    return np.repeat(np.add.reduceat(count, first), np.diff(np.append(first, len(count))))


def pack_skips(count: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Per row, the events of its blobs before its own (0 but in a pack)."""
    return _restart_sum(count, cont != 0) - count


TABLE_V2 = 1 << 32  # in a table head's field count: layout 2 (below)
# int tables' zstd levels: 19 up to 4 MiB of planes, 17 up to 64 MiB (ML-1M with its features cut
# into histories of 8 events, one segment's index of 33 MiB: 141,917 B at level 6 in 0.05 s,
# 122,978 B at 17 in 0.32 s, 115,968 B at 19 in 0.83 s), 6 beyond
_ZSTD_BEST, _ZSTD_MID, _ZSTD_BIG = (pa.Codec("zstd", compression_level=k) for k in (19, 17, 6))


def _shift(x: np.ndarray) -> np.ndarray:
    """``x`` one row later: ``[0, x[0], ..., x[S-2]]``."""
    return np.concatenate((np.zeros(1, np.int64), x[:-1]))


def delta_residuals(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every field as its step from the row before (the first from 0); no parameters."""
    return np.diff(m, axis=1, prepend=np.zeros((m.shape[0], 1), np.int64)), np.zeros(m.shape[0], np.int64)


def delta_values(r: np.ndarray, params: np.ndarray) -> np.ndarray:
    return np.cumsum(r, axis=1, dtype=np.int64)


# form 3 (``index_residuals``): a column's constant rows that lead a pack (or stand alone) as their
# values where at most this share of them repeat the value of the constant row before, else as steps
# (ML-1M with its features cut into pieces of 8 events, a piece a user: 95% repeat; real users
# about 20%, each one's age drawn anew)
CONST_STEPS = 0.5
# the newest form of the segment indexes this release writes (``index_residuals``): the writer
# writes form 3 where a segment has constants (per row of a pack, or per stripe) and form 3 weighs
# smaller (``smaller_form``), else form 2 (its entries say "index": 3 or 2)
INDEX_FORM = 3
ROWS_FORM = 2  # the form of an index with no constants


def index_residuals(m: np.ndarray, form: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A segment index's fields (``_index_fields``, with ``cont``) as what a reader can not predict
    from the rows before and the fields before: ``user_id`` its step; ``start`` less the end of the
    user's stripe before (0 for a user's first); ``count`` and ``cont`` themselves; for a row that
    continues the one before (``cont != 0``), ``c.off``, ``c.nbytes`` and ``c.enc`` less the row
    before's; for any other, ``c.off`` less where the blob before ended, ``c.nbytes`` less its
    blobs' events times the column's mean bytes per event (``params``: that mean in 1/256 B, over
    the blobs that have bytes), or for a constant stripe (``codec.ENC_CONST``) less 0. Then by form
    (the ``params`` of each ``c.enc``: 0 form 1, 1 form 2):

    - form 1 (releases before 2026-12-02): ``c.enc`` its step;
    - form 2: ``c.enc`` itself, but for a DICT one (codes) its dictionary's place (bits 8..) less the
      last DICT row's before it (a stripe table's place grows with its blob's); and for a blob whose
      tag is in its ``enc`` (``codec.enc_tags``), its flags XOR those its tag implies
      (``pages.tag_flags``: 0), and ``c.nbytes`` less what its tag says (``pages.tag_nbytes``)
      where it says. A column with borrowed codes (DESIGN §1) whose ``c.off`` and ``c.nbytes`` are
      another's in every row (its lender's, ``_lenders``): its three fields less that column's,
      row by row, and its ``c.off`` field's ``params`` that column's ``c.off`` field number + 1
      (0 for every other column);
    - form 3: as form 2, but a DICT row's place step zigzagged (so that every residual of a row
      that starts a pack, or stands alone, and is not a constant is at least 0), and the rows of a
      pack led by a constant (``codec.ENC_CONST``: every row of it one, its own, DESIGN §2 "Packs";
      a stripe of its own alike) by their values: the pack's first row ``-1 - x``, a negative
      number, the rows after it ``zigzag`` of their value's step from the row before (0 where a
      user's pieces share an age), where ``x`` is, by the column's ``c.enc`` ``params``, 2: the
      ``zigzag`` of the value's step from the last such row's (``zigzag(value)`` steps: the rows of
      one real user's pieces), or 3: ``zigzag(value)`` itself (users whose values do not repeat),
      whichever a share of the rows over ``CONST_STEPS`` repeats. In form 2 a constant row that
      led a pack held its whole ``enc`` and the steps after it spread over three byte planes.
      Form 3 refuses (``ValueError``) what it cannot hold and no writer writes: a negative ``enc``,
      a constant with flags, a place step of 2^54 or more, a pack led by a constant whose later
      rows are not constants.

    ``form`` None: ``INDEX_FORM``. All arithmetic wraps (int64), and ``index_values`` wraps back."""
    form = INDEX_FORM if form is None else form
    r, params = delta_residuals(m)
    uid, st, cnt, cont = m[0], m[1], m[2], m[3] != 0
    same = np.concatenate(([False], uid[1:] == uid[:-1]))
    r[1] = st - np.where(same, _shift(st) + _shift(cnt), 0)
    r[2], r[3] = cnt, m[3]
    events = pack_sizes(cnt, cont.astype(np.int64))
    lent = _lenders(m) if form >= 2 else {}
    for k in range(4, m.shape[0], 3):
        off, nb, enc = m[k], m[k + 1], m[k + 2]
        if k in lent:  # (a borrower: its fields less its lender's)
            j = lent[k]
            r[k : k + 3] = m[k : k + 3] - m[j : j + 3]
            params[k], params[k + 1], params[k + 2] = j + 1, 0, form - 1  # (its enc field: the form)
            continue
        cst = codec.const_stripes(enc)
        r[k] = off - np.where(cont, _shift(off), _shift(off) + _shift(nb))
        n = max(1, int(cnt[~cst].sum()))
        params[k + 1] = min(max(int(round(256 * float(nb[~cont & ~cst].sum()) / n)), 0), 1 << 40)
        r[k + 1] = nb - np.where(cont, _shift(nb), _nbytes_guess(events, params[k + 1], enc, form))
        if form >= 2:
            params[k + 2] = form - 1
            isd = ~cont & ((enc & codec.ENC_DICT) != 0)
            place = enc >> 8
            last = np.zeros(len(enc), np.int64)
            d = np.flatnonzero(isd)
            last[d[1:]] = place[d[:-1]]
            step = place - last if form == 2 else codec.zigzag(place - last).view(np.int64)
            r[k + 2] = np.where(cont, enc - _shift(enc), np.where(isd, (step << 8) | (enc & codec.ENC_FLAGS),
                                                                 enc ^ _tag_flags(enc)))
            c = np.flatnonzero(_restart_sum((~cont & cst).astype(np.int64), cont) > 0)  # (rows of packs led by a constant)
            if form == 3 and (((enc < 0) & ~cst) | (cst & ((enc & codec.ENC_FLAGS) != 0))
                              | (isd & ((place - last) >> 54 != (place - last) >> 63))).any():
                raise ValueError("an index of form 3 holds no negative enc, no constant with flags, nor a "
                                 "dictionary's place 2^54 from the last")
            if form == 3 and not cst[c].all():
                raise ValueError("an index of form 3 holds a pack led by a constant only with constants after it")
            if form == 3 and len(c):  # constants: a marker and the value, or its step (``CONST_STEPS``)
                q = enc[c] >> 9
                z = codec.zigzag(np.diff(q, prepend=0)).view(np.int64)
                lead = ~cont[c]
                steps = (z[lead] == 0).mean() > CONST_STEPS
                params[k + 2] = 2 + (not steps)
                r[k + 2][c] = -1 - np.where(cont[c], z, z if steps else q)
    return r, params


def _lenders(m: np.ndarray) -> dict:
    """``{k: j}``: the field groups (``c.off`` field numbers) of columns with borrowed codes (a DICT
    row whose dictionary lies past its blob) whose ``c.off`` and ``c.nbytes`` are group ``j``'s in
    every row, ``j`` a column with none of its own borrowed (``index_residuals`` predicts ``k``'s
    fields from ``j``'s)."""
    groups = range(4, m.shape[0], 3)
    borrows = [k for k in groups if (((m[k + 2] & codec.ENC_DICT) != 0) & ((m[k + 2] >> 8) + 2 > m[k])).any()]
    out: dict = {}
    for k in borrows:
        for j in groups:
            if j != k and j not in borrows and np.array_equal(m[j], m[k]) and np.array_equal(m[j + 1], m[k + 1]):
                out[k] = j
                break
    return out


def _tag_flags(enc: np.ndarray) -> np.ndarray:
    """Per ``enc`` (or its form-2 residual: the same tag bits, ``ENC_DICT`` and ``ENC_CONST``), the flags
    its tag in the index implies (``pages.tag_flags``), 0 where it has none: form 2 stores a one-block
    blob's flags XOR these (0 as the encoder writes them; any other value round-trips)."""
    tag = codec.enc_tags(enc)
    return np.where(tag >= 0, pages.tag_flags(np.maximum(tag, 0)), 0)


def _nbytes_guess(events: np.ndarray, mean: int, enc: np.ndarray, form: int) -> np.ndarray:
    """A blob's bytes as ``index_residuals`` predicts them: its events times the column's mean
    (in 1/256 B), rounded; none for a constant stripe's; in form 2, what its tag says where its
    ``enc`` holds it (``pages.tag_nbytes``)."""
    guess = np.where(codec.const_stripes(enc), 0, (events * mean + 128) >> 8)
    if form >= 2:
        tag = codec.enc_tags(enc)
        t = np.flatnonzero(tag >= 0)
        if len(t):
            by_tag = pages.tag_nbytes(tag[t], events[t])
            guess[t] = np.where(by_tag >= 0, by_tag, guess[t])
    return guess


def index_values(r: np.ndarray, params: np.ndarray) -> np.ndarray:
    m = delta_values(r, params)  # user_id, enc
    uid, cnt, cont = m[0], r[2], r[3] != 0
    m[2], m[3] = cnt, r[3]
    same = np.concatenate(([False], uid[1:] == uid[:-1]))
    # start = r + (start + count of the row before, within a user): a cumulative sum restarted per user
    m[1] = _restart_sum(r[1] + np.where(same, _shift(cnt), 0), same)
    events = pack_sizes(cnt, cont.astype(np.int64))
    groups = range(4, m.shape[0], 3)
    lent = {k: int(params[k]) - 1 for k in groups if params[k]}
    for k, j in lent.items():  # (a lender: a column's whose own fields are not predicted so)
        if j not in groups or j == k or params[j]:
            raise ValueError(f"index field {k}: predicted from field {j}, not a column's own")
    for k in groups:
        if k in lent:
            continue
        form = min(1 + int(params[k + 2]), 3) if params[k + 2] in (1, 2, 3) else 1
        if form >= 2:  # enc first (nbytes' guess reads its tag): as is, a DICT row's place from the last one's
            rk = r[k + 2]
            # form 3: a pack's first row (or a row of its own) that is a constant: a negative residual
            lead = ~cont & (rk < 0) if form == 3 else np.zeros(len(rk), bool)
            isd = ~cont & ~lead & ((rk & codec.ENC_DICT) != 0)
            step = rk >> 8 if form == 2 else codec.unzigzag((rk >> 8).view(np.uint64))
            place = np.cumsum(np.where(isd, step, 0), dtype=np.int64)
            first = np.where(isd, (place << 8) | (rk & codec.ENC_FLAGS), rk ^ _tag_flags(rk))  # (a pack's first row)
            m[k + 2] = _restart_sum(np.where(cont, rk, first), cont)
            if lead.any():  # constants: each row of a pack led by one, a value step from the last constant's
                c = np.flatnonzero(_restart_sum(lead.astype(np.int64), cont) > 0)
                z = -1 - rk[c]
                if params[k + 2] == 2:  # every one a step from the constant before
                    q = np.cumsum(codec.unzigzag(z.view(np.uint64)), dtype=np.int64)
                else:  # a pack's first row its value, the rows after it steps
                    q = _restart_sum(np.where(lead[c], z, codec.unzigzag(z.view(np.uint64))), cont[c])
                m[k + 2][c] = codec.ENC_CONST | (q << 9)
        # nbytes: a pack's first row's from its prediction, each continuation's from the row before
        guess = _nbytes_guess(events, params[k + 1], m[k + 2], form)
        nb = _restart_sum(np.where(cont, r[k + 1], r[k + 1] + guess), cont)
        m[k + 1] = nb
        m[k] = np.cumsum(r[k] + np.where(cont, 0, _shift(nb)), dtype=np.int64)  # (offsets carry across rows)
    for k, j in lent.items():
        m[k : k + 3] = r[k : k + 3] + m[j : j + 3]
    return m


DELTA = (delta_residuals, delta_values)
INDEX = (index_residuals, index_values)


def pack_int_table(fields: dict, names: list[str], predict: tuple = DELTA, layout: int = 2) -> bytes:
    """Columns of int64 (equal lengths, ``S`` rows of ``F`` fields): the compact form of segment
    indexes, directory snapshots and length rows. ``S, F | layout bit, n`` (u64 each), then the zstd
    of ``n`` bytes:

    - layout 2: ``params`` (int64 ``[F]``), then each field's residuals (``predict``: what the rows
      and fields before do not predict), zigzagged, as 8 planes of bytes (``[F, 8, S]`` uint8, byte
      0 first), so the high bytes of small numbers are runs of zeros that zstd all but drops;
    - layout 1 (releases before it, and format-2 segments): the ``[F, S]`` int64 steps (``DELTA``).
    """
    m = np.stack([np.asarray(fields[f], dtype=np.int64) for f in names]) if names else np.zeros((0, 0), np.int64)
    F, S = m.shape
    if layout == 1:
        raw = np.ascontiguousarray(delta_residuals(m)[0]).tobytes()
        return _INDEX_HEAD.pack(S, F, len(raw)) + _ZSTD.compress(raw, asbytes=True)
    raw = _table_raw(m, predict)
    zstd = _ZSTD_BEST if len(raw) <= 4 << 20 else _ZSTD_MID if len(raw) <= 64 << 20 else _ZSTD_BIG
    return _INDEX_HEAD.pack(S, F | TABLE_V2, len(raw)) + zstd.compress(raw, asbytes=True)


def _table_raw(m: np.ndarray, predict: tuple) -> bytes:
    """A layout-2 table's bytes before zstd: ``params``, then the residuals' planes."""
    F, S = m.shape
    with np.errstate(over="ignore"):
        r, params = predict[0](m) if S else (m, np.zeros(F, np.int64))
    planes = codec.zigzag(np.ascontiguousarray(r)).view(np.uint8).reshape(F, S, 8).transpose(0, 2, 1)
    return params.astype("<i8").tobytes() + np.ascontiguousarray(planes).tobytes()


def smaller_form(fields: dict, columns: list[str], forms: tuple) -> int:
    """Of ``forms``, the one whose index of ``fields`` comes out smallest under zstd level 6 (the
    first where two tie): a fast stand-in for the level the index is written at. A form that
    cannot hold the fields (form 3's ``ValueError``) is passed over, so that an append never fails
    for it where an earlier form holds them."""
    if len(forms) == 1:
        return forms[0]
    if "cont" not in fields:
        fields = dict(fields, cont=np.zeros(len(fields["user_id"]), np.int64))
    m = np.stack([np.asarray(fields[f], dtype=np.int64) for f in _index_fields(columns, True)])
    size = []
    for f in forms:
        try:
            size.append(len(_ZSTD_BIG.compress(_table_raw(m, (lambda x, f=f: index_residuals(x, f), index_values)),
                                               asbytes=True)))
        except ValueError:
            size.append(1 << 62)
    return forms[int(np.argmin(size))]


def table_fields(data) -> int:
    """The field count of a ``pack_int_table`` table (-1 if it is too short to say)."""
    if len(data) < _INDEX_HEAD.size:
        return -1
    return int(_INDEX_HEAD.unpack(bytes(data[: _INDEX_HEAD.size]))[1] & ~TABLE_V2)


def unpack_int_table(data, names: list[str], where: str, predict: tuple = DELTA, params_out: list | None = None) -> dict:
    """The columns of ``pack_int_table`` (either layout; ``predict`` as it was written with);
    anything else is a ``CorruptionError`` naming ``where``. ``params_out``: a list that gets the
    layout-2 table's ``params`` (int64 ``[F]``; layout 1: none)."""
    data = bytes(data)
    if len(data) < _INDEX_HEAD.size:
        raise CorruptionError(f"{where}: table too short")
    S, F, n = _INDEX_HEAD.unpack(data[: _INDEX_HEAD.size])
    v2 = bool(F & TABLE_V2)
    F &= ~TABLE_V2
    if F != len(names) or n != 8 * F * (S + v2) or S > 1 << 40:
        raise CorruptionError(f"{where}: table has {F} fields x {S} rows; expected {len(names)} fields")
    try:
        raw = _ZSTD.decompress(data[_INDEX_HEAD.size :], decompressed_size=n, asbytes=True)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise CorruptionError(f"{where}: table cannot be decompressed ({e})") from e
    if len(raw) != n:
        raise CorruptionError(f"{where}: table has {len(raw)} bytes, expected {n}")
    if not v2:
        m = np.cumsum(np.frombuffer(raw, np.int64).reshape(F, S), axis=1, dtype=np.int64)
        return dict(zip(names, m))
    params = np.frombuffer(raw, "<i8", F).astype(np.int64)
    if params_out is not None:
        params_out.append(params)
    planes = np.frombuffer(raw, np.uint8, 8 * F * S, 8 * F).reshape(F, 8, S).transpose(0, 2, 1)
    r = codec.unzigzag(np.ascontiguousarray(planes).view("<u8").reshape(F, S).astype(np.uint64))
    with np.errstate(over="ignore"):
        m = predict[1](r, params) if S else r
    return dict(zip(names, m))


def _encode_index(fields: dict, columns: list[str], layout: int = 2, form: int | None = None) -> bytes:
    """Layout 2 (format 3) with ``cont`` (0 where ``fields`` has none), its residuals of ``form``
    (``index_residuals``; None: ``INDEX_FORM``); layout 1 (format 2) without."""
    if layout == 2 and "cont" not in fields:
        fields = dict(fields, cont=np.zeros(len(fields["user_id"]), np.int64))
    predict = INDEX if form is None else (lambda m: index_residuals(m, form), index_values)
    return pack_int_table(fields, _index_fields(columns, layout == 2), predict, layout)


def _decode_index(data: bytes, columns: list[str], where: str) -> tuple[dict, int]:
    """A layout-2 index (with ``cont``) or a layout-1 one (``cont`` all 0), and its form
    (``index_residuals``: 1, or 2 where its ``c.enc`` fields say so, all of them)."""
    v2 = len(data) >= _INDEX_HEAD.size and bool(_INDEX_HEAD.unpack(bytes(data[: _INDEX_HEAD.size]))[1] & TABLE_V2)  # layout 2
    params = []
    names = _index_fields(columns, v2)
    cols = unpack_int_table(data, names, f"segment {where}: index", INDEX, params)
    form = 1
    if v2 and columns:  # (index_values decoded each column by its own; they must agree)
        enc_params = params[0][[names.index(f"{c}.enc") for c in columns]]
        form = 1 + int(enc_params[0]) if len(enc_params) and int(enc_params[0]) in (0, 1) else 3
        if (np.minimum(1 + enc_params, 3) != form).any() or (enc_params < 0).any() or (enc_params > 3).any():
            raise CorruptionError(f"segment {where}: index of an unknown form")
    if not v2:
        cols["cont"] = np.zeros(len(cols["user_id"]), np.int64)
    return cols, form


def _decode_index_v1(data: bytes, columns: list[str], where: str) -> dict:
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    want = _index_fields(columns, False)
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


def chunk_hash(buf: np.ndarray, chunk: int = CHUNK_BYTES, ids=0, at=None) -> np.ndarray:
    """Format 3's checksums of the bytes ``buf`` (uint8), cut into chunks of ``chunk`` bytes (the last
    zero-padded): for each, the low 32 bits of ``sum splitmix64(word ^ (i * golden))`` over its
    little-endian 8-byte words, ``i`` the word's index in the blob region, so a chunk read from the
    wrong place fails. Chunk ``c`` of ``buf`` is chunk ``ids[c]`` of the region (``ids`` an int:
    the first of consecutive ones). uint32 ``[ceil(len / chunk)]``. With ``at`` (and ``ids`` an
    array), only the chunks at bytes ``at`` of ``buf`` (one per id; zero past ``buf``'s end)."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    if at is not None:
        at = np.ascontiguousarray(at, np.int64)
        ids = np.ascontiguousarray(ids, np.int64)
        if native.available()[0]:
            return native.chunk_hash(buf, chunk, ids, at)
        n = len(at)
        padded = np.zeros(n * chunk, np.uint8)
        take_ranges(buf, at, np.minimum(chunk, buf.size - at), padded, np.arange(n, dtype=np.int64) * chunk)
    else:
        n = -(-buf.size // chunk)
        ids = np.arange(ids, ids + n, dtype=np.int64) if np.ndim(ids) == 0 else np.ascontiguousarray(ids, np.int64)
        if native.available()[0]:
            return native.chunk_hash(buf, chunk, ids)
        padded = np.zeros(n * chunk, np.uint8)
        padded[: buf.size] = buf
    words = padded.view("<u8").reshape(n, chunk // 8)
    pos = ids[:, None] * (chunk // 8) + np.arange(chunk // 8, dtype=np.int64)[None, :]
    with np.errstate(over="ignore"):
        h = codec._mix_at(words, pos).sum(axis=1, dtype=np.uint64)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def encode_segment3(columns: list[str], user_id, start, count, blobs: dict, cont=None, lender=None,
                    form: int | tuple | None = None) -> tuple[list, int, int, int]:
    """The bytes of a format-3 segment: ``(buffers, size, index_crc, index form)``.

    ``blobs[c]``: the ``(region, blob_off, blob_nbytes, enc)`` of ``host.pages.encode_column`` for
    column ``c`` over the stripes ``user_id, start, count`` (sorted by ``(user_id, start)``), or,
    with ``cont`` (per stripe, 1 where its events follow the stripe before's in the same blobs: a
    pack, DESIGN §2), over the packs (the stripes with ``cont == 0`` and those after them), or over
    the stripes again where some pack's rows are each a constant (``pages.pack_row_constants``); a
    column's dictionary, if any, is where its ``enc`` says in its ``region``. ``lender[c]``: the
    column whose blobs column ``c`` borrows (DESIGN §1 "Borrowed codes"): ``c``'s offsets are in
    that column's region, its own region its dictionary; the lenders' regions come first, the
    borrowers' last. ``form``: its index's (``index_residuals``; None: ``INDEX_FORM``), or several,
    of which the one that makes the smallest index (``smaller_form``).
    The file is ``[blob region][chunk checksums, u32 each][pad][index][pad][trailer]``; the trailer's
    crc32 covers everything after the region and the trailer's first 24 bytes."""
    cont = np.zeros(len(user_id), np.int64) if cont is None else np.asarray(cont, np.int64)
    fields = {"user_id": user_id, "start": start, "count": count, "cont": cont}
    pack = np.cumsum(cont == 0) - 1  # each stripe's blob, among the packs'
    pos, at = 0, {}
    lender = lender or {}
    # (the lenders' parts of the region first: a borrower's dictionary lies after its blobs; the
    # borrowers' last: each table ends where the next starts, or the region ends)
    layout = [c for c in columns if c in lender.values()] + \
        [c for c in columns if c not in lender.values() and c not in lender] + [c for c in columns if c in lender]
    for c in layout:
        at[c] = pos
        region, blob_off, blob_nbytes, enc = blobs[c]
        # (per pack; or per row, where a column's packs have constants per row, ``pages.pack_row_constants``)
        blob_off, blob_nbytes, enc = (a if len(a) == len(cont) else a[pack] for a in
                                      (np.asarray(x, np.int64) for x in (blob_off, blob_nbytes, enc)))
        fields[f"{c}.off"] = at[lender[c]] + blob_off if c in lender else pos + blob_off
        fields[f"{c}.nbytes"] = blob_nbytes
        # a DICT stripe's enc carries its dictionary's byte offset in the blob region (bits 8..)
        enc = np.asarray(enc, np.int64)
        fields[f"{c}.enc"] = np.where(enc & codec.ENC_DICT, enc + (pos << 8), enc)
        pos += region.nbytes
    region = np.concatenate([np.asarray(blobs[c][0], dtype=np.uint8) for c in layout]) if columns else np.zeros(0, np.uint8)
    checks = chunk_hash(region).astype("<u4").tobytes()
    head = checks + b"\0" * (-(pos + len(checks)) % 8)
    idx_off = pos + len(head)
    form = smaller_form(fields, columns, form) if isinstance(form, tuple) else INDEX_FORM if form is None else form
    index = _encode_index(fields, columns, form=form)
    pad = b"\0" * (-len(index) % 8)
    tr_head = struct.pack("<QQQ", pos, idx_off, len(index))
    crc = zlib.crc32(tr_head, zlib.crc32(index + pad, zlib.crc32(head))) & 0xFFFFFFFF
    buffers = [region, head, index, pad, TRAILER_V3.pack(pos, idx_off, len(index), crc, MAGIC_V3)]
    size = sum(memoryview(b).nbytes for b in buffers)
    return buffers, size, crc, form


def encode_segment(columns: list[str], user_id, start, count, blobs: dict) -> tuple[list, int, int]:
    """The bytes of a format-2 segment: ``(buffers, size, index_crc)``; the buffers concatenated are the file.

    ``user_id, start, count``: int64 ``[S]`` sorted by ``(user_id, start)``; ``blobs[c]`` is the
    ``(region, blob_off, blob_words, enc)`` of ``codec.encode_stripes`` for column ``c`` over the
    same stripes in the same order. (The writer writes format 3, ``encode_segment3``.)
    """
    fields = {"user_id": user_id, "start": start, "count": count}
    pos = 0  # byte offset of the current column's region
    for c in columns:
        region, blob_off, blob_words, enc = blobs[c]
        fields[f"{c}.off"] = pos + blob_off * 8
        fields[f"{c}.nbytes"] = blob_words * 8
        fields[f"{c}.enc"] = enc
        pos += region.nbytes
    index = _encode_index(fields, columns, layout=1)  # as releases before format 3 wrote it
    pad = b"\0" * (-len(index) % 8)
    head = struct.pack("<QQ", pos, len(index))
    crc = _index_crc(index + pad, head)
    buffers = [np.ascontiguousarray(blobs[c][0], dtype=np.int64) for c in columns]
    buffers += [index, pad, TRAILER.pack(pos, len(index), crc, MAGIC)]
    size = sum(memoryview(b).nbytes for b in buffers)
    return buffers, size, crc


def _coalesce(lo: np.ndarray, hi: np.ndarray, gap: int):
    """Runs of the ranges ``[lo[i], hi[i])`` (any order), ranges closer than ``gap`` merged into one:
    ``(order, run_id, run_lo, run_len, run_at)``: the ranges sorted by start, each sorted range's
    run, each run's start, length and place in a buffer holding the runs back to back."""
    order = np.argsort(lo, kind="stable")
    s_sorted, e_sorted = lo[order], hi[order]
    # a new run starts where a range begins past everything before it plus the gap
    reach = np.maximum.accumulate(e_sorted)
    new = np.ones(len(s_sorted), bool)
    new[1:] = s_sorted[1:] > reach[:-1] + gap
    run_id = np.cumsum(new) - 1
    run_lo = s_sorted[new]
    run_len = np.maximum.reduceat(e_sorted, np.flatnonzero(new)) - run_lo
    return order, run_id, run_lo, run_len, np.cumsum(run_len) - run_len


FULL_READ_BYTES = 4 << 20  # a blob region up to this size is read whole, once, and kept
COALESCE_GAP_WORDS = 4096  # ranges closer than 32 KiB are read as one (a store may say otherwise)


@dataclass
class Segment:
    """An open, verified segment: its index arrays, and its blob region read on demand.

    ``off[c]`` / ``nwords[c]``: offset and length of each stripe's blob of column ``c`` in the
    blob region (``region_words`` words from byte ``base`` of ``path`` in ``store``): in words for
    format 2, in bytes for format 3 (``fmt``), whose region is ``region_words`` *bytes* long and
    is followed by one u32 checksum per ``CHUNK_BYTES`` (``checks``, read with the index or on first use).
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
    fmt: int = 2
    checks: np.ndarray | None = None  # format 3: the chunk checksums (uint32)
    _region: np.ndarray | None = None  # the whole blob region, for a small segment once read (verified)
    _dicts: dict | None = None  # format 3: the dictionaries read (values, read-only), by byte offset
    _kept: tuple | None = None  # format 3: ``_dicts`` packed into one array (``kept_dictionaries``)
    cont: np.ndarray | None = None  # format 3: per stripe, 1 where it continues the stripe before's blobs (a pack)
    form: int = 1  # format 3: its index's form (``index_residuals``; 2: blobs of one block may have their tag in ``enc``)

    @property
    def num_stripes(self) -> int:
        return len(self.user_id)

    @property
    def name(self) -> str:
        return self.path if not self.base else f"{self.path}@{self.base}"

    @property
    def region_bytes(self) -> int:
        return self.region_words if self.fmt == 3 else 8 * self.region_words

    @property
    def small(self) -> bool:
        """Read whole and kept in memory (else read by coalesced ranges)."""
        return self.region_bytes <= FULL_READ_BYTES

    @property
    def checks_span(self) -> tuple[int, int]:
        """Format 3: ``(offset, length)`` in bytes of the chunk checksums within the segment."""
        return self.region_words, 4 * (-(-self.region_words // CHUNK_BYTES))

    def region(self) -> np.ndarray:
        """The whole blob region (read once, kept: for small segments): int64 words (format 2), or
        verified uint8 bytes (format 3)."""
        if self._region is None:
            if self.fmt == 3:
                o, n = self.checks_span
                raw = np.frombuffer(self.store.read_at(self.path, self.base, o + n), np.uint8)
                self.set_region(raw)
            else:
                self._region = np.frombuffer(self.store.read_at(self.path, self.base, self.region_words * 8), np.int64)
        return self._region

    def set_region(self, raw: np.ndarray) -> None:
        """Keep the whole region read by someone else: format 2, its words; format 3, its bytes followed
        by its checksums, all verified here (``CorruptionError``)."""
        if self.fmt != 3:
            self._region = raw.view(np.int64)
            return
        o, n = self.checks_span
        raw = raw.view(np.uint8)
        if self.checks is None:
            self.checks = np.frombuffer(raw[o : o + n].tobytes(), "<u4")
        self._verify(raw[:o], 0)
        self._region = raw[:o]

    def dictionary(self, off: int, block_size: int, size: int, form: int | None = None) -> tuple[np.ndarray, int]:
        """The dictionary (host/pages.py ``encode_column``: the column's segment dictionary, or a
        stripe's own table) of ``size`` stored bytes (it ends where the next blob or dictionary of
        its column starts) at byte ``off`` of the blob region, its head in ``form`` (the entry's
        ``dicts``; ``pages.DICT_FORM`` by default): ``(values int64, bytes read)``: read (every
        chunk verified), decoded and kept on first use; later calls read nothing (0 bytes)."""
        d = self.cached_dictionary(off)
        if d is not None:
            return d, 0
        if not 0 <= off < off + size <= self.region_bytes:
            raise CorruptionError(f"segment {self.name}: dictionary at byte {off}: {size} bytes outside the blob region")
        reqs, fin = self.bytes_request([off], [size])
        self.store.fetch(reqs)
        return self.dictionary_from(off, fin(), block_size, form=form), size

    def has_kept_dictionaries(self) -> bool:
        """Whether a read kept any dictionary of this segment (``cached_dictionary`` may find it)."""
        return bool(self._dicts)

    def cached_dictionary(self, off: int) -> np.ndarray | None:
        """The dictionary at byte ``off`` if a read kept it, else None."""
        cache = self._dicts  # one read: ``VersionReader.forget_dictionaries`` may drop it meanwhile
        return None if cache is None else cache.get(off)

    def dictionary_from(self, off: int, buf: np.ndarray, block_size: int, keep: bool = True,
                        form: int | None = None) -> np.ndarray:
        """The dictionary at byte ``off`` decoded from its stored bytes ``buf`` (head and blob, as
        read and verified; ``len(buf)``: the index's size), its head in ``form`` (the entry's
        ``dicts``; ``pages.DICT_FORM`` by default): a head that disagrees is a ``CorruptionError``.
        ``keep``: kept for later reads (a segment dictionary, which every batch of the segment
        reads; a stripe's own table is not: each read reads it, as it reads blobs)."""
        where = f"segment {self.name}: dictionary at byte {off}"
        d = pages.decode_dictionary(buf, block_size, where, form)
        if keep:
            self.keep_dictionary(off, d)
        d.flags.writeable = False  # shared by every batch that reads it
        return d

    def kept_dictionaries(self, offs: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``cached_dictionary`` of many small ones at once (a batch names hundreds of stripe tables):
        ``(found, values, start, length)``, the dictionary at byte ``offs[i]`` (where ``found[i]``)
        being ``values[start[i]:][:length[i]]``. The kept ones of at most ``most`` entries are packed
        into one array when looked up after a read kept more (each then a view of it: no second
        copy); a larger one (a segment dictionary) is not found here, and not copied again when
        a read keeps more: ``cached_dictionary`` finds it."""
        offs = np.asarray(offs, np.int64)
        cache, packed = self._dicts, self._kept  # (one read: ``forget_dictionaries`` may drop them meanwhile)
        if not cache:
            z = np.zeros(len(offs), np.int64)
            return np.zeros(len(offs), bool), np.zeros(0, np.int64), z, z
        if packed is None or packed[0] is not cache or packed[1] != (len(cache), most):
            n = len(cache)
            items = sorted((k, v) for k, v in list(cache.items()) if len(v) <= most)
            ko = np.array([k for k, _ in items], np.int64)
            ln = np.array([len(v) for _, v in items], np.int64)
            st = np.cumsum(ln) - ln
            vals = np.concatenate([v for _, v in items]).astype(np.int64, copy=False) if items else np.zeros(0, np.int64)
            vals.flags.writeable = False
            for (k, _), a, m in zip(items, st.tolist(), ln.tolist()):
                cache[k] = vals[a : a + m]  # (the same values: a reader that holds the old one still may)
            packed = self._kept = (cache, (n, most), ko, st, ln, vals)
        _, _, ko, st, ln, vals = packed
        if not len(ko):
            z = np.zeros(len(offs), np.int64)
            return np.zeros(len(offs), bool), vals, z, z
        w = np.minimum(np.searchsorted(ko, offs), len(ko) - 1)
        found = ko[w] == offs
        return found, vals, np.where(found, st[w], 0), np.where(found, ln[w], 0)

    def keep_dictionary(self, off: int, d: np.ndarray) -> None:
        """Keep the dictionary at byte ``off``, decoded (``d``, made read-only), for later reads."""
        d.flags.writeable = False
        cache = self._dicts
        if cache is None:
            cache = self._dicts = {}
        cache[off] = d

    def _load_checks(self) -> np.ndarray:
        if self.checks is None:
            o, n = self.checks_span
            self.checks = np.frombuffer(self.store.read_at(self.path, self.base + o, n), "<u4")
        return self.checks

    def _verify(self, data: np.ndarray, ids, at=None) -> None:
        """Check the chunks of ``data`` (uint8, whole chunks but the region's last): chunk ``c`` of it
        is chunk ``ids[c]`` of the region (``ids`` an int: the first of consecutive ones); with ``at``,
        only chunks ``ids``, at bytes ``at`` of ``data``."""
        got = chunk_hash(data, CHUNK_BYTES, ids, at)
        ids = np.arange(ids, ids + len(got)) if np.ndim(ids) == 0 else np.asarray(ids)
        checks = self._load_checks()
        if len(ids) and (ids.max() >= len(checks) or ids.min() < 0):
            raise CorruptionError(f"segment {self.name}: a read past the end of its blob region")
        bad = np.flatnonzero(got != checks[ids])
        if len(bad):
            raise CorruptionError(f"segment {self.name}: bytes {int(ids[bad[0]]) * CHUNK_BYTES}.. of the blob region "
                                  f"fail their checksum ({len(bad)} bad chunk(s))")

    def bytes_request(self, starts, lens):
        """Format 3: ``(reqs, finish)``: bytes ``[starts[i], starts[i] + lens[i])`` of the blob region,
        concatenated (``finish()``, uint8; ``finish(out, at)``: range ``i`` to ``out[at[i]:]``;
        ``finish(in_place=True)``: ``(buf, where)``, range ``i`` at ``buf[where[i]:]``, no copy), every
        chunk they touch verified. A small segment's come from its region in memory; a large one's
        from reads of whole chunks, ranges closer than the store's coalescing gap read as one."""
        starts = np.asarray(starts, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        if int(lens.sum()) == 0:
            return [], lambda out=None, at=None, in_place=False: (np.zeros(0, np.uint8), np.zeros(len(starts), np.int64)) \
                if in_place else np.zeros(0, np.uint8) if out is None else out
        if self.small:
            return [], lambda out=None, at=None, in_place=False: (self.region(), starts) if in_place \
                else take_ranges(self.region(), starts, lens, out, at)
        keep = lens > 0
        st, ln = starts[keep], lens[keep]
        if (st < 0).any() or (st + ln > self.region_words).any():
            raise CorruptionError(f"segment {self.name}: a read past the end of its blob region")
        C = CHUNK_BYTES  # whole chunks, to verify them
        gap = int(getattr(self.store, "coalesce_gap_bytes", 8 * COALESCE_GAP_WORDS))
        order, run_id, run_lo, run_len, run_at = _coalesce((st // C) * C, np.minimum(-(-(st + ln) // C) * C,
                                                                                     self.region_words), gap)
        buf = np.empty(int(run_len.sum()), np.uint8)
        self._load_checks()
        view = memoryview(buf)
        reqs = [(self.path, self.base + lo_, view[at : at + n])
                for lo_, n, at in zip(run_lo.tolist(), run_len.tolist(), run_at.tolist())]

        def finish(out=None, at=None, in_place: bool = False):
            # the runs are whole chunks (but a run that ends the region); the chunks the ranges touch are
            # checked, not the holes between them that a run reads (ranges closer than the gap)
            where = np.empty(len(st), np.int64)
            where[order] = run_at[run_id] + (st[order] - run_lo[run_id])
            c0 = st // C
            touched = unique(ranges(c0, (st + ln - 1) // C - c0 + 1))
            r = np.searchsorted(run_lo, touched * C, side="right") - 1
            self._verify(buf, touched, run_at[r] + touched * C - run_lo[r])
            if in_place:  # (no copy: the buffer the runs were read into, and where each range is in it)
                w = np.zeros(len(starts), np.int64)
                w[keep] = where
                return buf, w
            return take_ranges(buf, where, ln, out, None if at is None else np.asarray(at, np.int64)[keep])

        return reqs, finish

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
            return [], lambda: take_ranges(self.region(), starts, lens)
        keep = lens > 0
        st, ln = starts[keep], lens[keep]
        gap = int(getattr(self.store, "coalesce_gap_bytes", 8 * COALESCE_GAP_WORDS)) // 8
        order, run_id, run_lo, run_len, run_at = _coalesce(st, st + ln, gap)
        s_sorted = st[order]
        buf = np.empty(int(run_len.sum()), np.int64)
        view = memoryview(buf).cast("B")
        reqs = [(self.path, self.base + 8 * lo, view[8 * at : 8 * (at + n)])
                for lo, n, at in zip(run_lo.tolist(), run_len.tolist(), run_at.tolist())]

        def finish():
            where = np.empty(len(st), np.int64)  # each kept range's start inside ``buf``
            where[order] = run_at[run_id] + (s_sorted - run_lo[run_id])
            return take_ranges(buf, where, ln)

        return reqs, finish


def known_segment(store, path: str, base: int, size: int, region_words: int, fmt: int = 2, form: int = 1) -> Segment:
    """A segment whose index a verified checkpoint already holds (host/log.py's directory snapshot):
    its blocks can be read (and are verified by their hashes, or its chunk checksums, read on first
    use) without reading its index again. ``region_words``: the region's length, in words (format 2)
    or bytes (format 3); ``form``: its index's (its entry's ``index``)."""
    z = np.zeros(0, np.int64)
    return Segment(store, path, base, size, z, z, z, {}, {}, {}, region_words, fmt, form=form)


def open_segment(store, path: str, base: int, size: int, index_crc: int, columns: list[str], block_size: int) -> Segment:
    """Read and verify the index of the segment at bytes ``[base, base + size)`` of ``path``.

    Every defect (missing or short file, bad trailer, index crc, undecodable or inconsistent index)
    is a ``CorruptionError`` naming the file; an OS failure that is not bad bytes is a ``TierError``.
    """
    where = path if not base else f"{path}@{base}"
    checks, region_bytes = None, None
    try:
        if size < TRAILER.size or size % 8:
            raise CorruptionError(f"segment {where}: bad size {size}")
        n_tail = min(size, TRAILER_V3.size)
        tail = store.read_at(path, base + size - n_tail, n_tail, fresh=True)
        magic = bytes(tail[-8:])
        if magic == MAGIC_V3:
            if size < TRAILER_V3.size:
                raise CorruptionError(f"segment {where}: bad size {size}")
            region_bytes, idx_off, idx_len, crc, _ = TRAILER_V3.unpack(tail)
            tr_head, tr_size = tail[:24], TRAILER_V3.size
            head_off = region_bytes
            n_checks = 4 * (-(-region_bytes // CHUNK_BYTES))
            if region_bytes + n_checks > idx_off:
                raise CorruptionError(f"segment {where}: bad region length {region_bytes}")
        elif magic in (MAGIC, MAGIC_V1):
            idx_off, idx_len, crc, _ = TRAILER.unpack(tail[-TRAILER.size:])
            tr_head, tr_size = tail[-TRAILER.size:][:16], TRAILER.size
            head_off = idx_off
        else:
            raise CorruptionError(f"segment {where}: bad magic {magic!r}")
        if crc != index_crc:
            raise CorruptionError(f"segment {where}: trailer crc {crc:#x} differs from the recorded {index_crc:#x}")
        if idx_off % 8 or idx_off + idx_len > size - tr_size or idx_len == 0:
            raise CorruptionError(f"segment {where}: bad index range ({idx_off}, {idx_len})")
        tail_bytes = store.read_at(path, base + head_off, size - tr_size - head_off)
        if _index_crc(tail_bytes, tr_head) != crc:
            raise CorruptionError(f"segment {where}: index checksum mismatch")
        index_and_pad = memoryview(tail_bytes)[idx_off - head_off :]
        if magic == MAGIC_V3:
            checks = np.frombuffer(bytes(tail_bytes[:n_checks]), "<u4")
        if magic == MAGIC_V1:
            cols, form = _decode_index_v1(bytes(index_and_pad[:idx_len]), columns, where), 1
        else:
            cols, form = _decode_index(bytes(index_and_pad[:idx_len]), columns, where)
        if form != 1 and magic != MAGIC_V3:
            raise CorruptionError(f"segment {where}: an index of form {form} in a format-2 segment")
    except CorruptionError:
        raise
    except (pa.ArrowException, ValueError, struct.error, TypeError, IndexError) as e:
        raise CorruptionError(f"segment {where}: cannot be read ({type(e).__name__}: {e})") from e
    uid, st, cnt = cols["user_id"], cols["start"], cols["count"]
    S = len(uid)
    bad = (cnt <= 0) | (st < 0) | (cnt > 1 << 40) | (st > 1 << 62)  # bounded: the sums below cannot wrap
    if S > 1:
        same = uid[1:] == uid[:-1]
        bad[1:] |= (uid[1:] < uid[:-1]) | (same & (st[1:] < st[:-1] + cnt[:-1]))
    if bad.any():
        raise CorruptionError(f"segment {where}: index rows not sorted or inconsistent (row {int(np.flatnonzero(bad)[0])})")
    # packs (format 3): a row with cont = 1 continues the row before's blobs; a blob's events are its rows'
    cont = cols.get("cont", np.zeros(S, np.int64))
    is_cont = cont != 0
    if ((cont != 0) & (cont != 1)).any() or (S and cont[0]) or (is_cont.any() and region_bytes is None):
        raise CorruptionError(f"segment {where}: bad pack flags in the index")
    events = pack_sizes(cnt, cont)
    if is_cont.any() and (np.add.reduceat(cnt.astype(np.float64), np.flatnonzero(~is_cont)) > 1 << 40).any():
        raise CorruptionError(f"segment {where}: a pack of more than 2^40 events")
    nb = (events + block_size - 1) // block_size
    npages = (nb + 15) // 16
    off, nwords, enc, own_codes, lent_rows = {}, {}, {}, {}, {}
    for c in columns:
        o, n, e = cols[f"{c}.off"], cols[f"{c}.nbytes"], cols[f"{c}.enc"]
        # format 3: a constant stripe (codec.ENC_CONST, no other flag, no dictionary) has no bytes
        cst = codec.const_stripes(e) if region_bytes is not None else np.zeros(len(e), bool)
        # a pack's rows name one blob, or are each a constant (their own: DESIGN §2 "Packs")
        if is_cont.any() and ((o[1:] != o[:-1]) | (n[1:] != n[:-1]) | ((e[1:] != e[:-1]) & ~(cst[1:] & cst[:-1])))[is_cont[1:]].any():
            raise CorruptionError(f"segment {where}: a pack's rows name different blobs of column {c!r}")
        if (cst & ((n != 0) | ((e & codec.ENC_FLAGS) != 0))).any():
            raise CorruptionError(f"segment {where}: a constant stripe of column {c!r} with bytes or flags")
        # form 2: a blob of one block may have its tag in its enc (codec.ENC_TAG_SHIFT), none in its bytes
        tag = codec.enc_tags(e) if form >= 2 else np.full(len(e), -1)
        own = tag >= 0
        if own.any():
            t = tag[own]
            if (nb[own] != 1).any() or (e[own] >> (codec.ENC_TAG_SHIFT + 8) != 0).any() or \
                    pages.bad_tags(t).any():
                raise CorruptionError(f"segment {where}: a bad block tag in the index of column {c!r}")
        if region_bytes is not None:  # format 3: byte ranges, at least the tags and the anchors (FLAG blocks: no field)
            # (a one-block blob whose tag is in the index still has a byte: a field, a position or a bit)
            end, least = region_bytes, np.where(cst, 0, np.where(own, 1, nb + np.where(npages > 1, 8 * npages, 0)))
        else:
            end, least = idx_off, 8 * codec.HDR_WORDS * nb
        # in this order, so that no comparison wraps: least <= n <= end, then 0 <= o <= end - n
        bad = (n < least).any() or (n > end).any() or (o < 0).any() or (o > end - n).any()
        if region_bytes is None:
            bad = bad or ((o % 8) | (n % 8)).any()
        if bad:
            raise CorruptionError(f"segment {where}: blob ranges of column {c!r} out of bounds")
        # (PATCH, RUN, DELTA (SIGNED), RADIX blocks, sparse bitmaps and dictionaries: format 3, in tiers of
        # blocks of at most AUX_MAX_BLOCK values)
        known = codec.ENC_LFOR | (codec.ENC_PATCH | codec.ENC_RUN | codec.ENC_DICT | codec.ENC_DELTA | codec.ENC_SIGNED
                                  | codec.ENC_RADIX | codec.ENC_SPARSE
                                  if region_bytes is not None and block_size <= pages.AUX_MAX_BLOCK else 0)
        isd = (e & codec.ENC_DICT) != 0
        if ((e < 0) | ((e & codec.ENC_FLAGS & ~known) != 0) | (~isd & ~cst & ~own & (e > codec.ENC_FLAGS))).any():
            raise CorruptionError(f"segment {where}: unknown encoding in column {c!r}")
        # DICT blobs: each stripe's dictionary (the column's segment dictionary, or its own stripe
        # table) before its blob, its head inside the region; codes in blocks of at most
        # AUX_MAX_BLOCK values (PATCH / RUN ones flagged as in any blob)
        # (a head and a blob: at least 2 bytes in either head form; both are checked when read);
        # or borrowed codes (DESIGN §1): the blob is the same row's of another column whose codes
        # are its own, the dictionary after it, inside the region (checked below)
        lent = isd & ((e >> 8) + 2 > o)
        if isd.any() and (((e[isd] >> 8) + 2 > end).any() or block_size > pages.AUX_MAX_BLOCK):
            raise CorruptionError(f"segment {where}: bad dictionary of column {c!r}")
        if region_bytes is not None:
            own_codes[c], lent_rows[c] = isd & ~lent, np.flatnonzero(lent)
            off[c], nwords[c], enc[c] = o, n, e
        else:
            off[c], nwords[c], enc[c] = o // 8, n // 8, e
    for c, r in lent_rows.items():  # borrowed codes: the same row's blob of another column, its codes its own
        if len(r):
            ok = np.zeros(len(r), bool)
            for c2 in columns:
                if c2 != c:
                    ok |= own_codes[c2][r] & (off[c2][r] == off[c][r]) & (nwords[c2][r] == nwords[c][r])
            if not ok.all():
                raise CorruptionError(f"segment {where}: bad dictionary of column {c!r}")
    if region_bytes is not None:
        return Segment(store, path, base, size, uid, st, cnt, off, nwords, enc, region_bytes, 3, checks, cont=cont, form=form)
    return Segment(store, path, base, size, uid, st, cnt, off, nwords, enc, idx_off // 8)
