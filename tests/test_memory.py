"""Memory predicted before the work: Phi-2's shape from its config (nothing allocated), load
estimates, and patching / attribution that pick a smaller batch or refuse when memory is short."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.interp.attribution import attribution_patch
from workbench.interp.patching import activation_patch
from workbench.model import memory
from workbench.model.builds import PHI2_PARAMS

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def test_phi2_shape_from_its_config_on_the_meta_device():
    shape = memory.model_shape("phi-2-shape")
    assert shape.n_params == PHI2_PARAMS == 2_779_683_840
    assert (shape.n_layers, shape.d_model, shape.d_mlp, shape.n_heads, shape.d_vocab) == (
        32,
        2560,
        10240,
        32,
        51200,
    )
    assert memory.model_shape("phi-2").n_params == PHI2_PARAMS  # not downloaded: its shipped config
    estimate = memory.load_estimate(shape, "bfloat16")
    assert estimate.parts["weights"] == 2 * PHI2_PARAMS
    assert memory.load_estimate(shape, "float32").parts["weights"] == 4 * PHI2_PARAMS


def test_info_prints_the_load_estimate_without_loading(capsys):
    assert (
        main(["info", "--model", "phi-2-shape", "--dtype", "bfloat16", "--no-load", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["load_estimate_bytes"] == 2 * PHI2_PARAMS + memory.PROCESS_BYTES
    assert "5.18 GiB weights" in out["load_estimate"]


def test_estimates_grow_as_they_should(tiny):
    shape = memory.ModelShape.from_info(tiny.info)
    one, eight = (memory.forward_estimate(shape, "float32", b, 16).bytes for b in (1, 8))
    assert eight == 8 * one
    assert memory.backward_estimate(shape, "float32", 1, 16).bytes > one
    assert memory.forward_estimate(shape, "bfloat16", 1, 16).bytes < one


def test_patching_picks_a_smaller_batch_when_memory_is_short(tiny, monkeypatch):
    reference = activation_patch(
        tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head", max_batch=16
    )
    shape = memory.ModelShape.from_info(tiny.info)
    seq = len(tiny.tokenizer(CORRUPT).input_ids)
    fits_four = (
        memory.forward_estimate(shape, tiny.info.dtype, 4, seq).bytes / memory.FIT_FRACTION + 1
    )
    monkeypatch.setattr(memory, "available_bytes", lambda device: fits_four)
    batches = []
    handle = tiny.hf_model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(
            (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[0]
        ),
        with_kwargs=True,
    )
    try:
        constrained = activation_patch(
            tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head", max_batch=16
        )
    finally:
        handle.remove()
    assert max(batches) == 4
    # Batching does not change the numbers beyond float32 noise (measured: identical, 0.0).
    assert torch.allclose(constrained.values, reference.values, atol=1e-5)


def test_patching_and_attribution_refuse_when_nothing_fits(tiny, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(wb.CacheTooLargeError, match="would not fit even one at a time"):
        activation_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kind="attn_head")
    with pytest.raises(wb.CacheTooLargeError, match="forward and backward pass"):
        attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John")
    code = main(
        [
            "patch",
            "--model",
            "tiny-phi",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answers",
            " Mary",
            " John",
            "--method",
            "exact",
            "--kinds",
            "attn_head",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "would not fit" in err and len(err.splitlines()) == 1


def test_attribution_leaves_no_parameter_gradient(tiny):
    before = {name: p.requires_grad for name, p in tiny.hf_model.named_parameters()}
    result = attribution_patch(tiny, CLEAN, CORRUPT, " Mary", " John", kinds=("attn_head",))
    assert torch.isfinite(result["attn_head"].values).all()
    assert all(p.grad is None for p in tiny.hf_model.parameters())
    assert {name: p.requires_grad for name, p in tiny.hf_model.named_parameters()} == before
