"""A TransformerLens user's code runs unchanged on a loaded model: `model(tokens)`,
`run_with_cache`, `cache["resid_post", 5]`, `accumulated_resid`, `to_str_tokens`, and hook
functions that dispatch on `hook.name` see the name they were registered under."""

from __future__ import annotations

import json

import pytest
import torch
from transformer_lens import utilities as utils

import workbench as wb
from workbench.cli import main

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.integration
def test_a_transformerlens_snippet_runs_unchanged_on_smollm2(smol):
    model = smol
    tokens = model.to_tokens(PROMPT)
    str_tokens = model.to_str_tokens(PROMPT)
    assert len(str_tokens) == tokens.shape[1] and model.to_string(tokens[0, 1:]) == PROMPT
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (1, tokens.shape[1], model.cfg.d_vocab)
    assert torch.equal(logits, model(tokens))
    assert model.W_U.shape == (model.cfg.d_model, model.cfg.d_vocab)

    resid = cache["resid_post", 5]
    assert resid.shape == (1, tokens.shape[1], model.cfg.d_model)
    assert torch.equal(resid, cache["blocks.5.hook_resid_post"])
    # The same activation through workbench's corpus cache (which tokenizes as TL does, BOS and
    # all, and without it when asked): bit for bit.
    corpus = wb.cache_activations(
        model, [PROMPT], hooks="blocks.5.hook_resid_post", positions="all", progress=False
    )
    assert torch.equal(corpus["resid_post", 5][0], cache["resid_post", 5][0])
    corpus = wb.cache_activations(
        model, [PROMPT], "blocks.5.hook_resid_post", "all", progress=False, prepend_bos=False
    )
    _, without_bos = model.run_with_cache(model.to_tokens(PROMPT, prepend_bos=False))
    assert torch.equal(corpus["resid_post", 5][0], without_bos["resid_post", 5][0])
    # not TL's ActivationCache
    assert ("resid_post", 5) in corpus and "corpus" in type(corpus).__name__.lower()

    accumulated, labels = cache.accumulated_resid(layer=6, incl_mid=False, return_labels=True)
    assert labels == [f"{layer}_pre" for layer in range(7)]
    assert torch.equal(accumulated[5], cache["resid_pre", 5])
    # The residual stream is the sum of its parts: float32 sums in another order, checked
    # against the float64 sum of the same parts (measured gap: 2.6e-7 of the stream's scale).
    parts = cache.decompose_resid(layer=model.cfg.n_layers, return_labels=False)
    final = cache["resid_post", model.cfg.n_layers - 1]
    exact = parts.double().sum(0)
    assert (final.double() - exact).abs().max() <= 1e-5 * exact.abs().max()

    seen = []

    def record(activation, hook):
        seen.append(hook.name)

    model.run_with_hooks(
        tokens,
        fwd_hooks=[
            ("blocks.5.hook_resid_post", record),
            (utils.get_act_name("resid_pre", 3), record),
            (lambda name: name == "blocks.2.hook_mlp_out", record),
        ],
    )
    assert seen == ["blocks.2.hook_mlp_out", "blocks.3.hook_resid_pre", "blocks.5.hook_resid_post"]
    seen.clear()
    with model.hooks(fwd_hooks=[("blocks.5.hook_resid_post", record)]):
        model(tokens)
    with wb.apply_hooks(model, [("blocks.4.hook_resid_post", record)]):
        model(tokens)
    assert seen == ["blocks.5.hook_resid_post", "blocks.4.hook_resid_post"]


def test_hook_alias_keeps_everything_but_the_name(tiny):
    point = tiny.bridge.hook_dict["blocks.1.hook_resid_post"]
    names, layers = [], []

    def record(activation, hook):
        names.append(hook.name)
        layers.append(hook.layer())

    tiny.run_with_hooks(tiny.to_tokens("hello"), fwd_hooks=[("blocks.1.hook_resid_post", record)])
    assert names == ["blocks.1.hook_resid_post"] and layers == [1]
    # the bridge's own name for it differs: why HookAlias exists
    assert point.name != "blocks.1.hook_resid_post"


def test_hooks_verb_lists_one_line_per_point_with_its_aliases(capsys):
    assert main(["hooks", "--model", "tiny-phi", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["hooks"]
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    by_name = {r["name"]: r for r in rows}
    assert by_name["blocks.0.hook_resid_post"]["aliases"] == ["blocks.0.hook_out"]
    # an alias is never its own line
    assert not any(alias in by_name for r in rows for alias in r["aliases"])
    assert main(["hooks", "--model", "tiny-phi", "--pattern", "blocks.0.*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 28 + 1 and any("also: blocks.0.hook_out" in line for line in lines)
