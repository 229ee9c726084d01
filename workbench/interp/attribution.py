"""Attribution patching: gradient estimates of every exact patch, and a check of each against exact patching.

All methods estimate what exact patching (`workbench.interp.patching.activation_patch`)
measures: the metric of the corrupted run with one clean activation patched in,
normalised so that the corrupted run scores 0 and the clean run 1. They return the
same `PatchingResult`, so estimates and exact values compare cell by cell. With a
batch of pairs, each pair is estimated with its own gradients and the estimates
are averaged, like the exact metric.

Methods (`METHODS`):

- ``"atp"``: attribution patching (Nanda 2023; node EAP in Syed et al. 2023):
  (a_clean - a_corrupt) . dM/da at the corrupted run. One clean forward pass and
  one corrupted forward and backward pass for every cell of every kind.
- ``"atp*"``: AtP* (Kramár et al. 2024), two fixes to AtP:
  * the QK fix, for the ``attn_head`` kind: a head's effect is the sum of the
    effects of its query, key and value at each position (the paper's attention
    nodes). For a query or a key the attention softmax is recomputed exactly, with
    that one clean query (key) among the corrupted ones, and only the step from the
    attention pattern to the metric is linear: (pattern' - pattern) . dM/dpattern.
    A saturated softmax no longer hides a head whose pattern moves. Values are
    linear already. The other kinds have no softmax of their own to recompute.
  * GradDrop, for every kind: one more backward pass per layer l, with no gradient
    through block l's two outputs (attention and MLP) into the layers below. A
    cell's magnitude is the mean |estimate| over the passes that leave its own
    block open, its sign that of the estimate with nothing dropped. Where a direct
    and an indirect path cancel in the full gradient, some pass keeps only one of
    them, so the cell stops looking unimportant.
  Cost: n_layers + 1 corrupted forward and backward passes and one clean forward.
- ``"eap-ig"``: integrated gradients (EAP-IG, Hanna et al. 2024): the gradient is
  the mean over `steps` runs whose input embeddings lie on the straight line from
  the corrupted to the clean prompt, at alpha = 0, 1/K, ..., (K-1)/K (a left
  Riemann sum, so one step is exactly AtP). Cost: K forward and backward passes.

Self-check (`self_check`, `verify=` on `attribution_patch`): every estimate can run
exact patching on its own top-k cells (by |estimate|) and a random sample of 2k
others, and carries Pearson and Spearman r over the checked cells, the estimated
recall of the exact top-k (with its range), and the largest error, with a verdict
against `MIN_PEARSON` and `MIN_RECALL` on the point estimates.

TransformerLens 4.3 has node and edge EAP (`transformer_lens.tools.analysis.
attribution_patching`) but no integrated gradients and no AtP*; a test checks that
"atp" here and its node EAP agree on the same heads.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from ..core.errors import InputError
from ..core.progress import BarFromFirstStep
from ..model.memory import ModelShape, backward_estimate, largest_batch
from ..model.run import forward, input_embeddings, record
from .patch_results import PatchingResult, SelfCheck, cell_labels, summarise_check
from .patching import KINDS, Metric, PatchingTask, check_memory, patch_cells, prepare, run_patches

METHODS = ("atp", "atp*", "eap-ig")
DEFAULT_STEPS = 5


def attribution_patch(
    model,
    clean,
    corrupt,
    answer=None,
    other=None,
    kinds: tuple[str, ...] = KINDS,
    method: str = "atp",
    steps: int = DEFAULT_STEPS,
    metric: Metric | None = None,
    verify: int = 0,
    seed: int = 0,
    *,
    prepend_bos: bool | None = None,
    progress: bool = True,
) -> dict[str, PatchingResult]:
    """Attribution patching of every cell of each kind (see the module docstring for the methods).

    clean, corrupt, answer, other, metric, prepend_bos: as `workbench.interp.patching.activation_patch`.
    steps: integration steps for "eap-ig". progress: a bar for the self-check's exact patching.
    verify: k for the self-check (0 = none); each
    result then carries `.check` (a `SelfCheck`). Returns {kind: PatchingResult}.
    """
    check_method(method, steps)
    for kind in kinds:
        if kind not in KINDS:
            raise InputError(f"unknown patch kind {kind!r}; choose from {', '.join(KINDS)}")
    start = time.perf_counter()
    task = prepare(model, clean, corrupt, answer, other, metric, prepend_bos=prepend_bos)
    return attribute(model, task, kinds, method, steps, verify, seed, start, progress)


def attribute(
    model,
    task: PatchingTask,
    kinds,
    method: str = "atp",
    steps: int = DEFAULT_STEPS,
    verify: int = 0,
    seed: int = 0,
    start: float | None = None,
    progress: bool = False,
) -> dict[str, PatchingResult]:
    """`attribution_patch` on a task already prepared (`workbench.interp.patching.prepare`), so a caller
    that also patches exactly prepares the pairs once. progress: bars for the self-check's exact
    patching (the estimate itself is a few backward passes)."""
    check_method(method, steps)
    results = estimate(model, task, kinds, method, steps, start)
    if verify:
        results = {
            kind: replace(
                result,
                check=self_check(model, task, result, verify, seed=seed, progress=progress),
            )
            for kind, result in results.items()
        }
    return results


def check_method(method: str, steps: int) -> None:
    """An InputError for an unknown method or a step count below 1."""
    if method not in METHODS:
        raise InputError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if steps < 1:
        raise InputError(f"steps must be at least 1, not {steps}")


def estimate(
    model,
    task: PatchingTask,
    kinds,
    method: str,
    steps: int = DEFAULT_STEPS,
    start: float | None = None,
) -> dict[str, PatchingResult]:
    """The estimates of `method` for a prepared task: {kind: PatchingResult}."""
    start = time.perf_counter() if start is None else start
    plans = {kind: patch_cells(model, task, kind) for kind in kinds}
    names = {name for _, _, patches in plans.values() for name, _ in patches}
    qk_layers = (
        range(model.info.n_layers) if method == "atp*" and "attn_head" in kinds else range(0)
    )
    qk_names = {
        f"blocks.{layer}.attn.hook_{x}"
        for layer in qk_layers
        for x in ("rot_q", "rot_k", "v", "pattern", "attn_scores")
    }
    grad_names = names | {f"blocks.{layer}.attn.hook_z" for layer in qk_layers}
    check_memory(model, task, exact=False, attribution=True)  # before any forward pass
    clean = record(model, task.clean_ids, names | qk_names)
    if method == "eap-ig":
        corrupt, grads = integrated_gradients(model, task, grad_names, steps)
        passes = [grads]
    else:
        corrupt, grads = _gradient_pass(model, task, grad_names, keep=qk_names)
        passes = [grads] + (_grad_drop_passes(model, task, grad_names) if method == "atp*" else [])
    values_of = {}
    for kind, (axes, labels, patches) in plans.items():
        per_pass = []
        for grads_of_pass in passes:
            if kind == "attn_head" and method == "atp*":
                cells = torch.stack(
                    [
                        _qk_fixed_heads(clean, corrupt, grads_of_pass, layer)
                        for layer in range(model.info.n_layers)
                    ]
                ).flatten()
            else:
                cells = torch.stack(
                    [
                        _linear_estimate(clean, corrupt, grads_of_pass, name, index)
                        for name, index in patches
                    ]
                )
            per_pass.append(cells)
        values_of[kind] = per_pass[0] if len(per_pass) == 1 else _grad_drop(per_pass, patches, kind)
    elapsed = time.perf_counter() - start
    results = {}
    for kind, (axes, labels, _) in plans.items():
        normalised = values_of[kind] / (task.clean_metric - task.corrupt_metric)
        results[kind] = PatchingResult(
            kind,
            method,
            normalised.reshape(tuple(len(axis) for axis in labels)).float(),
            axes,
            labels,
            task.clean_metric,
            task.corrupt_metric,
            task.tokens,
            elapsed,
        )
    return results


def _linear_estimate(clean, corrupt, grads, name: str, index: tuple) -> torch.Tensor:
    """(a_clean - a_corrupt) . grad at one cell, averaged over pairs (float64 scalar)."""
    every = (slice(None), *index)
    delta = (clean[name][every] - corrupt[name][every]).double()
    return (delta * grads[name][every].double()).sum() / delta.shape[0]


def _block_of(name: str) -> int | None:
    """The block a hook belongs to, or None for a block's input (resid_pre), which no dropped pass silences."""
    if name.endswith("hook_resid_pre"):
        return None
    return int(name.split(".")[1])


def _grad_drop(per_pass: list[torch.Tensor], patches, kind: str) -> torch.Tensor:
    """GradDrop: sign of the undropped estimate times the mean |estimate| over the dropped passes
    (pass l + 1 dropped layer l) that leave the cell's own block open."""
    full, dropped = per_pass[0], torch.stack(per_pass[1:])  # [cells], [layers, cells]
    if kind == "attn_head":
        blocks = [
            layer
            for layer in range(dropped.shape[0])
            for _ in range(full.numel() // dropped.shape[0])
        ]
    else:
        blocks = [_block_of(name) for name, _ in patches]
    open_ = torch.ones_like(dropped, dtype=torch.bool)
    for cell, block in enumerate(blocks):
        if block is not None:
            open_[block, cell] = False
    n_open = open_.sum(0)
    magnitude = (dropped.abs() * open_).sum(0) / n_open.clamp(min=1)
    # A one-layer model leaves a block's own cells no open pass: nothing to drop, the estimate stands.
    return torch.where(n_open > 0, torch.sign(full) * magnitude, full)


def _qk_fixed_heads(clean, corrupt, grads, layer: int) -> torch.Tensor:
    """AtP* estimate of patching each head of `layer` (all positions): Float64[Tensor, "heads"], mean over pairs.

    The sum over positions of the head's query, key and value node estimates, with
    the softmax recomputed exactly for query and key nodes (module docstring).
    """
    at = f"blocks.{layer}.attn.hook_"
    pattern = corrupt[at + "pattern"].double()  # [pairs, heads, query, key]
    n_heads = pattern.shape[1]
    # [pairs, pos, heads, d]
    q_clean, q_corrupt = (_per_head(c[at + "rot_q"], n_heads) for c in (clean, corrupt))
    k_clean, k_corrupt = (_per_head(c[at + "rot_k"], n_heads) for c in (clean, corrupt))
    v_clean, v_corrupt = (_per_head(c[at + "v"], n_heads) for c in (clean, corrupt))
    grad_z = grads[at + "z"].double()  # [pairs, pos, heads, d]
    causal = torch.ones(pattern.shape[-2:], dtype=torch.bool, device=pattern.device).tril()
    scores = corrupt[at + "attn_scores"].double()
    dots = torch.einsum("pqhd,pkhd->phqk", q_corrupt, k_corrupt)
    scale = _score_scale(scores, dots, causal, layer)
    # dM/dpattern[q, k] = grad_z[q] . v[k], since z[q] = sum_k pattern[q, k] v[k].
    grad_pattern = torch.einsum("pqhd,pkhd->phqk", grad_z, v_corrupt)
    # Query nodes: row q of the pattern recomputed with the clean query against the corrupted keys.
    query_scores = (scale * torch.einsum("pqhd,pkhd->phqk", q_clean, k_corrupt)).masked_fill(
        ~causal, float("-inf")
    )
    query_effect = ((query_scores.softmax(-1) - pattern) * grad_pattern).sum((-1, -2))
    # Key nodes: key k clean, every other key corrupted, for every query row q >= k. Changing one score
    # by s multiplies its weight by r = exp(s) and renormalises the row, in closed form:
    # effect(q, k) = (1/D - 1) * sum_k' pattern[q,k'] g[q,k'] + pattern[q,k] g[q,k] (r - 1) / D,
    # with D = 1 + pattern[q, k] (r - 1).
    shift = (
        scale * torch.einsum("pqhd,pkhd->phqk", q_corrupt, k_clean) - scale * dots
    ).masked_fill(~causal, 0.0)
    r = shift.clamp(max=80.0).exp()
    denominator = 1 + pattern * (r - 1)
    row_total = (pattern * grad_pattern).sum(-1, keepdim=True)
    key_effect = (
        (
            (1 / denominator - 1) * row_total + pattern * grad_pattern * (r - 1) / denominator
        ).masked_fill(~causal, 0.0)
    ).sum((-1, -2))
    # Value nodes: linear, through the corrupted pattern.
    value_effect = torch.einsum("phqk,pqhd,pkhd->ph", pattern, grad_z, v_clean - v_corrupt)
    return (query_effect + key_effect + value_effect).mean(0)


def _per_head(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[pairs, pos, heads or kv-heads, d] -> [pairs, pos, heads, d] float64 (grouped-query K/V repeated)."""
    groups = n_heads // tensor.shape[2]
    return tensor.double().repeat_interleave(groups, dim=2) if groups > 1 else tensor.double()


def _score_scale(
    scores: torch.Tensor, dots: torch.Tensor, causal: torch.Tensor, layer: int
) -> float:
    """The factor from q . k to the attention score, fitted on the causal entries, checked to reproduce them."""
    s, d = scores[..., causal], dots[..., causal]
    scale = float((s * d).sum() / (d * d).sum())
    error = float((s - scale * d).abs().max())
    if error > 1e-3 * float(s.abs().max()) + 1e-4:
        raise InputError(
            f"AtP*'s QK fix needs plain scaled dot-product attention, but layer {layer}'s scores "
            f"are not a multiple of q . k (off by {error:.3g}); use --method atp or eap-ig"
        )
    return scale


def _grad_drop_passes(model, task: PatchingTask, names: set[str]) -> list[dict[str, torch.Tensor]]:
    """GradDrop's gradients, one {hook name: Tensor[pairs, ...]} per layer dropped, in layer order. Several
    dropped layers share a forward and backward pass (one group of rows each), as many as memory allows."""
    shape, (pairs, seq) = ModelShape.from_info(model.info), task.corrupt_ids.shape
    layers = list(range(model.info.n_layers))
    per_pass = largest_batch(
        lambda b: backward_estimate(shape, model.info.dtype, b * pairs, seq),
        len(layers),
        model.device,
        "AtP*'s GradDrop",
        "use --method atp or eap-ig, or shorter prompts",
    )
    passes = []
    for first in range(0, len(layers), per_pass):
        group = layers[first : first + per_pass]
        grads = _gradient_pass(model, task, names, drop_layers=group)[1]
        passes += [
            {name: g[i * pairs : (i + 1) * pairs] for name, g in grads.items()}
            for i in range(len(group))
        ]
    return passes


def _gradient_pass(
    model,
    task: PatchingTask,
    names: set[str],
    keep: set[str] = frozenset(),
    drop_layers: list[int] | None = None,
    embeddings: torch.Tensor | None = None,
):
    """One corrupted forward and backward pass of metric.sum() over pairs.

    Returns (activations, gradients), each {hook name: Tensor[rows, ...]}: activations at
    `names` and `keep`, gradients at `names`, rows = pairs. drop_layers (GradDrop): the
    prompts run once per listed layer (rows = layers x pairs, in that order), and in
    group i block drop_layers[i]'s outputs pass no gradient down. embeddings: input
    embeddings to run instead of the corrupted prompts' ([groups x pairs, pos, d_model],
    one group per integration point).
    """
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    pairs = task.n_pairs
    groups = (
        len(drop_layers)
        if drop_layers
        else (embeddings.shape[0] // pairs if embeddings is not None else 1)
    )
    ids = task.corrupt_ids.repeat(groups, 1)

    def capture(name: str) -> Callable:
        def hook(output, _point):
            acts[name] = output.detach().clone()
            if name in names:
                if not output.requires_grad:
                    raise RuntimeError(f"{name} carries no gradient")
                output.register_hook(lambda grad: grads.__setitem__(name, grad.detach().clone()))
            return output  # returned, so the gradient flows through this (converted) tensor

        return hook

    def no_gradient_below(group: int) -> Callable:
        def hook(output, _point):
            rows = torch.zeros(output.shape[0], dtype=torch.bool, device=output.device)
            rows[group * pairs : (group + 1) * pairs] = True
            shape = (-1,) + (1,) * (output.dim() - 1)
            return torch.where(rows.view(shape), output.detach(), output)  # no gradient upstream

        return hook

    # The drops are registered first, so a capture at the same point sees the dropped output.
    fwd_hooks = [
        (f"blocks.{layer}.hook_{out}", no_gradient_below(group))
        for group, layer in enumerate(drop_layers or [])
        for out in ("attn_out", "mlp_out")
    ]
    fwd_hooks += [(name, capture(name)) for name in names | keep]
    # Gradients start at the input embeddings (`forward` freezes the parameters for the pass).
    logits = forward(model, ids, fwd_hooks=fwd_hooks, grad=True, embeddings=embeddings)
    sum(
        task.metric(logits[first : first + pairs]).sum() for first in range(0, ids.shape[0], pairs)
    ).backward()
    missing = names - set(grads)
    if missing:
        raise RuntimeError(
            f"no gradient reached {sorted(missing)[:3]}: attribution patching needs them"
        )
    return acts, grads


def integrated_gradients(
    model, task: PatchingTask, names: set[str], steps: int, keep: set[str] = frozenset()
):
    """Corrupted activations and the gradient at `names` averaged over `steps` points on the straight
    line from the corrupted to the clean input embeddings (alpha = 0, 1/K, ..., (K-1)/K), and the
    corrupted activations at `keep` too. Several points share a forward and backward pass (one group
    of rows each), as many as memory allows."""
    clean_embeds = input_embeddings(model, task.clean_ids)
    corrupt_embeds = input_embeddings(model, task.corrupt_ids)
    shape, (pairs, seq) = ModelShape.from_info(model.info), task.corrupt_ids.shape
    per_pass = largest_batch(
        lambda b: backward_estimate(shape, model.info.dtype, b * pairs, seq),
        steps,
        model.device,
        "EAP-IG",
        "use fewer --steps, --method atp, or shorter prompts",
    )
    corrupt, total = None, {}
    for first in range(0, steps, per_pass):
        alphas = [step / steps for step in range(first, min(steps, first + per_pass))]
        points = torch.cat(
            [corrupt_embeds + alpha * (clean_embeds - corrupt_embeds) for alpha in alphas]
        )
        acts, grads = _gradient_pass(model, task, names, keep=keep, embeddings=points)
        if first == 0:  # alpha = 0: the corrupted run itself
            corrupt = {name: a[:pairs] for name, a in acts.items()}
        for name, g in grads.items():
            summed = g.double().reshape(len(alphas), pairs, *g.shape[1:]).sum(0)
            total[name] = total[name] + summed if name in total else summed
    return corrupt, {name: g / steps for name, g in total.items()}


def self_check(
    model,
    task: PatchingTask,
    result: PatchingResult,
    k: int,
    n_random: int | None = None,
    seed: int = 0,
    max_batch: int = 32,
    progress: bool = False,
) -> SelfCheck:
    """Exact patching of `result`'s top-k cells (by |estimate|) and of `n_random` (default 2k) random
    others; progress: a bar on stderr counting the cells patched."""
    if k < 1:
        raise InputError(f"the self-check needs k >= 1, not {k}")
    _, labels, patches = patch_cells(model, task, result.kind)
    flat = result.values.flatten().double()
    k = min(k, flat.numel())
    order = torch.argsort(flat.abs(), descending=True, stable=True).tolist()
    top, rest = order[:k], order[k:]
    n_random = min(2 * k if n_random is None else n_random, len(rest))
    sample = (
        sorted(np.random.default_rng(seed).choice(rest, size=n_random, replace=False).tolist())
        if n_random
        else []
    )
    cells = top + sample
    with BarFromFirstStep(len(cells), f"self-check {result.kind}", "cell", progress) as bar:
        raw = run_patches(model, task, [patches[c] for c in cells], max_batch, bar.update)
    exact = task.normalise(raw).double()
    return summarise_check(result, cells, exact, flat[cells], k, len(rest), cell_labels(labels))


def self_check_from_exact(result: PatchingResult, exact: PatchingResult, k: int) -> PatchingResult:
    """`result` with its self-check against a full exact patching of the same cells (every cell compared,
    so the recall is exact, not estimated)."""
    flat = result.values.flatten().double()
    k = min(k, flat.numel())
    cells = torch.argsort(flat.abs(), descending=True, stable=True).tolist()
    check = summarise_check(
        result,
        cells,
        exact.values.flatten().double()[cells],
        flat[cells],
        k,
        len(cells) - k,
        cell_labels(result.labels),
    )
    return replace(result, check=check)
