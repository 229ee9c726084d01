"""k-sparse probes: how much of a concept a handful of coordinates carry, with chance controls.

    table = sparse_probes(cache, labels, ks=(1, 4, 16, 64))   # TransformerLens' leakage-safe sweep
    table.to_frame()       # per hook and k: held-out AUROC, accuracy, random-feature and shuffled-label controls

Beside the dense probes of `workbench.interp.probes`: features are chosen on the training split
only, so the held-out numbers carry no selection leakage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from ..core.display import Tabled
from ..core.errors import InputError


@dataclass
class SparseProbeTable(Tabled):
    """k-sparse probes per hook and sparsity k, from TransformerLens' leakage-safe sparse probing.

    rows: one dict per (hook, k) with held-out "auroc" and "accuracy", split sizes, the
    selected feature indices ("features", best first), and the mean held-out AUROC of
    the controls ("random_coordinate_auroc": k random features; "label_shuffle_auroc":
    training labels shuffled), which show how much a k-feature probe gets by chance.
    """

    rows: list[dict]
    split: str

    def __repr__(self) -> str:
        if not self.rows:
            return f"SparseProbeTable({self.split} split, no rows)"
        best = max(self.rows, key=lambda r: r["auroc"])
        return (
            f"SparseProbeTable({len(self.rows)} (hook, k) rows, {self.split} split; best held-out "
            f"AUROC {best['auroc']:.3f} at k {best['k']} on {best['hook']})"
        )

    def to_frame(self):
        return pd.DataFrame(self.rows)


def sparse_probes(
    acts: dict[str, torch.Tensor] | object,
    labels: Sequence[int],
    groups: Sequence[str] | None = None,
    split: str = "random",
    ks: Sequence[int] = (1, 4, 16, 64),
    test_fraction: float = 0.25,
    seed: int = 0,
    hooks: Sequence[str] | None = None,
    n_controls: int = 3,
) -> SparseProbeTable:
    """k-sparse logistic probes on each hook via `transformer_lens.tools.analysis.sparse_probing`.

    Features are chosen on the training split only (by class-mean difference), so the
    held-out metrics carry no selection leakage. split "group" holds whole groups out
    (TransformerLens' grouped split: each class must appear in at least two groups).
    acts: as for `train_probes` (one vector per text). Runs on CPU in float64.
    """
    # lazy: TransformerLens takes ~2 s to import; only model work needs it
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
            raise InputError(
                "probes need one vector per text: "
                "cache with positions 'last', 'mean' or 'mean_after_first'"
            )
        usable = sorted(k for k in set(ks) if 0 < k <= features.shape[1])
        try:
            sweep = sweep_sparse_probe(
                features,
                labels_t,
                ks=usable,
                test_fraction=test_fraction,
                groups=group_ids,
                preprocess="standardize",
                n_random_subsets=n_controls,
                n_label_shuffles=n_controls,
                seed=seed,
            )
        except ValueError as error:
            raise InputError(f"sparse probing on {hook}: {error}") from None
        for k, result, random_control, shuffle_control in zip(
            sweep.ks, sweep.results, sweep.random_coordinate_controls, sweep.label_shuffle_controls
        ):
            rows.append(
                {
                    "hook": hook,
                    "k": k,
                    "auroc": result.metrics.roc_auc,
                    "accuracy": result.metrics.accuracy,
                    "random_coordinate_auroc": _mean_or_nan(random_control.roc_auc),
                    "label_shuffle_auroc": _mean_or_nan(shuffle_control.roc_auc),
                    "n_train": len(result.train_indices),
                    "n_test": len(result.test_indices),
                    "features": result.selected_features[:8].tolist(),
                    "split": split,
                    "seed": seed,
                }
            )
    return SparseProbeTable(rows, split)


def _mean_or_nan(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else float("nan")
