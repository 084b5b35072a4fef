"""bare_before.json against bare_after.json, file by file: whole file and ``rating`` (with its index
fields) against tuned store-once Parquet. ``python compare.py [BEFORE AFTER]`` in this directory."""
import json
import sys

bp, ap = (sys.argv[1:3] if len(sys.argv) > 2 else ("bare_before.json", "bare_after.json"))
a, b = json.load(open(ap))["runs"], json.load(open(bp))["runs"]
print("| file | whole file before -> after (x Parquet) | rating before -> after (with index fields) |")
print("|---|---|---|")
same = []
for k in b:
    x, y = b[k], a[k]
    if x["tier_file"] == y["tier_file"]:
        same.append(k)
        continue
    print(f"| {k} | {x['x_parquet']:.3f} -> {y['x_parquet']:.3f} ({x['tier_file']:,} -> {y['tier_file']:,} B) | "
          f"{x['column_x_parquet']['rating']:.2f} ({x['column_with_index_x_parquet']['rating']:.2f}) -> "
          f"{y['column_x_parquet']['rating']:.2f} ({y['column_with_index_x_parquet']['rating']:.2f}) |")
print("same bytes:", ", ".join(same))
worse = [k for k in b if a[k]["tier_file"] > b[k]["tier_file"]]
print("larger:", worse, [a[k]["tier_file"] - b[k]["tier_file"] for k in worse])
mx = max(a, key=lambda k: a[k]["column_with_index_x_parquet"]["rating"])
print("largest rating with index after:", mx, round(a[mx]["column_with_index_x_parquet"]["rating"], 3))
