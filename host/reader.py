"""Reading one committed version of a tier (docs/DESIGN.md §3): its length history, its directory of
live stripes (verified against the lengths), verified blocks for the planner, decoded histories.

A ``VersionReader`` is immutable in what it reads (one ``host.log.State``) and caches lazily, so
planner threads can share it; a handle that moves to another version gets a new reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpumat.core.errors import CorruptionError, SchemaError
from gpumat.host import codec
from gpumat.host.lengths import LengthHistory
from gpumat.host.log import State
from gpumat.host.ranges import ranges
from gpumat.host.segment import Segment, known_segment, open_segment


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
    """Reads the version described by ``state`` from the tier's ``store``.

    ``segcache``: ``{file key: Segment}`` shared by the readers of one handle (data files are
    immutable, so a segment opened for one version serves every later one that lists it).
    """

    def __init__(self, store, state: State, segcache: dict[str, Segment] | None = None):
        self.store = store
        self.state = state
        self.schema: dict[str, str] = state.schema
        self.version: int = state.version
        self.block_size: int = state.block_size
        self.where = f"tier {store.root} version {self.version}"
        self._segcache = {} if segcache is None else segcache
        self._files = list(state.files.items())
        self._segs: list[Segment | None] = [None] * len(self._files)
        self._dir: Directory | None = None
        self._dir_cols: dict | None = None
        self._pool: tuple | None = None

    # ------------------------------------------------------------------ lengths
    def length_history(self) -> LengthHistory:
        """The version's length history (every version's rows up to this one)."""
        return self.state.lengths

    # ------------------------------------------------------------------ segments and directory
    def segment(self, i: int) -> Segment:
        """Data file ``i`` of the version, its index read and verified once."""
        s = self._segs[i]
        if s is None:
            key, e = self._files[i]
            s = self._segcache.get(key)
            if s is None or s.size != e["size"]:
                s = open_segment(self.store, e["path"], e["offset"], e["size"], e["index_crc"], list(self.schema), self.block_size)
                self._segcache[key] = s
            self._segs[i] = s
        return s

    def directory(self) -> Directory:
        """The live stripes, sorted by ``(user_id, start)`` (cached).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        if self._dir is not None:
            return self._dir
        parts = []  # (seg index per stripe, user, start, count, {c: (off, nwords, enc)})
        from_snapshot = self._from_snapshot(parts)
        self._warm_indexes([i for i in range(len(self._segs)) if i not in from_snapshot])
        for i in range(len(self._segs)):
            if i in from_snapshot:
                continue
            s = self.segment(i)
            parts.append((np.full(s.num_stripes, i, np.int32), s.user_id, s.start, s.count,
                          {c: (s.off[c], s.nwords[c], s.enc[c]) for c in self.schema}))
        cat = lambda f: np.concatenate([f(p) for p in parts]) if parts else np.zeros(0, np.int64)  # noqa: E731
        seg, uid, st, cnt = (cat(lambda p, k=k: p[k]) for k in range(4))
        order = np.lexsort((st, uid))
        uid, st, cnt, seg = uid[order], st[order], cnt[order], seg[order].astype(np.int32)
        cols = {c: tuple(cat(lambda p, c=c, j=j: p[4][c][j])[order] for j in range(3)) for c in self.schema}
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
        if not np.array_equal(totals, L.at(users, np.full(len(users), self.version))) or L.num_users() != len(users):
            raise CorruptionError(f"{self.where}: segments disagree with the length history")
        nblocks = (cnt + self.block_size - 1) // self.block_size
        block0 = np.cumsum(nblocks) - nblocks
        # Columns first: another planner thread that finds ``_dir`` set goes straight to ``_dir_cols``.
        self._dir_cols = cols
        self._dir = Directory(uid, st, cnt, seg, nblocks, block0)
        return self._dir

    TAIL_BYTES = 64 << 10  # an object store reads this much of a segment's end to open it: trailer and index

    def _warm_indexes(self, idx: list) -> None:
        """Read the ends of the segments about to be opened (trailer, index: usually in the last
        ``TAIL_BYTES``) in one concurrent wave, so that opening each costs no request of its own (a
        no-op on a local store)."""
        todo = []
        for i in idx:
            if self._segs[i] is None:
                key, e = self._files[i]
                s = self._segcache.get(key)
                if s is None or s.size != e["size"]:
                    n = min(e["size"], self.TAIL_BYTES)
                    todo.append((e["path"], e["offset"] + e["size"] - n, n))
        if len(todo) > 1:
            self.store.warm(todo)

    def _from_snapshot(self, parts: list) -> set:
        """Add the stripes of files the last checkpoint's directory snapshot lists (and are still
        live) to ``parts`` without reading those files' indexes; returns their segment indices."""
        snap = self.state.directory
        if snap is None:
            return set()
        keys, region, t = snap
        pos = {k: i for i, (k, _) in enumerate(self._files)}
        now = np.array([pos.get(k, -1) for k in keys], np.int64)
        for j, k in enumerate(keys):
            i = int(now[j])
            if i >= 0 and self._segs[i] is None:
                e = self._files[i][1]
                s = self._segcache.get(k)
                if s is None or s.size != e["size"]:
                    s = known_segment(self.store, e["path"], e["offset"], e["size"], int(region[j]))
                    self._segcache[k] = s
                self._segs[i] = s
        seg = now[t["file"]]
        keep = seg >= 0
        parts.append((seg[keep], t["user_id"][keep], t["start"][keep], t["count"][keep],
                      {c: tuple(t[f"{c}.{f}"][keep] for f in ("off", "nwords", "enc")) for c in self.schema}))
        return {int(i) for i in now if i >= 0}

    def snapshot(self) -> tuple:
        """``(file keys, region words, stripe columns)`` of this version, for a checkpoint (host/log.py)."""
        d = self.directory()
        keys = [k for k, _ in self._files]
        region = np.array([self.segment(i).region_words for i in range(len(keys))], np.int64)
        table = {"user_id": d.user_id, "start": d.start, "count": d.count, "file": d.seg.astype(np.int64)}
        for c in self.schema:
            off, nw, enc = self._dir_cols[c]
            table.update({f"{c}.off": off, f"{c}.nwords": nw, f"{c}.enc": enc})
        return keys, region, table

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
        return self.read_blocks_many([column], stripe_idx, block_lo, block_hi)[column]

    def read_blocks_many(self, columns, stripe_idx, block_lo, block_hi) -> dict:
        """``{column: read_blocks(column, ...)}`` for the same blocks of several columns, read together:
        the headers of every column in one ``store.fetch``, then the words of every column in one more
        (on an object store: two waves of concurrent GETs per batch, instead of two per column). What
        does not depend on the column (which blocks, of which segments, where they go) is worked out
        once for all of them (``_BlockPlan``)."""
        columns = list(dict.fromkeys(columns))
        for c in columns:
            if c not in self.schema:
                raise SchemaError(f"unknown column {c!r}; schema has {list(self.schema)}")
        plan = self._block_plan(stripe_idx, block_lo, block_hi)
        phases = {c: self._read_phases(c, plan) for c in columns}
        wanted = {c: next(g) for c, g in phases.items()}
        out = {}
        while wanted:
            self.store.fetch([r for reqs in wanted.values() for r in reqs])
            nxt = {}
            for c in wanted:
                try:
                    nxt[c] = next(phases[c])
                except StopIteration as e:
                    out[c] = e.value
            wanted = nxt
        return out

    def _block_plan(self, stripe_idx, block_lo, block_hi) -> "_BlockPlan":
        """The column-independent half of a read: the requested blocks, their stripes, segments and
        places, checked against the directory (``SchemaError`` when out of bounds)."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64).reshape(-1)
        lo = np.broadcast_to(np.asarray(block_lo, dtype=np.int64), si.shape)
        hi = np.broadcast_to(np.asarray(block_hi, dtype=np.int64), si.shape)
        if si.size and (si.min() < 0 or si.max() >= len(d) or (lo < 0).any() or (hi < lo).any() or (hi > d.nblocks[si]).any()):
            raise SchemaError("read_blocks: stripe index or block range out of bounds")
        bs = self.block_size
        nblk = hi - lo
        bstripe = np.repeat(si, nblk)
        j = ranges(lo, nblk)
        bseg = d.seg[bstripe]
        order = np.argsort(bseg, kind="stable")
        bounds = np.flatnonzero(np.diff(bseg[order])) + 1
        groups = [(int(bseg[g[0]]), g) for g in np.split(order, bounds) if len(g)]
        req_first = np.cumsum(nblk) - nblk
        pool, pool_base = self._small_pool()
        req_seg = d.seg[si]
        small_req = pool_base[req_seg] >= 0 if len(si) else np.zeros(0, bool)
        # per large segment: the requests (stripe ranges) that have blocks in it
        large = [(s, g, _nonempty(np.unique(np.searchsorted(req_first, g, side="right") - 1), nblk))
                 for s, g in groups if pool_base[s] < 0]
        return _BlockPlan(
            si=si, lo=lo, nblk=nblk, K=int(nblk.sum()), bstripe=bstripe, j=j, bseg=bseg, large=large,
            cnt=np.minimum(bs, d.count[bstripe] - j * bs), req_first=req_first, pool=pool, pool_base=pool_base,
            small_reqs=np.flatnonzero(small_req & (nblk > 0)), small_blocks=np.flatnonzero(pool_base[bseg] >= 0),
            stripe_hdr_words=codec.HDR_WORDS * ((d.count[bstripe] + bs - 1) // bs), pool_base_req=pool_base[req_seg],
        )

    def _read_phases(self, column: str, p: "_BlockPlan"):
        """``read_blocks`` of one column as a generator over a ``_BlockPlan``: yields the reads it needs
        (``store.fetch`` requests), twice (headers, then words), and returns ``(hdr, words, nbytes)``."""
        d = self.directory()
        off_c, nw_c, _ = self._dir_cols[column]
        si, lo, nblk, K, req_first = p.si, p.lo, p.nblk, p.K, p.req_first
        bstripe, j, bseg = p.bstripe, p.j, p.bseg
        blob_w = off_c[bstripe]
        blob_len = nw_c[bstripe]
        hdr4 = np.empty((K, codec.HDR_WORDS), dtype=np.int64)
        # headers: the requested blocks of one stripe are adjacent (HDR_WORDS words each): one range per
        # request. Small segments are gathered in one pass over their regions held in memory; a large one
        # is read by coalesced ranges (Segment.read_words), one segment at a time.
        pool = p.pool
        reqs = p.small_reqs
        if len(reqs):
            idx = ranges(p.pool_base_req[reqs] + off_c[si[reqs]] + codec.HDR_WORDS * lo[reqs], codec.HDR_WORDS * nblk[reqs])
            hdr4[ranges(req_first[reqs], nblk[reqs])] = pool[idx].reshape(-1, codec.HDR_WORDS)
        # one fetch for the headers of every large segment (concurrent requests on an object store); an
        # object store also reads whole the blobs under ``readahead_bytes`` in the same requests, so
        # that their words, asked for next, come from its cache: one request per run, not two
        ahead = int(getattr(self.store, "readahead_bytes", 0) or 0)
        pending, fetch = [], []
        for s, g, reqs in p.large:
            seg = self.segment(s)
            rq, finish = seg.words_request(off_c[si[reqs]] + codec.HDR_WORDS * lo[reqs], codec.HDR_WORDS * nblk[reqs])
            fetch += rq
            pending.append((reqs, finish))
            if ahead:
                whole = np.unique(si[reqs][nw_c[si[reqs]] * 8 <= ahead])
                fetch += [(seg.path, seg.base + 8 * o, memoryview(bytearray(8 * n)))
                          for o, n in zip(off_c[whole].tolist(), nw_c[whole].tolist())]
        yield fetch
        for reqs, finish in pending:
            hdr4[ranges(req_first[reqs], nblk[reqs])] = finish().reshape(-1, codec.HDR_WORDS)
        meta = hdr4[:, 2]
        w = meta & 255
        woff = meta >> 8
        nw = codec.words_for(p.cnt, np.minimum(w, 64))
        bad = (meta < 0) | (w > 64) | (woff < p.stripe_hdr_words) | (woff + nw > blob_len)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(f"segment {self.segment(int(bseg[k])).name}: column {column!r} block {int(j[k])} of a stripe of user {int(d.user_id[bstripe[k]])} has an invalid header")
        out_off = np.cumsum(nw) - nw
        total = int(nw.sum())
        words = np.zeros(total + 1, dtype=np.int64)
        b = p.small_blocks
        if len(b):
            words[ranges(out_off[b], nw[b])] = pool[ranges(p.pool_base[bseg[b]] + blob_w[b] + woff[b], nw[b])]
        pending, fetch = [], []
        for s, g, _ in p.large:
            rq, finish = self.segment(s).words_request(blob_w[g] + woff[g], nw[g])
            fetch += rq
            pending.append((g, finish))
        yield fetch
        for g, finish in pending:
            words[ranges(out_off[g], nw[g])] = finish()
        h = codec.block_hash(hdr4[:, 0], hdr4[:, 1], meta, words[:total], nw)
        bad = h != hdr4[:, 3].view(np.uint64)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(
                f"segment {self.segment(int(bseg[k])).name}: column {column!r} block {int(j[k])} of a stripe of user "
                f"{int(d.user_id[bstripe[k]])} fails its checksum ({int(bad.sum())} bad block(s))"
            )
        hdr = hdr4[:, :3].copy()
        hdr[:, 2] = (out_off << 8) | w
        io = getattr(self.store, "io", None)
        if io is not None:
            io.add(blocks_read=K, block_runs=int((nblk > 0).sum()))
        return hdr, words, 8 * (codec.HDR_WORDS * K + total)

    def _small_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The blob regions of every small segment back to back (read once per version), and each
        segment's word offset in it (-1 for a large segment, read by ranges instead)."""
        if self._pool is None:
            base = np.full(len(self._segs), -1, np.int64)
            regions, at = [], 0
            todo = [s for s in (self.segment(i) for i in range(len(self._segs))) if s.small and s._region is None]
            if todo:  # one fetch (concurrent on an object store) for every small region not read yet
                bufs = [np.empty(s.region_words, np.int64) for s in todo]
                self.store.fetch([(s.path, s.base, memoryview(b).cast("B")) for s, b in zip(todo, bufs)])
                for s, b in zip(todo, bufs):
                    s._region = b
            for i in range(len(self._segs)):
                s = self.segment(i)
                if s.small:
                    regions.append(s.region())
                    base[i] = at
                    at += s.region_words
            self._pool = (np.concatenate(regions) if regions else np.zeros(0, np.int64), base)
        return self._pool

    def decode_stripes(self, column: str, stripe_idx) -> np.ndarray:
        """All values of ``column`` of the given directory stripes, concatenated in the given order (int64)."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64)
        hdr, words, _ = self.read_blocks(column, si, np.zeros(len(si), np.int64), d.nblocks[si])
        nblk = d.nblocks[si]
        j = ranges(np.zeros(len(si), np.int64), nblk)
        cnt = np.minimum(self.block_size, np.repeat(d.count[si], nblk) - j * self.block_size)
        return codec.decode_blocks(hdr, words, cnt)


@dataclass
class _BlockPlan:
    """What a read of blocks ``[lo[i], lo[i] + nblk[i])`` of stripes ``si`` needs, whatever the column:
    per block its stripe, index in the stripe, value count and segment; the segments read by ranges
    (``large``: each with its blocks and the requests that touch them); where each request's blocks
    go (``req_first``); the small segments' pooled regions."""

    si: np.ndarray
    lo: np.ndarray
    nblk: np.ndarray
    K: int
    bstripe: np.ndarray
    j: np.ndarray
    bseg: np.ndarray
    large: list
    cnt: np.ndarray
    req_first: np.ndarray
    pool: np.ndarray
    pool_base: np.ndarray
    small_reqs: np.ndarray
    small_blocks: np.ndarray
    stripe_hdr_words: np.ndarray
    pool_base_req: np.ndarray


def _nonempty(reqs: np.ndarray, nblk: np.ndarray) -> np.ndarray:
    return reqs[nblk[reqs] > 0]
