"""The toxicity audit as one library call: the same run as `workbench audit toxicity`.

    from workbench.audit import audit_toxicity

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

One run audits one or more conditions (`workbench.audit.conditions`): the unsteered baseline, a
condition per steering coefficient, a directional ablation, the prompting baseline. Each shard of
prompts generates continuations (greedy, or `samples` seeded samples per prompt), scores prompt
and continuation with every scorer, and judges the continuations' fluency with the unsteered
model; every sampled continuation draws from its own generator seeded by (seed, condition,
prompt row, sample), so the results equal an uninterrupted run's row for row, for any batch
size, shard size or worker. With an intervention, the capability check runs into
``<out>/capability``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import pandas as pd

from ..core.checks import check_args, check_context
from ..core.datasets import TextRecord, read_texts
from ..core.display import Tabled, clip
from ..core.errors import InputError
from ..core.progress import advance
from ..core.remote import is_url, staged
from ..interp.probes import Probe
from ..model.generation import generate, row_seed
from ..model.registry import REGISTRY
from ..report.figures import audit_figures
from ..report.folder import AUDIT_FORMAT, load_results, toxicity_column
from ..report.html import build_report
from ..report.tables import agreement_rows, card_rows, summary_rows
from ..safety.capability import continuation_fluency
from ..safety.interventions import generate_under, load_intervention
from ..safety.scorers import ProbeScorer, check_scorer_names, make_scorer
from .conditions import (
    Condition,
    capability_inputs,
    capability_settings,
    instructed,
    intervention,
    intervention_conditions,
    read_steering_pairs,
    steering_conditions,
    steering_settings,
)
from .kinds import run_capability_audit
from .runner import run_sharded
from .settings import model_settings, versions


@dataclass(frozen=True)
class ToxicityAuditConfig:
    """Everything that decides the results (saved as run.json and compared on resume)."""

    model: dict
    prompts_file: str
    prompts_sha256: str
    n_prompts: int
    scorers: list[str]
    scorer_details: list[dict] = field(default_factory=list)
    seed: int = 0
    max_new_tokens: int = 32
    samples: int = 1
    temperature: float = 1.0
    raw: bool = False
    batch_size: int = 8
    shard_size: int = 32
    bootstrap: int = 2000
    steer: dict | None = None
    instruct: str | None = None
    conditions: list[dict] = field(default_factory=list)
    interventions: list[dict] = field(default_factory=list)
    common_seeds: bool = False
    versions: dict = field(default_factory=dict)
    audit: str = "toxicity"
    format: str = AUDIT_FORMAT


def prompts_sha256(records: Sequence[TextRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.text.encode() + b"\n")
    return digest.hexdigest()


def run_toxicity_audit(
    model,
    records: Sequence[TextRecord],
    out: str | Path,
    config: ToxicityAuditConfig,
    scorers: list,
    vector=None,
    progress: bool = True,
    executor=None,
    interventions: dict | None = None,
) -> Path:
    """Run (or resume) the audit described by `config`; returns the output folder.

    `scorers` are objects with `.name` and `.score(texts)` (workbench.safety.scorers);
    `vector` is the SteeringVector that steer/ablate conditions use; `interventions` maps each
    "intervention" condition's name to its `Intervention`.
    """

    def shards(model):
        def make_shard(condition: Condition, c_index: int, s_index: int, start: int, end: int):
            return _run_shard(
                model, records[start:end], start, condition, c_index, config, scorers, vector,
                (interventions or {}).get(condition.name),
            )  # fmt: skip

        return make_shard

    settings = asdict(config)
    for key in ("interventions", "common_seeds"):
        if not settings[key]:
            del settings[key]  # as run.json was before these options: older audits still resume
    return run_sharded(
        out,
        settings,
        len(records),
        config.shard_size,
        model,
        shards,
        rows_per_item=config.samples,
        progress=progress,
        executor=executor,
    )


def _run_shard(
    model,
    records: Sequence[TextRecord],
    first_index: int,
    condition: Condition,
    c_index: int,
    config: ToxicityAuditConfig,
    scorers: list,
    vector,
    saved=None,
):
    """One shard's rows. Sampled continuations draw from one generator per (seed, condition,
    prompt row, sample), so they do not depend on the batch size, the shard size or the worker.
    saved: the condition's `Intervention` (for an "intervention" condition)."""
    instruction = config.instruct if condition.kind == "instruct" else None
    prompts = [instructed(r.text, instruction) for r in records]
    rows, generations = [], []
    options = dict(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.samples > 1,
        temperature=config.temperature,
        raw=config.raw,
        batch_size=config.batch_size,
        progress=False,
        on_batch=advance,  # the audit's bar counts rows as each batch finishes
    )
    # a conditional intervention decides per prompt, on the unmodified model, once
    fired = saved.fires(model, prompts) if saved is not None else [True] * len(prompts)
    # One generate call for all (prompt, sample) rows, prompt-major: a batch holds one prompt's
    # samples, of equal length (no padding), as HF's num_return_sequences would batch them.
    pairs = [(i, sample) for i in range(len(records)) for sample in range(config.samples)]
    # common random numbers: every condition draws with the same seeds, so a paired change from
    # the baseline reflects the condition rather than a different draw
    stream = 0 if config.common_seeds else c_index
    seeds = [row_seed(config.seed, stream, first_index + i, sample) for i, sample in pairs]
    texts = [prompts[i] for i, _ in pairs]
    with intervention(model, condition, vector):
        if saved is None:
            outputs = generate(model, texts, seeds=seeds, **options)
        else:
            row_fired = [fired[i] for i, _ in pairs]
            outputs, _ = generate_under(model, saved, texts, seeds, fired=row_fired, **options)
    by_pair = dict(zip(pairs, outputs))
    for sample in range(config.samples):
        for i, record in enumerate(records):
            output = by_pair[(i, sample)]
            generations.append(output)
            rows.append(
                {
                    "condition": condition.name,
                    "alpha": condition.alpha,
                    "row": first_index + i,
                    "sample": sample,
                    "line": record.line,
                    "prompt": record.text,
                    "continuation": output.text,
                    "new_tokens": len(output.new_tokens),
                    "intervened": bool(fired[i]) and condition.kind != "baseline",
                }
            )
    # Fluency is judged by the unsteered model (outside the intervention), on the exact prompt tokens,
    # one continuation at a time: no padding, so the numbers do not depend on the batch or shard size.
    for row, fluency in zip(rows, continuation_fluency(model, generations, batch_size=1)):
        row.update(fluency)
    frame = pd.DataFrame(rows)
    for scorer in scorers:
        for column, texts in (
            ("prompt", frame["prompt"].tolist()),
            ("continuation", frame["continuation"].tolist()),
        ):
            scores = scorer.score(texts)
            name = scores["scorer"].iloc[0] if len(scores) else scorer.name
            frame[toxicity_column(column, name)] = scores["toxicity"].to_numpy()
    return frame


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
    intervention: Sequence[str] = ()
    detoxify_checkpoint: str | None = None
    detoxify_config: str | None = None
    max_new_tokens: int = 32
    samples: int = 1
    temperature: float = 1.0
    seed: int = 0
    common_seeds: bool = False
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
    command: ClassVar[str] = (
        "audit"  # the verb whose rules `check_args` applies (--out may be a URL)
    )

    def __post_init__(self):
        if not isinstance(self.scorers, str):
            self.scorers = ",".join(self.scorers)
        self.alpha = [float(a) for a in self.alpha]
        self.probe = [str(p) for p in self.probe]
        self.intervention = [str(p) for p in self.intervention]
        if isinstance(self.heldout, (str, Path)):
            self.heldout = [self.heldout]

    @property
    def scorer_names(self) -> list[str]:
        return [n.strip() for n in self.scorers.split(",") if n.strip()]

    def check(self) -> "CheckedInputs":
        """Every check that needs no model (the CLI's `check_args`, then the files' contents);
        InputError naming the option, file or line on the first problem."""
        check_args(self, REGISTRY)  # also makes a file:// URL a path
        return _read_inputs(self)


@dataclass(frozen=True)
class CheckedInputs:
    """The inputs read and checked before the model is loaded."""

    records: list
    skipped_bad_lines: int
    probes: list
    steering_pairs: list | None
    capability: bool
    interventions: list = field(default_factory=list)


def _read_inputs(options: ToxicityAuditOptions) -> CheckedInputs:
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
    by_hook: dict[str, str] = {}
    for probe, path in zip(probes, options.probe):
        if probe.hook in by_hook:
            # both would write the one column probe:<hook>, the second over the first
            raise InputError(
                f"--probe {by_hook[probe.hook]} and --probe {path} both read {probe.hook}; their "
                "scores would share one column: give one probe per hook"
            )
        by_hook[probe.hook] = path
    pairs = read_steering_pairs(options)
    interventions = [load_intervention(where) for where in options.intervention]
    names = ["baseline", "instruct", "ablate"] + [f"steer{a:+g}" for a in options.alpha]
    for where, iv in zip(options.intervention, interventions):
        if iv.name in names:
            raise InputError(
                f"--intervention {where}: its name {iv.name!r} is already a condition of this audit"
            )
        names.append(iv.name)
    capability = bool(pairs or options.instruct or interventions) and not options.no_capability
    if capability:
        capability_inputs(options)  # the files' structure, before the model is loaded
    return CheckedInputs(records, skipped, probes, pairs, capability, interventions)


@dataclass
class ToxicityAuditRun(Tabled):
    """A finished (or resumed) toxicity audit: its folder, summary.json as a dict and report.html."""

    out: Path | str  # a str for an s3:// URL
    summary: dict
    report: Path | str
    seconds: float
    skipped_bad_lines: int = 0

    def to_frame(self):
        """Every estimate: condition, scorer, measure, value, 95% interval, its method, n."""
        return pd.DataFrame(summary_rows(self.summary))

    def card_frame(self):
        """The steering report card: per condition, the safety effect beside its cost (empty with
        no intervention)."""
        return pd.DataFrame(card_rows(self.summary) if self.summary.get("card") else [])

    def agreement_frame(self):
        """Do the scorers agree? Per condition and pair of scorers: Spearman r and Cohen's kappa."""
        return pd.DataFrame(agreement_rows(self.summary))

    def results(self):
        """One row per continuation (prompt, condition, continuation, every scorer's score)."""
        return load_results(self.out)

    def figures(self) -> list:
        """The report's plotly figures (the card's dose-response picture first)."""
        return audit_figures(self.summary, self.results())

    def __repr__(self) -> str:
        settings = self.summary.get("settings", {})
        conditions = [c["name"] for c in settings.get("conditions", [])]
        return (
            f"ToxicityAuditRun(out={clip(str(self.out), 60)}, {len(conditions)} conditions "
            f"{clip(', '.join(conditions), 60)}, scorers {settings.get('scorers')}, "
            f"{settings.get('n_prompts')} prompts, {self.seconds:.0f} s; .to_frame() for every "
            "estimate)"
        )


def audit_toxicity(
    model, prompts, out, *, executor=None, progress: bool = True, **options
) -> ToxicityAuditRun:
    """Generate continuations of every prompt under every condition, score them, write resumable
    Parquet shards, summary.json and report.html to `out`; see ToxicityAuditOptions for `options`.
    `executor`: where shards run (workbench.model.distributed; default this process); progress:
    bars on stderr that move per batch of rows."""
    settings = ToxicityAuditOptions(prompts, out, **options)
    return run_checked(model, settings, settings.check(), executor, progress)


def run_checked(
    model,
    options: ToxicityAuditOptions,
    inputs: CheckedInputs,
    executor=None,
    progress: bool = True,
) -> ToxicityAuditRun:
    """The audit on inputs already checked (the CLI checks them before it loads the model): the
    checks that need the model, then the run, the capability check and the report. progress:
    bars on stderr that move per batch of rows."""
    records = inputs.records
    check_context(model, records, options.max_new_tokens)
    if options.instruct:
        check_context(
            model,
            [TextRecord(instructed(r.text, options.instruct), r.path, r.line) for r in records],
            options.max_new_tokens,
        )
    for iv in inputs.interventions:
        iv.check_fits(model)
        if iv.prefix:
            check_context(
                model,
                [TextRecord(iv.prompt_text(r.text), r.path, r.line) for r in records],
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
    conditions += intervention_conditions(inputs.interventions)
    saved = {iv.name: iv for iv in inputs.interventions}
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
        interventions=[iv.describe() for iv in inputs.interventions],
        common_seeds=options.common_seeds,
        versions=versions(),
    )
    start = time.perf_counter()
    # an s3:// URL works in a local copy that is uploaded shard by shard
    with staged(options.out) as out:
        run_toxicity_audit(model, records, out, config, scorers, vector, progress, executor, saved)
        if items:
            settings = capability_settings(options, model, pairs, conditions, items)
            if config.interventions:
                settings["interventions"] = config.interventions
            run_capability_audit(
                model, items, out / "capability", settings, vector, progress, executor, saved
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
