"""Host side of gpumat: the versioned tier, its encodings, the planner (projection pushdown), prefetching.

Nothing here launches a kernel; the planner's output is plain arrays that ``gpumat.kernels`` consumes.
"""
