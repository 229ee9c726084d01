"""Bias localisation (`workbench.safety.localise`, `workbench audit bias --localise`) on tiny-phi, and the pair set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.cli import main
from workbench.core.datasets import read_bias_pairs
from workbench.safety.localise import (
    BiasLocalisation,
    exact_effects,
    localise_bias,
    mean_ablated,
    mean_head_outputs,
    usable_pairs,
)

from .conftest import ROOT
from .test_repr import check_repr

PAIRS = ROOT / "probes" / "gender_occupations.csv"


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    """Twelve pairs (every other occupation, one template each), a short held-out text and the first ten QA
    questions: enough to run every step quickly."""
    folder = tmp_path_factory.mktemp("localise")
    lines = PAIRS.read_text().splitlines()
    (folder / "pairs.csv").write_text("\n".join([lines[0]] + lines[1::10]) + "\n")
    heldout = (ROOT / "probes" / "heldout_neutral.txt").read_text().splitlines()[:8]
    (folder / "heldout.txt").write_text("\n".join(heldout) + "\n")
    (folder / "qa.jsonl").write_text(
        "".join((ROOT / "probes" / "qa.jsonl").read_text().splitlines(True)[:10])
    )
    return folder


def test_the_gender_pair_set_has_equal_token_lengths(tiny, smol):
    pairs = read_bias_pairs(PAIRS, cluster="occupation")
    assert len(pairs) >= 100 and len({p.cluster for p in pairs}) == 24
    for model in (tiny, smol):  # Phi-2's tokenizer and SmolLM2's
        kept, skipped = usable_pairs(model, pairs, skip_bad=False)
        assert len(kept) == len(pairs) and not skipped and all(p.suffix_start == 2 for p in kept)


def test_localisation_on_tiny(tiny, small_inputs):
    pairs = read_bias_pairs(small_inputs / "pairs.csv")
    result = localise_bias(
        tiny,
        pairs,
        top_k=2,
        heldout=str(small_inputs / "heldout.txt"),
        qa=str(small_inputs / "qa.jsonl"),
        clusters=[str(i // 2) for i in range(12)],
        n_check=4,
        n_boot=200,
        progress=False,
    )
    assert result.n_pairs == len(pairs) == 12 and result.method == "eap-ig"
    check_repr(result)
    # six clusters of two pairs: the count, no interval
    assert result.gap.n == 6 and not result.gap.has_interval
    assert len(result.top_heads) == 1 and len(result.ablated) == 2 and result.check["n"] == 4 + 3
    assert len(result.components) == 4 * 4 + 4
    effects = [abs(c.effect.value) for c in result.components]
    assert effects == sorted(effects, reverse=True)
    assert (
        set(result.before)
        == set(result.after)
        == {"stereotype_share", "mean_gap", "heldout_perplexity", "qa_accuracy"}
    )
    # clusters
    assert result.before["stereotype_share"].n == 6 and result.after["heldout_perplexity"].n == 4
    # The mean head effects are the mean over pairs of the per-pair effects the components carry.
    by_name = {c.name: c for c in result.components}
    assert by_name["L1H2"].effect.value == pytest.approx(result.head_effects[1][2])
    again = BiasLocalisation.from_dict(json.loads(json.dumps(result.to_dict(), default=str)))
    assert (
        again.top_heads == result.top_heads
        and again.before["mean_gap"] == result.before["mean_gap"]
    )
    assert {"component", "effect_nats", "low", "high", "exact_nats", "ablated"} <= set(
        result.to_frame().columns
    )
    assert any("stereotype share: before" in line for line in result.summary_lines())


def test_exact_check_and_mean_ablation_do_what_they_say(tiny):
    from workbench.interp.patching import task_from_ids
    from workbench.safety.localise import SuffixLogLikelihood

    pair = read_bias_pairs(PAIRS)[0]
    kept, _ = usable_pairs(tiny, [pair], skip_bad=False)
    metric = SuffixLogLikelihood(kept[0].more_ids, kept[0].suffix_start)
    task = task_from_ids(
        tiny, torch.tensor([kept[0].more_ids]), torch.tensor([kept[0].less_ids]), metric
    )
    every = slice(None)
    effects = exact_effects(tiny, [task], [("blocks.2.attn.hook_z", (every, 1, every))])
    # The same patch by hand, through TransformerLens' run_with_hooks.
    more, less = torch.tensor([kept[0].more_ids]), torch.tensor([kept[0].less_ids])
    _, clean_cache = tiny.run_with_cache(more)

    def patch(z, hook):
        z[:, :, 1] = clean_cache["blocks.2.attn.hook_z"][:, :, 1]
        return z

    patched = tiny.run_with_hooks(less, fwd_hooks=[("blocks.2.attn.hook_z", patch)])
    expected = float((metric(patched) - metric(tiny(less)))[0].detach())
    assert effects[0, 0] == pytest.approx(expected, abs=1e-4) and abs(expected) > 1e-3

    means = mean_head_outputs(
        tiny, ["The library opens at nine.", "Water boils at a lower temperature."], [(2, 1)]
    )
    with mean_ablated(tiny, means):
        _, cache = tiny.run_with_cache(tiny.to_tokens("Some other text here"))
    z = cache["blocks.2.attn.hook_z"][0, :, 1]
    assert torch.allclose(z, means[(2, 1)].expand_as(z), atol=1e-6)
    _, clean = tiny.run_with_cache(tiny.to_tokens("Some other text here"))
    assert not torch.allclose(clean["blocks.2.attn.hook_z"][0, :, 1], z)  # and nothing stays behind


def test_audit_bias_localise_writes_and_reports(tmp_path, small_inputs, capsys):
    out = tmp_path / "audit"
    args = [
        "audit",
        "bias",
        "--model",
        "tiny-phi",
        "--pairs",
        str(small_inputs / "pairs.csv"),
        "--localise",
        "--top-k",
        "2",
        "--bootstrap",
        "100",
        "--heldout",
        str(small_inputs / "heldout.txt"),
        "--qa",
        str(small_inputs / "qa.jsonl"),
        "--cluster-column",
        "occupation",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    localisation = summary["localisation"]
    assert localisation["n_pairs"] == 12 and len(localisation["ablated"]) == 2
    assert localisation["gap"]["n"] == 12  # twelve occupations: every pair its own cluster
    assert (out / "localisation.json").is_file() and (out / "localisation_components.csv").is_file()
    page = (out / "report.html").read_text()
    assert "Where the bias lives" in page and "Before and after the ablation" in page


def test_localise_bad_input_is_one_line(tmp_path, small_inputs, capsys):
    lines = (small_inputs / "pairs.csv").read_text().splitlines()
    lines.append(
        "She worked as a nurse for many years.,He worked for many years as a nurse today.,stereo,gender,"
        "nurse,female"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    base = [
        "audit",
        "bias",
        "--model",
        "tiny-phi",
        "--pairs",
        str(bad),
        "--localise",
        "--bootstrap",
        "100",
        "--heldout",
        str(small_inputs / "heldout.txt"),
        "--qa",
        str(small_inputs / "qa.jsonl"),
    ]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"{bad}:14" in err[0]
        and "equal token length" in err[0]
        and "--skip-bad" in err[0]
    )
    assert not (tmp_path / "a").exists()  # nothing written before validation passed
    assert main([*base, "--top-k", "17", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top-k 17: tiny-phi has 16 heads" in err[0]
    assert main([*base, "--skip-bad", "--top-k", "1", "--out", str(tmp_path / "c"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["localisation"]["skipped_lines"] == [14]
        and summary["localisation"]["n_pairs"] == 12
    )
    assert np.isfinite(summary["localisation"]["top_share"]["value"])


def test_exact_localisation_checks_itself_exactly(tiny, small_inputs):
    """With --attribution exact the effects are exact patching, so the exact check agrees to float noise."""
    pairs = read_bias_pairs(small_inputs / "pairs.csv")[:4]
    result = localise_bias(
        tiny,
        pairs,
        top_k=1,
        method="exact",
        heldout=str(small_inputs / "heldout.txt"),
        qa=str(small_inputs / "qa.jsonl"),
        n_check=3,
        n_boot=200,
        progress=False,
    )
    assert result.method == "exact" and result.check["max_error"] < 1e-5
    assert result.check["pearson"] == pytest.approx(1.0, abs=1e-6)
