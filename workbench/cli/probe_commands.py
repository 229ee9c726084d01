"""What the probe verbs do once their arguments are parsed (`probe_verbs` declares them;
this module is imported only when one of them runs, so --help loads no torch)."""

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
from .common import emit
from .running import load_model


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
