"""Interpretability core: exact invariants on tiny-phi and smollm2-135m, known phenomena on smollm2-135m."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.interp.attention import attention_patterns, head_scores
from workbench.interp.attribution import attribution_patch
from workbench.interp.lens import direct_logit_attribution, logit_lens
from workbench.interp.patching import activation_patch, path_patch, prepare, run_patches
from workbench.interp.steering import (
    ablate,
    actadd_vector,
    logprob_gap,
    mean_difference_vector,
    read_pairs,
    steer,
    sweep,
)

from .conftest import ROOT

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
PROBES = ROOT / "probes"


def logits_of(model, text):
    """The plain HF model's logits on the tokens TransformerLens' bridge gives `text` (its
    `prepend_bos` default, which the library follows)."""
    with torch.no_grad():
        return model.hf_model(model.to_tokens(text)).logits


@pytest.fixture(params=["tiny", "smol"])
def any_model(request):
    if request.param == "smol":
        request.applymarker(pytest.mark.integration)
    return request.getfixturevalue(request.param)


def test_patching_invariants(any_model):
    model = any_model
    task = prepare(model, CLEAN, CORRUPT, " Mary", " John")
    final = f"blocks.{model.n_layers - 1}.hook_resid_post"
    every, nothing = (slice(None), slice(None)), (slice(0, 0),)
    raw = run_patches(
        model, task, [(final, every), (final, nothing), ("blocks.0.hook_resid_pre", every)]
    )
    normalised = task.normalise(raw)
    assert abs(float(normalised[0]) - 1.0) <= 1e-5  # every clean residual at the final layer
    assert abs(float(normalised[1])) <= 1e-5  # patching nothing
    assert abs(float(normalised[2]) - 1.0) <= 1e-5  # every clean residual entering block 0
    # Layer 0, position by position (the first row of the resid_pre map).
    layer0 = task.normalise(
        run_patches(
            model, task, [("blocks.0.hook_resid_pre", (p, slice(None))) for p in range(task.n_pos)]
        )
    )
    differing = [
        i for i, (a, b) in enumerate(zip(task.clean_ids[0], task.corrupt_ids[0])) if a != b
    ]
    assert abs(float(layer0[differing[0]]) - 1.0) <= 1e-5
    others = [p for p in range(task.n_pos) if p not in differing]
    assert layer0[others].abs().max() <= 1e-5  # identical tokens: patching changes nothing


def test_dla_sums_to_logit_difference(any_model):
    dla = direct_logit_attribution(any_model, CLEAN, " Mary", " John")
    assert abs(float(dla.values.double().sum()) - dla.logit_diff) <= 1e-4
    assert (
        len(dla.components)
        == 1
        + any_model.n_layers * (any_model.info.n_heads + 1)
        + sum(1 for c in dla.components if c.endswith("attn bias"))
        + 1
    )


def test_logit_lens_last_row_is_the_model(any_model):
    lens = logit_lens(any_model, "The capital of France is", tracked=[" Paris"])
    probs = logits_of(any_model, "The capital of France is")[0, -1].softmax(-1)
    paris = any_model.tokenizer(" Paris", add_special_tokens=False).input_ids[0]
    assert abs(float(lens.probs[-1, 0]) - float(probs[paris])) <= 1e-5
    assert len(lens.layers) == any_model.n_layers + 1 and len(lens.top_tokens[0]) == 5


def test_logit_lens_grid_last_row_is_the_model_at_every_position(any_model):
    from workbench.interp.lens import logit_lens_grid

    text = "The capital of France is Paris"
    grid = logit_lens_grid(any_model, text)
    logprobs = logits_of(any_model, text)[0].float().log_softmax(-1)  # [pos, vocab]
    assert grid.shape == (any_model.n_layers + 1, len(grid.tokens))
    assert [any_model.tokenizer.decode([int(i)]) for i in logprobs.argmax(-1)] == grid.top_tokens[
        -1
    ]
    assert (grid.top_logprobs[-1] - logprobs.max(-1).values).abs().max() <= 1e-5
    assert len(grid.to_frame()) == grid.shape[0] * grid.shape[1]


def test_steering_leaves_the_model_clean(tiny):
    pairs = read_pairs(PROBES / "sentiment_pairs.jsonl")
    vector = mean_difference_vector(tiny, pairs[:4], layer=1)
    before = logits_of(tiny, "Hello there")
    with steer(tiny, vector, 8.0):
        steered = logits_of(tiny, "Hello there")
    assert not torch.equal(before, steered)
    assert torch.equal(before, logits_of(tiny, "Hello there"))
    with pytest.raises(ValueError, match="inside"):
        with steer(tiny, vector, 8.0), ablate(tiny, vector.direction):
            raise ValueError("inside")
    assert torch.equal(before, logits_of(tiny, "Hello there"))
    actadd = actadd_vector(tiny, "Love", "Hate", layer=2)
    with steer(tiny, actadd, 5.0):
        assert not torch.equal(before, logits_of(tiny, "Hello there"))
    assert torch.equal(before, logits_of(tiny, "Hello there"))


def test_ablation_removes_the_direction_everywhere(tiny):
    direction = torch.randn(tiny.info.d_model, generator=torch.Generator().manual_seed(0))
    unit = direction / direction.norm()
    with ablate(tiny, direction):
        cache = wb.cache_activations(
            tiny, ["Hello there my friend"], hooks="resid_post", positions="all", progress=False
        )
    for hook in cache.hooks:
        assert (cache[hook][0] @ unit).abs().max() <= 1e-4


def test_attribution_tracks_exact_on_tiny(tiny):
    exact = activation_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head")
    approx = attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head",))[
        "attn_head"
    ]
    assert exact.values.shape == approx.values.shape == (4, 4)
    assert (
        float(torch.corrcoef(torch.stack([exact.values.flatten(), approx.values.flatten()]))[0, 1])
        >= 0.9
    )
    frame = exact.to_frame()
    assert len(frame) == 16 and set(frame.columns) >= {"layer", "head", "value", "layer_label"}


@pytest.mark.integration
def test_path_patching_into_keys_and_values_under_grouped_query_attention(smol):
    """SmolLM2 has 3 key/value groups for 9 query heads: receiver head 4's keys and values are
    group 1's (this crashed with an index error before)."""
    assert smol.info.n_heads == 9
    kv = path_patch(smol, CLEAN, CORRUPT, " Mary", " John", receivers=[(2, 4)], receiver_input="kv")
    both = path_patch(smol, CLEAN, CORRUPT, " Mary", " John", receivers=[(2, 3), (2, 5)],
                      receiver_input="kv")  # fmt: skip
    assert kv.shape == (smol.info.n_layers, 9) and bool(kv.values[:2].abs().sum() > 0)
    # heads 3, 4 and 5 share group 1: the same keys and values, so the same effect
    assert torch.equal(kv.values, both.values)


def test_path_patching_shape_and_causality(tiny):
    result = path_patch(
        tiny, CLEAN, CORRUPT, " Mary", " John", receivers=[(3, 0), (3, 2)], receiver_input="qkv"
    )
    assert result.values.shape == (4, 4)
    # senders at or after the receivers' layer have no path
    assert result.values[3:].abs().max() == 0
    assert result.values[:3].abs().max() > 0
    with pytest.raises(wb.InputError, match="out of range"):
        path_patch(tiny, CLEAN, CORRUPT, " Mary", " John", receivers=[(9, 0)])


def test_bad_patching_input(tiny):
    with pytest.raises(wb.InputError, match="same number of tokens"):
        prepare(tiny, CLEAN, "When Mary went", " Mary", " John")
    with pytest.raises(wb.InputError, match="not one"):
        prepare(tiny, CLEAN, CORRUPT, " Maryxylophonequartz", " John")


def test_attention_patterns_shape(tiny):
    patterns = attention_patterns(tiny, "one two three four")
    n = len(patterns.tokens)
    assert patterns.patterns.shape == (4, 4, n, n)
    assert torch.allclose(patterns.patterns.sum(-1), torch.ones(4, 4, n), atol=1e-5)
    assert torch.equal(patterns.patterns.triu(1), torch.zeros_like(patterns.patterns))


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            [
                "patch",
                "--clean",
                CLEAN,
                "--corrupt",
                "When Mary went",
                "--answers",
                " Mary",
                " John",
            ],
            "same number of tokens",
        ),
        (
            [
                "patch",
                "--clean",
                CLEAN,
                "--corrupt",
                CORRUPT,
                "--answers",
                " Maryxylophonequartz",
                " John",
            ],
            "not one",
        ),
        (
            [
                "steer",
                "--pairs",
                str(PROBES / "sentiment_pairs.jsonl"),
                "--layer",
                "9",
                "--prompt",
                "hi",
            ],
            "out of range",
        ),
        (["attention", "--prompt", "hi", "--layer", "7"], "out of range"),
        (
            ["steer", "--pairs", "missing.jsonl", "--layer", "1", "--prompt", "hi"],
            "missing.jsonl: file not found",
        ),
    ],
)
def test_cli_bad_input_exits_2(capsys, argv, expected):
    code = main([argv[0], "--model", "tiny-phi", *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_cli_verbs_json_and_html_on_tiny(capsys, tmp_path):
    for argv in (
        ["attention", "--prompt", "a b c a b"],
        ["lens", "--prompt", "The capital of France is", "--answers", " Paris", " Rome"],
        ["patch", "--clean", CLEAN, "--corrupt", CORRUPT, "--answers", " Mary", " John"],
        [
            "steer",
            "--pairs",
            str(PROBES / "sentiment_pairs.jsonl"),
            "--layer",
            "1",
            "--alpha",
            "-2",
            "0",
            "2",
            "--prompt",
            "Today",
            "--max-new-tokens",
            "4",
            "--positive-words",
            " good",
            "--negative-words",
            " bad",
        ],
    ):
        html = tmp_path / f"{argv[0]}.html"
        code = main([argv[0], "--model", "tiny-phi", *argv[1:], "--json", "--html", str(html)])
        out = capsys.readouterr().out
        assert code == 0, argv
        assert json.loads(out)["model"] == "tiny-phi"
        assert html.exists() and "plotly" in html.read_text()[:200000]


def test_head_scores_match_transformer_lens_head_detector(tiny):
    """Our head scores and TransformerLens' detect_head scoring (its own functions, same tokens) differ only
    by TL's normalisation over every query: x L/(2L+1) (duplicate, induction), x 2L/(2L+1) (previous)."""
    from workbench.interp.attention import repeated_random_tokens, transformer_lens_scores

    seq_len, n_seqs = 12, 3
    ids = repeated_random_tokens(tiny, seq_len, n_seqs, 0)
    # no accidental duplicates
    assert all(len(set(row[1 : seq_len + 1].tolist())) == seq_len for row in ids)
    ours, theirs = (
        head_scores(tiny, seq_len, n_seqs),
        transformer_lens_scores(tiny, seq_len, n_seqs),
    )
    for kind, factor in (
        ("previous_token", 2 * seq_len),
        ("duplicate_token", seq_len),
        ("induction", seq_len),
    ):
        expected = ours.scores[kind].double() * factor / (2 * seq_len + 1)
        # measured gap: 1.5e-8 (float32)
        assert torch.allclose(theirs.scores[kind].double(), expected, atol=1e-6), kind


# ----------------------------------------------------------------------------- smollm2-135m: known phenomena


@pytest.mark.integration
def test_smollm2_has_induction_heads(smol):
    top = head_scores(smol).top("induction", 5)
    assert float(top["induction"].iloc[0]) >= 0.5
    assert (top["induction"] >= 0.5).sum() >= 3


@pytest.mark.integration
def test_smollm2_ioi_logit_diff_and_attribution_agree(smol):
    pairs = [json.loads(line) for line in (PROBES / "ioi_pairs.jsonl").read_text().splitlines()]
    assert len(pairs) >= 20
    batch = prepare(
        smol, *([p[key] for p in pairs] for key in ("clean", "corrupt", "answer", "other"))
    )
    # the model prefers the indirect object (25 pairs, one batch)
    assert float(batch.clean_values.mean()) > 1.0
    pair = pairs[0]
    approx = attribution_patch(
        smol,
        pair["clean"],
        pair["corrupt"],
        pair["answer"],
        pair["other"],
        kinds=("attn_head",),
        verify=20,
    )["attn_head"]
    check = approx.check  # exact patching of its top 20 heads and 40 random others
    assert check.checked == 60 and check.pearson >= 0.8 and "L23H3" in check.labels[:3]


@pytest.mark.integration
def test_smollm2_sentiment_steering_is_monotonic(smol):
    vector = mean_difference_vector(smol, read_pairs(PROBES / "sentiment_pairs.jsonl"), layer=9)
    prompts = ["I think this movie is", "Honestly, the food here is", "My weekend was"]
    result = sweep(
        smol,
        vector,
        [-4, -2, 0, 2, 4],
        lambda: logprob_gap(
            smol, prompts, [" great", " good", " amazing"], [" terrible", " bad", " awful"]
        ),
        "logprob_gap",
    )
    assert result.is_monotonic and result.values[-1] > result.values[0]


@pytest.mark.integration
def test_cli_verbs_run_on_smollm2(capsys, smol, tmp_path):
    from workbench.safety.capability import capability_rows, read_qa

    # The steering cost columns on a slice of the QA and held-out sets (the full baseline, 60 of 79,
    # is tests/test_card.py's); at alpha 0 they must be the unsteered model's.
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join((PROBES / "qa.jsonl").read_text().splitlines(keepends=True)[:20]))
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(
        "".join((PROBES / "heldout_neutral.txt").read_text().splitlines(keepends=True)[:12])
    )
    expected = sum(row["correct"] for row in capability_rows(smol, read_qa(qa, smol)))
    for argv in (
        ["attention", "--prompt", "The cat sat. The cat sat."],
        ["lens", "--prompt", "The capital of France is", "--answers", " Paris", " London"],
        [
            "patch",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answers",
            " Mary",
            " John",
            "--kinds",
            "attn_out,mlp_out",
        ],
        [
            "steer",
            "--pairs",
            str(PROBES / "polite_vs_rude_pairs.jsonl"),
            "--layer",
            "9",
            "--alpha",
            "0",
            "3",
            "--prompt",
            "Reply to my email.",
            "--max-new-tokens",
            "8",
            "--qa",
            str(qa),
            "--heldout",
            str(heldout),
        ],
    ):
        code = main([argv[0], "--model", "smollm2-135m", *argv[1:], "--json"])
        out = capsys.readouterr().out
        assert code == 0, argv
        assert json.loads(out)["model"] == "smollm2-135m"
    rows = json.loads(out)["rows"]
    assert (
        rows[0]["alpha"] == 0
        and rows[0]["qa_accuracy"]["count"] == expected
        and rows[0]["qa_accuracy"]["n"] == 20
    )
    assert rows[1]["heldout_perplexity"]["low"] is not None and 0 <= rows[1]["repeated_3grams"] <= 1
