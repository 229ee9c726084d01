"""Running shards on a Ray cluster: one model replica per worker, the same shards and results.

    workbench audit toxicity ... --out results/tox --ray local --workers 2
    workbench cache ... --out acts/ --ray auto          # an existing cluster (`ray start --head`)

Audits and disk caches are already cut into shards whose contents depend only on the
shard's index (its rows, its batches, the seeds of its samples), never on which process
computes it or in what order. So a shard is the unit of work: `RayExecutor` starts one
actor per worker, each holding one model replica (one GPU each when the cluster has
GPUs, otherwise a share of the CPUs), and hands shards to whichever actor is free.

A worker writes its shard to a temporary file beside the final one and returns its
name; the driver alone records the shard's sha256 in ``shards.json``, moves the file into
place and writes ``run.json``, the manifest and the summary, exactly as the single-process
loop does. So a worker killed mid-shard leaves at most a temporary file (removed by the
driver), Ray restarts the actor and retries the shard; a driver killed mid-run resumes
from the finished shards on the next run, like any other run. An error in a shard (bad
data) stops the run with its one-line message.

A worker that does not see the driver's folder (another node without a shared file system
at the same path, or an output URL the driver stages locally: workbench.core.remote) writes the
shard to its own scratch folder and sends the file's bytes back through Ray's object store;
the driver writes them to the temporary file and goes on as above. So workers need neither
a shared file system nor credentials for the object store.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from ..core.errors import InputError
from .loading import load


@dataclass(frozen=True)
class ReplicaSpec:
    """How a worker loads its own replica: the arguments of `workbench.load`."""

    name: str
    device: str
    dtype: str

    @classmethod
    def of(cls, model) -> "ReplicaSpec":
        info = model.info
        device = "cuda" if str(model.device).startswith("cuda") else "cpu"
        return cls(info.path if info.source == "local" else info.name, device, info.dtype)


@dataclass(frozen=True)
class ShardJob:
    """One shard to compute: `key` names it (for messages), `args` go to the job function."""

    key: str
    args: tuple


@dataclass(frozen=True)
class ShardBytes:
    """A shard's file computed on a node that cannot see the driver's folder: its bytes."""

    data: bytes


class LocalExecutor:
    """Today's loop: every shard in this process, in order, on the already loaded model."""

    def run(
        self, model, build: Callable, jobs: Iterable[ShardJob]
    ) -> Iterator[tuple[ShardJob, object]]:
        compute = build(model)
        for job in jobs:
            yield job, compute(*job.args)


class RayExecutor:
    """Shards on Ray actors, one model replica each.

    address: "local" (start a Ray instance for this run, on this machine), "auto" (the
    cluster this machine belongs to, from `ray start`), or a cluster address.
    workers: actors to start (default: one per GPU on the cluster, else 2).
    threads: torch threads per CPU worker (default: this process's torch.get_num_threads(),
    which keeps every float bit equal to the single-process run; fewer threads per worker run
    faster when workers share a machine's cores, and may differ in float32's last bits).
    """

    def __init__(
        self, address: str = "local", workers: int | None = None, threads: int | None = None
    ):
        if workers is not None and workers < 1:
            raise InputError("--workers must be at least 1")
        self.address = address
        self.requested = workers
        self.workers = workers or 0
        self.threads = threads
        self._actors: list = []

    def connect(self):
        """Start or join Ray (idempotent); returns the `ray` module. Called before any model work,
        so a missing Ray or an unreachable cluster is a one-line error, not a hang or a traceback."""
        try:
            # lazy: optional (pip install 'workbench[ray]')
            import ray
        except ImportError:
            raise InputError(
                "--ray needs Ray: pip install 'ray>=2.40' (or pip install -e .[ray])"
            ) from None
        if ray.is_initialized():
            return ray
        quiet = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
        if self.address == "local":
            with _loopback_only(ray):
                ray.init(num_cpus=os.cpu_count(), **quiet)
            return ray
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise InputError(
                f"cannot reach the Ray cluster at {self.address!r} ({error}); start one with "
                "`ray start --head`, or use --ray local"
            ) from None
        return ray

    def start(self, spec: "ReplicaSpec") -> None:
        """Start the workers now, so that each loads its replica while the driver loads its own
        model and checks its inputs. `run` then asks each worker which model it holds, and starts
        them again if that is not the driver's (other defaults on another node, say)."""
        self._start(self.connect(), spec)

    def _start(self, ray, spec: "ReplicaSpec") -> None:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = gpus > 0 and spec.device == "cuda"  # each actor then takes its own GPU
        self.workers = self.requested or (gpus if use_gpu else 2)
        _check_placeable(self.workers, resources, use_gpu, self.address)
        cpus = max(1, int(resources.get("CPU", 1)) // self.workers)
        # Each worker computes with as many threads as this process: a float32 matmul split over
        # fewer threads sums in another order, and its last bits (then a greedy token) can differ
        # from the single-process run's. `cpus` only tells Ray's scheduler how to share the machine.
        threads = self.threads or torch.get_num_threads()
        worker_class = ray.remote(
            num_cpus=0 if use_gpu else cpus,
            num_gpus=1 if use_gpu else 0,
            max_restarts=3,
            max_task_retries=3,
        )(_Worker)
        self._actors = [worker_class.remote(spec, threads) for _ in range(self.workers)]

    def stop(self) -> None:
        """Kill the workers started by `start` and not used by a run."""
        if self._actors:
            # lazy: optional (pip install 'workbench[ray]')
            import ray

            for actor in self._actors:
                ray.kill(actor)
        self._actors = []

    def run(
        self, model, build: Callable, jobs: Iterable[ShardJob]
    ) -> Iterator[tuple[ShardJob, object]]:
        """Yield (job, result) as shards finish, in any order. `build(model)` returns the function
        that computes one shard; it is shipped to every worker (cloudpickle) and called there with
        the worker's own model."""
        ray = self.connect()
        jobs = list(jobs)
        if not jobs:
            return
        spec = ReplicaSpec.of(model)
        if self._actors and ray.get([actor.describe.remote() for actor in self._actors]) != [
            spec
        ] * len(self._actors):
            self.stop()  # started early (`start`) with arguments that loaded another model: start again
        if not self._actors:
            self._start(ray, spec)
        actors, self._actors = self._actors, []
        build_ref = ray.put(build)  # shipped once; passed in a list so each call gets the reference
        pending = {}
        queue = list(jobs)
        free = list(actors)
        try:
            while queue or pending:
                while free and queue:
                    actor, job = free.pop(), queue.pop(0)
                    pending[actor.compute.remote([build_ref], *job.args)] = (actor, job)
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, job = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayTaskError as error:
                    # bad data: the same one-line message as without Ray
                    if isinstance(error.cause, InputError):
                        raise error.cause from None
                    raise RuntimeError(f"shard {job.key} failed on a Ray worker: {error}") from None
                free.append(actor)
                yield job, _received(job, result)
        finally:
            for actor in actors:
                ray.kill(actor)


class _Worker:
    """A Ray actor: loads one model replica, then computes shards with a run's `build(model)`.

    Each call carries the run's `build` as an object reference; it is fetched and built once
    per run (and again after Ray restarts the actor, which loses everything but the model)."""

    def __init__(self, spec: ReplicaSpec, threads: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(threads)

        self.model = load(spec.name, device=spec.device, dtype=spec.dtype)
        self.build_id, self.compute_shard = None, None

    def describe(self) -> ReplicaSpec:
        return ReplicaSpec.of(self.model)

    def compute(self, build_ref: list, *args):
        """Compute one shard. The last argument is the temporary file the driver expects; when its
        folder does not exist on this node, the shard is written to a scratch folder here and its
        bytes are returned instead (ShardBytes)."""
        if self.build_id != build_ref[0].hex():
            # lazy: optional (pip install 'workbench[ray]')
            import ray

            self.compute_shard = ray.get(build_ref[0])(self.model)
            self.build_id = build_ref[0].hex()
        tmp = args[-1]
        if os.path.isdir(os.path.dirname(tmp)):
            return self.compute_shard(*args)

        with tempfile.TemporaryDirectory(prefix="workbench-shard-") as scratch:
            local = os.path.join(scratch, os.path.basename(tmp))
            self.compute_shard(*args[:-1], local)
            return ShardBytes(Path(local).read_bytes())


def _received(job: ShardJob, result):
    """The driver's side of `_Worker.compute`: bytes sent back are written to the job's temporary file."""
    if isinstance(result, ShardBytes):
        Path(job.args[-1]).write_bytes(result.data)
        return job.args[-1]
    return result


def executor_for(
    ray: str | None, workers: int | None, connect: bool = False, threads: int | None = None
):
    """The executor the CLI's --ray/--workers/--threads-per-worker ask for (LocalExecutor without
    --ray); with `connect`, Ray is started or joined now, before any model work."""
    if ray is None:
        if workers is not None or threads is not None:
            raise InputError(
                f"{'--workers' if workers is not None else '--threads-per-worker'} needs --ray "
                "(local, auto or a cluster address)"
            )
        return LocalExecutor()
    if threads is not None and threads < 1:
        raise InputError("--threads-per-worker must be at least 1")
    executor = RayExecutor(ray, workers, threads)
    if connect:
        executor.connect()
    return executor


# Ray's "cluster" switch, off on macOS and Windows: then a local instance binds 127.0.0.1 only
_RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only(ray):
    """Start a local Ray instance that listens on 127.0.0.1 only.

    On Linux Ray resolves "localhost" to the machine's network address and its gRPC servers
    (GCS, raylets, workers, the driver) then listen on every interface. With its "cluster"
    switch off (what it does on macOS and Windows) the node address is 127.0.0.1, and each
    server binds loopback. The switch is read from the environment by the processes Ray starts
    and from `ray_constants` by this one; both are restored once the instance is up."""
    # lazy: optional (pip install 'workbench[ray]'), like every import of Ray here
    from ray._private import ray_constants

    saved_env = os.environ.get(_RAY_CLUSTER_SWITCH)
    saved_constant = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_RAY_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(_RAY_CLUSTER_SWITCH, None)
        else:
            os.environ[_RAY_CLUSTER_SWITCH] = saved_env
        if saved_constant is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_constant


def _check_placeable(workers: int, resources: dict, use_gpu: bool, address: str) -> None:
    """Refuse more workers than the cluster can ever place: each CPU worker takes one CPU and each
    GPU worker one GPU, and Ray would wait forever for a worker it cannot schedule. (Workers
    that fit the cluster but not its free share wait their turn, as any Ray job does.)"""
    unit = "GPU" if use_gpu else "CPU"
    total = int(resources.get(unit, 0))
    if workers > total:
        raise InputError(
            f"--workers {workers}: the Ray cluster ({address}) has {total} {unit}(s) and each "
            f"worker takes one, so {workers - total} would never start; use --workers "
            f"{max(total, 1)} or fewer"
        )


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port that does not answer (ray.init would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"--ray takes local, auto or a cluster address HOST:PORT (or ray://HOST:PORT), "
            f"not {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise InputError(
            f"cannot reach the Ray cluster at {address!r} ({error.strerror or error}); start one "
            "with `ray start --head`, or use --ray local"
        ) from None


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary shard files (``.<name>.<pid>.tmp``) that a killed worker left; returns the count.
    Called with the folder's write lock held, when no worker of this run is writing."""
    count = 0
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)
        count += 1
    return count
