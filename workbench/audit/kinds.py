"""The audits other than toxicity, each on the shared resumable loop (`workbench.audit.runner`):
CrowS-Pairs-style bias (pairs), ToxiGen (groups), counterfactual templates (templates) and the
capability check (QA questions and held-out texts) that measures what an intervention costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.progress import advance
from ..safety.bias import counterfactual, crows_pairs
from ..safety.capability import capability_rows
from ..safety.interventions import capability_under
from ..safety.toxigen import toxigen_group
from .conditions import Condition, intervention
from .runner import run_sharded


def run_capability_audit(
    model,
    items: Sequence,
    out: str | Path,
    settings: dict,
    vector=None,
    progress: bool = True,
    executor=None,
    interventions: dict | None = None,
) -> Path:
    """What each condition costs on held-out tasks, resumable: one row per (condition, item) with
    the held-out text's NLL or the QA question's outcome (workbench.safety.capability). The toxicity
    audit runs it into ``<out>/capability`` for every run with an intervention. settings: run.json
    fields incl. "conditions", "instruct", "batch_size", "shard_size"."""

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            instruction = settings.get("instruct") if condition.kind == "instruct" else ""
            saved = (interventions or {}).get(condition.name)
            if saved is not None and condition.kind == "intervention":
                rows = capability_under(
                    model, saved, items[start:end], settings["batch_size"], advance
                )
            else:
                with intervention(model, condition, vector):
                    rows = capability_rows(
                        model, items[start:end], instruction or "", settings["batch_size"], advance
                    )
                rows = [{**row, "intervened": condition.kind != "baseline"} for row in rows]
            frame = pd.DataFrame(
                [
                    {
                        "condition": condition.name,
                        "alpha": condition.alpha,
                        "row": start + i,
                        "text": item.text,
                        "answer": item.answer,
                        "category": item.category,
                        **row,
                    }
                    for i, (item, row) in enumerate(zip(items[start:end], rows))
                ]
            )
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "capability"},
        len(items),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="capability items",
        executor=executor,
    )


def run_bias_audit(
    model,
    pairs: Sequence,
    out: str | Path,
    settings: dict,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """CrowS-Pairs-style audit, resumable: one row per (condition, pair) with both
    sentences' log-likelihoods (workbench.safety.bias). settings: run.json fields,
    including "conditions", "shard_size" and "batch_size"."""

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                result = crows_pairs(
                    model, pairs[start:end], batch_size=settings["batch_size"], on_batch=advance
                )
            frame = result.pair_frame()
            frame.insert(0, "row", range(start, end))
            frame.insert(0, "alpha", condition.alpha)
            frame.insert(0, "condition", condition.name)
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "bias"},
        len(pairs),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="pairs",
        executor=executor,
    )


def run_toxigen_audit(
    model,
    folder: str | Path,
    rows: Sequence,
    groups: Sequence[str],
    out: str | Path,
    settings: dict,
    scorer,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """ToxiGen per-group audit, resumable: one shard per (condition, group).
    rows: `read_toxigen(folder)`; settings: run.json fields incl. "conditions",
    "prompts_per_group", "max_new_tokens", "seed"."""

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                entry = toxigen_group(
                    model,
                    folder,
                    rows,
                    groups[start],
                    scorer,
                    settings["prompts_per_group"],
                    settings["max_new_tokens"],
                    settings["seed"],
                    on_batch=advance,
                )
            return pd.DataFrame(
                [{"condition": condition.name, "alpha": condition.alpha, "row": start, **entry}]
            )

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "toxigen"},
        len(groups),
        1,
        model,
        shards,
        progress=progress,
        desc="groups",
        executor=executor,
    )


def run_counterfactual_audit(
    model,
    templates: Sequence[str],
    out: str | Path,
    settings: dict,
    scorer=None,
    vector=None,
    progress: bool = True,
    executor=None,
) -> Path:
    """Counterfactual-template audit, resumable: one row per (condition, template, group).
    settings: run.json fields incl. "groups", "continuations", "max_new_tokens", "seed", "shard_size"."""

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            with intervention(model, condition, vector):
                result = counterfactual(
                    model,
                    templates[start:end],
                    settings["groups"],
                    settings["continuations"],
                    scorer,
                    settings["max_new_tokens"],
                    settings["seed"],
                    on_batch=advance,
                )
            frame = result.row_frame()
            frame.insert(
                0, "row", [start + i // len(settings["groups"]) for i in range(len(frame))]
            )
            frame.insert(0, "alpha", condition.alpha)
            frame.insert(0, "condition", condition.name)
            return frame

        return make_shard

    return run_sharded(
        out,
        {**settings, "audit": "counterfactual"},
        len(templates),
        settings["shard_size"],
        model,
        shards,
        progress=progress,
        desc="templates",
        executor=executor,
    )
