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
and the final manifest equals an uninterrupted run's. Reading back is lazy: one
hook at a time, memory-mapped, shard by shard if need be.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .datasets import TextRecord, as_records
from .errors import CacheTooLargeError, InputError
from .memory import FIT_FRACTION, available_bytes, format_bytes
from .hooks import bypass_unhooked_bridges, hook_table, register_forward, resolve_hooks

POSITIONS = ("all", "last", "mean", "mean_after_first")
CACHE_FORMAT = "workbench-activation-cache/1"
LENGTHS_KEY = "__lengths__"
SORT_WINDOW_BATCHES = 4  # texts are length-sorted within windows of this many batches
SHARD_TARGET_BYTES = 256 * 2**20  # automatic shard size: as many whole windows as fit in this


class _StopForward(Exception):
    """Raised after the last requested hook: the rest of the forward pass is not needed."""


# ----------------------------------------------------------------------------- results


class _CacheView:
    """What in-memory and on-disk caches share: lookup by hook name and stacking.

    A corpus cache holds one row per *text* at the chosen positions, so it is not
    TransformerLens' `ActivationCache` (one prompt batch, every position, with
    accumulated_resid and friends): for that, use ``model.run_with_cache(tokens)``.
    Keys are hook names, or TransformerLens' short form: ``cache["resid_post", 5]``.
    `provenance` says what made the activations (model name, revision, dtype, positions,
    texts_sha256 of the tokenized texts); probes trained on the cache record it.
    """

    hooks: list[str]
    positions: str

    def __getitem__(self, hook: str) -> torch.Tensor:
        raise NotImplementedError

    def __contains__(self, hook) -> bool:
        return _hook_key(hook) in self.hooks

    def keys(self) -> list[str]:
        return list(self.hooks)

    def stack(self, hooks: Sequence[str] | None = None) -> torch.Tensor:
        """Stack several hooks (default: all) into [n_hooks, n_texts, ...] (same shapes needed)."""
        return torch.stack([self[h] for h in (hooks or self.hooks)])


def _hook_key(key) -> str:
    """A hook name from a name or TransformerLens' (name, layer[, layer_type]) form: ("resid_post", 5)."""
    if isinstance(key, tuple):
        from transformer_lens.utilities import get_act_name

        return get_act_name(*key)
    return key


@dataclass
class CorpusCache(_CacheView):
    """Activations held in memory.

    activations: hook name -> tensor with the texts on dim 0 (see module docstring for shapes).
    lengths: Int[Tensor, "n_texts"], real tokens per text (after any truncation).
    """

    activations: dict[str, torch.Tensor]
    lengths: torch.Tensor
    positions: str
    model_name: str
    hooks: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.hooks = self.hooks or list(self.activations)
        self.provenance = {"model": self.model_name, "positions": self.positions, **self.provenance}

    def __getitem__(self, hook: str | tuple) -> torch.Tensor:
        hook = _hook_key(hook)
        if hook not in self.activations:
            raise KeyError(f"{hook!r} is not in this cache; it holds {self.hooks}")
        return self.activations[hook]

    def __repr__(self) -> str:
        return (
            f"CorpusCache({len(self.lengths)} texts, {len(self.hooks)} hooks, "
            f"positions={self.positions!r}, model={self.model_name!r})"
        )


class DiskCorpusCache(_CacheView):
    """A finished on-disk cache, read lazily (memory-mapped safetensors)."""

    def __init__(self, folder: str | Path, fetch=None, name: str | None = None):
        """folder: the local folder. fetch(relative path): downloads a missing file into it, for
        a cache read from a URL (`open_cache`), which `name` then is."""
        self.folder = Path(folder)
        self.name = name or str(self.folder)
        self._fetch = fetch
        self.already_complete = (
            False  # set when a cache run found every shard done and recomputed nothing
        )
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.exists():
            raise InputError(
                "no manifest.json: not a finished activation cache "
                "(rerun the same cache command to resume it)",
                self.name,
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError, RecursionError):
            raise InputError(
                "damaged manifest.json; rerun the cache command to rebuild it", self.name
            ) from None
        self._checked: set[str] = set()
        self.hooks = list(self.manifest["hooks"])
        self.positions = self.manifest["positions"]
        model = self.manifest["model"]
        self.provenance = {
            "model": model["name"],
            "revision": model.get("revision"),
            "dtype": model.get("dtype"),
            "positions": self.positions,
            "texts_sha256": self.manifest.get("texts_sha256"),
        }

    @property
    def lengths(self) -> torch.Tensor:
        return torch.cat([self._read(s, LENGTHS_KEY) for s in self.manifest["shards"]])

    def iter_shards(self, hook: str) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first row index, tensor) shard by shard: constant memory over a huge corpus."""
        self._check(hook)
        for shard in self.manifest["shards"]:
            yield shard["rows"][0], self._read(shard, hook)

    def __getitem__(self, hook: str | tuple) -> torch.Tensor:
        """One hook over every text (only this hook is read from disk)."""
        hook = _hook_key(hook)
        self._check(hook)
        blocks = [block for _, block in self.iter_shards(hook)]
        if self.positions == "all":
            blocks = _pad_to_common_length(blocks, self.manifest["pos_dims"][hook])
        return torch.cat(blocks)

    def to_memory(self) -> CorpusCache:
        return CorpusCache(
            {h: self[h] for h in self.hooks},
            self.lengths,
            self.positions,
            self.manifest["model"]["name"],
            list(self.hooks),
            dict(self.provenance),
        )

    def _check(self, hook: str) -> None:
        if hook not in self.hooks:
            raise KeyError(f"{hook!r} is not in the cache at {self.name}; it holds {self.hooks}")

    def _read(self, shard: dict, key: str) -> torch.Tensor:
        """One tensor of one shard; the shard's sha256 is checked against the manifest on its first read."""
        from safetensors import safe_open

        from .provenance import file_sha256

        path = self.folder / shard["file"]
        if shard["file"] not in self._checked:
            if self._fetch is not None and not path.is_file():
                self._fetch(shard["file"])
            if not path.is_file() or file_sha256(path) != shard["sha256"]:
                raise InputError(
                    f"shard {shard['file']} is missing or damaged (sha256 differs from the manifest); "
                    "rerun the same cache command to recompute it",
                    self.name,
                )
            self._checked.add(shard["file"])
        with safe_open(path, framework="pt") as handle:
            return handle.get_tensor(key)

    def __repr__(self) -> str:
        return (
            f"DiskCorpusCache({self.name}, {self.manifest['n_texts']} texts, "
            f"{len(self.hooks)} hooks, positions={self.positions!r})"
        )


def open_cache(folder: str | Path) -> DiskCorpusCache:
    """Open a finished on-disk cache written by `cache_activations(..., out=folder)`.

    `folder` may be a URL (``s3://bucket/prefix``): its manifest is read now and each shard is
    downloaded into a temporary folder on its first read (and checked against its sha256)."""
    from .remote import Mirror, is_url

    if not is_url(folder):
        return DiskCorpusCache(folder)
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="workbench-cache-")
    mirror = Mirror(folder, Path(scratch.name))
    mirror.pull(only=("manifest.json",))
    cache = DiskCorpusCache(scratch.name, fetch=mirror.fetch, name=folder)
    cache._scratch = scratch  # deleted with the cache object
    return cache


def _pad_to_common_length(blocks: list[torch.Tensor], pos_dims: list[int]) -> list[torch.Tensor]:
    """Zero-pad per-shard 'all'-position blocks to the longest shard's length along `pos_dims`."""
    longest = max(b.shape[pos_dims[0]] for b in blocks)
    padded = []
    for block in blocks:
        shape = list(block.shape)
        for d in pos_dims:
            shape[d] = longest
        out = block.new_zeros(shape)
        out[tuple(slice(0, n) for n in block.shape)] = block
        padded.append(out)
    return padded


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class CachePlan:
    """Everything decided before the first forward pass."""

    hooks: list[str]
    positions: str
    token_ids: list[list[int]]
    n_truncated: int
    store_dtype: torch.dtype
    batch_size: int
    shard_size: int

    @property
    def n_texts(self) -> int:
        return len(self.token_ids)

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


def tokenize_records(
    model, records: Sequence[TextRecord], truncate: bool = False, max_length: int | None = None
) -> tuple[list[list[int]], int]:
    """Token ids per text (the tokenizer's own special tokens included) and the truncated count.

    Raises `InputError` naming the file and line of an empty or over-long text
    unless `truncate` is set, in which case over-long texts are cut to `max_length`
    (default: the model's context length).
    """
    limit = max_length or model.info.n_ctx
    encoded = model.tokenizer([r.text for r in records], add_special_tokens=True)["input_ids"]
    token_ids, n_truncated = [], 0
    for record, ids in zip(records, encoded):
        if not ids:
            raise InputError("text is empty after tokenization", record.path, record.line)
        if len(ids) > limit:
            if not truncate:
                raise InputError(
                    f"text is {len(ids)} tokens, longer than the limit of {limit} "
                    f"({model.info.name}'s context; pass --truncate to cut it)",
                    record.path,
                    record.line,
                )
            ids, n_truncated = ids[:limit], n_truncated + 1
        token_ids.append(list(ids))
    return token_ids, n_truncated


def row_shape(model, hook: str, positions: str, max_len: int) -> tuple[int, ...]:
    """Shape stored per text for `hook` (the text dimension excluded).

    "all" keeps the hook's own layout with each position dimension `max_len` long;
    "last"/"mean" drop the (single) position dimension.
    """
    info = hook_table(model)[hook]
    if positions == "all":
        return tuple(
            max_len if d in info.pos_dims else n for d, n in enumerate(info.shape) if d > 0
        )
    return tuple(n for d, n in enumerate(info.shape) if d > 0 and d not in info.pos_dims)


def estimate_bytes(model, plan: CachePlan) -> int:
    """Bytes that the finished cache takes (activations only, padding included)."""
    max_len = max(len(t) for t in plan.token_ids)
    itemsize = torch.empty((), dtype=plan.store_dtype).element_size()
    per_row = sum(math.prod(row_shape(model, h, plan.positions, max_len)) for h in plan.hooks)
    return plan.n_texts * per_row * itemsize


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
) -> CorpusCache | DiskCorpusCache:
    """Cache activations of `hooks` for every text.

    Args:
        model: a `LoadedModel` from `workbench.load`.
        texts: strings, or `TextRecord`s (from `workbench.datasets.read_texts`) so
            errors can name the file and line.
        hooks: hook names or patterns (see `workbench.hooks`), e.g. "resid_post".
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
        executor: where disk shards are computed (`workbench.distributed`): this process by
            default, or `RayExecutor("local" | "auto" | address, workers)`; needs `out`.

    Returns:
        `CorpusCache` (in memory) or `DiskCorpusCache` (with `out`).
    """
    records = as_records(texts)
    if not records:
        raise InputError("no texts to cache")
    token_ids, n_truncated = tokenize_records(model, records, truncate, max_length)
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
    with _progress_bar(plan.n_texts, progress) as bar:
        if plan.n_texts <= plan.batch_size:
            store = _run_one_batch_kept(model, plan, max_len, store_device)
            bar.update(plan.n_texts)
        else:
            store = _empty_store(model, plan, plan.n_texts, max_len, store_device)
            for start, end in _shard_ranges(plan):
                _run_rows(model, plan, plan.token_ids[start:end], store, offset=start)
                bar.update(end - start)
    lengths = torch.tensor([len(t) for t in plan.token_ids])
    provenance = {
        "revision": model.info.revision,
        "dtype": model.info.dtype,
        "texts_sha256": texts_sha256(plan.token_ids),
    }
    return CorpusCache(
        store, lengths, plan.positions, model.info.name, list(plan.hooks), provenance
    )


def _shard_ranges(plan: CachePlan) -> list[tuple[int, int]]:
    """Row ranges of the shards. In-memory runs use the same ones, so batches (and bits) agree."""
    return [
        (start, min(start + plan.shard_size, plan.n_texts))
        for start in range(0, plan.n_texts, plan.shard_size)
    ]


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
    hook_dict = model.bridge.hook_dict

    def make_hook(name: str):
        pos_dims = table[name].pos_dims

        def hook(output, _point):
            values = _batch_first(output.detach(), name, len(batch_ids))
            if plan.positions != "all":
                values = _select(values, pos_dims[0], plan.positions, lengths, mask)
            write(name, values, cpu_lengths)
            pending.discard(name)
            if not pending:
                raise _StopForward

        return hook

    handles = [register_forward(hook_dict[name], make_hook(name)) for name in plan.hooks]
    try:
        with torch.no_grad(), bypass_unhooked_bridges(model):
            model.hf_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


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
    from .provenance import versions

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


def texts_sha256(token_ids: list[list[int]]) -> str:
    """Hash of the tokenized texts: what the activations actually depend on."""
    digest = hashlib.sha256()
    for ids in token_ids:
        digest.update(json.dumps(ids).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _cache_to_disk(
    model, plan: CachePlan, out: str | Path, progress: bool, executor=None
) -> DiskCorpusCache:
    """Write the cache into `out`, a folder or a URL (s3://...: through a staging copy, workbench.remote)."""
    from .remote import is_url, staged
    from .storage import folder_lock

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
    from .distributed import LocalExecutor, ShardJob, remove_stale_temporaries
    from .remote import shard_finished
    from .storage import ShardIndex, set_aside, temp_path

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
    ranges = _shard_ranges(plan)
    names = [f"shards/shard-{i:05d}.safetensors" for i in range(len(ranges))]
    if (out / "manifest.json").exists() and all(index.verified(out / name) for name in names):
        finished = DiskCorpusCache(out)
        finished.already_complete = True
        return finished

    remove_stale_temporaries(out / "shards")
    executor = executor or LocalExecutor()
    with _progress_bar(plan.n_texts, progress) as bar:
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
            index.record(path, Path(tmp))
            os.replace(tmp, path)
            shard_finished()
            bar.update(job.args[1] - job.args[0])
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


def _shard_writer(plan: CachePlan):
    """The function that computes one disk shard and writes it to a temporary file, built on
    whichever process holds the model (this one, or a Ray worker). `plan` without its token ids:
    each job carries its own rows."""

    def build(model):
        def compute(start: int, end: int, ids: list[list[int]], tmp: str) -> str:
            from safetensors.torch import save_file

            store = _empty_store(
                model, plan, end - start, max(len(t) for t in ids), torch.device("cpu")
            )
            _run_rows(model, plan, ids, store)
            store[LENGTHS_KEY] = torch.tensor([len(t) for t in ids])
            save_file(store, tmp, metadata={"rows": f"{start}:{end}"})
            return tmp

        return compute

    return build


def _write_json_atomically(path: Path, data: dict) -> None:
    from .storage import write_atomically

    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="text",
        desc="caching",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
