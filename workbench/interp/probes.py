"""Linear probes on cached activations, validated like a model and saved with their provenance.

    cache = wb.cache_activations(model, [r.text for r in rows], hooks="resid_post", positions="mean")
    sweep = train_probes(cache, labels, groups=groups, split="group", seed=0)
    sweep.to_frame()                 # per hook: validation and test AUROC, chosen L2, calibration error
    sweep.chosen                     # the hook chosen on the validation split
    probe = sweep.best()             # that hook's probe; its test AUROC (with interval) is the headline
    probe.save("probes/toxigen")     # safetensors + JSON with model, revision, positions, data hash, split
    probe = Probe.load("probes/toxigen")
    probe_scores(model, probe, ["some text"])  # P(label = 1) per text; refuses another model or width
    token_scores(model, probe, "some text")    # per token, for highlighting

Three-way split. Rows are cut into train, validation and test sets ("random":
stratified by label and group; "group": whole groups, so validation and test
groups are never seen in training). For every hook a logistic regression (L2
penalty on standardised features, full-batch L-BFGS in torch, all hooks at once,
on the GPU when there is one) is fitted on the training rows for each L2
strength of a grid; the strength with the best validation AUROC is kept, and the
hook with the best validation AUROC is `chosen`. Test AUROC is reported for every
hook (the figure draws both curves) but only the chosen probe's test AUROC is the
headline, with a stratified BCa bootstrap interval and its calibration
(reliability curve, expected calibration error) on the test rows.

Beside each logistic probe sits the mean-difference direction: the difference of
the class means of the *standardised* training activations. (In raw space a
mean-pooled residual stream is dominated by the first token's outsized
activations divided by the text length, so the raw difference of means ranks
texts by length: on ToxiGen with SmolLM2 it scored 0.46 held-out at most
layers.) Each probe also records the Spearman correlation of its scores with the
text length on the training rows (``length_spearman``), a warning sign when
large.

Beside the dense probe, `workbench.interp.sparse_probes` offers TransformerLens' k-sparse
probes (features chosen on the training split only, with random-feature and shuffled-label
controls): how much of the signal sits in k coordinates.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file

from ..core import stats
from ..core.display import Tabled
from ..core.errors import InputError
from ..core.provenance import versions
from ..core.stats import auroc_interval, calibration
from ..model.activations import cache_activations
from ..model.hooks import hook_table, resolve_hooks
from ..model.tokens import resolve_prepend_bos, str_tokens, to_tokens
from .splits import split_indices

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # penalties tried on the validation split (on the mean loss)
REQUIRED_META = ("model", "positions")  # a saved probe must say which model and positions it reads
TENSORS = ("weight", "bias", "mean", "std", "direction")


def auroc(scores, labels) -> float:
    """Area under the ROC curve (workbench.core.stats.auroc, scikit-learn's)."""
    return stats.auroc(
        torch.as_tensor(scores).double().cpu().numpy(), torch.as_tensor(labels).cpu().numpy()
    )


@dataclass
class Probe:
    """A linear probe on one hook: P(label=1 | x) = sigmoid(((x - mean) / std) . weight + bias).

    direction: the mean-difference direction (unit, raw activation space; x . direction
    ranks texts as the standardised class-mean difference does). metrics: validation and
    test figures (see `train_probes`). meta: provenance (model, revision, dtype, positions,
    data hashes, versions); `save` refuses a probe without "model" and "positions".
    """

    hook: str
    weight: Float[torch.Tensor, " d"]
    bias: Float[torch.Tensor, ""]
    mean: Float[torch.Tensor, " d"]
    std: Float[torch.Tensor, " d"]
    direction: Float[torch.Tensor, " d"]
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        test = self.metrics.get("test_auroc_interval")
        held_out = f"test AUROC {stats.estimate_from_dict(test).text()}" if test else "not tested"
        return f"Probe({self.hook}, width {self.width}, {self.meta.get('model')}, {held_out})"

    def logits(self, acts: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        """Float[Tensor, "..."] log-odds for activations Float[Tensor, "... d"]."""
        x = (acts.float().to(self.weight.device) - self.mean) / self.std
        return x @ self.weight + self.bias

    def predict_proba(self, acts: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        return torch.sigmoid(self.logits(acts))

    @property
    def width(self) -> int:
        return int(self.weight.shape[0])

    def save(self, folder: str | Path) -> Path:
        missing = [key for key in REQUIRED_META if not self.meta.get(key)]
        if missing:
            raise InputError(
                f"this probe records no {' and no '.join(missing)}, so it could later be applied to "
                "the wrong model or positions; train it on an activation cache (which records both) "
                "or pass meta={'model': ..., 'positions': ...} to train_probes"
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).detach().float().cpu().contiguous() for k in TENSORS}
        save_file(tensors, str(folder / "probe.safetensors"))
        (folder / "probe.json").write_text(
            json.dumps(
                {"hook": self.hook, "metrics": self.metrics, "meta": self.meta},
                indent=2,
                default=str,
            )
            + "\n"
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Probe":
        """Read a saved probe, checking every tensor (names, float dtype, shapes, finite values)."""
        folder = Path(folder)
        for name in ("probe.safetensors", "probe.json"):
            if not (folder / name).is_file():
                raise InputError(f"not a saved probe (no {name})", str(folder))
        try:
            tensors = load_file(str(folder / "probe.safetensors"))
            info = json.loads((folder / "probe.json").read_text(encoding="utf-8"))
        except (Exception, RecursionError) as error:
            raise InputError(
                f"unreadable probe ({type(error).__name__}: {str(error)[:200]})", str(folder)
            ) from None
        where = str(folder / "probe.json")
        if not isinstance(info, dict) or not isinstance(info.get("hook"), str) or not info["hook"]:
            raise InputError("field 'hook' is missing or not a string", where)
        for key in ("metrics", "meta"):
            if not isinstance(info.get(key, {}), dict):
                raise InputError(f"field {key!r} must be an object", where)
        where = str(folder / "probe.safetensors")
        if set(tensors) != set(TENSORS):
            raise InputError(
                f"tensors must be exactly {', '.join(TENSORS)}; found {', '.join(sorted(tensors))}",
                where,
            )
        width = tensors["weight"].shape[0] if tensors["weight"].dim() == 1 else -1
        for name, tensor in tensors.items():
            if not tensor.is_floating_point():
                raise InputError(f"tensor {name!r} is {tensor.dtype}, not floating point", where)
            expected = () if name == "bias" else (width,)
            if tuple(tensor.shape) != expected:
                raise InputError(
                    f"tensor {name!r} has shape {tuple(tensor.shape)}; expected {expected}", where
                )
            if not torch.isfinite(tensor).all():
                raise InputError(f"tensor {name!r} holds NaN or infinite values", where)
        if not (tensors["std"] > 0).all():
            raise InputError("tensor 'std' must be positive", where)
        return cls(
            hook=info["hook"],
            metrics=info.get("metrics", {}),
            meta=info.get("meta", {}),
            **{k: v.float() for k, v in tensors.items()},
        )


PROBE_POSITIONS = ("mean_after_first", "mean", "last")  # one vector per text (not "all")


def check_probe_fits(
    model, probe: Probe, positions: str | None = None, allow_other_positions: bool = False
) -> str:
    """Refuse (InputError) a probe that belongs to another model, hook width or positions.

    Returns the positions to read. Call before any model work that depends on the probe.
    """
    trained_on = probe.meta.get("model")
    if not trained_on:
        raise InputError(
            f"probe on {probe.hook} records no model it was trained on; retrain it with "
            "`workbench probe train` (saved probes now carry their provenance)"
        )
    if trained_on != model.info.name:
        raise InputError(
            f"probe on {probe.hook} was trained on {trained_on!r} and cannot score {model.info.name!r} "
            "(its weights read another model's activations)"
        )
    revision = probe.meta.get("revision")
    if "revision" in probe.meta and revision != model.info.revision:
        raise InputError(
            f"probe on {probe.hook} was trained on {trained_on!r} at revision {revision!r}; the "
            f"loaded model is at {model.info.revision!r}, whose activations may differ (retrain "
            "the probe on this revision)"
        )
    try:
        resolved = resolve_hooks(model, probe.hook)
    except InputError:
        resolved = []
    if resolved != [probe.hook]:
        raise InputError(
            f"probe.json's hook {probe.hook!r} is not one of {model.info.name}'s hook names (a "
            "probe reads exactly one hook; see `workbench hooks`)"
        )
    hook = resolved[0]
    shape = hook_table(model)[hook].shape
    if shape[-1] != probe.width:
        raise InputError(
            f"probe on {probe.hook} reads {probe.width}-wide vectors, but {model.info.name}'s {hook} "
            f"is {shape[-1]} wide"
        )
    trained_positions = probe.meta.get("positions")
    wanted = positions or trained_positions
    if not wanted:
        raise InputError(f"probe on {probe.hook} records no positions; pass positions= explicitly")
    if trained_positions and trained_positions not in PROBE_POSITIONS:
        raise InputError(
            f"probe on {probe.hook} records positions {trained_positions!r}, which cannot have "
            "trained it: a probe learns from one vector per text "
            f"({', '.join(PROBE_POSITIONS)})"
        )
    if trained_positions and wanted != trained_positions and not allow_other_positions:
        raise InputError(
            f"probe on {probe.hook} was trained on positions {trained_positions!r}; reading "
            f"{wanted!r} gives scores it was never validated on (pass allow_other_positions=True / "
            "--allow-other-positions to do it anyway)"
        )
    return wanted


@dataclass
class ProbeSweep(Tabled):
    """One probe per hook; the hook `chosen` by validation AUROC; the grid of L2 strengths tried."""

    probes: dict[str, Probe]
    split: str
    n_train: int
    n_val: int
    n_test: int
    chosen: str
    l2_grid: list[float]

    def to_frame(self):
        """One row per hook: chosen L2, validation and test AUROC (logistic and mean-difference),
        test accuracy and calibration error, length correlation, and whether it is the chosen hook."""
        rows = []
        for hook, probe in self.probes.items():
            metrics = {k: v for k, v in probe.metrics.items() if not isinstance(v, (dict, list))}
            rows.append({"hook": hook, **metrics, "chosen": hook == self.chosen})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (
            f"ProbeSweep({len(self.probes)} hooks, {self.split} split {self.n_train}/{self.n_val}/"
            f"{self.n_test} train/val/test; chosen on validation: {self.best()!r})"
        )

    def best(self) -> Probe:
        """The probe on the hook chosen on the validation split (never on the test split)."""
        return self.probes[self.chosen]


def _fit_logistic(
    x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit [n_hooks] independent logistic regressions at once. x: [hooks, n, d] standardised, y: [n]."""
    n_hooks, n, d = x.shape
    weight = torch.zeros(n_hooks, d, device=x.device, requires_grad=True)
    bias = torch.zeros(n_hooks, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )
    target = y.float().to(x.device).expand(n_hooks, n)

    def closure():
        optimiser.zero_grad()
        logits = torch.einsum("hnd,hd->hn", x, weight) + bias[:, None]
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            .mean(1)
            .sum()
        )
        loss = loss + l2 * (weight**2).sum() / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weight.detach(), bias.detach()


def train_probes(
    acts: dict[str, torch.Tensor] | object,
    labels: Sequence[int],
    groups: Sequence[str] | None = None,
    split: str = "random",
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    l2: float | Sequence[float] = L2_GRID,
    seed: int = 0,
    hooks: Sequence[str] | None = None,
    device: str | None = None,
    meta: dict | None = None,
    n_boot: int = 2000,
) -> ProbeSweep:
    """Train a logistic probe and a mean-difference direction on each hook; choose on validation.

    Args:
        acts: an activation cache (in memory or on disk; positions "last", "mean" or "mean_after_first")
            or a dict hook -> Float[Tensor, "n d"] (then pass meta with "model" and "positions" to save).
        labels: 0/1 per text; groups: optional group per text (for stratifying / the group split).
        split: "random" or "group" (see module docstring); test_fraction, val_fraction: shares held out.
        l2: one penalty, or a grid tried on the validation split (per hook).
        device: where to fit ("cuda" when available by default).
        meta: provenance merged over what the cache records (model, revision, dtype, positions, texts hash).

    Every probe's metrics: l2, val_auroc, test_auroc, test_accuracy, mean_difference_val_auroc,
    mean_difference_test_auroc, test_ece, length_spearman, split sizes. The chosen probe's also
    carry test_auroc_interval (an Estimate dict) and calibration (the reliability curve).
    """
    labels_t = torch.tensor([int(v) for v in labels])
    if set(labels_t.unique().tolist()) != {0, 1}:
        raise InputError("labels must contain both 0 and 1")
    grid = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    if not grid or not all(math.isfinite(v) and v >= 0 for v in grid):
        raise InputError(f"l2 must be one or more finite numbers >= 0, not {l2!r}")
    hook_names = list(hooks or (acts.hooks if hasattr(acts, "hooks") else acts.keys()))
    train, val, test = split_indices(
        labels_t.tolist(), groups, split, test_fraction, val_fraction, seed
    )
    for name, rows in (("training", train), ("validation", val), ("test", test)):
        if len(set(labels_t[rows].tolist())) < 2:
            raise InputError(
                f"the {split} split left the {name} set with {len(rows)} rows and not both labels; "
                "use more data, other fractions or another seed"
            )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    stacked = torch.stack([acts[h].float() for h in hook_names]).to(device)  # [hooks, n, d]
    if stacked.dim() != 3:
        raise InputError(
            "probes need one vector per text: cache with positions 'last', 'mean' or 'mean_after_first'"
        )
    y = labels_t.to(device)
    mean = stacked[:, train].mean(1, keepdim=True)
    std = stacked[:, train].std(1, keepdim=True) + 1e-6
    z = (stacked - mean) / std  # [hooks, n, d], standardised on the training rows

    # The L2 grid: fit on train, score on validation, keep the best strength per hook (ties: stronger).
    best_val = torch.full((len(hook_names),), -1.0)
    weight = torch.zeros(len(hook_names), stacked.shape[-1])
    bias = torch.zeros(len(hook_names))
    chosen_l2 = [0.0] * len(hook_names)
    for strength in sorted(grid, reverse=True):
        w, b = _fit_logistic(z[:, train], y[train], strength)
        val_logits = torch.einsum("hnd,hd->hn", z[:, val], w) + b[:, None]
        for i in range(len(hook_names)):
            score = auroc(val_logits[i], y[val])
            if score > best_val[i]:
                best_val[i], weight[i], bias[i] = score, w[i].cpu(), b[i].cpu()
                chosen_l2[i] = strength

    lengths = getattr(acts, "lengths", None)
    base_meta = dict(getattr(acts, "provenance", {}) or {})
    base_meta.update(meta or {})
    base_meta.update(
        labels_sha256=hashlib.sha256(json.dumps(labels_t.tolist()).encode()).hexdigest(),
        split=split,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        versions=versions(),
    )
    probes = {}
    for i, hook in enumerate(hook_names):
        zi = z[i].cpu()
        difference = zi[train][labels_t[train] == 1].mean(0) - zi[train][labels_t[train] == 0].mean(
            0
        )
        direction = difference / std[i, 0].cpu()
        direction = direction / direction.norm()
        probe = Probe(hook, weight[i], bias[i], mean[i, 0].cpu(), std[i, 0].cpu(), direction)
        logits = probe.logits(stacked[i].cpu())
        projected = stacked[i].cpu() @ direction
        test_probs = torch.sigmoid(logits[test])
        probe.metrics = {
            "l2": chosen_l2[i],
            "val_auroc": float(best_val[i]),
            "test_auroc": auroc(logits[test], labels_t[test]),
            "test_accuracy": float(((logits[test] > 0).long() == labels_t[test]).float().mean()),
            "mean_difference_val_auroc": auroc(projected[val], labels_t[val]),
            "mean_difference_test_auroc": auroc(projected[test], labels_t[test]),
            "test_ece": calibration(test_probs.numpy(), labels_t[test].numpy()).ece,
            "length_spearman": _length_spearman(logits[train], lengths, train),
            "mean_difference_length_spearman": _length_spearman(projected[train], lengths, train),
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "split": split,
            "seed": seed,
        }
        probe.meta = {**base_meta, "hook": hook, "width": probe.width}
        probes[hook] = probe
    chosen = max(hook_names, key=lambda h: (probes[h].metrics["val_auroc"], -hook_names.index(h)))
    probe = probes[chosen]
    logits = probe.logits(stacked[hook_names.index(chosen)].cpu())
    probe.metrics["test_auroc_interval"] = auroc_interval(
        logits[test].numpy(), labels_t[test].numpy(), seed=seed, n_boot=n_boot
    ).to_dict()
    probe.metrics["calibration"] = calibration(
        torch.sigmoid(logits[test]).numpy(), labels_t[test].numpy()
    ).to_dict()
    probe.metrics["chosen_on"] = "validation AUROC over hooks and the L2 grid " + str(grid)
    return ProbeSweep(probes, split, len(train), len(val), len(test), chosen, grid)


def _length_spearman(scores: torch.Tensor, lengths, rows: list[int]) -> float | None:
    """Spearman correlation of scores with text length (tokens) over `rows`; None without lengths."""
    if lengths is None:
        return None
    # lazy: scipy takes ~0.6 s to import; the command line starts without it
    from scipy.stats import spearmanr

    length = torch.as_tensor(lengths)[rows].double().numpy()
    if len(set(length.tolist())) < 2:
        return None
    return float(spearmanr(scores.double().numpy(), length).statistic)


def train_probes_on_rows(
    model,
    rows,
    data: str,
    hooks: str = "resid_post",
    positions: str = "mean_after_first",
    split: str = "random",
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    l2: float | Sequence[float] = L2_GRID,
    seed: int = 0,
    progress: bool = True,
    *,
    prepend_bos: bool | None = None,
):
    """Cache `hooks` over labeled rows (read_labeled / read_toxigen) and train a probe per hook.

    data: where the rows came from (recorded in each probe's meta with the data hash).
    prepend_bos: None is the bridge's default for the model; the value used is recorded in each
    probe's meta, and applying the probe tokenises the same way.
    Returns (sweep, acts, seconds): the ProbeSweep, the activation cache (for sparse
    probes), and {"caching": s, "training": s}.
    """
    texts, labels = [r.text for r in rows], [r.label for r in rows]
    groups = [r.group for r in rows] if all(r.group for r in rows) else None
    start = time.perf_counter()
    prepend_bos = resolve_prepend_bos(model, prepend_bos)
    acts = cache_activations(
        model, texts, hooks=hooks, positions=positions, progress=progress, prepend_bos=prepend_bos
    )
    cached = time.perf_counter() - start
    meta = {
        "model": model.info.name,
        "revision": model.info.revision,
        "dtype": model.info.dtype,
        "positions": positions,
        "prepend_bos": prepend_bos,
        "data": data,
        "data_sha256": texts_hash(texts, labels),
    }
    sweep = train_probes(
        acts,
        labels,
        groups,
        split=split,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        l2=l2,
        seed=seed,
        meta=meta,
    )
    return (
        sweep,
        acts,
        {"caching": round(cached, 2), "training": round(time.perf_counter() - start - cached, 2)},
    )


def texts_hash(texts: Sequence[str], labels: Sequence[int]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def probe_scores(
    model,
    probe: Probe,
    texts: Sequence[str],
    positions: str | None = None,
    batch_size: int = 8,
    allow_other_positions: bool = False,
) -> Float[torch.Tensor, " text"]:
    """P(label = 1) for each text, reading the probe's hook at the positions it was trained on.

    Refuses (InputError) a probe trained on another model, another hook width, or (unless
    `allow_other_positions`) other positions.
    """
    positions = check_probe_fits(model, probe, positions, allow_other_positions)
    acts = cache_activations(
        model,
        list(texts),
        hooks=probe.hook,
        positions=positions,
        batch_size=batch_size,
        progress=False,
        prepend_bos=trained_prepend_bos(probe),
    )[probe.hook]
    return probe.predict_proba(acts).cpu()


def trained_prepend_bos(probe: Probe) -> bool:
    """How the probe's training texts were tokenised: its meta's `prepend_bos`, or False for a
    probe saved before it was recorded (the library then never prepended a start token)."""
    return bool(probe.meta.get("prepend_bos", False))


def token_scores(model, probe: Probe, text: str) -> tuple[list[str], Float[torch.Tensor, " pos"]]:
    """Per-token P(label = 1) along `text` (the probe applied at every position), for highlighting.

    Every position is read whatever the probe was trained on: a picture of where the
    signal sits, not a validated score (the probe's own positions give that).
    """
    check_probe_fits(model, probe, "all", allow_other_positions=True)
    prepend_bos = trained_prepend_bos(probe)
    cache = cache_activations(
        model, [text], hooks=probe.hook, positions="all", progress=False, prepend_bos=prepend_bos
    )
    n = int(cache.lengths[0])
    return str_tokens(model, to_tokens(model, text, prepend_bos)), probe.predict_proba(
        cache[probe.hook][0, :n]
    ).cpu()
