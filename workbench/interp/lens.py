"""Logit lens and direct logit attribution.

Logit lens: the residual stream after each block (and the embedding), passed
through the model's own final norm and unembedding, read as next-token
predictions. The last row is the model's own output, exactly.

Direct logit attribution (DLA): the logit difference between two answer tokens at
one position, split into what each part of the residual stream writes along the
answer direction. The final norm is linear once its scale is fixed, so with the
cached scale s (``ln_final.hook_scale``) and the norm's weight w:

    logit[a] - logit[b] = sum_c  (centre(c) / s) . (w * (W_U[:, a] - W_U[:, b]))  +  constant

over the components c of the final residual: the embedding, every attention head's
output (z_h @ W_O[h]), each layer's attention output bias and each MLP's output.
``centre`` subtracts the mean for LayerNorm and is the identity for RMSNorm; the
constant holds the norm's bias and the unembedding bias. The parts sum to the
model's own logit difference (tested to 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float

from ..core.display import Tabled, clip
from ..model.tokens import single_token_id, str_tokens, to_tokens


@dataclass(frozen=True)
class LogitLens(Tabled):
    """Predictions read off the residual stream at one position.

    layers: row labels, "embed" then "L0".."L{n-1}" (the residual after that block).
    top_tokens: per row, the `top_k` (token, probability) pairs.
    tracked: tokens whose probability is followed; probs: Float[Tensor, "row tracked"].
    """

    text: str
    tokens: list[str]
    position: int
    layers: list[str]
    top_tokens: list[list[tuple[str, float]]]
    tracked: list[str]
    probs: Float[torch.Tensor, "row tracked"]

    def __repr__(self) -> str:
        token, p = self.top_tokens[-1][0]
        return (
            f"LogitLens({clip(self.text)}, {len(self.tokens)} tokens, position {self.position}, "
            f"{len(self.layers)} rows; final layer's top {token!r} p {p:.3f})"
        )

    def to_frame(self):
        rows = []
        for i, layer in enumerate(self.layers):
            row = {
                "layer": layer,
                "top_token": self.top_tokens[i][0][0],
                "top_prob": self.top_tokens[i][0][1],
                "top_k": " | ".join(f"{t!r}:{p:.3f}" for t, p in self.top_tokens[i]),
            }
            row.update({f"p({t!r})": float(self.probs[i, j]) for j, t in enumerate(self.tracked)})
            rows.append(row)
        return pd.DataFrame(rows)


def _final_norm_and_unembed(model, resid: torch.Tensor) -> torch.Tensor:
    """The model's own final norm then unembedding (the HF modules the bridge wraps)."""
    norm = model.bridge.ln_final.original_component
    unembed = model.bridge.unembed.original_component
    return unembed(norm(resid))


def _residual_rows(model, ids: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Row labels ("embed", "L0".."L{n-1}") and the residual stream after the embedding and after
    each block for one text: Float[Tensor, "row pos d_model"] (one forward pass, no gradient)."""
    names = ["hook_embed"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.info.n_layers)
    ]
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids, names_filter=names)
    return ["embed"] + [f"L{layer}" for layer in range(model.info.n_layers)], torch.stack(
        [cache[name][0] for name in names]
    )


def logit_lens(
    model,
    text: str,
    tracked: list[str] | None = None,
    position: int = -1,
    top_k: int = 5,
    *,
    prepend_bos: bool | None = None,
) -> LogitLens:
    """Decode the residual stream after the embedding and after every block at `position`.

    prepend_bos: None is the bridge's default for the model (`workbench.model.tokens`).
    """
    ids = to_tokens(model, text, prepend_bos)
    tracked = tracked or []
    tracked_ids = [single_token_id(model, t) for t in tracked]
    labels, resid = _residual_rows(model, ids)
    with torch.no_grad():
        probs = _final_norm_and_unembed(model, resid[:, position]).float().softmax(-1)
    top = probs.topk(top_k, dim=-1)
    top_tokens = [
        [(model.tokenizer.decode([int(i)]), float(p)) for p, i in zip(values, indices)]
        for values, indices in zip(top.values, top.indices)
    ]
    chosen = probs[:, tracked_ids].cpu() if tracked_ids else torch.zeros(len(labels), 0)
    return LogitLens(text, str_tokens(model, ids), position, labels, top_tokens, tracked, chosen)


@dataclass(frozen=True)
class LensGrid(Tabled):
    """The logit lens at every position: what each layer would predict next, token by token.

    tokens: the text's tokens (columns); layers: "embed", "L0".."L{n-1}" (rows).
    top_tokens: [row][position] the most likely next token; top_logprobs: Float[Tensor, "row pos"],
    its log-probability (natural log) under the final norm and unembedding.
    """

    text: str
    tokens: list[str]
    layers: list[str]
    top_tokens: list[list[str]]
    top_logprobs: Float[torch.Tensor, "row pos"]

    @property
    def shape(self) -> torch.Size:
        return self.top_logprobs.shape

    def __repr__(self) -> str:
        return (
            f"LensGrid({clip(self.text)}, {len(self.layers)} rows x {len(self.tokens)} positions; "
            f"final layer's next token after the last: {self.top_tokens[-1][-1]!r} "
            f"(logprob {float(self.top_logprobs[-1, -1]):.2f})"
            ")"
        )

    def to_frame(self):
        """One row per (layer, position): the top next token and its log-probability."""
        return pd.DataFrame(
            [
                {
                    "layer": layer,
                    "position": p,
                    "token": self.tokens[p],
                    "top_next_token": tokens[p],
                    "logprob": float(self.top_logprobs[r, p]),
                }
                for r, (layer, tokens) in enumerate(zip(self.layers, self.top_tokens))
                for p in range(len(self.tokens))
            ]
        )


def logit_lens_grid(model, text: str, *, prepend_bos: bool | None = None) -> LensGrid:
    """The logit lens at every position of `text` (one forward pass): rows are the embedding and
    each block's residual output, read through the model's own final norm and unembedding.
    prepend_bos: None is the bridge's default for the model."""
    ids = to_tokens(model, text, prepend_bos)
    labels, resid = _residual_rows(model, ids)
    with torch.no_grad():
        logprobs = _final_norm_and_unembed(model, resid).float().log_softmax(-1)
    best = logprobs.max(-1)
    top_tokens = [[model.tokenizer.decode([int(i)]) for i in row] for row in best.indices]
    return LensGrid(text, str_tokens(model, ids), labels, top_tokens, best.values.cpu())


@dataclass(frozen=True)
class LogitAttribution(Tabled):
    """Direct logit attribution of logit[answer] - logit[other] at one position.

    components: labels ("embed", "L3H7", "L3 attn bias", "L3 mlp", "constant").
    values: Float[Tensor, "component"], summing to `logit_diff` (the model's own).
    tokens: the text's tokens as the model saw them (a start token first if one was prepended).
    """

    text: str
    answer: str
    other: str
    position: int
    components: list[str]
    values: Float[torch.Tensor, " component"]
    logit_diff: float
    tokens: list[str]

    def __repr__(self) -> str:
        top = int(self.values.abs().argmax())
        return (
            f"LogitAttribution({self.answer!r} - {self.other!r} at position {self.position} of "
            f"{len(self.tokens)} tokens: logit diff {self.logit_diff:.3f} over "
            f"{len(self.components)} components; largest {self.components[top]} "
            f"{float(self.values[top]):+.3f})"
        )

    def head_grid(self, n_layers: int, n_heads: int) -> Float[torch.Tensor, "layer head"]:
        """Float[Tensor, "layer head"] of the per-head values."""
        grid = torch.zeros(n_layers, n_heads)
        for label, value in zip(self.components, self.values.tolist()):
            if label.startswith("L") and "H" in label and " " not in label:
                layer, head = label[1:].split("H")
                grid[int(layer), int(head)] = value
        return grid

    def to_frame(self):
        rows = []
        for label, value in zip(self.components, self.values.tolist()):
            kind = (
                "head"
                if "H" in label and " " not in label
                else label.split(" ", 1)[-1]
                if label.startswith("L")
                else label
            )
            layer = int(label[1:].split("H")[0].split(" ")[0]) if label.startswith("L") else None
            rows.append({"component": label, "kind": kind, "layer": layer, "value": value})
        return pd.DataFrame(rows)


def output_weights(
    model, layer: int
) -> tuple[Float[torch.Tensor, "head d_head d_model"], Float[torch.Tensor, " d_model"] | None]:
    """W_O as Float[Tensor, "head d_head d_model"] and the output bias (or None) of one layer."""
    linear = model.bridge.blocks[layer].attn.o.original_component
    n_heads, d_head = model.info.n_heads, model.info.d_head
    weight = linear.weight.T.reshape(n_heads, d_head, -1)
    return weight, linear.bias


def direct_logit_attribution(
    model,
    text: str,
    answer: str,
    other: str,
    position: int = -1,
    *,
    prepend_bos: bool | None = None,
) -> LogitAttribution:
    """Split logit[answer] - logit[other] at `position` into per-component contributions.
    prepend_bos: None is the bridge's default for the model."""
    ids = to_tokens(model, text, prepend_bos)
    a, b = single_token_id(model, answer), single_token_id(model, other)
    n_layers = model.info.n_layers
    names = (
        ["hook_embed", "ln_final.hook_scale"]
        + [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
        + [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)]
    )
    with torch.no_grad():
        logits, cache = model.bridge.run_with_cache(ids, names_filter=names)
        unembed = model.bridge.unembed.original_component
        norm = model.bridge.ln_final.original_component
        direction = (unembed.weight[a] - unembed.weight[b]).double()  # [d_model]
        if getattr(norm, "weight", None) is not None:
            direction = direction * norm.weight.double()
        scale = cache["ln_final.hook_scale"][0, position].double()  # [1]
        centred = getattr(norm, "bias", None) is not None or type(norm).__name__ == "LayerNorm"

        def project(vectors: torch.Tensor) -> torch.Tensor:
            vectors = vectors.double()
            if centred:
                vectors = vectors - vectors.mean(-1, keepdim=True)
            return (vectors / scale) @ direction

        labels, values = ["embed"], [project(cache["hook_embed"][0, position])]
        for layer in range(n_layers):
            weight, bias = output_weights(model, layer)
            z = cache[f"blocks.{layer}.attn.hook_z"][0, position]  # [head, d_head]
            per_head = torch.einsum("hd,hdm->hm", z.double(), weight.double())  # [head, d_model]
            head_values = project(per_head)
            labels += [f"L{layer}H{h}" for h in range(model.info.n_heads)]
            values += list(head_values)
            if bias is not None:
                labels.append(f"L{layer} attn bias")
                values.append(project(bias))
            labels.append(f"L{layer} mlp")
            values.append(project(cache[f"blocks.{layer}.hook_mlp_out"][0, position]))
        constant = torch.zeros((), dtype=torch.float64)
        if getattr(norm, "bias", None) is not None:
            constant = (
                constant + norm.bias.double() @ (unembed.weight[a] - unembed.weight[b]).double()
            )
        if getattr(unembed, "bias", None) is not None:
            constant = constant + (unembed.bias[a] - unembed.bias[b]).double()
        labels.append("constant")
        values.append(constant)
        logit_diff = float(logits[0, position, a] - logits[0, position, b])
    return LogitAttribution(
        text,
        answer,
        other,
        position,
        labels,
        torch.stack([torch.as_tensor(v) for v in values]).float(),
        logit_diff,
        str_tokens(model, ids),
    )
