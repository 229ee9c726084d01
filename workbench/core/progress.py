"""Progress bars that move per batch, not per shard.

Long work is written in shards (the unit of resuming), and a default shard can take many minutes.
A driver opens one bar for the whole run with `progress_bar(...)` and, while a shard runs in this process,
`per_batch(bar)` lets the code deep inside (the caching loop, an audit's generation batches) call
`advance(n)` after each batch; when the shard is done the driver calls `finish_shard(bar, rows)`,
which adds only what the batches did not already count. A shard computed elsewhere (a Ray worker)
advances the bar once, when it arrives. Bars write to stderr, name their unit, and are off under
`progress=False` (tests, `--json`).
"""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from typing import Callable, Iterator

from tqdm.auto import tqdm

_sink: ContextVar[Callable[[int], None] | None] = ContextVar("workbench_progress", default=None)


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A bar of `total` units (named: "text", "row", "token", "cell") on stderr."""
    new = tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True
    )
    new.counted_in_shard = 0
    return new


@contextlib.contextmanager
def per_batch(shown: tqdm) -> Iterator[None]:
    """While inside, `advance(n)` moves `shown` (and counts towards the running shard)."""

    def update(n: int) -> None:
        shown.counted_in_shard += n
        shown.update(n)

    token = _sink.set(update)
    try:
        yield
    finally:
        _sink.reset(token)


def advance(n: int) -> None:
    """`n` more units done; nothing when no bar listens (another process, or no bar at all)."""
    update = _sink.get()
    if update is not None:
        update(n)


def finish_shard(shown: tqdm, units: int) -> None:
    """A shard of `units` is done: add what its batches did not already count."""
    shown.update(max(units - shown.counted_in_shard, 0))
    shown.counted_in_shard = 0


class BarFromFirstStep:
    """A bar that appears with the first finished step, so work that fails its checks before any
    step (memory, bad input) leaves one error line and no empty bar. `update(n)`; a context."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True):
        self.settings = (total, desc, unit, enabled)
        self.shown: tqdm | None = None

    def update(self, n: int) -> None:
        if self.shown is None:
            self.shown = progress_bar(*self.settings)
        self.shown.update(n)

    def __enter__(self) -> "BarFromFirstStep":
        return self

    def __exit__(self, *exc) -> None:
        if self.shown is not None:
            self.shown.close()
