"""Attention patterns and head scores (previous-token, duplicate-token, induction).

Head scores use the standard test: a random token sequence of length L repeated
twice after a start token, ``[bos, r_1..r_L, r_1..r_L]``. For a query in the second
half at the repeat of r_i:

- previous-token score: attention to the position just before the query (over all queries);
- duplicate-token score: attention to the first occurrence of the same token, r_i;
- induction score: attention to the token after the first occurrence, r_{i+1}.

Scores are mean attention weights in [0, 1], averaged over queries and sequences.

TransformerLens' `head_detector.detect_head` scores the same three kinds with its own detection
patterns, but divides by every query of the sequence, the first half's included (where no
duplicate or induction target exists yet). `transformer_lens_scores` runs TransformerLens' own
scoring on the same tokens and patterns; on sequences whose random half repeats no token, the two
differ only by that normalisation: TL's score = ours x L / (2L + 1) for duplicate-token and
induction, x 2L / (2L + 1) for previous-token (tests/test_interp.py checks it). We keep ours as
the headline because it reads as "attention on the target", 1.0 for a perfect head.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float, Int

from ..core.display import Tabled, clip
from ..model.tokens import str_tokens, to_tokens

SCORE_KINDS = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class AttentionPatterns(Tabled):
    """Attention of one text.

    tokens: label per position.
    patterns: Float[Tensor, "layer head query key"], rows sum to 1 over keys <= query.
    """

    text: str
    tokens: list[str]
    patterns: Float[torch.Tensor, "layer head query key"]

    def __repr__(self) -> str:
        n_layers, n_heads, n, _ = self.patterns.shape
        return (
            f"AttentionPatterns({clip(self.text)}, {n_layers} layers x {n_heads} heads x "
            f"{n} x {n} tokens; .head(layer, head) for one pattern)"
        )

    def head(self, layer: int, head: int) -> Float[torch.Tensor, "query key"]:
        """Float[Tensor, "query key"] for one head."""
        return self.patterns[layer, head]

    def to_frame(self, layer: int, head: int):
        """Long table of one head's pattern: query, key, their tokens and the weight."""
        pattern = self.head(layer, head)
        n = len(self.tokens)
        return pd.DataFrame(
            [
                {
                    "query": q,
                    "key": k,
                    "query_token": self.tokens[q],
                    "key_token": self.tokens[k],
                    "weight": float(pattern[q, k]),
                }
                for q in range(n)
                for k in range(q + 1)
            ]
        )


def attention_patterns(model, text: str, *, prepend_bos: bool | None = None) -> AttentionPatterns:
    """Every head's attention pattern on `text` (one forward pass).
    prepend_bos: None is the bridge's default for the model (`workbench.model.tokens`)."""
    ids = to_tokens(model, text, prepend_bos)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.info.n_layers)]
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids, names_filter=names)
    patterns = torch.stack([cache[name][0] for name in names]).float().cpu()
    return AttentionPatterns(text, str_tokens(model, ids), patterns)


@dataclass(frozen=True)
class HeadScores(Tabled):
    """Head scores per kind, each Float[Tensor, "layer head"], from repeated random tokens."""

    scores: dict[str, Float[torch.Tensor, "layer head"]]
    seq_len: int
    n_seqs: int
    seed: int
    model_name: str

    def __repr__(self) -> str:
        n_layers, n_heads = next(iter(self.scores.values())).shape
        best = self.top("induction", 1).iloc[0]
        return (
            f"HeadScores({self.model_name}, {n_layers} layers x {n_heads} heads, {self.n_seqs} "
            f"sequences of {self.seq_len} random tokens repeated; top induction head "
            f"{best['label']} {best['induction']:.3f})"
        )

    def to_frame(self):
        """One row per head with every score, sorted by induction score (highest first)."""
        n_layers, n_heads = next(iter(self.scores.values())).shape
        rows = [
            {
                "layer": layer,
                "head": head,
                "label": f"L{layer}H{head}",
                **{kind: float(self.scores[kind][layer, head]) for kind in self.scores},
            }
            for layer in range(n_layers)
            for head in range(n_heads)
        ]
        return pd.DataFrame(rows).sort_values("induction", ascending=False, ignore_index=True)

    def top(self, kind: str = "induction", k: int = 5):
        """The `k` heads with the highest `kind` score."""
        return self.to_frame().sort_values(kind, ascending=False, ignore_index=True).head(k)


def repeated_random_tokens(
    model, seq_len: int, n_seqs: int, seed: int
) -> Int[torch.Tensor, "n_seqs seq"]:
    """Int[Tensor, "n_seqs 2*seq_len+1"]: a start token, then seq_len random tokens twice."""
    generator = torch.Generator().manual_seed(seed)
    vocab = len(model.tokenizer)
    # skip the special and byte tokens at the start of most vocabularies
    low = min(1000, vocab // 10)
    half = torch.randint(low, vocab - 1, (n_seqs, seq_len), generator=generator)
    start_id = (
        model.tokenizer.bos_token_id
        if model.tokenizer.bos_token_id is not None
        else model.tokenizer.eos_token_id
    )
    start = torch.full((n_seqs, 1), start_id, dtype=torch.long)
    return torch.cat([start, half, half], dim=1).to(model.device)


def _repeated_patterns(model, ids: torch.Tensor) -> torch.Tensor:
    """Every head's attention on `ids`: Float[Tensor, "layer seq head query key"] (float32, model's device)."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.info.n_layers)]
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids, names_filter=names)
    return torch.stack([cache[name] for name in names]).float()


def head_scores(model, seq_len: int = 40, n_seqs: int = 8, seed: int = 0) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head (see module docstring)."""
    patterns = _repeated_patterns(model, repeated_random_tokens(model, seq_len, n_seqs, seed))
    # second-half positions
    queries = torch.arange(seq_len + 1, 2 * seq_len + 1, device=patterns.device)
    all_queries = torch.arange(1, 2 * seq_len + 1, device=patterns.device)
    scores = {
        "previous_token": patterns[..., all_queries, all_queries - 1].mean(dim=(1, 3)),
        "duplicate_token": patterns[..., queries, queries - seq_len].mean(dim=(1, 3)),
        "induction": patterns[..., queries, queries - seq_len + 1].mean(dim=(1, 3)),
    }
    return HeadScores(
        {k: v.cpu() for k, v in scores.items()}, seq_len, n_seqs, seed, model.info.name
    )


TL_HEAD_NAMES = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}


def transformer_lens_scores(model, seq_len: int = 40, n_seqs: int = 8, seed: int = 0) -> HeadScores:
    """The same heads scored by TransformerLens' head detector (its detection patterns and its
    "mul" similarity, no exclusions, averaged over the sequences as `detect_head` does for a list),
    on the tokens `head_scores` uses; see the module docstring for how the two relate."""
    # lazy: TransformerLens takes ~2 s to import; only model work needs it
    from transformer_lens import head_detector

    ids = repeated_random_tokens(model, seq_len, n_seqs, seed)
    patterns = _repeated_patterns(model, ids).cpu()
    scores = {}
    for kind, tl_name in TL_HEAD_NAMES.items():
        detect = getattr(head_detector, f"get_{tl_name}_detection_pattern")
        total = torch.zeros(patterns.shape[0], patterns.shape[2], dtype=torch.float64)
        for s in range(n_seqs):
            detection = detect(ids[s : s + 1].cpu())
            for layer in range(patterns.shape[0]):
                for head in range(patterns.shape[2]):
                    total[layer, head] += head_detector.compute_head_attention_similarity_score(
                        patterns[layer, s, head],
                        detection,
                        exclude_bos=False,
                        exclude_current_token=False,
                        error_measure="mul",
                    )
        scores[kind] = (total / n_seqs).float()
    return HeadScores(scores, seq_len, n_seqs, seed, model.info.name)
