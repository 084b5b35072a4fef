"""Training and evaluation utilities for next-item models over jagged batches.

Everything here works with any iterator that yields ``(JaggedBatch, labels)`` pairs, ``labels``
an integer tensor ``[B]`` (the item that follows each row), and any model that offers
``loss(batch, labels) -> scalar`` and ``score(batch) -> [B, num_items]`` (such as
:class:`gpumat.models.hstu.HSTU`).

Ranking metrics are computed over the **full catalog, excluding nothing**: items the user already
interacted with stay rankable (in next-item data repeats are legitimate targets, and filtering
them would need the full history, which the truncated batch does not hold). Ties are broken
uniformly at random *in expectation*: with ``g`` items scored strictly above the target and ``e``
items tied with it (the target included), the target's rank is uniform on ``[g, g + e)`` and the
metrics are exact expectations over that. This matters for the popularity baseline, whose scores
tie a lot, and changes nothing for a model with distinct scores.

>>> import torch
>>> scores = torch.tensor([[0.9, 0.1, 0.5], [0.0, 0.0, 0.0]])
>>> rank_metrics(scores, torch.tensor([2, 0]), k=2)   # row 0: rank 1; row 1: 3-way tie
{'hr@2': 0.8333333333333333, 'ndcg@2': 0.5872865023809717, 'n': 2}

The published leave-one-out protocol (generative-recommenders, SASRec) instead removes the items of
the user's history from the ranking ("seen items filtered"): :func:`mask_seen` and
:func:`evaluate_ranking` do that, with the history the batch holds (in generative-recommenders the
model's input window: the tenant's newest ``max_len`` events).
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np
import torch

from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import GpumatError, SchemaError

__all__ = ["Throughput", "train_steps", "evaluate", "evaluate_ranking", "mask_seen", "popularity_eval", "rank_metrics",
           "ranking_metrics"]


class Throughput:
    """Examples per second since the end of the first ``warmup`` updates (``examples`` and
    ``events`` count what came after them).

    Time is host wall-clock; on a GPU call :meth:`update` after something that synchronizes
    (``loss.item()``) or the rate measures kernel launches rather than kernels.

    >>> meter = Throughput(warmup=0)
    >>> meter.update(128, events=25600)
    >>> meter.examples >= 128 and meter.rate >= 0.0
    True
    """

    def __init__(self, warmup: int = 1):
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        self._updates = 0
        self._t0 = time.perf_counter() if self.warmup == 0 else None
        self.examples = 0
        self.events = 0

    def update(self, examples: int, events: int = 0) -> None:
        self._updates += 1
        if self._updates <= self.warmup:
            # The warm-up steps (allocator, kernel compilation, caches) are not counted.
            if self._updates == self.warmup:
                self._t0 = time.perf_counter()
            return
        self.examples += int(examples)
        self.events += int(events)

    @property
    def elapsed(self) -> float:
        return 0.0 if self._t0 is None else time.perf_counter() - self._t0

    @property
    def rate(self) -> float:
        """Examples per second (0.0 before anything was counted)."""
        t = self.elapsed
        return self.examples / t if t > 0 and self.examples else 0.0


def labeled_batches(loader, tenant: str, label: str = "label_item", expect=None):
    """``(JaggedBatch, labels)`` pairs from a ``Materializer.iterate`` loader, for ``train_steps``.

    ``expect``: the row batches the loader must yield, in order (a check that two feeds being
    compared train on the same batches); a different batch is a ``GpumatError``.
    """
    for i, mb in enumerate(loader):
        if expect is not None and i < len(expect) and not np.array_equal(mb.rows, expect[i]):
            raise GpumatError(f"the loader's batch {i} differs from the expected rows; the feeds would not compare")
        yield mb[tenant], mb.passthrough[label]


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _check_pair(item, where: str):
    """``(batch, labels, extra)``: ``extra`` holds the model's keyword arguments beyond the pair,
    ``{"query_ts": ...}`` when the iterator yields ``(JaggedBatch, labels, query_ts [B])``."""
    if not (isinstance(item, (tuple, list)) and len(item) in (2, 3) and isinstance(item[0], JaggedBatch)):
        raise SchemaError(f"{where}: the iterator must yield (JaggedBatch, labels) pairs or (JaggedBatch, labels, "
                          f"query_ts) triples, got {type(item).__name__}")
    batch, labels = item[0], torch.as_tensor(item[1])
    if labels.shape != (batch.batch_size,):
        raise SchemaError(f"{where}: labels must have shape [B={batch.batch_size}], got {tuple(labels.shape)}")
    extra = {}
    if len(item) == 3 and item[2] is not None:
        qts = torch.as_tensor(item[2])
        if qts.shape != (batch.batch_size,):
            raise SchemaError(f"{where}: query_ts must have shape [B={batch.batch_size}], got {tuple(qts.shape)}")
        extra["query_ts"] = qts
    return batch, labels, extra


def train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches_iter: Iterable,
    steps: int,
    log_every: int = 50,
    progress: bool = True,
) -> dict:
    """Run ``steps`` optimizer steps of ``model.loss(batch, labels)``.

    ``batches_iter`` yields ``(JaggedBatch, labels [B])`` or ``(JaggedBatch, labels, query_ts [B])``
    (passed on as ``model.loss(..., query_ts=)``); batches are moved to the model's device.
    Stops early if the iterator runs out. The loss is read back (a device sync) only every
    ``log_every`` steps and on the last one, so a GPU pipeline is not stalled every step.

    Returns ``{"steps": int, "losses": [(step, loss)], "examples_per_s": float,
    "events_per_s": float, "step_time_s": float}`` (rates exclude the first step).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise SchemaError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise SchemaError(f"log_every must be an integer >= 1, got {log_every!r}")
    from gpumat.core.progress import progress as progress_bar

    dev = _model_device(model)
    it: Iterator = iter(batches_iter)
    meter = Throughput(warmup=1)
    losses: list[tuple[int, float]] = []
    done = 0
    events = torch.zeros((), dtype=torch.int64, device=dev)
    model.train()
    bar = progress_bar(desc="train", unit="step", total=steps, enabled=progress)
    try:
        for step in range(1, steps + 1):
            try:
                item = next(it)
            except StopIteration:
                break
            batch, labels, extra = _check_pair(item, "train_steps")
            if batch.device != dev:
                batch = batch.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            extra = {k: v.to(dev, non_blocking=True) for k, v in extra.items()}
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(batch, labels, **extra)
            loss.backward()
            optimizer.step()
            done = step
            if step % log_every == 0 or step == steps or step == 1:
                value = float(loss.detach())
                losses.append((step, value))
                # No rate before one exists: the warm-up step is not counted.
                bar.set_postfix_str(f"loss {value:.4f}" + (f", {meter.rate:.0f} examples/s" if meter.examples else ""))
            meter.update(batch.batch_size)
            if step > 1 and batch.batch_size > 0:
                # Summed on the device and read once at the end: int() here would sync every step.
                events = batch.offsets[-1] + events
            bar.update(1)
    finally:
        bar.close()
    if done and (not losses or losses[-1][0] != done):
        losses.append((done, float(loss.detach())))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    counted = max(done - 1, 0)
    elapsed = meter.elapsed
    return {
        "steps": done,
        "losses": losses,
        "examples_per_s": meter.examples / elapsed if counted and elapsed > 0 else 0.0,
        "events_per_s": int(events) / elapsed if counted and elapsed > 0 else 0.0,
        "step_time_s": elapsed / counted if counted else float("nan"),
    }


def _tie_aware_metrics(greater: torch.Tensor, ties: torch.Tensor, k: int):
    """Expected HR@k and NDCG@k per example for a rank uniform on ``[greater, greater + ties)``.

    ``greater``, ``ties``: int64 ``[n]`` (``ties >= 1``, it counts the target). -> two float64 ``[n]``.
    """
    disc = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # DCG of a hit at rank r
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), disc.cumsum(0)])  # cum[r] = sum of disc[:r]
    g = greater.cpu().clamp(max=k)
    end = (greater.cpu() + ties.cpu()).clamp(max=k)
    e = ties.cpu().to(torch.float64)
    hr = (end - g).to(torch.float64) / e
    ndcg = (cum[end] - cum[g]) / e
    return hr, ndcg


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor, k: int = 10) -> dict:
    """HR@k and NDCG@k of ``targets [n]`` under ``scores [n, num_items]``, full catalog, ties expected.

    Returns ``{"hr@k": float, "ndcg@k": float, "n": int}`` (means over the ``n`` rows; NaN if 0).
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise SchemaError(f"rank_metrics: need scores [n, items] and targets [n], got {tuple(scores.shape)} and {tuple(targets.shape)}")
    hr, ndcg = _rank_sums(scores, targets, k)
    n = int(targets.numel())
    return {f"hr@{k}": hr / n if n else float("nan"), f"ndcg@{k}": ndcg / n if n else float("nan"), "n": n}


def _rank_sums(scores, targets, k):
    t = targets.to(scores.device, torch.int64)
    s_t = scores.gather(1, t.unsqueeze(1))
    greater = (scores > s_t).sum(1)
    ties = (scores == s_t).sum(1)
    hr, ndcg = _tie_aware_metrics(greater, ties, k)
    return float(hr.sum()), float(ndcg.sum())


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, k: int = 10, progress: bool = False,
             total: int | None = None) -> dict:
    """Full-catalog ranking quality of ``model.score(batch)`` for the next item ``labels``.

    ``batches`` yields ``(JaggedBatch, labels [B])``. No item is excluded from the ranking (not
    even the history's); ties count in expectation (module docstring). The model is put in eval
    mode and restored afterwards. ``progress``: report batches done (``gpumat.core.progress``: a
    bar on a terminal, a plain line every 5 s elsewhere) out of ``total`` (default ``len(batches)``
    when it has one).

    Returns ``{"hr@{k}": float, "ndcg@{k}": float, "n": int}``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SchemaError(f"k must be an integer >= 1, got {k!r}")
    from gpumat.core.progress import progress as progress_bar

    dev = _model_device(model)
    was_training = model.training
    model.eval()
    hr = ndcg = 0.0
    n = 0
    try:
        for item in progress_bar(batches, "evaluate", "batch", total=total, enabled=progress):
            batch, labels, extra = _check_pair(item, "evaluate")
            if batch.batch_size == 0:
                continue
            scores = model.score(batch.to(dev) if batch.device != dev else batch,
                                 **{k: v.to(dev) for k, v in extra.items()})
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]):
                raise SchemaError(f"evaluate: labels must lie in [0, {scores.shape[1]})")
            h, g = _rank_sums(scores, labels, k)
            hr, ndcg, n = hr + h, ndcg + g, n + batch.batch_size
    finally:
        model.train(was_training)
    return {f"hr@{k}": hr / n if n else float("nan"), f"ndcg@{k}": ndcg / n if n else float("nan"), "n": n}


def _label_tensor(x) -> torch.Tensor:
    """Labels as a CPU int64 tensor; arrays are copied (those straight from Arrow are read-only views)."""
    if torch.is_tensor(x):
        return x.reshape(-1).to("cpu", torch.int64)
    return torch.from_numpy(np.array(x, dtype=np.int64).reshape(-1))


def popularity_eval(train_labels, eval_labels, k: int = 10, num_items: int | None = None) -> dict:
    """The most-popular baseline: rank every item by its count in ``train_labels``.

    ``train_labels``, ``eval_labels``: integer ``[n]`` item ids (tensors or arrays);
    ``num_items``: catalog size (default ``max id + 1``). Same full-catalog, tie-aware metrics as
    :func:`evaluate`, so the two are comparable; unseen items tie at count 0.

    >>> popularity_eval(torch.tensor([3, 3, 1]), torch.tensor([3, 1, 0]), k=1, num_items=4)
    {'hr@1': 0.3333333333333333, 'ndcg@1': 0.3333333333333333, 'n': 3}
    """
    train, ev = _label_tensor(train_labels), _label_tensor(eval_labels)
    top = max(int(train.max()) if train.numel() else -1, int(ev.max()) if ev.numel() else -1) + 1
    n_items = top if num_items is None else int(num_items)
    if (train.numel() and int(train.min()) < 0) or (ev.numel() and int(ev.min()) < 0) or top > n_items:
        raise SchemaError(f"popularity_eval: labels must lie in [0, num_items={n_items})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SchemaError(f"k must be an integer >= 1, got {k!r}")
    counts = torch.bincount(train, minlength=n_items)
    srt = counts.sort().values  # ascending
    c_t = counts[ev]
    # Items strictly more popular than the target, and items with exactly its count.
    greater = n_items - torch.searchsorted(srt, c_t, right=True)
    ties = torch.searchsorted(srt, c_t, right=True) - torch.searchsorted(srt, c_t, right=False)
    hr, ndcg = _tie_aware_metrics(greater, ties, k)
    n = int(ev.numel())
    return {f"hr@{k}": float(hr.sum()) / n if n else float("nan"), f"ndcg@{k}": float(ndcg.sum()) / n if n else float("nan"), "n": n}


def mask_seen(scores: torch.Tensor, offsets: torch.Tensor, items: torch.Tensor, exclude=()) -> torch.Tensor:
    """``scores [B, num_items]`` with every item of each row's history, and every id in ``exclude``
    (e.g. a padding id 0), set to ``-inf``: they can no longer be recommended. Returns a new tensor.

    ``offsets [B + 1]``, ``items [N]``: the rows' item ids, jagged (a ``JaggedBatch``'s ``offsets``
    and ``values["item_id"]``).

    >>> s = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    >>> mask_seen(s, torch.tensor([0, 2, 2]), torch.tensor([1, 3]), exclude=[0]).tolist()
    [[-inf, -inf, 0.699999988079071, -inf], [-inf, 0.800000011920929, 0.699999988079071, 0.10000000149011612]]
    """
    out = scores.clone()
    dev = scores.device
    offsets = offsets.to(dev, torch.int64)
    items = items.to(dev, torch.int64)
    B = offsets.numel() - 1
    if items.numel():
        row = torch.repeat_interleave(torch.arange(B, device=dev), offsets[1:] - offsets[:-1], output_size=items.numel())
        out[row, items] = float("-inf")
    ex = torch.as_tensor(list(exclude), dtype=torch.int64, device=dev)
    if ex.numel():
        out[:, ex] = float("-inf")
    return out


def ranking_metrics(scores: torch.Tensor, targets: torch.Tensor, ks=(10,)) -> dict:
    """Sums of HR@k and NDCG@k over rows, for each ``k`` in ``ks``, of ``targets [n]`` under ``scores
    [n, num_items]`` (ties in expectation, as :func:`rank_metrics`), plus ``"n"`` and ``"mrr"`` (sums).

    A target whose score is ``-inf`` (masked by :func:`mask_seen`) counts as a miss, as in the
    published protocol where a filtered target is never retrieved. Divide by ``n`` for means.

    >>> ranking_metrics(torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1]]), torch.tensor([2, 2]), ks=(1, 2))
    {'hr@1': 0.0, 'ndcg@1': 0.0, 'hr@2': 1.0, 'ndcg@2': 0.6309297535714575, 'mrr': 0.8333333333333333, 'n': 2}
    """
    t = targets.to(scores.device, torch.int64)
    s_t = scores.gather(1, t.unsqueeze(1))
    greater = (scores > s_t).sum(1)
    ties = (scores == s_t).sum(1)
    lost = torch.isneginf(s_t.squeeze(1)).cpu()
    out: dict = {}
    for k in ks:
        hr, ndcg = _tie_aware_metrics(greater, ties, int(k))
        out[f"hr@{k}"] = float(hr.masked_fill(lost, 0.0).sum())
        out[f"ndcg@{k}"] = float(ndcg.masked_fill(lost, 0.0).sum())
    # reciprocal rank at the middle of the tie range (exact for distinct scores)
    rank = greater.cpu().to(torch.float64) + (ties.cpu().to(torch.float64) + 1.0) / 2.0
    out["mrr"] = float((1.0 / rank).masked_fill(lost, 0.0).sum())
    out["n"] = int(t.numel())
    return out


@torch.no_grad()
def evaluate_ranking(model: torch.nn.Module, batches: Iterable, ks=(10, 50, 200), filter_seen: bool = True,
                     exclude=(), progress: bool = False, total: int | None = None) -> dict:
    """Full-catalog HR@k / NDCG@k / MRR of ``model.score(batch)`` for the next item ``labels``, the
    items of each row's history removed from the ranking when ``filter_seen`` (:func:`mask_seen`:
    the history is what the batch holds; a model that reads fewer events than the batch still has
    all of them filtered) and the ids in ``exclude`` always (e.g. ``[0]``, a padding id).

    ``batches`` yields ``(JaggedBatch, labels [B])`` or ``(JaggedBatch, labels, query_ts [B])`` (the
    batch needs ``item_id`` for the filter).
    Returns means ``{"hr@k": ..., "ndcg@k": ..., "mrr": ..., "n": int}``.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise SchemaError(f"ks must be integers >= 1, got {ks!r}")
    from gpumat.core.progress import progress as progress_bar

    dev = _model_device(model)
    was_training = model.training
    model.eval()
    sums: dict = {}
    try:
        for item in progress_bar(batches, "evaluate", "batch", total=total, enabled=progress):
            batch, labels, extra = _check_pair(item, "evaluate_ranking")
            if batch.batch_size == 0:
                continue
            batch = batch.to(dev) if batch.device != dev else batch
            scores = model.score(batch, **{k: v.to(dev) for k, v in extra.items()})
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]):
                raise SchemaError(f"evaluate_ranking: labels must lie in [0, {scores.shape[1]})")
            if filter_seen or exclude:
                seen = batch.values["item_id"] if filter_seen else batch.offsets.new_zeros(0)
                offs = batch.offsets if filter_seen else batch.offsets.new_zeros(batch.batch_size + 1)
                scores = mask_seen(scores, offs, seen, exclude)
            for key, v in ranking_metrics(scores, labels, ks).items():
                sums[key] = sums.get(key, 0) + v
    finally:
        model.train(was_training)
    n = sums.pop("n", 0)
    out = {key: (v / n if n else float("nan")) for key, v in sums.items()}
    if not out:
        out = {**{f"{m}@{k}": float("nan") for k in ks for m in ("hr", "ndcg")}, "mrr": float("nan")}
    out["n"] = n
    return out
