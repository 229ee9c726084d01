"""The one hooked forward pass (workbench.model.run): hooks act, then leave nothing behind."""

from __future__ import annotations

import pytest
import torch

from workbench.model import run


def _no_hooks_left(model) -> bool:
    points = model.bridge.hook_dict.values()
    return not any(point._forward_hooks for point in points)


def test_forward_equals_the_bridge_and_a_replacing_hook_equals_transformer_lens(tiny):
    ids = tiny.to_tokens("When Mary and John went to the store")
    with torch.no_grad():
        plain = tiny.bridge(ids)
        doubled = tiny.run_with_hooks(
            ids, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: 2 * x)]
        )
    assert torch.equal(run.forward(tiny, ids), plain)
    ours = run.forward(tiny, ids, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: 2 * x)])
    assert torch.equal(ours, doubled)
    assert _no_hooks_left(tiny)


def test_record_keeps_what_run_with_cache_sees(tiny):
    ids = tiny.to_tokens("a short text")
    names = ["blocks.0.attn.hook_z", "blocks.2.hook_resid_post"]
    kept = run.record(tiny, ids, names)
    with torch.no_grad():
        _, cache = tiny.run_with_cache(ids, names_filter=names)
    for name in names:
        assert torch.equal(
            kept[name], cache[name]
        )  # hook_z in TransformerLens' [batch, pos, head, d_head]


def test_stop_forward_ends_the_pass_and_the_model_is_left_clean(tiny):
    ids = tiny.to_tokens("stop early")
    seen = []

    def stop(activation, hook):
        seen.append(hook.name)
        raise run.StopForward

    assert run.forward(tiny, ids, fwd_hooks=[("blocks.0.hook_resid_post", stop)]) is None
    assert seen == ["blocks.0.hook_resid_post"] and _no_hooks_left(tiny)
    with pytest.raises(ValueError):  # any other error propagates, and still leaves nothing behind
        run.forward(tiny, ids, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, h: int("x"))])
    assert _no_hooks_left(tiny)
    assert all(p.requires_grad for p in tiny.hf_model.parameters())


def test_grad_pass_starts_at_the_embeddings_and_restores_the_parameters(tiny):
    ids = tiny.to_tokens("gradients please")
    grads = {}

    def keep_grad(activation, hook):
        activation.register_hook(lambda g: grads.__setitem__("resid", g))
        return activation

    logits = run.forward(tiny, ids, fwd_hooks=[("blocks.1.hook_resid_post", keep_grad)], grad=True)
    logits[0, -1].sum().backward()
    assert grads["resid"].shape[-1] == tiny.info.d_model and bool(grads["resid"].abs().sum() > 0)
    assert all(p.requires_grad and p.grad is None for p in tiny.hf_model.parameters())
    # Embeddings given instead of the ids' own: the same embeddings give the same logits.
    embeddings = run.input_embeddings(tiny, ids)
    assert torch.equal(run.forward(tiny, ids, embeddings=embeddings), run.forward(tiny, ids))
