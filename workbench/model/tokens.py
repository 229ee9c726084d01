"""Token helpers shared by the analyses: prompts to ids, ids to labels, answers to single tokens."""

from __future__ import annotations

import torch
from jaxtyping import Int

from ..core.errors import InputError


def to_tokens(model, text: str) -> Int[torch.Tensor, "1 pos"]:
    """Int[Tensor, "1 pos"] token ids of `text` (the tokenizer's own special tokens included)."""
    if not text:
        raise InputError("the prompt is empty")
    ids = model.tokenizer(text, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise InputError(f"the prompt {text!r} has no tokens")
    if ids.shape[1] > model.info.n_ctx:
        raise InputError(
            f"the prompt is {ids.shape[1]} tokens, longer than the context of {model.info.n_ctx}"
        )
    return ids.to(model.device)


def str_tokens(model, ids: Int[torch.Tensor, "..."]) -> list[str]:
    """Readable label per token (spaces kept, so " Mary" and "Mary" differ)."""
    return [model.tokenizer.decode([int(i)]) for i in ids.reshape(-1).tolist()]


def single_token_id(model, word: str) -> int:
    """The id of `word` if it is exactly one token, else an `InputError` showing how it splits."""
    ids = model.tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise InputError(
            f"answer {word!r} is {len(ids)} tokens {pieces} in {model.info.name}, not one; "
            "answers must be single tokens (mind the leading space)"
        )
    return ids[0]


def check_layer(model, layer: int) -> int:
    """`layer` if it is a valid block index (negative counts from the end), else an `InputError`."""
    n = model.info.n_layers
    if not -n <= layer < n:
        raise InputError(f"layer {layer} is out of range: {model.info.name} has layers 0..{n - 1}")
    return layer % n
