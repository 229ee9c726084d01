"""What a running verb needs beyond its arguments: the model, the shard executor, figure files."""

from __future__ import annotations

import sys

from ..model.distributed import RayExecutor, ReplicaSpec, executor_for
from ..model.loading import default_device, default_dtype, load, parse_dtype
from ..viz import save_html_many


def executor_from(args):
    """The shard executor --ray/--workers ask for, checked before any model work."""
    executor = executor_for(args.ray, args.workers, connect=True, threads=args.threads_per_worker)
    # workers load their replicas while this process loads its own
    if isinstance(executor, RayExecutor):
        device = args.device or default_device()
        dtype = str(parse_dtype(args.dtype) or default_dtype(device)).replace("torch.", "")
        executor.start(
            ReplicaSpec(args.model, "cuda" if device.startswith("cuda") else "cpu", dtype)
        )
    return executor


def load_model(args):
    return load(args.model, device=args.device, dtype=args.dtype)


def write_html(args, figs: list, title: str) -> None:
    if args.html:
        path = save_html_many(figs, args.html, title)
        print(f"figures: {path}", file=sys.stderr)
