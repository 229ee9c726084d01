"""What the audit verbs do once their arguments are parsed (`audit_verbs` declares them;
this module is imported only when one of them runs, so --help loads no torch)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd

from ..audit.conditions import audit_settings, read_steering_pairs, steering_conditions
from ..audit.kinds import run_bias_audit, run_counterfactual_audit, run_toxigen_audit
from ..audit.toxicity import ToxicityAuditOptions, run_checked
from ..core.datasets import read_bias_pairs, read_input_bytes, read_texts, read_toxigen
from ..core.errors import InputError
from ..core.storage import write_atomically
from ..interp.probes import texts_hash
from ..report.folder import LOCALISATION_FILE
from ..report.html import audit_folders, build_report
from ..report.tables import card_findings, card_rows, summary_rows
from ..safety.bias import DEFAULT_METRIC
from ..safety.localise import BiasLocalisation, check_localisation, localise_bias
from ..safety.scorers import check_scorer_names, make_scorer
from ..safety.toxigen import toxigen_groups
from .common import emit, say
from .running import executor_from, load_model


def cmd_audit_toxicity(args) -> int:
    options = ToxicityAuditOptions(
        **{f.name: getattr(args, f.name) for f in fields(ToxicityAuditOptions)}
    )
    inputs = options.check()  # every file read and checked before the model is loaded
    executor = executor_from(args)
    run = run_checked(load_model(args), options, inputs, executor, progress=not args.json)
    summary = {
        **run.summary,
        "seconds": run.seconds,
        "skipped_bad_lines": run.skipped_bad_lines,
        "report": str(run.report),
    }
    emit(
        args,
        summary,
        _table_text(summary)
        + f"\nreport: {run.report}"
        + (f" ({run.skipped_bad_lines} bad lines skipped)" if run.skipped_bad_lines else ""),
    )
    return 0


def _table_text(summary: dict) -> str:
    """The audit's main table (every interval written out) and how its intervals were made."""
    card = card_rows(summary) if summary.get("card") else []
    return (
        pd.DataFrame(summary_rows(summary)).fillna("").to_string(index=False)
        + (
            "\n\nsteering report card:\n" + pd.DataFrame(card).fillna("").to_string(index=False)
            if card
            else ""
        )
        + "".join(
            f"\n  {name}: {'; '.join(notes)}" for name, notes in card_findings(summary).items()
        )
        + "\n95% intervals: "
        + "; ".join(summary["methods"])
        + f". No interval below n = {summary['min_n']} (the count is shown instead)."
        + _localisation_text(summary)
    )


def _localisation_text(summary: dict) -> str:
    """The bias localisation's findings, when the audit has one."""
    if not summary.get("localisation"):
        return ""

    return "\n\nwhere the bias lives:\n" + "\n".join(
        f"  {line}" for line in BiasLocalisation.from_dict(summary["localisation"]).summary_lines()
    )


def cmd_audit_toxigen(args) -> int:
    rows = read_toxigen(args.data)
    groups = toxigen_groups(rows, args.groups)  # bad folder or group: exit 2 before the model
    if args.scorers == "probe" or "," in args.scorers:
        raise InputError(
            "the ToxiGen audit takes one text scorer: auto, profanity-check or detoxify[:variant]"
        )
    check_scorer_names([args.scorers], [])
    pairs = read_steering_pairs(args)
    executor = executor_from(args)
    model = load_model(args)
    scorer = make_scorer(args.scorers)
    conditions, vector = steering_conditions(args, model, pairs)

    settings = audit_settings(
        args,
        model,
        pairs,
        conditions,
        data=str(args.data),
        data_sha256=texts_hash([r.text for r in rows], [r.label for r in rows]),
        groups=groups,
        scorer=scorer.name,
        scorer_details=[scorer.details()],
        prompts_per_group=args.prompts_per_group,
        max_new_tokens=args.max_new_tokens,
    )
    return _finish_audit(
        args,
        run_toxigen_audit,
        (model, args.data, rows, groups, args.out, settings, scorer, vector),
        executor,
    )


def _finish_audit(args, runner, runner_args: tuple, executor, after=None) -> int:
    """Run (or resume) an audit, then `after()` if given (bias localisation), build its report, print its table."""
    start = time.perf_counter()
    runner(*runner_args, executor=executor, progress=not args.json)
    if after is not None:
        after()
    report = build_report(args.out)
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    summary.update(seconds=round(time.perf_counter() - start, 1), report=str(report))
    emit(args, summary, _table_text(summary) + f"\n{summary['seconds']} s; report: {report}")
    for warning in summary.get("warnings", []):  # e.g. bias metrics that disagree
        print(f"workbench audit: warning: {warning}", file=sys.stderr)
    return 0


def cmd_audit_counterfactual(args) -> int:
    records = read_texts(args.templates)
    bad = [r for r in records if "{group}" not in r.text]
    if bad:
        raise InputError("template has no {group} slot", bad[0].path, bad[0].line)
    if len(args.groups) < 2:
        raise InputError("give at least two --groups")
    if args.scorers != "none":
        check_scorer_names([args.scorers], [])
    pairs = read_steering_pairs(args)
    executor = executor_from(args)
    model = load_model(args)
    scorer = None if args.scorers == "none" else make_scorer(args.scorers)
    conditions, vector = steering_conditions(args, model, pairs)
    templates = [r.text for r in records]
    settings = audit_settings(
        args,
        model,
        pairs,
        conditions,
        templates_file=str(args.templates),
        templates=templates,
        groups=args.groups,
        continuations=args.continuations,
        scorer=scorer.name if scorer else None,
        scorer_details=[scorer.details()] if scorer else [],
        max_new_tokens=args.max_new_tokens,
        shard_size=args.shard_size,
    )
    return _finish_audit(
        args,
        run_counterfactual_audit,
        (model, templates, args.out, settings, scorer, vector),
        executor,
    )


def cmd_report(args) -> int:
    path = build_report(args.folder, args.plotly)
    folder = Path(args.folder)
    if (folder / "run.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
    else:
        summary = {"audits": [str(p) for p in audit_folders(folder)]}
    emit(args, {**summary, "report": str(path)}, f"report: {path}")
    return 0


def cmd_audit_bias(args) -> int:
    pairs = read_bias_pairs(
        args.pairs,
        args.more_column,
        args.less_column,
        args.direction_column,
        args.type_column,
        args.cluster_column,
    )
    steer_pairs = read_steering_pairs(args)
    executor = executor_from(args)
    model = load_model(args)
    if args.localise:
        check_localisation(
            model,
            pairs,
            args.top_k,
            args.attribution,
            args.steps,
            args.skip_bad,
            args.heldout,
            args.qa,
            source=str(args.pairs),
        )
    conditions, vector = steering_conditions(args, model, steer_pairs)
    settings = audit_settings(
        args,
        model,
        steer_pairs,
        conditions,
        pairs_file=str(args.pairs),
        pairs_sha256=hashlib.sha256(read_input_bytes(args.pairs, "bias CSV")).hexdigest(),
        n_pairs=len(pairs),
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        metric=args.metric or DEFAULT_METRIC,
    )
    localise = (lambda: _localise(args, model, pairs)) if args.localise else None
    return _finish_audit(
        args, run_bias_audit, (model, pairs, args.out, settings, vector), executor, localise
    )


def _localise(args, model, pairs) -> None:
    """The bias localisation of an audit folder: localisation.json (and components.csv) beside the shards."""
    say(
        args,
        f"localising the bias: {args.attribution} on every usable pair, exact check, ablation of the top "
        f"{args.top_k} heads ...",
    )
    result = localise_bias(
        model,
        pairs,
        args.top_k,
        args.attribution,
        args.steps,
        args.skip_bad,
        args.heldout,
        args.qa,
        seed=args.seed,
        n_boot=args.bootstrap,
        source=str(args.pairs),
        progress=not args.json,
    )
    out = Path(args.out)
    write_atomically(
        out / LOCALISATION_FILE, json.dumps(result.to_dict(), indent=2, default=str) + "\n"
    )
    write_atomically(out / "localisation_components.csv", result.to_frame().to_csv(index=False))
