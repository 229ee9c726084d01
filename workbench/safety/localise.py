"""Where a paired-sentence bias lives: the heads and MLPs that carry it, checked, and what removing them does.

For CrowS-Pairs-style pairs whose two sentences have the same token length (a
pronoun or a name swapped), `localise_bias`:

1. scores each pair's preference as the shared-token log-likelihood gap (the
   headline metric of `workbench.safety.bias`): the log-probability of the
   tokens after the differing span, in the more-stereotyping sentence minus in the
   less-stereotyping one, in nats;
2. attributes each pair's gap to every attention head and every MLP with an
   attribution method of `workbench.interp.attribution` (EAP-IG by default), with the
   more-stereotyping sentence as the clean run, the other as the corrupted run and
   the shared-token log-likelihood as the metric: a component's estimate is the
   part of the gap that flows through it, in nats;
3. averages over pairs with bootstrap 95% intervals (clustered when pairs share a
   template or an occupation and a cluster label is given);
4. checks the strongest components by exact patching on every pair;
5. mean-ablates the top-K heads (largest mean push towards the observed
   preference): their output z is replaced by its mean over held-out neutral text
   (the first half of the file, every position after the first, whose massive
   activations are not typical); then scores the pairs again (stereotype share
   with a Wilson interval, mean gap with a bootstrap interval, the paired change)
   and measures the cost: perplexity on the other half of the held-out text and
   accuracy on the QA set, before and after.

Limits (README, "Where the bias lives"): estimates are first-order (hence step 4);
a bias spread over many components shows as a small top share, which is a finding;
CrowS-Pairs-style data is noisy (Blodgett et al. 2021), so a hand-written set with
controlled templates (probes/gender_occupations.csv) is the default for localising.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.display import Tabled
from ..core.errors import InputError
from ..core.stats import Estimate, estimate_from_dict, mean, paired_difference, ratio, share
from ..interp.attribution import check_method, estimate
from ..interp.patching import run_patches_per_pair, task_from_ids
from ..model.likelihood import encode_texts
from ..model.run import forward, hooks
from .bias import pair_scores, shared_span
from .capability import (
    DEFAULT_HELDOUT,
    DEFAULT_QA,
    capability_rows,
    check_items_fit,
    read_heldout,
    read_qa,
    summarise_capability,
)

TOP_SHARE = 0.05  # "the top 5% of heads"
METRIC_NOTE = (
    "the headline rule (auto) scores a minimal swap by 'total', whose extra part is the swapped "
    "token's own log-probability; that part is computed from the shared prefix alone, the same in "
    "both sentences, so patching one sentence into the other can carry none of it, and only the "
    "shared-token gap can be localised this way"
)


@dataclass(frozen=True)
class ScoredPair:
    """One usable pair: token ids of both sentences (start token first) and where the shared suffix begins."""

    index: int
    line: int
    more_ids: list[int]
    less_ids: list[int]
    suffix_start: int
    cluster: str = ""


class SuffixLogLikelihood:
    """Metric: the summed log-probability of tokens ids[start:] given all before them, one value per row."""

    def __init__(self, ids: Sequence[int], start: int):
        self.ids, self.start = torch.tensor(list(ids)), start

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logprobs = logits[:, self.start - 1 : len(self.ids) - 1].float().log_softmax(-1)
        targets = self.ids[self.start :].to(logits.device)
        return (
            logprobs.gather(-1, targets.expand(logits.shape[0], -1).unsqueeze(-1))
            .squeeze(-1)
            .sum(-1)
        )


@dataclass(frozen=True)
class Component:
    """A head ("L3H2") or an MLP ("MLP3") with its mean attributed share of the gap (nats, with interval),
    and, when it was checked, the mean exact patching effect over the same pairs."""

    name: str
    kind: str
    layer: int
    head: int | None
    effect: Estimate
    exact: float | None = None


@dataclass(frozen=True)
class BiasLocalisation(Tabled):
    """Everything `localise_bias` found (see the module docstring); `to_dict`/`from_dict` for localisation.json.

    gap: mean shared-token gap over pairs (nats). head_effects: mean attributed effect per
    [layer][head] (nats). components: every head and MLP, largest |mean effect| first.
    top_heads / top_share: the top 5% of heads by push towards the observed preference and the
    share of the gap they carry (ratio of sums over pairs, bootstrap interval). heads_share,
    mlps_share: the share of the gap all heads / all MLPs carry by the estimates (near 1 in sum
    when the first-order picture is complete). check: exact against estimated mean effects on
    the checked components (Pearson r, largest error). ablated: the heads mean-ablated.
    before / after: {"stereotype_share", "mean_gap", "heldout_perplexity", "qa_accuracy"}
    Estimates; gap_change: the paired change of the gap (mean and shares that moved).
    """

    model: str
    method: str
    steps: int
    n_pairs: int
    skipped_lines: list[int]
    gap: Estimate
    head_effects: list[list[float]]
    components: list[Component]
    top_heads: list[str]
    top_share: Estimate
    heads_share: float
    mlps_share: float
    check: dict
    ablated: list[str]
    before: dict[str, Estimate]
    after: dict[str, Estimate]
    gap_change: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    metric: str = "shared"  # the gap attributed: always the shared-token gap (METRIC_NOTE)

    def __repr__(self) -> str:
        heads = ", ".join(self.top_heads[:4]) + (", ..." if len(self.top_heads) > 4 else "")
        return (
            f"BiasLocalisation({self.model}, {self.method}, {self.n_pairs} pairs; mean gap "
            f"{self.gap.text(3)} nats; top {len(self.top_heads)} heads ({heads}) carry "
            f"{self.top_share.short(2)} of it)"
        )

    def to_frame(self):
        """One row per component: name, kind, layer, head, mean effect (nats) with its interval, exact check."""
        return pd.DataFrame(
            [
                {
                    "component": c.name,
                    "kind": c.kind,
                    "layer": c.layer,
                    "head": c.head,
                    "effect_nats": c.effect.value,
                    "low": c.effect.low,
                    "high": c.effect.high,
                    "exact_nats": c.exact,
                    "ablated": c.name in self.ablated,
                }
                for c in self.components
            ]
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "BiasLocalisation":
        data = dict(data)
        data["gap"] = estimate_from_dict(data["gap"])
        data["top_share"] = estimate_from_dict(data["top_share"])
        data["components"] = [
            Component(**{**c, "effect": estimate_from_dict(c["effect"])})
            for c in data["components"]
        ]
        for side in ("before", "after"):
            data[side] = {k: estimate_from_dict(v) for k, v in data[side].items()}
        return cls(**data)

    def summary_lines(self) -> list[str]:
        """The findings in plain lines, each number with how it was made."""
        k = len(self.ablated)
        lines = [
            f"bias localisation on {self.n_pairs} pairs ({self.method}"
            f"{f', {self.steps} steps' if self.method == 'eap-ig' else ''}; "
            f"{len(self.skipped_lines)} pairs skipped): mean shared-token gap {self.gap.text()} nats",
            f"attributed metric: {self.metric}, whatever the audit's headline; {METRIC_NOTE}",
            f"top {len(self.top_heads)} heads ({TOP_SHARE:.0%} of {len(self.head_effects) * len(self.head_effects[0])}"
            f"): {', '.join(self.top_heads)}; share of the gap they carry {self.top_share.text()}",
            f"all heads carry {self.heads_share:.2f} of the gap by the estimates, all MLPs {self.mlps_share:.2f}"
            + (
                " (far from 1: the components interact, so these shares are not a decomposition of the gap)"
                if abs(self.heads_share + self.mlps_share - 1) > 0.5
                else ""
            ),
            f"exact check of {self.check['n']} components on every pair: Pearson r {self.check['pearson']:.3f}, "
            f"largest error {self.check['max_error']:.3f} nats at {self.check['max_error_at']}",
        ]
        for key, label, percent in (
            ("stereotype_share", "stereotype share", True),
            ("mean_gap", "mean gap (nats)", False),
            ("heldout_perplexity", "held-out perplexity", False),
            ("qa_accuracy", "QA accuracy", True),
        ):
            if key in self.before:
                lines.append(
                    f"{label}: before {self.before[key].text()} -> after mean-ablating {k} head{'s' * (k != 1)} "
                    f"{self.after[key].text()}"
                )
        return lines + self.notes


def usable_pairs(
    model,
    pairs: Sequence,
    skip_bad: bool,
    source: str | None = None,
    clusters: Sequence[str] | None = None,
) -> tuple[list[ScoredPair], list[int]]:
    """The pairs whose sentences have equal token lengths and a shared suffix after the difference.
    Without `skip_bad` the first other pair is an InputError naming its line; with it, such pairs are
    left out and their lines returned."""
    more_ids = encode_texts(model, [p.more for p in pairs])
    less_ids = encode_texts(model, [p.less for p in pairs])
    kept, skipped = [], []
    for i, (pair, a, b) in enumerate(zip(pairs, more_ids, less_ids)):
        prefix, suffix = shared_span(a, b)
        problem = ""
        if a == b:
            problem = "the two sentences are the same tokens"
        elif len(a) != len(b):
            problem = (
                f"the two sentences have {len(a) - 1} and {len(b) - 1} tokens: localisation needs pairs of "
                "equal token length (a pronoun or a name swapped)"
            )
        elif suffix == 0:
            problem = "the sentences differ at their last token, so no shared token follows the difference to score"
        if problem:
            if not skip_bad:
                raise InputError(problem + "; --skip-bad leaves such pairs out", source, pair.line)
            skipped.append(pair.line)
            continue
        kept.append(
            ScoredPair(i, pair.line, a, b, len(a) - suffix, str(clusters[i]) if clusters else "")
        )
    if not kept:
        raise InputError(
            "no pair is usable for localisation (equal token lengths, a shared suffix)", source
        )
    return kept, skipped


def attribute_pairs(
    model,
    pairs: Sequence[ScoredPair],
    method: str = "eap-ig",
    steps: int = 5,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Per pair: the gap (nats), head effects [pairs, layers, heads] and MLP effects [pairs, layers] in nats,
    and the prepared tasks (None for a pair whose gap is zero: nothing to attribute, its effects are 0).
    method: an attribution method of `workbench.interp.attribution`, or "exact" (exact patching of every head
    and MLP on every pair: one forward row per cell, slower, no approximation)."""
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    gaps = np.zeros(len(pairs))
    heads = np.zeros((len(pairs), n_layers, n_heads))
    mlps = np.zeros((len(pairs), n_layers))
    tasks = []
    for i, pair in enumerate(
        tqdm(pairs, desc=f"attributing ({method})", unit="pair", disable=not progress)
    ):
        metric = SuffixLogLikelihood(pair.more_ids, pair.suffix_start)
        try:
            task = task_from_ids(
                model, torch.tensor([pair.more_ids]), torch.tensor([pair.less_ids]), metric
            )
        # the same log-likelihood on both sides: a zero gap, nothing flows anywhere
        except InputError:
            tasks.append(None)
            continue
        tasks.append(task)
        gap = task.clean_metric - task.corrupt_metric
        gaps[i] = gap
        if method == "exact":
            every = slice(None)
            cells = [
                (f"blocks.{layer}.attn.hook_z", (every, h, every))
                for layer in range(n_layers)
                for h in range(n_heads)
            ]
            effects = exact_effects(
                model,
                [task],
                cells + [(f"blocks.{layer}.hook_mlp_out", (every,)) for layer in range(n_layers)],
            )[0]
            heads[i], mlps[i] = (
                effects[: len(cells)].reshape(n_layers, n_heads),
                effects[len(cells) :],
            )
            continue
        results = estimate(model, task, ("attn_head", "mlp_out"), method, steps)
        heads[i] = results["attn_head"].values.double().numpy() * gap
        mlps[i] = results["mlp_out"].values.double().numpy() * gap
    return gaps, heads, mlps, tasks


def exact_effects(model, tasks: list, cells: Sequence[tuple[str, tuple]]) -> np.ndarray:
    """Exact patching of `cells` (hook name, index) on every pair: [pairs, cells] effects in nats
    (patched minus corrupted metric); 0 for pairs without a task."""
    out = np.zeros((len(tasks), len(cells)))
    for i, task in enumerate(tasks):
        if task is not None:
            out[i] = (
                run_patches_per_pair(model, task, list(cells))[:, 0] - task.corrupt_values[0]
            ).numpy()
    return out


def mean_head_outputs(
    model, texts: Sequence[str], heads: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], torch.Tensor]:
    """Per (layer, head): the mean of its output z over every position but the first of `texts`: [d_head]."""
    layers = sorted({layer for layer, _ in heads})
    sums = {layer: 0.0 for layer in layers}
    count = 0

    def grab(layer: int) -> Callable:
        def hook(output, _point):
            sums[layer] = sums[layer] + output[0, 1:].double().sum(0)  # [heads, d_head]
            return output

        return hook

    fwd_hooks = [(f"blocks.{layer}.attn.hook_z", grab(layer)) for layer in layers]
    for ids in encode_texts(model, texts):
        forward(model, torch.tensor([ids], device=model.device), fwd_hooks=fwd_hooks)
        count += len(ids) - 1
    return {(layer, head): (sums[layer][head] / count).float() for layer, head in heads}


@contextlib.contextmanager
def mean_ablated(model, means: dict[tuple[int, int], torch.Tensor]) -> Iterator[None]:
    """Inside the block, each listed head's output z is its mean (`mean_head_outputs`) at every position."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in means:
        by_layer.setdefault(layer, []).append(head)

    def replace(layer: int) -> Callable:
        def hook(output, _point):
            patched = output.clone()
            for head in by_layer[layer]:
                patched[:, :, head] = means[(layer, head)].to(patched.dtype)
            return patched

        return hook

    with hooks(model, [(f"blocks.{layer}.attn.hook_z", replace(layer)) for layer in by_layer]):
        yield


def _bias_and_cost(
    model, pairs: Sequence, items: Sequence, clusters, seed: int, n_boot: int
) -> tuple[dict, np.ndarray]:
    """Stereotype share and mean gap (shared-token metric) over `pairs` (clustered when `clusters` labels
    are given), and held-out perplexity and QA accuracy over `items`, under whatever hooks are applied
    now. Returns (estimates, per-pair gaps)."""
    scores = pair_scores(model, pairs)
    gaps = scores["shared_more"] - scores["shared_less"]
    estimates = {
        "stereotype_share": share(gaps > 0, clusters, seed=seed, n_boot=n_boot, unit="pairs"),
        "mean_gap": mean(gaps, clusters=clusters, seed=seed, n_boot=n_boot, unit="pairs"),
    }
    estimates.update(summarise_capability(capability_rows(model, items), seed=seed, n_boot=n_boot))
    return estimates, gaps


def check_localisation(
    model,
    pairs: Sequence,
    top_k: int,
    method: str = "eap-ig",
    steps: int = 5,
    skip_bad: bool = False,
    heldout: str | None = None,
    qa: str | None = None,
    clusters: Sequence[str] | None = None,
    source: str | None = None,
):
    """Every check of `localise_bias`'s input, before any model work: InputError on the first problem.
    Returns (usable pairs, skipped lines, the held-out texts for the ablation means, the cost items)."""
    if method != "exact":
        check_method(method, steps)
    n_heads = model.info.n_layers * model.info.n_heads
    if not 1 <= top_k <= n_heads:
        raise InputError(
            f"--top-k {top_k}: {model.info.name} has {n_heads} heads; choose 1 to {n_heads}"
        )
    heldout_items = read_heldout([heldout or DEFAULT_HELDOUT])
    if len(heldout_items) < 4:
        raise InputError(
            f"{len(heldout_items)} held-out texts: need at least 4 (half for the ablation means, half "
            "for perplexity)",
            str(heldout or DEFAULT_HELDOUT),
        )
    half = len(heldout_items) // 2
    items = heldout_items[half:] + read_qa(qa or DEFAULT_QA, model)
    check_items_fit(model, heldout_items[:half] + items)  # every held-out text and QA prompt
    kept, skipped = usable_pairs(model, pairs, skip_bad, source, clusters)
    return kept, skipped, [item.text for item in heldout_items[:half]], items


def localise_bias(
    model,
    pairs: Sequence,
    top_k: int = 10,
    method: str = "eap-ig",
    steps: int = 5,
    skip_bad: bool = False,
    heldout: str | None = None,
    qa: str | None = None,
    clusters: Sequence[str] | None = None,
    n_check: int = 10,
    seed: int = 0,
    n_boot: int = 2000,
    source: str | None = None,
    progress: bool = True,
) -> BiasLocalisation:
    """Localise the bias of `pairs` (`workbench.core.datasets.BiasPair`s) in heads and MLPs, check, ablate, measure.

    top_k: heads to mean-ablate; n_check: heads checked by exact patching (plus the 3 strongest
    MLPs); heldout, qa: the held-out text (first half for the ablation means, second half for
    perplexity) and the QA set (defaults: probes/heldout_neutral.txt, probes/qa.jsonl);
    clusters: one label per pair for clustered intervals (default: the pairs' own `cluster` labels,
    from `read_bias_pairs(..., cluster=COLUMN)`).
    """
    start = time.perf_counter()
    if clusters is None and any(getattr(p, "cluster", "") for p in pairs):
        clusters = [p.cluster for p in pairs]
    kept, skipped, texts, items = check_localisation(
        model, pairs, top_k, method, steps, skip_bad, heldout, qa, clusters, source
    )
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    labels = [p.cluster for p in kept] if clusters else None

    gaps, heads, mlps, tasks = attribute_pairs(model, kept, method, steps, progress)

    def effect(values: np.ndarray) -> Estimate:
        return mean(values, clusters=labels, seed=seed, n_boot=n_boot, unit="pairs")

    head_names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    components = [
        Component(f"L{layer}H{h}", "head", layer, h, effect(heads[:, layer, h]))
        for layer in range(n_layers)
        for h in range(n_heads)
    ]
    components += [
        Component(f"MLP{layer}", "mlp", layer, None, effect(mlps[:, layer]))
        for layer in range(n_layers)
    ]
    direction = 1.0 if gaps.mean() >= 0 else -1.0
    head_means = heads.mean(0)
    order = np.argsort(-(head_means.flatten() * direction), kind="stable")
    n_top = max(1, math.ceil(TOP_SHARE * n_layers * n_heads))
    top = order[:n_top]
    top_share = ratio(
        heads.reshape(len(kept), -1)[:, top].sum(1) * direction,
        gaps * direction,
        seed=seed,
        n_boot=n_boot,
        unit="pairs",
    )

    # The exact check: the strongest heads and MLPs by |mean effect|, patched exactly on every pair.
    checked_heads = np.argsort(-np.abs(head_means.flatten()), kind="stable")[:n_check]
    checked_mlps = np.argsort(-np.abs(mlps.mean(0)), kind="stable")[:3]
    every = slice(None)
    cells = [
        (f"blocks.{i // n_heads}.attn.hook_z", (every, int(i % n_heads), every))
        for i in checked_heads
    ]
    cells += [(f"blocks.{int(layer)}.hook_mlp_out", (every,)) for layer in checked_mlps]
    exact = exact_effects(model, tasks, cells).mean(0)
    names = [head_names[i] for i in checked_heads] + [f"MLP{int(layer)}" for layer in checked_mlps]
    estimated = np.concatenate([head_means.flatten()[checked_heads], mlps.mean(0)[checked_mlps]])
    exact_of = dict(zip(names, exact.tolist()))
    components = [
        Component(c.name, c.kind, c.layer, c.head, c.effect, exact_of.get(c.name))
        for c in components
    ]
    components.sort(key=lambda c: -abs(c.effect.value))
    errors = np.abs(exact - estimated)
    check = {
        "n": len(names),
        "components": names,
        "exact": exact.tolist(),
        "estimate": estimated.tolist(),
        "pearson": float(np.corrcoef(exact, estimated)[0, 1]) if len(names) >= 3 else float("nan"),
        "max_error": float(errors.max()),
        "max_error_at": names[int(errors.argmax())],
    }

    # Mean-ablate the top-K heads (largest push towards the observed preference) and measure again.
    ablated = [(int(i // n_heads), int(i % n_heads)) for i in order[:top_k]]
    means = mean_head_outputs(model, texts, ablated)
    kept_pairs = [pairs[p.index] for p in kept]
    before, gaps_before = _bias_and_cost(model, kept_pairs, items, labels, seed, n_boot)
    with mean_ablated(model, means):
        after, gaps_after = _bias_and_cost(model, kept_pairs, items, labels, seed, n_boot)
    # Pair by pair; with clusters, each cluster's mean change is one unit.
    change = paired_difference(
        gaps_before,
        gaps_after,
        units=labels or list(range(len(kept))),
        seed=seed,
        n_boot=n_boot,
        unit="clusters" if labels else "pairs",
    ).to_dict()
    notes = []
    if np.any([t is None for t in tasks]):
        notes.append(
            f"{sum(t is None for t in tasks)} pairs had a zero gap: their effects count as 0"
        )
    return BiasLocalisation(
        model.info.name,
        method,
        steps,
        len(kept),
        skipped,
        effect(gaps),
        head_means.tolist(),
        components,
        [head_names[i] for i in top],
        top_share,
        float(head_means.sum() / gaps.mean()) if gaps.mean() else float("nan"),
        float(mlps.mean(0).sum() / gaps.mean()) if gaps.mean() else float("nan"),
        check,
        [f"L{layer}H{h}" for layer, h in ablated],
        before,
        after,
        change,
        time.perf_counter() - start,
        notes,
    )
