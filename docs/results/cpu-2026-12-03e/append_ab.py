"""In one process, the same code: the append of ML-1M with its features cut into histories of 8
events (one segment of 127,622 stripes) with constants per row of a pack (this release: the
per-row test, form 3's index and form 2's, the smaller kept) and without (``pages.pack_row_constants``
off), alternately. Usage: python append_ab.py OUT.json [ROUNDS]."""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.host import pages  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402


def main(out, rounds=3):
    ev = sh.regroup(sh.load_events("ml1m+features"), 8)
    schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
    real = pages.pack_row_constants
    res = {"row_constants": [], "blobs": []}
    for _ in range(rounds):
        for name, f in (("row_constants", real), ("blobs", lambda *a: None)):
            pages.pack_row_constants = f
            t = Tier.create(os.path.join(tempfile.mkdtemp(), "t"), schema)
            t0 = time.perf_counter()
            t.append(ev)
            res[name].append(time.perf_counter() - t0)
    pages.pack_row_constants = real
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps({n: [round(x, 2) for x in v] for n, v in res.items()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
