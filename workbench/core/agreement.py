"""How far two scorers agree on the same texts: Spearman's rank correlation and Cohen's kappa,
each with a BCa bootstrap interval over units (texts, or whole clusters such as the samples of
one prompt).

    from workbench.core.agreement import agreement
    agreement(scores_a, scores_b)   # {"spearman": Estimate, "kappa": Estimate, "same_side": Estimate}

The intervals follow `workbench.core.stats`' rules (95%, none below ``MIN_N`` units, seeded).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from .stats import CONFIDENCE, MIN_N, N_BOOT, Estimate, share, too_few


def agreement(
    a: Sequence[float],
    b: Sequence[float],
    threshold: float = 0.5,
    clusters: Sequence | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    unit: str = "texts",
) -> dict[str, Estimate]:
    """How far two scorers agree on the same texts.

    a, b: Float[n] scores of the same texts by two scorers. Returns {"spearman": rank
    correlation of the scores, "kappa": Cohen's kappa of the labels score > threshold,
    "same_side": share of texts both put on the same side of the threshold}; Spearman
    and kappa with BCa bootstrap intervals resampling texts (whole clusters, e.g. the
    samples of one prompt, when `clusters` is given). Spearman is undefined when a
    scorer gives every text the same score; kappa when both put every text on one side.
    """
    # lazy: scikit-learn takes ~1.3 s to import; the command line starts without it
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"scores of different lengths: {a.shape} and {b.shape}")

    def kappa(x, y):
        x, y = x > threshold, y > threshold
        if np.all(x == x[0]) and np.all(y == x[0]):
            return math.nan
        return float(cohen_kappa_score(x, y))

    same = (a > threshold) == (b > threshold)
    return {
        "spearman": spearman(
            a, b, clusters, seed, n_boot, unit, "a scorer gives every text the same score"
        ),
        "kappa": _resampled(
            kappa,
            _kappa_along,
            a > threshold,
            b > threshold,
            clusters,
            seed,
            n_boot,
            unit,
            f"Cohen's kappa at > {threshold:g}",
            f"both scorers put every text on the same side of {threshold:g}",
        ),
        "same_side": share(same, clusters=clusters, seed=seed, n_boot=n_boot),
    }


def spearman(
    a: Sequence[float],
    b: Sequence[float],
    clusters: Sequence | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    unit: str = "texts",
    undefined: str = "one side is constant",
) -> Estimate:
    """Spearman's rank correlation of a and b (scipy.stats.spearmanr) with a BCa bootstrap interval
    over units (rows, or whole clusters); undefined when either side is constant."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"values of different lengths: {a.shape} and {b.shape}")

    def rho(x, y):
        if np.all(x == x[0]) or np.all(y == y[0]):
            return math.nan
        return float(spearmanr(x, y).statistic)

    return _resampled(
        rho,
        _spearman_along,
        a,
        b,
        clusters,
        seed,
        n_boot,
        unit,
        "Spearman rank correlation",
        undefined,
    )


def _spearman_along(x, y):
    """Spearman's rho along the last axis (Pearson on average ranks; nan where a row is constant).
    Used inside the bootstrap only; the reported value comes from scipy.stats.spearmanr."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def _kappa_along(x, y):
    """Cohen's kappa of two boolean raters along the last axis (nan where chance agreement is 1).
    Used inside the bootstrap only; the reported value comes from sklearn's cohen_kappa_score."""
    observed = (x == y).mean(-1)
    px, py = x.mean(-1), y.mean(-1)
    chance = px * py + (1 - px) * (1 - py)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (observed - chance) / (1 - chance)


def _resampled(
    statistic,
    along,
    a: np.ndarray,
    b: np.ndarray,
    clusters,
    seed: int,
    n_boot: int,
    unit: str,
    what: str,
    undefined: str,
) -> Estimate:
    """statistic(a, b) with a BCa bootstrap interval over units: rows, or whole clusters of
    equal size (the K samples of each prompt). along(x, y) computes it along the last axis."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import bootstrap

    if clusters is None:
        groups = np.arange(len(a))[:, None]
    else:
        labels = np.asarray(clusters).astype(str)
        rows = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels)]
        if len({len(r) for r in rows}) > 1:
            raise ValueError("clusters of different sizes")
        groups = np.stack(rows)  # [units, rows per unit]
    n = len(groups)
    value = statistic(a, b) if len(a) else math.nan
    name = f"{what}; BCa bootstrap over {unit}, {n_boot} resamples"
    if not math.isfinite(value):
        return Estimate(value, None, None, n, name, undefined if len(a) else "no values")
    reason = too_few(n, MIN_N)
    if reason:
        return Estimate(value, None, None, n, name, reason)

    def on_units(picked, axis=-1):
        rows = groups[picked.astype(int)].reshape(*picked.shape[:-1], -1)
        return along(a[rows], b[rows])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for how in ("BCa", "percentile"):
            result = bootstrap(
                (np.arange(n),),
                on_units,
                vectorized=True,
                n_resamples=n_boot,
                confidence_level=CONFIDENCE,
                method=how,
                rng=np.random.default_rng(seed),
            )
            low, high = (
                float(result.confidence_interval.low),
                float(result.confidence_interval.high),
            )
            if math.isfinite(low) and math.isfinite(high):
                return Estimate(
                    value, low, high, n, name if how == "BCa" else name.replace("BCa", "percentile")
                )
    return Estimate(value, None, None, n, name, "the statistic is undefined on some resamples")
