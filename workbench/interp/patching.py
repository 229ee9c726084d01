"""Exact activation patching and path patching, of one prompt pair or a batch of pairs.

Setting: one clean/corrupted prompt pair, or a batch of pairs (TransformerLens'
convention: every prompt of the batch has the same token length), and a metric
with one value per pair, by default the logit difference logit[answer] -
logit[other] at the last position. Any callable from logits
(Float[Tensor, "pairs pos vocab"]) to Float[Tensor, "pairs"] can be the metric.
Every result is normalised so that the corrupted run scores 0 and the clean run 1,
on the metric averaged over pairs:

    normalised = (mean metric(patched) - mean metric(corrupt)) / (mean metric(clean) - mean metric(corrupt))

Exact patching runs the corrupted prompts with one clean activation patched in
(each pair receives its own clean activation). Many patches share a forward pass:
each group of rows of a batch carries a different patch (`max_batch` rows at a
time). Patch kinds:

- "resid_pre":  the residual stream entering block l, at one position -> [layer, pos]
- "attn_head":  one head's output z (all positions) -> [layer, head]
- "attn_head_pos": one head's z at one position -> [layer, head, pos]
- "attn_out", "mlp_out": a block's attention / MLP output (all positions) -> [layer]

Path patching (`path_patch`): the clean output of each sender head reaches only
the chosen receiver heads' inputs (query, key and/or value), everything else
staying corrupted -> [sender layer, sender head].

Attribution patching (`workbench.interp.attribution`) estimates every exact patch from
gradients (AtP, AtP*, EAP-IG), each checked against exact patching of some of its own
cells. Both return `workbench.interp.patch_results.PatchingResult`, so the two compare
cell by cell.

TransformerLens 4.3's `patching.get_act_patch_*` do the same interventions with one
forward pass per cell; here several cells share a forward pass, which is what makes
exact patching of every head affordable (bench/patching.py). A test checks the two
against each other cell by cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int

from ..core.errors import InputError
from ..core.progress import BarFromFirstStep
from ..model.memory import (
    ModelShape,
    backward_estimate,
    check_fits,
    forward_estimate,
    largest_batch,
)
from ..model.run import forward, record, split_qkv_inputs
from ..model.tokens import check_layer, single_token_id, str_tokens, to_tokens
from .lens import output_weights
from .patch_results import PatchingResult

KINDS = ("resid_pre", "attn_head", "attn_head_pos", "attn_out", "mlp_out")
HOOK_OF_KIND = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "attn_head": "blocks.{l}.attn.hook_z",
    "attn_head_pos": "blocks.{l}.attn.hook_z",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
}


Metric = Callable[[torch.Tensor], torch.Tensor]
"""A patching metric: Float[Tensor, "pairs pos vocab"] logits -> Float[Tensor, "pairs"], one value per pair,
rows in the order of the task's pairs. Differentiable if attribution patching is to use it."""


class LogitDiff:
    """The default metric: logit[answer] - logit[other] at each pair's last token, one value per pair.

    answer_ids, other_ids: Int[Tensor, "pairs"]; last: Int[Tensor, "pairs"], the position of
    each pair's last token (they differ when pairs of several lengths are right-padded).
    """

    def __init__(self, answer_ids: torch.Tensor, other_ids: torch.Tensor, last: torch.Tensor):
        self.answer_ids, self.other_ids, self.last = answer_ids, other_ids, last

    def __call__(
        self, logits: Float[torch.Tensor, "pairs pos vocab"]
    ) -> Float[torch.Tensor, " pairs"]:
        rows = torch.arange(logits.shape[0], device=logits.device)
        last = logits[rows, self.last.to(logits.device)].float()
        return (
            last[rows, self.answer_ids.to(last.device)] - last[rows, self.other_ids.to(last.device)]
        )

    def __repr__(self) -> str:
        return "logit difference (answer - other) at the last position"


@dataclass(frozen=True)
class PatchingTask:
    """Tokens of a batch of clean/corrupted pairs, the metric, and its two end points.

    clean_ids, corrupt_ids: Int[Tensor, "pairs pos"], right-padded when pairs differ in
    length (causal attention: no real token sees a pad); lengths: Int[Tensor, "pairs"],
    each pair's token count. clean_values, corrupt_values: Float[Tensor, "pairs"], the
    metric of each pair's clean and corrupted run; clean_metric, corrupt_metric: their
    means (the normalisation's 1 and 0).
    """

    clean_ids: Int[torch.Tensor, "pairs pos"]
    corrupt_ids: Int[torch.Tensor, "pairs pos"]
    metric: Metric
    tokens: list[str]
    clean_values: Float[torch.Tensor, " pairs"]
    corrupt_values: Float[torch.Tensor, " pairs"]
    lengths: Int[torch.Tensor, " pairs"]

    @property
    def one_length(self) -> bool:
        return bool((self.lengths == self.lengths[0]).all())

    @property
    def n_pos(self) -> int:
        return self.clean_ids.shape[1]

    @property
    def n_pairs(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def clean_metric(self) -> float:
        return float(self.clean_values.mean())

    @property
    def corrupt_metric(self) -> float:
        return float(self.corrupt_values.mean())

    def normalise(self, metric: Float[torch.Tensor, "..."]) -> Float[torch.Tensor, "..."]:
        return (metric - self.corrupt_metric) / (self.clean_metric - self.corrupt_metric)


def logit_diff(
    logits: Float[torch.Tensor, "batch pos vocab"], answer_id: int, other_id: int
) -> Float[torch.Tensor, " batch"]:
    """Float[Tensor, "batch"]: logit[answer] - logit[other] at the last position."""
    last = logits[:, -1].float()
    return last[:, answer_id] - last[:, other_id]


def _as_list(value, what: str) -> list:
    if value is None or isinstance(value, str):
        return [value]
    values = list(value)
    if not values:
        raise InputError(f"{what} is empty: give at least one prompt pair")
    return values


def prepare(
    model,
    clean,
    corrupt,
    answer=None,
    other=None,
    metric: Metric | None = None,
    *,
    prepend_bos: bool | None = None,
) -> PatchingTask:
    """Tokenise and check a batch of clean/corrupted pairs.

    clean, corrupt: a prompt each, or equal-length lists of prompts (pair i is clean[i], corrupt[i]).
    answer, other: single-token answers for the default logit-difference metric, one each or one per
    pair; not needed when `metric` is given. The two prompts of a pair must have the same number of
    tokens. Pairs of different lengths are right-padded for the default metric (which reads each
    pair's last token); a custom metric reads the logits as they are, so it needs one length.
    prepend_bos: None is the bridge's default for the model (`workbench.model.tokens`), so the
    numbers equal those of `model.run_with_hooks(model.to_tokens(text))` by hand.
    """
    cleans, corrupts = _as_list(clean, "clean"), _as_list(corrupt, "corrupt")
    if len(cleans) != len(corrupts):
        raise InputError(
            f"{len(cleans)} clean prompts but {len(corrupts)} corrupted ones: give one of each per pair"
        )
    clean_ids = [to_tokens(model, text, prepend_bos) for text in cleans]
    corrupt_ids = [to_tokens(model, text, prepend_bos) for text in corrupts]
    for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)):
        if a.shape != b.shape:
            where = f"pair {i + 1}: " if len(cleans) > 1 else ""
            raise InputError(
                f"{where}clean and corrupted prompts must have the same number of tokens: "
                f"{a.shape[1]} vs {b.shape[1]}"
            )
        if metric is not None and a.shape != clean_ids[0].shape:
            raise InputError(
                f"pair {i + 1} has {a.shape[1]} tokens but pair 1 has {clean_ids[0].shape[1]}: a custom "
                "metric needs pairs of one token length (the default logit difference does not)"
            )
    lengths = torch.tensor([ids.shape[1] for ids in clean_ids])
    clean_ids, corrupt_ids = _right_padded(model, clean_ids), _right_padded(model, corrupt_ids)
    if metric is None:
        if answer is None or other is None:
            raise InputError(
                "give the two answers (answer, other) for the logit-difference metric, or a metric"
            )
        answers, others = _as_list(answer, "answer"), _as_list(other, "other")
        for name, values in (("answer", answers), ("other", others)):
            if len(values) not in (1, len(cleans)):
                raise InputError(
                    f"{len(values)} {name}s for {len(cleans)} pairs: give one, or one per pair"
                )
        answer_ids = torch.tensor([single_token_id(model, a) for a in answers]).expand(len(cleans))
        other_ids = torch.tensor([single_token_id(model, o) for o in others]).expand(len(cleans))
        if bool((answer_ids == other_ids).any()):
            raise InputError("the two answers must be different tokens")
        metric = LogitDiff(answer_ids, other_ids, lengths - 1)
    return task_from_ids(model, clean_ids, corrupt_ids, metric, lengths)


def task_from_ids(
    model,
    clean_ids: Int[torch.Tensor, "pairs pos"],
    corrupt_ids: Int[torch.Tensor, "pairs pos"],
    metric: Metric,
    lengths: Int[torch.Tensor, " pairs"] | None = None,
) -> PatchingTask:
    """The task of token ids already made (Int[Tensor, "pairs pos"] each, right-padded to `lengths` if given):
    runs both sides once for the metric's end points, and checks the metric's shape and that they differ."""
    n = clean_ids.shape[0]
    lengths = torch.full((n,), clean_ids.shape[1]) if lengths is None else lengths
    both = forward(model, torch.cat([clean_ids, corrupt_ids]).to(model.device))
    values = metric(both[:n]), metric(both[n:])
    if any(v.shape != (n,) for v in values):
        raise InputError(
            f"the metric must return one value per pair (shape [{n}]), "
            f"not shape {list(values[0].shape)}"
        )
    clean_values, corrupt_values = (v.detach().double().cpu() for v in values)
    if abs(float(clean_values.mean() - corrupt_values.mean())) < 1e-6:
        raise InputError("clean and corrupted prompts give the same metric; nothing to patch")
    return PatchingTask(
        clean_ids.to(model.device),
        corrupt_ids.to(model.device),
        metric,
        _shared_tokens(model, clean_ids, lengths),
        clean_values,
        corrupt_values,
        lengths,
    )


def _right_padded(model, rows: list[torch.Tensor]) -> torch.Tensor:
    """Int[Tensor, "pairs pos"]: the [1, n] token rows, right-padded to the longest with the pad (or end) token."""
    longest = max(row.shape[1] for row in rows)
    pad = (
        model.tokenizer.pad_token_id
        if model.tokenizer.pad_token_id is not None
        else model.tokenizer.eos_token_id
    )
    return torch.cat(
        [torch.nn.functional.pad(row, (0, longest - row.shape[1]), value=pad or 0) for row in rows]
    )


def _shared_tokens(model, ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Per position: the token every clean prompt has there, or "*" where the pairs differ (or some are padding)."""
    rows = [
        str_tokens(model, row[:n]) + ["<pad>"] * (ids.shape[1] - n)
        for row, n in zip(ids, lengths.tolist())
    ]
    return [column[0] if len(set(column)) == 1 else "*" for column in zip(*rows)]


def check_kinds(model, task: PatchingTask, kinds) -> None:
    """An InputError, before any patching, for a kind that is unknown or needs pairs of one token length."""
    for kind in kinds:
        patch_cells(model, task, kind)


def patch_cells(
    model, task: PatchingTask, kind: str
) -> tuple[tuple[str, ...], tuple[list[str], ...], list[tuple]]:
    """The cells of one patch kind: axis names, tick labels, and the list of patches
    (hook name, index into one row's activation), in row-major order of the axes."""
    n_layers, n_heads, n_pos = model.info.n_layers, model.info.n_heads, task.n_pos
    layers = [f"L{layer}" for layer in range(n_layers)]
    heads = [f"H{h}" for h in range(n_heads)]
    positions = [f"{p}:{t}" for p, t in enumerate(task.tokens)]
    hook = HOOK_OF_KIND[kind]
    every = slice(None)
    if kind in ("resid_pre", "attn_head_pos") and not task.one_length:
        raise InputError(
            f"{kind} patches one position at a time, so every pair needs the same token length (these "
            f"have {int(task.lengths.min())} to {int(task.lengths.max())}); use attn_head, attn_out or "
            "mlp_out, or pairs of one length"
        )
    if kind == "resid_pre":
        patches = [
            (hook.format(l=layer), (p, every)) for layer in range(n_layers) for p in range(n_pos)
        ]
        return ("layer", "pos"), (layers, positions), patches
    if kind == "attn_head":
        patches = [
            (hook.format(l=layer), (every, h, every))
            for layer in range(n_layers)
            for h in range(n_heads)
        ]
        return ("layer", "head"), (layers, heads), patches
    if kind == "attn_head_pos":
        patches = [
            (hook.format(l=layer), (p, h, every))
            for layer in range(n_layers)
            for h in range(n_heads)
            for p in range(n_pos)
        ]
        return ("layer", "head", "pos"), (layers, heads, positions), patches
    if kind in ("attn_out", "mlp_out"):
        return (
            ("layer",),
            (layers,),
            [(hook.format(l=layer), (every,)) for layer in range(n_layers)],
        )
    raise InputError(f"unknown patch kind {kind!r}; choose from {', '.join(KINDS)}")


def activation_patch(
    model,
    clean,
    corrupt,
    answer=None,
    other=None,
    kind: str = "attn_head",
    max_batch: int = 32,
    metric: Metric | None = None,
    *,
    prepend_bos: bool | None = None,
    progress: bool = True,
) -> PatchingResult:
    """Exact activation patching of every `kind` cell (see module docstring).

    clean, corrupt: one prompt each or lists of pairs; answer, other: the default metric's answers
    (one, or one per pair); metric: any `Metric` instead. max_batch: rows per forward pass.
    prepend_bos: None is the bridge's default for the model; the result's `.tokens` show it.
    progress: a bar on stderr that moves per forward pass, counting cells.
    """
    start = time.perf_counter()
    task = prepare(model, clean, corrupt, answer, other, metric, prepend_bos=prepend_bos)
    return patch_task(model, task, kind, max_batch, start, progress)


def patch_task(
    model,
    task: PatchingTask,
    kind: str = "attn_head",
    max_batch: int = 32,
    start: float | None = None,
    progress: bool = False,
) -> PatchingResult:
    """`activation_patch` on a task already prepared (`prepare`): callers that patch several kinds
    or also run attribution prepare the pairs once. start: perf_counter() the seconds count from."""
    start = time.perf_counter() if start is None else start
    axes, labels, patches = patch_cells(model, task, kind)
    with BarFromFirstStep(len(patches), f"patching {kind}", "cell", progress) as bar:
        values = run_patches(model, task, patches, max_batch, bar.update)
    shape = tuple(len(axis) for axis in labels)
    return PatchingResult(
        kind,
        "exact",
        task.normalise(values).reshape(shape).float(),
        axes,
        labels,
        task.clean_metric,
        task.corrupt_metric,
        task.tokens,
        time.perf_counter() - start,
    )


def check_memory(model, task: PatchingTask, exact: bool = True, attribution: bool = True) -> None:
    """Raise, before any work, the CacheTooLargeError that exact patching (even one patch at a time)
    or attribution patching (one forward and backward pass) would raise on this device."""
    shape, (pairs, seq) = ModelShape.from_info(model.info), task.corrupt_ids.shape
    if exact:
        largest_batch(
            lambda b: forward_estimate(shape, model.info.dtype, b, seq),
            pairs,
            model.device,
            "activation patching",
            "use shorter prompts, fewer pairs at once or a smaller model",
        )
    if attribution:
        check_fits(
            backward_estimate(shape, model.info.dtype, pairs, seq),
            model.device,
            "attribution patching needs one backward pass: use a shorter prompt pair, bf16, or "
            "exact patching of fewer cells",
        )


def run_patches(
    model,
    task: PatchingTask,
    patches: list[tuple[str, tuple]],
    max_batch: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> Float[torch.Tensor, " patches"]:
    """Raw metric (not normalised), averaged over pairs, of the corrupted runs with each patch applied:
    Float[Tensor, "patches"]. See `run_patches_per_pair` for what a patch is."""
    return run_patches_per_pair(model, task, patches, max_batch, on_batch).mean(1)


def run_patches_per_pair(
    model,
    task: PatchingTask,
    patches: list[tuple[str, tuple]],
    max_batch: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> Float[torch.Tensor, "patches pairs"]:
    """Raw metric of every pair's corrupted run with each patch applied: Float64[Tensor, "patches pairs"].

    A patch is (hook name, index into that hook's activation for one text); each
    pair's own clean activation at that index replaces its corrupted one. on_batch: called with
    the number of patches after each forward pass (a progress bar's update).
    """
    clean = record(model, task.clean_ids, {name for name, _ in patches})
    n_pairs = task.n_pairs
    shape, seq = ModelShape.from_info(model.info), task.corrupt_ids.shape[1]
    rows = largest_batch(
        lambda b: forward_estimate(shape, model.info.dtype, b, seq),
        max(n_pairs, min(max_batch, len(patches) * n_pairs)),
        model.device,
        "activation patching",
        "use shorter prompts, fewer pairs at once or a smaller model",
    )
    per_forward = max(1, rows // n_pairs)
    every_pair = slice(None)
    results = []
    for first in range(0, len(patches), per_forward):
        chunk = patches[first : first + per_forward]
        groups_of: dict[str, list[tuple[int, tuple]]] = {}
        for group, (name, index) in enumerate(chunk):
            groups_of.setdefault(name, []).append((group, (every_pair, *index)))

        def make_hook(name: str):
            def hook(output, _point):
                patched = output.clone()
                for group, index in groups_of[name]:
                    patched[group * n_pairs : (group + 1) * n_pairs][index] = clean[name][index]
                return patched

            return hook

        batch = task.corrupt_ids.repeat(len(chunk), 1)
        logits = forward(model, batch, fwd_hooks=[(name, make_hook(name)) for name in groups_of])
        values = torch.stack(
            [task.metric(logits[g * n_pairs : (g + 1) * n_pairs]) for g in range(len(chunk))]
        )
        results.append(values.detach().double().cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(results)


def path_patch(
    model,
    clean,
    corrupt,
    answer=None,
    other=None,
    receivers: list[tuple[int, int]] = (),
    receiver_input: str = "q",
    max_batch: int = 16,
    metric: Metric | None = None,
    *,
    prepend_bos: bool | None = None,
    progress: bool = True,
) -> PatchingResult:
    """Path patching from every earlier head (sender) to the `receivers` heads' inputs.

    For sender head s, the difference between its clean and corrupted output
    ((z_clean - z_corrupt) @ W_O[s], at every position) is added to the chosen
    inputs (``receiver_input``: any of "q", "k", "v") of the receiver heads only;
    every other path stays corrupted. Returns [sender layer, sender head] with
    senders at or after the first receiver layer left at 0. Under grouped-query attention a
    receiver's "k" and "v" inputs are its key/value group's, shared with the group's other query
    heads. prepend_bos: as `activation_patch`;
    progress: a bar on stderr that moves per forward pass, counting sender heads.
    """
    start = time.perf_counter()
    receivers = list(receivers)
    if not receivers:
        raise InputError("path patching needs at least one receiver head (layer, head)")
    if not set(receiver_input) <= set("qkv") or not receiver_input:
        raise InputError(f"receiver_input must be made of q, k and v, not {receiver_input!r}")
    for layer, head in receivers:
        check_layer(model, layer)
        if not 0 <= head < model.info.n_heads:
            raise InputError(
                f"head {head} is out of range: {model.info.name} has heads 0..{model.info.n_heads - 1}"
            )
    task = prepare(model, clean, corrupt, answer, other, metric, prepend_bos=prepend_bos)
    n_layers, n_heads, n_pairs = model.info.n_layers, model.info.n_heads, task.n_pairs
    first_receiver = min(layer for layer, _ in receivers)
    senders = [(layer, h) for layer in range(first_receiver) for h in range(n_heads)]
    z_names = {f"blocks.{layer}.attn.hook_z" for layer in range(first_receiver)}
    clean_z = record(model, task.clean_ids, z_names)
    corrupt_z = record(model, task.corrupt_ids, z_names)
    deltas = {}
    for layer, head in senders:
        weight, _ = output_weights(model, layer)
        name = f"blocks.{layer}.attn.hook_z"
        with torch.no_grad():
            deltas[(layer, head)] = (
                clean_z[name][:, :, head] - corrupt_z[name][:, :, head]
            ) @ weight[head]

    values = torch.zeros(n_layers, n_heads)
    heads_at: dict[int, list[int]] = {}
    for layer, head in receivers:
        heads_at.setdefault(layer, []).append(head)
    bar = BarFromFirstStep(len(senders), "path patching", "sender", progress)
    with split_qkv_inputs(model), bar:
        per_forward = max(1, max_batch // n_pairs)
        for first in range(0, len(senders), per_forward):
            chunk = senders[first : first + per_forward]
            delta = torch.cat([deltas[s] for s in chunk])  # [senders * pairs, pos, d_model]

            def add_delta(heads: list[int]):
                def hook(output, _point):  # [rows, pos, head (or key/value group), d_model]
                    patched = output.clone()
                    # grouped-query attention: a query head's keys and values are its group's
                    group = n_heads // patched.shape[2]
                    targets = sorted({h // group for h in heads})
                    patched[:, :, targets] += delta[:, :, None, :].to(patched.dtype)
                    return patched

                return hook

            fwd_hooks = [
                (f"blocks.{layer}.hook_{x}_input", add_delta(heads))
                for layer, heads in heads_at.items()
                for x in receiver_input
            ]
            logits = forward(model, task.corrupt_ids.repeat(len(chunk), 1), fwd_hooks=fwd_hooks)
            means = torch.stack(
                [
                    task.metric(logits[g * n_pairs : (g + 1) * n_pairs]).double().mean()
                    for g in range(len(chunk))
                ]
            )
            for (layer, head), value in zip(chunk, task.normalise(means.cpu()).tolist()):
                values[layer, head] = value
            bar.update(len(chunk))
    labels = ([f"L{layer}" for layer in range(n_layers)], [f"H{h}" for h in range(n_heads)])
    return PatchingResult(
        "path",
        "exact",
        values,
        ("layer", "head"),
        labels,
        task.clean_metric,
        task.corrupt_metric,
        task.tokens,
        time.perf_counter() - start,
    )
