"""The GPU path: every path puts its tensors on CUDA, in the chosen dtype, and never falls back to the
CPU silently. Skipped without CUDA; run with `pytest -m gpu` (or `make gpu-check`) on a GPU machine."""

from __future__ import annotations

import pytest
import torch

import workbench as wb

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def gpu_tiny():
    return wb.load("tiny-phi", device="cuda", dtype="bfloat16")


def _all_on_cuda(module) -> bool:
    return all(t.is_cuda for t in list(module.parameters()) + list(module.buffers()))


def test_default_load_on_a_gpu_is_cuda_and_bf16():
    model = wb.load("tiny-phi")
    assert model.info.device.startswith("cuda") and model.info.dtype == "bfloat16"
    assert _all_on_cuda(model.hf_model)


def test_every_hook_sees_cuda_tensors_in_the_model_dtype(gpu_tiny):
    seen = []
    names = wb.resolve_hooks(gpu_tiny, "all")
    with wb.apply_hooks(
        gpu_tiny,
        [
            (name, lambda act, hook: seen.append((hook.name, act.device.type, act.dtype)))
            for name in names
        ],
    ):
        with torch.no_grad():
            gpu_tiny.hf_model(gpu_tiny.tokenizer(CLEAN, return_tensors="pt").input_ids.cuda())
    assert len(seen) >= len(names) // 2
    off = [(name, device, dtype) for name, device, dtype in seen if device != "cuda"]
    assert not off, off[:3]
    assert {dtype for _, _, dtype in seen if dtype.is_floating_point} == {torch.bfloat16}


def test_cache_on_the_gpu_and_to_the_host(gpu_tiny, tmp_path):
    texts = [
        "Tell me about cats.",
        "Rain again today.",
        "A much longer sentence about the sea and its tides.",
    ]
    on_gpu = wb.cache_activations(
        gpu_tiny, texts, hooks="resid_post", positions="all", store_device="cuda", progress=False
    )
    on_host = wb.cache_activations(
        gpu_tiny, texts, hooks="resid_post", positions="all", progress=False
    )
    name = "blocks.1.hook_resid_post"
    assert on_gpu[name].is_cuda and on_gpu[name].dtype == torch.bfloat16
    assert not on_host[name].is_cuda and torch.equal(on_gpu[name].cpu(), on_host[name])
    disk = wb.cache_activations(
        gpu_tiny, texts, hooks="resid_post", positions="all", out=tmp_path / "c", progress=False
    )
    assert torch.equal(disk[name][:], on_host[name])


def test_generation_and_steering_on_the_gpu(gpu_tiny):
    from workbench.interp.steering import mean_difference_vector, read_pairs, steer

    from .conftest import ROOT

    base = wb.generate(gpu_tiny, "Once upon a time there was", max_new_tokens=8)[0]
    vector = mean_difference_vector(
        gpu_tiny, read_pairs(ROOT / "probes" / "polite_vs_rude_pairs.jsonl"), 2
    )
    assert vector.vector.is_cuda
    with steer(gpu_tiny, vector, 8.0):
        steered = wb.generate(gpu_tiny, "Once upon a time there was", max_new_tokens=8)[0]
    assert steered.new_tokens != base.new_tokens
    assert (
        wb.generate(gpu_tiny, "Once upon a time there was", max_new_tokens=8)[0].new_tokens
        == base.new_tokens
    )


def test_patching_and_attribution_on_the_gpu(gpu_tiny):
    from workbench.interp.attribution import attribution_patch
    from workbench.interp.patching import prepare, run_patches

    task = prepare(gpu_tiny, CLEAN, CORRUPT, " Mary", " John")
    assert task.clean_ids.is_cuda
    final = f"blocks.{gpu_tiny.n_layers - 1}.hook_resid_post"
    normalised = task.normalise(run_patches(gpu_tiny, task, [(final, (slice(None), slice(None)))]))
    assert abs(float(normalised[0]) - 1.0) <= 1e-2
    attribution = attribution_patch(
        gpu_tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head",)
    )["attn_head"]
    assert torch.isfinite(attribution.values).all()


def test_probes_are_fitted_on_the_gpu_in_fp32(gpu_tiny, monkeypatch):
    from workbench.interp import probes

    devices = []
    original = probes._fit_logistic

    def spy(x, y, l2, steps=100):
        devices.append((x.device.type, x.dtype))
        return original(x, y, l2, steps)

    monkeypatch.setattr(probes, "_fit_logistic", spy)
    texts = [f"I like {w}." for w in "cats tea rain music maps bees".split()] + [
        f"I hate {w}." for w in "cats tea rain music maps bees".split()
    ]
    cache = wb.cache_activations(
        gpu_tiny, texts * 3, hooks="resid_post", positions="mean", progress=False
    )
    probes.train_probes(
        cache, ([1] * 6 + [0] * 6) * 3, l2=1e-2, meta={"model": "tiny-phi", "positions": "mean"}
    )
    assert devices and set(devices) == {("cuda", torch.float32)}


def test_phi2_shape_on_the_gpu_generation_equals_hf():
    """Phi-2's full shape in bf16 on the GPU: parameter count, and hooked greedy generation equal to a
    plain HF model built with the same seed, token for token."""
    from workbench.model.builds import PHI2_PARAMS, build_phi2_shape
    from workbench.model.generation import encode_prompts, format_prompt

    model = wb.load("phi-2-shape", device="cuda", dtype="bfloat16")
    assert model.info.n_params == PHI2_PARAMS and model.info.weight_bytes == 2 * PHI2_PARAMS
    assert _all_on_cuda(model.hf_model)
    reference = build_phi2_shape(torch.bfloat16, "cuda")
    for (name, ours), (_, theirs) in zip(
        model.hf_model.state_dict().items(), reference.state_dict().items()
    ):
        if ours.shape == theirs.shape and ours.dtype == theirs.dtype:
            assert torch.equal(ours, theirs), name
    prompt = "What is the capital of France?"
    inputs = encode_prompts(model, [format_prompt(model, prompt)])
    with torch.no_grad():
        expected = reference.generate(
            **inputs, max_new_tokens=16, do_sample=False, pad_token_id=model.tokenizer.pad_token_id
        )[0, inputs["input_ids"].shape[1] :]
    ours = wb.generate(model, prompt, max_new_tokens=16)[0]
    assert (
        list(ours.new_tokens) == expected.tolist()[: len(ours.new_tokens)]
        and len(ours.new_tokens) >= 1
    )
