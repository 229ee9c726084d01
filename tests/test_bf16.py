"""bf16: the interpretability invariants at the tolerance bf16 allows, probes fitted in fp32, and
hooked generation equal to plain Hugging Face bf16 greedy generation, token for token.

Tolerances (bf16 keeps 8 bits of mantissa, about 2-3 significant digits): patching the clean
activation gives back the clean metric within 1e-2 of the normalised scale; DLA parts sum to the
logit difference within 1% relative (they are summed in float64 from bf16 activations).
"""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.interp.lens import direct_logit_attribution
from workbench.interp.patching import prepare, run_patches

from .conftest import hf_reference
from .test_generation import hf_greedy
from .test_interp import CLEAN, CORRUPT


@pytest.fixture(scope="module")
def tiny_bf16():
    return wb.load("tiny-phi", device="cpu", dtype="bfloat16")


def test_bf16_load_is_bf16_throughout(tiny_bf16):
    assert tiny_bf16.info.dtype == "bfloat16"
    assert {p.dtype for p in tiny_bf16.hf_model.parameters()} == {torch.bfloat16}
    seen = set()
    with wb.apply_hooks(
        tiny_bf16,
        [
            (name, lambda act, hook: seen.add(act.dtype))
            for name in (
                "blocks.0.hook_resid_post",
                "blocks.1.attn.hook_z",
                "blocks.3.hook_mlp_out",
            )
        ],
    ):
        with torch.no_grad():
            tiny_bf16.hf_model(tiny_bf16.tokenizer("Hello there", return_tensors="pt").input_ids)
    assert seen == {torch.bfloat16}


def test_bf16_patching_invariants(tiny_bf16):
    task = prepare(tiny_bf16, CLEAN, CORRUPT, " Mary", " John")
    final = f"blocks.{tiny_bf16.n_layers - 1}.hook_resid_post"
    every, nothing = (slice(None), slice(None)), (slice(0, 0),)
    normalised = task.normalise(
        run_patches(
            tiny_bf16, task, [(final, every), (final, nothing), ("blocks.0.hook_resid_pre", every)]
        )
    )
    assert abs(float(normalised[0]) - 1.0) <= 1e-2
    assert abs(float(normalised[1])) <= 1e-2
    assert abs(float(normalised[2]) - 1.0) <= 1e-2


def test_bf16_dla_sums_to_logit_difference(tiny_bf16):
    dla = direct_logit_attribution(tiny_bf16, CLEAN, " Mary", " John")
    total = float(dla.values.double().sum())
    assert abs(total - dla.logit_diff) <= 0.01 * max(abs(dla.logit_diff), 1e-3), (
        total,
        dla.logit_diff,
    )


def test_bf16_probes_are_fitted_in_fp32(tiny_bf16):
    from workbench.interp.probes import train_probes

    texts = [f"I really like {w}." for w in ("cats", "tea", "rain", "music", "maps", "bees")] + [
        f"I really hate {w}." for w in ("cats", "tea", "rain", "music", "maps", "bees")
    ]
    texts = texts * 3
    labels = ([1] * 6 + [0] * 6) * 3
    cache = wb.cache_activations(
        tiny_bf16, texts, hooks="blocks.2.hook_resid_post", positions="mean", progress=False
    )
    assert cache["blocks.2.hook_resid_post"].dtype == torch.bfloat16
    probe = train_probes(
        cache, labels, l2=1e-2, device="cpu", meta={"model": "tiny-phi", "positions": "mean"}
    ).best()
    assert probe.weight.dtype == torch.float32 and probe.mean.dtype == torch.float32


def check_bf16_generation_equals_hf(model, prompt: str, max_new_tokens: int) -> list[int]:
    reference = hf_reference(model.info.path).to(torch.bfloat16)
    expected = hf_greedy(reference, model, prompt, max_new_tokens)
    ours = wb.generate(model, prompt, max_new_tokens=max_new_tokens)[0]
    assert list(ours.new_tokens) == expected[: len(ours.new_tokens)] and len(ours.new_tokens) >= 1
    return expected


def test_bf16_generation_equals_hf_on_tiny(tiny_bf16):
    assert len(check_bf16_generation_equals_hf(tiny_bf16, "Once upon a time there was", 12)) == 12


@pytest.mark.integration
def test_bf16_generation_equals_hf_on_smollm2():
    smol = wb.load("smollm2-135m", device="cpu", dtype="bfloat16")
    expected = check_bf16_generation_equals_hf(smol, "What is the capital of France?", 16)
    assert len(expected) >= 4
