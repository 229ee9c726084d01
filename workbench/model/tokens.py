"""Token helpers shared by the analyses: prompts to ids, ids to labels, answers to single tokens.

One tokenisation rule for every function that takes a prompt, under TransformerLens' name for it:
`prepend_bos`. None (the default everywhere) means what TL's bridge does for the model
(`model.cfg.default_prepend_bos`: True for SmolLM2, whose start token is "<|im_start|>"; False for
Phi-2), so `model.to_tokens(text)`, `model.run_with_cache(text)` and the workbench's own functions
see the same tokens. True or False overrides it, as in TL.
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Int

from ..core.errors import InputError, TokenizationWarning


def default_prepend_bos(model) -> bool:
    """What TransformerLens' bridge does for this model when `prepend_bos` is not given."""
    return bool(getattr(model.bridge.cfg, "default_prepend_bos", True))


def resolve_prepend_bos(model, prepend_bos: bool | None) -> bool:
    """`prepend_bos` as a bool: None means the bridge's default for the model."""
    if prepend_bos is None:
        return default_prepend_bos(model)
    if not isinstance(prepend_bos, bool):
        raise InputError(f"prepend_bos must be True, False or None, not {prepend_bos!r}")
    return prepend_bos


def tokenize_texts(model, texts: list[str], prepend_bos: bool | None = None) -> list[list[int]]:
    """Token ids of each text, unpadded and untruncated, by the rule of TransformerLens' bridge
    `to_tokens` (`TransformerBridge.to_tokens`, TL 4.3): with `prepend_bos` and a tokenizer that
    does not add it, the start token's text goes before the text; without it, a tokenizer's own
    start token is removed; an end token the tokenizer appends is dropped. One call for a batch,
    where the bridge would pad; `tests/test_tokens.py` checks it equals the bridge text by text."""
    prepend_bos = resolve_prepend_bos(model, prepend_bos)
    # The bridge's own tokenizer: TL sets it up apart from `model.tokenizer` (it may add a start
    # token that `model.tokenizer` does not), and its rule below assumes that one.
    cfg, tokenizer = model.bridge.cfg, model.bridge.tokenizer
    tokenizer_prepends_bos = getattr(cfg, "tokenizer_prepends_bos", True)
    bos = tokenizer.bos_token
    if prepend_bos and not tokenizer_prepends_bos and bos is not None:
        if len(tokenizer(bos, add_special_tokens=False)["input_ids"]) == 1:
            texts = [bos + text for text in texts]
    encoded = [list(ids) for ids in tokenizer(list(texts))["input_ids"]]
    eos = tokenizer.eos_token_id
    for ids in encoded:
        if getattr(cfg, "tokenizer_appends_eos", False) and eos is not None:
            while len(ids) > 1 and ids[-1] == eos:
                ids.pop()
        if not prepend_bos and tokenizer_prepends_bos and ids and ids[0] == tokenizer.bos_token_id:
            ids.pop(0)
    return encoded


def to_tokens(model, text: str, prepend_bos: bool | None = None) -> Int[torch.Tensor, "1 pos"]:
    """Int[Tensor, "1 pos"] token ids of `text`, as `model.to_tokens(text, prepend_bos)`
    (TransformerLens' bridge) gives them, but never truncated: an over-long prompt is an error."""
    if not isinstance(text, str):
        raise InputError(f"the prompt must be a string, not {type(text).__name__}")
    if not text:
        raise InputError("the prompt is empty")
    ids = torch.tensor([tokenize_texts(model, [text], prepend_bos)[0]], dtype=torch.long)
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
    _warn_if_space_was_meant(model, word, ids[0])
    return ids[0]


def _warn_if_space_was_meant(model, word: str, token_id: int) -> None:
    """One-line warning when `word` has no leading space but " word" is also a single token:
    after a word, the model predicts " Paris", so scoring "Paris" is rarely what was meant."""
    if word.startswith((" ", "\n", "\t")):
        return
    spaced = model.tokenizer(" " + word, add_special_tokens=False).input_ids
    if len(spaced) == 1 and spaced[0] != token_id:
        warnings.warn(
            f"answer {word!r} is scored as the token {word!r} (no leading space); "
            f"{' ' + word!r} is also one token, and is what follows a word: pass it to score that",
            TokenizationWarning,
            stacklevel=3,
        )


def check_layer(model, layer: int) -> int:
    """`layer` if it is a valid block index (negative counts from the end), else an `InputError`."""
    n = model.info.n_layers
    if not -n <= layer < n:
        raise InputError(f"layer {layer} is out of range: {model.info.name} has layers 0..{n - 1}")
    return layer % n
