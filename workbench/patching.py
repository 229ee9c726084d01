"""Activation patching, path patching and attribution patching.

Setting: a clean and a corrupted prompt of equal token length, and a metric on
the final position, by default the logit difference logit[answer] - logit[other].
Every result is normalised so that the corrupted run scores 0 and the clean run 1:

    normalised = (metric(patched) - metric(corrupt)) / (metric(clean) - metric(corrupt))

Exact patching runs the corrupted prompt with one clean activation patched in.
Many patches share a forward pass: each row of a batch carries a different patch
(`max_batch` rows at a time). Patch kinds:

- "resid_pre":  the residual stream entering block l, at one position -> [layer, pos]
- "attn_head":  one head's output z (all positions) -> [layer, head]
- "attn_head_pos": one head's z at one position -> [layer, head, pos]
- "attn_out", "mlp_out": a block's attention / MLP output (all positions) -> [layer]

Path patching (`path_patch`): the clean output of each sender head reaches only
the chosen receiver heads' inputs (query, key and/or value), everything else
staying corrupted -> [sender layer, sender head].

Attribution patching (`attribution_patch`): the first-order estimate of every
exact patch from one clean forward, one corrupted forward and one backward pass:
(clean - corrupt) . d metric / d activation at the corrupted run. Same result type,
so the two can be compared cell by cell.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .errors import InputError
from .hooks import bypass_unhooked_bridges, register_forward
from .tokens import check_layer, single_token_id, str_tokens, to_tokens

KINDS = ("resid_pre", "attn_head", "attn_head_pos", "attn_out", "mlp_out")
HOOK_OF_KIND = {"resid_pre": "blocks.{l}.hook_resid_pre", "attn_head": "blocks.{l}.attn.hook_z",
                "attn_head_pos": "blocks.{l}.attn.hook_z", "attn_out": "blocks.{l}.hook_attn_out",
                "mlp_out": "blocks.{l}.hook_mlp_out"}


@dataclass(frozen=True)
class PatchingTask:
    """Tokens and answer ids of a clean/corrupted pair, with its metric's two end points."""

    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    answer_id: int
    other_id: int
    tokens: list[str]
    clean_metric: float
    corrupt_metric: float

    @property
    def n_pos(self) -> int:
        return self.clean_ids.shape[1]

    def normalise(self, metric: torch.Tensor) -> torch.Tensor:
        return (metric - self.corrupt_metric) / (self.clean_metric - self.corrupt_metric)


@dataclass(frozen=True)
class PatchingResult:
    """Normalised metric per patch (0 = corrupted, 1 = clean).

    kind: what was patched (see module docstring); method: "exact" or "attribution".
    values: Float[Tensor, ...] with one axis per entry of `axes`.
    axes: axis names, e.g. ("layer", "pos"); labels: tick labels per axis.
    """

    kind: str
    method: str
    values: torch.Tensor
    axes: tuple[str, ...]
    labels: tuple[list[str], ...]
    clean_metric: float
    corrupt_metric: float
    tokens: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def shape(self) -> torch.Size:
        """The shape of `values`: one size per axis, e.g. [layer, head]."""
        return self.values.shape

    def __getitem__(self, index) -> torch.Tensor:
        return self.values[index]

    def __repr__(self) -> str:
        dims = " x ".join(f"{n} {axis}s" for n, axis in zip(self.values.shape, self.axes))
        top = int(self.values.abs().argmax())
        where = ", ".join(str(self.labels[a][int(i)]) for a, i in enumerate(torch.unravel_index(torch.tensor(top),
                                                                                      self.values.shape)))
        return (f"PatchingResult({self.kind}, {self.method}, {dims}; largest |value| "
                f"{float(self.values.flatten()[top]):+.3f} at {where})")

    def to_frame(self):
        """One row per cell: its index along each axis, its labels and the value."""
        import pandas as pd

        rows = []
        for index in torch.cartesian_prod(*[torch.arange(n) for n in self.values.shape]).reshape(
                -1, self.values.dim()).tolist():
            row = {axis: i for axis, i in zip(self.axes, index)}
            row.update({f"{axis}_label": self.labels[a][i] for a, (axis, i) in enumerate(zip(self.axes, index))})
            row.update(value=float(self.values[tuple(index)]), kind=self.kind, method=self.method)
            rows.append(row)
        return pd.DataFrame(rows)


def logit_diff(logits: torch.Tensor, answer_id: int, other_id: int) -> torch.Tensor:
    """Float[Tensor, "batch"]: logit[answer] - logit[other] at the last position."""
    last = logits[:, -1].float()
    return last[:, answer_id] - last[:, other_id]


def prepare(model, clean: str, corrupt: str, answer: str, other: str) -> PatchingTask:
    """Tokenise and check a clean/corrupted pair (equal token length, single-token answers)."""
    clean_ids, corrupt_ids = to_tokens(model, clean), to_tokens(model, corrupt)
    if clean_ids.shape != corrupt_ids.shape:
        raise InputError(f"clean and corrupted prompts must have the same number of tokens: "
                         f"{clean_ids.shape[1]} vs {corrupt_ids.shape[1]}")
    answer_id, other_id = single_token_id(model, answer), single_token_id(model, other)
    if answer_id == other_id:
        raise InputError("the two answers must be different tokens")
    with torch.no_grad(), bypass_unhooked_bridges(model):
        both = model.hf_model(torch.cat([clean_ids, corrupt_ids])).logits
    metric = logit_diff(both, answer_id, other_id)
    if abs(float(metric[0] - metric[1])) < 1e-6:
        raise InputError("clean and corrupted prompts give the same logit difference; nothing to patch")
    return PatchingTask(clean_ids, corrupt_ids, answer_id, other_id, str_tokens(model, clean_ids),
                        float(metric[0]), float(metric[1]))


def _axes(model, task: PatchingTask, kind: str) -> tuple[tuple[str, ...], tuple[list[str], ...], list[tuple]]:
    """Axis names, labels and the list of patches (hook name, index into one row's activation)."""
    n_layers, n_heads, n_pos = model.info.n_layers, model.info.n_heads, task.n_pos
    layers = [f"L{l}" for l in range(n_layers)]
    heads = [f"H{h}" for h in range(n_heads)]
    positions = [f"{p}:{t}" for p, t in enumerate(task.tokens)]
    hook = HOOK_OF_KIND[kind]
    every = slice(None)
    if kind == "resid_pre":
        patches = [(hook.format(l=l), (p, every)) for l in range(n_layers) for p in range(n_pos)]
        return ("layer", "pos"), (layers, positions), patches
    if kind == "attn_head":
        patches = [(hook.format(l=l), (every, h, every)) for l in range(n_layers) for h in range(n_heads)]
        return ("layer", "head"), (layers, heads), patches
    if kind == "attn_head_pos":
        patches = [(hook.format(l=l), (p, h, every)) for l in range(n_layers) for h in range(n_heads)
                   for p in range(n_pos)]
        return ("layer", "head", "pos"), (layers, heads, positions), patches
    if kind in ("attn_out", "mlp_out"):
        return ("layer",), (layers,), [(hook.format(l=l), (every,)) for l in range(n_layers)]
    raise InputError(f"unknown patch kind {kind!r}; choose from {', '.join(KINDS)}")


def _clean_cache(model, ids: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    cache: dict[str, torch.Tensor] = {}
    hook_dict = model.bridge.hook_dict
    handles = [register_forward(hook_dict[n], lambda out, _p, n=n: cache.__setitem__(n, out[0].detach().clone()))
               for n in names]
    try:
        with torch.no_grad(), bypass_unhooked_bridges(model):
            model.hf_model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return cache


def activation_patch(model, clean: str, corrupt: str, answer: str, other: str, kind: str = "attn_head",
                     max_batch: int = 32) -> PatchingResult:
    """Exact activation patching of every `kind` cell (see module docstring)."""
    import time

    start = time.perf_counter()
    task = prepare(model, clean, corrupt, answer, other)
    axes, labels, patches = _axes(model, task, kind)
    values = run_patches(model, task, patches, max_batch)
    shape = tuple(len(l) for l in labels)
    return PatchingResult(kind, "exact", task.normalise(values).reshape(shape), axes, labels,
                          task.clean_metric, task.corrupt_metric, task.tokens, time.perf_counter() - start)


def check_memory(model, task: PatchingTask, exact: bool = True, attribution: bool = True) -> None:
    """Raise, before any work, the CacheTooLargeError that exact patching (even one patch at a time)
    or attribution patching (one forward and backward pass) would raise on this device."""
    from .memory import ModelShape, backward_estimate, check_fits, forward_estimate, largest_batch

    shape, seq = ModelShape.from_info(model.info), task.corrupt_ids.shape[1]
    if exact:
        largest_batch(lambda b: forward_estimate(shape, model.info.dtype, b, seq), 1, model.device,
                      "activation patching", "use a shorter prompt pair or a smaller model")
    if attribution:
        check_fits(backward_estimate(shape, model.info.dtype, 1, seq), model.device,
                   "attribution patching needs one backward pass: use a shorter prompt pair, bf16, or "
                   "exact patching of fewer cells")


def run_patches(model, task: PatchingTask, patches: list[tuple[str, tuple]], max_batch: int = 32) -> torch.Tensor:
    """Raw metric (not normalised) of the corrupted run with each patch applied, one row per patch.

    A patch is (hook name, index into that hook's activation for one text); the
    clean activation at that index replaces the corrupted one.
    """
    from .memory import ModelShape, forward_estimate, largest_batch

    clean = _clean_cache(model, task.clean_ids, {name for name, _ in patches})
    hook_dict = model.bridge.hook_dict
    shape, seq = ModelShape.from_info(model.info), task.corrupt_ids.shape[1]
    max_batch = largest_batch(lambda b: forward_estimate(shape, model.info.dtype, b, seq), min(max_batch, len(patches)),
                              model.device, "activation patching", "use a shorter prompt pair or a smaller model")
    results = []
    for first in range(0, len(patches), max_batch):
        chunk = patches[first:first + max_batch]
        rows_of: dict[str, list[tuple[int, tuple]]] = {}
        for row, (name, index) in enumerate(chunk):
            rows_of.setdefault(name, []).append((row, index))

        def make_hook(name: str):
            def hook(output, _point):
                patched = output.clone()
                for row, index in rows_of[name]:
                    patched[row][index] = clean[name][index]
                return patched

            return hook

        batch = task.corrupt_ids.expand(len(chunk), -1)
        handles = [register_forward(hook_dict[name], make_hook(name)) for name in rows_of]
        try:
            with torch.no_grad(), bypass_unhooked_bridges(model):
                logits = model.hf_model(batch).logits
        finally:
            for handle in handles:
                handle.remove()
        results.append(logit_diff(logits, task.answer_id, task.other_id).cpu())
    return torch.cat(results)


@contextlib.contextmanager
def _split_qkv_inputs(model) -> Iterator[None]:
    """Give each head its own copy of the residual input (hook_q/k/v_input), then switch back."""
    model.bridge.set_use_split_qkv_input(True)
    try:
        yield
    finally:
        model.bridge.set_use_split_qkv_input(False)


def path_patch(model, clean: str, corrupt: str, answer: str, other: str,
               receivers: list[tuple[int, int]], receiver_input: str = "q", max_batch: int = 16) -> PatchingResult:
    """Path patching from every earlier head (sender) to the `receivers` heads' inputs.

    For sender head s, the difference between its clean and corrupted output
    ((z_clean - z_corrupt) @ W_O[s], at every position) is added to the chosen
    inputs (``receiver_input``: any of "q", "k", "v") of the receiver heads only;
    every other path stays corrupted. Returns [sender layer, sender head] with
    senders at or after the first receiver layer left at 0.
    """
    import time

    from .lens import _output_weights

    start = time.perf_counter()
    if not receivers:
        raise InputError("path patching needs at least one receiver head (layer, head)")
    if not set(receiver_input) <= set("qkv") or not receiver_input:
        raise InputError(f"receiver_input must be made of q, k and v, not {receiver_input!r}")
    for layer, head in receivers:
        check_layer(model, layer)
        if not 0 <= head < model.info.n_heads:
            raise InputError(f"head {head} is out of range: {model.info.name} has heads 0..{model.info.n_heads - 1}")
    task = prepare(model, clean, corrupt, answer, other)
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    first_receiver = min(layer for layer, _ in receivers)
    senders = [(l, h) for l in range(first_receiver) for h in range(n_heads)]
    z_names = {f"blocks.{l}.attn.hook_z" for l in range(first_receiver)}
    clean_z = _clean_cache(model, task.clean_ids, z_names)
    corrupt_z = _clean_cache(model, task.corrupt_ids, z_names)
    deltas = {}
    for layer, head in senders:
        weight, _ = _output_weights(model, layer)
        name = f"blocks.{layer}.attn.hook_z"
        with torch.no_grad():
            deltas[(layer, head)] = (clean_z[name][:, head] - corrupt_z[name][:, head]) @ weight[head]  # [pos, d]

    values = torch.zeros(n_layers, n_heads)
    hook_dict = model.bridge.hook_dict
    heads_at: dict[int, list[int]] = {}
    for layer, head in receivers:
        heads_at.setdefault(layer, []).append(head)
    with _split_qkv_inputs(model):
        for first in range(0, len(senders), max_batch):
            chunk = senders[first:first + max_batch]
            delta = torch.stack([deltas[s] for s in chunk])  # [rows, pos, d_model]

            def add_delta(heads: list[int]):
                def hook(output, _point):  # [rows, pos, head, d_model]
                    patched = output.clone()
                    patched[:, :, heads] += delta[:, :, None, :].to(patched.dtype)
                    return patched

                return hook

            handles = [register_forward(hook_dict[f"blocks.{layer}.hook_{x}_input"], add_delta(heads))
                       for layer, heads in heads_at.items() for x in receiver_input]
            try:
                with torch.no_grad(), bypass_unhooked_bridges(model):
                    logits = model.hf_model(task.corrupt_ids.expand(len(chunk), -1)).logits
            finally:
                for handle in handles:
                    handle.remove()
            metric = task.normalise(logit_diff(logits, task.answer_id, task.other_id).cpu())
            for (layer, head), value in zip(chunk, metric.tolist()):
                values[layer, head] = value
    labels = ([f"L{l}" for l in range(n_layers)], [f"H{h}" for h in range(n_heads)])
    return PatchingResult("path", "exact", values, ("layer", "head"), labels, task.clean_metric,
                          task.corrupt_metric, task.tokens, time.perf_counter() - start)


def attribution_patch(model, clean: str, corrupt: str, answer: str, other: str,
                      kinds: tuple[str, ...] = KINDS) -> dict[str, PatchingResult]:
    """Attribution patching of every cell of each kind, from two forward passes and one backward."""
    import time

    start = time.perf_counter()
    task = prepare(model, clean, corrupt, answer, other)
    plans = {kind: _axes(model, task, kind) for kind in kinds}
    names = {name for _, _, patches in plans.values() for name, _ in patches}
    clean = _clean_cache(model, task.clean_ids, names)
    corrupt_acts, grads = _corrupt_activations_and_grads(model, task, names)
    results = {}
    elapsed = time.perf_counter() - start
    for kind, (axes, labels, patches) in plans.items():
        estimates = torch.stack([((clean[name][index] - corrupt_acts[name][index]).float()
                                  * grads[name][index].float()).sum() for name, index in patches])
        shape = tuple(len(l) for l in labels)
        normalised = estimates.cpu() / (task.clean_metric - task.corrupt_metric)
        results[kind] = PatchingResult(kind, "attribution", normalised.reshape(shape), axes, labels,
                                       task.clean_metric, task.corrupt_metric, task.tokens, elapsed)
    return results


def _corrupt_activations_and_grads(model, task: PatchingTask, names: set[str]):
    """Activations of the corrupted run and the metric's gradient with respect to each."""
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    hook_dict = model.bridge.hook_dict

    def make_hook(name: str) -> Callable:
        def hook(output, _point):
            acts[name] = output[0].detach().clone()
            output.register_hook(lambda grad: grads.__setitem__(name, grad[0].detach().clone()))
            return output  # returned, so the gradient flows through this (converted) tensor

        return hook

    check_memory(model, task, exact=False, attribution=True)
    # Parameters get no gradient (it would cost as much memory as the weights): gradients start at the
    # embedding output instead, which is all the hooked activations need.
    frozen = [p for p in model.hf_model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    embed = model.hf_model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.requires_grad_())
    handles = [register_forward(hook_dict[name], make_hook(name)) for name in names]
    try:
        with torch.enable_grad(), bypass_unhooked_bridges(model):
            logits = model.hf_model(task.corrupt_ids).logits
            logit_diff(logits, task.answer_id, task.other_id).sum().backward()
    finally:
        embed.remove()
        for handle in handles:
            handle.remove()
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.hf_model.zero_grad(set_to_none=True)
    missing = names - set(grads)
    if missing:
        raise RuntimeError(f"no gradient reached {sorted(missing)[:3]}: attribution patching needs them")
    return acts, grads
