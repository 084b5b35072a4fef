"""Staged bytes per epoch of the bench workload's tenants (StagedBatch.staged_bytes, what crosses
PCIe without the dictionaries), with the borrower's words shared and without (the reader's share off)."""
import json, sys, tempfile
import numpy as np
from gpumat.host.workloads import synthetic_workload
from gpumat.host.examples import check_pointers, parse_examples
from gpumat.host.planner import plan
from gpumat.host import reader as rd

w = synthetic_workload(tempfile.mkdtemp() + "/tier", progress=False)
tier, tenants, examples = w.tier, w.tenants, w.examples
out = {}
real = rd.VersionReader._lent_once
for mode in ("shared", "separate"):
    if mode == "separate":
        rd.VersionReader._lent_once = lambda self, c, si, need: (real(self, c, si, need)[0], {})
    for t in tenants:
        total = words = dicts = 0
        for i in range(0, examples.num_rows, 256):
            ex = parse_examples(examples.slice(i, 256), tier.schema)
            s = plan(tier, ex, t, check_leakage=True)
            total += s.staged_bytes()
            dicts += sum(np.asarray(c.dicts).size * 8 for c in s.columns.values() if c.dicts is not None)
        out[f"{t.name}_{mode}"] = {"staged_bytes": total, "dict_bytes": dicts, "without_dicts": total - dicts}
        print(t.name, mode, total, total - dicts, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
