"""Log-probabilities of token sequences under the model, as it stands (hooks applied if any).

    logprobs = token_logprobs(model, [[bos, 15, 27, 9], [bos, 15, 3]])
    logprobs[0]          # float64 array of 3 values: log p(15 | bos), log p(27 | bos 15), log p(9 | ...)

One primitive behind every likelihood measure: CrowS-Pairs sentence scores, the
ToxiGen preference, the fluency of generated continuations, held-out perplexity
and single-token QA. Sequences are batched longest first with right padding, so
every real token sees exactly its own prefix; the logits come in the model's dtype,
the log-softmax runs in float64 and the results are float64 numpy arrays.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .run import forward


def start_token(tokenizer) -> int:
    """The token every scored text is conditioned on: BOS, else EOS (GPT-2-style tokenizers)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode_texts(model, texts: Sequence[str]) -> list[list[int]]:
    """[start token] + the text's tokens (no other special tokens), one list per text."""
    tokenizer = model.tokenizer
    start = start_token(tokenizer)
    return [[start] + tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def token_logprobs(
    model,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 16,
    with_argmax: bool = False,
    on_batch: Callable[[int], None] | None = None,
):
    """Per sequence, the log-probability of each token after the first given all before it.

    sequences: token-id lists of length >= 1. Returns a list of Float64[len-1] numpy arrays;
    with `with_argmax`, also a list of Int64[len-1] arrays: the model's most likely token at
    each of those positions (for exact-match accuracy). on_batch: called with the number of
    sequences after each batch (a progress bar's update).
    """
    pad = model.tokenizer.pad_token_id or 0
    logprobs: list = [None] * len(sequences)
    argmax: list = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        width = max(len(sequences[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(sequences[i])] = torch.as_tensor(list(sequences[i]), dtype=torch.long)
            mask[r, : len(sequences[i])] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        logits = forward(model, ids, attention_mask=mask)[:, :-1].float()
        best = logits.argmax(-1).cpu().numpy() if with_argmax else None
        for r, i in enumerate(rows):
            n = len(sequences[i]) - 1
            # The normaliser in float64, one row at a time: a float32 log-softmax is off by up to
            # 3e-4 nats per sentence (measured on CrowS-Pairs, smollm2), float64 by under 5e-5.
            row = logits[r, :n].double()
            chosen = row.gather(-1, ids[r, 1 : n + 1, None])[:, 0] - row.logsumexp(-1)
            logprobs[i] = chosen.cpu().numpy()
            if with_argmax:
                argmax[i] = best[r, :n]
        if on_batch is not None:
            on_batch(len(rows))
    return (logprobs, argmax) if with_argmax else logprobs


def continuation_logprobs(
    model,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Per pair, Float64[len(continuation)]: log p of each continuation token given the context
    and the continuation tokens before it. Contexts need at least one token. on_batch: as
    `token_logprobs`."""
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    sequences = [list(c) + list(k) for c, k in zip(contexts, continuations)]
    scores = token_logprobs(model, sequences, batch_size, on_batch=on_batch)
    return [s[len(c) - 1 :] for s, c in zip(scores, contexts)]
