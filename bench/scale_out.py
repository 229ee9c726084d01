"""Toxicity-audit throughput on Ray against one process, in the same run.

    python bench/scale_out.py [--model smollm2-135m] [--prompts 64] [--max-new-tokens 24]

Three runs of the same audit (greedy, profanity-check, shards of 8 prompts), each a
whole `workbench audit toxicity` command timed from start to finish, model loads included:
one process (the baseline), then Ray on a local instance with 1 and with 2 workers.
Prints rows/s, each Ray run's time as a ratio to one process, and the throughput one
worker reaches once loaded (its rows over the time after its first shard), from which
the scaling to N workers is projected. Checks that all three give the same rows.
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
    code = main(["audit", "toxicity", "--model", model, "--prompts", str(prompts), "--out", str(out),
                 "--scorers", "profanity-check", "--max-new-tokens", str(max_new_tokens), "--shard-size", "8",
                 "--no-capability", *extra])
    assert code == 0
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "scale_out.json"))
    args = parser.parse_args()

    import ray

    from workbench.audit import load_results

    base = (ROOT / "workbench" / "data" / "audit_prompts.txt").read_text().splitlines()
    work = Path(tempfile.mkdtemp(prefix="wb-ray-"))
    prompts = work / "prompts.txt"
    prompts.write_text("".join(f"{base[i % len(base)]} ({i})\n" for i in range(args.prompts)))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    seconds = {"one process": audit(args.model, prompts, work / "one", args.max_new_tokens, [])}
    for workers in (1, 2):
        seconds[f"Ray, {workers} worker{'s' * (workers > 1)}"] = audit(
            args.model, prompts, work / f"ray{workers}", args.max_new_tokens,
            ["--ray", "local", "--workers", str(workers)])
    ray.shutdown()
    frames = {name: load_results(work / folder) for name, folder in
              zip(seconds, ("one", "ray1", "ray2"))}
    reference = frames["one process"]
    same = all(frame.equals(reference) for frame in frames.values())
    rows = len(reference)
    # Steady-state throughput of one worker: shards finish evenly once the replica is loaded.
    shard_times = sorted((work / "ray1" / "shards").glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    mtimes = [p.stat().st_mtime for p in shard_times]
    steady = (len(mtimes) - 1) * 8 / (mtimes[-1] - mtimes[0]) if len(mtimes) > 1 else float("nan")
    one = seconds["one process"]
    table = [(name, f"{value:.1f} s", f"{rows / value:.2f} rows/s, {value / one:.2f}x one process's time")
             for name, value in seconds.items()]
    table.append(("one worker, once loaded", f"{steady:.2f} rows/s",
                  f"projected: {2 * steady:.2f} rows/s on 2 workers, {8 * steady:.2f} on 8 (own cores or GPUs each)"))
    print_table(f"toxicity audit, {args.model}, {rows} prompts x {args.max_new_tokens} new tokens, "
                f"{os.cpu_count()} CPUs; same rows in all three: {same}", table)
    save_json(args.out, {"model": args.model, "rows": rows, "max_new_tokens": args.max_new_tokens,
                         "cpus": os.cpu_count(), "seconds": seconds, "same_rows": same,
                         "ray_1_worker_ratio": seconds["Ray, 1 worker"] / one,
                         "one_worker_steady_rows_per_s": steady})
    if not same:
        raise SystemExit("the Ray runs differ from the single-process run")


if __name__ == "__main__":
    main()
