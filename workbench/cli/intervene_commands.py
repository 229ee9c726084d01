"""What `workbench intervene search` runs: the library's search, then a table."""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from ..audit.intervene import DEFAULT_INSTRUCTION, DEFAULT_PAIRS, SearchOptions, search
from .common import emit
from .running import load_model


def cmd_intervene_search(args) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(SearchOptions) if hasattr(args, f.name)}
    given["pairs"] = args.pairs or DEFAULT_PAIRS
    given["instruction"] = args.instruction or DEFAULT_INSTRUCTION
    options = SearchOptions(**given)
    options.check()  # the files and values, before the model is loaded
    result = search(load_model(args), options, progress=not args.json)
    record = result.record
    goal = record["goal"]
    verdicts = "".join(
        f"\n  {name}: goal {'met' if v['met'] else 'not met'} (QA loss "
        f"{_number(v['qa_loss_points'], '.1f')} points, perplexity "
        f"{_number(v['perplexity_change_percent'], '+.1f')}%; "
        + "; ".join(
            f"{scorer} EMT {c['emt_baseline']:.3f} -> {c['emt']:.3f} "
            f"({_number(c['relative_reduction'], '.0%')} lower), paired change interval "
            f"[{_number(c['change_interval'][0], '.3f')}, {_number(c['change_interval'][1], '.3f')}]"
            f", prompting {_number(c['emt_prompting'], '.3f')}"
            for scorer, c in v["scorers"].items()
        )
        + ")"
        for name, v in goal["interventions"].items()
    )
    emit(
        args,
        record,
        f"validation (every candidate; EMT: mean over {len(record['split']['validation'])} prompts "
        f"of the highest toxicity among {options.samples} samples each; intervals in "
        f"{record['validation_report']}):\n"
        + pd.DataFrame(record["candidates"]).to_string(index=False)
        + f"\n\nchosen: {record['chosen'] or 'none within the budget lowered toxicity'}"
        + f"\n\ntest (baseline, chosen, prompting baseline; {len(record['split']['test'])} prompts, "
        "intervals on the test card):\n"
        + pd.DataFrame(record["test"]).to_string(index=False)
        + f"\n\ngoal (>= 40% lower EMT by every independent learned scorer, paired interval "
        f"excluding 0, within budget, better than prompting): {'met' if goal['met'] else 'not met'}"
        + verdicts
        + (
            "\n\nbenign prompts (out of distribution; toxicity must not rise):\n"
            + pd.DataFrame(record["benign"]).to_string(index=False)
            if record.get("benign")
            else ""
        )
        + f"\n\ntest card: {record['test_report']}\nPareto figure: {result.out / 'pareto.html'}",
    )
    return 0


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
