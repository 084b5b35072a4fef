from gpumat.bench import static as S
from gpumat.bench.kernels import COLUMNS, TENANTS
import multiprocessing, copy
cols = (("item_id", "int64", 5, 0, True, 0.3, True),) + COLUMNS[1:]
jobs = [(90, k, c, i, p, w, l, a) for k, c, i, p, w, l, a in S.kernel_configs() if c == S.BENCH_COLUMNS and not i and not p and not l]
jobs += [(90, "history", S.BENCH_COLUMNS, False, False, w, False, (0b011, 0, 0b010, 0b001)) for w in (False, True)]
with multiprocessing.get_context("fork").Pool(2) as p:
    conf = p.map(S._compile_config, jobs)
S._disassemble(90, conf)  # (since 074e4f1 the SASS counts come from one nvdisasm over all the configurations)
pc = {c["wide"]: c for c in conf if c["kernel"] == "history" and S.aux_key(c["aux"]) == S.aux_key((0b011, 0, 0b010, 0b001))}
conf2 = []
for c in conf:
    if c["kernel"] == "history" and S.aux_key(c["aux"]) == S.aux_key((0b010, 0, 0b010, 0b001)):
        c = dict(c, sass_instructions=pc[c["wide"]]["sass_instructions"])
    conf2.append(c)
for name, cf, cc in (("now", conf, None), ("item PATCH codes (bytes)", conf, cols), ("item PATCH codes (bytes+SASS)", conf2, cols)):
    r = S.tenant_costs(cf, "sm_90", TENANTS, cc)
    print(name, {k: round(v["warp_instructions_per_event"], 2) for k, v in r.items()}, {k: round(v["issue_over_dram"], 2) for k, v in r.items()})
