"""Steering vectors, directional ablation and coefficient sweeps.

    pairs = read_pairs("probes/sentiment_pairs.jsonl")
    vector = mean_difference_vector(model, pairs, layer=12)        # CAA-style
    with steer(model, vector, alpha=4.0):                          # every forward and generate
        wb.generate(model, "Tell me about your weekend")
    with ablate(model, vector.direction):                          # project it out everywhere
        ...

A steering vector is added to the residual stream after block `layer`
(``blocks.{layer}.hook_resid_post``) at every position. ActAdd (`actadd_vector`)
instead adds the per-position difference of one prompt pair to the first tokens
of the prompt. Directional ablation removes a unit direction r from every write
to the residual stream (embedding, each attention and MLP output) and from each
block's input, x -> x - (x . r) r, so the model never carries it.

Contexts are built on `workbench.apply_hooks`: the model is clean after the
block, also when the block raises.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file

from ..core.datasets import check_text, json_line, read_lines
from ..core.display import Tabled, clip
from ..core.errors import InputError
from ..model.activations import cache_activations
from ..model.generation import generate
from ..model.hooks import apply_hooks
from ..model.run import forward
from ..model.tokens import check_layer, single_token_id, to_tokens


@dataclass(frozen=True)
class ContrastPair:
    """Two texts that differ in the concept to steer: `positive` has it, `negative` does not."""

    positive: str
    negative: str


@dataclass(frozen=True)
class SteeringVector:
    """A direction in the residual stream after block `layer`.

    vector: Float[Tensor, "d_model"] (the raw mean difference, so alpha=1 adds one
    average difference); for ActAdd, Float[Tensor, "pos d_model"] added at the first positions.
    """

    vector: Float[torch.Tensor, " d_model"] | Float[torch.Tensor, "pos d_model"]
    layer: int
    method: str
    n_pairs: int
    source: str = ""

    def __repr__(self) -> str:
        return (
            f"SteeringVector({self.method}, layer {self.layer}, shape {list(self.vector.shape)}, "
            f"norm {float(self.vector.norm()):.3g}, {self.n_pairs} pairs"
            + (f", from {self.source}" if self.source else "")
            + ")"
        )

    @property
    def direction(self) -> Float[torch.Tensor, " d_model"]:
        """The unit vector (mean over positions first, for ActAdd)."""
        v = self.vector if self.vector.dim() == 1 else self.vector.mean(0)
        return v / v.norm()

    def save(self, folder: str | Path) -> Path:
        """Write ``vector.safetensors`` + ``vector.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vector": self.vector.contiguous()}, str(folder / "vector.safetensors"))
        meta = {k: v for k, v in asdict(self).items() if k != "vector"}
        (folder / "vector.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SteeringVector":
        folder = Path(folder)
        meta = json.loads((folder / "vector.json").read_text())
        return cls(vector=load_file(str(folder / "vector.safetensors"))["vector"], **meta)


def read_pairs(path: str | Path) -> list[ContrastPair]:
    """Contrast pairs from JSONL: one object per line with "positive" and "negative" texts."""
    shown, lines = read_lines(path, "contrast-pair file")
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = json_line(line, shown, number)
        if not isinstance(item, dict):
            raise InputError(
                f"expected a JSON object with 'positive' and 'negative', got {type(item).__name__}",
                shown,
                number,
            )
        for key in ("positive", "negative"):
            if key not in item:
                raise InputError(f"field {key!r} is missing", shown, number)
        pairs.append(
            ContrastPair(
                check_text(item["positive"], "positive", shown, number),
                check_text(item["negative"], "negative", shown, number),
            )
        )
    if not pairs:
        raise InputError("file has no contrast pairs", str(path))
    return pairs


def mean_difference_vector(
    model, pairs: Sequence[ContrastPair], layer: int, positions: str = "mean", source: str = ""
) -> SteeringVector:
    """CAA-style vector: mean over pairs of resid_post(positive) - resid_post(negative) at `layer`.

    positions: "mean" over each text's tokens after the first (default; many models park
    huge "attention sink" activations on the first token, which would swamp the
    difference) or the "last" token.
    """
    layer = check_layer(model, layer)
    if not pairs:
        raise InputError("no contrast pairs")
    if positions not in ("mean", "last"):
        raise InputError(f"positions must be 'mean' or 'last', not {positions!r}")
    hook = f"blocks.{layer}.hook_resid_post"
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    cache = cache_activations(
        model, texts, hooks=hook, positions="all" if positions == "mean" else "last", progress=False
    )
    acts = cache[hook].float()
    if positions == "mean":
        lengths = cache.lengths
        keep = (torch.arange(acts.shape[1])[None, :] < lengths[:, None]) & (
            torch.arange(acts.shape[1]) > 0
        )[None]
        keep[lengths == 1, 0] = True  # a one-token text keeps its only token
        acts = (acts * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    vector = (acts[: len(pairs)] - acts[len(pairs) :]).mean(0)
    return SteeringVector(vector, layer, f"mean_difference/{positions}", len(pairs), source)


def actadd_vector(model, positive: str, negative: str, layer: int) -> SteeringVector:
    """ActAdd: per-position difference of one prompt pair, Float[Tensor, "pos d_model"]."""
    layer = check_layer(model, layer)
    hook = f"blocks.{layer}.hook_resid_post"
    acts = cache_activations(
        model, [positive, negative], hooks=hook, positions="all", progress=False
    )
    vector = (acts[hook][0] - acts[hook][1]).float()[: int(acts.lengths.max())]
    return SteeringVector(vector, layer, "actadd", 1, f"{positive!r} - {negative!r}")


def _steering_hook(vector: torch.Tensor, alpha: float) -> Callable:
    def hook(resid: torch.Tensor, _point) -> torch.Tensor:
        add = (alpha * vector).to(resid.device, resid.dtype)
        if add.dim() == 1:
            return resid + add
        n = min(add.shape[0], resid.shape[1])
        if resid.shape[1] == 1 and add.shape[0] > 1:
            return None  # a generation step past the prompt: ActAdd only touches the prompt
        out = resid.clone()
        out[:, :n] += add[:n]
        return out

    return hook


@contextlib.contextmanager
def steer(model, vector: SteeringVector, alpha: float) -> Iterator[None]:
    """Add `alpha * vector` after block `vector.layer` in every forward pass and generation step."""
    with apply_hooks(
        model, [(f"blocks.{vector.layer}.hook_resid_post", _steering_hook(vector.vector, alpha))]
    ):
        yield


@contextlib.contextmanager
def ablate(model, direction: Float[torch.Tensor, " d_model"]) -> Iterator[None]:
    """Project the unit `direction` out of every residual-stream write and block input."""
    unit = (direction / direction.norm()).float()

    def project_out(x: torch.Tensor, _point) -> torch.Tensor:
        r = unit.to(x.device, x.dtype)
        return x - (x @ r)[..., None] * r

    names = ["hook_embed"] + [
        f"blocks.{layer}.{h}"
        for layer in range(model.info.n_layers)
        for h in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
    ]
    with apply_hooks(model, [(name, project_out) for name in names]):
        yield


def logprob_gap(
    model,
    prompts: Sequence[str],
    positive_words: Sequence[str],
    negative_words: Sequence[str],
    *,
    prepend_bos: bool | None = None,
) -> float:
    """Mean over prompts of log p(positive words) - log p(negative words) for the next token.

    Each side is the log of the summed probability of its words (single tokens).
    prepend_bos: None is the bridge's default for the model (`workbench.model.tokens`).
    """
    pos_ids = [single_token_id(model, w) for w in positive_words]
    neg_ids = [single_token_id(model, w) for w in negative_words]
    gaps = []
    for prompt in prompts:
        logprobs = (
            forward(model, to_tokens(model, prompt, prepend_bos))[0, -1].float().log_softmax(-1)
        )
        gaps.append(float(logprobs[pos_ids].logsumexp(0) - logprobs[neg_ids].logsumexp(0)))
    return sum(gaps) / len(gaps)


@dataclass(frozen=True)
class SweepResult(Tabled):
    """A metric against the steering coefficient."""

    alphas: list[float]
    values: list[float]
    metric: str
    layer: int
    method: str

    def __repr__(self) -> str:
        return (
            f"SweepResult({self.metric} at {len(self.alphas)} coefficients, {self.method} vector at "
            f"layer {self.layer}; {self.values[0]:.3g} at alpha {self.alphas[0]:g} to "
            f"{self.values[-1]:.3g} at alpha {self.alphas[-1]:g})"
        )

    def to_frame(self):
        return pd.DataFrame({"alpha": self.alphas, self.metric: self.values})

    @property
    def is_monotonic(self) -> bool:
        diffs = [b - a for a, b in zip(self.values, self.values[1:])]
        return all(d > 0 for d in diffs) or all(d < 0 for d in diffs)


def sweep(
    model,
    vector: SteeringVector,
    alphas: Sequence[float],
    metric: Callable[[], float],
    metric_name: str = "metric",
) -> SweepResult:
    """Evaluate `metric()` with the vector applied at each coefficient (alpha=0 is the unsteered model)."""
    values = []
    for alpha in alphas:
        with steer(model, vector, alpha):
            values.append(float(metric()))
    return SweepResult(list(map(float, alphas)), values, metric_name, vector.layer, vector.method)


@dataclass(frozen=True)
class SteeredGenerations(Tabled):
    """Greedy continuations of one prompt at several steering coefficients, with toxicity scores.

    alphas[i] produced texts[i] (alpha 0 is the unsteered model); toxicity[i] is its
    score from `scorer` (named in `scorer`), or None without a scorer.
    """

    prompt: str
    alphas: list[float]
    texts: list[str]
    toxicity: list[float | None]
    scorer: str
    layer: int

    def __repr__(self) -> str:
        scored = f", toxicity by {self.scorer}" if any(t is not None for t in self.toxicity) else ""
        return (
            f"SteeredGenerations({clip(self.prompt)}, layer {self.layer}, {len(self.alphas)} "
            f"coefficients {self.alphas}, one greedy continuation each{scored})"
        )

    def to_frame(self):
        return pd.DataFrame(
            {"alpha": self.alphas, "continuation": self.texts, "toxicity": self.toxicity}
        )


def steered_generations(
    model,
    vector: SteeringVector,
    prompt: str,
    alphas: Sequence[float],
    scorer=None,
    max_new_tokens: int = 32,
    raw: bool = False,
) -> SteeredGenerations:
    """Generate a greedy continuation of `prompt` under each coefficient and score each one.

    scorer: a toxicity scorer (workbench.safety.scorers) or None.
    """
    texts = []
    for alpha in alphas:
        with steer(model, vector, float(alpha)):
            texts.append(
                generate(model, [prompt], max_new_tokens=max_new_tokens, raw=raw, progress=False)[
                    0
                ].text
            )
    if scorer is not None:
        scores = scorer.score(texts)
        toxicity, name = [float(v) for v in scores["toxicity"]], str(scores["scorer"].iloc[0])
    else:
        toxicity, name = [None] * len(texts), ""
    return SteeredGenerations(
        prompt, [float(a) for a in alphas], texts, toxicity, name, vector.layer
    )
