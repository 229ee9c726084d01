"""Reading an SAE's latents, offline, like a Neuronpedia feature page.

    index = index_features(model, sae, texts, max_windows=400)   # one pass over a corpus
    card = feature_card(model, sae, index, latent=1234)            # one latent's page
    card.to_frame()      # its top-activating contexts; card.promoted / card.suppressed: logit effects
    search_features(model, sae, index, token=" war")               # latents for a token
    search_features(model, sae, index, text="The army marched")    # latents active on a text

`FeatureIndex` keeps, for every token of the corpus windows (the start token left out, as in
training), its active latents and their activations (the k largest; a batchtopk SAE's largest
2k), so any latent's card is read from it without running the model again. A card holds the
latent's activation density (share of tokens where it is active), its top windows with each
token's activation, the histogram of its non-zero activations, and its decoder direction's
direct effect on the logits (W_dec[latent] @ W_U, no final norm: Neuronpedia's convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..core.datasets import as_records
from ..core.display import Tabled
from ..core.errors import InputError
from ..core.progress import progress_bar
from ..core.storage import write_atomically
from ..model.cache_plan import chunk_token_ids
from ..model.run import StopForward, forward
from ..model.tokens import str_tokens, to_tokens
from .sae import SAE
from .sae_eval import check_sae_fits


@dataclass
class FeatureIndex:
    """Every window's active latents, token by token.

    token_ids [n_windows, context]; values, latents [n_windows, context - 1, kept] (float32,
    int32; position 0 of each window, the start token, is not encoded; zeros are inactive).
    """

    token_ids: torch.Tensor
    values: torch.Tensor
    latents: torch.Tensor
    d_sae: int
    hook: str

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[0] * self.values.shape[1])

    def activations(self, latent: int) -> torch.Tensor:
        """[n_windows, context - 1] activation of `latent` at every token (0 where inactive)."""
        self.check_latent(latent)
        hit = (self.latents == latent) & (self.values > 0)
        return (self.values * hit).sum(-1)

    def density(self) -> torch.Tensor:
        """[d_sae] share of tokens on which each latent is active."""
        active = self.latents[self.values > 0].long()
        return torch.bincount(active, minlength=self.d_sae).double() / self.n_tokens

    def check_latent(self, latent: int) -> None:
        if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < self.d_sae:
            raise InputError(
                f"latent must be a whole number from 0 to {self.d_sae - 1}, not {latent!r}"
            )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "feature_index.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"token_ids": self.token_ids, "values": self.values, "latents": self.latents}
        metadata = {"d_sae": str(self.d_sae), "hook": self.hook}
        return write_atomically(path, safetensors_bytes(tensors, metadata=metadata))


def load_feature_index(folder: str | Path) -> FeatureIndex:
    path = Path(folder) / "feature_index.safetensors"
    if not path.is_file():
        raise InputError(f"{path}: no feature index here (write one with `workbench sae features`)")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = load_file(str(path))
    return FeatureIndex(
        tensors["token_ids"],
        tensors["values"],
        tensors["latents"],
        int(metadata["d_sae"]),
        metadata["hook"],
    )


@torch.no_grad()
def encode_windows(model, sae: SAE, ids: torch.Tensor) -> torch.Tensor:
    """SAE latents [batch, pos, d_sae] of windows `ids` [batch, pos] at the SAE's hook."""
    kept = {}

    def keep(activation, _hook):
        kept["x"] = activation.detach()
        raise StopForward

    forward(model, ids, fwd_hooks=[(sae.cfg.hook_name, keep)])
    return sae.encode(kept["x"].float())


@torch.no_grad()
def index_features(
    model,
    sae: SAE,
    texts,
    context: int = 64,
    max_windows: int | None = 400,
    batch_size: int = 8,
    progress: bool = True,
) -> FeatureIndex:
    """Encode every token of `texts` (cut into windows of `context` tokens) once."""
    check_sae_fits(model, sae)
    windows = torch.tensor(
        chunk_token_ids(model, as_records(texts), context, max_chunks=max_windows)
    )
    kept = sae.cfg.k if sae.cfg.architecture == "topk" else min(sae.cfg.d_sae, 2 * sae.cfg.k)
    values, latents = [], []
    bar = progress_bar(len(windows), "reading features", "window", progress)
    for first in range(0, len(windows), batch_size):
        z = encode_windows(model, sae, windows[first : first + batch_size])[:, 1:]
        top = z.topk(kept, dim=-1)
        values.append(top.values)
        latents.append(top.indices.int())
        bar.update(len(z))
    bar.close()
    return FeatureIndex(
        windows, torch.cat(values), torch.cat(latents), sae.cfg.d_sae, sae.cfg.hook_name
    )


@dataclass
class FeatureCard(Tabled):
    """One latent's page: density, top contexts, logit effects, activation histogram.

    contexts: dicts with "window", "position" (of the maximum), "max", "tokens" (the strings
    around it) and "activations" (one per token); promoted / suppressed: (token, logit effect);
    histogram: (counts, bin edges) of the non-zero activations.
    """

    latent: int
    hook: str
    density: float
    n_tokens: int
    contexts: list = field(repr=False)
    promoted: list = field(repr=False)
    suppressed: list = field(repr=False)
    histogram: tuple = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "window": c["window"],
                    "max": c["max"],
                    "text": "".join(c["tokens"]),
                    "top token": c["tokens"][c["at"]],
                }
                for c in self.contexts
            ]
        )

    def logit_frame(self) -> pd.DataFrame:
        rows = [{"token": t, "logit effect": v, "kind": "promoted"} for t, v in self.promoted]
        return pd.DataFrame(
            rows
            + [{"token": t, "logit effect": v, "kind": "suppressed"} for t, v in self.suppressed]
        )

    def __repr__(self) -> str:
        top = ", ".join(repr(t) for t, _ in self.promoted[:3])
        return (
            f"FeatureCard(latent {self.latent} at {self.hook}: density {self.density:.3%} of "
            f"{self.n_tokens} tokens, {len(self.contexts)} top contexts, promotes {top})"
        )


def logit_effects(model, sae: SAE, latent: int, top: int = 10) -> tuple[list, list]:
    """The tokens whose logits the latent's decoder direction raises and lowers most (W_dec @ W_U)."""
    unembed = model.hf_model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    effect = unembed @ sae.W_dec[latent].detach().float()
    up, down = effect.topk(top), (-effect).topk(top)
    names = lambda ids: str_tokens(model, ids)  # noqa: E731
    return (
        list(zip(names(up.indices), up.values.tolist())),
        list(zip(names(down.indices), (-down.values).tolist())),
    )


def feature_card(
    model, sae: SAE, index: FeatureIndex, latent: int, top: int = 20, around: int = 12
) -> FeatureCard:
    """`latent`'s card from `index`: its `top` windows (each cut to `around` tokens either side of
    its maximum), logit effects, density and histogram."""
    index.check_latent(latent)
    acts = index.activations(latent)  # [n_windows, context - 1]
    best, where = acts.max(dim=1)
    contexts = []
    for window in best.argsort(descending=True)[:top].tolist():
        if best[window] <= 0:
            break
        at = int(where[window]) + 1  # position in the window (position 0 was not encoded)
        lo, hi = max(1, at - around), min(index.token_ids.shape[1], at + around + 1)
        tokens = str_tokens(model, index.token_ids[window, lo:hi])
        contexts.append(
            {
                "window": window,
                "max": float(best[window]),
                "at": at - lo,
                "tokens": tokens,
                "activations": acts[window, lo - 1 : hi - 1].tolist(),
            }
        )
    nonzero = acts[acts > 0].numpy()
    histogram = np.histogram(nonzero, bins=20) if len(nonzero) else (np.zeros(0), np.zeros(0))
    promoted, suppressed = logit_effects(model, sae, latent)
    return FeatureCard(
        latent,
        index.hook,
        float((acts > 0).double().mean()),
        index.n_tokens,
        contexts,
        promoted,
        suppressed,
        (histogram[0].tolist(), histogram[1].tolist()),
    )


def search_features(
    model,
    sae: SAE,
    index: FeatureIndex,
    token: str | None = None,
    text: str | None = None,
    top: int = 10,
) -> pd.DataFrame:
    """Latents for a token (mean activation where the corpus has it, and its logit effect) or for
    a text you type (maximum activation over its tokens), best first."""
    if (token is None) == (text is None):
        raise InputError("search by a token or by a text: give exactly one")
    if text is not None:
        if not text.strip():
            raise InputError("the text to search by is empty")
        ids = to_tokens(model, text)
        z = (
            encode_windows(model, sae, ids)[0, 1:]
            if ids.shape[1] > 1
            else encode_windows(model, sae, ids)[0]
        )
        best = z.max(dim=0).values
        order = best.argsort(descending=True)[:top]
        order = order[best[order] > 0]
        return pd.DataFrame({"latent": order.tolist(), "max activation": best[order].tolist()})
    ids = [
        i for i, s in enumerate(str_tokens(model, torch.arange(model.info.d_vocab))) if s == token
    ]
    if not ids:
        raise InputError(f"{token!r} is not one token of {model.info.name}'s vocabulary")
    where = index.token_ids[:, 1:] == ids[0]
    if not where.any():
        raise InputError(f"{token!r} does not occur in the indexed texts")
    hits_values, hits_latents = index.values[where], index.latents[where].long()
    totals = torch.zeros(index.d_sae).index_add_(0, hits_latents.flatten(), hits_values.flatten())
    mean = totals / int(where.sum())
    order = mean.argsort(descending=True)[:top]
    order = order[mean[order] > 0]
    return pd.DataFrame(
        {
            "latent": order.tolist(),
            "mean activation on token": mean[order].tolist(),
            "occurrences": int(where.sum()),
        }
    )
