"""The host codec's C block decoder (``host/_native.c``), through ctypes, when the build made it.

Where the shared object is absent (no C compiler at install time, or the source tree used
without installing), was built from another version of ``_native.c``, or ``GPUMAT_NATIVE=0`` is
set, ``available()`` is False and ``host.codec`` decodes with NumPy, bit-identical (the tests run
both). ``available()`` also says which one runs, and why.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import weakref

import numpy as np

ENV = "GPUMAT_NATIVE"  # "0": never use the C decoder
ABI = 34  # gm_abi_version() of the _native.c this module calls


def _load():
    if os.environ.get(ENV, "1") == "0":
        return None, f"{ENV}=0"
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, "_native" + suffix)
        if os.path.exists(path):
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:  # pragma: no cover - a broken build
                return None, f"{path}: {e}"
            lib.gm_abi_version.restype = ctypes.c_int64
            if lib.gm_abi_version() != ABI:  # an old build of an older _native.c: rebuild with pip install
                return None, f"{path}: built from another version of _native.c (pip install -e . rebuilds it)"
            P, I64 = ctypes.c_void_p, ctypes.c_int64
            sigs = {  # name: (result, arguments) of every function _native.c exports
                "gm_decode": (I64, [P, P, I64, I64, P, P, P, P, ctypes.c_int, P, I64]),
                "gm_block_hash": (None, [P] * 5 + [I64, P]),
                "gm_realign": (I64, [P, I64, P, P, P, I64, P]),
                "gm_chunk_hash": (None, [P, I64, I64, P, I64, P, P]),
                "gm_parse_fields": (I64, [P, I64, P, P, I64, P, P, P, I64] + [P] * 10),
                "gm_copy_ranges": (I64, [P, I64, P, P, I64, P, P, I64, I64]),
                "gm_unpack_exceptions": (I64, [P, I64, P, P, P, P, I64, P, P]),
                "gm_decode_blobs": (I64, [P, I64, P, P, P, P, I64, I64, P, I64, I64, ctypes.c_uint64] + [P] * 5
                                    + [I64] + [P] * 5 + [I64, P, I64, P]),
                "gm_bit_length": (None, [P, I64, P]),
                "gm_stage_levels": (I64, [P, I64] + [P] * 5 + [I64, P, P, P]),
                "gm_literal_tables": (I64, [P, P, I64, I64, I64, P, P, P]),
                "gm_dict_heads": (I64, [P, I64, P, P, P, I64, I64, P, P]),
                "gm_stage_bitmaps": (I64, [P, I64] + [P] * 5 + [I64, P, P]),
                "gm_stage_aux": (I64, [P, I64] + [P] * 8 + [I64, P]),
                "gm_stage_blocks": (I64, [P, I64, P, I64, P, P, I64, P]),
                "gm_fields_end": (I64, [P, I64, P, P, P, I64, P]),
                "gm_ranges": (I64, [P, P, I64, P, I64]),
                "gm_classes_patch": (I64, [P, I64] + [P] * 5 + [I64] + [P] * 4),
                "gm_classes_pack": (I64, [P, I64] + [P] * 4 + [I64, I64, P, P, P, I64]),
                "gm_patch_costs": (None, [P, I64, P, P, P, I64, I64, I64, P, P, P, P]),
                "gm_pack": (I64, [P, I64, P, P, P, I64, P, I64]),
                "gm_bare_mids": (I64, [P, I64] + [P] * 5 + [I64, P]),
            }
            fns = []
            for name, (res, args) in sigs.items():
                f = getattr(lib, name)
                f.restype, f.argtypes = res, args
                fns.append(f)
            return tuple(fns), path
    return None, "not built (pip install -e . builds it; needs a C compiler)"


_lib, _why = _load()
_decode, _hash, _realign, _chunk_hash, _parse_fields, _copy_ranges, _unpack_exceptions, _decode_blobs, _bit_length, \
    _stage_levels, _literal_tables, _dict_heads, _stage_bitmaps, _stage_aux, _stage_blocks, \
    _fields_end, _ranges, _classes_patch, _classes_pack, _patch_costs, _pack, _bare_mids = \
    _lib if _lib is not None else (None,) * 22


def available() -> tuple[bool, str]:
    """(whether the C decoder runs, its path or why not)."""
    return _decode is not None, _why


_addressof, _view = ctypes.addressof, ctypes.c_char.from_buffer


def _ptr(a: np.ndarray):
    """The address of ``a``'s first element (None when empty): through a ctypes view of its buffer,
    about 0.6 us against ``a.ctypes.data``'s 1.5 (a batch makes about 85 such calls); a read-only
    array (no writable view) through ``a.ctypes``."""
    if not a.size:
        return None
    if a.flags.writeable:
        try:
            return _addressof(_view(a))
        except (TypeError, ValueError, BufferError):  # (not one contiguous buffer)
            pass
    return a.ctypes.data


def decode(hdr: np.ndarray, words: np.ndarray, lo, cnt: np.ndarray, dst: np.ndarray, out: np.ndarray,
           clamp: bool = False, dicts: np.ndarray | None = None) -> int:
    """Values ``[lo_k, lo_k + cnt_k)`` of block ``k`` to ``out[dst_k:]`` (``lo`` None: from 0); a DICT
    block's values are the entries of ``dicts`` (contiguous int64) they index (``staged.dict_lookup``).

    All int64/uint64, C-contiguous; ``hdr`` ``[K, 3]``. Returns 0, or ``k + 1`` for the first block
    whose header or words fall outside ``words`` (nothing is written for it or after it).
    ``clamp``: a block's values past the end of ``words`` are taken as zero residuals instead (the
    padded decode's lanes past a block's count)."""
    K = hdr.shape[0]
    for name, a, dt in (("hdr", hdr, np.int64), ("words", words, None), ("cnt", cnt, np.int64), ("dst", dst, np.int64),
                        ("lo", lo, np.int64), ("out", out, None)):
        if a is None:
            continue
        if not a.flags.c_contiguous or a.dtype.itemsize != 8 or (dt is not None and a.dtype != dt):
            raise ValueError(f"native.decode: {name} must be C-contiguous {np.dtype(dt or np.int64)}, got {a.dtype}")
    if hdr.ndim != 2 or hdr.shape[1] != 3 or cnt.shape != (K,) or dst.shape != (K,) or (lo is not None and lo.shape != (K,)):
        raise ValueError(f"native.decode: hdr [K, 3] with cnt, dst (and lo) of K = {K} entries")
    if K and ((cnt < 0).any() or (dst < 0).any() or int((dst + cnt).max()) > out.size):
        raise ValueError(f"native.decode: output positions outside the {out.size} values of out")
    if dicts is not None and (dicts.dtype != np.int64 or not dicts.flags.c_contiguous):
        raise ValueError("native.decode: dicts must be C-contiguous int64")
    D = 0 if dicts is None else dicts.size
    return int(_decode(_ptr(hdr), _ptr(words), words.size, K, None if lo is None else _ptr(lo),
                       _ptr(cnt), _ptr(dst), _ptr(out), int(clamp), _ptr(dicts) if D else None, D))


def block_hash(base: np.ndarray, slope: np.ndarray, meta: np.ndarray, packed: np.ndarray, nwords: np.ndarray) -> np.ndarray:
    """``host.codec.block_hash`` in C: uint64 ``[K]``. Every array contiguous 64-bit; ``packed``
    holds at least ``nwords.sum()`` words (checked)."""
    K = nwords.size
    if base.size != K or slope.size != K or meta.size != K:
        raise ValueError(f"block_hash: base, slope, meta must have {K} entries")
    if int(nwords.sum()) > packed.size or (nwords < 0).any():
        raise ValueError(f"block_hash: {packed.size} packed words for blocks of {int(nwords.sum())}")
    out = np.empty(K, dtype=np.uint64)
    if K:
        _hash(_ptr(base), _ptr(slope), _ptr(meta), _ptr(packed), _ptr(nwords), K, _ptr(out))
    return out


def realign(buf: np.ndarray, src_bit: np.ndarray, nbits: np.ndarray, dst_word: np.ndarray, out: np.ndarray) -> None:
    """``host.pages.realign`` in C: bits ``[src_bit[k], + nbits[k])`` of ``buf`` (uint8) to ``out``
    (64-bit) from word ``dst_word[k]``. Checks every position; a block outside ``buf`` is a
    ``ValueError`` (the caller checked, so that means a bug)."""
    K = nbits.size
    if src_bit.size != K or dst_word.size != K or buf.dtype != np.uint8 or out.dtype.itemsize != 8 \
            or any(a.dtype != np.int64 for a in (src_bit, nbits, dst_word)):
        raise ValueError("realign: int64 src_bit, nbits, dst_word of one length; buf uint8; out 64-bit")
    for a in (buf, src_bit, nbits, dst_word, out):
        if not a.flags.c_contiguous:
            raise ValueError("realign: arrays must be C-contiguous")
    nw = (nbits + 63) >> 6
    if K and ((dst_word < 0).any() or int((dst_word + nw).max()) > out.size):
        raise ValueError(f"realign: output words outside the {out.size} of out")
    if K:
        bad = int(_realign(_ptr(buf), buf.size, _ptr(src_bit), _ptr(nbits), _ptr(dst_word), K, _ptr(out)))
        if bad:
            raise ValueError(f"realign: block {bad - 1} lies outside the {buf.size} bytes given")


def chunk_hash(buf: np.ndarray, chunk: int, ids: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
    """``host.segment.chunk_hash`` in C: uint32 ``[ceil(len(buf) / chunk)]``, chunk ``c`` of ``buf``
    being chunk ``ids[c]`` of the region; with ``at``, one per id, chunk ``c`` starts at byte ``at[c]``
    of ``buf`` (inside it; zero past its end)."""
    n = (-(-buf.size // chunk) if chunk > 0 else 0) if at is None else at.size
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous or chunk <= 0 or chunk % 8:
        raise ValueError("chunk_hash: a contiguous uint8 buffer and a chunk size that is a multiple of 8")
    if ids.dtype != np.int64 or not ids.flags.c_contiguous or ids.size != n:
        raise ValueError(f"chunk_hash: {n} int64 chunk numbers")
    if at is not None and (at.dtype != np.int64 or not at.flags.c_contiguous or (n and ((at < 0).any() or int(at.max()) >= buf.size))):
        raise ValueError("chunk_hash: int64 chunk places inside buf")
    out = np.empty(n, dtype=np.uint32)
    if n:
        _chunk_hash(_ptr(buf), buf.size, chunk, _ptr(ids), n, None if at is None else _ptr(at), _ptr(out))
    return out


def parse_fields(fbuf: np.ndarray, fstart: np.ndarray, fend: np.ndarray, tag: np.ndarray, cnt: np.ndarray,
                 page_of: np.ndarray, kind_of_tag: np.ndarray | None = None):
    """``host.pages.parse_fields``'s varints in C: ``(base, slope, w, nv, w2, e)`` per block, or None
    when a page's fields are not exactly its blocks' varints. Every array contiguous int64 (``fbuf``
    uint8); ``page_of`` sorted. With ``kind_of_tag`` (``pages._KIND_OF_TAG``), what ``parse_fields``
    makes of them too: ``(base, slope, w, nv, w2, e, kind, sp, mid, ok)``, ``ok`` False when some
    block's fields are out of range."""
    K, P = tag.size, fstart.size
    arrs = (fstart, fend, tag, cnt, page_of)
    if fbuf.dtype != np.uint8 or any(a.dtype != np.int64 or not a.flags.c_contiguous for a in arrs) \
            or not fbuf.flags.c_contiguous or fend.size != P or cnt.size != K or page_of.size != K \
            or (kind_of_tag is not None and (kind_of_tag.dtype != np.int64 or kind_of_tag.size != 128)):
        raise ValueError("parse_fields: contiguous uint8 fbuf, int64 fstart/fend [P] and tag/cnt/page_of [K]")
    out = np.empty((6 if kind_of_tag is None else 9, K), np.int64)
    extra = (None,) * 4 if kind_of_tag is None else (_ptr(kind_of_tag), *(_ptr(a) for a in out[6:]))
    bad = int(_parse_fields(_ptr(fbuf), fbuf.size, _ptr(fstart), _ptr(fend), P, _ptr(tag), _ptr(cnt),
                            _ptr(page_of), K, *(_ptr(a) for a in out[:6]), *extra)) if (K or P) else 0
    if bad > 0:
        return None
    return tuple(out) if kind_of_tag is None else (*out, bad == 0)


def copy_ranges(src: np.ndarray, src_at: np.ndarray, dst: np.ndarray, dst_at: np.ndarray, lens: np.ndarray) -> None:
    """``dst[dst_at[i]:][:lens[i]] = src[src_at[i]:][:lens[i]]`` for every i, a memcpy each (contiguous
    1-D arrays of one dtype; int64 positions, every range checked)."""
    K = lens.size
    if src.dtype != dst.dtype or src.dtype.hasobject or src.ndim != 1 or dst.ndim != 1 \
            or not src.flags.c_contiguous or not dst.flags.c_contiguous or not dst.flags.writeable:
        raise ValueError("copy_ranges: contiguous 1-D src and writeable dst of one (non-object) dtype")
    if any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in (src_at, dst_at, lens)):
        raise ValueError("copy_ranges: int64 src_at, dst_at, lens of one length")
    if K and _copy_ranges(_ptr(src), src.size, _ptr(src_at), _ptr(dst), dst.size, _ptr(dst_at), _ptr(lens), K, src.itemsize):
        raise ValueError("copy_ranges: a range outside src or dst")  # (checked in C before any copy)


def unpack_exceptions(buf: np.ndarray, src_bit: np.ndarray, e: np.ndarray, w2: np.ndarray, dst: np.ndarray,
                      out32: np.ndarray, sgn: np.ndarray | None = None) -> int:
    """``host.pages.stage_blocks``'s PATCH exceptions in C: block k's ``e[k]`` values of ``w2[k]``
    bits from bit ``src_bit[k]`` of ``buf`` to ``out32[dst[k]:]`` as 32-bit ``value + 1`` (where
    ``sgn[k]``: ``unzigzag(value + 1)`` as an int32, a DELTA SIGNED block's). Returns 0, or the first
    block whose bits fall outside ``buf``, + 1."""
    K = e.size
    arrs = (src_bit, e, w2, dst) + (() if sgn is None else (sgn,))
    if buf.dtype != np.uint8 or out32.dtype != np.uint32 or not out32.flags.c_contiguous or not buf.flags.c_contiguous \
            or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in arrs):
        raise ValueError("unpack_exceptions: uint8 buf, int64 src_bit/e/w2/dst (sgn) [K], contiguous uint32 out32")
    if K and ((dst < 0).any() or (e < 0).any() or int((dst + e).max()) > out32.size):
        raise ValueError("unpack_exceptions: output positions outside out32")
    return int(_unpack_exceptions(_ptr(buf), buf.size, _ptr(src_bit), _ptr(e), _ptr(w2), _ptr(dst), K,
                                  None if sgn is None else _ptr(sgn), _ptr(out32))) if K else 0


def stage_bitmaps(buf: np.ndarray, at: np.ndarray, ones: np.ndarray, pb: np.ndarray, cnt: np.ndarray,
                  mode: np.ndarray, dst32: np.ndarray, w32: np.ndarray) -> int:
    """``host.pages._expand_positions`` in C: block k's sparse bitmap (``ones[k]`` entries of ``pb[k]``
    bits from bit ``at[k]`` of ``buf``; ``mode[k]`` 0 PATCH positions, 1 RUN positions, 2 RUN gaps;
    ``cnt[k]`` values) ORed into ``w32[dst32[k]:]``. Returns 0, or the first bad block + 1 (entries
    that do not ascend inside it, or bits outside ``buf``)."""
    K = ones.size
    arrs = (at, ones, pb, cnt, mode, dst32)
    if buf.dtype != np.uint8 or w32.dtype != np.uint32 or not w32.flags.c_contiguous or not buf.flags.c_contiguous \
            or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in arrs):
        raise ValueError("stage_bitmaps: uint8 buf, int64 at/ones/pb/cnt/mode/dst32 [K], contiguous uint32 w32")
    if K and ((cnt < 1).any() or (cnt > 128).any()):
        raise ValueError("stage_bitmaps: blocks of 1 to 128 values")
    if K and ((dst32 < 0).any() or int((dst32 + ((cnt + 31) >> 5)).max()) > w32.size):
        raise ValueError("stage_bitmaps: output positions outside w32")
    return int(_stage_bitmaps(_ptr(buf), buf.size, *(_ptr(a) for a in arrs[:5]), K, _ptr(dst32), _ptr(w32))) if K else 0


def stage_aux(w32: np.ndarray, at32: np.ndarray, kind: np.ndarray, cnt: np.ndarray, e: np.ndarray, nv: np.ndarray,
              vw: np.ndarray, bw: np.ndarray, coded: np.ndarray, aux: np.ndarray) -> int:
    """``host.pages.stage_blocks``' aux words in C (a RADIX block's left for the caller): block k's
    ``kind | 2 vw << 8 | 2 (vw + bw) << 18`` (``AUX_CODES`` where ``coded``), and the set bits of its
    bitmap (from ``w32[at32[k]]``) before each 32-lane group, to ``aux[k]`` (uint64). Returns 0, or
    the first block whose bitmap disagrees with its fields + 1."""
    K = kind.size
    arrs = (at32, kind, cnt, e, nv, vw, bw, coded)
    if w32.dtype != np.uint32 or not w32.flags.c_contiguous or aux.dtype != np.uint64 or aux.size != K \
            or not aux.flags.c_contiguous or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in arrs):
        raise ValueError("stage_aux: contiguous uint32 w32, int64 at32/kind/cnt/e/nv/vw/bw/coded [K], uint64 aux [K]")
    if K and (not w32.size or (at32 < 0).any() or (cnt > 128).any()):
        raise ValueError("stage_aux: bitmaps outside w32, or blocks over 128 values")
    return int(_stage_aux(_ptr(w32), w32.size, *(_ptr(a) for a in arrs), K, _ptr(aux))) if K else 0


def classes_patch(buf: np.ndarray, at: np.ndarray, cnt: np.ndarray, lv: np.ndarray, shape: np.ndarray,
                  extra: np.ndarray) -> tuple | None:
    """``host.pages._classes_as_patch``'s stream in C: CLASSES block k (from bit ``at[k]`` of ``buf``:
    ``cnt[k]`` values, ``lv[k]`` levels, ``shape[k]``, ``extra[k]`` bits after its first level) as the
    PATCH block it stages as. Returns ``(stream uint8, w2, e, boff)`` (block k's payload from bit
    ``boff[k]`` of the stream: ``w_0`` low bits a value, its bitmap, ``e[k]`` exceptions of ``w2[k]``
    bits), or None for a bad block (the NumPy version names what is wrong with it)."""
    at, cnt, lv, shape, extra = (np.ascontiguousarray(a, np.int64).reshape(-1) for a in (at, cnt, lv, shape, extra))
    K = cnt.size
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous or any(a.size != K for a in (at, lv, shape, extra)):
        raise ValueError("classes_patch: uint8 buf, int64 at/cnt/lv/shape/extra [K]")
    if K and ((at < 0).any() or (extra < 0).any() or (at + cnt + extra > 8 * buf.size).any()):
        return None
    w2, e, boff = (np.zeros(K, np.int64) for _ in range(3))
    # (every word of the stream is written whole, in order: not zeroed first; a zero word after it)
    o = np.empty(int((np.clip(cnt, 0, 128) * ((shape & 15) + 26)).sum()) // 64 + 2, np.uint64)
    if K and _classes_patch(_ptr(buf), buf.size, _ptr(at), _ptr(cnt), _ptr(lv), _ptr(shape), _ptr(extra), K,
                            _ptr(w2), _ptr(e), _ptr(boff), _ptr(o)):
        return None
    nw = -(-int((cnt * (shape & 15) + cnt + e * w2).sum()) // 64)
    o[nw] = 0
    return o[: nw + 1].view(np.uint8), w2, e, boff


def classes_pack(r: np.ndarray, cnt: np.ndarray, L: np.ndarray, start: np.ndarray, width: np.ndarray,
                 woff: np.ndarray, nw: np.ndarray, out: np.ndarray) -> None:
    """``host.pages._Candidates._assemble_classes`` in C: CLASSES block k's bits after its first level
    (its levels after the first, then its classes' low bits; ``r [K, lanes]`` uint64 its residuals,
    ``cnt[k]`` of them, ``L[k]`` levels, ``start`` / ``width [K, C]`` its classes') OR-ed into the
    zeroed uint64 ``out`` from word ``woff[k]``, inside its ``nw[k]`` words."""
    r = np.ascontiguousarray(r, np.uint64)
    cnt, L, woff, nw = (np.ascontiguousarray(a, np.int64).reshape(-1) for a in (cnt, L, woff, nw))
    start, width = (np.ascontiguousarray(a, np.int64) for a in (start, width))
    K = cnt.size
    if r.ndim != 2 or r.shape[0] != K or start.shape != width.shape or start.shape[0] != K or out.dtype != np.uint64 \
            or not out.flags.c_contiguous or L.size != K or woff.size != K or nw.size != K:
        raise ValueError("classes_pack: r uint64 [K, lanes], cnt/L/woff [K], start/width [K, C], out uint64")
    if K and _classes_pack(_ptr(r), r.shape[1], _ptr(cnt), _ptr(L), _ptr(start), _ptr(width), start.shape[1], K,
                           _ptr(woff), _ptr(nw), _ptr(out), out.size):
        raise ValueError("classes_pack: a block out of range")


def pack(r2: np.ndarray, w: np.ndarray, nw: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """``host.codec._pack`` in C: block b's residuals ``r2[b]`` (uint64 ``[NB, lanes]``, below 2^w[b])
    bit-packed into ``out[dst[b]:][:nw[b]]`` (uint64); ``ValueError`` for a block out of range."""
    r2 = np.ascontiguousarray(r2, np.uint64)
    w, nw, dst = (np.ascontiguousarray(a, np.int64).reshape(-1) for a in (w, nw, dst))
    NB = w.size
    if r2.ndim != 2 or r2.shape[0] != NB or nw.size != NB or dst.size != NB or out.dtype != np.uint64 \
            or not out.flags.c_contiguous:
        raise ValueError("pack: r2 uint64 [NB, lanes], w / nw / dst [NB], out uint64")
    if NB and _pack(_ptr(r2), r2.shape[1], _ptr(w), _ptr(nw), _ptr(dst), NB, _ptr(out), out.size):
        raise ValueError("pack: a block's width, words or place out of range")


def patch_costs(r: np.ndarray, cnt: np.ndarray, w: np.ndarray, flag, aux_max_w2: int, flag_max_e: int) -> tuple:
    """``host.pages._patch_costs`` in C: ``(bits, w1, w2, e)`` (int64 ``[n]``) of the cheapest PATCH
    of each block of residuals ``r [n, lanes]`` (uint64, zero past each count)."""
    r = np.ascontiguousarray(r, np.uint64)
    cnt, w = (np.ascontiguousarray(a, np.int64).reshape(-1) for a in (cnt, w))
    n = cnt.size
    if r.ndim != 2 or r.shape[0] != n or w.size != n:
        raise ValueError("patch_costs: r uint64 [n, lanes], cnt / w [n]")
    f = None if flag is None else np.ascontiguousarray(np.broadcast_to(np.asarray(flag, bool), (n,)), np.uint8)
    out = [np.empty(n, np.int64) for _ in range(4)]
    if n:
        _patch_costs(_ptr(r), r.shape[1], _ptr(cnt), _ptr(w), None if f is None else _ptr(f), n, aux_max_w2, flag_max_e,
                     *(_ptr(o) for o in out))
    return tuple(out)


def stage_levels(buf: np.ndarray, at: np.ndarray, cnt: np.ndarray, lv: np.ndarray, wt: np.ndarray, extra: np.ndarray,
                 e1: np.ndarray, xoff: np.ndarray, x: np.ndarray) -> int:
    """``host.pages._expand_levels`` in C: LEVELS block k (from bit ``at[k]`` of ``buf``: ``cnt[k]``
    values, ``lv[k]`` levels, a tail of ``wt[k]`` bits, ``extra[k]`` bits after its first level) to
    ``e1[k]``, its first level's set bits, and their values less the base as uint32 from
    ``x[xoff[k]]``. Returns 0, or the first bad block + 1."""
    K = cnt.size
    if buf.dtype != np.uint8 or x.dtype != np.uint32 or not x.flags.c_contiguous or not buf.flags.c_contiguous \
            or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in (at, cnt, lv, wt, extra, e1, xoff)):
        raise ValueError("stage_levels: uint8 buf, int64 at/cnt/lv/wt/extra/e1/xoff [K], contiguous uint32 x")
    if K and ((xoff < 0).any() or (cnt < 0).any() or int((xoff + cnt).max()) > x.size or (at < 0).any()
              or int((at + cnt + np.maximum(extra, 0)).max()) > 8 * buf.size):
        raise ValueError("stage_levels: a block's bits outside buf, or its values outside x")
    return int(_stage_levels(_ptr(buf), buf.size, _ptr(at), _ptr(cnt), _ptr(lv), _ptr(wt), _ptr(extra), K, _ptr(e1),
                             _ptr(xoff), _ptr(x))) if K else 0


def bare_mids(buf: np.ndarray, at: np.ndarray, cnt: np.ndarray, lv: np.ndarray, wt: np.ndarray,
              limit: np.ndarray) -> np.ndarray | None:
    """``host.pages.bare_mids`` in C: BARE LEVELS block k (from bit ``at[k]`` of ``buf``: ``cnt[k]``
    values, ``lv[k]`` levels, a tail of ``wt[k]`` bits, its blob ending at bit ``limit[k]``): its bits
    after its first level, walked from its levels; None where a level or tail runs past its limit."""
    at, cnt, lv, wt, limit = (np.ascontiguousarray(a, np.int64) for a in (at, cnt, lv, wt, limit))
    K = cnt.size
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous or any(a.size != K for a in (at, lv, wt, limit)):
        raise ValueError("bare_mids: contiguous uint8 buf, int64 at/cnt/lv/wt/limit [K]")
    if K and (int(limit.max()) > 8 * buf.size or (cnt < 0).any()):
        raise ValueError("bare_mids: a block's limit outside buf")
    mid = np.zeros(K, np.int64)
    if K and _bare_mids(_ptr(buf), buf.size, _ptr(at), _ptr(cnt), _ptr(lv), _ptr(wt), _ptr(limit), K, _ptr(mid)):
        return None
    return mid


NARROW_MIN_ENTRIES = 1 << 15  # (256 KiB of int64 entries: smaller tables stay in a core's L2 as they are)
_narrow: dict = {}  # id(dictionary array) -> (a weak reference to it, its narrowed form: None until its second use,
#                   False where its entries span 2^32 or more)


def narrowed(dicts: np.ndarray) -> tuple[np.ndarray, int]:
    """``(entries, lo)``: the table ``gm_decode_blobs`` looks the codes of ``dicts`` (int64) up in,
    entry ``i`` being ``lo + entries[i]`` (mod 2^64). A read-only table of at least
    ``NARROW_MIN_ENTRIES`` whose entries span less than 2^16 (2^32) is looked up in a uint16 (uint32)
    copy of them less their least, made at its second use and kept as long as it lives: a segment
    dictionary kept between reads (the bench's ``category``, 212,106 entries of 1,000 values: 1.7 MB
    of int64, 0.4 MB of uint16), whose lookups are cache misses where the table is larger than a
    core's L2. Any other: ``(dicts, 0)`` (a batch's own tables are new arrays each read: never
    copied)."""
    if dicts.size < NARROW_MIN_ENTRIES or dicts.dtype != np.int64:
        return dicts, 0
    own = dicts  # (the array that holds the entries: a caller's view of it is a new object at every read)
    while isinstance(own.base, np.ndarray):
        own = own.base
    if own.flags.writeable or own.dtype != np.int64 or own.size != dicts.size or own.ctypes.data != dicts.ctypes.data:
        return dicts, 0
    k = id(own)
    seen = _narrow.get(k)
    if seen is None or seen[0]() is not own:  # (its first use: remembered, not copied)
        def gone(ref, k=k, memo=_narrow):  # (its entry goes with it: a later array at the same address starts afresh)
            if memo.get(k, (None,))[0] is ref:
                memo.pop(k, None)

        _narrow[k] = (weakref.ref(own, gone), None)
        return dicts, 0
    if seen[1] is None:
        lo, hi = int(dicts.min()), int(dicts.max())
        dt = np.uint16 if hi - lo < 1 << 16 else np.uint32 if hi - lo < 1 << 32 else None
        # (its entries less the least: exact in int64, each below 2^16 / 2^32; False: as it is. Never
        # the array itself, which the entry would keep alive)
        seen = _narrow[k] = (seen[0], ((dicts - np.int64(lo)).astype(dt), lo & ((1 << 64) - 1)) if dt is not None else False)
    return seen[1] if seen[1] is not False else (dicts, 0)


BLOB_ERRORS = {  # gm_decode_blobs' reasons (GM_BLOB_*)
    1: "shorter than its tags, anchors or payload", 2: "a block tag that is not an encoding this release reads",
    3: "its anchors disagree with its tags", 4: "its fields do not match its tags",
    5: "a PATCH, RUN, DELTA, LEVELS or CLASSES block's fields are out of range", 6: "its payload runs past its bounds",
    7: "a PATCH, RUN, LEVELS or CLASSES block's bitmap (or levels) disagrees with its fields", 8: "a code outside its dictionary",
    9: "a blob of codes (DICT) holds RADIX blocks",
    10: "a PATCH, RUN or DELTA block in a tier of blocks over 128 values",
    11: "a blob of several blocks (or no block tag) with its tag in its index",
}


def decode_blobs(buf: np.ndarray, boff: np.ndarray, blen: np.ndarray, count: np.ndarray, dst: np.ndarray,
                 block_size: int, out: np.ndarray, dicts: np.ndarray | None = None, dstart: np.ndarray | None = None,
                 dlen: np.ndarray | None = None, tags: np.ndarray | None = None,
                 tables: tuple | None = None) -> tuple[int, ...]:
    """``host.pages.decode_blobs`` in C: blob ``s`` (bytes ``[boff[s], + blen[s])`` of ``buf``, uint8),
    ``count[s]`` values to ``out[dst[s]:]`` (64-bit); where ``dlen[s] > 0`` they are codes into
    ``dicts[dstart[s]:][:dlen[s]]`` (int64; a large one kept between reads is looked up in its
    ``narrowed`` copy); where ``tags[s] >= 0`` it is one block whose tag is ``tags[s]``, not its
    first byte; where ``tags[s] == pages.CONST_TAG`` there is no blob but ``count[s]`` copies of the
    value ``boff[s]``. Returns ``(0, 0)``, or ``(s + 1, reason)`` for the first bad blob
    (``BLOB_ERRORS``). Every position given is checked, in C before anything is written
    (``ValueError``: a bug of the caller's).

    ``tables``: ``(tab, tbuf, toff, tlen, tcnt, tdstart, tdlen)``, stripe tables decoded just before
    the blobs that index them: where ``tab[s] >= 0`` blob ``s``'s codes index table ``tab[s]`` (its
    ``dlen[s]`` unused), the blob ``[toff[t], + tlen[t])`` of ``tbuf`` of ``tcnt[t]`` entries, codes
    into ``dicts[tdstart[t]:][:tdlen[t]]`` where ``tdlen[t] > 0``. Then ``(0, 0, 0)`` or
    ``(s + 1, reason, 1 if it was blob s's table that is bad)``."""
    S = count.size
    arrs = [boff, blen, count, dst] + ([] if dicts is None else [dstart, dlen]) + ([] if tags is None else [tags])
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous or out.dtype.itemsize != 8 or not out.flags.c_contiguous \
            or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != S for a in arrs) or block_size < 1 \
            or (dicts is not None and (dicts.dtype != np.int64 or not dicts.flags.c_contiguous)):
        raise ValueError("decode_blobs: uint8 buf, int64 boff/blen/count/dst (dstart/dlen, tags) [S], int64 dicts, 64-bit out")
    tp = (None, None, 0, None, None, None, None, None, 0)
    if tables is not None:
        which, tbuf, toff, tlen, tcnt, tdstart, tdlen = tables
        T = tcnt.size
        if which.dtype != np.int64 or which.size != S or not which.flags.c_contiguous or tbuf.dtype != np.uint8 \
                or not tbuf.flags.c_contiguous \
                or any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != T for a in (toff, tlen, tcnt, tdstart, tdlen)):
            raise ValueError("decode_blobs: tables (tab [S] int64, uint8 tbuf, int64 toff/tlen/tcnt/tdstart/tdlen [T])")
        tp = (_ptr(which), _ptr(tbuf), tbuf.size, _ptr(toff), _ptr(tlen), _ptr(tcnt), _ptr(tdstart), _ptr(tdlen), T)
    d = dicts is not None and dicts.size > 0
    tab, lo = narrowed(dicts) if d else (None, 0)
    why = np.zeros(2, np.int64)
    bad = int(_decode_blobs(_ptr(buf), buf.size, _ptr(boff), _ptr(blen), _ptr(count), _ptr(dst), S, block_size,
                            _ptr(tab) if d else None, dicts.size if d else 0, tab.itemsize if d else 8, lo,
                            None if dicts is None else _ptr(dstart), None if dicts is None else _ptr(dlen),
                            None if tags is None else _ptr(tags), *tp, _ptr(out), out.size, _ptr(why)))
    if bad == -1:
        n = 0 if dicts is None else dicts.size
        raise ValueError("decode_blobs: " + {1: f"output positions outside the {out.size} values of out",
                                             2: f"a dictionary outside the {n} values of dicts",
                                             3: "tables: a table per blob (tab [S], -1 for none), each below T",
                                             4: f"a table's dictionary outside the {n} values of dicts"}[int(why[0])])
    if bad == -2:
        raise MemoryError("decode_blobs: its buffers")
    return (bad, int(why[0])) if tables is None else (bad, int(why[0]), int(why[1]))


def dict_heads(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, forms: np.ndarray,
               max_entries: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``host.pages.dictionary_heads`` in C: ``(entries, head bytes, bad)`` of the dictionaries whose
    stored bytes are ``buf[starts[k]:][:lens[k]]`` (uint8), heads in ``forms[k]``; ``bad``: 0, or
    ``k + 1`` for the first bad one (the NumPy version names what is wrong with it)."""
    starts, lens, forms = (np.ascontiguousarray(a, np.int64).reshape(-1) for a in (starts, lens, forms))
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    if not starts.size == lens.size == forms.size:
        raise ValueError("dict_heads: starts, lens and forms of one size")
    n, h = np.zeros(starts.size, np.int64), np.zeros(starts.size, np.int64)
    bad = int(_dict_heads(_ptr(buf), buf.size, _ptr(starts), _ptr(lens), _ptr(forms), starts.size, int(max_entries),
                          _ptr(n), _ptr(h))) if starts.size else 0
    return n, h, bad


def literal_tables(x: np.ndarray, sc: np.ndarray, m: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``host.pages._literal_tables`` in C: ``(literals back to back, literals per stripe, each
    value's literal index in its stripe)`` of ``x`` (int64) in stripes of ``sc`` values."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    sc = np.ascontiguousarray(sc, dtype=np.int64)
    if (sc < 0).any() or int(sc.sum()) != x.size or m < 1 or window < 1:
        raise ValueError("literal_tables: stripe counts that sum to x's size, m and window >= 1")
    idx, lit, nlit = np.empty(x.size, np.int64), np.empty(x.size, np.int64), np.empty(sc.size, np.int64)
    total = _literal_tables(_ptr(x), _ptr(sc), sc.size, int(m), int(window), _ptr(idx), _ptr(lit), _ptr(nlit)) if sc.size else 0
    if total < 0:
        raise MemoryError("literal_tables: out of memory")
    return lit[:total].copy(), nlit, idx


def bit_length(v: np.ndarray) -> np.ndarray:
    """``host.codec.bit_length`` in C: int64 of ``v``'s shape (``v`` uint64, any shape)."""
    v = np.ascontiguousarray(v, dtype=np.uint64)
    out = np.empty(v.shape, np.int64)
    if v.size:
        _bit_length(_ptr(v), v.size, _ptr(out))
    return out


def stage_blocks(pay: np.ndarray, f: np.ndarray):
    """``host.pages.stage_blocks`` in C (but a RADIX block's aux word): ``pay`` uint8, ``f`` int64
    ``[10, K]`` (kind, w, nv, w2, e, cnt, sp, mid, src_bit, dict per block). ``(words uint64, meta
    int64 [K], off int64 [K])``, or None when some block cannot be staged as given (the NumPy body
    then raises what it deserves)."""
    if pay.dtype != np.uint8 or not pay.flags.c_contiguous or f.dtype != np.int64 or not f.flags.c_contiguous \
            or f.ndim != 2 or f.shape[0] != 10:
        raise ValueError("stage_blocks: contiguous uint8 pay and int64 f [10, K]")
    K = f.shape[1]
    lay = np.empty((2, K), np.int64)
    n = int(_stage_blocks(_ptr(pay), pay.size, _ptr(f), K, _ptr(lay), None, 0, None)) if K else 0
    if n < 0:
        return None
    words = np.zeros(n + 1, np.uint64)
    meta = np.empty(K, np.int64)
    if K and int(_stage_blocks(_ptr(pay), pay.size, _ptr(f), K, _ptr(lay), _ptr(words), words.size, _ptr(meta))) != n:
        return None
    return words, meta, lay[0]


def fields_end(buf: np.ndarray, start: np.ndarray, limit: np.ndarray, nvar: np.ndarray) -> np.ndarray | None:
    """``host.pages.fields_end`` in C: where the ``nvar[i]`` varints from byte ``start[i]`` of ``buf``
    (uint8) end, int64, or None when some are not all found before ``limit[i]``."""
    K = start.size
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous or \
            any(a.dtype != np.int64 or not a.flags.c_contiguous or a.size != K for a in (start, limit, nvar)):
        raise ValueError("fields_end: contiguous uint8 buf, int64 start/limit/nvar [K]")
    fe = np.empty(K, np.int64)
    if K and _fields_end(_ptr(buf), buf.size, _ptr(start), _ptr(limit), _ptr(nvar), K, _ptr(fe)):
        return None
    return fe


def ranges(starts: np.ndarray, counts: np.ndarray, total: int) -> np.ndarray | None:
    """``host.ranges.ranges`` in C (contiguous int64 ``starts``, ``counts`` of one length summing to
    ``total``), or None when a count is negative (the NumPy body decides what that gives)."""
    out = np.empty(total, np.int64)
    return None if _ranges(_ptr(starts), _ptr(counts), counts.size, _ptr(out), total) else out
