"""Which toxicity scorer ranks toxic text best? Candidates scored on ToxiGen statements none of them
was trained on.

    python bench/scorers.py --model smollm2-135m --data ../shared/data/toxigen

The activation probe is trained here on ToxiGen with a group split (whole target groups held
out, L2 and layer chosen on validation, exactly as `workbench probe train --split group`); every
candidate is then evaluated on the probe's test statements: the probe itself, profanity-check
(lexical), toxic-comment-classifier (a BiLSTM trained on Jigsaw) and Detoxify when its
checkpoint is on disk. Prints AUROC with a stratified BCa bootstrap interval and the expected
calibration error; writes results/bench/scorers.json.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import save_json  # noqa: E402

import workbench as wb
from workbench.core.datasets import read_toxigen
from workbench.interp.probes import split_indices, train_probes_on_rows
from workbench.safety.scorers import (
    BiLSTMScorer,
    DetoxifyScorer,
    ProbeScorer,
    ProfanityCheckScorer,
    detoxify_checkpoint_path,
    evaluate_scorers,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="../shared/data/toxigen")
    parser.add_argument("--split", default="group", choices=["group", "random"])
    parser.add_argument("--out", default="results/bench/scorers.json")
    args = parser.parse_args()

    start = time.perf_counter()
    model = wb.load(args.model, device="cpu", dtype="float32")
    rows = read_toxigen(args.data)
    sweep, _, seconds = train_probes_on_rows(model, rows, args.data, split=args.split)
    probe = sweep.best()
    # The same split train_probes_on_rows made (same labels, groups, method, fractions and seed).
    test = split_indices([r.label for r in rows], [r.group for r in rows], args.split)[2]
    assert len(test) == sweep.n_test
    texts, labels = [rows[i].text for i in test], [rows[i].label for i in test]
    scorers = [ProbeScorer(model, probe), ProfanityCheckScorer(), BiLSTMScorer()]
    if detoxify_checkpoint_path("original").exists():
        scorers.append(DetoxifyScorer("original"))
    evaluation = evaluate_scorers(scorers, texts, labels, data=args.data)
    print(
        f"ToxiGen statements held out from every scorer ({args.split} split; the probe's test set, "
        f"{len(test)} statements; probe {probe.hook} chosen on validation):"
    )
    print(evaluation.to_frame().to_string(index=False))
    best = evaluation.best()
    print(
        f"best ranking: {best['scorer']} ({best['kind']}); {time.perf_counter() - start:.0f} s "
        f"(caching {seconds['caching']} s)"
    )
    save_json(
        args.out,
        {
            "model": args.model,
            "data": args.data,
            "split": args.split,
            "n_test": len(test),
            "probe_hook": probe.hook,
            "rows": evaluation.rows,
            "best": best["scorer"],
        },
    )


if __name__ == "__main__":
    main()
