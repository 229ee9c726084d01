"""Linear probes on cached activations: one per hook, trained together, saved as safetensors + JSON.

    cache = wb.cache_activations(model, [r.text for r in rows], hooks="resid_post", positions="mean")
    sweep = train_probes(cache, labels, groups=groups, split="group", seed=0)
    sweep.to_frame()                       # per hook: accuracy, AUROC, split sizes
    sweep.best().save("probes/toxigen_l12")  # safetensors + JSON
    probe = Probe.load("probes/toxigen_l12")
    probe_scores(model, probe, ["some text"])  # P(label = 1) per text
    token_scores(model, probe, "some text")    # per token, for highlighting

Logistic regression with an L2 penalty, fitted by full-batch L-BFGS in torch on
standardised features (all hooks at once, on the GPU when the activations are
there), beside the mean-difference direction (difference of class means,
thresholded at the midpoint of the projected class means). Splits:

- "random": a held-out fraction, stratified by label (and by group when given);
- "group": whole groups held out, so the test groups were never seen in training.

Beside the dense probe, `sparse_probes` offers TransformerLens' k-sparse probes
(features chosen on the training split only, with random-feature and
shuffled-label controls): how much of the signal sits in k coordinates.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .errors import InputError


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    scores, labels = scores.double().cpu(), labels.cpu().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks over ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def split_indices(labels: Sequence[int], groups: Sequence[str] | None = None, method: str = "random",
                  test_fraction: float = 0.25, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train and test row indices.

    random: every (label, group) stratum contributes `test_fraction` of its rows to the test set.
    group: groups are shuffled and whole groups moved to the test set until it holds
    about `test_fraction` of the rows (needs `groups`).
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    if method == "random":
        strata: dict[tuple, list[int]] = {}
        for i in range(n):
            strata.setdefault((labels[i], groups[i] if groups else None), []).append(i)
        test = []
        for rows in strata.values():
            perm = torch.randperm(len(rows), generator=generator).tolist()
            test += [rows[j] for j in perm[: round(len(rows) * test_fraction)]]
    elif method == "group":
        if not groups:
            raise InputError("a group split needs a group for every text")
        names = sorted(set(groups))
        if len(names) < 2:
            raise InputError("a group split needs at least two groups")
        order = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        held, count = set(), 0
        for name in order:
            if count >= test_fraction * n or len(held) == len(names) - 1:
                break
            held.add(name)
            count += sum(1 for g in groups if g == name)
        test = [i for i in range(n) if groups[i] in held]
    else:
        raise InputError(f"split must be 'random' or 'group', not {method!r}")
    test_set = set(test)
    return [i for i in range(n) if i not in test_set], sorted(test_set)


@dataclass
class Probe:
    """A linear probe on one hook: P(label=1 | x) = sigmoid(((x - mean) / std) . weight + bias)."""

    hook: str
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    direction: torch.Tensor  # mean-difference direction (unit), in raw activation space
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def logits(self, acts: torch.Tensor) -> torch.Tensor:
        """Float[Tensor, "..."] log-odds for activations Float[Tensor, "... d"]."""
        x = (acts.float().to(self.weight.device) - self.mean) / self.std
        return x @ self.weight + self.bias

    def predict_proba(self, acts: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(acts))

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).detach().cpu().contiguous() for k in ("weight", "bias", "mean", "std", "direction")}
        save_file(tensors, str(folder / "probe.safetensors"))
        (folder / "probe.json").write_text(json.dumps({"hook": self.hook, "metrics": self.metrics, "meta": self.meta},
                                                      indent=2, default=str) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Probe":
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("probe.safetensors", "probe.json"):
            if not (folder / name).exists():
                raise InputError(f"not a saved probe (no {name})", str(folder))
        try:
            tensors = load_file(str(folder / "probe.safetensors"))
            info = json.loads((folder / "probe.json").read_text())
        except Exception as error:
            raise InputError(f"unreadable probe ({type(error).__name__}: {error})", str(folder)) from None
        return cls(hook=info["hook"], metrics=info.get("metrics", {}), meta=info.get("meta", {}), **tensors)


@dataclass
class ProbeSweep:
    """One probe per hook, with held-out metrics."""

    probes: dict[str, Probe]
    split: str
    n_train: int
    n_test: int

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"hook": hook, **probe.metrics} for hook, probe in self.probes.items()])

    def best(self, metric: str = "auroc") -> Probe:
        return max(self.probes.values(), key=lambda p: p.metrics.get(metric, float("-inf")))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit [n_hooks] independent logistic regressions at once. x: [hooks, n, d] standardised, y: [n]."""
    n_hooks, n, d = x.shape
    weight = torch.zeros(n_hooks, d, device=x.device, requires_grad=True)
    bias = torch.zeros(n_hooks, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    target = y.float().to(x.device).expand(n_hooks, n)

    def closure():
        optimiser.zero_grad()
        logits = torch.einsum("hnd,hd->hn", x, weight) + bias[:, None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1).sum()
        loss = loss + l2 * (weight ** 2).sum() / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weight.detach(), bias.detach()


def train_probes(acts: dict[str, torch.Tensor] | object, labels: Sequence[int], groups: Sequence[str] | None = None,
                 split: str = "random", test_fraction: float = 0.25, l2: float = 1e-2, seed: int = 0,
                 hooks: Sequence[str] | None = None, device: str | None = None, meta: dict | None = None) -> ProbeSweep:
    """Train a logistic probe and a mean-difference direction on each hook, evaluated on a held-out split.

    Args:
        acts: an activation cache (in memory or on disk; positions "last", "mean" or "mean_after_first")
            or a dict hook -> Float[Tensor, "n d"].
        labels: 0/1 per text; groups: optional group per text (for stratifying / the group split).
        split: "random" or "group" (see module docstring); l2: penalty on the standardised weights.
        device: where to fit ("cuda" when available by default).
    """
    labels_t = torch.tensor([int(v) for v in labels])
    if set(labels_t.unique().tolist()) != {0, 1}:
        raise InputError("labels must contain both 0 and 1")
    hook_names = list(hooks or (acts.hooks if hasattr(acts, "hooks") else acts.keys()))
    train, test = split_indices(labels_t.tolist(), groups, split, test_fraction, seed)
    if not train or not test:
        raise InputError("the split left no training or no test rows")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    stacked = torch.stack([acts[h].float() for h in hook_names]).to(device)  # [hooks, n, d]
    if stacked.dim() != 3:
        raise InputError("probes need one vector per text: cache with positions 'last', 'mean' or 'mean_after_first'")
    x_train, x_test = stacked[:, train], stacked[:, test]
    y_train, y_test = labels_t[train], labels_t[test]
    mean, std = x_train.mean(1, keepdim=True), x_train.std(1, keepdim=True) + 1e-6
    weight, bias = _fit_logistic((x_train - mean) / std, y_train, l2)
    probes = {}
    for i, hook in enumerate(hook_names):
        pos_mean = x_train[i][y_train.to(device) == 1].mean(0)
        neg_mean = x_train[i][y_train.to(device) == 0].mean(0)
        direction = (pos_mean - neg_mean) / (pos_mean - neg_mean).norm()
        probe = Probe(hook, weight[i].cpu(), bias[i].cpu(), mean[i, 0].cpu(), std[i, 0].cpu(), direction.cpu())
        test_scores = probe.logits(x_test[i].cpu())
        projected = x_test[i].cpu() @ probe.direction
        threshold = float(((pos_mean + neg_mean) / 2).cpu() @ probe.direction)
        probe.metrics = {
            "accuracy": float(((test_scores > 0).long() == y_test).float().mean()),
            "auroc": auroc(test_scores, y_test),
            "mean_difference_accuracy": float(((projected > threshold).long() == y_test).float().mean()),
            "mean_difference_auroc": auroc(projected, y_test),
            "n_train": len(train), "n_test": len(test), "split": split, "seed": seed, "l2": l2,
        }
        probe.meta = dict(meta or {})
        probes[hook] = probe
    return ProbeSweep(probes, split, len(train), len(test))


def train_probes_on_rows(model, rows, data: str, hooks: str = "resid_post", positions: str = "mean",
                         split: str = "random", test_fraction: float = 0.25, l2: float = 1e-2, seed: int = 0,
                         progress: bool = True):
    """Cache `hooks` over labeled rows (read_labeled / read_toxigen) and train a probe per hook.

    data: where the rows came from (recorded in each probe's meta with the data hash).
    Returns (sweep, acts, seconds): the ProbeSweep, the activation cache (for sparse
    probes), and {"caching": s, "training": s}.
    """
    import time

    from .cache import cache_activations

    texts, labels = [r.text for r in rows], [r.label for r in rows]
    groups = [r.group for r in rows] if all(r.group for r in rows) else None
    start = time.perf_counter()
    acts = cache_activations(model, texts, hooks=hooks, positions=positions, progress=progress)
    cached = time.perf_counter() - start
    meta = {"model": model.info.name, "revision": model.info.revision, "dtype": model.info.dtype,
            "positions": positions, "data": data, "data_sha256": texts_hash(texts, labels)}
    sweep = train_probes(acts, labels, groups, split=split, test_fraction=test_fraction, l2=l2, seed=seed, meta=meta)
    return sweep, acts, {"caching": round(cached, 2), "training": round(time.perf_counter() - start - cached, 2)}


def texts_hash(texts: Sequence[str], labels: Sequence[int]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def probe_scores(model, probe: Probe, texts: Sequence[str], positions: str | None = None,
                 batch_size: int = 8) -> torch.Tensor:
    """P(label = 1) for each text, reading the probe's hook at the positions it was trained on."""
    from .cache import cache_activations

    positions = positions or probe.meta.get("positions", "mean")
    acts = cache_activations(model, list(texts), hooks=probe.hook, positions=positions, batch_size=batch_size,
                             progress=False)[probe.hook]
    return probe.predict_proba(acts).cpu()


def token_scores(model, probe: Probe, text: str) -> tuple[list[str], torch.Tensor]:
    """Per-token P(label = 1) along `text` (the probe applied at every position), for highlighting."""
    from .cache import cache_activations
    from .tokens import str_tokens, to_tokens

    cache = cache_activations(model, [text], hooks=probe.hook, positions="all", progress=False)
    n = int(cache.lengths[0])
    return str_tokens(model, to_tokens(model, text)), probe.predict_proba(cache[probe.hook][0, :n]).cpu()


@dataclass
class SparseProbeTable:
    """k-sparse probes per hook and sparsity k, from TransformerLens' leakage-safe sparse probing.

    rows: one dict per (hook, k) with held-out "auroc" and "accuracy", split sizes, the
    selected feature indices ("features", best first), and the mean held-out AUROC of
    the controls ("random_coordinate_auroc": k random features; "label_shuffle_auroc":
    training labels shuffled), which show how much a k-feature probe gets by chance.
    """

    rows: list[dict]
    split: str

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def sparse_probes(acts: dict[str, torch.Tensor] | object, labels: Sequence[int], groups: Sequence[str] | None = None,
                  split: str = "random", ks: Sequence[int] = (1, 4, 16, 64), test_fraction: float = 0.25,
                  seed: int = 0, hooks: Sequence[str] | None = None, n_controls: int = 3) -> SparseProbeTable:
    """k-sparse logistic probes on each hook via `transformer_lens.tools.analysis.sparse_probing`.

    Features are chosen on the training split only (by class-mean difference), so the
    held-out metrics carry no selection leakage. split "group" holds whole groups out
    (TransformerLens' grouped split: each class must appear in at least two groups).
    acts: as for `train_probes` (one vector per text). Runs on CPU in float64.
    """
    from transformer_lens.tools.analysis.sparse_probing import sweep_sparse_probe

    labels_t = torch.tensor([int(v) for v in labels])
    if set(labels_t.unique().tolist()) != {0, 1}:
        raise InputError("labels must contain both 0 and 1")
    if split not in ("random", "group"):
        raise InputError(f"split must be 'random' or 'group', not {split!r}")
    group_ids = None
    if split == "group":
        if not groups:
            raise InputError("a group split needs a group for every text")
        names = sorted(set(groups))
        group_ids = torch.tensor([names.index(g) for g in groups])
    hook_names = list(hooks or (acts.hooks if hasattr(acts, "hooks") else acts.keys()))
    rows = []
    for hook in hook_names:
        features = acts[hook].float().cpu()
        if features.dim() != 2:
            raise InputError("probes need one vector per text: "
                             "cache with positions 'last', 'mean' or 'mean_after_first'")
        usable = sorted(k for k in set(ks) if 0 < k <= features.shape[1])
        try:
            sweep = sweep_sparse_probe(features, labels_t, ks=usable, test_fraction=test_fraction, groups=group_ids,
                                       preprocess="standardize", n_random_subsets=n_controls,
                                       n_label_shuffles=n_controls, seed=seed)
        except ValueError as error:
            raise InputError(f"sparse probing on {hook}: {error}") from None
        for k, result, random_control, shuffle_control in zip(sweep.ks, sweep.results,
                                                              sweep.random_coordinate_controls,
                                                              sweep.label_shuffle_controls):
            rows.append({"hook": hook, "k": k, "auroc": result.metrics.roc_auc,
                         "accuracy": result.metrics.accuracy,
                         "random_coordinate_auroc": _mean_or_nan(random_control.roc_auc),
                         "label_shuffle_auroc": _mean_or_nan(shuffle_control.roc_auc),
                         "n_train": len(result.train_indices), "n_test": len(result.test_indices),
                         "features": result.selected_features[:8].tolist(), "split": split, "seed": seed})
    return SparseProbeTable(rows, split)


def _mean_or_nan(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else float("nan")
