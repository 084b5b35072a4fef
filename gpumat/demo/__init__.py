"""``gpumat demo``: the main job end to end (``ml1m``: MovieLens-1M as a versioned tier, tenants
checked against Fat Row, HSTU trained on late-materialized batches)."""
