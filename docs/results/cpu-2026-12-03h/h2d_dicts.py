"""Host-to-device bytes of a column's dictionaries through ``gpumat.Materializer`` (on this
machine's CPU device: the same copies, counted): batches of 25 users' last 64 events of
``long_albums.py``'s tier of 64-bit ids (``/tmp/longtab/t200w``), one of them each batch the user
whose stripe holds the segment dictionary's own codes. Prints the dictionaries' bytes staged and
those the Materializer did not copy (``dict_bytes_not_copied``): ``python h2d_dicts.py [OUT.json]``."""
import json, sys, time
import numpy as np, pyarrow as pa
import gpumat
from gpumat import Tenant
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan

tier = gpumat.Tier.open("/tmp/longtab/t200w")
r = tier._reader
r._dict_sizes("item_id")
keys, size, keep = r._dsarr["item_id"]
enc = r.blobs("item_id")[2]
ref = int(r.directory().user_id[np.flatnonzero((enc >> 8) == (int(keys[keep == 1][0]) & ((1 << 40) - 1)))[0]])
rng = np.random.default_rng(0)
B, nb = 25, 8
u = rng.permutation(200)[: B * nb]
u[::B] = ref
ex = pa.table({"user_id": u, "version": np.full(len(u), tier.version), "length": tier.lengths(u), "request_ts": np.full(len(u), 2**62)})
mat = gpumat.Materializer(tier, [Tenant("t", ["item_id"], 64)], backend="torch")
staged = 0
t0 = time.perf_counter()
for k in range(nb):
    sub = ex.slice(k * B, B)
    mat(sub)
    staged += 8 * len(plan(tier, parse_examples(sub, tier.schema), Tenant("t", ["item_id"], 64), check_leakage=False).columns["item_id"].dicts)
dt = time.perf_counter() - t0
out = {"batches": nb, "users_per_batch": B, "dict_bytes_staged": staged, "dict_bytes_not_copied": mat.dict_bytes_not_copied,
       "dict_bytes_copied": staged - mat.dict_bytes_not_copied, "seconds": dt}
print(json.dumps(out))
if len(sys.argv) > 1:
    json.dump(out, open(sys.argv[1], "w"), indent=1)
