"""In one process, the same code: planning batches (as plan_cost.py) from ML-1M with its features
cut into histories of 8 events written with constants per row of a pack (this release) and
without (``pages.pack_row_constants`` off: the user attributes in the packs' blobs), alternately,
``--rounds`` rounds of 60 batches each. Usage: python plan_cost_ab.py OUT.json [ROUNDS]."""

import json
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.core.tenant import Tenant  # noqa: E402
from gpumat.host import pages  # noqa: E402
from gpumat.host.examples import parse_examples  # noqa: E402
from gpumat.host.planner import plan  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402


def main(out, rounds=20, B=256, batches=60):
    ev = sh.regroup(sh.load_events("ml1m+features"), 8)
    schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
    tiers = {}
    real = pages.pack_row_constants
    for name, f in (("row_constants", real), ("blobs", lambda *a: None)):
        pages.pack_row_constants = f
        t = Tier.create(os.path.join(tempfile.mkdtemp(), "t"), schema)
        t.append(ev)
        tiers[name] = Tier.open(t.uri)
    pages.pack_row_constants = real
    h = tiers["blobs"]
    d = h.directory()
    users = np.unique(d.user_id)
    L = h.length_at(users, np.full(len(users), h.version))
    rng = np.random.default_rng(0)
    tenant = Tenant("t", ["item_id", "ts", "age", "gender", "occupation", "zip_code"], 8)
    batch = []
    for _ in range(batches):
        k = int(rng.integers(0, len(users) - B))
        tab = pa.table({"user_id": users[k : k + B], "version": np.full(B, h.version), "length": L[k : k + B],
                        "request_ts": np.full(B, 2**40),
                        **{f"tail_{c}": pa.array([[]] * B, pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                           for c, dt in schema.items()}})
        batch.append(parse_examples(tab, schema))
    res = {n: {"ms": [], "nbytes_read_per_batch": 0, "stored_bytes": t.stats()["stored_bytes"]} for n, t in tiers.items()}
    for n, t in tiers.items():
        plan(t, batch[0], tenant)
    for _ in range(rounds):
        for n, t in tiers.items():
            t0 = time.perf_counter()
            nb = sum(plan(t, ex, tenant).nbytes_read for ex in batch)
            res[n]["ms"].append(1000 * (time.perf_counter() - t0) / batches)
            res[n]["nbytes_read_per_batch"] = nb / batches
    for n in res:
        ms = sorted(res[n]["ms"])
        res[n].update(min_ms=ms[0], median_ms=ms[len(ms) // 2])
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps({n: {k: v for k, v in r.items() if k != "ms"} for n, r in res.items()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
