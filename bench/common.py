"""Helpers shared by the benchmark scripts: interleaved timing and a results table."""

from __future__ import annotations

import gc
import json
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch


def interleaved_medians(
    cases: dict[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds of each case, run round-robin so that machine noise hits all cases alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_index in range(warmup + repeats):
        for name, fn in cases.items():
            gc.collect()
            start = time.perf_counter()
            with torch.no_grad():
                result = fn()
            elapsed = time.perf_counter() - start
            del result
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a:>10}  {b}")


def save_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {path}")


@contextmanager
def peak_rss(interval: float = 0.005):
    """Sample this process's RSS from a thread while the block runs. Yields a dict whose "start" and
    "peak" (bytes) are filled in; "peak" is final once the block ends. (ru_maxrss would carry a parent's
    peak across fork and exec, and never goes down between steps.)"""
    import psutil

    process = psutil.Process()
    result = {"start": process.memory_info().rss}
    result["peak"] = result["start"]
    done = threading.Event()

    def sample():
        while not done.is_set():
            result["peak"] = max(result["peak"], process.memory_info().rss)
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["peak"] = max(result["peak"], process.memory_info().rss)
