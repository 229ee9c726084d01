"""An SAE's latents as a safety tool on ToxiGen: sparse against dense probes, and the latents
that tell hateful statements from neutral ones.

    rows = read_toxigen("../shared/data/toxigen")
    texts = text_features(model, sae, [r.text for r in rows])      # per-text means of latents and acts
    table = sparse_vs_dense(texts, rows)          # test AUROC of probes on the top-k latents vs dense
    found = toxicity_features(texts, rows)        # latents chosen on train, their gap on test

Both use the same group split (whole target groups held out: `interp.splits.split_indices`, test
25%, validation 20%). A text is the mean over its tokens (the start token left out, as in
training) of the SAE's latents, or of the raw activations at the SAE's hook for the dense probe.
Sparse probes follow Kantamneni et al. (2025): the k latents with the largest class-mean
difference on the training split, then a logistic probe on them; every probe's L2 strength is
chosen on validation from the same grid, and test AUROC has a stratified bootstrap interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core import stats
from ..core.display import Tabled
from ..core.errors import InputError
from ..core.progress import progress_bar
from ..interp.sae import SAE
from ..interp.sae_eval import check_sae_fits
from ..interp.splits import split_indices
from ..model.run import StopForward, forward
from ..model.tokens import tokenize_texts

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried on validation


@dataclass
class TextFeatures:
    """Per-text means: latents [n, d_sae] and dense activations [n, d_in] at the SAE's hook."""

    latents: torch.Tensor
    dense: torch.Tensor
    hook: str


@torch.no_grad()
def text_features(
    model, sae: SAE, texts: list[str], batch_size: int = 16, progress: bool = True
) -> TextFeatures:
    """Mean SAE latents and mean activations of each text (positions after the first)."""
    check_sae_fits(model, sae)
    ids = tokenize_texts(model, list(texts))
    pad = model.tokenizer.pad_token_id or 0
    latents, dense = [], []
    bar = progress_bar(len(ids), "encoding texts", "text", progress)
    for first in range(0, len(ids), batch_size):
        batch = ids[first : first + batch_size]
        width = max(len(t) for t in batch)
        tokens = torch.tensor([t + [pad] * (width - len(t)) for t in batch])
        lengths = torch.tensor([len(t) for t in batch])
        kept = {}

        def keep(activation, _hook):
            kept["x"] = activation.detach().float()
            raise StopForward

        forward(
            model,
            tokens,
            fwd_hooks=[(sae.cfg.hook_name, keep)],
            attention_mask=(torch.arange(width)[None] < lengths[:, None]).long(),
        )
        x = kept["x"]
        positions = torch.arange(width)[None]
        mask = (positions < lengths[:, None]) & ((positions >= 1) | (lengths[:, None] == 1))
        weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1)
        latents.append((sae.encode(x) * weights).sum(1))
        dense.append((x * weights).sum(1))
        bar.update(len(batch))
    bar.close()
    return TextFeatures(torch.cat(latents), torch.cat(dense), sae.cfg.hook_name)


@dataclass
class ProbeComparison(Tabled):
    """Test AUROC of the dense probe and of probes on the top-k SAE latents, one row each."""

    rows: list
    split: dict

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "probe": r["probe"],
                    "k": r["k"],
                    "val AUROC": r["val_auroc"],
                    "test AUROC": r["test_auroc"].value,
                    "low": r["test_auroc"].low,
                    "high": r["test_auroc"].high,
                    "latents": r["latents"][:8],
                }
                for r in self.rows
            ]
        )

    def __repr__(self) -> str:
        cells = ", ".join(
            f"{r['probe']}{'' if r['k'] is None else ' k=' + str(r['k'])} {r['test_auroc'].short()}"
            for r in self.rows
        )
        return f"ProbeComparison(test AUROC, n = {self.split['n_test']} held-out texts: {cells})"


def _split(rows) -> tuple[list[int], list[int], list[int]]:
    labels = [r.label for r in rows]
    groups = [r.group for r in rows]
    if set(labels) != {0, 1}:
        raise InputError("the texts need both labels (0 neutral, 1 hateful)")
    return split_indices(labels, groups, "group", 0.25, 0.2, 0)


def _train_gap(latents: np.ndarray, labels: np.ndarray, train: list[int]) -> np.ndarray:
    """Each latent's mean over hateful minus over neutral training texts [d_sae]."""
    rows, classes = latents[train], labels[train]
    return rows[classes == 1].mean(0) - rows[classes == 0].mean(0)


def _fit(features: np.ndarray, labels: np.ndarray, train, val):
    """Standardised logistic probe, its L2 strength chosen on validation: (model, scaler, val AUROC)."""
    # lazy: scikit-learn takes a second to import
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[train])
    best = None
    for c in C_GRID:
        probe = LogisticRegression(C=c, max_iter=2000).fit(
            scaler.transform(features[train]), labels[train]
        )
        score = stats.auroc(probe.decision_function(scaler.transform(features[val])), labels[val])
        if best is None or score > best[2]:
            best = (probe, scaler, score)
    return best


def sparse_vs_dense(features: TextFeatures, rows, ks=(1, 5, 20), seed: int = 0) -> ProbeComparison:
    """Dense probe vs probes on the top-k latents (chosen on train), scored on held-out groups."""
    train, val, test = _split(rows)
    labels = np.array([r.label for r in rows])
    latents = features.latents.double().numpy()
    dense = features.dense.double().numpy()
    gap = _train_gap(latents, labels, train)
    order = np.argsort(-np.abs(gap))
    results = []
    for name, k, columns in [("dense", None, None)] + [("SAE latents", k, order[:k]) for k in ks]:
        x = dense if columns is None else latents[:, columns]
        probe, scaler, val_auroc = _fit(x, labels, train, val)
        scores = probe.decision_function(scaler.transform(x[test]))
        results.append(
            {
                "probe": name,
                "k": k,
                "val_auroc": val_auroc,
                "test_auroc": stats.auroc_interval(scores, labels[test], seed=seed),
                "latents": [] if columns is None else [int(c) for c in columns],
            }
        )
    split = {
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "method": "group split, seed 0",
        "test_groups": sorted({rows[i].group for i in test}),
    }
    return ProbeComparison(results, split)


@dataclass
class ToxicityFeatures(Tabled):
    """Latents whose mean activation differs most between hateful and neutral texts: chosen on the
    training split, each gap (hateful minus neutral) measured on the held-out test split."""

    rows: list
    split: dict

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "latent": r["latent"],
                    "train gap": r["train_gap"],
                    "test gap": r["test_gap"].value,
                    "low": r["test_gap"].low,
                    "high": r["test_gap"].high,
                    "mean hateful (test)": r["mean_hateful"],
                    "mean neutral (test)": r["mean_neutral"],
                }
                for r in self.rows
            ]
        )

    def __repr__(self) -> str:
        top = ", ".join(f"{r['latent']} {r['test_gap'].short(2)}" for r in self.rows[:3])
        return f"ToxicityFeatures({len(self.rows)} latents, test gap hateful - neutral: {top})"


def toxicity_features(
    features: TextFeatures, rows, top: int = 10, seed: int = 0
) -> ToxicityFeatures:
    """The `top` latents most raised by hateful texts on train, with their test gap and interval."""
    train, _, test = _split(rows)
    labels = np.array([r.label for r in rows])
    latents = features.latents.double().numpy()
    gap = _train_gap(latents, labels, train)
    chosen = np.argsort(-gap)[:top]
    hateful = [i for i in test if labels[i] == 1]
    neutral = [i for i in test if labels[i] == 0]
    found = []
    for latent in chosen.tolist():
        found.append(
            {
                "latent": latent,
                "train_gap": float(gap[latent]),
                "test_gap": stats.difference_of_means(
                    latents[hateful, latent], latents[neutral, latent], seed=seed, unit="texts"
                ),
                "mean_hateful": float(latents[hateful, latent].mean()),
                "mean_neutral": float(latents[neutral, latent].mean()),
            }
        )
    return ToxicityFeatures(found, {"n_train": len(train), "n_test": len(test)})
