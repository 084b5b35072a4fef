"""gpumat/models/train.py: the training loop (its progress line, exhaustion, bad items), evaluation
(its progress line), the tie-aware metrics and the throughput meter."""

from __future__ import annotations

import re

import pytest
import torch

from gpumat.core.errors import SchemaError
from gpumat.models.train import Throughput, evaluate, popularity_eval, rank_metrics, train_steps
from test_hstu import N_ITEMS, make_batch, small_model, successor_batches


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rank_metrics_and_popularity_agree_on_ties():
    # Popularity scores as a model would produce them must give the same metrics.
    train = torch.tensor([0, 0, 1, 2, 2, 2])
    ev = torch.tensor([2, 0, 1, 3, 4])
    counts = torch.bincount(train, minlength=5).to(torch.float32)
    for k in (1, 2, 3, 10):
        ref = rank_metrics(counts.expand(len(ev), -1), ev, k=k)
        assert popularity_eval(train, ev, k=k, num_items=5) == pytest.approx(ref)
    # A 2-way tie for the last slot of the top 2 counts as half a hit.
    assert rank_metrics(torch.tensor([[3.0, 1.0, 1.0]]), torch.tensor([1]), k=2)["hr@2"] == pytest.approx(0.5)
    with pytest.raises(SchemaError):
        popularity_eval(train, torch.tensor([5]), num_items=5)


def test_throughput_meter_skips_warmup():
    meter = Throughput(warmup=1)
    meter.update(100)
    assert meter.examples == 0 and meter.rate == 0.0
    meter.update(50, events=500)
    assert meter.examples == 50 and meter.events == 500 and meter.rate > 0


def test_train_steps_rejects_bad_items_and_stops_when_exhausted():
    model = small_model(num_items=N_ITEMS).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log = train_steps(model, opt, successor_batches(0, count=3, max_len=12, batch_size=8), steps=10, progress=False)
    assert log["steps"] == 3 and log["losses"][-1][0] == 3
    with pytest.raises(SchemaError):
        train_steps(model, opt, iter([(make_batch([[1]]), torch.tensor([1, 2]))]), steps=1, progress=False)


def test_train_progress_shows_a_rate_only_once_there_is_one(capsys):
    # The first step is warm-up (not counted): a line written then must not say "0 examples/s".
    model = small_model(num_items=N_ITEMS).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_steps(model, opt, successor_batches(0, count=1, batch_size=8), steps=1, progress=True)
    last = capsys.readouterr().err.splitlines()[-1]  # stderr is no terminal here: plain lines
    assert re.fullmatch(r"train \[loss [0-9.]+\]: 1/1 steps \(100%\) in [0-9.]+ s", last), last
    train_steps(model, opt, successor_batches(0, count=3, batch_size=8), steps=3, log_every=1, progress=True)
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"train \[loss [0-9.]+, [1-9][0-9]* examples/s\]: 3/3 steps \(100%\) in [0-9.]+ s", last), last
    train_steps(model, opt, successor_batches(0, count=2, batch_size=8), steps=2, progress=False)
    assert capsys.readouterr().err == ""


def test_evaluate_reports_progress_when_asked(capsys):
    model = small_model(num_items=N_ITEMS)
    batches = list(successor_batches(5, count=3, batch_size=8))
    quiet = evaluate(model, batches, k=5)
    assert capsys.readouterr().err == ""
    assert evaluate(model, batches, k=5, progress=True) == quiet  # total: len(batches)
    assert capsys.readouterr().err.splitlines()[-1].startswith("evaluate: 3/3 batches (100%) in ")
    assert evaluate(model, iter(batches), k=5, progress=True, total=3) == quiet
    assert capsys.readouterr().err.splitlines()[-1].startswith("evaluate: 3/3 batches (100%) in ")
    evaluate(model, iter(batches), k=5, progress=True)  # a generator without a total: counts only
    assert capsys.readouterr().err.splitlines()[-1].startswith("evaluate: 3 batches in ")
