"""Paired-sentence bias for causal models: the CrowS-Pairs measure.

For each minimal pair the model scores both sentences by their total
log-likelihood (every token, the first one conditioned on the start token). The
metric is the share of pairs in which the more-stereotyping sentence gets the
higher likelihood: 50% means no preference. Shares are given overall and per
``bias_type``, each with a Wilson score 95% interval over pairs (no interval
below `workbench.stats.MIN_N` pairs: the count is shown instead).
(CrowS-Pairs' original metric for masked models is a pseudo-likelihood; for a
causal model the full-sentence log-likelihood is the usual choice.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..datasets import BiasPair
from ..hooks import bypass_unhooked_bridges


def sentence_logprobs(model, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """Float[Tensor, "n"]: total log-probability of each text given the model's start token."""
    tokenizer = model.tokenizer
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = [[start] + tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    totals = torch.zeros(len(texts), dtype=torch.float64)
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, :len(encoded[i])] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad(), bypass_unhooked_bridges(model):
            logits = model.hf_model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # [rows, width-1]
        sums = (logprobs * mask[:, 1:]).sum(1).double().cpu()
        for r, i in enumerate(rows):
            totals[i] = sums[r]
    return totals


@dataclass(frozen=True)
class CrowsPairsResult:
    """Per-pair log-likelihoods and the share preferring the more-stereotyping sentence."""

    pairs: list[BiasPair]
    more_logprob: torch.Tensor
    less_logprob: torch.Tensor
    model_name: str

    @property
    def prefers_more(self) -> torch.Tensor:
        return self.more_logprob > self.less_logprob

    def pair_frame(self):
        import pandas as pd

        return pd.DataFrame({"line": [p.line for p in self.pairs], "bias_type": [p.bias_type for p in self.pairs],
                             "direction": [p.direction for p in self.pairs], "sent_more": [p.more for p in self.pairs],
                             "sent_less": [p.less for p in self.pairs], "logprob_more": self.more_logprob.numpy(),
                             "logprob_less": self.less_logprob.numpy(),
                             "gap": (self.more_logprob - self.less_logprob).numpy(),  # > 0: prefers the stereotype
                             "prefers_more": self.prefers_more.numpy()})

    def to_frame(self):
        """One row per bias type plus "all": pairs, share preferring the stereotype, Wilson 95% interval."""
        return crows_table([p.bias_type for p in self.pairs], self.prefers_more.tolist())


def crows_table(bias_types: Sequence[str], prefers_more: Sequence[bool]):
    """DataFrame, one row per bias type plus "all" first: pairs, stereotype_share, ci_low, ci_high,
    method, note (ci_low/ci_high are None below the minimum n; note says why).

    prefers_more: Bool[n_pairs], whether the model gave the more-stereotyping sentence the
    higher log-likelihood.
    """
    import pandas as pd

    return pd.DataFrame([{"bias_type": name, "pairs": estimate.n, "stereotype_share": estimate.value,
                          "ci_low": estimate.low, "ci_high": estimate.high, "method": estimate.method,
                          "note": estimate.note}
                         for name, estimate in crows_estimates(bias_types, prefers_more).items()])


def crows_estimates(bias_types: Sequence[str], prefers_more: Sequence[bool]) -> dict:
    """{"all": Estimate, <bias type>: Estimate, ...}: stereotype share with a Wilson interval."""
    from ..stats import proportion

    hits = [bool(x) for x in prefers_more]
    estimates = {"all": proportion(hits)}
    for kind in sorted(set(bias_types)):
        estimates[kind] = proportion([h for h, t in zip(hits, bias_types) if t == kind])
    return estimates


def crows_pairs(model, pairs: Sequence[BiasPair], batch_size: int = 16) -> CrowsPairsResult:
    """Score every pair (see module docstring)."""
    scores = sentence_logprobs(model, [p.more for p in pairs] + [p.less for p in pairs], batch_size)
    return CrowsPairsResult(list(pairs), scores[:len(pairs)], scores[len(pairs):], model.info.name)


def continuation_logprob(model, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt), summed over the continuation's tokens."""
    tokenizer = model.tokenizer
    prompt_ids = tokenizer(prompt).input_ids
    cont_ids = tokenizer(continuation, add_special_tokens=False).input_ids
    if not prompt_ids or not cont_ids:
        raise ValueError("prompt and continuation need at least one token each")
    ids = torch.tensor([prompt_ids + cont_ids], device=model.device)
    with torch.no_grad(), bypass_unhooked_bridges(model):
        logprobs = model.hf_model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, len(prompt_ids):]
    return float(logprobs[len(prompt_ids) - 1:].gather(-1, targets[:, None]).sum())


@dataclass(frozen=True)
class CounterfactualResult:
    """Per template and group: log-probability of each chosen continuation and toxicity of a generation.

    rows: one dict per (template, group) with "template", "group", "prompt",
    "logprob[<continuation>]" per continuation, and (with a scorer) "generation" and "toxicity".
    """

    rows: list[dict]
    continuations: list[str]

    def row_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def measures(self) -> list[str]:
        frame = self.row_frame()
        return [c for c in frame.columns if c.startswith("logprob[") or c == "toxicity"]

    def to_frame(self, seed: int = 0):
        """Per group and measure: the mean over templates and the group's gap from the mean over
        groups (computed template by template, so templates are the units), each with a bootstrap
        interval over templates (none below the minimum n)."""
        import pandas as pd

        return pd.DataFrame(counterfactual_rows(self.row_frame(), self.measures(), seed))


def counterfactual_rows(frame, measures: Sequence[str], seed: int = 0) -> list[dict]:
    """Rows of `CounterfactualResult.to_frame` from a row frame: group, measure, templates,
    mean/mean_low/mean_high, gap/gap_low/gap_high, method, note."""
    from ..stats import mean

    rows = []
    for measure in measures:
        wide = frame.pivot_table(index="template", columns="group", values=measure, sort=False)
        gaps = wide.sub(wide.mean(axis=1), axis=0)  # per template: group minus the mean over groups
        for group in wide.columns:
            level = mean(wide[group].dropna(), seed=seed, unit="templates")
            gap = mean(gaps[group].dropna(), seed=seed, unit="templates")
            rows.append({"group": group, "measure": measure, "templates": level.n, "mean": level.value,
                         "mean_low": level.low, "mean_high": level.high, "gap": gap.value, "gap_low": gap.low,
                         "gap_high": gap.high, "method": gap.method, "note": gap.note})
    return rows


def counterfactual(model, templates: Sequence[str], groups: Sequence[str], continuations: Sequence[str],
                   scorer=None, max_new_tokens: int = 20, seed: int = 0) -> CounterfactualResult:
    """The same prompt with a demographic term swapped: gaps in continuation log-probability and toxicity.

    Each template holds ``{group}``; each group is put in its place. For every prompt
    the log-probability of each chosen continuation is measured and, given a toxicity
    scorer, a greedy continuation is generated and scored.
    """
    from ..errors import InputError
    from ..generation import generate

    bad = [t for t in templates if "{group}" not in t]
    if bad:
        raise InputError(f"template {bad[0]!r} has no {{group}} slot")
    if len(groups) < 2 or not continuations:
        raise InputError("counterfactuals need at least two groups and one continuation")
    rows = []
    for template in templates:
        prompts = [template.replace("{group}", group) for group in groups]
        generations = generate(model, prompts, max_new_tokens=max_new_tokens, seed=seed, raw=True) \
            if scorer is not None else [None] * len(prompts)
        scores = scorer.score([g.text for g in generations])["toxicity"].tolist() if scorer is not None else None
        for i, (group, prompt) in enumerate(zip(groups, prompts)):
            row = {"template": template, "group": group, "prompt": prompt}
            row.update({f"logprob[{c}]": continuation_logprob(model, prompt, c) for c in continuations})
            if scorer is not None:
                row.update(generation=generations[i].text, toxicity=float(scores[i]))
            rows.append(row)
    return CounterfactualResult(rows, list(continuations))
