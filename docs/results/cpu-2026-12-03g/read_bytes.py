"""Bytes a read of every user's last L events reads, blobs and dictionaries, with tables of codes off
and on: the tiers ``cpu_decode.py --dataset ml1m --variant hash_items+replay`` built in
``/tmp/cpudec_off`` and ``/tmp/cpudec_on`` (run it first, through ``ab.py``). A window reads its
stripe's whole table (DESIGN §1 "Stripe tables"). Run from the repository root."""
import numpy as np
import pyarrow as pa

from gpumat.core.tenant import Tenant
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan
from gpumat.host.tier import Tier

for side in ("off", "on"):
    for L in (64, 256, 4096):
        h = Tier.open(f"/tmp/cpudec_{side}/tier-ml1m-hash_items+replay")
        r = h._reader
        users = h.directory().user_id
        blobs = 0
        for k in range(0, len(users), 512):
            u = users[k : k + 512]
            ex = pa.table({"user_id": u, "version": [h.version] * len(u), "length": h.lengths(u), "request_ts": [2**62] * len(u)})
            blobs += plan(h, parse_examples(ex, h.schema), Tenant("t", ["item_id"], L), check_leakage=False).nbytes_read
        print(f"{side:3s} last {L:5d} events of each of {len(users):,} users: blobs {blobs:,} B, dictionaries {r.dict_bytes_read:,} B, "
              f"{blobs + r.dict_bytes_read:,} B in all")
