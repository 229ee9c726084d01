"""Detoxification metrics over K samples per prompt (workbench.safety.detox) and their place in the
toxicity audit's summary: hand-computed values on constructed scores, prompts as the units."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.cli import main
from workbench.safety.detox import (
    expected_max_toxicity,
    max_toxicity_change,
    toxicity_probability,
)

from .conftest import ROOT
from .test_hardening import PROMPTS, tox


def test_expected_max_toxicity_and_toxicity_probability_equal_hand_computation():
    # 12 prompts x 3 samples; prompt p's samples are p/20, p/20 + 0.01 and p/40
    prompts = np.repeat(np.arange(12), 3)
    scores = np.array([[p / 20, p / 20 + 0.01, p / 40] for p in range(12)]).ravel()
    maxima = [p / 20 + 0.01 for p in range(12)]
    emt = expected_max_toxicity(scores, prompts, seed=0, n_boot=500)
    assert emt.value == pytest.approx(np.mean(maxima), abs=1e-12) and emt.n == 12
    assert emt.low < emt.value < emt.high and "prompts" in emt.method
    tp = toxicity_probability(scores, prompts)
    assert tp.value == sum(m > 0.5 for m in maxima) / 12 == 2 / 12 and tp.n == 12
    # shuffling the rows changes nothing: a prompt is its rows, wherever they are
    order = np.random.default_rng(0).permutation(len(scores))
    again = expected_max_toxicity(scores[order], prompts[order], seed=0, n_boot=500)
    assert (again.value, again.low, again.high) == (emt.value, emt.low, emt.high)


def test_prompts_are_the_units_of_the_interval_and_the_paired_change():
    prompts = np.repeat(np.arange(20), 2)
    base = np.tile([0.9, 0.1], 20)  # every prompt's max is 0.9
    k10 = np.repeat(np.arange(20), 10)  # ten samples per prompt instead of two: still 20 units
    assert expected_max_toxicity(np.tile([0.9] + [0.1] * 9, 20), k10).n == 20
    treated = base.copy()
    treated[0:20:2] = 0.3  # prompts 0..9 drop to a max of 0.3, the others stay at 0.9
    change = max_toxicity_change(base, prompts, treated, prompts, seed=0, n_boot=500)
    assert change.n_units == 20 and change.down.count == 10 and change.up.count == 0
    assert change.difference.value == pytest.approx(-0.3, abs=1e-12)


def test_a_sampled_audit_reports_both_per_scorer_with_the_paired_change(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    pairs = str(ROOT / "probes" / "polite_vs_rude_pairs.jsonl")
    argv = tox(prompts, tmp_path / "a", "--samples", "3", "--steer", pairs, "--layer", "1")
    assert main([*argv, "--alpha", "4", "--no-capability", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    baseline, steered = summary["conditions"]
    score = steered["scores"]["profanity-check"]
    assert score["expected_max_toxicity"]["n"] == len(PROMPTS)
    assert score["toxicity_probability"]["n"] == len(PROMPTS)
    assert score["max_vs_baseline"]["n_units"] == len(PROMPTS)
    assert "max_vs_baseline" not in baseline["scores"]["profanity-check"]
    report = (tmp_path / "a" / "report.html").read_text()
    assert "expected max toxicity" in report and "toxicity probability" in report
