"""Edge attribution (EAP, EAP-IG): how much of the metric's change flows along each edge between components.

Writers put something into the residual stream: the embedding, every attention
head (its output z times its slice of W_O) and every MLP. Readers take the residual
stream in: every head's query, key and value input, every MLP's input, and the
logits. The edge writer -> reader is scored as in Syed et al. 2023 and Hanna et al.
2024, in the denoising direction of `workbench.interp.attribution`:

    score(u -> v) = (out_u(clean) - out_u(corrupt)) . dM/d(input of v)

summed over positions, averaged over pairs, normalised by the clean-minus-corrupted
metric like every patching result. The gradient is taken at the corrupted run
(``steps=1``: EAP) or averaged over `steps` points on the line from the corrupted to
the clean input embeddings (EAP-IG; `workbench.interp.attribution`'s integration).

Each reader's own gradient comes from the hook points TransformerLens exposes: the
per-head query, key and value inputs (``hook_q_input`` ..., with split inputs on),
and for an MLP the residual gradient that does not leave through the layer's heads or
its skip connection: dM/d resid_mid - dM/d resid_post where the MLP reads resid_mid,
and dM/d resid_pre - dM/d resid_post - (the heads' input gradients) where attention
and MLP read the same input (Phi). Edges out of a writer then add up to its node
attribution (the gradient after a writer is the sum of what its readers take), which
a test checks; TransformerLens 4.3's own edge EAP refuses both models we ship (Phi's
parallel block has no MLP-input hook; SmolLM2 has grouped-query attention), so this
is ours, checked against our node attribution instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float

from ..core.display import Tabled
from ..model.hooks import has_hook_point
from ..model.run import record, split_qkv_inputs
from .attribution import check_method, integrated_gradients
from .lens import output_weights
from .patching import Metric, check_memory, prepare


@dataclass(frozen=True)
class EdgeResult(Tabled):
    """scores: Float[Tensor, "readers writers"], normalised (0 = corrupted, 1 = clean), NaN where the writer
    is not upstream of the reader. writers: "embed", "L3H2", "MLP3"; readers: "L3H2.q" (.k, .v; "L3KV1.k" for
    a key/value group under grouped-query attention), "MLP3.in", "logits"."""

    method: str
    steps: int
    writers: list[str]
    readers: list[str]
    scores: Float[torch.Tensor, "readers writers"]
    clean_metric: float
    corrupt_metric: float

    def top(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The k edges with the largest |score|: (writer, reader, score)."""
        flat = torch.nan_to_num(self.scores, nan=0.0).flatten()
        order = torch.argsort(flat.abs(), descending=True)[:k].tolist()
        n = len(self.writers)
        return [(self.writers[i % n], self.readers[i // n], float(flat[i])) for i in order]

    def writer_totals(self) -> dict[str, float]:
        """Each writer's edges summed over its readers: its node attribution."""
        totals = torch.nan_to_num(self.scores, nan=0.0).sum(0)
        return dict(zip(self.writers, totals.tolist()))

    def to_frame(self):
        """One row per edge that exists: writer, reader, score."""
        rows = [
            {"writer": w, "reader": r, "score": float(self.scores[i, j])}
            for i, r in enumerate(self.readers)
            for j, w in enumerate(self.writers)
            if not torch.isnan(self.scores[i, j])
        ]
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        writer, reader, score = self.top(1)[0]
        return (
            f"EdgeResult({self.method}, {len(self.writers)} writers x {len(self.readers)} readers; "
            f"largest |score| {score:+.3f} on {writer} -> {reader})"
        )


def edge_attribution(
    model,
    clean,
    corrupt,
    answer=None,
    other=None,
    steps: int = 5,
    metric: Metric | None = None,
    *,
    prepend_bos: bool | None = None,
) -> EdgeResult:
    """Score every edge (see the module docstring); steps=1 is EAP, more is EAP-IG.

    clean, corrupt, answer, other, metric, prepend_bos: as `workbench.interp.patching.activation_patch`.
    """
    check_method("eap-ig", steps)
    task = prepare(model, clean, corrupt, answer, other, metric, prepend_bos=prepend_bos)
    check_memory(model, task, exact=False, attribution=True)
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    sequential = has_hook_point(model, "blocks.0.hook_resid_mid")
    writer_names = (
        {"hook_embed"}
        | {f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)}
        | {f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)}
    )
    reader_names = {
        f"blocks.{layer}.hook_{x}" for layer in range(n_layers) for x in ("resid_pre", "resid_post")
    }
    reader_names |= {
        f"blocks.{layer}.attn.hook_{x}_input" for layer in range(n_layers) for x in "qkv"
    }
    if sequential:
        reader_names |= {f"blocks.{layer}.hook_resid_mid" for layer in range(n_layers)}
    with split_qkv_inputs(model):
        clean_acts = record(model, task.clean_ids, writer_names)
        corrupt_acts, grads = integrated_gradients(
            model, task, reader_names, steps, keep=writer_names
        )

    # Writers' changes in the residual stream: [writers, pairs, pos, d_model].
    deltas, writers = [(clean_acts["hook_embed"] - corrupt_acts["hook_embed"]).double()], ["embed"]
    layer_of = [-1]
    for layer in range(n_layers):
        weight, _ = output_weights(model, layer)
        z = (
            clean_acts[f"blocks.{layer}.attn.hook_z"] - corrupt_acts[f"blocks.{layer}.attn.hook_z"]
        ).double()
        deltas += list(torch.einsum("pshe,hed->hpsd", z, weight.detach().double()))
        writers += [f"L{layer}H{h}" for h in range(n_heads)]
        layer_of += [layer] * n_heads
        name = f"blocks.{layer}.hook_mlp_out"
        deltas.append((clean_acts[name] - corrupt_acts[name]).double())
        writers.append(f"MLP{layer}")
        layer_of.append(layer + 0.5)  # after the layer's heads
    delta = torch.stack(deltas)
    layer_of = torch.tensor(layer_of, dtype=torch.float64)

    readers, rows = [], []
    for layer in range(n_layers):
        head_grads = 0
        for x in "qkv":
            g = grads[
                f"blocks.{layer}.attn.hook_{x}_input"
            ].double()  # [pairs, pos, heads (or kv heads), d_model]
            head_grads = head_grads + g.sum(2)
            # grouped-query attention: one key/value per group
            unit = "H" if g.shape[2] == n_heads else "KV"
            for h in range(g.shape[2]):
                readers.append(f"L{layer}{unit}{h}.{x}")
                rows.append(_scores(delta, g[:, :, h], layer_of < layer))
        post = grads[f"blocks.{layer}.hook_resid_post"].double()
        if sequential:
            mlp = grads[f"blocks.{layer}.hook_resid_mid"].double() - post
            upstream = layer_of < layer + 0.5  # this layer's heads write before the MLP reads
        else:
            mlp = grads[f"blocks.{layer}.hook_resid_pre"].double() - post - head_grads
            upstream = layer_of < layer
        readers.append(f"MLP{layer}.in")
        rows.append(_scores(delta, mlp, upstream))
    readers.append("logits")
    rows.append(
        _scores(
            delta,
            grads[f"blocks.{n_layers - 1}.hook_resid_post"].double(),
            torch.ones_like(layer_of, dtype=torch.bool),
        )
    )
    scores = torch.stack(rows) / (task.clean_metric - task.corrupt_metric)
    return EdgeResult(
        "eap-ig" if steps > 1 else "eap",
        steps,
        writers,
        readers,
        scores.float(),
        task.clean_metric,
        task.corrupt_metric,
    )


def _scores(delta: torch.Tensor, grad: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """Float64[Tensor, "writers"]: each writer's change dotted with one reader's gradient, summed over positions,
    averaged over pairs; NaN for writers that are not upstream of the reader."""
    values = torch.einsum("wpsd,psd->w", delta, grad) / grad.shape[0]
    return torch.where(upstream, values, torch.full_like(values, float("nan")))
