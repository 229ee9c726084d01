"""Toxicity-audit throughput on Ray against one process, in the same run.

    python bench/scale_out.py [--model smollm2-135m] [--prompts 64] [--max-new-tokens 24]

Runs of the same audit (greedy, profanity-check, shards of 8 prompts), each a whole
`workbench audit toxicity` command timed from start to finish, model loads included, each
into a fresh folder: one process (the baseline) and Ray with 1 worker, interleaved
`--repeats` times (median); then Ray with 2 workers at the default threads (as many as the
single process: bit-identical) and with 1 thread each (no oversubscription on a machine
whose cores the workers share). Prints rows/s, each time as a ratio to one process, whether
the rows are bit-identical (else the largest difference), and the throughput one worker
reaches once loaded (its rows over the time after its first shard), from which the
scaling to N workers is projected. Fails if a default-thread run differs.
Writes results/bench/scale_out.json. (Not bench/ray.py: that name would shadow the ray package.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, save_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def audit(model: str, prompts: Path, out: Path, max_new_tokens: int, extra: list[str]) -> float:
    from workbench.cli import main

    start = time.perf_counter()
    code = main(
        [
            "audit",
            "toxicity",
            "--model",
            model,
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--scorers",
            "profanity-check",
            "--max-new-tokens",
            str(max_new_tokens),
            "--shard-size",
            "8",
            "--no-capability",
            *extra,
        ]
    )
    assert code == 0
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of one process and of 1 worker (median)"
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "scale_out.json"))
    args = parser.parse_args()

    import statistics

    import ray

    from workbench.report.folder import load_results

    base = (ROOT / "workbench" / "data" / "audit_prompts.txt").read_text().splitlines()
    work = Path(tempfile.mkdtemp(prefix="wb-ray-"))
    prompts = work / "prompts.txt"
    prompts.write_text("".join(f"{base[i % len(base)]} ({i})\n" for i in range(args.prompts)))
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    cases = {"one process": [], "Ray, 1 worker": ["--ray", "local", "--workers", "1"]}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    # interleaved, each into a fresh folder (a rerun would resume)
    for repeat in range(args.repeats):
        for name, extra in cases.items():
            seconds[name].append(
                audit(args.model, prompts, work / f"{name}-{repeat}", args.max_new_tokens, extra)
            )
    once = {
        "Ray, 2 workers": ["--ray", "local", "--workers", "2"],
        "Ray, 2 workers, 1 thread each": [
            "--ray",
            "local",
            "--workers",
            "2",
            "--threads-per-worker",
            "1",
        ],
    }
    for name, extra in once.items():
        seconds[name] = [audit(args.model, prompts, work / f"{name}-0", args.max_new_tokens, extra)]
    ray.shutdown()
    frames = {name: load_results(work / f"{name}-0") for name in seconds}
    reference = frames["one process"]
    same = {name: frame.equals(reference) for name, frame in frames.items()}
    numeric = reference.select_dtypes("number").columns
    largest = {
        name: float((frame[numeric] - reference[numeric]).abs().max().max())
        for name, frame in frames.items()
    }
    same_text = {
        name: frame["continuation"].equals(reference["continuation"])
        for name, frame in frames.items()
    }
    rows = len(reference)
    # Steady-state throughput of one worker: shards finish evenly once the replica is loaded.
    shard_times = sorted(
        (work / "Ray, 1 worker-0" / "shards").glob("*.parquet"), key=lambda p: p.stat().st_mtime
    )
    mtimes = [p.stat().st_mtime for p in shard_times]
    steady = (len(mtimes) - 1) * 8 / (mtimes[-1] - mtimes[0]) if len(mtimes) > 1 else float("nan")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    one = median["one process"]
    table = [
        (
            name,
            f"{value:.1f} s",
            f"{rows / value:.2f} rows/s, {value / one:.2f}x one process's time; "
            + (
                "bit-identical rows"
                if same[name]
                else f"rows differ: largest |difference| {largest[name]:.2g}, continuations "
                f"{'identical' if same_text[name] else 'differ'}"
            )
            + (
                f" (median of {len(seconds[name])}: "
                + ", ".join(f"{s:.1f}" for s in seconds[name])
                + " s)"
                if len(seconds[name]) > 1
                else ""
            ),
        )
        for name, value in median.items()
    ]
    table.append(
        (
            "one worker, once loaded",
            f"{steady:.2f} rows/s",
            f"projected: {2 * steady:.2f} rows/s on 2 workers, {8 * steady:.2f} on 8 (own cores or GPUs each)",
        )
    )
    print_table(
        f"toxicity audit, {args.model}, {rows} prompts x {args.max_new_tokens} new tokens, "
        f"{os.cpu_count()} CPUs",
        table,
    )
    save_json(
        args.out,
        {
            "model": args.model,
            "rows": rows,
            "max_new_tokens": args.max_new_tokens,
            "cpus": os.cpu_count(),
            "seconds": seconds,
            "median_seconds": median,
            "bit_identical": same,
            "largest_difference": largest,
            "ray_1_worker_ratio": median["Ray, 1 worker"] / one,
            "one_worker_steady_rows_per_s": steady,
        },
    )
    exact = [name for name in seconds if "1 thread each" not in name]
    if not all(same[name] for name in exact):
        raise SystemExit("a Ray run with the default threads differs from the single-process run")


if __name__ == "__main__":
    main()
