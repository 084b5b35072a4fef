"""Long listening histories of albums, written to a new tier: ``python long_albums.py U N NEW DIR [WIDE]``:
U users of N events each; each plays albums of 12 tracks (random ids below 10^8, or 64-bit with
WIDE=1) in order, a new album (of 10^6) with probability NEW, else one of the 300 it played last
(a literal stripe table of thousands of entries per user, its copies reaching a few pages back)."""
import sys, shutil, time, numpy as np, pyarrow as pa
from gpumat.host.tier import Tier
U, N, NEW = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(0)
wide = len(sys.argv) > 5 and sys.argv[5] == "1"
tracks = rng.integers(-(1 << 62), 1 << 62, (10**6, 12)) if wide else rng.integers(0, 10**8, (10**6, 12))
items = np.empty(U * N, np.int64)
for u in range(U):
    plays = N // 12 + 1
    new = rng.random(plays) < NEW
    new[0] = True
    albums = np.empty(plays, np.int64)
    fresh = rng.integers(0, 10**6, plays)
    for i in range(plays):
        albums[i] = fresh[i] if new[i] else albums[rng.integers(max(0, i - 300), i)]
    items[u * N:(u + 1) * N] = tracks[albums].reshape(-1)[:N]
uid = np.repeat(np.arange(U, dtype=np.int64), N)
ts = np.tile(np.arange(N, dtype=np.int64) * 180, U) + 1_600_000_000
ev = pa.table({"user_id": uid, "ts": ts, "item_id": items, "rating": rng.integers(1, 6, U * N)})
d = sys.argv[4]
shutil.rmtree(d, ignore_errors=True)
t = Tier.create(d, {"ts": "int64", "item_id": "int64", "rating": "int64"})
s = time.time(); t.append(ev); print("append s", round(time.time() - s, 1))
