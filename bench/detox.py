"""The detoxification benchmark: `workbench intervene search` on RealToxicityPrompts at a chosen size.

    python bench/detox.py [--model smollm2-135m] [--samples 25] [--max-prompts N] [--out DIR]

All five attribute files of ../shared/data/realtoxicityprompts (99 prompts each), each split at
random (--seed) into validation and test halves; candidates: `add` at the given layers and
coefficients (norm units), `ablate` at the same layers, and the prompting baseline. Prints the
validation table, the choice, the test card and the goal check, with the wall time; writes the
search folder (resumable: rerun the same command to finish an interrupted run). The README's
figures come from this script; the sizes that were run are printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd

import workbench as wb
from workbench.audit.intervene import SearchOptions, search
from workbench.safety.interventions import load_intervention

RTP = Path(__file__).resolve().parents[2] / "shared" / "data" / "realtoxicityprompts"
FILES = ["insult", "profanity", "severe_toxicity", "threat", "flirtation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=str(RTP), help="the RealToxicityPrompts folder")
    parser.add_argument("--samples", type=int, default=25, help="K samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--max-prompts", type=int, default=None, help="cap on each split")
    parser.add_argument("--layers", type=int, nargs="+", default=[5, 10, 15])
    parser.add_argument("--coefficients", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2])
    parser.add_argument("--methods", nargs="+", default=["add", "ablate", "prompt"])
    parser.add_argument("--batch-size", type=int, default=32, help="rows per generation batch")
    parser.add_argument("--seed", type=int, default=0, help="split, sampling and bootstrap seed")
    parser.add_argument("--out", default="results/bench/detox")
    parser.add_argument(
        "--ship",
        default=None,
        metavar="NAME",
        help="copy the chosen add intervention into the package (workbench/data/interventions/NAME) "
        "with the search's test figures and goal check in its provenance",
    )
    args = parser.parse_args()

    files = [str(Path(args.data) / f"rtp_{name}.txt") for name in FILES]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        sys.exit(f"missing {missing[0]}: give --data, the RealToxicityPrompts folder")
    model = wb.load(args.model, device="cpu", dtype="float32")
    options = SearchOptions(
        prompts=files,
        out=args.out,
        methods=args.methods,
        layers=args.layers,
        coefficients=args.coefficients,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        max_prompts=args.max_prompts,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    start = time.perf_counter()
    result = search(model, options)
    seconds = time.perf_counter() - start
    record = result.record
    n_val, n_test = len(record["split"]["validation"]), len(record["split"]["test"])
    print(
        f"\n{args.model}: {n_val} validation and {n_test} test prompts from {len(files)} files, "
        f"K = {args.samples} samples of {args.max_new_tokens} tokens, {seconds / 60:.1f} min"
    )
    pd.set_option("display.width", 200)
    print("\nvalidation:\n" + result.to_frame().to_string(index=False))
    print(f"\nchosen: {record['chosen']}")
    print("\ntest:\n" + result.test_frame().to_string(index=False))
    print("\ngoal: " + json.dumps(record["goal"], indent=1))
    print(f"\ntest card: {record['test_report']}\nPareto figure: {Path(args.out) / 'pareto.html'}")
    if args.ship:
        ship(record, Path(args.out), args.ship, model, " ".join(sys.argv[1:]))


def ship(record: dict, out: Path, name: str, model, command: str) -> None:
    """The chosen `add` intervention into the package, its test verdict in its provenance."""
    chosen = record["chosen"].get("add")
    if chosen is None:
        sys.exit("no add intervention was chosen: nothing to ship")
    shipped = load_intervention(out / "chosen" / "add", model)
    verdict = record["goal"]["interventions"].get(chosen, {})
    shipped.provenance = {
        **shipped.provenance,
        "search": f"python bench/detox.py {command}",
        "test": {
            "goal": bool(verdict.get("met")),
            "verdict": verdict,
            "row": next(r for r in record["test"] if r["candidate"] == chosen),
            "n_prompts": len(record["split"]["test"]),
        },
        "benign": [r for r in record.get("benign") or [] if r["condition"] == chosen],
    }
    folder = shipped.save(
        Path(__file__).resolve().parents[1] / "workbench" / "data" / "interventions" / name
    )
    print(f"shipped {chosen} as {name}: {folder}")


if __name__ == "__main__":
    main()
