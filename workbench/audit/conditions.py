"""An audit's interventions and what they cost: the steering pairs and vector, the conditions
(baseline, one per coefficient, an ablation, the prompting baseline), the capability check that
measures their cost, and how all of it is recorded in run.json.

Every function takes `options`: anything with the audit options' attribute names (`steer`, `layer`,
`alpha`, `ablate`, `bootstrap`, `seed`, `qa`, `heldout`, and for the toxicity audit `instruct`,
`positive_means`, `instruct_means`, `batch_size`): the CLI's parsed arguments, or a
`workbench.audit.ToxicityAuditOptions`. So the CLI and the library run one code path.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Sequence

from ..core.errors import InputError
from ..core.provenance import file_sha256
from ..interp.steering import ablate, mean_difference_vector, read_pairs, steer
from ..model.tokens import check_layer
from ..report.folder import AUDIT_FORMAT
from ..safety.capability import (
    DEFAULT_HELDOUT,
    DEFAULT_QA,
    check_items_fit,
    items_sha256,
    read_heldout,
    read_qa,
)
from .settings import model_settings, versions


@dataclass(frozen=True)
class Condition:
    """One intervention setting: "baseline", "steer" (alpha), "ablate", "instruct" (the prompting
    baseline: an instruction before every prompt) or "intervention" (a saved
    `workbench.safety.interventions.Intervention` of that name; alpha is its coefficient). intended: the change of the safety measure the
    condition is meant to cause, "up", "down", or "" (none declared, e.g. an ablation)."""

    name: str
    kind: str = "baseline"
    alpha: float = 0.0
    intended: str = ""


POSITIVE_MEANS = ("less-toxic", "more-toxic")


def conditions_for(
    alphas: Sequence[float],
    ablate: bool,
    instruct: bool = False,
    positive_means: str = "less-toxic",
    instruct_means: str | None = None,
) -> list[Condition]:
    """The baseline, one steering condition per coefficient, optionally an ablation and the
    prompting baseline ("instruct").

    positive_means: what a positive coefficient (towards the pairs' "positive" texts) is meant to
    do to toxicity; a negative coefficient is meant to do the opposite. instruct_means: the same
    for the instruction.
    """

    def intended(means: str, sign: float) -> str:
        down = (means == "less-toxic") == (sign > 0)
        return "" if sign == 0 else ("down" if down else "up")

    conditions = [Condition("baseline")] + [
        Condition(f"steer{alpha:+g}", "steer", alpha, intended(positive_means, alpha))
        for alpha in alphas
    ]
    conditions += [Condition("ablate", "ablate")] if ablate else []
    return conditions + (
        [Condition("instruct", "instruct", 0.0, intended(instruct_means, 1.0))] if instruct else []
    )


def instructed(prompt: str, instruction: str | None) -> str:
    """The prompt the instruct condition sends: the instruction, a blank line, then the prompt
    (the model's prompt format is applied to the whole, as to any prompt)."""
    return f"{instruction}\n\n{prompt}" if instruction else prompt


def intervention_conditions(interventions) -> list[Condition]:
    """One condition per saved intervention, named by it."""
    return [Condition(iv.name, "intervention", iv.coefficient, iv.intended) for iv in interventions]


def intervention(model, condition: Condition, vector):
    """The context manager that applies `condition` (nothing for the baseline; an "intervention"
    condition is applied by `workbench.safety.interventions.generate_under` instead)."""
    if condition.kind == "steer":
        return steer(model, vector, condition.alpha)
    if condition.kind == "ablate":
        return ablate(model, vector.direction)
    # baseline, and instruct (which changes the prompt, not the model)
    return contextlib.nullcontext()


def read_steering_pairs(options):
    """Check the steering and bootstrap options (before any model work); the contrast pairs, or None."""
    if getattr(options, "bootstrap", 1000) < 100:
        raise InputError(f"--bootstrap must be at least 100, not {options.bootstrap}")
    if (options.alpha or options.ablate) and not (options.steer and options.layer is not None):
        raise InputError("--alpha/--ablate need --steer PAIRS and --layer L")
    if not options.steer:
        return None

    return read_pairs(options.steer)


def steering_conditions(options, model, pairs):
    """(conditions, vector): the baseline plus one condition per coefficient in `options.alpha`
    (and the ablation, and the prompting baseline where the audit has one); vector is None
    without steering pairs."""
    instruct = dict(
        instruct=bool(getattr(options, "instruct", None)),
        positive_means=getattr(options, "positive_means", "less-toxic"),
        instruct_means=getattr(options, "instruct_means", None),
    )
    if not pairs:
        return conditions_for([], False, **instruct), None

    check_layer(model, options.layer)
    vector = mean_difference_vector(model, pairs, options.layer, source=str(options.steer))
    return conditions_for(options.alpha, options.ablate, **instruct), vector


def steering_settings(options, pairs) -> dict | None:
    """The steering source recorded in run.json (None without steering pairs)."""
    if not pairs:
        return None

    return {
        "pairs": str(options.steer),
        "pairs_sha256": file_sha256(options.steer),
        "layer": options.layer,
        "n_pairs": len(pairs),
    }


def audit_settings(options, model, pairs, conditions, **fields) -> dict:
    """run.json fields shared by the bias, ToxiGen, counterfactual and capability audits."""
    return {
        "model": model_settings(model),
        **fields,
        "seed": options.seed,
        "bootstrap": options.bootstrap,
        "steer": steering_settings(options, pairs),
        "conditions": [asdict(c) for c in conditions],
        "versions": versions(),
        "format": AUDIT_FORMAT,
    }


def capability_inputs(options, model=None):
    """The capability check's items (QA questions, then held-out texts), read and checked; with
    `model`, the QA answers are checked to be single tokens of its tokenizer."""
    qa = read_qa(options.qa or DEFAULT_QA, model)
    items = qa + read_heldout(options.heldout or [DEFAULT_HELDOUT])
    if model is not None:
        check_items_fit(model, items)
    return items


def capability_settings(options, model, pairs, conditions, items) -> dict:
    """run.json of the capability check that sits inside a toxicity audit folder."""
    return audit_settings(
        options,
        model,
        pairs,
        conditions,
        qa_file=str(options.qa or DEFAULT_QA),
        heldout_files=[str(h) for h in (options.heldout or [DEFAULT_HELDOUT])],
        items_sha256=items_sha256(items),
        n_qa=sum(i.kind == "qa" for i in items),
        n_texts=sum(i.kind == "text" for i in items),
        instruct=options.instruct,
        batch_size=options.batch_size,
        shard_size=64,
    )
