"""The toxicity audit as one library call: the same run as `workbench audit toxicity`.

    from workbench.toxicity_audit import audit_toxicity

    run = audit_toxicity(model, "workbench/data/audit_prompts.txt", "results/tox",
                         scorers=["profanity-check", "toxic-comment-classifier"],
                         steer="probes/polite_vs_rude_pairs.jsonl", layer=9, alpha=[-4, 4],
                         instruct="Reply rudely.", instruct_means="more-toxic")
    run.card_frame()   # the steering report card: each condition's effect beside its cost
    run.to_frame()     # every estimate with its interval, method and n
    run.results()      # one row per continuation

The options are the CLI's flags with underscores (`max_new_tokens`, `positive_means`, ...), and
`ToxicityAuditOptions.check()` runs the CLI's checks on them: every file is read and every value
checked before any model work and before anything is written. The audit folder resumes like the
CLI's: rerun with the same options to finish an interrupted run; other options are refused.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError


@dataclass
class ToxicityAuditOptions:
    """Everything `audit_toxicity` takes besides the model (defaults: the CLI's).

    prompts: a .txt (one per line), .jsonl (`field`) or .csv (`column`) file, or a list of strings.
    scorers: names (auto, profanity-check, toxic-comment-classifier, detoxify[:variant], probe), as a
    list or the CLI's comma-separated string; probe: saved probe folders for the 'probe' scorer.
    steer/layer/alpha/ablate: contrast pairs (JSONL), the layer and the coefficients of the steering
    conditions; instruct/instruct_means: the prompting baseline. The capability check (QA accuracy
    and held-out perplexity under each intervention) runs with any intervention unless
    no_capability.
    """

    prompts: str | Path | Sequence[str]
    out: str | Path
    field: str = "text"
    column: str | None = None
    skip_bad: bool = False
    scorers: str | Sequence[str] = "auto"
    probe: Sequence[str] = ()
    detoxify_checkpoint: str | None = None
    detoxify_config: str | None = None
    max_new_tokens: int = 32
    samples: int = 1
    temperature: float = 1.0
    seed: int = 0
    raw: bool = False
    steer: str | Path | None = None
    layer: int | None = None
    alpha: Sequence[float] = ()
    ablate: bool = False
    positive_means: str = "less-toxic"
    instruct: str | None = None
    instruct_means: str | None = None
    qa: str | Path | None = None
    heldout: Sequence[str] | None = None
    no_capability: bool = False
    batch_size: int = 8
    shard_size: int = 32
    bootstrap: int = 2000

    def __post_init__(self):
        if not isinstance(self.scorers, str):
            self.scorers = ",".join(self.scorers)
        self.alpha = [float(a) for a in self.alpha]
        self.probe = [str(p) for p in self.probe]
        if isinstance(self.heldout, (str, Path)):
            self.heldout = [self.heldout]

    @property
    def scorer_names(self) -> list[str]:
        return [n.strip() for n in self.scorers.split(",") if n.strip()]

    def check(self) -> "CheckedInputs":
        """Every check that needs no model (the CLI's `check_args`, then the files' contents);
        InputError naming the option, file or line on the first problem."""
        from .validate import check_args

        namespace = argparse.Namespace(command="audit", **{**vars(self), "out": str(self.out)})
        check_args(namespace)  # also makes a file:// URL a path
        self.out = namespace.out
        return _read_inputs(self)


@dataclass(frozen=True)
class CheckedInputs:
    """The inputs read and checked before the model is loaded."""

    records: list
    skipped_bad_lines: int
    probes: list
    steering_pairs: list | None
    capability: bool


def _read_inputs(options: ToxicityAuditOptions) -> CheckedInputs:
    from .conditions import capability_inputs, read_steering_pairs
    from .datasets import TextRecord, read_texts
    from .probes import Probe
    from .scanners.toxicity import check_scorer_names

    if isinstance(options.prompts, (str, Path)):
        records = read_texts(
            options.prompts, field=options.field, column=options.column, skip_bad=options.skip_bad
        )
        skipped = read_texts.last_skipped
    else:
        records, skipped = (
            [TextRecord(str(text), None, i + 1) for i, text in enumerate(options.prompts)],
            0,
        )
        if not records or not all(r.text.strip() for r in records):
            raise InputError("prompts: give at least one non-empty prompt")
    check_scorer_names(options.scorer_names, options.probe)
    probes = [Probe.load(p) for p in options.probe]
    pairs = read_steering_pairs(options)
    capability = bool(pairs or options.instruct) and not options.no_capability
    if capability:
        capability_inputs(options)  # the files' structure, before the model is loaded
    return CheckedInputs(records, skipped, probes, pairs, capability)


@dataclass
class ToxicityAuditRun:
    """A finished (or resumed) toxicity audit: its folder, summary.json as a dict and report.html."""

    out: Path | str  # a str for an s3:// URL
    summary: dict
    report: Path | str
    seconds: float
    skipped_bad_lines: int = 0

    def to_frame(self):
        """Every estimate: condition, scorer, measure, value, 95% interval, its method, n."""
        import pandas as pd

        from .report import summary_rows

        return pd.DataFrame(summary_rows(self.summary))

    def card_frame(self):
        """The steering report card: per condition, the safety effect beside its cost (empty with
        no intervention)."""
        import pandas as pd

        from .report import card_rows

        return pd.DataFrame(card_rows(self.summary) if self.summary.get("card") else [])

    def agreement_frame(self):
        """Do the scorers agree? Per condition and pair of scorers: Spearman r and Cohen's kappa."""
        import pandas as pd

        from .report import agreement_rows

        return pd.DataFrame(agreement_rows(self.summary))

    def results(self):
        """One row per continuation (prompt, condition, continuation, every scorer's score)."""
        from .audit import load_results

        return load_results(self.out)

    def figures(self) -> list:
        """The report's plotly figures (the card's dose-response picture first)."""
        from .report import audit_figures

        return audit_figures(self.summary, self.results())

    def __repr__(self) -> str:
        settings = self.summary.get("settings", {})
        return (
            f"ToxicityAuditRun(out={str(self.out)!r}, conditions={[c['name'] for c in settings.get('conditions', [])]}, "
            f"scorers={settings.get('scorers')}, n_prompts={settings.get('n_prompts')}, {self.seconds} s)"
        )


def audit_toxicity(model, prompts, out, *, executor=None, **options) -> ToxicityAuditRun:
    """Generate continuations of every prompt under every condition, score them, write resumable
    Parquet shards, summary.json and report.html to `out`; see ToxicityAuditOptions for `options`.
    `executor`: where shards run (workbench.distributed; default this process)."""
    settings = ToxicityAuditOptions(prompts, out, **options)
    return run_checked(model, settings, settings.check(), executor)


def run_checked(
    model, options: ToxicityAuditOptions, inputs: CheckedInputs, executor=None
) -> ToxicityAuditRun:
    """The audit on inputs already checked (the CLI checks them before it loads the model): the
    checks that need the model, then the run, the capability check and the report."""
    from dataclasses import asdict

    from .audit import (
        ToxicityAuditConfig,
        instructed,
        model_settings,
        prompts_sha256,
        run_capability_audit,
        run_toxicity_audit,
        versions,
    )
    from .conditions import (
        capability_inputs,
        capability_settings,
        steering_conditions,
        steering_settings,
    )
    from .datasets import TextRecord
    from .remote import is_url, staged
    from .report import build_report
    from .scanners.toxicity import ProbeScorer, make_scorer
    from .validate import check_context

    records = inputs.records
    check_context(model, records, options.max_new_tokens)
    if options.instruct:
        check_context(
            model,
            [TextRecord(instructed(r.text, options.instruct), r.path, r.line) for r in records],
            options.max_new_tokens,
        )
    items = capability_inputs(options, model) if inputs.capability else []
    detoxify = {
        k: v
        for k, v in {
            "checkpoint": options.detoxify_checkpoint,
            "huggingface_config_path": options.detoxify_config,
        }.items()
        if v
    }
    scorers = []  # built before the steering vector: a probe for another model is refused before any model work
    for name in options.scorer_names:
        if name == "probe":
            scorers += [
                ProbeScorer(model, probe, path=str(Path(path).resolve()))
                for probe, path in zip(inputs.probes, options.probe)
            ]
        else:
            scorers.append(make_scorer(name, **(detoxify if name != "profanity-check" else {})))
    pairs = inputs.steering_pairs
    conditions, vector = steering_conditions(options, model, pairs)
    prompts_file = (
        str(options.prompts) if isinstance(options.prompts, (str, Path)) else "<list of prompts>"
    )
    config = ToxicityAuditConfig(
        model=model_settings(model),
        prompts_file=prompts_file,
        prompts_sha256=prompts_sha256(records),
        n_prompts=len(records),
        scorers=[
            s.name if not isinstance(s, ProbeScorer) else f"probe:{s.probe.hook}" for s in scorers
        ],
        scorer_details=[s.details() for s in scorers],
        seed=options.seed,
        max_new_tokens=options.max_new_tokens,
        samples=options.samples,
        temperature=options.temperature,
        raw=options.raw,
        batch_size=options.batch_size,
        shard_size=options.shard_size,
        bootstrap=options.bootstrap,
        steer=steering_settings(options, pairs),
        instruct=options.instruct,
        conditions=[asdict(c) for c in conditions],
        versions=versions(),
    )
    start = time.perf_counter()
    with staged(
        options.out
    ) as out:  # an s3:// URL works in a local copy that is uploaded shard by shard
        run_toxicity_audit(model, records, out, config, scorers, vector, executor=executor)
        if items:
            run_capability_audit(
                model,
                items,
                out / "capability",
                capability_settings(options, model, pairs, conditions, items),
                vector,
                executor=executor,
            )
        report = build_report(out)
        summary = json.loads((out / "summary.json").read_text())
    where = Path(options.out) if not is_url(options.out) else options.out
    return ToxicityAuditRun(
        where,
        summary,
        report if not is_url(options.out) else f"{options.out}/{Path(report).name}",
        round(time.perf_counter() - start, 1),
        inputs.skipped_bad_lines,
    )
