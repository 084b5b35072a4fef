"""Run by ``tests/test_decode_gather.py`` in a child process: the history kernel's unmasked value
loads (its SLACK path) under the interpreter, each column's words in a region of its own with
exactly the room the launcher asks for (``block + 1`` int64 words) and then a page no access is
allowed to, so that a read past the room faults (the child dies of SIGSEGV) where, in a packed
buffer, it would have read the next array unseen. Prints ``ok`` when every value and leakage flag
equals the reference's (or, for dead tiles, the masked path's).

    python tests/guard_words.py CASE      # CASE: plain, aux-one, dict, deadex-one, bs64
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpumat.kernels.triton_decode_gather as tdg  # noqa: E402
import test_decode_gather as T  # noqa: E402

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_KEEP = []


def guarded(words: np.ndarray, room: int) -> torch.Tensor:
    """``words`` in an mmap region whose storage is ``room`` int64 words longer (garbage), then a
    page with no access."""
    n = words.size
    nbytes = (n + room) * 8
    pages = -(-nbytes // PAGE) + 1
    mm = mmap.mmap(-1, pages * PAGE)
    _KEEP.append(mm)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    assert _libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) == 0
    a = np.frombuffer(mm, dtype=np.int64, count=n + room, offset=(pages - 1) * PAGE - nbytes)
    a[:n] = words
    a[n:] = 0x7A7A7A7A7A7A7A7A  # not zeros: no value may depend on the room
    return torch.from_numpy(a)[:n]


def main(case: str) -> None:
    bs = 64 if case == "bs64" else 128
    staged, expected, exp_viol = T.random_batch(11 + bs, 12, 2 * bs + 3, 3 * bs, 9, ("item", "act", "ts"), True,
                                                bs=bs, aux=case.startswith("aux"), dicts=case == "dict")
    dev = staged.to("cpu")
    if case.startswith("deadex"):  # tiles whose example is out of range: dead, their lo kept
        te = dev.tile_ex.clone()
        te[::3] = 10**6
        dev = dataclasses.replace(dev, tile_ex=te)
    launch = {"tiles_per_prog": 1} if case.endswith("-one") else {}

    def run(room, slack_min):
        tdg.SLACK_MIN_BUCKET = slack_min
        cols = {n: dataclasses.replace(c, words=guarded(c.words.numpy(), room)) for n, c in dev.columns.items()}
        d = dataclasses.replace(dev, columns=cols)
        out = {c: torch.full((staged.total,), -77, dtype=getattr(torch, col.dtype))
               for c, col in staged.columns.items() if col.project}
        return tdg.materialize_staged_triton(d, total=staged.total, out=out, **launch)

    rooms = []
    real = tdg._room_after
    tdg._room_after = lambda t: rooms.append(real(t)) or rooms[-1]
    values, viol = run(min(bs, tdg.MAX_LANES) + 1, -1)  # SLACK taken, with exactly the room it asks for
    assert rooms and min(rooms) == min(bs, tdg.MAX_LANES) + 1, rooms
    if case.startswith("deadex"):  # the dead tiles' values are unspecified: the masked path's, with no room
        want, want_viol = run(0, 99)
        want = {c: v.numpy() for c, v in want.items()}
    else:
        want, want_viol = expected, np.asarray(exp_viol)
    for c, w in want.items():
        assert np.array_equal(values[c].numpy(), w), c
    assert np.array_equal(viol.numpy(), np.asarray(want_viol))
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
