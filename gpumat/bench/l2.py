"""The history kernel's memory traffic, counted on the CPU (``profiling/l2_model.py`` is the command;
``gpumat bench kernels --static`` reports the L2 floor it gives): 32-byte sectors each warp-wide
load and store touches, what an SM's L1 keeps of them, what reaches L2.

On the H200 (2026-12-04, ``docs/results/h200-2026-12-04/ncu_long_call*.txt``) the long tenant's
fastest launches ran with L2 at 90-92% of its throughput and DRAM at 32%: on batches with
dictionaries, L2 sets the kernel's time. The model:

- every load the kernel issues for a tile, per warp instruction, at the addresses the kernel
  computes (``kernels/triton_decode_gather.py``, the GPU shape: one tile at a time, a pair's
  descriptors loaded before the pair's decode, lane ``l`` of step ``i`` at position
  ``lo + l + 32 i``; a block's words (unmasked where the launcher takes ``SLACK``), a PATCH block's
  aux words, bitmap and exceptions read from the staged words themselves), the tile descriptors,
  the block headers, the dictionary gathers of live lanes at the codes the words hold, the stores;
- an L1 per SM (128-byte lines, 32-byte sectors filled on a miss, least recently used out; 224
  KiB, what ncu reports the kernel gets), shared by the 32 programs resident on it, their
  instructions interleaved round robin; stores write through (no L1 allocation);
- L2: the sectors of loads that miss L1 and every stored sector; requests, the distinct 128-byte
  lines an instruction sends to L2.

Checked against ncu's run of the long bench batch (``NCU_LONG``: L1 hit rate of global loads,
bytes used a sector loaded and stored); that run's time and L2 share give the rate at 100%
(``l2_rates``), which prices any other batch (``l2_floor_us``). Batches with DELTA, RUN or RADIX
blocks are not modelled (``GpumatError``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from gpumat.core.errors import GpumatError

SECTOR, LINE = 32, 128
# The L1 a program of this kernel gets on an H200: 256 KiB less the 32 KiB shared-memory carve-out
# ncu reports for it ("Shared Memory Configuration Size 32.77 KB")
L1_KIB = 224
D2D_BPS = 4250e9  # the D2D copy the same H200 session measured (read + write)
LANES, STEPS = 32, 4
SMS = 132  # an H100 / H200's
RESIDENT = 32  # one-warp programs an SM of compute capability 9.0 holds
# The H200's ncu run the model is checked against and its L2 rate fitted to (call 3, launch (1, 2, 1),
# the long tenant's bench batch, 7,708,133 events in its tiles)
NCU_LONG = {"us": 76.29, "l2_throughput_pct": 91.81, "l1_hit_pct": 22.20, "ld_bytes_per_sector_pct": 35.30,
            "st_bytes_per_sector_pct": 87.56, "dram_read_mb": 49.22, "max_bandwidth_pct": 72.63,
            "shared_memory_config_kb": 32.77, "launch": [1, 2, 1], "history_events": 7_708_133,
            "source": "docs/results/h200-2026-12-04/ncu_long_call3.txt"}


class L1:
    """An L1 of ``lines`` 128-byte lines, least recently used out; a line holds the sectors filled."""

    def __init__(self, kib: int):
        self.lines = kib * 1024 // LINE
        self.tags: OrderedDict[int, int] = OrderedDict()

    def load(self, sectors: np.ndarray, first: bool = False) -> list:
        """Look ``sectors`` up (one warp instruction); fill the misses; return the sectors that
        missed. ``first``: an evict-first load (its lines go out next)."""
        if self.lines == 0:
            return sectors.tolist()
        missed = []
        for s in sectors.tolist():
            line, bit = s >> 2, 1 << (s & 3)
            m = self.tags.get(line)
            if m is None:
                missed.append(s)
                self.tags[line] = bit
                if len(self.tags) > self.lines:
                    self.tags.popitem(last=False)
                if first:
                    self.tags.move_to_end(line, last=False)
                continue
            if not m & bit:
                missed.append(s)
                self.tags[line] = m | bit
            if not first:
                self.tags.move_to_end(line)
        return missed


class Layout:
    """Byte addresses of the staged arrays, each from a 512-byte boundary (the caching allocator's)."""

    def __init__(self):
        self.next = 1 << 20
        self.base = {}

    def __call__(self, name: str, nbytes: int) -> int:
        if name not in self.base:
            self.base[name] = self.next
            self.next += (nbytes + 1023) // 512 * 512
        return self.base[name]


def _sectors(addr: np.ndarray, size: int) -> np.ndarray:
    """The distinct sectors ``size``-byte accesses at ``addr`` touch."""
    s = np.concatenate([addr >> 5, (addr + size - 1) >> 5])
    return np.unique(s)


def block_codes(col, blk: int, bs: int = 128, words_col=None) -> np.ndarray | None:
    """The dictionary indices of block ``blk`` of DICT column ``col`` (blocks of ``bs`` values), as the
    kernel computes them: the value line ``base + slope k`` plus the block's packed bits, mod 2^32,
    clamped to the column's dictionaries; None for a plain block (no gather); a flagged block of
    another kind (PATCH, RUN, DELTA blocks of codes) is ``GpumatError``.
    ``words_col``: the column whose words (and block kinds) ``col``'s are, for a borrowing column."""
    wc = col if words_col is None else words_col
    meta = int(wc.hdr[blk, 2])
    if not meta & 0x80:
        return None
    w, off = meta & 0x7F, (meta >> 8) * 2
    aux = int(wc.words.view(np.uint32)[off - 2])
    if aux & 0x27 != 3:  # (kind 3, not a PATCH / RUN / DELTA block of codes: aux bit 32)
        raise GpumatError(f"block {blk}: aux word {aux:#x} (not a DICT block) is not modelled")
    k = np.arange(bs)
    p = k * w
    w32 = np.zeros((bs * w >> 5) + 2, np.uint64)  # (a block's last words may end the staged words)
    have = wc.words.view(np.uint32)[off:off + len(w32)]
    w32[:len(have)] = have
    two = w32[p >> 5] | (w32[(p >> 5) + 1] << np.uint64(32))
    bits = ((two >> (p & 31).astype(np.uint64)) & np.uint64((1 << w) - 1)).astype(np.int64)
    line = (int(col.hdr[blk, 0]) + int(col.hdr[blk, 1]) * k + bits) & 0xFFFFFFFF
    return np.minimum(line, len(col.dicts) - 1)


def tile_program(staged, t: int, lay: Layout, codes: dict, col_kinds: dict, dict_bytes: int = 8,
                 slack: bool = False) -> tuple[list, list]:
    """The warp instructions of tile ``t``: ``(descriptors, the rest)``, each an instruction
    ``(what, sectors, requested_bytes, store, streamed)`` (requested: the distinct bytes the lanes
    ask for; streamed: data read once). ``codes``: per DICT or borrowing column, its block's codes by
    position in the block (None: not a DICT block); ``dict_bytes``: a dictionary entry's (8, or 4
    for 32-bit entries); ``slack``: the value words' loads unmasked (``SLACK``: dead lanes load too, as the launcher has
    the long tenant's batches do; their dead lanes gather too, the entry the next block's bits name,
    here entry 0). Where value loads are masked, dead lanes gather nothing."""
    desc = []
    ex = int(staged.tile_ex[t])
    for name in ("tile_block", "tile_lo", "tile_cnt", "tile_out", "tile_ex"):
        a = lay(name, 8 * len(staged.tile_block)) + 8 * t
        desc.append(("descriptors", np.array([a >> 5]), 8, False, False))
    desc.append(("descriptors", np.array([(lay("request_ts", 8 * len(staged.request_ts)) + 8 * ex) >> 5]), 8, False, False))
    blk, lo, cnt, row = (int(staged.tile_block[t]), int(staged.tile_lo[t]), int(staged.tile_cnt[t]),
                         int(staged.tile_out[t]))
    lane = np.arange(LANES)
    heads, loads, stores = [], [], []
    for name, col in staged.columns.items():
        hb = lay(name + ".hdr", col.hdr.nbytes)
        kind = col_kinds[name]
        for j in range(1 if kind == "borrow" else 3):  # (a borrowing column loads its base only)
            heads.append(("headers", np.array([(hb + 8 * (3 * blk + j)) >> 5]), 8, False, False))
        base, slope, meta = (int(v) for v in col.hdr[blk])
        w, off = meta & 0x7F, (meta >> 8) * 2
        wb = lay(name + ".words", col.words.nbytes)
        w32 = col.words.view(np.uint32)
        if kind == "borrow":  # the lender's codes: no words of its own to load
            w = 0
        for i in range(STEPS):
            q = lo + lane + LANES * i
            live = lane + LANES * i < cnt
            if not live.any():
                continue
            if w:
                word = off + ((q * w) >> 5)
                lv = np.ones_like(live) if slack else live
                for d in (0, 1):
                    addr = wb + 4 * (word + d)
                    loads.append(("words", _sectors(addr[lv], 4), 4 * len(np.unique(word[lv])), True))
                if w > 32 and (col.dtype == "int64" or not col.project):  # (a 64-bit value over 32 bits:
                    # a third word where its bits reach it; an int32 output needs only the low 32)
                    third = live & (((q * w) & 31) + w > 64)
                    if third.any():
                        loads.append(("words", _sectors(wb + 4 * (word[third] + 2), 4), 4 * len(np.unique(word[third])), True))
            if kind == "patch":
                alo = int(w32[off - 2])
                if i == 0:
                    loads.append(("aux", np.array([(wb + 4 * (off - 2)) >> 5]), 4, False))
                    loads.append(("aux", np.array([(wb + 4 * (off - 1)) >> 5]), 4, False))
                bmb = off + ((alo >> 8) & 1023)
                bword = bmb + ((lo + lane) >> 5) + i
                loads.append(("bitmap", _sectors(wb + 4 * bword[live], 4), 4 * len(np.unique(bword[live])), True))
                bits = np.unpackbits(w32[bmb:bmb + 4].view(np.uint8), bitorder="little")[:128]
                rank = np.cumsum(bits) - bits
                hit = live & (bits[np.minimum(q, 127)] == 1)
                if hit.any():
                    xa = wb + 4 * (off + ((alo >> 18) & 1023) + rank[q[hit]])
                    loads.append(("exceptions", _sectors(xa, 4), 4 * int(hit.sum()), True))
            if kind in ("dict", "borrow") and codes[name] is not None:
                dbase = lay(name + ".dicts", col.dicts.nbytes)
                code = codes[name][q[live]] if not slack else np.concatenate(
                    [codes[name][q[live]], np.zeros(int((~live).sum()), np.int64)])  # (dead lanes: an entry, say 0)
                db = dict_bytes
                loads.append(("dictionary", _sectors(dbase + db * code, db), db * len(np.unique(code)), False))
            if col.project:
                esz = 8 if col.dtype == "int64" else 4
                ob = lay(name + ".out", esz * int(staged.offsets[-1]))
                sa = ob + esz * (row + lane + LANES * i)
                stores.append(("stores", _sectors(sa[live], esz), esz * int(live.sum()), True))
    # the headers, then every load of the tile before any store (the kernel's order), in column order
    body = heads + [(w, s, b, False, st) for w, s, b, st in loads] + [(w, s, b, True, False) for w, s, b, st in stores]
    return desc, body


def column_kinds(staged) -> dict:
    """Per column: ``dict`` (DICT blocks), ``borrow`` (another column's words: its codes, DESIGN §1
    "Borrowed codes"), ``patch`` (PATCH blocks), ``for`` (plain blocks). The bench's column sets
    hold only these; DELTA, RUN and RADIX blocks (a lane's positions, or its word, found otherwise)
    are not modelled: ``GpumatError``."""
    kinds, seen = {}, {}
    for name, col in staged.columns.items():
        flagged = np.flatnonzero(col.hdr[:, 2] & 0x80)
        aux = set(np.unique(col.words.view(np.uint32)[2 * (col.hdr[flagged, 2] >> 8) - 2] & 7).tolist())
        if id(col.words) in seen:
            kinds[name] = "borrow"
        elif col.dicts is not None and aux <= {3}:
            kinds[name] = "dict"
        elif len(flagged) and aux == {1} and col.dicts is None:
            kinds[name] = "patch"
        elif not len(flagged):
            kinds[name] = "for"
        else:
            raise GpumatError(f"column {name!r}: blocks of aux kinds {sorted(aux)} are not modelled")
        seen.setdefault(id(col.words), name)
    return kinds


def moved_bytes(staged, dict_bytes: int = 8) -> int:
    """What the batch moves, as ``gpumat bench kernels`` counts it (staged input and projected
    output), its dictionaries at ``dict_bytes`` an entry."""
    out = sum(staged.total * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
    dicts = sum(len(c.dicts) for c in staged.columns.values() if c.dicts is not None)
    return int(staged.staged_bytes() + out - (8 - dict_bytes) * dicts)


STREAM_MODES = ("cached", "evict_first", "bypass")


def simulate(staged, n_sms: int, l1_kib: int, seq: int, streams: str = "cached", dict_bytes: int = 8,
             slack: bool | None = None) -> dict:
    """Run ``n_sms`` SMs' share of the batch's tiles through the model; per event totals: sectors and
    requests (distinct 128-byte lines an instruction) reaching L2, by what asks for them. Programs
    of ``seq`` tiles, one at a time, their descriptors loaded in pairs ahead of the pair's decode
    (``_history_kernel``'s GPU shape). ``streams``: how the loads of data read once (words, bitmaps,
    exceptions) use L1: ``cached`` (as the kernel loads them now), ``evict_first`` (their lines
    the next out: a bound, since a real L1 picks among a set's lines only), ``bypass`` (L2 only, as
    ``cache_modifier=".cg"``). ``slack``: unmasked value loads (default: as the launcher decides,
    ``SLACK_MIN_BUCKET``)."""
    if streams not in STREAM_MODES:
        raise ValueError(f"streams must be one of {STREAM_MODES}")
    if staged.block_size > LANES * STEPS:
        raise GpumatError(f"blocks of {staged.block_size} values (the LOOP path) are not modelled")
    if slack is None:
        from gpumat.kernels.triton_decode_gather import SLACK_MIN_BUCKET

        slack = max(int(staged.total // max(staged.batch_size, 1)).bit_length() - 1, 0) >= SLACK_MIN_BUCKET
    kinds = column_kinds(staged)
    words_of = {id(c.words): n for n, c in reversed(list(staged.columns.items()))}
    lender = {n: words_of[id(c.words)] for n, c in staged.columns.items()}  # (its own name, but a borrower's)
    n_tiles = len(staged.tile_block)
    n_prog = -(-n_tiles // seq)
    lay = Layout()
    per_what: dict[str, list] = {}
    l1_loads = l1_miss = req_ld = req_st = sec_ld = sec_st = events = 0
    for sm in range(n_sms):
        progs = list(range(sm, n_prog, SMS))
        cache = L1(l1_kib)
        for w0 in range(0, len(progs), RESIDENT):
            progs_ins = []
            for p in progs[w0:w0 + RESIDENT]:
                tiles = list(range(p * seq, min(p * seq + seq, n_tiles)))
                parts = []
                for t in tiles:
                    events += int(staged.tile_cnt[t])
                    blk = int(staged.tile_block[t])
                    codes = {name: block_codes(staged.columns[name], blk, staged.block_size, staged.columns[lender[name]])
                             for name, k in kinds.items() if k in ("dict", "borrow")}
                    parts.append(tile_program(staged, t, lay, codes, kinds, dict_bytes, slack))
                ins = []
                for g in range(0, len(parts), 2 if seq > 1 else 1):  # a pair's descriptors, then each tile
                    pair = parts[g:g + (2 if seq > 1 else 1)]
                    ins += [x for d, _ in pair for x in d] + [x for _, b in pair for x in b]
                progs_ins.append(ins)
            # round robin over the resident programs, one instruction each
            for j in range(max(len(s) for s in progs_ins)):
                for s in progs_ins:
                    if j >= len(s):
                        continue
                    what, sectors, req, store, stream = s[j]
                    rec = per_what.setdefault(what, [0, 0, 0, 0])  # sectors asked, reaching L2, instructions, L2 requests
                    rec[0] += len(sectors)
                    rec[2] += 1
                    if store:
                        rec[1] += len(sectors)
                        rec[3] += len({x >> 2 for x in sectors.tolist()})
                        req_st += req
                        sec_st += len(sectors)
                    else:
                        if stream and streams == "bypass":
                            missed = sectors.tolist()
                        else:
                            missed = cache.load(sectors, first=stream and streams == "evict_first")
                        rec[1] += len(missed)
                        rec[3] += len({x >> 2 for x in missed})
                        l1_loads += len(sectors)
                        l1_miss += len(missed)
                        req_ld += req
                        sec_ld += len(sectors)
    l2 = sum(r[1] for r in per_what.values())
    return {
        "events": events, "tiles": sum(len(range(sm, n_prog, SMS)) for sm in range(n_sms)) * seq, "slack": slack,
        "l2_sectors_per_event": l2 / events,
        "l2_requests_per_event": sum(r[3] for r in per_what.values()) / events,
        "l2_sectors_by_what_per_event": {k: v[1] / events for k, v in per_what.items()},
        "l1_sectors_by_what_per_event": {k: v[0] / events for k, v in per_what.items()},
        "l1_hit_by_what_pct": {k: 100.0 * (1 - v[1] / v[0]) for k, v in per_what.items() if v[0] and k != "stores"},
        "l1_hit_pct": 100.0 * (1 - l1_miss / max(l1_loads, 1)),
        # (were ncu's hit rate over stores' sectors too, each a miss)
        "l1_hit_pct_with_stores": 100.0 * (l1_loads - l1_miss) / max(l1_loads + sec_st, 1),
        "ld_bytes_per_sector_pct": 100.0 * req_ld / max(SECTOR * sec_ld, 1),
        "st_bytes_per_sector_pct": 100.0 * req_st / max(SECTOR * sec_st, 1),
    }


def l2_rates(calibration: dict) -> dict:
    """L2's sectors and requests a second at 100% of its throughput, from ``simulate``'s figures for
    the long tenant's bench batch (``calibration``; a batch of the same columns and shape at any
    scale: per event) and ncu's run of it (``NCU_LONG``)."""
    busy = NCU_LONG["l2_throughput_pct"] / 100 * NCU_LONG["us"] * 1e-6
    n = NCU_LONG["history_events"]
    return {"sectors_per_s": calibration["l2_sectors_per_event"] * n / busy,
            "requests_per_s": calibration["l2_requests_per_event"] * n / busy}


def l2_floor_us(result: dict, events: int, rates: dict) -> dict:
    """The L2 floors of a batch of ``events`` history events whose ``simulate`` figures are
    ``result``: by sectors and by requests (which of the two L2's limit follows, the counters do not
    yet say: they differ by up to about 10% on the bench's batches)."""
    return {"l2_floor_us": result["l2_sectors_per_event"] * events / rates["sectors_per_s"] * 1e6,
            "l2_floor_by_requests_us": result["l2_requests_per_event"] * events / rates["requests_per_s"] * 1e6}
