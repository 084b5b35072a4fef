"""Seeing inside a training loop fed by the materializer: per-stage profiler time and a sync check.

- ``thread_profiler`` / ``aggregate_stages`` / ``profile_overlapped``: CPU and device time of the
  ``gpumat.*`` ranges (``gpumat.materializer.stage_range``), host threads included.
- ``sync_check``: the steady state under ``torch.cuda.set_sync_debug_mode("error")``, and where a
  host sync happened if one did.

Used by ``gpumat bench e2e`` and ``profiling/e2e_trace.py``.
"""

from __future__ import annotations

import os
import traceback

from gpumat.models.train import labeled_batches

STAGES = ("gpumat.plan", "gpumat.pack", "gpumat.h2d", "gpumat.decode", "gpumat.handoff")


# ----------------------------------------------------------------------------- profiler breakdown


def thread_profiler(activities, **kwargs):
    """A ``torch.profiler.profile`` that also records ranges of threads it did not start in.

    The materializer's host stages run in their own threads; without ``profile_all_threads``
    their ``gpumat.plan`` / ``gpumat.pack`` ranges are not recorded (torch's callbacks are
    thread-local). ``kwargs`` go to ``profile`` (e.g. ``schedule``). Returns ``(profile, all_threads)``.
    """
    import torch
    from torch.profiler import profile

    try:
        cfg = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
        return profile(activities=activities, experimental_config=cfg, **kwargs), True
    except (AttributeError, TypeError, RuntimeError):
        return profile(activities=activities, **kwargs), False


def aggregate_stages(events, steps: int) -> dict:
    """CPU and device time per ``gpumat.*`` range over profiler ``events`` (``prof.events()``).

    Only the CPU-side record of each range is counted: its ``cpu_time_total`` (wall time of the
    range in its thread) and ``device_time_total`` (kernels and copies it launched). The GPU
    annotation mirrors of the ranges are skipped, so nothing is counted twice.
    """
    from torch.autograd import DeviceType

    out = {s: {"calls": 0, "cpu_ms_total": 0.0, "device_ms_total": 0.0} for s in STAGES}
    for e in events:
        rec = out.get(e.name)
        if rec is None or e.device_type != DeviceType.CPU:
            continue
        rec["calls"] += 1
        rec["cpu_ms_total"] += e.cpu_time_total / 1e3
        rec["device_ms_total"] += getattr(e, "device_time_total", 0.0) / 1e3
    for rec in out.values():
        n = rec["calls"]
        rec["cpu_ms_per_call"] = rec["cpu_ms_total"] / n if n else 0.0
        rec["device_ms_per_call"] = rec["device_ms_total"] / n if n else 0.0
        rec["cpu_ms_per_step"] = rec["cpu_ms_total"] / steps if steps else 0.0
        rec["device_ms_per_step"] = rec["device_ms_total"] / steps if steps else 0.0
    return out


def profile_overlapped(make_loader, name: str, step, steps: int, warmup: int, device) -> dict:
    """The stage breakdown: ``steps`` overlapped steps (after ``warmup``) under ``torch.profiler``.

    The pipeline fills during ``warmup`` before the profiler starts; its host threads are recorded
    through ``profile_all_threads`` (see ``thread_profiler``). Per stage: calls, total and per-call CPU ms, device ms (CUDA only).
    """
    import torch
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof, all_threads = thread_profiler(acts)
    feed = labeled_batches(make_loader(), name)
    try:
        for _ in range(warmup):  # not profiled: fills the pipeline, compiles
            step(*next(feed))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        with prof:
            for _ in range(steps):
                step(*next(feed))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        feed.close()
    stages = aggregate_stages(prof.events(), steps)
    return {"steps": steps, "host_threads_recorded": all_threads, "stages": stages}


# ----------------------------------------------------------------------------- sync check


def _frames(exc: BaseException, limit: int = 8) -> list[str]:
    """``file:line in function: code`` of the innermost ``limit`` frames where ``exc`` started.

    A host-stage failure is re-raised in the training loop with the worker's error as its cause:
    the cause's traceback is where the sync happened, so the innermost exception of the chain wins.
    """
    seen = set()
    e = exc
    while id(e) not in seen and (e.__cause__ or e.__context__) is not None:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    frames = []
    for f in traceback.extract_tb(e.__traceback__):
        path = f.filename.replace(os.sep, "/")
        for marker in ("/site-packages/", "/gpumat/", "/host/", "/kernels/"):
            if marker in path:
                tail = path.split(marker, 1)[1]
                path = tail if marker == "/site-packages/" else marker.strip("/") + "/" + tail
                break
        frames.append(f"{path}:{f.lineno} in {f.name}: {(f.line or '').strip()}")
    return frames[-limit:]


def sync_check(feed, step, warmup: int, steps: int, guard) -> dict:
    """Check that the materializer's steady state never makes the host wait on the device.

    ``guard(on: bool)`` switches the sync-debug mode (``torch.cuda.set_sync_debug_mode("error")``
    on CUDA). It is on around ``next(feed)`` of each of ``steps`` steady-state steps (after
    ``warmup``): the launch of the next batch, the handoff of this one, and whatever the host
    threads do meanwhile. It is off during the model step, which syncs by design.
    Returns ``{"sync_free": bool, "checked_steps": int, ...}`` with the error and its frames.
    """
    for _ in range(warmup):
        step(*next(feed))
    checked = 0
    try:
        for _ in range(steps):
            guard(True)
            try:
                batch, labels = next(feed)
            finally:
                guard(False)
            step(batch, labels)
            checked += 1
    except StopIteration:
        pass
    except Exception as e:  # the sync-debug error (RuntimeError) or a host stage re-raising it
        frames = _frames(e)
        ours = [f for f in frames if f.startswith(("gpumat/", "host/", "kernels/"))]
        # op: the innermost frame (the line that synced); site: the innermost line of gpumat itself
        return {"sync_free": False, "checked_steps": checked, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "op": (frames or ["?"])[-1], "site": (ours or frames or ["?"])[-1], "frames": frames,
                "scope": "loader next() in the overlapped steady state (launch + handoff, host threads meanwhile)"}
    finally:
        guard(False)
    return {"sync_free": True, "checked_steps": checked,
            "scope": "loader next() in the overlapped steady state (launch + handoff, host threads meanwhile)"}


def cuda_sync_guard(on: bool) -> None:
    """The ``guard`` of ``sync_check`` on CUDA: sync-debug mode \"error\" while on."""
    import torch

    torch.cuda.set_sync_debug_mode("error" if on else "default")
