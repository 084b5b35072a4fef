import sys, tempfile, os, json
from gpumat.host.workloads import load_movielens_1m, movielens_workload
data = load_movielens_1m(None)
w = movielens_workload(os.path.join(tempfile.mkdtemp(), "tier"), data=data, progress=False)
print(json.dumps({"build_s": round(w.stats["build_s"], 2), "versions": w.stats["versions"], "stored": w.tier.stats()["stored_bytes"]}))
