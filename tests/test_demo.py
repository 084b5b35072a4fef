"""``gpumat demo`` (gpumat/demo/ml1m.py) without its minutes of work: the model over MovieLens-1M ids
(ids run from 1, row 0 is padding), arguments refused before any work, its help, the layout check's
progress lines and the loss summary's windows."""

from __future__ import annotations

import dataclasses
import re

import pyarrow as pa
import pytest
import torch

from gpumat.cli import build_parser, main
from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError
from gpumat.demo import ml1m
from gpumat.demo.ml1m import check_arguments, hstu_config, loss_trend
from gpumat.host.workloads import ML1M_TENANTS, MovieLens
from gpumat.models.hstu import HSTU


def parse(*argv):
    return build_parser(["demo", *argv]).parse_args(["demo", *argv])


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


def test_tenant_choices_are_the_workloads_and_checked_by_the_parser(capsys):
    assert list(ml1m.TENANTS) == [t.name for t in ML1M_TENANTS]
    assert parse("--tenant", "full").tenant == "full" and parse().tenant == "recent"
    with pytest.raises(SystemExit) as e:
        parse("--tenant", "nope")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'nope'" in err[0] and "'session'" in err[0]
    args = parse()
    args.tenant = "nope"  # run() called from code skips the parser: the check still comes first
    with pytest.raises(SchemaError, match="tenants are"):
        check_arguments(args)


def test_help_shows_defaults_tenants_and_devices(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    options = " ".join(capsys.readouterr().out.split("options:")[1].split())  # one line, however it wrapped
    lines = {part.split()[0]: part for part in re.split(r" (?=--[a-z-]+ )", options)}
    assert "(default: 450)" in lines["--steps"] and "(default: 60)" in lines["--fatrow-steps"]
    assert "(default: 128)" in lines["--batch-size"] and "(default: 0.01)" in lines["--lr"]
    assert "{recent,session,full}" in lines["--tenant"] and "(default: recent)" in lines["--tenant"]
    assert "newest 2048 events" in lines["--tenant"]
    assert "cuda:N" in lines["--device"] and "(default: auto)" in lines["--device"]
    assert "temporary directory" in lines["--workdir"] and "empty or new" in lines["--workdir"]
    assert "progress" in lines["--quiet"] and "(default: 0)" in lines["--seed"]


@pytest.fixture
def no_work(monkeypatch):
    """The demo fails if it starts reading or building before its arguments are checked."""
    import gpumat.host.workloads as workloads

    def started(*args, **kwargs):
        raise AssertionError("the demo started its work before checking its arguments")

    monkeypatch.setattr(workloads, "load_movielens_1m", started)
    monkeypatch.setattr(workloads, "movielens_workload", started)


def test_unusable_outputs_fail_before_any_work(tmp_path, no_work, capsys):
    busy = tmp_path / "busy"
    (busy / "tier").mkdir(parents=True)  # what an earlier run leaves
    afile = tmp_path / "file"
    afile.write_text("x")
    for argv, words in ((["--workdir", busy], "is not empty: pass an empty or new directory"),
                        (["--workdir", afile], "is a file"),
                        (["--json", tmp_path], "is a directory"),
                        (["--json", afile / "r.json"], "is a file")):
        assert main(["demo", "--device", "cpu", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gpumat demo: GpumatError") and words in err[0], err
    assert list(busy.iterdir()) == [busy / "tier"]
    (tmp_path / "empty").mkdir()
    for workdir in (tmp_path / "empty", tmp_path / "new" / "dir"):  # both are fine
        check_arguments(parse("--workdir", str(workdir), "--json", str(tmp_path / "out" / "r.json")))
    assert not (tmp_path / "new").exists() and not (tmp_path / "out").exists()  # checking creates nothing


def test_loss_windows_never_overlap():
    for n in range(2, 13):
        losses = [(s, float(100 - s)) for s in range(n)]  # falling
        t = loss_trend(losses)
        k = max(1, n // 3)
        assert t["window"] == k and 2 * k <= n and t["logged"] == n
        assert t["first"] == sum(100 - s for s in range(k)) / k
        assert t["last"] == sum(100 - s for s in range(n - k, n)) / k
        assert t["falls"] is True
    flat = loss_trend([(1, 7.217), (5, 7.217)])  # the reviewer's run: two logged steps, one each
    assert flat["window"] == 1 and flat["falls"] is False
    assert loss_trend([(1, 7.0), (2, 6.0), (3, 6.5), (4, 6.9), (5, 7.1)])["falls"] is False  # 7.0 -> 7.1
    one = loss_trend([(1, 7.0)])
    assert one["falls"] is None and one["first"] == one["last"] == 7.0  # nothing to compare
    assert loss_trend([])["falls"] is None
    assert ml1m._windows(one) == "1 logged step: nothing to compare"
    assert ml1m._windows(loss_trend(losses)) == "means of the first and of the last 4 of 12 logged steps"


def test_layout_check_reports_progress_unless_quiet(tmp_path, capsys):
    from gpumat.host.fatrow import FatRowReader, write_fat_rows
    from gpumat.host.workloads import synthetic_workload

    w = synthetic_workload(tmp_path / "tier", scale=0.05, seed=3, days=3, progress=False)
    tenants = list(w.tenants[:2])
    write_fat_rows(w.examples, w.tier, tenants, tmp_path / "fat.parquet")
    reader = FatRowReader(tmp_path / "fat.parquet")
    n = -(-w.examples.num_rows // 64)
    check = ml1m._check_layouts(w.tier, w.examples, tenants, reader, 64, progress=True)
    assert check == {"batches": n, "mismatched_batches": {t.name: 0 for t in tenants}}
    err = capsys.readouterr().err.splitlines()  # stderr is no terminal here: plain lines
    assert err[-1].startswith(f"layout check: {n}/{n} batches (100%) in ")
    ml1m._check_layouts(w.tier, w.examples, tenants, FatRowReader(tmp_path / "fat.parquet"), 64, progress=False)
    assert capsys.readouterr().err == ""


def test_first_line_is_not_blank(capsys):
    ml1m._section("1. first", first=True)
    ml1m._section("2. next")
    out = capsys.readouterr().out
    assert out.startswith("== 1. first ") and "\n\n== 2. next " in out
