"""The resumable loop every audit shares: conditions x shards of items, Parquet shards that
resume after a crash.

    run_sharded(out, settings, n_items, shard_size, model, shards)

For each condition (the unsteered baseline, a steering coefficient, an ablation, the
prompting baseline) the items (prompts, pairs, groups, templates) are cut into shards;
each shard is computed by the audit's own builder and written atomically as
``shards/<condition>-NNNNN.parquet``, recorded with its sha256 in ``shards.json``. A killed
run, rerun with the same arguments, skips finished shards; a shard's contents depend only on
its index (its rows, and the seeds of its samples), so the results equal an uninterrupted
run's row for row, for any batch size, shard size or worker (`workbench.model.distributed`).
``run.json`` holds the settings and is checked on resume (`workbench.audit.settings`);
`workbench.report` turns the shards into ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..core.progress import finish_shard, per_batch, progress_bar
from ..core.remote import is_url, remote_name, shard_finished, staged
from ..core.storage import ShardIndex, folder_lock, set_aside, shard_ranges, temp_path
from ..model.distributed import LocalExecutor, ShardJob, remove_stale_temporaries
from ..report.folder import SHARD_INDEX, shard_name
from .conditions import Condition
from .settings import check_settings, settings_fingerprint


def run_sharded(
    out: str | Path,
    settings: dict,
    n_items: int,
    shard_size: int,
    model,
    shards,
    rows_per_item: int = 1,
    progress: bool = True,
    desc: str = "auditing",
    executor=None,
) -> Path:
    """The resumable loop every audit shares: for each condition and each shard of items,
    ``shards(model)(condition, c_index, s_index, start, end)`` returns a DataFrame (with
    "condition" and "row" columns) that is written atomically as
    ``shards/<condition>-NNNNN.parquet`` and recorded with its sha256 in ``shards.json``.

    `shards` takes the model, so an `executor` (workbench.model.distributed: this process by default,
    or Ray workers with their own replicas) can build it wherever the shard is computed; the
    shard's file is written there, and recorded and moved into place here.
    On a rerun, a shard whose file matches its recorded hash is kept; a missing one is
    computed; a damaged one (truncated, edited, unreadable) is moved aside with a warning
    and computed again. One process at a time writes a folder (`storage.folder_lock`).
    settings: JSON-able dict with "conditions" (list of Condition dicts); saved as
    run.json, and a rerun into the same folder with settings that change results is refused.
    `out` may be a URL (``s3://bucket/prefix``; workbench.core.remote): the run then works in a
    local staging copy and uploads every finished shard. Returns `out` (a Path when local).
    """
    with staged(out) as local:
        _run_sharded_in(
            local,
            settings,
            n_items,
            shard_size,
            model,
            shards,
            rows_per_item,
            progress,
            desc,
            executor,
        )
    return out if is_url(out) else Path(out)


def _run_sharded_in(
    out: Path,
    settings: dict,
    n_items: int,
    shard_size: int,
    model,
    shards,
    rows_per_item: int,
    progress: bool,
    desc: str,
    executor,
) -> None:
    """`run_sharded` on a local folder (a URL's staging copy, or the output folder itself)."""
    executor = executor or LocalExecutor()
    with folder_lock(out):
        (out / "shards").mkdir(parents=True, exist_ok=True)
        check_settings(out, settings)  # run.json first: its message names the fields
        index = ShardIndex(out / SHARD_INDEX)
        fingerprint = settings_fingerprint(settings)
        index.check_settings_of(fingerprint, out)  # then every recorded shard (run.json edited?)
        remove_stale_temporaries(out / "shards")
        conditions = [Condition(**c) for c in settings["conditions"]]
        ranges = shard_ranges(n_items, shard_size)
        total = len(conditions) * n_items * rows_per_item
        jobs = []
        with progress_bar(total, desc, "row", progress) as bar, per_batch(bar):
            for c_index, condition in enumerate(conditions):
                for s_index, (start, end) in enumerate(ranges):
                    path = out / "shards" / shard_name(condition.name, s_index)
                    if index.verified(path):
                        bar.update((end - start) * rows_per_item)
                        continue
                    if path.exists():
                        set_aside(
                            path, "does not match its recorded sha256 (damaged or never recorded)"
                        )
                    jobs.append(
                        ShardJob(
                            path.name,
                            (condition, c_index, s_index, start, end, str(temp_path(path))),
                        )
                    )
            if not jobs and progress:
                print(
                    f"all {len(conditions) * len(ranges)} shards of {remote_name(out)} were already complete; nothing was "
                    "recomputed (delete the folder or choose another --out to recompute)",
                    file=sys.stderr,
                )
            for job, tmp in executor.run(model, _parquet_writer(shards), jobs):
                path = out / "shards" / job.key
                index.record(path, Path(tmp), settings=fingerprint)
                os.replace(tmp, path)
                shard_finished()
                start, end = job.args[3], job.args[4]
                finish_shard(bar, (end - start) * rows_per_item)


def _parquet_writer(shards):
    """Wrap an audit's shard builder: the shard is computed and written to the given temporary file."""

    def build(model):
        make_shard = shards(model)

        def compute(
            condition: Condition, c_index: int, s_index: int, start: int, end: int, tmp: str
        ) -> str:
            make_shard(condition, c_index, s_index, start, end).to_parquet(tmp, index=False)
            return tmp

        return compute

    return build
