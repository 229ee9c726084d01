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

from ..core.datasets import TextRecord, as_records
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


def chunk_token_ids(
    model,
    records: Sequence[TextRecord] | Sequence[str],
    context: int,
    prepend_bos: bool | None = None,
    max_chunks: int | None = None,
) -> list[list[int]]:
    """Texts joined into one token stream and cut into windows of `context` tokens each, the way
    sparse autoencoders are trained (no padding, every window the same length).

    Each text is tokenized without a start token and followed by a newline; every window then
    begins with the model's start token where the library's rule prepends one (`prepend_bos`, as
    in `tokenize_records`), so a window holds `context - 1` text tokens after it. The last partial
    window is dropped. `max_chunks` keeps the first that many windows.
    """
    if context < 2:
        raise InputError(f"the context must be at least 2 tokens, not {context}")
    if max_chunks is not None and max_chunks < 1:
        raise InputError(f"max_chunks must be at least 1, not {max_chunks}")
    records = as_records(records)
    with_start = tokenize_texts(model, ["a"], prepend_bos)[0]
    start = with_start[: len(with_start) - len(tokenize_texts(model, ["a"], False)[0])]
    body = context - len(start)
    stream: list[int] = []
    chunks: list[list[int]] = []
    batch = 1024  # texts tokenized per call
    for first in range(0, len(records), batch):
        texts = [r.text + "\n" for r in records[first : first + batch]]
        for ids in tokenize_texts(model, texts, False):
            stream.extend(ids)
        while len(stream) >= body:
            chunks.append(start + stream[:body])
            del stream[:body]
            if max_chunks is not None and len(chunks) >= max_chunks:
                return chunks
    if not chunks:
        raise InputError(f"the texts give fewer than {body} tokens: not one window of {context}")
    return chunks
