"""Exact vs attribution patching on the indirect-object task, on the default model.

    python bench/patching.py [--model smollm2-135m] [--pairs probes/ioi_pairs.jsonl] [--limit N]

For every clean/corrupted pair of `probes/ioi_pairs.jsonl`: the clean logit
difference (indirect object minus subject), exact head patching over all
(layer, head) cells and attribution patching of the same cells. Prints the mean
clean logit difference, the Pearson correlation of attribution against exact
over all cells of all pairs (and over the pair-averaged grid), and the wall-clock
ratio of exact to attribution patching measured in the same run. Exact patching
batches 32 patches per forward pass; the unbatched figure (one forward per
patch, as a plain loop would do it) is also timed on the first pair.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_json  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.patching import activation_patch, attribution_patch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", default=str(ROOT / "probes" / "ioi_pairs.jsonl"))
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    parser.add_argument("--out", default="results/bench/patching.json")
    args = parser.parse_args()

    model = wb.load(args.model, device="cpu", dtype="float32")
    pairs = [json.loads(line) for line in Path(args.pairs).read_text().splitlines() if line.strip()]
    pairs = pairs[: args.limit] if args.limit else pairs
    exact_grids, attr_grids, clean_diffs = [], [], []
    exact_seconds = attr_seconds = 0.0
    for i, pair in enumerate(pairs):
        task = (pair["clean"], pair["corrupt"], pair["answer"], pair["other"])
        start = time.perf_counter()
        exact = activation_patch(model, *task, kind="attn_head")
        exact_seconds += time.perf_counter() - start
        start = time.perf_counter()
        attribution = attribution_patch(model, *task, kinds=("attn_head",))["attn_head"]
        attr_seconds += time.perf_counter() - start
        exact_grids.append(exact.values)
        attr_grids.append(attribution.values)
        clean_diffs.append(exact.clean_metric)
        print(f"pair {i + 1}/{len(pairs)}: clean logit diff {exact.clean_metric:+.2f}, "
              f"corrupted {exact.corrupt_metric:+.2f}, r = {pearson(exact.values, attribution.values):.3f}",
              flush=True)
    first = (pairs[0]["clean"], pairs[0]["corrupt"], pairs[0]["answer"], pairs[0]["other"])
    start = time.perf_counter()
    activation_patch(model, *first, kind="attn_head", max_batch=1)
    unbatched_one = time.perf_counter() - start

    exact_all, attr_all = torch.stack(exact_grids), torch.stack(attr_grids)
    mean_exact, mean_attr = exact_all.mean(0), attr_all.mean(0)
    top = torch.topk(mean_exact.flatten(), 5)
    n_heads = model.info.n_heads
    results = {
        "model": args.model, "pairs": len(pairs),
        "mean_clean_logit_diff": sum(clean_diffs) / len(clean_diffs),
        "pearson_all_cells": pearson(exact_all, attr_all),
        "pearson_mean_grid": pearson(mean_exact, mean_attr),
        "pearson_per_pair_median": float(torch.tensor([pearson(e, a) for e, a in zip(exact_grids, attr_grids)])
                                         .median()),
        "exact_seconds": exact_seconds, "attribution_seconds": attr_seconds,
        "ratio_exact_to_attribution": exact_seconds / attr_seconds,
        "unbatched_exact_seconds_one_pair": unbatched_one,
        "ratio_unbatched_exact_to_attribution": unbatched_one / (attr_seconds / len(pairs)),
        "top_heads_by_exact_patching": [{"head": f"L{i // n_heads}H{i % n_heads}", "mean_value": float(v),
                                         "mean_attribution": float(mean_attr.flatten()[i])}
                                        for v, i in zip(top.values, top.indices.tolist())],
    }
    print(f"\n{args.model}, {len(pairs)} IOI pairs, {model.info.n_layers} x {n_heads} heads")
    print(f"  mean clean logit diff              {results['mean_clean_logit_diff']:.3f}")
    print(f"  Pearson r, all cells of all pairs  {results['pearson_all_cells']:.3f}")
    print(f"  Pearson r, pair-averaged grid      {results['pearson_mean_grid']:.3f}")
    print(f"  Pearson r, median over pairs       {results['pearson_per_pair_median']:.3f}")
    print(f"  exact (32 patches/forward) {exact_seconds:.1f} s vs attribution {attr_seconds:.1f} s: "
          f"{results['ratio_exact_to_attribution']:.1f}x")
    print(f"  exact unbatched, one pair {unbatched_one:.1f} s: "
          f"{results['ratio_unbatched_exact_to_attribution']:.1f}x attribution")
    for row in results["top_heads_by_exact_patching"]:
        print(f"  {row['head']:7s} exact {row['mean_value']:+.3f}  attribution {row['mean_attribution']:+.3f}")
    save_json(args.out, results)


if __name__ == "__main__":
    main()
