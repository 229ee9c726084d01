"""How good an SAE is, measured like SAEBench's core metrics, through our own hooks.

    result = evaluate_sae(model, sae, read_texts("wikitext-2-raw/test.txt"), max_windows=200)
    result.to_frame()          # metric, value, 95% interval, method, n

Held-out texts are cut into windows of `context` tokens (as in training; `chunk_token_ids`).
Each window runs three times: clean, with the SAE's reconstruction spliced in at its hook
(a transcoder: its prediction of `hook_name_out` from `hook_name`), and with that activation
zero-ablated. The first position (the start token) is left as it is in every pass, as in
training, and is not counted; cross-entropy is over the next-token predictions from positions 1
to the end.

- explained variance = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 over all counted tokens
  (FVU = 1 - that), cosine similarity and L2 ratio |x_hat| / |x| (means over tokens);
- L0: active latents per token; dead: latents never active on these tokens; dense: active on
  more than 10% of them;
- CE-loss recovered = (CE zero-ablated - CE spliced) / (CE zero-ablated - CE clean);
- KL(clean || spliced) per token.
Intervals: bootstrap over windows (texts), as ratios of sums (`workbench.core.stats.ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from ..core import stats
from ..core.datasets import as_records
from ..core.display import Tabled
from ..core.errors import InputError
from ..core.progress import progress_bar
from ..model.cache_plan import chunk_token_ids
from ..model.hooks import hook_table
from ..model.run import forward
from .sae import SAE

DENSE_SHARE = 0.10  # a latent active on more than this share of tokens counts as dense


@dataclass
class SAEEvaluation(Tabled):
    """SAEBench-style core metrics of one SAE on held-out text (see the module docstring).

    estimates: metric name -> `stats.Estimate` (value, interval, n, method);
    values: the metrics without an interval (L0, dead and dense shares, CE of each pass, sizes);
    firing: tokens on which each latent was active [d_sae].
    """

    sae: str
    hook: str
    estimates: dict
    values: dict
    firing: torch.Tensor = field(repr=False)

    def __getitem__(self, metric: str) -> float:
        if metric in self.estimates:
            return self.estimates[metric].value
        return self.values[metric]

    def to_frame(self) -> pd.DataFrame:
        rows = [
            {
                "metric": m,
                "value": e.value,
                "low": e.low,
                "high": e.high,
                "n": e.n,
                "method": e.method,
            }
            for m, e in self.estimates.items()
        ]
        rows += [
            {
                "metric": m,
                "value": v,
                "low": None,
                "high": None,
                "n": self.values["n_tokens"],
                "method": "over tokens",
            }
            for m, v in self.values.items()
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {
            "sae": self.sae,
            "hook": self.hook,
            "estimates": {m: e.to_dict() for m, e in self.estimates.items()},
            "values": self.values,
        }

    def __repr__(self) -> str:
        e = self.estimates
        return (
            f"SAEEvaluation({self.sae} at {self.hook}: explained variance "
            f"{e['explained_variance'].short()}, CE-loss recovered {e['ce_loss_recovered'].short()}, "
            f"L0 {self.values['l0']:.1f}, dead {self.values['dead_share']:.1%}, "
            f"n = {self.values['n_texts']} windows)"
        )


def check_sae_fits(model, sae: SAE) -> None:
    """One clear error when `sae` was made for another model or reads a hook this model lacks."""
    name = model.info.name
    if sae.cfg.model_name and sae.cfg.model_name != name:
        raise InputError(f"this SAE was trained on {sae.cfg.model_name!r}, not {name!r}")
    table = hook_table(model)
    for hook, width in ((sae.cfg.hook_name, sae.cfg.d_in), (sae.cfg.hook_name_out, sae.cfg.d_out)):
        if hook is None:
            continue
        if hook not in table:
            raise InputError(f"this SAE reads hook {hook!r}, which {name} does not have")
        if table[hook].shape[-1] != width:
            raise InputError(
                f"this SAE has width {width} at {hook}, but {name}'s activations there are "
                f"{table[hook].shape[-1]} wide"
            )


def spliced_hooks(sae: SAE, replace: str = "sae") -> list:
    """Hook functions that splice `sae` into a forward pass (every position but the first):
    replace "sae" puts its reconstruction in place of the activation, "zero" zeros it."""
    kept: dict[str, torch.Tensor] = {}
    cfg = sae.cfg

    def splice(activation, _hook):
        source = kept.pop("in", activation)
        new = (
            torch.zeros_like(activation) if replace == "zero" else sae(source).to(activation.dtype)
        )
        out = activation.clone()
        out[:, 1:] = new[:, 1:]
        return out

    if cfg.is_transcoder:
        return [
            (cfg.hook_name, lambda a, _h: kept.__setitem__("in", a)),
            (cfg.hook_name_out, splice),
        ]
    return [(cfg.hook_name, splice)]


@torch.no_grad()
def evaluate_sae(
    model,
    sae: SAE,
    texts,
    context: int = 128,
    max_windows: int | None = 200,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> SAEEvaluation:
    """SAEBench-style core metrics of `sae` on `texts` (see the module docstring)."""
    check_sae_fits(model, sae)
    windows = chunk_token_ids(model, as_records(texts), context, max_chunks=max_windows)
    cfg = sae.cfg
    per_window = {k: [] for k in ("err", "sq", "sum", "n", "ce_clean", "ce_sae", "ce_zero", "kl")}
    firing = torch.zeros(cfg.d_sae, dtype=torch.long)
    l0_total, cos_total, ratio_total = 0.0, 0.0, 0.0
    bar = progress_bar(len(windows), "evaluating SAE", "window", progress)
    for first in range(0, len(windows), batch_size):
        ids = torch.tensor(windows[first : first + batch_size])
        kept: dict[str, torch.Tensor] = {}
        keep = [(cfg.hook_name, lambda a, _h: kept.__setitem__("x", a.detach().float()))]
        if cfg.is_transcoder:
            keep.append(
                (cfg.hook_name_out, lambda a, _h: kept.__setitem__("y", a.detach().float()))
            )
        clean = forward(model, ids, fwd_hooks=keep).float()
        x = kept["x"][:, 1:]
        y = kept.get("y", kept["x"])[:, 1:]
        z = sae.encode(x)
        y_hat = sae.decode(z, x)
        spliced = forward(model, ids, fwd_hooks=spliced_hooks(sae)).float()
        zeroed = forward(model, ids, fwd_hooks=spliced_hooks(sae, "zero")).float()
        active = z > 0
        firing += active.reshape(-1, cfg.d_sae).sum(0)
        l0_total += float(active.sum())
        cos_total += float(F.cosine_similarity(y_hat, y, dim=-1).sum())
        ratio_total += float((y_hat.norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-12)).sum())
        per_window["err"] += (y - y_hat).pow(2).sum((1, 2)).tolist()
        per_window["sq"] += y.pow(2).sum((1, 2)).tolist()
        per_window["sum"] += list(y.sum(1))
        per_window["n"] += [y.shape[1]] * len(ids)
        targets = ids[:, 2:]
        for name, logits in (("ce_clean", clean), ("ce_sae", spliced), ("ce_zero", zeroed)):
            per_window[name] += _next_token_ce(logits[:, 1:-1], targets).sum(1).tolist()
        clean_log = F.log_softmax(clean[:, 1:-1], -1)
        kl = (clean_log.exp() * (clean_log - F.log_softmax(spliced[:, 1:-1], -1))).sum(-1)
        per_window["kl"] += kl.sum(1).tolist()
        bar.update(len(ids))
    bar.close()
    return _summarise(sae, per_window, firing, l0_total, cos_total, ratio_total, seed)


def _next_token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [batch, pos] of each next token."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def _summarise(sae, w, firing, l0_total, cos_total, ratio_total, seed) -> SAEEvaluation:
    n = torch.tensor(w["n"], dtype=torch.float64)
    n_tokens = int(n.sum())
    mean = torch.stack(w["sum"]).double().sum(0) / n_tokens
    sums = torch.stack(w["sum"]).double()
    sq = torch.tensor(w["sq"], dtype=torch.float64)
    # each window's squared distance to the overall mean: sum|x|^2 - 2 mean . sum x + n |mean|^2
    variance = (sq - 2 * sums @ mean + n * mean.pow(2).sum()).tolist()
    fvu = stats.ratio(w["err"], variance, seed=seed, unit="windows")
    explained = stats.Estimate(
        1 - fvu.value,
        None if fvu.low is None else 1 - fvu.high,
        None if fvu.high is None else 1 - fvu.low,
        fvu.n,
        fvu.method.replace("ratio of sums", "1 - ratio of sums"),
        fvu.note,
    )
    ce = {
        name: torch.tensor(w[name], dtype=torch.float64)
        for name in ("ce_clean", "ce_sae", "ce_zero")
    }
    predictions = n - 1  # next-token predictions per window (the last position predicts nothing)
    recovered = stats.ratio(
        (ce["ce_zero"] - ce["ce_sae"]).tolist(),
        (ce["ce_zero"] - ce["ce_clean"]).tolist(),
        seed=seed,
        unit="windows",
    )
    kl = stats.ratio(w["kl"], predictions.tolist(), seed=seed, unit="windows")
    share = firing.double() / n_tokens
    total_predictions = float(predictions.sum())
    values = {
        "l0": l0_total / n_tokens,
        "dead_share": float((firing == 0).double().mean()),
        "dense_share": float((share > DENSE_SHARE).double().mean()),
        "cosine_similarity": cos_total / n_tokens,
        "l2_ratio": ratio_total / n_tokens,
        "ce_clean": float(ce["ce_clean"].sum()) / total_predictions,
        "ce_sae": float(ce["ce_sae"].sum()) / total_predictions,
        "ce_zero": float(ce["ce_zero"].sum()) / total_predictions,
        "n_texts": len(w["n"]),
        "n_tokens": n_tokens,
    }
    estimates = {
        "explained_variance": explained,
        "fvu": fvu,
        "ce_loss_recovered": recovered,
        "kl_div": kl,
    }
    name = f"{sae.cfg.architecture} k={sae.cfg.k} width={sae.cfg.d_sae}"
    hook = sae.cfg.hook_name + (f" -> {sae.cfg.hook_name_out}" if sae.cfg.is_transcoder else "")
    return SAEEvaluation(name, hook, estimates, values, firing)
