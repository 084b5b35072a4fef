"""python summarize.py decode_*.json: per column, the median (and range) of the tier decode over pyarrow's faster API, per round."""
import json, sys, numpy as np
for f in sys.argv[1:]:
    j = json.load(open(f))
    c = j['decode']['columns']
    print(f.split('/')[-1])
    for k, v in c.items():
        r = np.array(v['tier_over_parquet'])
        print("  %-12s tier/pq median %.2f (range %.2f-%.2f), tier %s Mv/s med, pq %s" % (k, np.median(r), r.min(), r.max(), round(np.median(v['tier_Mvps'])), round(np.median(v['parquet_Mvps']))))
