"""gpumat/core/staged.py, the contract between host and kernels: packing into one aligned buffer and
back (``pack``/``from_flat``/``to``), the sizes a host-built batch carries to its device copy, the
passes a backend runs, the leakage modes and the array names of the layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpumat.core.errors import GpumatError, SchemaError
from gpumat.core.staged import (
    COLUMN_PARTS,
    EXAMPLE_FIELDS,
    PACK_ALIGN,
    TILE_FIELDS,
    StagedBatch,
    StagedColumn,
    column_array_names,
    leakage_mode,
)
from test_decode_gather import random_batch


def tiny(check_leakage=True, ts_projected=False) -> StagedBatch:
    """Two examples by hand: 3 and 1 history events from two blocks, tails of 1 and 0 events."""
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    hdr = np.array([[10, 1, 8 << 8], [50, 0, 8 << 8]], dtype=np.int64)  # w = 0: constant blocks
    cols = {"item": StagedColumn("item", "int32", hdr, i64(0), i64(7)),
            "ts": StagedColumn("ts", "int64", hdr.copy(), i64(0), i64(99), project=ts_projected)}
    return StagedBatch(8, cols, offsets=i64(0, 4, 5), hist_len=i64(3, 1), tail_src=i64(0, 1), tail_len=i64(1, 0),
                       request_ts=i64(100, 100), tile_block=i64(0, 1), tile_lo=i64(5, 0), tile_cnt=i64(3, 1),
                       tile_out=i64(0, 4), tile_ex=i64(0, 1), check_leakage=check_leakage, nbytes_read=123)


def test_pack_aligns_every_array():
    # Triton specializes pointer arguments on 16-byte alignment: a view at an odd word offset of the
    # packed buffer would make each new batch layout a new compilation on the GPU.
    staged, _, _ = random_batch(3, 7, 50, 300, 5, ("ts", "item", "act"), True)
    flat, layout = staged.pack()
    assert flat.numel() == staged.packed_numel()
    assert all(off % PACK_ALIGN == 0 for off, _ in layout.values()), layout
    assert all((flat[off:].data_ptr() % 16) == 0 for off, _ in layout.values())  # 16-byte aligned views
    back = staged.from_flat(flat, layout)
    for (name, a), (_, b) in zip(staged.arrays(), back.arrays()):
        assert np.array_equal(np.asarray(a), b.numpy()), name


def test_pack_refuses_tiles_outside_the_blocks_or_examples():
    """The kernels trust the tile descriptors (the host builds them; their own checks cover block
    headers, which come from storage): ``pack`` refuses a tile outside the staged blocks, its block's
    values or the examples before the batch crosses the bus."""
    good = tiny()
    good.pack()
    for field, t, v in (("tile_block", 1, 2), ("tile_block", 0, -1), ("tile_lo", 0, -1), ("tile_lo", 0, 6),
                        ("tile_cnt", 1, 9), ("tile_cnt", 0, -1), ("tile_ex", 1, 2), ("tile_ex", 0, -1)):
        bad = tiny()
        getattr(bad, field)[t] = v
        with pytest.raises(GpumatError, match=f"tile {t} "):
            bad.pack()
    edge = tiny()
    edge.tile_lo[1], edge.tile_cnt[1] = 7, 1  # the block's last value: fine
    edge.pack()
    bare = tiny()  # a batch that stages no column (a tenant that projects none, unchecked) reads no block
    bare.columns = {}
    bare.pack()


def test_arrays_and_layout_names():
    staged = tiny()
    names = [n for n, _ in staged.arrays()]
    assert names == [*EXAMPLE_FIELDS, *TILE_FIELDS, *column_array_names("item"), *column_array_names("ts")]
    assert column_array_names("item") == tuple(f"item.{p}" for p in COLUMN_PARTS) == ("item.hdr", "item.words", "item.tail_values")
    _, layout = staged.pack()
    assert list(layout) == names and layout["item.hdr"][1] == (2, 3)
    # staged_bytes counts the arrays, not the alignment padding
    assert staged.staged_bytes() == 8 * sum(np.asarray(a).size for _, a in staged.arrays()) < 8 * staged.packed_numel()


def test_pack_into_a_reusable_buffer():
    staged = tiny()
    need = staged.packed_numel()
    big = torch.full((need + 40,), -1, dtype=torch.int64)
    flat, layout = staged.pack(big)
    assert flat.numel() == need and flat.data_ptr() == big.data_ptr()  # packed in place: a view of the buffer
    small = torch.zeros(need - 1, dtype=torch.int64)
    flat2, _ = staged.pack(small)
    assert flat2.data_ptr() != small.data_ptr() and flat2.numel() == need  # too small: a new buffer
    for (name, a), (_, b) in zip(staged.from_flat(flat, layout).arrays(), staged.from_flat(flat2, layout).arrays()):
        assert torch.equal(a, b), name  # the same arrays (the alignment padding is not written)


def test_from_flat_views_the_packed_buffer_and_keeps_it():
    staged = tiny()
    assert staged.packed is None  # the planner's batch: separate NumPy arrays
    moved = staged.to("cpu")
    assert moved.packed is not None and moved.packed.numel() == staged.packed_numel()
    base = moved.packed.data_ptr()
    for name, a in moved.arrays():
        assert torch.is_tensor(a) and base <= a.data_ptr() < base + 8 * moved.packed.numel(), name
    assert moved.check_leakage == staged.check_leakage and moved.nbytes_read == 123
    assert [(c.name, c.dtype, c.project) for c in moved.columns.values()] == [
        (c.name, c.dtype, c.project) for c in staged.columns.values()]


def test_known_sizes_travel_with_the_device_copy():
    staged = tiny()
    assert staged.known_total is None and staged.total == 5 and staged.history_events == 4
    moved = staged.to("cpu")
    assert (moved.known_total, moved.known_history) == (5, 4)  # from the host arrays, free
    moved.offsets[-1] = 999  # a device batch never reads its sizes back: they are carried
    assert moved.total == 5 and moved.history_events == 4
    # A template (empty arrays, as DALI's consumer builds one) carries only what it was told.
    empty = np.zeros(0, dtype=np.int64)
    template = StagedBatch(8, {}, *(empty for _ in EXAMPLE_FIELDS + TILE_FIELDS), known_total=5)
    flat, layout = staged.pack()
    back = template.from_flat(flat, {k: v for k, v in layout.items() if "." not in k})
    assert back.known_total == 5 and back.known_history is None and back.history_events == 4


@pytest.mark.parametrize("check, ts_projected, want", [
    (True, False, [("item", False), ("ts", True)]),  # ts staged for the check only
    ("inclusive", False, [("item", False), ("ts", True)]),
    (False, False, [("item", False)]),  # neither projected nor checked: no pass
    (None, True, [("item", False), ("ts", False)]),
    ("strict", True, [("item", False), ("ts", True)]),
])
def test_passes(check, ts_projected, want):
    staged = tiny(check, ts_projected)
    assert [(name, c) for name, _, c in staged.passes()] == want
    assert staged.inclusive == (check == "inclusive")


def test_leakage_modes():
    assert [leakage_mode(x) for x in (True, np.bool_(True), "strict", "inclusive", False, None, np.bool_(False))] == [
        "strict", "strict", "strict", "inclusive", None, None, None]
    for bad in ("yes", 1, 0, "Strict", []):
        with pytest.raises(SchemaError, match="check_leakage"):
            leakage_mode(bad)
