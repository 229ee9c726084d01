"""What a caching run decides before its first forward pass: token ids, stored shapes, batching.

Positions (what is kept of each text): "all" (every token, right-padded), "last", "mean",
"mean_after_first" (see `workbench.model.activations`). Rows are length-sorted within windows of
`SORT_WINDOW_BATCHES` batches; `estimate_bytes` says what the finished cache takes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.datasets import TextRecord
from ..core.errors import InputError
from .hooks import hook_table
from .tokens import tokenize_texts

POSITIONS = ("all", "last", "mean", "mean_after_first")


SORT_WINDOW_BATCHES = 4  # texts are length-sorted within windows of this many batches


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
    model,
    records: Sequence[TextRecord],
    truncate: bool = False,
    max_length: int | None = None,
    prepend_bos: bool | None = None,
) -> tuple[list[list[int]], int]:
    """Token ids per text and the truncated count, by the library's one rule (`prepend_bos`: None is
    the bridge's default for the model; see `workbench.model.tokens`).

    Raises `InputError` naming the file and line of an empty or over-long text
    unless `truncate` is set, in which case over-long texts are cut to `max_length`
    (default: the model's context length).
    """
    limit = max_length or model.info.n_ctx
    encoded = tokenize_texts(model, [r.text for r in records], prepend_bos)
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


def texts_sha256(token_ids: list[list[int]]) -> str:
    """Hash of the tokenized texts: what the activations actually depend on."""
    digest = hashlib.sha256()
    for ids in token_ids:
        digest.update(json.dumps(ids).encode())
        digest.update(b"\n")
    return digest.hexdigest()
