"""workbench.core.stats: every interval the workbench prints, checked on constructed data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.core import stats


def test_wilson_interval_equals_the_hand_computed_formula():
    k, n, z = 7, 20, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    estimate = stats.proportion(k, n)
    assert estimate.value == 0.35 and estimate.count == 7 and estimate.n == 20
    assert (
        abs(estimate.low - (centre - half)) < 1e-12 and abs(estimate.high - (centre + half)) < 1e-12
    )
    assert "Wilson" in estimate.method
    # hits given as a sequence
    assert stats.proportion([1] * 7 + [0] * 13).to_dict() == estimate.to_dict()
    exact = stats.proportion(k, n, method="exact")  # Clopper-Pearson is wider than Wilson here
    assert (
        "Clopper-Pearson" in exact.method
        and exact.low < estimate.low
        and exact.high > estimate.high
    )


def test_below_the_minimum_n_there_is_a_count_and_no_interval():
    small = stats.proportion([1, 0, 1, 1, 0])
    assert (
        small.low is None and small.high is None and small.note == "n = 5 < 10" and small.count == 3
    )
    assert small.text() == "3/5 (no interval: n = 5 < 10)"
    mean = stats.mean([0.1, 0.2, 0.3])
    assert mean.value == pytest.approx(0.2) and mean.low is None and "3 < 10" in mean.note
    two = stats.difference_of_means([1.0] * 20, [0.0] * 4)
    assert two.low is None and "smaller sample n = 4 < 5" in two.note
    assert stats.auroc_interval([0.1, 0.9, 0.8, 0.2], [0, 1, 1, 0]).low is None
    at_limit = stats.proportion(5, 10)
    assert at_limit.low is not None and at_limit.text().startswith("0.500 [")


def test_cluster_bootstrap_is_wider_than_the_naive_one_on_correlated_samples():
    """20 prompts x 5 near-identical samples: the information is 20 units, not 100."""
    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=20)
    values = np.repeat(per_prompt, 5) + 0.01 * rng.normal(size=100)
    prompts = np.repeat(np.arange(20), 5)
    naive = stats.mean(values)
    clustered = stats.mean(values, clusters=prompts, unit="prompts")
    assert clustered.value == naive.value and clustered.n == 20 and naive.n == 100
    naive_width, cluster_width = naive.high - naive.low, clustered.high - clustered.low
    assert cluster_width > 1.8 * naive_width  # about sqrt(5) wider in expectation
    assert "cluster bootstrap over prompts" in clustered.method
    # One row per cluster is no cluster at all: the plain bootstrap, bit for bit.
    assert (
        stats.mean(per_prompt, clusters=np.arange(20)).to_dict() == stats.mean(per_prompt).to_dict()
    )


def test_paired_difference_on_a_known_answer():
    baseline = np.linspace(0, 1, 12)
    treated = baseline + 0.25
    treated[[3, 7]] = baseline[[3, 7]] - 0.5  # two prompts move the other way
    units = [f"p{i}" for i in range(12)]
    paired = stats.paired_difference(
        baseline, treated[::-1], units=units, treated_units=units[::-1]
    )
    assert (
        paired.n_units == 12
        and paired.up.count == 10
        and paired.down.count == 2
        and paired.unchanged == 0
    )
    assert paired.difference.value == pytest.approx((10 * 0.25 - 2 * 0.5) / 12)
    assert paired.difference.low < paired.difference.value < paired.difference.high
    # Several samples per prompt are averaged within the prompt before pairing.
    samples = stats.paired_difference([0, 0, 1, 1], [1, 1, 1, 3], units=["a", "a", "b", "b"])
    assert (
        samples.difference.value == pytest.approx(1.0)
        and samples.n_units == 2
        and samples.up.count == 2
    )


def test_identical_values_give_a_degenerate_interval_not_nan():
    estimate = stats.mean([0.0] * 30)
    assert (estimate.low, estimate.value, estimate.high) == (
        0.0,
        0.0,
        0.0,
    ) and "all values equal" in estimate.method


def test_auroc_and_its_stratified_interval():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 60)
    scores = rng.normal(size=120) + labels * 1.5
    pairs = [(p, q) for p in np.flatnonzero(labels) for q in np.flatnonzero(1 - labels)]
    expected = np.mean(
        [1.0 if scores[p] > scores[q] else 0.5 if scores[p] == scores[q] else 0.0 for p, q in pairs]
    )
    estimate = stats.auroc_interval(scores, labels)
    assert estimate.value == pytest.approx(expected, abs=1e-12) and estimate.n == 120
    assert (
        0.5 < estimate.low < estimate.value < estimate.high <= 1.0
        and "stratified" in estimate.method
    )
    assert math.isnan(stats.auroc([0.1, 0.2], [1, 1]))


def test_calibration_error_on_constructed_bins():
    # Bin [0.1, 0.2): predicted 0.15, observed 0.5; bin [0.8, 0.9): predicted 0.85, observed 1.0.
    probabilities = [0.15, 0.15, 0.85, 0.85]
    labels = [0, 1, 1, 1]
    calibration = stats.calibration(probabilities, labels)
    assert calibration.ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert [b["count"] for b in calibration.bins] == [2, 2] and calibration.n == 4
    assert stats.calibration([0.0, 1.0], [0, 1]).ece == 0.0


def test_bootstraps_are_seeded():
    values = np.random.default_rng(2).random(40)
    assert stats.mean(values, seed=3).to_dict() == stats.mean(values, seed=3).to_dict()
    assert stats.mean(values, seed=3).low != stats.mean(values, seed=4).low
