"""Prints before -> after for every stored-bytes file of this directory (python compare.py)."""
import glob
import json
import os

R = os.path.dirname(os.path.abspath(__file__))
for f in sorted(glob.glob(R + "/after_short_*.json")):
    a, b = json.load(open(f.replace("after_", "before_"))), json.load(open(f))
    k = f.split("after_short_")[1][:-5]
    for n in b["runs"]:
        ra, rb = a["runs"][n], b["runs"][n]
        wa = max(ra["column_with_index_x_parquet"].items(), key=lambda x: x[1])
        wb = max(rb["column_with_index_x_parquet"].items(), key=lambda x: x[1])
        print(f"{k:16s} {n:>3s}  {ra['tier_file']:>10,} -> {rb['tier_file']:>10,} B  x Parquet {ra['x_parquet']:.3f} -> "
              f"{rb['x_parquet']:.3f}  largest column with its index fields: {wa[0]} {wa[1]:.2f} -> {wb[0]} {wb[1]:.2f}")
a, b = json.load(open(R + "/before_variants_ml1m.json")), json.load(open(R + "/after_variants_ml1m.json"))
same = [n for n in b["runs"] if a["runs"][n]["tier_file"] == b["runs"][n]["tier_file"]]
print(f"\nML-1M variants: {len(b['runs'])} files, {len(same)} the same bytes; the others:")
for n in b["runs"]:
    ra, rb = a["runs"][n], b["runs"][n]
    if n not in same:
        cols = {c: (round(ra["column_with_index_x_parquet"][c], 2), round(rb["column_with_index_x_parquet"][c], 2))
                for c in rb["column_with_index_x_parquet"]}
        print(f"  {n:16s} {ra['tier_file']:>10,} -> {rb['tier_file']:>10,} B  x Parquet {ra['x_parquet']:.3f} -> "
              f"{rb['x_parquet']:.3f}  columns with index fields {cols}")
for side, d in (("before", a), ("after", b)):
    x, n = max((max(r["column_with_index_x_parquet"].values()), n) for n, r in d["runs"].items())
    print(f"  largest column with its index fields, {side}: {x:.3f} ({n})")
sa, sb = json.load(open(R + "/storage_before.json")), json.load(open(R + "/storage_after.json"))
print(f"\ngpumat bench storage: UIH {sa['late']['uih_bytes_stored']:,} -> {sb['late']['uih_bytes_stored']:,} B, "
      f"stored {sa['late']['bytes_stored']:,} -> {sb['late']['bytes_stored']:,} B")
