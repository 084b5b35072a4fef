"""Progress for long work: a bar on a terminal, plain lines in a file or a CI log.

``progress(iterable, desc, unit)`` is a tqdm bar when stderr is a terminal; otherwise it writes
one plain line every ``every_s`` seconds and one at the end (a log never holds bar redraws).
``step(what)`` announces a stage that takes a while and says how long it took.

>>> import io
>>> out = io.StringIO()
>>> sum(progress(range(3), "count", "item", stream=out))
3
>>> out.getvalue()
'count: 3/3 items (100%) in 0.0 s\\n'
"""

from __future__ import annotations

import contextlib
import sys
import time


def _plural(unit: str) -> str:
    """``step`` -> ``steps``, ``batch`` -> ``batches``; a unit already plural (``days``) stays."""
    if unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x", "z")) else "s")


class _Lines:
    """The non-terminal form of a bar: ``desc: n/total units (pct%) in s``, at most every ``every_s``."""

    def __init__(self, iterable, desc: str, unit: str, total, stream, every_s: float):
        self.iterable, self.desc, self.unit, self.stream, self.every_s = iterable, desc, unit, stream, every_s
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = 0
        self.said = -1  # the count last written: the closing line is not written twice
        self.t0 = self.last = time.monotonic()

    def _say(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        self.said = self.n
        print(f"{self.desc}: {self.n}{of} {_plural(self.unit)}{pct} in {time.monotonic() - self.t0:.1f} s",
              file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._say()

    def set_postfix_str(self, text: str) -> None:  # the bar's status text: shown on the next line
        self.desc = self.desc.split(" [")[0] + f" [{text}]"

    def close(self) -> None:
        if self.said != self.n:
            self._say()

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update()
        self.close()


def progress(iterable=None, desc: str = "", unit: str = "it", total: int | None = None, enabled: bool = True,
             stream=None, every_s: float = 5.0):
    """A progress reporter over ``iterable`` (or a manual one with ``total``, driven by ``update``).

    Disabled: the iterable itself (or a reporter that prints nothing)."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return iterable if iterable is not None else _Lines([], desc, unit, total, open_null(), float("inf"))
    if stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream, leave=False)
    return _Lines(iterable if iterable is not None else [], desc, unit, total, stream, every_s)


def open_null():
    import io

    return io.StringIO()


@contextlib.contextmanager
def step(what: str, enabled: bool = True, stream=None):
    """Print ``what ...`` before a long stage and ``what: done in N s`` after it."""
    stream = sys.stdout if stream is None else stream
    t0 = time.monotonic()
    if enabled:
        print(f"{what} ...", file=stream, flush=True)
    yield
    if enabled:
        print(f"{what}: done in {time.monotonic() - t0:.1f} s", file=stream, flush=True)
