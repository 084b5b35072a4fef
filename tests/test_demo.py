"""The demo's model over MovieLens-1M ids (gpumat/demo/ml1m.py): ids run from 1, row 0 is padding."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest
import torch

from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError
from gpumat.demo.ml1m import hstu_config
from gpumat.host.workloads import ML1M_TENANTS, MovieLens
from gpumat.models.hstu import HSTU


def test_hstu_covers_every_item_id_and_keeps_zero_for_padding():
    titles = pa.array(["A (1990)", "B (1991)", "C (1992)"])
    data = MovieLens(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 3], "item_id": [1, 3, 2], "rating": [5, 4, 3]}),
                     titles)
    cfg = hstu_config(data, ML1M_TENANTS[0])
    assert cfg.num_items == data.max_item_id + 1 == 4
    cfg = dataclasses.replace(cfg, dim=8, num_heads=2, num_negatives=4, check_ids=True)
    torch.manual_seed(0)
    model = HSTU(cfg)
    batch = JaggedBatch(torch.tensor([0, 2, 3]), {"item_id": torch.tensor([1, 3, 2]), "rating": torch.tensor([5, 4, 3]),
                                                  "ts": torch.tensor([1, 2, 3])})
    loss = model.loss(batch, torch.tensor([data.max_item_id, 1]))  # the largest id is a valid label
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(SchemaError, match="item_id"):
        model.loss(JaggedBatch(torch.tensor([0, 1]), {"item_id": torch.tensor([4]), "rating": torch.tensor([1]),
                                                      "ts": torch.tensor([1])}))
