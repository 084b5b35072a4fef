"""gpumat/core/progress.py: plain lines when the stream is not a terminal (one every 5 s and one at
the end, never the same line twice), a tqdm bar when it is, nothing when disabled; ``step``."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

import gpumat.core.progress as progress_mod
from gpumat.core.progress import progress, step


class Clock:
    """A fake ``time.monotonic``: the test moves it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod, "time", SimpleNamespace(monotonic=c))
    return c


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_5_s_and_one_at_the_end(clock):
    out = io.StringIO()
    for _ in progress(range(10), "count", "item", stream=out):
        clock.now += 2.0  # each item takes 2 s: a line after items 3, 6 and 9 (6 s, 12 s, 18 s)
    assert out.getvalue().splitlines() == [
        "count: 3/10 items (30%) in 6.0 s",
        "count: 6/10 items (60%) in 12.0 s",
        "count: 9/10 items (90%) in 18.0 s",
        "count: 10/10 items (100%) in 20.0 s",
    ]


def test_no_duplicate_closing_line(clock):
    out = io.StringIO()
    for _ in progress(range(5), "count", "item", stream=out):
        clock.now += 5.0  # a line after every item, the last one included
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1] == "count: 5/5 items (100%) in 25.0 s"
    quick = io.StringIO()
    assert list(progress(range(3), "fast", "item", stream=quick)) == [0, 1, 2]
    assert quick.getvalue() == "fast: 3/3 items (100%) in 0.0 s\n"  # shorter than 5 s: the closing line only


def test_manual_reporter_without_a_length(clock):
    out = io.StringIO()
    bar = progress(desc="train", unit="step", total=4, stream=out)
    bar.update(1)
    bar.set_postfix_str("loss 7.2")
    clock.now += 5.0
    bar.update(2)
    bar.close()  # the count 3 was written already: no second line
    assert out.getvalue().splitlines() == ["train [loss 7.2]: 3/4 steps (75%) in 5.0 s"]
    bar.update(1)
    bar.set_postfix_str("loss 6.9")  # replaces the previous status
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert out.getvalue().splitlines()[1:] == ["train [loss 6.9]: 4/4 steps (100%) in 5.0 s"]
    gen = io.StringIO()
    list(progress((x for x in range(3)), "gen", "batch", stream=gen))  # no length, no total: a count
    assert gen.getvalue() == "gen: 3 batches in 0.0 s\n"
    days = io.StringIO()
    list(progress(range(2), "replay", "days", stream=days))
    assert days.getvalue() == "replay: 2/2 days (100%) in 0.0 s\n"  # a plural unit stays as it is


def test_terminal_gets_a_bar_and_disabled_gets_nothing():
    from tqdm.auto import tqdm

    term = Terminal()
    bar = progress(range(3), "count", "item", stream=term)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    items = [1, 2]
    assert progress(items, "count", enabled=False) is items  # the iterable itself
    out = io.StringIO()
    silent = progress(desc="x", total=3, enabled=False, stream=out)
    silent.update(3)
    silent.set_postfix_str("y")
    silent.close()
    assert out.getvalue() == ""


def test_default_stream_is_stderr(capsys):
    list(progress(range(2), "count", "item"))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "count: 2/2 items (100%) in 0.0 s\n"


def test_step_says_what_and_how_long(clock):
    out = io.StringIO()
    with step("building", stream=out):
        clock.now += 3.25
    assert out.getvalue() == "building ...\nbuilding: done in 3.2 s\n"
    quiet = io.StringIO()
    with step("building", enabled=False, stream=quiet):
        pass
    assert quiet.getvalue() == ""
