"""Every number's uncertainty, computed in one place.

    from workbench.core import stats
    stats.proportion(hits)                      # share with a Wilson score interval
    stats.mean(values, clusters=prompt_ids)     # mean with a BCa bootstrap interval, clustered by prompt
    stats.paired_difference(base, treated, units=prompt_ids)   # effect of an intervention, prompt by prompt
    stats.difference_of_means(a, b)             # two independent samples (e.g. hateful vs neutral statements)
    stats.auroc_interval(scores, labels)        # AUROC with a stratified BCa bootstrap interval
    stats.calibration(probabilities, labels)    # reliability curve and expected calibration error

Each returns an `Estimate`: the value, its 95% interval, the number of independent
units behind it (``n``) and the method that made the interval, so a report can
say how every number was made. Rules shared by every caller:

- Proportions of independent units get a Wilson score interval (scipy's
  ``binomtest(...).proportion_ci``); Clopper-Pearson ("exact") on request.
- Means get a bootstrap interval from ``scipy.stats.bootstrap``: BCa by default,
  percentile where BCa cannot be computed (its acceleration needs variation in
  the jackknife; scipy then returns nan and we fall back, and the method says so).
- Several rows per unit (``--samples K`` continuations of one prompt) are not
  independent: ``clusters=`` resamples whole units (a cluster bootstrap of the
  ratio sum / count), and ``n`` counts units, not rows.
- Below ``MIN_N`` independent units (or ``MIN_N // 2`` per class for a
  two-sample statistic) there is no interval: the estimate carries the count and
  the reason instead, and reports print the count.
- Bootstraps are seeded (``seed=``), so a report rebuilt from the same shards
  prints the same intervals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
MIN_N = 10  # fewer independent units than this: show the count, no interval
N_BOOT = 2000


@dataclass(frozen=True)
class Estimate:
    """A number with its interval and how it was made.

    value: the point estimate; low, high: the 95% interval (None below the minimum n
    or when undefined); n: independent units (pairs, prompts, texts); count: for a
    proportion, the units that count as hits; method: how the interval was made
    (or why there is none, in ``note``).
    """

    value: float
    low: float | None
    high: float | None
    n: int
    method: str
    note: str = ""
    count: int | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def to_dict(self) -> dict:
        return asdict(self)

    def map(self, function, label: str) -> "Estimate":
        """The estimate of function(value) for an increasing `function` (its interval is the image
        of this one): e.g. perplexity from a mean negative log-likelihood, label "exp of "."""

        def apply(x):
            return None if x is None else float(function(x))

        return Estimate(
            apply(self.value),
            apply(self.low),
            apply(self.high),
            self.n,
            label + self.method,
            self.note,
            self.count,
        )

    def interval_text(self, digits: int = 3) -> str:
        """ "[0.531, 0.582]", or the reason there is no interval."""
        if self.has_interval:
            return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return f"no interval: {self.note}" if self.note else "no interval"

    def short(self, digits: int = 3, percent: bool = False) -> str:
        """The value and its interval for a table cell: "0.556 [0.531, 0.582]", "55.6% [53.1, 58.2]"
        with `percent`, "3/5 (no interval: n = 5 < 10)" or "0.200 (n = 3; no interval: n = 3 < 10)"."""
        scale, unit = (100, "%") if percent else (1, "")
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return (
                f"undefined (n = {self.n}: {self.note})"
                if self.note
                else f"undefined (n = {self.n})"
            )
        if not self.has_interval and self.count is not None:
            return f"{self.count}/{self.n} (no interval: {self.note or 'undefined'})"
        value = f"{self.value * scale:.{digits}f}{unit}"
        if not self.has_interval:
            return f"{value} (n = {self.n}; no interval: {self.note or 'undefined'})"
        return f"{value} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"

    def text(self, digits: int = 3) -> str:
        """`short`, with the method and n after an interval: "0.556 [0.531, 0.582] (Wilson score, n = 1508)"."""
        if not self.has_interval:
            return self.short(digits)
        return f"{self.short(digits)} ({self.method}, n = {self.n})"

    def __format__(self, spec: str) -> str:
        return self.text(int(spec) if spec else 3)


def estimate_from_dict(data: dict) -> Estimate:
    """The inverse of `Estimate.to_dict` (summary.json round trip)."""
    return Estimate(**data)


def too_few(n: int, minimum: int = MIN_N) -> str:
    """The reason there is no interval ("n = 4 < 10"), or "" when `n` reaches `minimum`."""
    return f"n = {n} < {minimum}" if n < minimum else ""


# ----------------------------------------------------------------------------- proportions

PROPORTION_METHODS = {"wilson": "Wilson score", "exact": "Clopper-Pearson"}


def proportion(
    hits: Sequence[bool] | int, n: int | None = None, method: str = "wilson", min_n: int = MIN_N
) -> Estimate:
    """Share of independent units that are hits, with a Wilson (or Clopper-Pearson) 95% interval.

    hits: a 0/1 sequence, or the number of hits with `n` the number of units.
    """
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import binomtest

    if n is None:
        values = np.asarray(hits, dtype=float)
        k, n = int(values.sum()), len(values)
    else:
        k = int(hits)
    if method not in PROPORTION_METHODS:
        raise ValueError(f"method must be one of {sorted(PROPORTION_METHODS)}, not {method!r}")
    name = f"{PROPORTION_METHODS[method]} 95% interval"
    if n == 0:
        return Estimate(math.nan, None, None, 0, name, "no units", 0)
    reason = too_few(n, min_n)
    if reason:
        return Estimate(k / n, None, None, n, name, reason, k)
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method=method)
    return Estimate(k / n, float(ci.low), float(ci.high), n, name, count=k)


def share(
    indicators: Sequence[bool],
    clusters: Sequence | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    unit: str = "rows",
) -> Estimate:
    """Share of rows that are hits: Wilson when every row is its own unit, else a cluster bootstrap
    (unit: what the rows are called in its method text)."""
    if clusters is None or len(set(clusters)) == len(clusters):
        return proportion(indicators)
    return mean(
        np.asarray(indicators, dtype=float), clusters=clusters, seed=seed, n_boot=n_boot, unit=unit
    )


# ----------------------------------------------------------------------------- bootstrap


def _bootstrap(data: tuple, statistic, paired: bool, seed: int, n_boot: int, method: str):
    """(low, high, method used) from scipy.stats.bootstrap; BCa falls back to percentile when undefined."""
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import bootstrap

    for how in (method, "percentile") if method.lower() == "bca" else (method,):
        with warnings.catch_warnings():
            # scipy warns when BCa is undefined; we fall back and say so
            warnings.simplefilter("ignore")
            result = bootstrap(
                data,
                statistic,
                paired=paired,
                vectorized=True,
                n_resamples=n_boot,
                confidence_level=CONFIDENCE,
                method=how,
                rng=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            label = "BCa" if how.lower() == "bca" else how
            return low, high, label + (" (BCa undefined here)" if how != method else "")
    return None, None, method


def mean(
    values: Sequence[float],
    clusters: Sequence | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    method: str = "BCa",
    unit: str = "rows",
    min_n: int = MIN_N,
) -> Estimate:
    """Mean of `values` with a bootstrap 95% interval.

    clusters: one label per value (e.g. the prompt a continuation came from). Values that
    share a label are resampled together, and `n` counts clusters; the estimate is the
    plain mean of all values (sum over clusters / count over clusters).
    unit: what the independent units are called in the method text ("prompts", "pairs").
    """
    values = np.asarray(values, dtype=float)
    if clusters is not None and len(set(clusters)) < len(values):
        labels, index = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
        sums = np.bincount(index, weights=values)
        counts = np.bincount(index).astype(float)
        return _ratio_estimate(
            sums,
            counts,
            seed,
            n_boot,
            method,
            f"cluster bootstrap over {unit}",
            min_n,
            all_equal=bool(np.all(values == values[0])),
        )
    n = len(values)
    how = f"bootstrap over {unit}"
    value = float(values.mean()) if n else math.nan
    name = f"{how}, {n_boot} resamples"
    reason = "no values" if n == 0 else too_few(n, min_n)
    if reason:
        return Estimate(value, None, None, n, name, reason)
    if np.all(values == values[0]):
        return Estimate(value, value, value, n, f"{how} (all values equal)")
    low, high, label = _bootstrap((values,), _mean_along, False, seed, n_boot, method)
    return Estimate(value, low, high, n, f"{label} {name}")


def ratio(
    sums: Sequence[float],
    counts: Sequence[float],
    seed: int = 0,
    n_boot: int = N_BOOT,
    method: str = "BCa",
    unit: str = "units",
    min_n: int = MIN_N,
) -> Estimate:
    """sum(sums) / sum(counts) with a bootstrap interval resampling units (pairs of sum and count):
    e.g. corpus perplexity's log, total NLL over total tokens with texts as units."""
    sums, counts = np.asarray(sums, dtype=float), np.asarray(counts, dtype=float)
    per_unit = sums / np.where(counts == 0, 1, counts)
    return _ratio_estimate(
        sums,
        counts,
        seed,
        n_boot,
        method,
        f"bootstrap over {unit} (ratio of sums)",
        min_n,
        all_equal=bool(len(sums) and np.all(per_unit == per_unit[0])),
    )


def _ratio_estimate(sums, counts, seed, n_boot, method, how, min_n, all_equal: bool) -> Estimate:
    n = len(sums)
    value = float(sums.sum() / counts.sum()) if n and counts.sum() else math.nan
    name = f"{how}, {n_boot} resamples"
    reason = "no values" if n == 0 else too_few(n, min_n)
    if reason:
        return Estimate(value, None, None, n, name, reason)
    if all_equal:
        return Estimate(value, value, value, n, f"{how} (all values equal)")
    low, high, label = _bootstrap((sums, counts), _ratio_of_sums, True, seed, n_boot, method)
    return Estimate(value, low, high, n, f"{label} {name}")


def _mean_along(x, axis=-1):
    return np.mean(x, axis=axis)


def _ratio_of_sums(sums, counts, axis=-1):
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def difference_of_means(
    a: Sequence[float],
    b: Sequence[float],
    seed: int = 0,
    n_boot: int = N_BOOT,
    method: str = "BCa",
    unit: str = "items",
    min_n: int = MIN_N,
) -> Estimate:
    """mean(a) - mean(b) for two independent samples, each resampled on its own (BCa bootstrap).

    n is len(a) + len(b); below `min_n // 2` in either sample there is no interval.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    value = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    name = f"two-sample bootstrap over {unit}, {n_boot} resamples"
    smallest = min(len(a), len(b))
    reason = too_few(smallest, min_n // 2)
    if reason:
        return Estimate(value, None, None, len(a) + len(b), name, f"smaller sample {reason}")
    low, high, label = _bootstrap((a, b), _difference_along, False, seed, n_boot, method)
    return Estimate(value, low, high, len(a) + len(b), f"{label} {name}")


def _difference_along(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


# ----------------------------------------------------------------------------- paired effects


@dataclass(frozen=True)
class PairedDifference:
    """An intervened condition against the baseline on the same units (prompts, pairs).

    difference: mean over units of (treated - baseline), each unit first averaged over its
    samples; up, down: share of units whose value rose / fell by more than `tolerance`.
    """

    difference: Estimate
    up: Estimate
    down: Estimate
    unchanged: int
    n_units: int
    tolerance: float

    def to_dict(self) -> dict:
        return {
            "difference": self.difference.to_dict(),
            "up": self.up.to_dict(),
            "down": self.down.to_dict(),
            "unchanged": self.unchanged,
            "n_units": self.n_units,
            "tolerance": self.tolerance,
        }


def paired_difference(
    baseline: Sequence[float],
    treated: Sequence[float],
    units: Sequence,
    treated_units: Sequence | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    tolerance: float = 1e-9,
    unit: str = "prompts",
) -> PairedDifference:
    """Paired effect of a condition: per unit, mean(treated) - mean(baseline), then across units.

    baseline, units: values and their unit labels (e.g. prompt rows) under the baseline;
    treated (and treated_units, default `units`): the same under the condition. Only units
    present in both are used. The mean difference gets a bootstrap interval over units; the
    shares that moved each way get Wilson intervals.
    """
    base = (
        pd.Series(np.asarray(baseline, dtype=float)).groupby(np.asarray(units).astype(str)).mean()
    )
    other_units = units if treated_units is None else treated_units
    cond = (
        pd.Series(np.asarray(treated, dtype=float))
        .groupby(np.asarray(other_units).astype(str))
        .mean()
    )
    common = base.index.intersection(cond.index)
    deltas = (cond[common] - base[common]).to_numpy()
    up, down = int((deltas > tolerance).sum()), int((deltas < -tolerance).sum())
    n = len(deltas)
    return PairedDifference(
        mean(deltas, seed=seed, n_boot=n_boot, unit=unit),
        proportion(up, n),
        proportion(down, n),
        n - up - down,
        n,
        tolerance,
    )


# ----------------------------------------------------------------------------- classifiers


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (scikit-learn; ties count one half); nan with one class only."""
    # lazy: scikit-learn takes ~1.3 s to import; the command line starts without it
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def auroc_interval(
    scores: Sequence[float],
    labels: Sequence[int],
    seed: int = 0,
    n_boot: int = N_BOOT,
    min_n: int = MIN_N,
) -> Estimate:
    """AUROC with a stratified BCa bootstrap 95% interval (positives and negatives resampled apart).

    The statistic is the Mann-Whitney U of positives over negatives divided by
    n_pos * n_neg, which is the AUROC; below `min_n // 2` of either class: no interval.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    value = auroc(scores, labels)
    name = f"stratified bootstrap over texts, {n_boot} resamples"
    smallest = min(len(positives), len(negatives))
    reason = too_few(smallest, min_n // 2)
    if reason:
        return Estimate(value, None, None, len(scores), name, f"smaller class {reason}")
    low, high, label = _bootstrap((positives, negatives), _auroc_along, False, seed, n_boot, "BCa")
    return Estimate(value, low, high, len(scores), f"{label} {name}")


def _auroc_along(positives, negatives, axis=-1):
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positives, negatives, axis=axis).statistic
    return u / (positives.shape[axis] * negatives.shape[axis])


@dataclass(frozen=True)
class Calibration:
    """Reliability of predicted probabilities on held-out data.

    ece: expected calibration error, sum over bins of (bin share) x |observed - predicted|;
    bins: one dict per non-empty bin with its range, count, mean predicted probability
    and observed frequency of label 1.
    """

    ece: float
    n: int
    n_bins: int
    bins: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def calibration(
    probabilities: Sequence[float], labels: Sequence[int], n_bins: int = 10
) -> Calibration:
    """Reliability curve on `n_bins` equal-width bins of [0, 1] and the expected calibration error."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = index == b
        if not mask.any():
            continue
        predicted, observed = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.mean() * abs(observed - predicted)
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(mask.sum()),
                "predicted": predicted,
                "observed": observed,
            }
        )
    return Calibration(float(ece), len(p), n_bins, bins)
