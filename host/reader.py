"""Reading one committed version of a tier (docs/DESIGN.md §3): its length history, its directory of
live stripes (verified against the lengths), verified blocks for the planner, decoded histories.

A ``VersionReader`` is immutable in what it reads (one manifest) and caches lazily, so planner
threads can share it; a handle that moves to another version gets a new reader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from gpumat.core.errors import CorruptionError, SchemaError
from gpumat.host import codec
from gpumat.host.lengths import LengthHistory, load_length_history
from gpumat.host.ranges import ranges
from gpumat.host.segment import Segment, open_segment


@dataclass
class Directory:
    """The live stripes of one version, sorted by ``(user_id, start)`` (docs/DESIGN.md §3).

    ``user_id, start, count, nblocks, block0`` int64 ``[S]``, ``seg`` int32 ``[S]`` (index into the
    version's segment list); ``block0`` is the exclusive cumsum of ``nblocks``.
    """

    user_id: np.ndarray
    start: np.ndarray
    count: np.ndarray
    seg: np.ndarray
    nblocks: np.ndarray
    block0: np.ndarray

    def __len__(self) -> int:
        return len(self.user_id)

    def user_stripes(self, user_id: int) -> np.ndarray:
        """Directory indices (ascending, so oldest first) of the stripes of one user."""
        a, b = np.searchsorted(self.user_id, user_id, "left"), np.searchsorted(self.user_id, user_id, "right")
        return np.arange(a, b, dtype=np.int64)


class VersionReader:
    """Reads the version described by ``manifest`` of the tier at ``root``.

    ``segcache``: ``{path: Segment}`` shared by the readers of one handle (segment files are
    immutable, so a segment opened for one version serves every later one that lists it).
    """

    def __init__(self, root: str, manifest: dict, segcache: dict[str, Segment] | None = None):
        self.root = root
        self.manifest = manifest
        self.schema: dict[str, str] = manifest["schema"]
        self.version: int = manifest["version"]
        self.block_size: int = manifest["block_size"]
        self.where = f"tier {root} version {self.version}"
        self._segcache = {} if segcache is None else segcache
        self._segs: list[Segment | None] = [None] * len(manifest["segments"])
        self._len: LengthHistory | None = None
        self._dir: Directory | None = None
        self._dir_cols: dict | None = None

    # ------------------------------------------------------------------ lengths
    def length_history(self) -> LengthHistory:
        """The version's length history (read and verified once)."""
        if self._len is None:
            self._len = load_length_history(self.root, self.manifest["lengths"], self.version, self.where)
        return self._len

    # ------------------------------------------------------------------ segments and directory
    def segment(self, i: int) -> Segment:
        """Segment ``i`` of the manifest, opened (and its index verified) once."""
        s = self._segs[i]
        if s is None:
            e = self.manifest["segments"][i]
            s = self._segcache.get(e["path"])
            if s is None or s.size != e["size"]:
                s = open_segment(os.path.join(self.root, e["path"]), list(self.schema), e["size"], e["index_crc"], self.block_size)
                self._segcache[e["path"]] = s
            self._segs[i] = s
        return s

    def directory(self) -> Directory:
        """The live stripes, sorted by ``(user_id, start)`` (cached).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        if self._dir is not None:
            return self._dir
        segs = [self.segment(i) for i in range(len(self._segs))]
        cat = lambda f: np.concatenate([f(s) for s in segs]) if segs else np.zeros(0, np.int64)  # noqa: E731
        uid, st, cnt = cat(lambda s: s.user_id), cat(lambda s: s.start), cat(lambda s: s.count)
        seg = np.repeat(np.arange(len(segs), dtype=np.int32), [s.num_stripes for s in segs]) if segs else np.zeros(0, np.int32)
        order = np.lexsort((st, uid))
        uid, st, cnt, seg = uid[order], st[order], cnt[order], seg[order]
        cols = {c: (cat(lambda s: s.off[c])[order], cat(lambda s: s.nwords[c])[order], cat(lambda s: s.enc[c])[order]) for c in self.schema}
        # each user's stripes must tile [0, length_v(u)): contiguous, from 0, summing to the length
        S = len(uid)
        first = np.ones(S, bool)
        if S:
            first[1:] = uid[1:] != uid[:-1]
        expect = np.zeros(S, np.int64)
        if S:
            expect[1:] = st[:-1] + cnt[:-1]
        expect[first] = 0
        if (st != expect).any():
            raise CorruptionError(f"{self.where}: segments do not tile the histories (overlapping or missing stripes)")
        users = uid[first]
        ends = np.concatenate((np.flatnonzero(first)[1:], [S])) - 1 if S else np.zeros(0, np.int64)
        totals = st[ends] + cnt[ends] if S else np.zeros(0, np.int64)
        L = self.length_history()
        if not np.array_equal(totals, L.at(users, np.full(len(users), self.version))) or len(L.live_users(self.version)) != len(users):
            raise CorruptionError(f"{self.where}: segments disagree with the length history")
        nblocks = (cnt + self.block_size - 1) // self.block_size
        block0 = np.cumsum(nblocks) - nblocks
        # Columns first: another planner thread that finds ``_dir`` set goes straight to ``_dir_cols``.
        self._dir_cols = cols
        self._dir = Directory(uid, st, cnt, seg, nblocks, block0)
        return self._dir

    def blobs(self, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per directory stripe, the blob of ``column``: ``(word offset in its segment, words, encoding)``."""
        self.directory()
        return self._dir_cols[column]

    # ------------------------------------------------------------------ blocks
    def read_blocks(self, column: str, stripe_idx, block_lo, block_hi):
        """Blocks ``[block_lo[i], block_hi[i])`` of the blob of ``column`` of directory stripes ``stripe_idx[i]``.

        Returns ``(hdr, words, nbytes)``: ``hdr`` int64 ``[K, 3]`` (base, slope, meta) in request order
        with ``word_off`` rewritten to index ``words`` (int64, every block's packed words back to back,
        plus one zero word); ``nbytes``: bytes read from storage (headers + packed words). Every block's
        hash is verified (``CorruptionError``). Vectorized: one pass per segment, none per block.
        """
        if column not in self.schema:
            raise SchemaError(f"unknown column {column!r}; schema has {list(self.schema)}")
        d = self.directory()
        off_c, nw_c, _ = self._dir_cols[column]
        si = np.asarray(stripe_idx, dtype=np.int64).reshape(-1)
        lo = np.broadcast_to(np.asarray(block_lo, dtype=np.int64), si.shape)
        hi = np.broadcast_to(np.asarray(block_hi, dtype=np.int64), si.shape)
        if si.size and (si.min() < 0 or si.max() >= len(d) or (lo < 0).any() or (hi < lo).any() or (hi > d.nblocks[si]).any()):
            raise SchemaError("read_blocks: stripe index or block range out of bounds")
        bs = self.block_size
        nblk = hi - lo
        K = int(nblk.sum())
        bstripe = np.repeat(si, nblk)
        j = ranges(lo, nblk)
        cnt = np.minimum(bs, d.count[bstripe] - j * bs)
        bseg = d.seg[bstripe]
        blob_w = off_c[bstripe]
        blob_len = nw_c[bstripe]
        hdr4 = np.empty((K, codec.HDR_WORDS), dtype=np.int64)
        order = np.argsort(bseg, kind="stable")
        bounds = np.flatnonzero(np.diff(bseg[order])) + 1
        groups = [(int(bseg[g[0]]), g) for g in np.split(order, bounds) if len(g)]
        for s, g in groups:
            hdr4[g] = self.segment(s).words[blob_w[g, None] + codec.HDR_WORDS * j[g, None] + np.arange(codec.HDR_WORDS)[None, :]]
        meta = hdr4[:, 2]
        w = meta & 255
        woff = meta >> 8
        nw = codec.words_for(cnt, np.minimum(w, 64))
        bad = (meta < 0) | (w > 64) | (woff < codec.HDR_WORDS * ((d.count[bstripe] + bs - 1) // bs)) | (woff + nw > blob_len)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(f"segment {self.segment(int(bseg[k])).path}: column {column!r} block {int(j[k])} of a stripe of user {int(d.user_id[bstripe[k]])} has an invalid header")
        out_off = np.cumsum(nw) - nw
        total = int(nw.sum())
        words = np.zeros(total + 1, dtype=np.int64)
        for s, g in groups:
            words[ranges(out_off[g], nw[g])] = self.segment(s).words[ranges(blob_w[g] + woff[g], nw[g])]
        h = codec.block_hash(hdr4[:, 0], hdr4[:, 1], meta, words[:total], nw)
        bad = h != hdr4[:, 3].view(np.uint64)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(
                f"segment {self.segment(int(bseg[k])).path}: column {column!r} block {int(j[k])} of a stripe of user "
                f"{int(d.user_id[bstripe[k]])} fails its checksum ({int(bad.sum())} bad block(s))"
            )
        hdr = hdr4[:, :3].copy()
        hdr[:, 2] = (out_off << 8) | w
        return hdr, words, 8 * (codec.HDR_WORDS * K + total)

    def decode_stripes(self, column: str, stripe_idx) -> np.ndarray:
        """All values of ``column`` of the given directory stripes, concatenated in the given order (int64)."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64)
        hdr, words, _ = self.read_blocks(column, si, np.zeros(len(si), np.int64), d.nblocks[si])
        nblk = d.nblocks[si]
        j = ranges(np.zeros(len(si), np.int64), nblk)
        cnt = np.minimum(self.block_size, np.repeat(d.count[si], nblk) - j * self.block_size)
        return codec.decode_blocks(hdr, words, cnt)
