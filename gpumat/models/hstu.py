"""A compact HSTU (Hierarchical Sequential Transduction Units, Zhai et al. 2024) over jagged batches.

The model reads a :class:`~gpumat.JaggedBatch` as :func:`gpumat.materialize` returns it
(columns ``item_id``, ``ts`` and optional side features such as ``rating``) and keeps it jagged:
every pointwise step runs on the ``[N, dim]`` values of the batch (``N`` = its events, after each
row keeps its newest ``max_len``), and the attention reads values and offsets, never padding a row
to the batch's longest. Each layer is

    U, V, Q, K = split(silu(Linear(layernorm(X))))                     # pointwise projections
    A[b, h, i, j] = silu(Q_i . K_j + rab_h(i - j, bucket(ts_i - ts_j))) / max_len   for j <= i
    X <- X + Linear(layernorm(A V) * U)                                # Norm(AV) (.) U, the paper's eq. 3

Design choices that matter:

- **Jagged attention, never ``[B, H, W, W]``** (``HSTUConfig.attention``): on a GPU the Triton
  kernels of ``gpumat.kernels.jagged_hstu`` (tiles over query and key blocks, biases computed in the
  tile, causal tiles skipped); on a CPU their PyTorch twin ``gpumat.kernels.pt_jagged_hstu``
  (query blocks of rows grouped by length, ``O(W x block)`` memory, checkpointed). ``"dense"``
  keeps the original padded formulation as the reference.
- **Causal rows = padding invariance.** A query ``i`` only attends to ``j <= i`` of its own row, so
  the relative position ``i - j`` and every output are independent of the other rows of the batch.
- **Divide by the constant ``max_len``**, not by the padded width (GR divides by the padded ``N``,
  which makes outputs depend on the other rows of the batch) nor by the row length (which would
  let the number of future events change earlier outputs). The constant keeps the pointwise
  attention's "intensity" signal and is both causal and padding-invariant.
- **Newest ``max_len`` events** are kept when a row is longer, as SPEC §2 does for tenants.
- **Empty rows** (``n_b == 0``) get a learned ``empty`` representation: a user without history
  still has a well-defined (popularity-like, once trained) query vector, never NaN.
- **Tied, L2-normalized embeddings** score items as ``cos(user, item) / temperature``, as in the
  public HSTU retrieval setup; the input uses the same table scaled by ``sqrt(dim)``.

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
>>> h, offsets = model.encode_jagged(batch)  # per-event outputs, jagged
>>> h.shape, offsets.tolist()
(torch.Size([5, 16]), [0, 3, 3, 5])
>>> h, mask = model.encode(batch)           # the same, padded
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
from gpumat.kernels.pt_jagged_hstu import bucket_bias, dense_hstu_attention, pt_jagged_hstu_attention, time_bucket_index

__all__ = ["HSTUConfig", "HSTU", "HSTULayer", "time_buckets"]

_SAMPLERS = ("uniform", "popularity")
_NEGATIVE_SAMPLING = ("shared", "per_query")
_TIME_BIAS_QUERY = ("own", "next")
# Per-query negatives read every item's logit (one [queries, num_items] matmul) instead of gathering
# [queries, K, dim] embeddings while the catalog has at most this many items per negative.
FULL_LOGITS_PER_NEGATIVE = 64
_ATTENTION = ("auto", "triton", "pytorch", "dense")
# Query positions per block of the PyTorch twin: [G, H, 256, W] fp32 per block, and large enough
# that rows up to 256 events (most of a short tenant) run as one block, as fast as the dense layer.
TWIN_BLOCK = 256


@dataclass
class HSTUConfig:
    """Size and training knobs of :class:`HSTU`.

    - ``num_items``: catalog size; ``item_id`` values lie in ``[0, num_items)``.
    - ``dim``, ``num_layers``, ``num_heads``: model width, depth, heads (``dim % num_heads == 0``).
    - ``max_len``: longest sequence the model reads; longer rows keep their newest ``max_len`` events.
    - ``num_negatives``: uniformly (or popularity-) sampled negatives, per step or per query as
      ``negative_sampling`` says; the batch's own next items (``labels``) are added as in-batch
      negatives (``in_batch_negatives``).
    - ``negative_sampling``: ``"shared"`` (default) draws one pool of ``num_negatives`` per step
      for every supervised position; ``"per_query"`` draws ``num_negatives`` for every supervised
      position, as generative-recommenders' published runs do (its local negatives sampler): the
      same expected gradient, far less noise on the item embeddings, ``[queries, K, dim]`` more
      memory for the gathered negatives.
    - ``time_bias_query``: the time a query position is taken at in the time bias
      ``bucket(|t_query - ts_j|)``: ``"own"`` (default: its own event's ``ts``) or ``"next"`` (the
      next event's, and for a row's last position the ``query_ts`` given to :meth:`HSTU.loss`,
      :meth:`HSTU.forward`, :meth:`HSTU.score`, e.g. the request's time; its own ``ts`` when
      none is given), as generative-recommenders' relative bias does.
    - ``absolute_positions``: add a learned embedding of each event's position in its kept window
      (0 = oldest) to the scaled item embedding, before the input dropout, as
      generative-recommenders' input preprocessor does; the layers' relative biases stay.
    - ``side_features``: ``{column: cardinality}`` of extra categorical event columns (e.g.
      ``{"rating": 6}``) whose embeddings are added to the item embedding.
    - ``num_time_buckets``: log buckets of ``|ts_i - ts_j|`` for the relative attention bias;
      0 turns the time bias off (then ``ts`` is not read).
    - ``sampler``: ``"uniform"`` or ``"popularity"`` (needs :meth:`HSTU.set_item_counts`).
    - ``logq_correction``: subtract ``log`` of each candidate's expected count in the sampled pool.
    - ``in_batch_negatives``: add the batch's next items (``labels``) to the sampled negatives
      (default). They are popularity-distributed: without ``logq_correction`` they push popular items
      down. ``False`` keeps the sampled negatives only, as generative-recommenders' published ML-1M
      runs (``sampling_strategy = "local"``: uniform over the catalog).
    - ``train_all_positions``: supervise every position (autoregressive), not only the last.
    - ``supervise_last``: 0 (default) supervises as ``train_all_positions`` says; ``n > 0``
      supervises only the newest ``n`` positions of every row (the label's included), so tenants
      that differ only in ``max_len`` train on the same targets. Then the last layer computes its
      attention only for those queries (and :meth:`HSTU.forward` / :meth:`HSTU.score` only for the
      last one): ``O(n x W)`` instead of ``O(W^2)`` in that layer, exact since no other output of
      the last layer is read. A one-layer model reads ultra-long rows at the cost of its pointwise
      projections.
    - ``check_ids``: range-check ids at the boundary (one device sync per call; turn off in a
      GPU training loop once the data is known to be clean).
    - ``attention``: ``"auto"`` (the Triton kernels on CUDA, the PyTorch twin elsewhere),
      ``"triton"``, ``"pytorch"`` (jagged, blocked, checkpointed) or ``"dense"`` (the original padded
      ``[B, H, W, W]`` layer: the reference, ``O(W^2)`` memory per row).

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
    negative_sampling: str = "shared"
    time_bias_query: str = "own"
    absolute_positions: bool = False
    logq_correction: bool = False
    in_batch_negatives: bool = True
    train_all_positions: bool = True
    supervise_last: int = 0
    check_ids: bool = True
    attention: str = "auto"

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
        _pos_int("supervise_last", 0)
        if self.dim % self.num_heads:
            raise SchemaError(f"HSTUConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.attention not in _ATTENTION:
            raise SchemaError(f"HSTUConfig.attention must be one of {_ATTENTION}, got {self.attention!r}")
        if self.time_bias_query not in _TIME_BIAS_QUERY:
            raise SchemaError(f"HSTUConfig.time_bias_query must be one of {_TIME_BIAS_QUERY}, got {self.time_bias_query!r}")
        if self.negative_sampling not in _NEGATIVE_SAMPLING:
            raise SchemaError(f"HSTUConfig.negative_sampling must be one of {_NEGATIVE_SAMPLING}, got {self.negative_sampling!r}")
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
    wrap around. (The model never builds this ``[W, W]`` tensor: the attention computes each
    bucket inside its tile; this is the definition, for inspection and tests.)

    >>> time_buckets(torch.tensor([[0, 1, 10, 10**6]]), 128)[0, 3].tolist()
    [45, 45, 45, 0]
    """
    return time_bucket_index(ts, ts, num_buckets)


class _Rows:
    """The jagged layout every layer of one forward shares: ``offsets [B + 1]``, ``ts [N]`` (None
    without time bias), ``ts_query [N]`` (the queries' times; None: ``ts``) and the attention
    implementation to use."""

    __slots__ = ("offsets", "ts", "attention", "ts_query")

    def __init__(self, offsets, ts, attention, ts_query=None):
        self.offsets, self.ts, self.attention, self.ts_query = offsets, ts, attention, ts_query


def _resolve_attention(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        from gpumat.kernels.jagged_hstu import triton_available

        if triton_available(device)[0]:
            return "triton"
    return "pytorch"


class HSTULayer(nn.Module):
    """One HSTU layer with its own relative attention bias (positions and time buckets).

    ``forward(x [N, D], rows) -> [N, D]`` on the jagged values of a batch (``rows``: the batch's
    offsets, timestamps and attention implementation, shared by the layers).
    """

    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.dim, self.heads, self.max_len = cfg.dim, cfg.num_heads, cfg.max_len
        self.uvqk = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        # rab = position term (indexed by i - j >= 0 under the causal mask) + time term, per head.
        self.pos_bias = nn.Embedding(cfg.max_len, cfg.num_heads)
        self.time_bias = nn.Embedding(cfg.num_time_buckets, cfg.num_heads) if cfg.num_time_buckets else None
        nn.init.zeros_(self.pos_bias.weight)
        if self.time_bias is not None:
            nn.init.zeros_(self.time_bias.weight)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rows: _Rows) -> torch.Tensor:
        N, D = x.shape
        H, dh = self.heads, D // self.heads
        u, v, q, k = F.silu(self.uvqk(F.layer_norm(x, (D,)))).split(D, dim=-1)
        # [N, H, dh] views of the fused projection: the kernels read them in place.
        q, k, v = (t.view(N, H, dh) for t in (q, k, v))
        tw = self.time_bias.weight if self.time_bias is not None else None
        ts = rows.ts if tw is not None else None
        args = (q, k, v, ts, rows.offsets, self.pos_bias.weight, tw, self.max_len)
        kw = {"ts_query": rows.ts_query} if ts is not None and rows.ts_query is not None else {}
        if rows.attention == "triton":
            from gpumat.kernels.jagged_hstu import triton_jagged_hstu_attention

            o = triton_jagged_hstu_attention(*args, **kw)
        elif rows.attention == "dense":
            o = dense_hstu_attention(*args, **kw)
        else:
            o = pt_jagged_hstu_attention(*args, block=TWIN_BLOCK, **kw)
        o = F.layer_norm(o.reshape(N, D), (D,)) * u
        return x + self.dropout(self.out(o))

    def forward_newest(self, x: torch.Tensor, rows: _Rows, qpos: torch.Tensor) -> torch.Tensor:
        """The layer's output at positions ``qpos [B, S]`` of each row only (the newest ``S``;
        negative where a row is shorter: those outputs are finite and meaningless).

        ``x [N, D]`` -> ``[B, S, D]``, equal to ``forward(x, rows)`` at the same positions: the keys
        and values of every event, queries only where asked; ``[B, H, S, W]`` scores, no ``[W, W]``.
        """
        N, D = x.shape
        H, dh = self.heads, D // self.heads
        B, S = qpos.shape
        offsets = rows.offsets
        lengths = offsets[1:] - offsets[:-1]
        W = int(lengths.max()) if B else 0
        w = self.uvqk.weight
        b = self.uvqk.bias
        xn = F.layer_norm(x, (D,))
        # k, v of every event (the split order of the fused projection is u, v, q, k)
        vk = F.silu(F.linear(xn, torch.cat([w[D:2 * D], w[3 * D:]]), torch.cat([b[D:2 * D], b[3 * D:]])))
        j = torch.arange(W, device=x.device)
        kidx = (offsets[:-1, None] + j).clamp_(max=max(N - 1, 0))  # [B, W]
        kv = vk[kidx]  # [B, W, 2D]
        v, k = (t.reshape(B, W, H, dh).transpose(1, 2) for t in kv.split(D, dim=-1))  # [B, H, W, dh]
        qidx = (offsets[:-1, None] + qpos.clamp(min=0)).clamp_(max=max(N - 1, 0))  # [B, S]
        uq = F.silu(F.linear(xn[qidx], torch.cat([w[:D], w[2 * D:3 * D]]), torch.cat([b[:D], b[2 * D:3 * D]])))
        u, q = uq.split(D, dim=-1)
        q = q.reshape(B, S, H, dh).transpose(1, 2)  # [B, H, S, dh]
        rel = (qpos[:, :, None] - j).clamp(0, self.pos_bias.weight.shape[0] - 1)  # [B, S, W]
        s = q @ k.transpose(-1, -2) + F.embedding(rel, self.pos_bias.weight).permute(0, 3, 1, 2)
        if self.time_bias is not None:
            s = s + bucket_bias(self.time_bias.weight,
                                time_bucket_index((rows.ts if rows.ts_query is None else rows.ts_query)[qidx],
                                                  rows.ts[kidx], self.time_bias.weight.shape[0]))
        causal = ((j <= qpos[:, :, None]) & (j < lengths[:, None, None])).to(s.dtype) / self.max_len  # [B, S, W]
        o = (F.silu(s) * causal.unsqueeze(1)) @ v  # [B, H, S, dh]
        o = F.layer_norm(o.transpose(1, 2).reshape(B, S, D), (D,)) * u
        return x[qidx] + self.dropout(self.out(o))


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
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.absolute_positions else None
        if self.pos_emb is not None:  # generative-recommenders: truncated normal, std sqrt(1 / dim)
            nn.init.trunc_normal_(self.pos_emb.weight, std=math.sqrt(1.0 / cfg.dim))
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

    def _jagged(self, batch: JaggedBatch):
        """The newest ``max_len`` events of every row, jagged, on the model's device.

        -> ``(cols {c: [N] int64}, offsets [B + 1], lengths [B], width)``, ``width`` the longest
        kept row. Truncation gathers (one host sync for the kept count) only when a row is longer
        than ``max_len``; ``batch.max_seq_len`` is free for a batch gpumat built.
        """
        if not isinstance(batch, JaggedBatch):
            raise SchemaError(f"HSTU expects a JaggedBatch, got {type(batch).__name__}")
        missing = [c for c in self._columns if c not in batch.values]
        if missing:
            raise SchemaError(f"HSTU: batch lacks column(s) {missing}; it has {sorted(batch.values)}")
        for c in self._columns:
            if batch.values[c].dtype not in (torch.int64, torch.int32):
                raise SchemaError(f"HSTU: column {c!r} must be int64 or int32, got {batch.values[c].dtype}")
        dev = self.empty.device
        L = self.cfg.max_len
        offsets = batch.offsets.to(dev, torch.int64)
        B = offsets.numel() - 1
        longest = batch.max_seq_len
        src = None
        if longest > L:
            full = offsets[1:] - offsets[:-1]
            lengths = full.clamp(max=L)
            new_offsets = torch.cat([offsets[:1] * 0, lengths.cumsum(0)])
            n = int(new_offsets[-1])
            row = torch.repeat_interleave(torch.arange(B, device=dev), lengths, output_size=n)
            # Keep the newest events: row b starts at offsets[b+1] - lengths[b] after truncation.
            src = (offsets[1:] - lengths)[row] + torch.arange(n, device=dev) - new_offsets[row]
            offsets = new_offsets
        else:
            lengths = offsets[1:] - offsets[:-1]
        cols = {}
        for c in self._columns:
            v = batch.values[c].to(dev)
            cols[c] = (v if src is None else v[src]).to(torch.int64)
        if self.cfg.check_ids:
            self._check_ids("item_id", cols["item_id"], self.cfg.num_items)
            for c, nc in self.cfg.side_features.items():
                self._check_ids(c, cols[c], nc)
        return cols, offsets, lengths, min(longest, L) if B > 0 else 0

    # ---------------------------------------------------------------- model

    def encode_jagged(self, batch: JaggedBatch):
        """Per-event outputs, jagged. -> ``(h [N, dim] L2-normalized, offsets [B + 1])``.

        Row ``b`` keeps its newest ``min(n_b, max_len)`` events; ``h[offsets[b] + i]`` summarizes
        the events ``0..i`` of the row (causal) and is the query for the event after position ``i``.
        """
        cols, offsets, _, _ = self._jagged(batch)
        return self._encode(cols, offsets), offsets

    def encode(self, batch: JaggedBatch):
        """Per-position outputs, padded. -> ``(h [B, W, dim] L2-normalized, zero on padding; mask [B, W] bool)``.

        ``W = min(max(lengths), max_len)``; ``h[mask]`` is :meth:`encode_jagged`'s ``h``. Only the
        output is padded: the layers run jagged.
        """
        cols, offsets, lengths, width = self._jagged(batch)
        h = self._encode(cols, offsets)
        mask = torch.arange(width, device=h.device) < lengths.unsqueeze(1)
        padded = h.new_zeros(mask.numel(), h.shape[1]).index_copy(0, mask.reshape(-1).nonzero().squeeze(1), h)
        return padded.view(*mask.shape, h.shape[1]), mask

    def _inputs(self, cols, offsets):
        """The layers' input: scaled item (+ side feature) embeddings, the absolute position
        embedding when configured, input dropout. -> ``[N, dim]``."""
        x = self.item_emb(cols["item_id"])
        for c, emb in self.side_emb.items():
            x = x + emb(cols[c])
        x = x * math.sqrt(self.cfg.dim)
        if self.pos_emb is not None and x.shape[0] > 0:
            N = x.shape[0]
            starts = torch.repeat_interleave(offsets[:-1], offsets[1:] - offsets[:-1], output_size=N)
            # (clamped: a batch whose known_max_len understates its rows keeps more than max_len)
            x = x + self.pos_emb((torch.arange(N, device=x.device) - starts).clamp_(max=self.cfg.max_len - 1))
        return self.input_dropout(x)

    def _rows(self, cols, offsets, device, query_ts=None) -> _Rows:
        """The layers' shared layout; with ``time_bias_query="next"`` each position's query time is
        the next event's ``ts`` and a row's last the row's ``query_ts`` (its own ``ts`` without)."""
        cfg = self.cfg
        ts = cols["ts"] if cfg.num_time_buckets else None
        tsq = None
        if ts is not None and cfg.time_bias_query == "next" and ts.numel():
            lengths = offsets[1:] - offsets[:-1]
            last = (offsets[1:] - 1)[lengths > 0]  # the last event of every non-empty row
            tsq = torch.empty_like(ts)
            tsq[:-1] = ts[1:]  # row ends read the next row's first event here: overwritten below
            tsq[last] = ts[last] if query_ts is None else query_ts[lengths > 0]
        return _Rows(offsets, ts, _resolve_attention(cfg.attention, device), tsq)

    def _query_ts(self, query_ts, B: int, dev):
        if query_ts is None:
            return None
        query_ts = torch.as_tensor(query_ts)
        if query_ts.shape != (B,) or query_ts.dtype not in (torch.int64, torch.int32):
            raise SchemaError(f"query_ts must be an int64/int32 tensor of shape [B={B}], got {query_ts.dtype} "
                              f"{tuple(query_ts.shape)}")
        return query_ts.to(dev, torch.int64)

    def _encode(self, cols, offsets, query_ts=None):
        x = self._inputs(cols, offsets)
        if x.shape[0] > 0:
            rows = self._rows(cols, offsets, x.device, query_ts)
            for layer in self.layers:
                x = layer(x, rows)
        return F.normalize(x, dim=-1)

    def _encode_newest(self, cols, offsets, lengths, S: int, query_ts=None):
        """Outputs at the newest ``S`` positions of every row (the last layer computes only those).

        -> ``(h [B, S, dim]`` L2-normalized, ``qpos [B, S]``: the positions, negative where a row is
        shorter than ``S``; those entries of ``h`` are meaningless).
        """
        cfg = self.cfg
        qpos = lengths[:, None] - S + torch.arange(S, device=lengths.device)
        x = self._inputs(cols, offsets)
        B = lengths.numel()
        if x.shape[0] == 0:
            return x.new_zeros(B, S, cfg.dim) + self.empty.sum() * 0.0, qpos
        rows = self._rows(cols, offsets, x.device, query_ts)
        for layer in self.layers[:-1]:
            x = layer(x, rows)
        if len(self.layers):
            h = self.layers[-1].forward_newest(x, rows, qpos)
        else:
            h = x[(offsets[:-1, None] + qpos.clamp(min=0)).clamp_(max=x.shape[0] - 1)]
        return F.normalize(h, dim=-1), qpos

    def _last(self, h, offsets, lengths):
        """``h`` at the last event of each row; the learned ``empty`` vector for empty rows. -> ``[B, dim]``."""
        B = lengths.numel()
        empty = F.normalize(self.empty, dim=-1).expand(B, -1)
        if h.shape[0] == 0:
            return empty
        last = h[(offsets[1:] - 1).clamp(min=0)]
        return torch.where((lengths > 0).unsqueeze(1), last, empty)

    def forward(self, batch: JaggedBatch, query_ts=None) -> torch.Tensor:
        """User representation after each row's last event. -> ``[B, dim]`` (L2-normalized).
        ``query_ts [B]``: the time of the request (``time_bias_query="next"``)."""
        cols, offsets, lengths, _ = self._jagged(batch)
        query_ts = self._query_ts(query_ts, lengths.numel(), offsets.device)
        if self.cfg.supervise_last:
            h, _ = self._encode_newest(cols, offsets, lengths, 1, query_ts)
            empty = F.normalize(self.empty, dim=-1).expand(lengths.numel(), -1)
            return torch.where((lengths > 0).unsqueeze(1), h[:, 0], empty)
        return self._last(self._encode(cols, offsets, query_ts), offsets, lengths)

    def item_embeddings(self) -> torch.Tensor:
        """The L2-normalized output embedding of every item. -> ``[num_items, dim]``."""
        return F.normalize(self.item_emb.weight, dim=-1)

    def score(self, batch: JaggedBatch, query_ts=None) -> torch.Tensor:
        """Scores of every catalog item as the next item. -> ``[B, num_items]`` (higher is better)."""
        return self(batch, query_ts) @ self.item_embeddings().T / self.cfg.temperature

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

    def loss(self, batch: JaggedBatch, labels: torch.Tensor | None = None, query_ts=None) -> torch.Tensor:
        """Sampled-softmax next-item loss, averaged over the supervised positions. -> scalar.

        ``labels``: ``[B]`` integer, the item that follows each row (the target of its last
        position, and of the ``empty`` vector for rows of length 0); ``None`` supervises only the
        positions inside the rows. With ``train_all_positions`` position ``i < n_b - 1`` predicts
        event ``i + 1`` (autoregressive); otherwise only the last position is supervised.

        Candidates per query: the true next item, ``num_negatives`` sampled items (uniform or
        popularity; one pool for the step, or drawn per query: ``negative_sampling``) and the
        in-batch next items (``labels``); a candidate equal
        to the query's target is masked out (accidental hit). With ``logq_correction`` each
        candidate's logit is reduced by ``log`` of its expected count in the pool
        (``K * q(j) + B * p(j)``; ``p`` from :meth:`set_item_counts`, uniform if never set).
        ``query_ts [B]``: the request times (``time_bias_query="next"``: the last position's query time).
        """
        cfg = self.cfg
        cols, offsets, lengths, width = self._jagged(batch)
        B = lengths.numel()
        query_ts = self._query_ts(query_ts, B, offsets.device)
        dev = offsets.device
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (B,) or labels.dtype not in (torch.int64, torch.int32):
                raise SchemaError(f"labels must be an int64/int32 tensor of shape [B={B}], got {labels.dtype} {tuple(labels.shape)}")
            labels = labels.to(dev, torch.int64)
            self._check_ids("labels", labels, cfg.num_items)
        items = cols["item_id"]
        N = items.numel()
        queries, targets = [], []
        if cfg.supervise_last and width > 0:
            S = min(cfg.supervise_last, width)
            h, qpos = self._encode_newest(cols, offsets, lengths, S, query_ts)  # [B, S, dim]
            # position p < n_b - 1 predicts event p + 1; the row's last position predicts its label
            inside = (qpos >= 0) & (qpos < (lengths - 1)[:, None])
            nxt = (offsets[:-1, None] + qpos + 1).clamp(0, max(N - 1, 0))
            queries.append(h[inside])
            targets.append(items[nxt][inside])
            if labels is not None:
                empty = F.normalize(self.empty, dim=-1).expand(B, -1)
                queries.append(torch.where((lengths > 0).unsqueeze(1), h[:, -1], empty))
                targets.append(labels)
        else:
            h = self._encode(cols, offsets, query_ts)  # [N, dim], jagged
            if cfg.train_all_positions and width > 1:
                # Event p is the last of its row iff p + 1 is a row end (empty rows repeat an end).
                ends = torch.zeros(N + 1, dtype=torch.bool, device=dev)
                ends[offsets[1:]] = True
                inside = ~ends[1:]
                queries.append(h[inside])
                targets.append(items.roll(-1)[inside])
            if labels is not None:
                queries.append(self._last(h, offsets, lengths))
                targets.append(labels)
            elif not cfg.train_all_positions and width > 1:
                # No labels: the last supervised position of a row predicts the row's last event.
                keep = lengths > 1
                end = offsets[1:][keep]
                queries.append(h[end - 2])
                targets.append(items[end - 1])
        if not queries or sum(q.shape[0] for q in queries) == 0:
            # Nothing to predict; a zero that still reaches the parameters keeps backward() valid.
            return self.empty.sum() * 0.0
        q = torch.cat(queries)  # [P, dim]
        t = torch.cat(targets)  # [P]

        # Candidates: sampled negatives (one pool for the step, or K per query) + in-batch next items.
        logp = self._sampling_log_prob(dev)
        K = cfg.num_negatives
        P = t.numel()
        shape = (P, K) if cfg.negative_sampling == "per_query" else (K,)
        if K == 0:
            sampled = torch.empty(0, dtype=torch.int64, device=dev)
        elif cfg.sampler == "popularity":
            if logp is None:
                raise SchemaError("sampler='popularity' needs item counts: call model.set_item_counts(counts) first")
            sampled = torch.multinomial(logp.exp(), math.prod(shape), replacement=True).view(shape)
        else:
            sampled = torch.randint(cfg.num_items, shape, device=dev)
        if not cfg.in_batch_negatives:
            in_batch = torch.empty(0, dtype=torch.int64, device=dev)
        else:
            in_batch = labels if labels is not None else t[torch.randperm(t.numel(), device=dev)[:B]]

        emb = F.normalize(self.item_emb.weight, dim=-1)
        pos_logit = (q * emb[t]).sum(-1, keepdim=True) / cfg.temperature  # [P, 1]
        if sampled.dim() == 2 and K:  # per query: [P, K] ids
            if cfg.num_items <= FULL_LOGITS_PER_NEGATIVE * K:
                # A small catalog: every item's logit in one matmul, then each query's K. Same values;
                # on a CPU about 2x faster than gathering [P, K, dim] embeddings and scattering back.
                own = (q @ emb.T).gather(1, sampled) / cfg.temperature
            else:
                own = torch.einsum("pd,pkd->pk", q, emb[sampled]) / cfg.temperature
            shared_ids = in_batch
        else:
            own = q.new_empty(P, 0)
            shared_ids = torch.cat([sampled, in_batch])
        shared = q @ emb[shared_ids].T / cfg.temperature  # [P, C]
        neg_ids = torch.cat([sampled.view(P, -1) if sampled.dim() == 2 else sampled.new_empty(P, 0),
                             shared_ids.unsqueeze(0).expand(P, -1)], dim=1)  # [P, K' + C]
        neg_logit = torch.cat([own, shared], dim=1)
        if cfg.logq_correction:
            n = cfg.num_items
            p_pop = logp.exp() if logp is not None else torch.full((n,), 1.0 / n, device=dev)
            q_s = p_pop if cfg.sampler == "popularity" else torch.full((n,), 1.0 / n, device=dev)
            log_count = (K * q_s + in_batch.numel() * p_pop).log()
            pos_logit = pos_logit - log_count[t].unsqueeze(1)
            neg_logit = neg_logit - log_count[neg_ids]
        neg_logit = neg_logit.masked_fill(neg_ids == t.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(t))
