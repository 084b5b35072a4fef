"""A compact HSTU (Hierarchical Sequential Transduction Units, Zhai et al. 2024) over jagged batches.

The model reads a :class:`~gpumat.JaggedBatch` as :func:`gpumat.materialize` returns it
(columns ``item_id``, ``ts`` and optional side features such as ``rating``), pads it per batch to
``W = min(max(lengths), max_len)`` and runs a stack of HSTU layers. Each layer is

    U, V, Q, K = split(silu(Linear(layernorm(X))))                     # pointwise projections
    A[b, h, i, j] = silu(Q_i . K_j + rab_h(i - j, bucket(ts_i - ts_j))) / max_len   for j <= i
    X <- X + Linear(layernorm(A V) * U)                                # Norm(AV) (.) U, the paper's eq. 3

Design choices that matter:

- **Right padding + causal mask = padding invariance.** Row ``b`` sits in ``[0, n_b)``; a valid
  query ``i < n_b`` only attends to ``j <= i < n_b``, so padded keys are never seen and the
  relative position ``i - j`` does not depend on the padded width.
- **Divide by the constant ``max_len``**, not by the padded width (GR divides by the padded ``N``,
  which makes outputs depend on the other rows of the batch) nor by the row length (which would
  let the number of future events change earlier outputs). The constant keeps the pointwise
  attention's "intensity" signal and is both causal and padding-invariant.
- **Newest ``max_len`` events** are kept when a row is longer, as SPEC §2 does for tenants.
- **Empty rows** (``n_b == 0``) get a learned ``empty`` representation: a user without history
  still has a well-defined (popularity-like, once trained) query vector, never NaN.
- **Tied, L2-normalized embeddings** score items as ``cos(user, item) / temperature``, as in the
  public HSTU retrieval setup; the input uses the same table scaled by ``sqrt(dim)``.
- The dense attention is ``O(W^2)`` memory per row (``[B, H, W, W]``); this is the reference
  formulation, sized for ``max_len`` in the hundreds to low thousands.

Example (a 3-row jagged batch with an empty row):

>>> import torch
>>> from gpumat.core.batch import JaggedBatch
>>> _ = torch.manual_seed(0)
>>> cfg = HSTUConfig(num_items=10, dim=16, num_layers=1, num_heads=2, max_len=8, num_negatives=4)
>>> model = HSTU(cfg)
>>> batch = JaggedBatch(torch.tensor([0, 3, 3, 5]),
...                     {"item_id": torch.tensor([1, 2, 3, 7, 8]), "ts": torch.tensor([10, 20, 30, 5, 9])})
>>> model(batch).shape                      # user representation at the last position
torch.Size([3, 16])
>>> h, mask = model.encode(batch)           # per-position outputs, padded
>>> h.shape, mask.tolist()
(torch.Size([3, 3, 16]), [[True, True, True], [False, False, False], [True, True, False]])
>>> model.score(batch).shape                # full-catalog scores
torch.Size([3, 10])
>>> loss = model.loss(batch, torch.tensor([4, 0, 9]))   # next items after each row
>>> loss.backward()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError

__all__ = ["HSTUConfig", "HSTU", "HSTULayer", "time_buckets"]

# Width of one log bucket of |ts_i - ts_j| (natural log units, as in generative-recommenders):
# one bucket per factor e^0.301 ~ 1.35, so 128 buckets cover deltas up to e^38 in any time unit.
_LOG_BUCKET_WIDTH = 0.301
_SAMPLERS = ("uniform", "popularity")


@dataclass
class HSTUConfig:
    """Size and training knobs of :class:`HSTU`.

    - ``num_items``: catalog size; ``item_id`` values lie in ``[0, num_items)``.
    - ``dim``, ``num_layers``, ``num_heads``: model width, depth, heads (``dim % num_heads == 0``).
    - ``max_len``: longest sequence the model reads; longer rows keep their newest ``max_len`` events.
    - ``num_negatives``: uniformly (or popularity-) sampled negatives per step, shared by all
      positions; the batch's own next items (``labels``) are added as in-batch negatives.
    - ``side_features``: ``{column: cardinality}`` of extra categorical event columns (e.g.
      ``{"rating": 6}``) whose embeddings are added to the item embedding.
    - ``num_time_buckets``: log buckets of ``|ts_i - ts_j|`` for the relative attention bias;
      0 turns the time bias off (then ``ts`` is not read).
    - ``sampler``: ``"uniform"`` or ``"popularity"`` (needs :meth:`HSTU.set_item_counts`).
    - ``logq_correction``: subtract ``log`` of each candidate's expected count in the sampled pool.
    - ``train_all_positions``: supervise every position (autoregressive), not only the last.
    - ``check_ids``: range-check ids at the boundary (one device sync per call; turn off in a
      GPU training loop once the data is known to be clean).

    The defaults train in seconds per hundred steps on a small CPU; scale ``dim``, ``num_layers``,
    ``num_heads``, ``max_len`` and the batch size up to make a GPU compute-bound.
    """

    num_items: int
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 200
    num_negatives: int = 128
    side_features: dict[str, int] = field(default_factory=dict)
    num_time_buckets: int = 128
    dropout: float = 0.0
    temperature: float = 0.05
    sampler: str = "uniform"
    logq_correction: bool = False
    train_all_positions: bool = True
    check_ids: bool = True

    def __post_init__(self):
        def _pos_int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SchemaError(f"HSTUConfig.{name} must be an integer >= {lo}, got {v!r}")

        _pos_int("num_items", 1)
        _pos_int("dim", 1)
        _pos_int("num_layers", 0)
        _pos_int("num_heads", 1)
        _pos_int("max_len", 1)
        _pos_int("num_negatives", 0)
        _pos_int("num_time_buckets", 0)
        if self.dim % self.num_heads:
            raise SchemaError(f"HSTUConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.sampler not in _SAMPLERS:
            raise SchemaError(f"HSTUConfig.sampler must be one of {_SAMPLERS}, got {self.sampler!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise SchemaError(f"HSTUConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.temperature > 0:
            raise SchemaError(f"HSTUConfig.temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.side_features, dict):
            raise SchemaError(f"HSTUConfig.side_features must be a dict {{column: cardinality}}, got {self.side_features!r}")
        for col, card in self.side_features.items():
            if col in ("item_id", "ts") or isinstance(card, bool) or not isinstance(card, int) or card < 1:
                raise SchemaError(f"HSTUConfig.side_features: bad entry {col!r}: {card!r} (need a column other than item_id/ts and a cardinality >= 1)")


def time_buckets(ts: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Log-bucketed absolute time differences ``bucket(|ts[b, i] - ts[b, j]|)``.

    ``ts``: ``[B, W]`` int64 -> ``[B, W, W]`` int64 in ``[0, num_buckets)``. Deltas of 0 and 1
    share bucket 0. The difference is taken in float64 so that extreme int64 timestamps cannot
    wrap around.

    >>> time_buckets(torch.tensor([[0, 1, 10, 10**6]]), 128)[0, 3].tolist()
    [45, 45, 45, 0]
    """
    t = ts.to(torch.float64)
    dt = (t.unsqueeze(2) - t.unsqueeze(1)).abs().clamp_(min=1.0)
    return (dt.log_() / _LOG_BUCKET_WIDTH).clamp_(max=num_buckets - 1).to(torch.int64)


class _BucketBias(torch.autograd.Function):
    """``table [nb, H]`` gathered at ``idx [B, W, W]`` -> ``[B, H, W, W]``.

    Only for CPU: there the default embedding backward sorts all ``B * W * W`` indices and
    dominates the step; a ``scatter_add_`` into ``H * nb`` bins is ~20x faster (measured on a
    2-core CPU at B=128, W=200). On CUDA we keep the built-in sort-based backward, which avoids
    atomics contending on so few bins.
    """

    @staticmethod
    def forward(ctx, table, idx):
        ctx.save_for_backward(idx)
        ctx.num_buckets = table.shape[0]
        return F.embedding(idx, table).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        H = grad.shape[1]
        g = grad.transpose(0, 1).reshape(H, -1)  # [H, B*W*W], same element order as idx
        out = grad.new_zeros(H, ctx.num_buckets).scatter_add_(1, idx.reshape(1, -1).expand(H, -1), g)
        return out.T, None


def _bucket_bias(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if table.device.type == "cpu" and torch.is_grad_enabled() and table.requires_grad:
        return _BucketBias.apply(table, idx)
    return F.embedding(idx, table).permute(0, 3, 1, 2)


class HSTULayer(nn.Module):
    """One HSTU layer with its own relative attention bias (positions and time buckets).

    ``forward(x [B, W, D], rel_pos [W, W], tbuckets [B, W, W] or None, causal [W, W]) -> [B, W, D]``,
    where ``causal`` is the lower-triangular mask times ``1 / max_len``.
    """

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.dim, self.heads = cfg.dim, cfg.num_heads
        self.uvqk = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        # rab = position term (indexed by i - j >= 0 under the causal mask) + time term, per head.
        self.pos_bias = nn.Embedding(cfg.max_len, cfg.num_heads)
        self.time_bias = nn.Embedding(cfg.num_time_buckets, cfg.num_heads) if cfg.num_time_buckets else None
        nn.init.zeros_(self.pos_bias.weight)
        if self.time_bias is not None:
            nn.init.zeros_(self.time_bias.weight)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rel_pos, tbuckets, causal):
        B, W, D = x.shape
        H, dh = self.heads, D // self.heads
        u, v, q, k = F.silu(self.uvqk(F.layer_norm(x, (D,)))).split(D, dim=-1)
        q = q.view(B, W, H, dh).transpose(1, 2)  # [B, H, W, dh]
        k = k.view(B, W, H, dh).transpose(1, 2)
        v = v.view(B, W, H, dh).transpose(1, 2)
        rab = self.pos_bias(rel_pos).permute(2, 0, 1)  # [H, W, W], shared by the batch
        qk = q @ k.transpose(-1, -2) + rab
        if tbuckets is not None:
            qk = qk + _bucket_bias(self.time_bias.weight, tbuckets)  # [B, H, W, W]
        # Multiplying by the mask (instead of -inf before silu) keeps masked weights exactly 0;
        # ``causal`` already holds the 1 / max_len scale, which saves one pass over [B, H, W, W].
        a = F.silu(qk) * causal
        o = (a @ v).transpose(1, 2).reshape(B, W, D)
        o = F.layer_norm(o, (D,)) * u
        return x + self.dropout(self.out(o))


class HSTU(nn.Module):
    """HSTU next-item model over jagged histories (see the module docstring for the layer).

    - ``forward(batch) -> [B, dim]``: the user representation after the last event of each row
      (the learned ``empty`` vector for rows of length 0), L2-normalized.
    - ``encode(batch) -> (h [B, W, dim], mask [B, W])``: per-position outputs (L2-normalized;
      zero where ``mask`` is False). ``h[mask]`` is the jagged ``[sum(min(n_b, max_len)), dim]``.
    - ``loss(batch, labels) -> scalar``: sampled softmax over next items.
    - ``score(batch) -> [B, num_items]``: full-catalog scores of the next item.
    """

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        if not isinstance(cfg, HSTUConfig):
            raise SchemaError(f"HSTU needs an HSTUConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.num_items, cfg.dim)
        self.side_emb = nn.ModuleDict({c: nn.Embedding(n, cfg.dim) for c, n in cfg.side_features.items()})
        self.layers = nn.ModuleList([HSTULayer(cfg) for _ in range(cfg.num_layers)])
        self.empty = nn.Parameter(torch.empty(cfg.dim))
        nn.init.normal_(self.item_emb.weight, std=0.02)
        for e in self.side_emb.values():
            nn.init.normal_(e.weight, std=0.02)
        nn.init.normal_(self.empty, std=0.02)
        self.input_dropout = nn.Dropout(cfg.dropout)
        # log of the sampling distribution of the popularity sampler; None until set_item_counts.
        self.register_buffer("item_log_prob", None, persistent=False)

    # ---------------------------------------------------------------- inputs

    @property
    def _columns(self) -> list[str]:
        cols = ["item_id"] + list(self.cfg.side_features)
        return cols + (["ts"] if self.cfg.num_time_buckets else [])

    def _check_ids(self, name: str, t: torch.Tensor, bound: int) -> None:
        if self.cfg.check_ids and t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= bound:
                raise SchemaError(f"HSTU: {name} values must lie in [0, {bound}), got min {lo}, max {hi}")

    def _pad(self, batch: JaggedBatch):
        """Pad the newest ``max_len`` events of every row. -> ``(cols {c: [B, W] int64}, lengths [B], mask [B, W])``."""
        if not isinstance(batch, JaggedBatch):
            raise SchemaError(f"HSTU expects a JaggedBatch, got {type(batch).__name__}")
        missing = [c for c in self._columns if c not in batch.values]
        if missing:
            raise SchemaError(f"HSTU: batch lacks column(s) {missing}; it has {sorted(batch.values)}")
        for c in self._columns:
            if batch.values[c].dtype not in (torch.int64, torch.int32):
                raise SchemaError(f"HSTU: column {c!r} must be int64 or int32, got {batch.values[c].dtype}")
        dev = self.empty.device
        offsets = batch.offsets.to(dev, torch.int64)
        lengths = (offsets[1:] - offsets[:-1]).clamp(max=self.cfg.max_len)
        B = offsets.numel() - 1
        W = int(lengths.max()) if B > 0 else 0
        pos = torch.arange(W, device=dev)
        mask = pos < lengths.unsqueeze(1)  # [B, W]
        # Keep the newest events: row b starts at offsets[b+1] - lengths[b] after truncation.
        src = (offsets[1:] - lengths).unsqueeze(1) + pos
        src = torch.where(mask, src, torch.zeros_like(src))  # padded slots read element 0, then masked
        cols = {}
        for c in self._columns:
            v = batch.values[c].to(dev)
            if v.numel() == 0:
                cols[c] = torch.zeros((B, W), dtype=torch.int64, device=dev)
            else:
                cols[c] = v[src].to(torch.int64).masked_fill_(~mask, 0)
        if self.cfg.check_ids:
            self._check_ids("item_id", cols["item_id"][mask], self.cfg.num_items)
            for c, n in self.cfg.side_features.items():
                self._check_ids(c, cols[c][mask], n)
        return cols, lengths, mask

    # ---------------------------------------------------------------- model

    def encode(self, batch: JaggedBatch):
        """Per-position outputs. -> ``(h [B, W, dim] L2-normalized, zero on padding; mask [B, W] bool)``.

        ``W = min(max(lengths), max_len)``; ``h[b, i]`` summarizes the events ``0..i`` of row ``b``
        (causal) and is the query for the event after position ``i``.
        """
        cols, _, mask = self._pad(batch)
        return self._encode(cols, mask), mask

    def _encode(self, cols, mask):
        cfg = self.cfg
        B, W = mask.shape
        x = self.item_emb(cols["item_id"])
        for c, emb in self.side_emb.items():
            x = x + emb(cols[c])
        x = self.input_dropout(x * math.sqrt(cfg.dim))
        if W > 0:
            pos = torch.arange(W, device=x.device)
            rel = (pos.unsqueeze(1) - pos.unsqueeze(0)).clamp_(min=0)  # i - j; j > i is masked anyway
            causal = torch.ones(W, W, dtype=x.dtype, device=x.device).tril_() / cfg.max_len
            tb = time_buckets(cols["ts"], cfg.num_time_buckets) if cfg.num_time_buckets else None
            for layer in self.layers:
                x = layer(x, rel, tb, causal)
        return F.normalize(x, dim=-1) * mask.unsqueeze(-1).to(x.dtype)

    def _last(self, h, lengths):
        """Gather ``h[b, lengths[b] - 1]``; the learned ``empty`` vector for empty rows. -> ``[B, dim]``."""
        B = lengths.numel()
        if h.shape[1] == 0:
            return F.normalize(self.empty, dim=-1).expand(B, -1)
        idx = (lengths - 1).clamp(min=0)
        last = h[torch.arange(B, device=h.device), idx]
        return torch.where((lengths > 0).unsqueeze(1), last, F.normalize(self.empty, dim=-1).expand(B, -1))

    def forward(self, batch: JaggedBatch) -> torch.Tensor:
        """User representation after each row's last event. -> ``[B, dim]`` (L2-normalized)."""
        cols, lengths, mask = self._pad(batch)
        return self._last(self._encode(cols, mask), lengths)

    def item_embeddings(self) -> torch.Tensor:
        """The L2-normalized output embedding of every item. -> ``[num_items, dim]``."""
        return F.normalize(self.item_emb.weight, dim=-1)

    def score(self, batch: JaggedBatch) -> torch.Tensor:
        """Scores of every catalog item as the next item. -> ``[B, num_items]`` (higher is better)."""
        return self(batch) @ self.item_embeddings().T / self.cfg.temperature

    # ---------------------------------------------------------------- training

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """Item frequencies ``[num_items]`` for the popularity sampler and the logQ correction.

        Counts are smoothed by +1 so that every item keeps a non-zero sampling probability.
        """
        counts = torch.as_tensor(counts)
        if counts.shape != (self.cfg.num_items,) or bool((counts < 0).any()):
            raise SchemaError(f"item counts must be a non-negative [num_items={self.cfg.num_items}] tensor, got shape {tuple(counts.shape)}")
        p = counts.to(torch.float64) + 1.0
        self.item_log_prob = (p / p.sum()).log().to(torch.float32).to(self.empty.device)

    def _sampling_log_prob(self, dev) -> torch.Tensor | None:
        if self.item_log_prob is not None:
            return self.item_log_prob.to(dev)
        return None

    def loss(self, batch: JaggedBatch, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Sampled-softmax next-item loss, averaged over the supervised positions. -> scalar.

        ``labels``: ``[B]`` integer, the item that follows each row (the target of its last
        position, and of the ``empty`` vector for rows of length 0); ``None`` supervises only the
        positions inside the rows. With ``train_all_positions`` position ``i < n_b - 1`` predicts
        event ``i + 1`` (autoregressive); otherwise only the last position is supervised.

        Candidates per query: the true next item, ``num_negatives`` sampled items (uniform or
        popularity, shared by the batch) and the in-batch next items (``labels``); a candidate equal
        to the query's target is masked out (accidental hit). With ``logq_correction`` each
        candidate's logit is reduced by ``log`` of its expected count in the pool
        (``K * q(j) + B * p(j)``; ``p`` from :meth:`set_item_counts`, uniform if never set).
        """
        cfg = self.cfg
        cols, lengths, mask = self._pad(batch)
        B, W = mask.shape
        dev = mask.device
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (B,) or labels.dtype not in (torch.int64, torch.int32):
                raise SchemaError(f"labels must be an int64/int32 tensor of shape [B={B}], got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.to(dev, torch.int64)
            self._check_ids("labels", labels, cfg.num_items)
        h = self._encode(cols, mask)
        items = cols["item_id"]

        queries, targets = [], []
        if cfg.train_all_positions and W > 1:
            inside = mask[:, 1:]  # position i has a next event inside the row
            queries.append(h[:, :-1][inside])
            targets.append(items[:, 1:][inside])
        if labels is not None:
            queries.append(self._last(h, lengths))
            targets.append(labels)
        elif not cfg.train_all_positions and W > 1:
            # No labels: the last supervised position of a row predicts the row's last event.
            keep = lengths > 1
            idx = (lengths - 2).clamp(min=0)
            ar = torch.arange(B, device=dev)
            queries.append(h[ar, idx][keep])
            targets.append(items[ar, (lengths - 1).clamp(min=0)][keep])
        if not queries or sum(q.shape[0] for q in queries) == 0:
            # Nothing to predict; a zero that still reaches the parameters keeps backward() valid.
            return self.empty.sum() * 0.0
        q = torch.cat(queries)  # [P, dim]
        t = torch.cat(targets)  # [P]

        # Candidate pool shared by every query: sampled negatives + in-batch next items.
        logp = self._sampling_log_prob(dev)
        K = cfg.num_negatives
        if K == 0:
            sampled = torch.empty(0, dtype=torch.int64, device=dev)
        elif cfg.sampler == "popularity":
            if logp is None:
                raise SchemaError("sampler='popularity' needs item counts: call model.set_item_counts(counts) first")
            sampled = torch.multinomial(logp.exp(), K, replacement=True)
        else:
            sampled = torch.randint(cfg.num_items, (K,), device=dev)
        in_batch = labels if labels is not None else t[torch.randperm(t.numel(), device=dev)[:B]]
        pool = torch.cat([sampled, in_batch])  # [C]

        emb = F.normalize(self.item_emb.weight, dim=-1)
        pos_logit = (q * emb[t]).sum(-1, keepdim=True) / cfg.temperature  # [P, 1]
        neg_logit = q @ emb[pool].T / cfg.temperature  # [P, C]
        if cfg.logq_correction:
            n = cfg.num_items
            p_pop = logp.exp() if logp is not None else torch.full((n,), 1.0 / n, device=dev)
            q_s = p_pop if cfg.sampler == "popularity" else torch.full((n,), 1.0 / n, device=dev)
            log_count = (K * q_s + in_batch.numel() * p_pop).log()
            pos_logit = pos_logit - log_count[t].unsqueeze(1)
            neg_logit = neg_logit - log_count[pool].unsqueeze(0)
        neg_logit = neg_logit.masked_fill(pool.unsqueeze(0) == t.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(t))
