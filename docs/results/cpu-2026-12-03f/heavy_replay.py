import sys, json, numpy as np, pyarrow as pa
sys.path.insert(0, 'profiling')
import short_histories as sh
base = sh.load_events('ml1m')
out = {}
for label, p, h64 in (("replay p=0.3, ids over 10^7", 0.3, False), ("replay p=0.3, 64-bit hashed ids", 0.3, True), ("replay p=0.08, 64-bit hashed ids", 0.08, True)):
    ev = sh.VARIANTS["hash_items"](base, np.random.default_rng(0))
    if h64:
        it = sh._col(base, "item_id")
        h = np.random.default_rng(1).integers(-2**62, 2**62, int(it.max()) + 1)
        ev = sh._set(base, "item_id", h[it])
    ev = sh._replays(ev, np.random.default_rng(2), p=p)
    r = sh.measured(ev)
    out[label] = r
    print(label, round(r["x_parquet"], 3), {k: round(v, 2) for k, v in r["column_with_index_x_parquet"].items()}, r["tier_columns"]["item_id"], r["parquet_columns"]["item_id"])
json.dump(out, open('docs/results/cpu-2026-12-03f/heavy_replay.json', 'w'), indent=1)
