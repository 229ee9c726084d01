"""`workbench probe train` and `workbench probe apply`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..core.datasets import read_labeled, read_texts, read_toxigen
from ..core.errors import InputError
from ..core.stats import estimate_from_dict
from ..interp.probes import (
    L2_GRID,
    Probe,
    check_probe_fits,
    probe_scores,
    token_scores,
    train_probes_on_rows,
)
from ..interp.sparse_probes import sparse_probes
from .common import add_model_args, add_prepend_bos, emit, load_model


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    probe = verbs.add_parser(
        "probe",
        help="Train linear probes on activations, or apply a saved one.",
        description="Train linear probes on activations, or apply a saved one.",
    )
    probe_verbs = probe.add_subparsers(dest="probe_command", metavar="ACTION", required=True)
    for action, func, text in (
        ("train", cmd_probe_train, "Train a probe per hook and report held-out metrics."),
        ("apply", cmd_probe_apply, "Score texts (or each token of one text) with a saved probe."),
    ):
        sub = probe_verbs.add_parser(action, help=text, description=text)
        sub.set_defaults(func=func)
        add_model_args(sub)
    train_cmd = probe_verbs.choices["train"]
    train_cmd.add_argument(
        "--data",
        required=True,
        help="JSONL with text, label (0/1), optional group; or a ToxiGen folder",
    )
    train_cmd.add_argument(
        "--hooks", default="resid_post", help="hook names or patterns (default resid_post)"
    )
    train_cmd.add_argument(
        "--positions",
        choices=["mean_after_first", "mean", "last"],
        default="mean_after_first",
        help="what each text is reduced to (default mean_after_first: the mean without the "
        "first token, whose outsized activation makes plain means track text length)",
    )
    add_prepend_bos(train_cmd)
    train_cmd.add_argument(
        "--split",
        choices=["random", "group"],
        default="random",
        help="random: stratified rows; group: whole groups held out (default random)",
    )
    train_cmd.add_argument(
        "--test-fraction", type=float, default=0.25, help="share held out for test (default 0.25)"
    )
    train_cmd.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share held out for choosing the layer and L2 strength (default 0.2)",
    )
    train_cmd.add_argument(
        "--l2",
        type=float,
        nargs="+",
        default=None,
        metavar="L2",
        help="L2 strengths tried on the validation split (default 0.001 0.01 0.1 1)",
    )
    train_cmd.add_argument(
        "--seed", type=int, default=0, help="split and bootstrap seed (default 0)"
    )
    train_cmd.add_argument(
        "--sparse-k",
        type=int,
        nargs="*",
        default=None,
        metavar="K",
        help="also fit TransformerLens k-sparse probes for these k (with controls); sparse.json",
    )
    train_cmd.add_argument(
        "--out",
        required=True,
        help="folder for the probes: one sub-folder per hook, and chosen/ (the validation choice)",
    )
    apply_cmd = probe_verbs.choices["apply"]
    apply_cmd.add_argument("--probe", required=True, help="a saved probe folder")
    apply_cmd.add_argument("--text", default=None, help="one text to score (or give --input)")
    apply_cmd.add_argument("--input", default=None, help=".txt/.jsonl/.csv of texts")
    apply_cmd.add_argument("--tokens", action="store_true", help="score every token of --text")
    apply_cmd.add_argument(
        "--positions",
        choices=["mean_after_first", "mean", "last"],
        default=None,
        help="positions to read (default: the ones the probe was trained on)",
    )
    apply_cmd.add_argument(
        "--allow-other-positions",
        action="store_true",
        help="read other positions than the probe was trained on (scores not validated)",
    )


def cmd_probe_train(args) -> int:
    data = Path(args.data)
    rows = read_toxigen(data) if data.is_dir() else read_labeled(data)
    if {r.label for r in rows} != {0, 1}:
        raise InputError("labels must contain both 0 and 1", str(data))
    model = load_model(args)
    sweep, cache, seconds = train_probes_on_rows(
        model,
        rows,
        str(data),
        args.hooks,
        args.positions,
        args.split,
        args.test_fraction,
        args.val_fraction,
        args.l2 or L2_GRID,
        args.seed,
        prepend_bos=args.prepend_bos,
    )
    out = Path(args.out)
    for hook, probe in sweep.probes.items():
        probe.save(out / hook)
    best = sweep.best()
    # the validation-chosen probe under a fixed name, for scripts (make demo)
    best.save(out / "chosen")
    frame = sweep.to_frame()
    interval = estimate_from_dict(best.metrics["test_auroc_interval"])
    summary = {
        "model": model.info.name,
        "n_texts": len(rows),
        "split": args.split,
        "positions": args.positions,
        "n_train": sweep.n_train,
        "n_val": sweep.n_val,
        "n_test": sweep.n_test,
        "l2_grid": sweep.l2_grid,
        "chosen": {"hook": best.hook, **best.metrics},
        "seconds": seconds,
        "per_hook": frame.to_dict("records"),
        "out": str(out.resolve()),
    }
    columns = [
        "hook",
        "l2",
        "val_auroc",
        "test_auroc",
        "test_ece",
        "mean_difference_val_auroc",
        "mean_difference_test_auroc",
        "chosen",
    ]
    text = frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    confounded = [
        r["hook"]
        for r in summary["per_hook"]
        if abs(r.get("mean_difference_length_spearman") or 0) > LENGTH_WARNING
    ]
    if confounded:
        warning = (
            f"warning: at {len(confounded)} hooks (e.g. {confounded[0]}) the mean-difference score tracks text "
            f"length (|Spearman| > {LENGTH_WARNING}); with --positions mean the first token's outsized "
            "activation divided by the length dominates; try --positions mean_after_first"
        )
        summary["warnings"] = [warning]
        print(warning, file=sys.stderr)
    if args.sparse_k:
        start = time.perf_counter()
        groups = [r.group for r in rows] if all(r.group for r in rows) else None
        sparse = sparse_probes(
            cache,
            [r.label for r in rows],
            groups,
            split=args.split,
            ks=args.sparse_k,
            test_fraction=args.test_fraction,
            seed=args.seed,
        ).to_frame()
        summary["seconds"]["sparse"] = round(time.perf_counter() - start, 2)
        summary["sparse"] = sparse.to_dict("records")
        (out / "sparse.json").write_text(
            json.dumps(summary["sparse"], indent=2, default=str) + "\n"
        )
        text += "\n\nk-sparse probes (TransformerLens):\n" + sparse[
            ["hook", "k", "auroc", "random_coordinate_auroc", "label_shuffle_auroc"]
        ].to_string(index=False)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    emit(
        args,
        summary,
        text
        + f"\nchosen on validation ({sweep.n_val} texts): {best.hook}, L2 {best.metrics['l2']:g}"
        f"\ntest AUROC ({sweep.n_test} texts): {interval.text()}; expected calibration error "
        f"{best.metrics['test_ece']:.3f}\ncaching {seconds['caching']:.1f} s, training {seconds['training']:.1f} s; "
        f"probes in {out}",
    )
    return 0


LENGTH_WARNING = (
    0.8  # |Spearman| of mean-difference scores with text length above which the CLI warns
)


def cmd_probe_apply(args) -> int:
    if bool(args.text) == bool(args.input):
        raise InputError("give exactly one of --text and --input")
    if args.tokens and not args.text:
        raise InputError("--tokens needs --text")
    probe = Probe.load(args.probe)
    records = read_texts(args.input) if args.input else None
    model = load_model(args)
    if args.tokens:
        tokens, scores = token_scores(model, probe, args.text)
        rows = [{"token": t, "score": float(s)} for t, s in zip(tokens, scores)]
    else:
        positions = check_probe_fits(model, probe, args.positions, args.allow_other_positions)
        texts = [r.text for r in records] if records else [args.text]
        scores = probe_scores(
            model, probe, texts, positions, allow_other_positions=args.allow_other_positions
        )
        rows = [{"text": t, "score": float(s)} for t, s in zip(texts, scores)]
    summary = {
        "model": model.info.name,
        "probe": str(args.probe),
        "hook": probe.hook,
        "rows": rows,
        "probe_meta": probe.meta,
        "probe_test_auroc": probe.metrics.get("test_auroc"),
        "probe_test_ece": probe.metrics.get("test_ece"),
    }
    emit(
        args,
        summary,
        "\n".join(f"{r['score']:.3f}  {r.get('token', r.get('text'))!r}" for r in rows),
    )
    return 0
