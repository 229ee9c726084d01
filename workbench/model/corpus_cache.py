"""Corpus caches: activations of many texts at chosen positions, in memory or on disk, read back.

    cache = wb.cache_activations(model, texts, hooks="resid_post", positions="last")
    cache["blocks.10.hook_resid_post"]          # Float[Tensor, "n_texts d_model"]
    cache["resid_post", 10]                     # the same, TransformerLens' short form
    disk = wb.open_cache("acts/")               # a finished on-disk cache (or an s3:// URL)
    for start, block in disk.iter_shards("blocks.10.hook_resid_post"): ...

A corpus cache holds one row per *text* at the chosen positions (`workbench.model.activations`
writes them), so it is not TransformerLens' `ActivationCache` (one prompt batch, every position):
for that, use ``model.run_with_cache(tokens)``. Reading from disk is lazy: one hook at a time,
memory-mapped, shard by shard if need be, each shard checked against the sha256 its manifest
records on its first read.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from safetensors import safe_open

from ..core.errors import InputError
from ..core.provenance import file_sha256
from ..core.remote import Mirror, is_url
from ..core.storage import check_plain_name

LENGTHS_KEY = "__lengths__"


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

    def stack(self, hooks: Sequence[str] | None = None) -> Float[torch.Tensor, "hook text ..."]:
        """Stack several hooks (default: all) into [n_hooks, n_texts, ...] (same shapes needed)."""
        return torch.stack([self[h] for h in (hooks or self.hooks)])


def _hook_key(key) -> str:
    """A hook name from a name or TransformerLens' (name, layer[, layer_type]) form: ("resid_post", 5)."""
    if isinstance(key, tuple):
        # lazy: TransformerLens takes ~2 s to import; only model work needs it
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
    lengths: Int[torch.Tensor, " text"]
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
        _check_manifest(self.manifest, self.name)
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
    def lengths(self) -> Int[torch.Tensor, " text"]:
        return torch.cat([self._read(s, LENGTHS_KEY) for s in self.manifest["shards"]])

    def iter_shards(self, hook: str) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first row index, tensor) shard by shard: constant memory over a huge corpus."""
        self._check(hook)
        for shard in self.manifest["shards"]:
            yield shard["rows"][0], self._read(shard, hook)

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def read_shard(self, index: int, hook: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Shard `index`'s rows of `hook` and their lengths (tokens per text), read on demand."""
        self._check(hook)
        shard = self.manifest["shards"][index]
        return self._read(shard, hook), self._read(shard, LENGTHS_KEY)

    def shard_lengths(self, index: int) -> Int[torch.Tensor, " text"]:
        """Tokens per text in shard `index` (small; no activations read)."""
        return self._read(self.manifest["shards"][index], LENGTHS_KEY)

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


def _check_manifest(manifest, where: str) -> None:
    """A manifest's fields that become paths or keys, checked before any is used: each shard's
    file must be ``shards/<plain file name>`` (a crafted ``../x`` would be read, or fetched from a
    URL, outside the cache folder)."""
    if not isinstance(manifest, dict) or not all(
        key in manifest for key in ("hooks", "positions", "model", "shards")
    ):
        raise InputError(
            "manifest.json lacks hooks, positions, model or shards; rerun the cache command to "
            "rebuild it",
            where,
        )
    for shard in manifest["shards"] if isinstance(manifest["shards"], list) else [None]:
        if not isinstance(shard, dict) or not isinstance(shard.get("sha256"), str):
            raise InputError("manifest.json: a shard entry has no file and sha256", where)
        folder, _, name = str(shard.get("file")).partition("/")
        if folder != "shards" or not isinstance(shard.get("file"), str):
            raise InputError(
                f"manifest.json records the shard {shard.get('file')!r}, which is not "
                "shards/<file name>; refused (a damaged or crafted manifest)",
                where,
            )
        check_plain_name(name, "manifest", where)


def open_cache(folder: str | Path) -> DiskCorpusCache:
    """Open a finished on-disk cache written by `cache_activations(..., out=folder)`.

    `folder` may be a URL (``s3://bucket/prefix``): its manifest is read now and each shard is
    downloaded into a temporary folder on its first read (and checked against its sha256)."""
    if not is_url(folder):
        return DiskCorpusCache(folder)

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
