"""Batched activation caching over a list of texts, in memory or streamed to disk.

    cache = cache_activations(model, texts, hooks="resid_post", positions="last")
    cache["blocks.10.hook_resid_post"]          # Float[Tensor, "n_texts d_model"]

    disk = cache_activations(model, corpus, hooks="resid_post", positions="mean", out="acts/")
    for start, block in disk.iter_shards("blocks.10.hook_resid_post"): ...

Positions (what is kept of each text):
- "all":  every token, right-padded with zeros to the longest text: [n, pos, ...]
          (attention patterns [n, head, pos, pos]); `cache.lengths` says how many are real;
- "last": the last real token: [n, ...];
- "mean": the mean over real tokens: [n, ...] (computed in float32);
- "mean_after_first": the same without the first token (often an attention sink with
          outsized activations), for texts longer than one token.

Texts are right-padded in batches, so a padded row's activations equal the same
text run alone (causal attention never looks right, and real tokens keep their
positions). Rows are batched longest-first within windows of 16 batches to waste
little padding; results are always returned in input order, and are bit-identical
in memory and on disk. Shards default to about 256 MiB (whole sorting windows),
so streaming a corpus of any size holds about one shard in memory.

On disk (`out=DIR`): ``run.json`` (settings, written first), ``shards/shard-NNNNN.safetensors``
(each written atomically; tensors named by hook plus ``__lengths__``) and
``manifest.json`` (written last). A killed run resumes: finished shards are kept
and the final manifest equals an uninterrupted run's. The caches it returns, and
reading them back (lazily: one hook at a time, memory-mapped, shard by shard), are
in `workbench.model.corpus_cache`; what is decided before the first forward pass
(token ids, stored shapes, batching) in `workbench.model.cache_plan`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..core.datasets import TextRecord, as_records
from ..core.errors import CacheTooLargeError, InputError
from ..core.progress import advance, finish_shard, per_batch, progress_bar
from ..core.provenance import settings_sha256, versions
from ..core.remote import is_url, shard_finished, staged
from ..core.storage import (
    ShardIndex,
    folder_lock,
    set_aside,
    shard_ranges,
    temp_path,
    write_atomically,
)
from .cache_plan import (
    POSITIONS,
    SORT_WINDOW_BATCHES,
    CachePlan,
    estimate_bytes,
    row_shape,
    texts_sha256,
    tokenize_records,
)
from .corpus_cache import LENGTHS_KEY, CorpusCache, DiskCorpusCache, open_cache
from .distributed import LocalExecutor, ShardJob, remove_stale_temporaries
from .hooks import hook_table, resolve_hooks
from .memory import FIT_FRACTION, available_bytes, format_bytes
from .run import StopForward, forward

CACHE_FORMAT = "workbench-activation-cache/1"
SHARD_TARGET_BYTES = 256 * 2**20  # automatic shard size: as many whole windows as fit in this


# ----------------------------------------------------------------------------- running


def cache_activations(
    model,
    texts: Sequence[str] | Sequence[TextRecord],
    hooks: str | Sequence[str] = "resid_post",
    positions: str = "last",
    batch_size: int = 8,
    out: str | Path | None = None,
    shard_size: int | None = None,
    truncate: bool = False,
    max_length: int | None = None,
    store_dtype: torch.dtype | None = None,
    store_device: str | torch.device = "cpu",
    progress: bool = True,
    executor=None,
    *,
    prepend_bos: bool | None = None,
) -> CorpusCache | DiskCorpusCache:
    """Cache activations of `hooks` for every text.

    Args:
        model: a `LoadedModel` from `workbench.load`.
        texts: strings, or `TextRecord`s (from `workbench.core.datasets.read_texts`) so
            errors can name the file and line.
        hooks: hook names or patterns (see `workbench.model.hooks`), e.g. "resid_post".
        positions: "all", "last", "mean" or "mean_after_first" (see module docstring).
        batch_size: texts per forward pass.
        out: a folder to stream shards to; None keeps the cache in memory (refused,
            with the estimate, when it would not fit).
        shard_size: texts per shard on disk (the unit of resuming), rounded up to a
            multiple of batch_size x 4 (the length-sorting window); default: whole
            windows filling about 256 MiB.
        truncate / max_length: cut over-long texts instead of refusing them.
        store_dtype: dtype of the stored activations (default: the model's dtype).
        store_device: where an in-memory cache lives ("cpu", or the model's GPU).
        progress: show a progress bar on stderr.
        executor: where disk shards are computed (`workbench.model.distributed`): this process by
            default, or `RayExecutor("local" | "auto" | address, workers)`; needs `out`.
        prepend_bos: start each text with the model's start token; None is what TransformerLens'
            bridge does for the model (`workbench.model.tokens`), as everywhere in the library.

    Returns:
        `CorpusCache` (in memory) or `DiskCorpusCache` (with `out`).
    """
    records = as_records(texts)
    if not records:
        raise InputError("no texts to cache")
    token_ids, n_truncated = tokenize_records(model, records, truncate, max_length, prepend_bos)
    return cache_tokens(
        model,
        token_ids,
        hooks,
        positions,
        batch_size,
        out,
        shard_size,
        store_dtype,
        store_device,
        progress,
        n_truncated=n_truncated,
        executor=executor,
    )


def cache_tokens(
    model,
    token_ids: Sequence[Sequence[int]],
    hooks: str | Sequence[str] = "resid_post",
    positions: str = "last",
    batch_size: int = 8,
    out: str | Path | None = None,
    shard_size: int | None = None,
    store_dtype: torch.dtype | None = None,
    store_device: str | torch.device = "cpu",
    progress: bool = True,
    n_truncated: int = 0,
    executor=None,
) -> CorpusCache | DiskCorpusCache:
    """`cache_activations` for texts that are already token ids (one list of ints per text)."""
    if positions not in POSITIONS:
        raise InputError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    if batch_size < 1 or (shard_size is not None and shard_size < 1):
        raise InputError("batch_size and shard_size must be at least 1")
    if executor is not None and out is None:
        raise InputError("an executor computes disk shards: give out=DIR (or drop the executor)")
    if not token_ids or any(len(ids) == 0 for ids in token_ids):
        raise InputError("every text needs at least one token")
    names = resolve_hooks(model, hooks)
    table = hook_table(model)
    no_pos = [h for h in names if not table[h].pos_dims]
    if no_pos:
        raise InputError(
            f"hook {no_pos[0]} has no position dimension {table[no_pos[0]].shape}; "
            "it cannot be cached per text"
        )
    patterns = [h for h in names if table[h].is_pattern]
    if patterns and positions != "all":
        raise InputError(f"attention-pattern hooks ({patterns[0]}, ...) need positions='all'")
    plan = CachePlan(
        names,
        positions,
        [list(ids) for ids in token_ids],
        n_truncated,
        store_dtype or next(model.hf_model.parameters()).dtype,
        batch_size,
        0,
    )
    plan = dataclasses.replace(plan, shard_size=_shard_size(model, plan, shard_size))
    if out is None:
        return _cache_in_memory(model, plan, torch.device(store_device), progress)
    return _cache_to_disk(model, plan, out, progress, executor)


def _shard_size(model, plan: CachePlan, requested: int | None) -> int:
    """Rows per shard: whole sorting windows (so batching, and every bit, is the same however
    a run is split), either as requested (rounded up) or as many as fit in SHARD_TARGET_BYTES."""
    window = plan.batch_size * SORT_WINDOW_BATCHES
    if requested is None:
        per_row = max(1, estimate_bytes(model, plan) // plan.n_texts)
        requested = max(window, SHARD_TARGET_BYTES // per_row // window * window)
    return math.ceil(requested / window) * window


def _cache_in_memory(
    model, plan: CachePlan, store_device: torch.device, progress: bool
) -> CorpusCache:
    need = estimate_bytes(model, plan)
    free = available_bytes(store_device)
    if need > FIT_FRACTION * free:
        raise CacheTooLargeError(
            f"an in-memory cache of {plan.n_texts} texts x {len(plan.hooks)} hooks "
            f"(positions={plan.positions}) needs about {format_bytes(need)}, but only {format_bytes(free)} "
            f"is free on {store_device}; stream it to disk instead: cache_activations(..., out='DIR') "
            "or `workbench cache ... --out DIR`"
        )
    max_len = max(len(t) for t in plan.token_ids)
    with progress_bar(plan.n_texts, "caching", "text", progress) as bar, per_batch(bar):
        if plan.n_texts <= plan.batch_size:
            store = _run_one_batch_kept(model, plan, max_len, store_device)
            finish_shard(bar, plan.n_texts)
        else:
            store = _empty_store(model, plan, plan.n_texts, max_len, store_device)
            for start, end in shard_ranges(plan.n_texts, plan.shard_size):
                _run_rows(model, plan, plan.token_ids[start:end], store, offset=start)
                finish_shard(bar, end - start)
    lengths = torch.tensor([len(t) for t in plan.token_ids])
    provenance = {
        "revision": model.info.revision,
        "dtype": model.info.dtype,
        "texts_sha256": texts_sha256(plan.token_ids),
    }
    return CorpusCache(
        store, lengths, plan.positions, model.info.name, list(plan.hooks), provenance
    )


def _empty_store(
    model, plan: CachePlan, n_rows: int, max_len: int, device: torch.device
) -> dict[str, torch.Tensor]:
    return {
        h: torch.zeros(
            (n_rows, *row_shape(model, h, plan.positions, max_len)),
            dtype=plan.store_dtype,
            device=device,
        )
        for h in plan.hooks
    }


def _run_rows(
    model,
    plan: CachePlan,
    token_ids: list[list[int]],
    store: dict[str, torch.Tensor],
    offset: int = 0,
) -> None:
    """Run one shard's texts, writing row `offset + i` of each (zero-initialised) store tensor.

    Rows are batched longest-first within windows of `SORT_WINDOW_BATCHES` batches (each
    batch in input order, so a single batch needs no reordering). Shards hold whole windows,
    so which texts share a batch (and so every bit of the result) does not depend on the
    shard size or on memory vs disk.
    """
    window = plan.batch_size * SORT_WINDOW_BATCHES
    table = hook_table(model)
    device = next(iter(store.values())).device
    for first in range(0, len(token_ids), window):
        rows_in_window = range(first, min(first + window, len(token_ids)))
        order = sorted(rows_in_window, key=lambda i: (-len(token_ids[i]), i))
        for start in range(0, len(order), plan.batch_size):
            rows = sorted(order[start : start + plan.batch_size])
            row_index = torch.tensor([offset + i for i in rows], device=device)

            def write(name: str, values: torch.Tensor, lengths: torch.Tensor) -> None:
                # One indexed copy of the batch (as wide as its longest text), then its pad positions zeroed.
                pos_dims = table[name].pos_dims if plan.positions == "all" else ()
                view = store[name]
                for dim in pos_dims:
                    view = view.narrow(dim, 0, values.shape[dim])
                view.index_copy_(0, row_index, values.to(device, plan.store_dtype))
                _zero_padding(view, lengths, pos_dims, rows=row_index.tolist())

            _run_batch(model, plan, [token_ids[i] for i in rows], write)
            advance(len(rows))


def _run_one_batch_kept(
    model, plan: CachePlan, max_len: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """An in-memory cache that is one batch: keep each hook's output as the forward pass made it
    rather than copy it, the way TransformerLens' `run_with_cache` keeps its tensors, and zero its
    pad positions in place once the pass is over. Outputs that cannot be kept safely are copied
    into a zero store instead: views into larger tensors, broadcast tables (stride 0) and anything
    sharing memory with the model's weights. Bit for bit the same as the copying path (tested)."""
    table = hook_table(model)
    model_memory = {
        t.untyped_storage().data_ptr()
        for t in (*model.hf_model.parameters(), *model.hf_model.buffers())
    }
    kept: dict[str, torch.Tensor] = {}
    lengths = torch.tensor([len(t) for t in plan.token_ids])
    _run_batch(
        model, plan, plan.token_ids, lambda name, values, _lengths: kept.__setitem__(name, values)
    )
    store = {}
    for name in plan.hooks:  # the pass is over: nothing reads these tensors any more
        values = kept.pop(name).to(device, plan.store_dtype)
        if not _can_keep(values, model_memory):
            target = torch.zeros(
                (len(lengths), *row_shape(model, name, plan.positions, max_len)),
                dtype=plan.store_dtype,
                device=device,
            )
            values = target.copy_(values)
        _zero_padding(values, lengths, table[name].pos_dims if plan.positions == "all" else ())
        store[name] = values
    return store


def _can_keep(values: torch.Tensor, model_memory: set[int]) -> bool:
    """Does this tensor own exactly its memory (no view into something larger, no stride-0
    broadcast) apart from the model's own, so it can be kept and its padding zeroed in place?"""
    owns = (
        values.untyped_storage().nbytes() == values.numel() * values.element_size()
        and values.is_contiguous()
    )
    return owns and values.untyped_storage().data_ptr() not in model_memory


def _zero_padding(
    values: torch.Tensor,
    lengths: torch.Tensor,
    pos_dims: tuple[int, ...],
    rows: list[int] | None = None,
) -> None:
    """Zero, in place, every position at or past each text's length along each position dim.

    values: [rows, ...]; lengths[i] is the length of row `rows[i]` (default: row i).
    """
    for i, length in enumerate(lengths.tolist()):
        row = values[i if rows is None else rows[i]]
        for dim in pos_dims:
            width = values.shape[dim]
            if length < width:
                row.narrow(dim - 1, length, width - length).zero_()


def _run_batch(model, plan: CachePlan, batch_ids: list[list[int]], write) -> None:
    """One forward pass over a right-padded batch; each hook's output goes to
    `write(hook, values, lengths)`: for positions="all" the output itself, batch first
    (pad positions not yet zeroed), otherwise the reduced [batch, ...] rows."""
    device = model.device
    lengths = torch.tensor([len(t) for t in batch_ids], device=device)
    width = int(lengths.max())
    pad_id = model.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    for i, ids in enumerate(batch_ids):
        input_ids[i, : len(ids)] = torch.tensor(ids)
    input_ids = input_ids.to(device)
    mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
    # Without padding the mask is all ones: leave it out, as a plain forward would.
    attention_mask = None if bool(mask.all()) else mask
    cpu_lengths = lengths.cpu()
    table = hook_table(model)
    # Stop once every requested hook has fired (aliases of one hook point fire one after the other).
    pending = set(plan.hooks)

    def make_hook(name: str):
        pos_dims = table[name].pos_dims

        def hook(output, _point):
            values = _batch_first(output.detach(), name, len(batch_ids))
            if plan.positions != "all":
                values = _select(values, pos_dims[0], plan.positions, lengths, mask)
            write(name, values, cpu_lengths)
            pending.discard(name)
            if not pending:
                raise StopForward

        return hook

    fwd_hooks = [(name, make_hook(name)) for name in plan.hooks]
    forward(model, input_ids, fwd_hooks=fwd_hooks, attention_mask=attention_mask, use_cache=False)


def _batch_first(output: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    """Check that dim 0 is the batch (rotary tables come as [1, pos, ...]: broadcast them)."""
    if output.shape[0] == 1 and batch > 1:
        output = output.expand(batch, *output.shape[1:])
    if output.shape[0] != batch:
        raise InputError(
            f"hook {name} has shape {tuple(output.shape)}, without a batch dimension; "
            "it cannot be cached per text"
        )
    return output


def _select(
    output: torch.Tensor, pos_dim: int, positions: str, lengths: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Reduce the position dimension: the last real token, or the mean over real tokens (float32)."""
    output = output.movedim(pos_dim, 1)  # [batch, pos, ...rest in their own order]
    if positions == "last":
        return output[torch.arange(len(lengths), device=output.device), lengths - 1]
    extra = [1] * (output.dim() - 2)
    weights = mask.to(torch.float32)
    if positions == "mean_after_first":
        weights = weights.clone()
        weights[lengths > 1, 0] = 0.0  # right-padded: position 0 is every text's first token
    counts = weights.sum(1)
    weights = weights.view(*mask.shape, *extra)
    return (output.float() * weights).sum(1) / counts.view(-1, *extra)


# ----------------------------------------------------------------------------- on disk


def _run_settings(model, plan: CachePlan, texts_hash: str) -> dict:
    info = model.info
    return {
        "format": CACHE_FORMAT,
        "model": {
            "name": info.name,
            "source": info.source,
            "revision": info.revision,
            "architecture": info.architecture,
            "dtype": info.dtype,
            "n_params": info.n_params,
            "origin": info.origin,
        },
        "hooks": plan.hooks,
        "positions": plan.positions,
        "store_dtype": str(plan.store_dtype).replace("torch.", ""),
        "batch_size": plan.batch_size,
        "shard_size": plan.shard_size,
        "n_texts": plan.n_texts,
        "texts_sha256": texts_hash,
        # Every package that decides a number, plus the key older manifests used for TransformerLens.
        "versions": {**versions(), "transformer_lens": versions()["transformer-lens"]},
    }


def _cache_to_disk(
    model, plan: CachePlan, out: str | Path, progress: bool, executor=None
) -> DiskCorpusCache:
    """Write the cache into `out`, a folder or a URL (s3://...: through a staging copy, workbench.core.remote)."""
    with staged(out) as local, folder_lock(local):
        cache = _cache_to_disk_locked(model, plan, local, progress, executor)
    if is_url(out):
        complete, cache = cache.already_complete, open_cache(out)
        cache.already_complete = complete
    return cache


def _cache_to_disk_locked(
    model, plan: CachePlan, out: Path, progress: bool, executor=None
) -> DiskCorpusCache:
    """Write (or resume, or repair) a disk cache. Each shard's sha256 is kept in shards.json as it
    is written; on a rerun a shard that is missing or does not match is computed again (a damaged
    file is moved aside with a warning), and the manifest is rewritten when anything changed."""
    settings = _run_settings(model, plan, texts_sha256(plan.token_ids))
    (out / "shards").mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, ValueError, RecursionError):
            raise InputError(
                "damaged run.json; delete the folder or choose another --out", str(run_file)
            ) from None
        differing = [k for k in settings if k != "versions" and previous.get(k) != settings[k]]
        if differing:
            raise InputError(
                f"holds a cache from a different run ({', '.join(differing)} differ); "
                "choose another --out or delete this folder",
                str(out),
            )
    else:
        _write_json_atomically(run_file, settings)
    index = ShardIndex(out / "shards.json")
    # every recorded shard, not only run.json, must come from these settings (run.json edited?)
    fingerprint = settings_sha256({k: v for k, v in settings.items() if k != "versions"})
    index.check_settings_of(fingerprint, out)
    ranges = shard_ranges(plan.n_texts, plan.shard_size)
    names = [f"shards/shard-{i:05d}.safetensors" for i in range(len(ranges))]
    if (out / "manifest.json").exists() and all(index.verified(out / name) for name in names):
        finished = DiskCorpusCache(out)
        finished.already_complete = True
        return finished

    remove_stale_temporaries(out / "shards")
    executor = executor or LocalExecutor()
    with progress_bar(plan.n_texts, "caching", "text", progress) as bar, per_batch(bar):
        jobs = []
        for name, (start, end) in zip(names, ranges):
            path = out / name
            if index.verified(path):
                bar.update(end - start)
                continue
            if path.exists():
                set_aside(path, "does not match its recorded sha256 (damaged or never recorded)")
            jobs.append(
                ShardJob(name, (start, end, plan.token_ids[start:end], str(temp_path(path))))
            )
        for job, tmp in executor.run(
            model, _shard_writer(dataclasses.replace(plan, token_ids=[])), jobs
        ):
            path = out / job.key
            index.record(path, Path(tmp), settings=fingerprint)
            os.replace(tmp, path)
            shard_finished()
            finish_shard(bar, job.args[1] - job.args[0])
    shards = [
        {
            "file": name,
            "rows": [start, end],
            "tokens": sum(len(t) for t in plan.token_ids[start:end]),
            "sha256": index.entries[Path(name).name]["sha256"],
        }
        for name, (start, end) in zip(names, ranges)
    ]
    manifest = dict(settings)
    manifest["token_counts"] = {
        "total": plan.n_tokens,
        "max": max(len(t) for t in plan.token_ids),
        "truncated_texts": plan.n_truncated,
    }
    manifest["row_shapes"] = {
        h: [d if d else "pos" for d in row_shape(model, h, plan.positions, 0)] for h in plan.hooks
    }
    manifest["pos_dims"] = {h: list(hook_table(model)[h].pos_dims) for h in plan.hooks}
    manifest["shards"] = shards
    _write_json_atomically(out / "manifest.json", manifest)
    return DiskCorpusCache(out)


def _save_shard(store: dict, tmp: str, start: int, end: int) -> None:
    """save_file, with safetensors' own error for a failed write (a full disk, say) raised as the
    OSError it is, naming the file, so every caller reports it like any other I/O failure."""
    try:
        save_file(store, tmp, metadata={"rows": f"{start}:{end}"})
    except SafetensorError as error:
        detail = str(error).split("I/O error: ", 1)[-1]
        code = errno.ENOSPC if "os error 28" in detail else errno.EIO
        raise OSError(code, f"cannot write a shard ({detail})", tmp) from None


def _shard_writer(plan: CachePlan):
    """The function that computes one disk shard and writes it to a temporary file, built on
    whichever process holds the model (this one, or a Ray worker). `plan` without its token ids:
    each job carries its own rows."""

    def build(model):
        def compute(start: int, end: int, ids: list[list[int]], tmp: str) -> str:
            store = _empty_store(
                model, plan, end - start, max(len(t) for t in ids), torch.device("cpu")
            )
            _run_rows(model, plan, ids, store)
            store[LENGTHS_KEY] = torch.tensor([len(t) for t in ids])
            _save_shard(store, tmp, start, end)
            return tmp

        return compute

    return build


def _write_json_atomically(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
