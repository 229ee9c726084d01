"""Results that print well: every public result type has a one-line repr of bounded length (what it
is, its shape, its headline number) and, where a table fits, an HTML table for notebooks."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

import workbench as wb
from workbench.audit import audit_toxicity
from workbench.core.datasets import BiasPair
from workbench.core.display import MAX_ROWS, Tabled
from workbench.interp import (
    ContrastPair,
    activation_patch,
    attention_patterns,
    attribution_patch,
    direct_logit_attribution,
    edge_attribution,
    head_scores,
    logit_lens,
    logit_lens_grid,
    mean_difference_vector,
    steered_generations,
    sweep,
    train_probes,
)
from workbench.interp.sparse_probes import SparseProbeTable
from workbench.safety import CounterfactualResult, ScorerEvaluation, crows_pairs

MAX_REPR = 320  # characters: one readable line in a notebook or a terminal
LONG = "When Mary and John went to the store, John gave a drink to " * 3
# Made by a slower test that checks its repr the same way.
COVERED_ELSEWHERE = {"BiasLocalisation": "tests/test_localise.py::test_localisation_on_tiny"}
FACES = ["workbench", "workbench.model", "workbench.interp", "workbench.safety", "workbench.audit"]


@pytest.fixture(scope="module")
def results(tiny, tmp_path_factory):
    """One instance of every public result type, made on tiny-phi (or from small rows)."""
    clean, corrupt = (
        "When Mary and John went to the store, John gave",
        "When Mary and John went to the store, Mary gave",
    )
    pairs = [ContrastPair("I love it", "I hate it"), ContrastPair("good day", "bad day")]
    vector = mean_difference_vector(tiny, pairs, layer=1)
    acts = {"h": torch.randn(40, 8, generator=torch.Generator().manual_seed(0))}
    labels = [0, 1] * 20
    auroc = {"value": 0.8, "low": 0.7, "high": 0.9, "n": 40, "method": "BCa bootstrap"}
    made = [
        logit_lens(tiny, LONG, tracked=[" Mary"]),
        logit_lens_grid(tiny, LONG),
        direct_logit_attribution(tiny, LONG, " Mary", " John"),
        attention_patterns(tiny, LONG),
        head_scores(tiny, seq_len=6, n_seqs=2),
        activation_patch(tiny, clean, corrupt, " Mary", " John", kind="attn_head"),
        attribution_patch(tiny, clean, corrupt, " Mary", " John", kinds=("attn_out",), verify=2)[
            "attn_out"
        ].check,
        edge_attribution(tiny, clean, corrupt, " Mary", " John", steps=1),
        vector,
        sweep(tiny, vector, [0.0, 1.0], lambda: 0.5, "constant"),
        steered_generations(tiny, vector, LONG, [0.0, 2.0], max_new_tokens=3),
        train_probes(acts, labels, meta={"model": "tiny-phi", "positions": "last"}),
        SparseProbeTable([{"hook": "h", "k": 1, "auroc": 0.6, "accuracy": 0.5}], "random"),
        crows_pairs(tiny, [BiasPair("He is a nurse.", "She is a nurse.", "stereo", "gender", 1)]),
        CounterfactualResult(
            [{"template": "t", "group": g, "prompt": "p", "logprob[x]": -1.0} for g in "ab"], ["x"]
        ),
        ScorerEvaluation(
            [
                {
                    "scorer": "s",
                    "kind": "k",
                    "auroc": auroc,
                    "ece": 0.1,
                    "positives": 20,
                    "negatives": 20,
                }
            ],
            "data.jsonl",
        ),  # fmt: skip
        wb.generate(tiny, LONG, max_new_tokens=3)[0],
        audit_toxicity(
            tiny,
            ["Hello there", "You are"],
            tmp_path_factory.mktemp("audit") / "a",
            scorers="profanity-check",
            max_new_tokens=3,
            no_capability=True,
            bootstrap=100,
        ),  # fmt: skip
    ]
    made.append(made[11].best())  # a Probe
    made += _sae_results(tiny)
    return made


def _sae_results(tiny) -> list:
    """An SAE's evaluation, a feature card and the two ToxiGen tables, on a random tiny SAE."""
    from workbench.core.datasets import LabeledText
    from workbench.interp.sae import SAE, SAEConfig
    from workbench.interp.sae_eval import evaluate_sae
    from workbench.interp.sae_features import feature_card, index_features
    from workbench.safety.sae_toxicity import sparse_vs_dense, text_features, toxicity_features

    sae = SAE(
        SAEConfig(
            d_in=128, d_sae=32, k=4, hook_name="blocks.1.hook_resid_post", model_name="tiny-phi"
        )
    )
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(0))
    texts = [
        f"Text number {i} is about a {word}." for i, word in enumerate(["cat", "dog", "fox"] * 8)
    ]
    index = index_features(tiny, sae, texts, context=8, progress=False)
    rows = [LabeledText(t, i % 2, f"g{i % 4}", "x", i) for i, t in enumerate(texts)]
    features = text_features(tiny, sae, texts, progress=False)
    return [
        evaluate_sae(tiny, sae, texts, context=8, progress=False),
        feature_card(tiny, sae, index, int(index.density().argmax())),
        sparse_vs_dense(features, rows, ks=(1, 2)),
        toxicity_features(features, rows, top=3),
    ]


def check_repr(result) -> None:
    text = repr(result)
    assert "\n" not in text and len(text) <= MAX_REPR, (type(result).__name__, len(text), text)
    assert text.startswith(type(result).__name__ + "("), text
    assert "tensor(" not in text, text


def test_every_result_repr_is_one_short_line(results):
    for result in results:
        check_repr(result)


def test_tables_show_in_notebooks_with_the_repr_on_top(results):
    for result in results:
        if isinstance(result, Tabled):
            page = result._repr_html_()
            assert page.startswith("<p><code>") and page.count("<tr") <= MAX_ROWS + 3, type(result)


def test_every_public_result_type_is_covered(results):
    """A public class with `to_frame` (a result) is in the fixture, so a new one needs a repr."""
    covered = {type(r) for r in results}
    public = set()
    for face in FACES:
        module = importlib.import_module(face)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and callable(getattr(obj, "to_frame", None)):
                public.add(obj)
    missing = {c.__name__ for c in public - covered} - set(COVERED_ELSEWHERE)
    assert not missing, sorted(missing)
    for cls in covered:
        if dataclasses.is_dataclass(cls):  # the dataclass's generated repr would print every field
            assert "__repr__" in cls.__dict__, cls.__name__
