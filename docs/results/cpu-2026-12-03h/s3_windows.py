"""What one batch of every user's last L events asks of S3 (a moto server on loopback, every
segment read by ranges) with stripe tables read whole (off) and in part (on): GETs, bytes, fetch
waves (``store.fetch`` calls: sequential round trips), wall time; ``long_albums.py``'s histories
(U users of N events, narrow ids), written to S3 first. ``python s3_windows.py [U N] [OUT.json]``,
from the repository root, with moto[server] installed."""
import json, os, subprocess, sys, time
import numpy as np, pyarrow as pa

sys.path.insert(0, "tests")
from s3server import BUCKET, ENV, free_port  # noqa: E402

U, N = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (40, 30000)
port = free_port()
proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    import boto3
    for _ in range(600):
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    from gpumat.core.tenant import Tenant
    from gpumat.host import objstore, reader, segment
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan
    from gpumat.host.tier import Tier
    segment.FULL_READ_BYTES = 0  # every segment by ranges of chunks, as a large one is
    rng = np.random.default_rng(0)
    tracks = rng.integers(0, 10**8, (10**6, 12))
    items = []
    for u in range(U):  # (long_albums.py's histories)
        plays = N // 12 + 1
        new = rng.random(plays) < 0.5
        new[0] = True
        albums = rng.integers(0, 10**6, plays)
        for i in np.flatnonzero(~new).tolist():
            albums[i] = albums[rng.integers(max(0, i - 300), i)]
        items.append(tracks[albums].reshape(-1)[:N])
    uri = f"s3://{BUCKET}/long"
    t = Tier.create(uri, {"ts": "int64", "item_id": "int64"})
    t.append(pa.table({"user_id": np.repeat(np.arange(U), N), "ts": np.tile(np.arange(N) * 180, U),
                       "item_id": np.concatenate(items)}))
    out, big = {}, reader.TABLE_PART_BYTES
    for L in (64, 1024):
        for side in ("off", "on", "off", "on"):
            reader.TABLE_PART_BYTES = 1 << 62 if side == "off" else big
            objstore.clear_cache()
            h = Tier.open(uri)
            users = np.arange(U)
            ex = parse_examples(pa.table({"user_id": users, "version": [h.version] * U, "length": h.lengths(users),
                                          "request_ts": [2**62] * U}), h.schema)
            plan(h, ex, Tenant("t", ["ts"], L), check_leakage=False)  # (the segment's index and heads, first)
            waves = []
            fetch = h._store.fetch
            h._store.fetch = lambda reqs, f=fetch: (waves.append(len(reqs)), f(reqs))[1]
            before = h._store.io.snapshot()
            s = time.perf_counter()
            p = plan(h, ex, Tenant("t", ["item_id"], L), check_leakage=False)
            dt = time.perf_counter() - s
            d = {k: v for k, v in h._store.io.snapshot().items() if k in ("get", "bytes_read", "request_s")}
            d = {k: d[k] - before[k] for k in d}
            r = {"waves": len(waves), "requests_per_wave": waves, **d, "plan_s": dt,
                 "dict_entries": len(p.columns["item_id"].dicts)}
            out.setdefault(f"{side}:{L}", []).append(r)
            print(f"{side:3s} last {L:5d} of {U} users: {len(waves)} waves, {d['get']} GETs, {d['bytes_read']:,} B read, "
                  f"plan {dt * 1e3:.0f} ms, {r['dict_entries']:,} entries staged", flush=True)
    if len(sys.argv) > 3:
        json.dump(out, open(sys.argv[3], "w"), indent=1)
finally:
    proc.terminate()
    proc.wait(timeout=10)
