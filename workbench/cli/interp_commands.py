"""What the interp verbs do once their arguments are parsed (`interp_verbs` declares them;
this module is imported only when one of them runs, so --help loads no torch)."""

from __future__ import annotations

import math
import shlex

from ..audit.conditions import capability_inputs
from ..core.checks import check_context
from ..core.datasets import read_patch_pairs
from ..core.errors import InputError
from ..interp.attention import attention_patterns, head_scores
from ..interp.attribution import METHODS as ATTRIBUTION_METHODS
from ..interp.attribution import attribute, self_check_from_exact
from ..interp.lens import direct_logit_attribution, logit_lens
from ..interp.patch_results import MIN_PEARSON, MIN_RECALL
from ..interp.patching import KINDS, check_kinds, check_memory, patch_task, prepare
from ..interp.steering import SweepResult, logprob_gap, mean_difference_vector, read_pairs, steer
from ..model.generation import format_prompt, generate
from ..model.tokens import check_layer, single_token_id
from ..report.tables import estimate_text
from ..safety.capability import capability_rows, continuation_fluency, summarise_capability
from ..viz import (
    dla_bars,
    head_pattern,
    head_score_grid,
    logit_lens_heatmap,
    methods_vs_exact,
    patching_heatmap,
    self_check_scatter,
    steering_sweep,
)
from .common import emit, progress, say
from .running import load_model, write_html


def cmd_attention(args) -> int:
    model = load_model(args)

    check_context(model, [args.prompt], where="--prompt")
    if args.layer is not None:
        check_layer(model, args.layer)
    if args.head is not None and not 0 <= args.head < model.info.n_heads:
        raise InputError(
            f"head {args.head} is out of range: {model.info.name} has heads 0..{model.info.n_heads - 1}"
        )
    say(
        args,
        "scoring every head (previous-token, duplicate-token, induction) on repeated random tokens ...",
    )
    scores = head_scores(model)
    table = scores.to_frame()
    best = table.iloc[0]
    layer = args.layer if args.layer is not None else int(best["layer"])
    head = args.head if args.head is not None else int(best["head"])
    patterns = attention_patterns(model, args.prompt, prepend_bos=args.prepend_bos)
    top = table.head(args.top)
    summary = {
        "model": model.info.name,
        "tokens": patterns.tokens,
        "top_heads": top.to_dict("records"),
        "shown_head": {
            "layer": layer,
            "head": head,
            "pattern": patterns.head(layer, head).tolist(),
        },
    }
    emit(args, summary, top.to_string(index=False))
    write_html(
        args,
        [
            head_score_grid(scores, "induction"),
            head_score_grid(scores, "previous_token"),
            head_pattern(patterns, layer, head),
        ],
        f"attention: {args.prompt[:40]}",
    )
    return 0


def cmd_lens(args) -> int:
    model = load_model(args)

    check_context(model, [args.prompt], where="--prompt")
    tracked = list(args.answers) if args.answers else []
    lens = logit_lens(model, args.prompt, tracked=tracked, prepend_bos=args.prepend_bos)
    summary = {
        "model": model.info.name,
        "tokens": lens.tokens,
        "lens": lens.to_frame().to_dict("records"),
    }
    figs = [logit_lens_heatmap(lens)]
    human = lens.to_frame().to_string(index=False)
    if args.answers:
        dla = direct_logit_attribution(
            model, args.prompt, *args.answers, prepend_bos=args.prepend_bos
        )
        frame = dla.to_frame()
        summary["dla"] = {
            "logit_diff": dla.logit_diff,
            "sum_of_components": float(dla.values.sum()),
            "components": frame.to_dict("records"),
        }
        top = frame.reindex(frame["value"].abs().sort_values(ascending=False).index).head(10)
        human += f"\n\nlogit diff {dla.logit_diff:.3f}; largest components:\n" + top.to_string(
            index=False
        )
        figs.append(dla_bars(dla))
    emit(args, summary, human)
    write_html(args, figs, f"lens: {args.prompt[:40]}")
    return 0


def cmd_patch(args) -> int:
    kinds = [
        k.strip()
        for k in (args.kinds or "resid_pre,attn_head,attn_out,mlp_out").split(",")
        if k.strip()
    ]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown patch kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    clean, corrupt, answer, other = _patch_question(args)
    model = load_model(args)
    check_context(model, clean + corrupt, where="--pairs" if args.pairs else "--clean/--corrupt")
    methods = ["exact", *ATTRIBUTION_METHODS] if args.method == "all" else [args.method]
    attribution_methods = [m for m in methods if m != "exact"]
    # The pairs, the answers and the memory are checked before the first progress line, so bad input
    # still ends in one line.
    task = prepare(model, clean, corrupt, answer, other, prepend_bos=args.prepend_bos)
    if args.kinds is None and not task.one_length:
        kinds.remove("resid_pre")
    check_kinds(model, task, kinds)
    check_memory(
        model,
        task,
        exact="exact" in methods or args.verify > 0,
        attribution=bool(attribution_methods),
    )
    estimates = {}
    for method in attribution_methods:
        say(
            args,
            f"{method}: "
            + {
                "atp": "one clean forward pass, one corrupted forward and backward pass",
                "atp*": f"one clean forward pass, {model.info.n_layers + 1} corrupted forward and "
                "backward passes (GradDrop), batched",
                "eap-ig": f"one clean forward pass, {args.steps} forward and backward passes",
            }[method]
            + " ...",
        )
        estimates[method] = attribute(
            model,
            task,
            tuple(kinds),
            method,
            args.steps,
            verify=args.verify if "exact" not in methods else 0,
            seed=args.seed,
            progress=not args.json,
        )
    if "exact" in methods:
        say(args, f"exact patching of {', '.join(kinds)}: one forward pass per cell, batched ...")
    exact = {
        kind: patch_task(model, task, kind, progress=not args.json)
        for kind in (kinds if "exact" in methods else [])
    }
    results: dict[str, dict] = {}
    figs = []
    lines = [
        f"{'pair' if task.n_pairs == 1 else f'{task.n_pairs} pairs, mean'}: clean logit diff "
        f"{task.clean_metric:.3f}, corrupted {task.corrupt_metric:.3f}"
    ]
    for kind in kinds:
        entry: dict = {}
        for method in methods:
            result = exact[kind] if method == "exact" else estimates[method][kind]
            if kind in exact and method != "exact" and args.verify:
                result = self_check_from_exact(result, exact[kind], args.verify)
            entry[method] = {
                "axes": result.axes,
                "labels": result.labels,
                "values": result.values.tolist(),
                "seconds": round(result.seconds, 3),
            }
            lines.append(
                f"{kind:14s} {method:7s} max {result.values.max():.3f} min {result.values.min():.3f} "
                f"({result.seconds:.1f} s)"
            )
            if result.check is not None:
                check = result.check
                entry[method]["self_check"] = {
                    "k": check.k,
                    "checked": check.checked,
                    "cells": check.cells,
                    "pearson": check.pearson,
                    "spearman": check.spearman,
                    f"recall_at_{check.k}": check.recall,
                    "recall_low": check.recall_low,
                    "recall_high": check.recall_high,
                    "max_error": check.max_error,
                    "max_error_cell": check.max_error_cell,
                    "passed": check.passed,
                }
                lines.append(f"{'':14s} {check.summary()}")
                if not check.passed:
                    lines.append(
                        f"{'':14s} to patch every cell exactly: {_exact_command(args, kind)}"
                    )
            figs.append(patching_heatmap(result))
            if result.check is not None and "exact" not in methods:
                figs.append(self_check_scatter(result))
            if method == "exact":
                exact_result = result
            else:
                estimates[method][kind] = result
        if "exact" in methods and attribution_methods:
            figs.append(
                methods_vs_exact(exact_result, [estimates[m][kind] for m in attribution_methods])
            )
        results[kind] = entry
    summary = {
        "model": model.info.name,
        "pairs": [
            {"clean": c, "corrupt": x, "answer": a, "other": o}
            for c, x, a, o in zip(clean, corrupt, answer, other)
        ],
        "metric": "logit difference (answer - other) at the last position, mean over pairs",
        "clean_metric": task.clean_metric,
        "corrupt_metric": task.corrupt_metric,
        "self_check_thresholds": {"pearson": MIN_PEARSON, "recall": MIN_RECALL},
        "results": results,
    }
    emit(args, summary, "\n".join(lines))
    write_html(args, figs, "patching")
    return 0


def _exact_command(args, kind: str) -> str:
    """The command that patches every `kind` cell of the same question exactly."""
    words = ["workbench", "patch", "--model", args.model, "--method", "exact", "--kinds", kind]
    if args.pairs:
        words += ["--pairs", str(args.pairs)]
    else:
        words += ["--clean", args.clean, "--corrupt", args.corrupt, "--answers", *args.answers]
    if args.prepend_bos is not None:
        words.append("--prepend-bos" if args.prepend_bos else "--no-prepend-bos")
    return shlex.join(words)


def _patch_question(args) -> tuple[list[str], list[str], list[str], list[str]]:
    """(clean, corrupt, answer, other) lists from --pairs, or from --clean/--corrupt/--answers (one pair)."""
    single = [args.clean, args.corrupt, args.answers]
    if args.pairs:
        if any(value is not None for value in single):
            raise InputError("give either --pairs FILE or --clean/--corrupt/--answers, not both")

        pairs = read_patch_pairs(args.pairs)
        return (
            [p.clean for p in pairs],
            [p.corrupt for p in pairs],
            [p.answer for p in pairs],
            [p.other for p in pairs],
        )
    missing = [
        flag for flag, value in zip(("--clean", "--corrupt", "--answers"), single) if value is None
    ]
    if missing:
        raise InputError(f"patch needs {', '.join(missing)} (or --pairs FILE)")
    return [args.clean], [args.corrupt], [args.answers[0]], [args.answers[1]]


def cmd_steer(args) -> int:
    pairs = read_pairs(args.pairs)
    if bool(args.positive_words) != bool(args.negative_words):
        raise InputError("give both --positive-words and --negative-words, or neither")
    if not args.no_capability:
        capability_inputs(args)  # the files' structure, before the model is loaded
    model = load_model(args)
    check_layer(model, args.layer)
    for word in (args.positive_words or []) + (args.negative_words or []):
        single_token_id(model, word)

    check_context(model, [format_prompt(model, args.prompt)], args.max_new_tokens, where="--prompt")

    items = [] if args.no_capability else capability_inputs(args, model)
    vector = mean_difference_vector(model, pairs, args.layer, source=str(args.pairs))
    rows = []
    for alpha in progress(args, args.alpha, "steering", "coefficient"):
        with steer(model, vector, alpha):
            generation = generate(
                model, args.prompt, max_new_tokens=args.max_new_tokens, progress=False
            )[0]
            row = {"alpha": alpha, "text": generation.text}
            if args.positive_words:
                row["logprob_gap"] = logprob_gap(
                    model, [args.prompt], args.positive_words, args.negative_words
                )
            capability = summarise_capability(capability_rows(model, items)) if items else {}
        # The report card's columns: what this coefficient costs (fluency judged by the unsteered model).
        fluency = continuation_fluency(model, [generation], batch_size=1)[0]
        if fluency["continuation_scored_tokens"]:
            row["continuation_perplexity"] = math.exp(
                fluency["continuation_nll"] / fluency["continuation_scored_tokens"]
            )
        row.update(
            repeated_3grams=fluency["repeated_3grams"],
            distinct_2=fluency["distinct_2"],
            **{k: v.to_dict() for k, v in capability.items()},
        )
        rows.append(row)
    summary = {
        "model": model.info.name,
        "pairs": str(args.pairs),
        "n_pairs": len(pairs),
        "layer": args.layer,
        "vector_norm": float(vector.vector.norm()),
        "rows": rows,
    }
    emit(
        args,
        summary,
        "\n".join(_steer_line(r) for r in rows)
        + (
            "\n(one continuation per coefficient: its fluency has no interval; for intervals over many prompts, "
            "run `workbench audit toxicity --steer ...`)"
        ),
    )
    if args.positive_words:
        write_html(
            args,
            [
                steering_sweep(
                    SweepResult(
                        [r["alpha"] for r in rows],
                        [r["logprob_gap"] for r in rows],
                        "logprob_gap",
                        args.layer,
                        vector.method,
                    )
                )
            ],
            "steering",
        )
    return 0


def _steer_line(row: dict) -> str:
    """One coefficient of `workbench steer`: its costs, then its continuation."""
    costs = [f"gap {row['logprob_gap']:+.2f}"] if "logprob_gap" in row else []
    if "qa_accuracy" in row:
        costs.append(f"QA {estimate_text(row['qa_accuracy'], 1, True)}")
    if "heldout_perplexity" in row:
        costs.append(f"held-out ppl {estimate_text(row['heldout_perplexity'], 1)}")
    if "continuation_perplexity" in row:
        costs.append(f"continuation ppl {row['continuation_perplexity']:.1f}")
    costs.append(f"repeated 3-grams {row['repeated_3grams']:.2f}")
    return f"alpha {row['alpha']:+g} ({'; '.join(costs)}): {row['text']}"
