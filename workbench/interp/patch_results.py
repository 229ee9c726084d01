"""What patching returns: a `PatchingResult` per patch kind and, for an attribution estimate, its
`SelfCheck` against exact patching of some of its own cells.

Exact patching (`workbench.interp.patching`) and every attribution method
(`workbench.interp.attribution`) return the same `PatchingResult`, so an estimate and the exact
values compare cell by cell; `summarise_check` turns exact values of checked cells into the
estimate's `SelfCheck` (correlations, recall of the exact top k, largest error, a verdict).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from ..core.display import Tabled


@dataclass(frozen=True)
class PatchingResult(Tabled):
    """Normalised metric per patch (0 = corrupted, 1 = clean).

    kind: what was patched (see module docstring); method: "exact", or an attribution
    method of `workbench.interp.attribution.METHODS` ("atp", "atp*", "eap-ig").
    values: Float[Tensor, ...] with one axis per entry of `axes`.
    axes: axis names, e.g. ("layer", "pos"); labels: tick labels per axis.
    clean_metric, corrupt_metric: the metric's mean over pairs on the clean and corrupted runs.
    check: for an attribution result, its self-check against exact patching
    (`workbench.interp.patch_results.SelfCheck`), when one was run.
    """

    kind: str
    method: str
    values: Float[torch.Tensor, "..."]
    axes: tuple[str, ...]
    labels: tuple[list[str], ...]
    clean_metric: float
    corrupt_metric: float
    tokens: list[str] = field(default_factory=list)
    seconds: float = 0.0
    check: SelfCheck | None = None

    @property
    def shape(self) -> torch.Size:
        """The shape of `values`: one size per axis, e.g. [layer, head]."""
        return self.values.shape

    def __getitem__(self, index) -> torch.Tensor:
        return self.values[index]

    def __repr__(self) -> str:
        dims = " x ".join(f"{n} {axis}s" for n, axis in zip(self.values.shape, self.axes))
        top = int(self.values.abs().argmax())
        where = ", ".join(
            str(self.labels[a][int(i)])
            for a, i in enumerate(torch.unravel_index(torch.tensor(top), self.values.shape))
        )
        checked = (
            ""
            if self.check is None
            else (
                f"; self-check r {self.check.pearson:.3f}, "
                f"{'passed' if self.check.passed else 'FAILED'}"
            )
        )
        return (
            f"PatchingResult({self.kind}, {self.method}, {dims}; largest |value| "
            f"{float(self.values.flatten()[top]):+.3f} at {where}{checked})"
        )

    def to_frame(self):
        """One row per cell: its index along each axis, its labels and the value."""
        rows = []
        for index in (
            torch.cartesian_prod(*[torch.arange(n) for n in self.values.shape])
            .reshape(-1, self.values.dim())
            .tolist()
        ):
            row = {axis: i for axis, i in zip(self.axes, index)}
            row.update(
                {
                    f"{axis}_label": self.labels[a][i]
                    for a, (axis, i) in enumerate(zip(self.axes, index))
                }
            )
            row.update(value=float(self.values[tuple(index)]), kind=self.kind, method=self.method)
            rows.append(row)
        return pd.DataFrame(rows)


MIN_PEARSON = 0.9  # a self-check below either threshold is reported as failed


MIN_RECALL = 0.8


@dataclass(frozen=True)
class SelfCheck(Tabled):
    """An attribution result against exact patching of some of its own cells.

    k: size of the top set; cells: cells in the result; labels, exact, estimate:
    the checked cells (the top k by |estimate|, then a random sample of the rest)
    with both values, normalised. pearson, spearman: correlation over the checked
    cells (NaN below 3 cells or for constant values). recall: estimated share of
    the exact top-k (by |value|) that the estimate's top-k finds; exact when every
    cell is checked, else the unchecked cells are extrapolated from the random
    sample, and recall_low, recall_high carry the range that a Wilson 95% interval
    on the sample's share gives. max_error: the largest |estimate - exact| over the
    checked cells.
    """

    method: str
    kind: str
    k: int
    cells: int
    labels: list[str]
    exact: list[float]
    estimate: list[float]
    pearson: float
    spearman: float
    recall: float
    max_error: float
    max_error_cell: str
    recall_low: float | None = None
    recall_high: float | None = None

    @property
    def checked(self) -> int:
        return len(self.labels)

    @property
    def passed(self) -> bool:
        return bool(self.pearson >= MIN_PEARSON and self.recall >= MIN_RECALL)

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"SelfCheck({self.method} on {self.kind}, {self.checked} of {self.cells} cells patched "
            f"exactly: Pearson r {self.pearson:.3f}, recall of top-{self.k} {self.recall:.2f}; "
            f"{verdict}; .summary() says more)"
        )

    def summary(self) -> str:
        """One line: the figures and the verdict."""
        sample = self.checked - self.k
        which = "every cell" if self.checked == self.cells else f"top {self.k} + {sample} random"
        interval = (
            " (exact: every cell checked)"
            if self.recall_low is None
            else f" (between {self.recall_low:.2f} and {self.recall_high:.2f} depending on the "
            f"{self.cells - self.checked} cells not checked, by a Wilson interval on the random "
            "sample)"
        )
        verdict = (
            "passed"
            if self.passed
            else (
                f"FAILED (needs Pearson r >= {MIN_PEARSON} and recall >= "
                f"{MIN_RECALL}): check the ranking by exact patching"
            )
        )
        return (
            f"self-check of {self.method} on {self.kind}: {self.checked} of {self.cells} cells patched exactly "
            f"({which}): Pearson r {self.pearson:.3f}, Spearman r {self.spearman:.3f}, "
            f"recall of exact top-{self.k} {self.recall:.2f}{interval}, largest error {self.max_error:.3f} at "
            f"{self.max_error_cell}; {verdict}"
        )

    def to_frame(self):
        """One row per checked cell: its label, the exact value, the estimate, and whether it was in the top k."""
        return pd.DataFrame(
            {
                "cell": self.labels,
                "exact": self.exact,
                "estimate": self.estimate,
                "top_k": [i < self.k for i in range(self.checked)],
                "method": self.method,
            }
        )


def summarise_check(
    result: PatchingResult,
    cells: list[int],
    exact: torch.Tensor,
    estimate: torch.Tensor,
    k: int,
    n_rest: int,
    labels: list[str],
) -> SelfCheck:
    """The `SelfCheck` of checked cells (the first k of them the estimate's top k, the rest a uniform random
    sample of the `n_rest` other cells): correlations, estimated recall of the exact top-k, largest error."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy import stats

    exact_np, estimate_np = exact.numpy(), estimate.numpy()
    pearson = spearman = float("nan")
    if len(cells) >= 3 and np.ptp(exact_np) > 0 and np.ptp(estimate_np) > 0:
        pearson = float(stats.pearsonr(estimate_np, exact_np).statistic)
        spearman = float(stats.spearmanr(estimate_np, exact_np).statistic)
    # Recall of the exact top k: the bar is the k-th largest |exact| over all cells, estimated from the
    # checked ones (each sampled cell stands for n_rest / n_sampled cells); the estimate's own top k that
    # clear it are the hits. With every cell checked this is the exact recall.
    sampled = len(cells) - k
    weight = n_rest / sampled if sampled else 0.0
    recall = _recall(np.abs(exact_np[:k]), np.abs(exact_np[k:]), weight, k)
    recall_low = recall_high = None
    # extrapolated: the range a Wilson interval on the sample's share gives
    if sampled and sampled < n_rest:
        recall_low, recall_high = _recall_range(
            np.abs(exact_np[:k]), np.abs(exact_np[k:]), n_rest, k
        )
    errors = np.abs(estimate_np - exact_np)
    worst = int(errors.argmax())
    return SelfCheck(
        result.method,
        result.kind,
        k,
        result.values.numel(),
        [labels[c] for c in cells],
        exact_np.tolist(),
        estimate_np.tolist(),
        pearson,
        spearman,
        recall,
        float(errors[worst]),
        labels[cells[worst]],
        recall_low,
        recall_high,
    )


def _recall(top: np.ndarray, sample: np.ndarray, weight: float, k: int, share_at=None) -> float:
    """Share of the estimate's top-k cells (their |exact| in `top`) at or above the k-th largest |exact| over
    all cells, that bar estimated from `top` and the random `sample` (each sampled cell standing for `weight`
    cells, or, with `share_at(bar)`, the unchecked cells' share above a bar taken from it)."""
    for bar in np.sort(np.concatenate([top, sample]))[::-1]:
        others = share_at(bar) if share_at else (sample >= bar).sum() * weight
        if (top >= bar).sum() + others >= k:
            return float((top >= bar).sum() / k)
    return float((top > 0).sum() / k) if k else 1.0


def _recall_range(top: np.ndarray, sample: np.ndarray, n_rest: int, k: int) -> tuple[float, float]:
    """The recall with the unchecked cells' share above each bar at the ends of its Wilson 95% interval."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import binomtest

    def at(end: str):
        def share_at(bar: float) -> float:
            interval = binomtest(int((sample >= bar).sum()), len(sample)).proportion_ci(
                0.95, method="wilson"
            )
            return (interval.high if end == "high" else interval.low) * n_rest

        return share_at

    return _recall(top, sample, 0, k, at("high")), _recall(top, sample, 0, k, at("low"))


def cell_labels(labels: tuple[list[str], ...]) -> list[str]:
    """One label per cell in row-major order, e.g. "L3H2" or "L3 4:Mary"."""
    return [
        "".join(parts) if all(not p[0].isdigit() for p in parts) else " ".join(parts)
        for parts in itertools.product(*labels)
    ]
