"""Hook names: patterns, close-match suggestions, Phi's missing resid_mid, clean removal, gradients."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb

from .conftest import hf_reference


def test_patterns_expand_in_layer_order(tiny):
    assert wb.resolve_hooks(tiny, "resid_post") == [f"blocks.{i}.hook_resid_post" for i in range(4)]
    assert wb.resolve_hooks(tiny, "hook_resid_post") == wb.resolve_hooks(
        tiny, "blocks.*.hook_resid_post"
    )
    assert wb.resolve_hooks(tiny, "blocks.2.attn.hook_z") == ["blocks.2.attn.hook_z"]
    assert wb.resolve_hooks(tiny, "attn.hook_pattern")[0] == "blocks.0.attn.hook_pattern"
    both = wb.resolve_hooks(tiny, "blocks.1.hook_resid_post,blocks.0.hook_resid_pre")
    assert both == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]


def test_all_hooks_count_aliases_once(tiny):
    names = wb.hook_names(tiny)
    assert "blocks.0.hook_resid_post" in names and "blocks.0.hook_out" not in names
    assert len(set(names)) == len(names)
    assert len(wb.hook_names(tiny, aliases=True)) > len(names)


def test_typo_suggests_close_names(tiny):
    with pytest.raises(wb.HookNameError, match="did you mean 'hook_resid_post'"):
        wb.resolve_hooks(tiny, "resid_psot")
    with pytest.raises(wb.HookNameError, match="blocks.1.hook_resid_post"):
        wb.resolve_hooks(tiny, "blocks.1.hook_resid_pots")


def test_phi_has_no_resid_mid_and_says_why(tiny):
    with pytest.raises(wb.HookNameError, match="parallel") as error:
        wb.resolve_hooks(tiny, "blocks.0.hook_resid_mid")
    assert "hook_resid_pre" in str(error.value)


def test_apply_hooks_patch_and_clean_exit_even_on_error(tiny):
    ids = tiny.tokenizer("Hello there world", return_tensors="pt").input_ids
    with torch.no_grad():
        clean = tiny.bridge(ids, return_type="logits")
        with wb.apply_hooks(tiny, [("blocks.1.hook_resid_post", lambda act, hook: act * 0)]):
            patched = tiny.bridge(ids, return_type="logits")
        assert not torch.equal(clean, patched)
        with pytest.raises(RuntimeError, match="boom"):
            with wb.apply_hooks(tiny, [("resid_post", lambda act, hook: act + 1)]):
                raise RuntimeError("boom")
        after = tiny.bridge(ids, return_type="logits")
    assert torch.equal(clean, after)


def test_gradients_through_hooks_equal_plain_hf(tiny):
    """Backward with hooks on every layer gives HF's parameter gradients (attribution patching needs it)."""
    ids = tiny.tokenizer(
        "The cat sat on the mat because it was tired", return_tensors="pt"
    ).input_ids
    reference = hf_reference(tiny.info.path)
    loss = reference(ids, labels=ids).loss
    loss.backward()
    expected = {n: p.grad.clone() for n, p in reference.named_parameters()}

    grads_seen = []

    def identity_with_grad_probe(act, hook):
        if act.requires_grad:
            act.register_hook(lambda g: grads_seen.append(g.norm().item()))
        return act

    tiny.hf_model.zero_grad(set_to_none=True)
    with wb.apply_hooks(
        tiny, [("resid_post", identity_with_grad_probe), ("attn.hook_z", identity_with_grad_probe)]
    ):
        ours = tiny.hf_model(ids, labels=ids).loss
        ours.backward()
    assert abs(ours.item() - loss.item()) <= 1e-6
    assert len(grads_seen) == 8  # 4 resid_post + 4 hook_z gradients flowed through the hooks
    worst = 0.0
    for name, param in tiny.hf_model.named_parameters():
        key = name.replace("._original_component", "")
        worst = max(worst, (param.grad - expected[key]).abs().max().item())
    tiny.hf_model.zero_grad(set_to_none=True)
    assert worst <= 1e-5


def test_bypass_keeps_hooked_components_and_restores_the_tree(tiny):
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    from workbench.model.run import bypass_unhooked_bridges

    layers = tiny.hf_model.model.layers
    before = [id(m) for m in tiny.hf_model.modules()]
    ids = tiny.tokenizer("warm up the bridge", return_tensors="pt").input_ids
    with torch.no_grad():
        tiny.hf_model(ids)  # the bridge wires its internal capture hooks on first use
        tiny.bridge.run_with_cache(ids)  # transformers adds output-capturing hooks to HF modules
    with wb.apply_hooks(tiny, [("blocks.2.hook_resid_post", lambda act, hook: act)]):
        with bypass_unhooked_bridges(tiny) as bypassed:
            assert bypassed > 0
            wrapped = [isinstance(layer, GeneralizedComponent) for layer in layers]
            assert wrapped == [False, False, True, False]
    assert [id(m) for m in tiny.hf_model.modules()] == before
    with bypass_unhooked_bridges(tiny):
        assert not any(isinstance(layer, GeneralizedComponent) for layer in layers)


def test_generation_with_hook_equals_fully_wrapped_generation(tiny):
    """The bypass must not change what a hooked generation produces."""
    prompt_ids = tiny.tokenizer("Once upon a time", return_tensors="pt")
    steer = [("blocks.1.hook_resid_post", lambda act, hook: act * 2 + 0.5)]
    with wb.apply_hooks(tiny, steer):
        ours = wb.generate(tiny, "Once upon a time", max_new_tokens=10)[0]
        with torch.no_grad():
            full = tiny.hf_model.generate(
                **prompt_ids,
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tiny.tokenizer.pad_token_id,
            )
    assert list(ours.new_tokens) == full[0, prompt_ids.input_ids.shape[1] :].tolist()


def test_hook_names_and_shapes_need_no_weights(tiny, capsys):
    """`workbench hooks` builds the model on the meta device: no weight is read or allocated, and
    the table (names, firing order, shapes, position dims) is the real model's, exactly."""
    from workbench.cli import main
    from workbench.model.hooks import hook_table

    meta = wb.load("tiny-phi", device="meta")
    assert {p.device.type for p in meta.hf_model.parameters()} == {"meta"}
    assert hook_table(meta) == hook_table(tiny)
    capsys.readouterr()
    assert main(["hooks", "--model", "tiny-phi", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["hooks"]
    assert [r["name"] for r in rows] == wb.hook_names(tiny)
