"""The append of ML-1M with its features cut into histories of N events (default 8: one segment of
127,622 stripes), timed, ROUNDS times in this process. Usage: python append_time.py OUT.json [N]
[ROUNDS]; run before and after alternately (GPUMAT_ROOT: the checkout whose profiling/ to use)."""

import json
import os
import sys
import tempfile
import time

ROOT = os.environ.get("GPUMAT_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.host.tier import Tier  # noqa: E402


def main(out, n=8, rounds=2):
    ev = sh.regroup(sh.load_events("ml1m+features"), n)
    schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
    res = []
    for _ in range(rounds):
        t = Tier.create(os.path.join(tempfile.mkdtemp(), "t"), schema)
        t0 = time.perf_counter()
        t.append(ev)
        res.append(time.perf_counter() - t0)
    json.dump({"n": n, "append_s": res, "stored_bytes": t.stats()["stored_bytes"]}, open(out, "w"), indent=1)
    print(n, [round(x, 2) for x in res], t.stats()["stored_bytes"])


if __name__ == "__main__":
    main(sys.argv[1], *(int(x) for x in sys.argv[2:]))
