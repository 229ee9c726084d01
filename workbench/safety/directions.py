"""Where an intervention's direction comes from, and how large the residual stream is where it acts.

    d = direction_from_pairs(model, "probes/polite_vs_rude_pairs.jsonl", layer=9)   # CAA
    d = direction_from_probe(model, "probes/toxicity-probe")                         # a trained probe
    d = direction_from_texts(model, toxic, neutral, layer=9)                         # e.g. ToxiGen
    norms = residual_norms(model, [9], texts)     # {9: mean ||resid_post|| over tokens}

Every `Direction` is a unit vector in the residual stream after block `layer`, oriented towards
`towards` (for detoxification: towards the less toxic side), with `source` recording the file and
its sha256. Norms are measured over every token but the first of each text: many models park a
huge "attention sink" activation on the first token, which would dominate the mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float

from ..core.errors import InputError
from ..core.provenance import file_sha256
from ..interp.probes import Probe, check_probe_fits
from ..interp.sae import load_sae
from ..interp.sae_eval import check_sae_fits
from ..interp.steering import mean_difference_vector, read_pairs
from ..model.activations import cache_activations
from ..model.tokens import check_layer


@dataclass(frozen=True)
class Direction:
    """A unit vector after block `layer`. source: how it was made (kind, file, sha256, counts)."""

    vector: Float[torch.Tensor, " d_model"]
    layer: int
    towards: str
    source: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Direction(layer {self.layer}, towards {self.towards}, from {self.source.get('kind')})"
        )


def _unit(vector: torch.Tensor) -> torch.Tensor:
    vector = vector.detach().float().flatten()
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InputError("the direction is zero or not finite; use other texts or another layer")
    return vector / norm


def direction_from_pairs(model, path: str | Path, layer: int) -> Direction:
    """The mean difference positive - negative over contrast pairs (JSONL), unit length; it points
    towards the pairs' "positive" texts."""
    pairs = read_pairs(path)
    vector = mean_difference_vector(model, pairs, layer, source=str(path)).vector
    return Direction(
        _unit(vector),
        layer,
        "positive",
        {"kind": "pairs", "path": str(path), "sha256": file_sha256(path), "n_pairs": len(pairs)},
    )


def _mean_activation(model, texts: Sequence[str], layer: int) -> torch.Tensor:
    """Mean over texts of each text's mean resid_post over its tokens after the first."""
    hook = f"blocks.{layer}.hook_resid_post"
    cache = cache_activations(model, list(texts), hooks=hook, positions="all", progress=False)
    acts, lengths = cache[hook].float(), cache.lengths
    steps = torch.arange(acts.shape[1])[None, :]
    keep = (steps < lengths[:, None]) & (steps > 0)
    keep[lengths == 1, 0] = True
    return ((acts * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).mean(0)


def direction_from_texts(
    model, positive: Sequence[str], negative: Sequence[str], layer: int, source: dict | None = None
) -> Direction:
    """mean(positive texts) - mean(negative texts) at `layer`, unit length (unpaired texts, e.g.
    ToxiGen's neutral against its hateful statements); it points towards `positive`."""
    layer = check_layer(model, layer)
    if len(positive) < 2 or len(negative) < 2:
        raise InputError("a direction from texts needs at least 2 texts on each side")
    vector = _mean_activation(model, positive, layer) - _mean_activation(model, negative, layer)
    meta = {"kind": "texts", "n_positive": len(positive), "n_negative": len(negative)}
    return Direction(_unit(vector), layer, "positive", {**meta, **(source or {})})


def direction_from_probe(model, path: str | Path) -> Direction:
    """A saved probe's direction (towards its label 1, e.g. toxic) on a resid_post hook."""
    probe = Probe.load(path)
    check_probe_fits(model, probe)
    parts = probe.hook.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hook_resid_post":
        raise InputError(
            f"a probe direction must come from a blocks.L.hook_resid_post probe, not {probe.hook}",
            str(path),
        )
    return Direction(
        _unit(probe.direction),
        int(parts[1]),
        "label 1",
        {
            "kind": "probe",
            "path": str(path),
            "sha256": file_sha256(Path(path) / "probe.safetensors"),
            "hook": probe.hook,
        },
    )


def residual_norms(model, layers: Sequence[int], texts: Sequence[str]) -> dict[int, float]:
    """{layer: mean L2 norm of resid_post after block `layer`}, over every token but each text's
    first (the unit of an `add` intervention's coefficient)."""
    hooks = [f"blocks.{check_layer(model, layer)}.hook_resid_post" for layer in layers]
    cache = cache_activations(model, list(texts), hooks=hooks, positions="all", progress=False)
    lengths = cache.lengths
    norms = {}
    for layer, hook in zip(layers, hooks):
        size = cache[hook].float().norm(dim=-1)  # [batch, pos]
        steps = torch.arange(size.shape[1])[None, :]
        keep = (steps < lengths[:, None]) & (steps > 0)
        if not keep.any():
            raise InputError("the texts for the residual norm need at least two tokens each")
        norms[int(layer)] = float(size[keep].mean())
    return norms


def direction_from_latent(model, sae_path: str | Path, latent: int) -> Direction:
    """An SAE latent's decoder direction (unit length, towards the latent), at the layer of the
    SAE's residual-stream hook: a feature to steer along (`add`) or project out (`ablate`,
    `orthogonalise`). This moves the latent's direction, not exactly its activation: a TopK
    latent's own activation also depends on which other latents win."""
    sae = load_sae(sae_path)
    check_sae_fits(model, sae)
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", sae.cfg.hook_name)
    if match is None or sae.cfg.is_transcoder:
        raise InputError(
            f"an SAE latent's direction needs an SAE on a residual stream (blocks.L.hook_resid_post), "
            f"not {sae.cfg.hook_name}"
        )
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < sae.cfg.d_sae:
        raise InputError(f"latent {latent!r} is not one of this SAE's 0 to {sae.cfg.d_sae - 1}")
    source = {"kind": "sae", "path": str(sae_path), "latent": latent, "hook": sae.cfg.hook_name}
    return Direction(_unit(sae.W_dec[latent]), int(match.group(1)), f"latent {latent}", source)
