"""Activation caching: padding invariance, disk == memory bit for bit, SIGKILL + resume, size guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import workbench as wb
from workbench.core.datasets import TextRecord
from workbench.model import activations as cache_module
from workbench.model.hooks import hook_table

from .conftest import SLOW_CACHE, SLOW_CACHE_CHILD, SLOW_CACHE_TEXTS

TEXTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "def add(a, b):\n    return a + b",
    "One two three",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "A",
    "Some  text   with    Phi whitespace runs",
]


@pytest.mark.parametrize("positions", ["all", "last", "mean", "mean_after_first"])
def test_padded_batch_equals_single_text(tiny, positions):
    hooks = (
        "resid_post,attn.hook_z,mlp.hook_post,attn.hook_pattern"
        if positions == "all"
        else "resid_post,attn.hook_z,mlp.hook_post"
    )
    batched = wb.cache_activations(
        tiny, TEXTS, hooks=hooks, positions=positions, batch_size=4, progress=False
    )
    for i, text in enumerate(TEXTS):
        alone = wb.cache_activations(tiny, [text], hooks=hooks, positions=positions, progress=False)
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n
        for hook in batched.hooks:
            ours = batched[hook][i]
            ref = alone[hook][0]
            if positions == "all" and hook.endswith("hook_pattern"):
                ours, ref = ours[:, :n, :n], ref[:, :n, :n]
            elif positions == "all":
                # zero padding
                assert ours[n:].abs().max().item() == 0 if ours.shape[0] > n else True
                ours, ref = ours[:n], ref[:n]
            assert (ours - ref).abs().max().item() <= 1e-5, (hook, i)


def test_cache_matches_bridge_run_with_cache(tiny):
    ids = tiny.tokenizer(TEXTS[1], return_tensors="pt").input_ids
    _, reference = tiny.bridge.run_with_cache(ids)
    ours = wb.cache_activations(
        tiny,
        [TEXTS[1]],
        hooks="resid_post,attn.hook_pattern,attn.hook_z,mlp.hook_post",
        positions="all",
        progress=False,
    )
    for hook in ours.hooks:
        assert torch.equal(ours[hook][0], reference[hook][0]), hook


def test_last_and_mean_positions(tiny):
    all_pos = wb.cache_activations(
        tiny, TEXTS, hooks="blocks.3.hook_resid_post", positions="all", progress=False
    )["blocks.3.hook_resid_post"]
    lengths = wb.cache_activations(
        tiny, TEXTS, hooks="blocks.3.hook_resid_post", positions="all", progress=False
    ).lengths
    last = wb.cache_activations(
        tiny, TEXTS, hooks="blocks.3.hook_resid_post", positions="last", progress=False
    )["blocks.3.hook_resid_post"]
    mean = wb.cache_activations(
        tiny, TEXTS, hooks="blocks.3.hook_resid_post", positions="mean", progress=False
    )["blocks.3.hook_resid_post"]
    after_first = wb.cache_activations(
        tiny, TEXTS, hooks="blocks.3.hook_resid_post", positions="mean_after_first", progress=False
    )["blocks.3.hook_resid_post"]
    assert 1 in lengths.tolist()  # a one-token text keeps its only token
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(last[i], all_pos[i, n - 1], atol=1e-6)
        assert torch.allclose(mean[i], all_pos[i, :n].mean(0), atol=1e-5)
        assert torch.allclose(after_first[i], all_pos[i, min(1, n - 1) : n].mean(0), atol=1e-5)


@pytest.mark.parametrize("positions", ["all", "mean"])
def test_disk_equals_memory_bit_for_bit(tiny, tmp_path, positions):
    hooks = "resid_post,attn.hook_z" + (",attn.hook_pattern" if positions == "all" else "")
    texts = TEXTS * 10  # 70 texts
    memory = wb.cache_activations(
        tiny, texts, hooks=hooks, positions=positions, batch_size=1, progress=False
    )
    disk = wb.cache_activations(
        tiny,
        texts,
        hooks=hooks,
        positions=positions,
        batch_size=1,
        shard_size=5,
        out=tmp_path / "c",
        progress=False,
    )
    assert len(disk.manifest["shards"]) == 9  # 5 rounded up to whole sorting windows of 4 rows: 8
    assert disk.hooks == memory.hooks
    assert torch.equal(disk.lengths, memory.lengths)
    for hook in memory.hooks:
        assert torch.equal(disk[hook], memory[hook]), hook
    reopened = wb.open_cache(tmp_path / "c")
    starts = [start for start, _ in reopened.iter_shards(memory.hooks[0])]
    assert starts == list(range(0, 70, 8))


def test_single_batch_kept_without_copy_equals_copied_store(tiny, tmp_path, monkeypatch):
    """One batch whose rows are already in order is kept as the forward pass made it (pad positions
    zeroed in place, as TransformerLens keeps its tensors); it must equal the copied store bit for
    bit at every hook, with its padding zero, and leave the model's weights untouched."""
    texts = TEXTS  # of several lengths: one batch, padded
    weights = {name: p.clone() for name, p in tiny.hf_model.named_parameters()}
    decisions = []
    original = cache_module._can_keep
    monkeypatch.setattr(
        cache_module, "_can_keep", lambda *a: decisions.append(original(*a)) or decisions[-1]
    )
    memory = wb.cache_activations(
        tiny, texts, hooks="all", positions="all", batch_size=len(texts), progress=False
    )
    disk = wb.cache_activations(
        tiny,
        texts,
        hooks="all",
        positions="all",
        batch_size=len(texts),
        out=tmp_path / "c",
        progress=False,
    )
    table = hook_table(tiny)
    copied = [hook for hook, kept in zip(memory.hooks, decisions, strict=True) if not kept]
    # Only rotary tables (broadcast over the batch) and rotated q/k (views) are copied.
    assert copied and all(
        h.endswith(("hook_cos", "hook_sin", "hook_rot_q", "hook_rot_k")) for h in copied
    ), copied
    for hook in memory.hooks:
        assert torch.equal(disk[hook], memory[hook]), hook
        for i, n in enumerate(memory.lengths.tolist()):
            for dim in table[hook].pos_dims:
                assert not memory[hook][i].narrow(dim - 1, n, memory[hook].shape[dim] - n).any(), (
                    hook,
                    i,
                )
    # there was padding to zero
    assert memory.lengths.tolist() != [memory.lengths[0].item()] * len(texts)
    for name, p in tiny.hf_model.named_parameters():
        assert torch.equal(p, weights[name]), name


@pytest.mark.parametrize("batch_size", [1, 8])
def test_aliases_of_the_last_hook_point_are_all_cached(tiny, batch_size):
    """Two names of one hook point (blocks.3.hook_out is hook_resid_post) both fire before the
    forward pass stops; the stop used to come after the first, leaving the other all zeros."""
    cached = wb.cache_activations(
        tiny,
        TEXTS,
        hooks="blocks.3.hook_out,blocks.3.hook_resid_post",
        positions="all",
        batch_size=batch_size,
        progress=False,
    )
    assert cached["blocks.3.hook_resid_post"].abs().sum() > 0
    assert torch.equal(cached["blocks.3.hook_out"], cached["blocks.3.hook_resid_post"])


def test_automatic_shard_size_targets_256_mib(tiny):
    plan = cache_module.CachePlan(
        ["blocks.0.hook_resid_post"], "all", [[1] * 100] * 10, 0, torch.float32, 8, 0
    )
    per_row = 100 * 128 * 4
    rows = cache_module._shard_size(tiny, plan, None)
    assert (
        rows % 32 == 0 and rows * per_row <= cache_module.SHARD_TARGET_BYTES < (rows + 32) * per_row
    )
    assert cache_module._shard_size(tiny, plan, 5) == 32


def test_manifest_records_the_run(tiny, tmp_path):
    disk = wb.cache_activations(
        tiny, TEXTS, hooks="resid_post", positions="last", out=tmp_path / "c", progress=False
    )
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny-phi" and manifest["model"]["dtype"] == "float32"
    assert manifest["positions"] == "last" and manifest["n_texts"] == len(TEXTS)
    assert manifest["token_counts"]["total"] == int(disk.lengths.sum())
    assert {"torch", "transformers", "transformer_lens", "workbench"} <= set(manifest["versions"])
    assert len(manifest["texts_sha256"]) == 64
    assert manifest["row_shapes"]["blocks.0.hook_resid_post"] == [128]


def test_rerun_with_other_settings_is_refused(tiny, tmp_path):
    wb.cache_activations(tiny, TEXTS, hooks="resid_post", out=tmp_path / "c", progress=False)
    with pytest.raises(wb.InputError, match="different run.*hooks"):
        wb.cache_activations(tiny, TEXTS, hooks="attn.hook_z", out=tmp_path / "c", progress=False)


def test_in_memory_cache_that_would_not_fit_is_refused(tiny, monkeypatch):
    monkeypatch.setattr(cache_module, "available_bytes", lambda device: 10_000)
    with pytest.raises(wb.CacheTooLargeError) as error:
        wb.cache_activations(tiny, TEXTS, hooks="all", positions="all", progress=False)
    assert (
        "out=" in str(error.value)
        and "--out" in str(error.value)
        and "needs about" in str(error.value)
    )


def test_estimate_is_exact_for_fixed_shapes(tiny):
    plan = cache_module.CachePlan(
        ["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern"],
        "all",
        [[1, 2, 3], [4, 5]],
        0,
        torch.float32,
        2,
        2,
    )
    assert cache_module.estimate_bytes(tiny, plan) == 2 * (3 * 128 + 4 * 3 * 3) * 4


def test_over_long_text_is_refused_or_truncated(tiny):
    records = [TextRecord("word " * 40, "corpus.txt", 3)]
    with pytest.raises(
        wb.InputError,
        match=r"corpus.txt:3: text is \d+ tokens, longer than the limit of 16.*--truncate",
    ):
        wb.cache_activations(tiny, records, max_length=16, progress=False)
    result = wb.cache_activations(tiny, records, max_length=16, truncate=True, progress=False)
    assert int(result.lengths[0]) == 16


def test_pattern_hooks_need_all_positions(tiny):
    with pytest.raises(wb.InputError, match="positions='all'"):
        wb.cache_activations(
            tiny, TEXTS, hooks="attn.hook_pattern", positions="last", progress=False
        )


CHILD = SLOW_CACHE_CHILD


def _shard_count(folder) -> int:
    shards = folder / "shards"
    return len(list(shards.glob("*.safetensors"))) if shards.exists() else 0


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    wb.cache_activations(
        wb.load("tiny-phi", device="cpu"), SLOW_CACHE_TEXTS, out=reference, **SLOW_CACHE
    )  # CHILD's call, uninterrupted, in this process

    for kill_after in (2, 4):  # 6 shards of 16 texts; kill twice, at different points
        child = subprocess.Popen([sys.executable, str(script), str(resumed), "0.3"])
        deadline = time.time() + 300
        while (
            _shard_count(resumed) < kill_after and time.time() < deadline and child.poll() is None
        ):
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be killed; slow it down"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert not (resumed / "manifest.json").exists()
        assert kill_after <= _shard_count(resumed) < 6
    subprocess.run([sys.executable, str(script), str(resumed), "0"], check=True, timeout=600)

    assert (resumed / "manifest.json").read_text() == (reference / "manifest.json").read_text()
    assert sorted(p.name for p in (resumed / "shards").iterdir()) == sorted(
        p.name for p in (reference / "shards").iterdir()
    )
    a, b = wb.open_cache(reference), wb.open_cache(resumed)
    for hook in a.hooks:
        assert torch.equal(a[hook], b[hook])


@pytest.mark.integration
def test_smollm2_padding_invariance(smol):
    """Batching (right padding) adds no error beyond float32's own, measured against float64.

    SmolLM2's residual stream has massive activations on the first token, and a busy CPU can
    pick other float32 kernels, so a fixed tolerance is a guess. Instead each text is also run
    alone in float32 and in float64: the float32-alone error against float64 (relative to
    max |x| of that text and hook) shows what float32 costs on this machine right now, and the
    batched run must stay within 4x the worst of it. Measured (closing note of issue 10): alone
    at most 4.9e-6, batched at most 6.4e-6 (ratio 1.3), the same beside a CPU-bound job.
    """
    s64 = wb.load("smollm2-135m", device="cpu", dtype=torch.float64)
    batched = wb.cache_activations(
        smol, TEXTS, hooks="resid_post", positions="all", batch_size=4, progress=False
    )
    alone_errors, batched_errors = [], []
    for i, text in enumerate(TEXTS):
        alone = wb.cache_activations(
            smol, [text], hooks="resid_post", positions="all", progress=False
        )
        exact = wb.cache_activations(
            s64, [text], hooks="resid_post", positions="all", progress=False
        )
        n = int(alone.lengths[0])
        for hook in batched.hooks:
            ref = exact[hook][0, :n]
            scale = ref.abs().max().item()
            alone_errors.append((alone[hook][0, :n].double() - ref).abs().max().item() / scale)
            batched_errors.append(
                ((batched[hook][i, :n].double() - ref).abs().max().item() / scale, hook, i)
            )
    bound = 4 * max(alone_errors)
    worst = max(batched_errors)
    assert 0 < bound < 1e-4 and worst[0] <= bound, (worst, bound)


@pytest.mark.integration
def test_every_hook_of_smollm2_caches_with_its_own_layout(smol):
    """Positions are found by probing, not assumed: patterns have two position dims, the rest one
    (Llama's rotary q/k come as [batch, head, pos, d_head] internally; hooks see TransformerLens' layout)."""
    table = hook_table(smol)
    assert table["blocks.0.attn.hook_rot_q"].pos_dims == (1,)
    assert all(info.pos_dims for info in table.values())
    assert table["blocks.0.hook_resid_post"].pos_dims == (1,)
    assert table["blocks.0.attn.hook_pattern"].pos_dims == (2, 3)
    texts = TEXTS[:3]
    batched = wb.cache_activations(
        smol, texts, hooks="blocks.0.*", positions="all", batch_size=3, progress=False
    )
    alone = wb.cache_activations(
        smol, texts[1:2], hooks="blocks.0.*", positions="all", progress=False
    )
    n = int(alone.lengths[0])
    for hook in batched.hooks:
        pos_dims = table[hook].pos_dims
        index = tuple(
            slice(0, n) if d + 1 in pos_dims else slice(None)
            for d in range(batched[hook].dim() - 1)
        )
        assert (batched[hook][1][index] - alone[hook][0][index]).abs().max().item() <= 1e-4, hook
