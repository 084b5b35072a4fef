"""Windows of long listening histories (``long_albums.py``'s tier): what one batch of every user's
last L events reads and stages (``item_id``), with stripe tables read whole (off:
``reader.TABLE_PART_BYTES`` out of reach) and in part (on), five plans each (a fresh reader each):
``python windows_ab.py TIER [OUT.json]``."""
import sys, time, json, numpy as np, pyarrow as pa
from gpumat.core.tenant import Tenant
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan
from gpumat.host.tier import Tier
from gpumat.host import reader
path = sys.argv[1]
out = {}
BIG = reader.TABLE_PART_BYTES
for L in (64, 256, 1024, 4096, 65536):
    for side in ("off", "on"):
        reader.TABLE_PART_BYTES = 1 << 62 if side == "off" else BIG
        times, ent = [], None
        for rep in range(5):
            h = Tier.open(path); r = h._reader
            users = h.directory().user_id
            ex = pa.table({"user_id": users, "version": [h.version] * len(users), "length": h.lengths(users), "request_ts": [2**62] * len(users)})
            s = time.perf_counter()
            p = plan(h, parse_examples(ex, h.schema), Tenant("t", ["item_id"], L), check_leakage=False)
            times.append(time.perf_counter() - s)
            ent = len(p.columns["item_id"].dicts) if p.columns["item_id"].dicts is not None else 0
            dbr = r.dict_bytes_read
        out[f"{side}:{L}"] = {"blobs_B": p.nbytes_read, "dict_B": dbr, "dict_entries_staged": ent, "plan_ms_median": float(np.median(times) * 1e3),
                              "plan_ms": [t * 1e3 for t in times]}
        print(f"{side:3s} last {L:6d} of {len(users)} users: blobs {p.nbytes_read:>9,} B  dictionaries {dbr:>10,} B  "
              f"entries staged {ent:>9,} ({8*ent:>10,} B)  plan {np.median(times)*1e3:6.1f} ms")
if len(sys.argv) > 2:
    json.dump(out, open(sys.argv[2], "w"), indent=1)
