"""ToxiGen per-group audit: likelihood preference for hateful statements, and toxicity of continuations.

For each target group of ToxiGen (Hartvigsen et al., ACL 2022):

- preference: mean per-token log-likelihood of the group's hateful statements minus
  that of its neutral statements (statements deduplicated; > 0 means the model finds
  hateful statements about the group more likely than neutral ones);
- continuation toxicity: the model continues a few of the group's few-shot prompt
  lines (hate and neutral files), and each continuation is scored; reported as mean
  toxicity after hateful and after neutral prompts.

Each group's row keeps the per-statement and per-prompt values (lists), so the
report computes intervals from them (`workbench.core.stats`).

Microsoft's Phi-2 announcement (December 2023) reported per-group "safety scores"
on 13 ToxiGen demographics, computed from scaled perplexity and sentence toxicity
on a 6,541-sentence subset. That method and subset are not public in full; the
figures here are a related but not identical measure, and must not be compared
number for number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from ..core.datasets import read_lines, read_toxigen
from ..core.errors import InputError
from ..model.generation import generate
from .bias import sentence_logprobs


def _prompt_lines(folder: Path, kind: str, group: str, limit: int) -> list[str]:
    path = folder / "prompts" / f"{kind}_{group}_1k.txt"
    if not path.exists():
        return []
    _, all_lines = read_lines(path, "ToxiGen prompt file")
    lines = [line for line in all_lines if line.strip()][:limit]
    # Each line is "- s1\n- s2\n-" with literal backslash-n: make it real lines, ending with "- ".
    return [
        "\n".join(part.strip() for part in line.split("\\n")).rstrip("-").rstrip() + "\n-"
        for line in lines
    ]


def toxigen_audit(
    model,
    folder: str | Path,
    scorer,
    prompts_per_group: int = 4,
    max_new_tokens: int = 32,
    seed: int = 0,
    groups: Sequence[str] | None = None,
):
    """A DataFrame with one row per group (see module docstring)."""
    rows = read_toxigen(folder)
    return pd.DataFrame(
        [
            toxigen_group(
                model, folder, rows, group, scorer, prompts_per_group, max_new_tokens, seed
            )
            for group in toxigen_groups(rows, groups)
        ]
    )


def toxigen_groups(rows, groups: Sequence[str] | None = None) -> list[str]:
    """The target groups present in `rows` (read_toxigen's output), restricted to `groups` if given."""
    names = sorted({r.group for r in rows})
    if groups:
        unknown = set(groups) - set(names)
        if unknown:
            raise InputError(
                f"unknown ToxiGen group(s) {sorted(unknown)}; groups: {', '.join(names)}"
            )
        names = [g for g in names if g in groups]
    return names


def toxigen_group(
    model,
    folder: str | Path,
    rows,
    group: str,
    scorer,
    prompts_per_group: int = 4,
    max_new_tokens: int = 32,
    seed: int = 0,
    on_batch: Callable[[float], None] | None = None,
) -> dict:
    """One group's row: statement counts, likelihood preference, continuation toxicity after
    hateful and after neutral prompts, and the most toxic continuation with its score.
    on_batch: called with a quarter (of the group's one row) after each of its four steps: the
    hateful and the neutral statements' likelihoods, then each kind of prompt's continuations."""

    def quarter_done() -> None:
        if on_batch is not None:
            on_batch(0.25)

    folder = Path(folder)
    hate = [r.text for r in rows if r.group == group and r.label == 1]
    neutral = [r.text for r in rows if r.group == group and r.label == 0]
    entry = {"group": group, "hate_statements": len(hate), "neutral_statements": len(neutral)}
    if hate and neutral:
        hate_values = _per_token(model, hate)
        quarter_done()
        neutral_values = _per_token(model, neutral)
        quarter_done()
        entry["preference_logprob_per_token"] = float(
            sum(hate_values) / len(hate_values) - sum(neutral_values) / len(neutral_values)
        )
        entry["hate_logprob_per_token"], entry["neutral_logprob_per_token"] = (
            hate_values,
            neutral_values,
        )
    worst = (float("-inf"), "")
    for kind in ("hate", "neutral"):
        prompts = _prompt_lines(folder, kind, group, prompts_per_group)
        if not prompts:
            quarter_done()
            continue
        outputs = generate(
            model, prompts, max_new_tokens=max_new_tokens, seed=seed, raw=True, progress=False
        )
        texts = [o.text.split("\n")[0] for o in outputs]  # the first generated statement
        scores = scorer.score(texts)
        entry[f"continuation_toxicity_after_{kind}"] = float(scores["toxicity"].mean())
        entry[f"toxicity_after_{kind}"] = [float(v) for v in scores["toxicity"]]
        entry[f"{kind}_prompts"] = len(prompts)
        entry["scorer"] = scores["scorer"].iloc[0]
        best = int(scores["toxicity"].to_numpy().argmax())
        worst = max(worst, (float(scores["toxicity"].iloc[best]), texts[best]))
        quarter_done()
    if worst[1]:
        entry["worst_toxicity"], entry["worst_continuation"] = worst
    return entry


def _per_token(model, texts: list[str]) -> list[float]:
    """Per text: its log-likelihood divided by its token count."""
    totals = sentence_logprobs(model, texts)
    counts = torch.tensor(
        [len(model.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    )
    return (totals / counts).tolist()
