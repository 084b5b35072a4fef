"""Host cost of planning batches of ML-1M with its features cut into histories of 8 events (a
piece a user; packs of 16) for a tenant of item_id, ts and the user attributes: what a read of a
pack's block of a column with constants per row costs (made from the index) against a read of its
blob. Usage: python plan_cost.py OUT.json [--rounds 5] (run from a checkout, or with PYTHONPATH)."""

import json
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

ROOT = os.environ.get("GPUMAT_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.core.tenant import Tenant  # noqa: E402
from gpumat.host.examples import parse_examples  # noqa: E402
from gpumat.host.planner import plan  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402


def main(out, rounds=5, B=256, batches=60):
    ev = sh.regroup(sh.load_events("ml1m+features"), 8)
    schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
    t = Tier.create(os.path.join(tempfile.mkdtemp(), "t"), schema)
    t0 = time.perf_counter()
    t.append(ev)
    append_s = time.perf_counter() - t0
    h = Tier.open(t.uri)
    d = h.directory()
    users = np.unique(d.user_id)
    rng = np.random.default_rng(0)
    tenant = Tenant("t", ["item_id", "ts", "age", "gender", "occupation", "zip_code"], 8)
    L = h.length_at(users, np.full(len(users), h.version))
    batch = []
    for _ in range(batches):  # users in id order, as an evaluation pass or pack affinity reads them
        k = int(rng.integers(0, len(users) - B))
        u = users[k : k + B]
        n = L[k : k + B]
        tab = pa.table({"user_id": u, "version": np.full(B, h.version), "length": n, "request_ts": np.full(B, 2**40),
                        **{f"tail_{c}": pa.array([[]] * B, pa.list_(pa.int32() if dt == "int32" else pa.int64()))
                           for c, dt in schema.items()}})
        batch.append(parse_examples(tab, schema))
    plan(h, batch[0], tenant)  # (warm: the directory, the dictionaries)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        nb = sum(plan(h, ex, tenant).nbytes_read for ex in batch)
        times.append((time.perf_counter() - t0) / batches)
    res = {"append_s": append_s, "plan_ms_per_batch": [1000 * x for x in times], "min_ms": 1000 * min(times),
           "nbytes_read_per_batch": nb / batches, "entries": [dict(e) for _, e in h._reader._files]}
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "entries"}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 5)
