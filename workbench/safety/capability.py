"""What an intervention costs: fluency of what the model writes, and capability on held-out tasks.

    items = read_qa("probes/qa.jsonl", model) + read_heldout(["probes/heldout_neutral.txt"])
    rows = capability_rows(model, items)               # under whatever hooks are applied
    fluency = continuation_fluency(model, generations) # NLL of each continuation, hooks off

Three measures, each per text so that conditions can be compared text by text:

- **Fluency of continuations**: the negative log-likelihood of the generated tokens
  under the *unsteered* model, given exactly the prompt tokens they were generated
  from (perplexity = exp of the token-weighted mean), and two repetition measures on
  whitespace words (lower-cased): the share of 3-grams that repeat an earlier 3-gram
  of the same text (0 = none, near 1 = a loop) and distinct-2, the share of distinct
  2-grams (Li et al. 2016; near 1 = varied, near 0 = a loop). Texts under three words
  have no 3-grams and count as 0 repetition.
- **Held-out perplexity**: the NLL of each text of a neutral corpus, each token given
  the start token (and, for an instruction condition, the instruction) and the text
  before it, under the condition's intervention.
- **Single-token QA**: questions in a fixed few-shot format (`QA_SHOTS`, then
  ``Question: <q>\nAnswer:``); correct when the model's most likely next token is the
  answer's one token, over the whole vocabulary (`qa_tokens`: the answer is read
  as the tokenizer splits " <answer>" after the prompt).

`InstructionPrefix`: the prompting baseline prepends an instruction to every input
the model reads (prompts, QA questions, held-out texts), so its costs are measured
the same way as a steering vector's.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.checks import check_context
from ..core.datasets import TextRecord, check_text, json_line, read_lines, read_texts
from ..core.errors import InputError
from ..core.paths import package_data
from ..core.stats import proportion, ratio
from ..model.generation import encode_prompts
from ..model.likelihood import continuation_logprobs, start_token, token_logprobs

# The defaults ship inside the package (probes/ in a checkout is a link to workbench/data/probes).
DEFAULT_QA = package_data("probes", "qa.jsonl")
DEFAULT_HELDOUT = package_data("probes", "heldout_neutral.txt")
QA_SHOTS = (
    ("What is the capital of the United States?", "Washington"),
    ("What color is a tomato?", "red"),
    ("What is 1 + 2?", "3"),
)
MIN_QA = 10  # fewer questions than this give no accuracy worth reporting


@dataclass(frozen=True)
class CapabilityItem:
    """One held-out text (kind "text") or one QA question (kind "qa", with its answer token)."""

    kind: str
    text: str
    answer: str = ""
    answer_id: int = -1
    category: str = ""
    path: str = ""
    line: int = 0


def read_qa(path: str | Path, model=None) -> list[CapabilityItem]:
    """A QA file: JSONL with "question", "answer" (one token with a leading space for this model's
    tokenizer) and optional "category". Any bad line is an InputError naming file, line and field.
    Without `model` only the structure is checked (answer_id stays -1): the CLI does that before
    loading the model, then checks the tokens once it is loaded."""
    shown, lines = read_lines(path, "QA file")
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = json_line(line, shown, number)
        if not isinstance(record, dict):
            raise InputError(
                "a QA line must be a JSON object with 'question' and 'answer'", shown, number
            )
        for key in ("question", "answer"):
            if key not in record:
                raise InputError(f"field {key!r} is missing", shown, number)
        question = check_text(record.get("question"), "question", shown, number)
        answer = check_text(record.get("answer"), "answer", shown, number).strip()
        answer_id = -1
        if model is not None:
            try:
                answer_id = qa_tokens(model.tokenizer, qa_prompt(question), answer)[1]
            except ValueError as error:
                raise InputError(
                    f"field 'answer': {answer!r} {error} for {model.info.name}; QA answers must be "
                    "one token",
                    shown,
                    number,
                ) from None
        items.append(
            CapabilityItem(
                "qa", question, answer, answer_id, str(record.get("category", "")), shown, number
            )
        )
    if len(items) < MIN_QA:
        raise InputError(f"{len(items)} questions; a QA file needs at least {MIN_QA}", shown)
    return items


def read_heldout(paths: Sequence[str | Path]) -> list[CapabilityItem]:
    """Held-out texts: one per line (.txt), or .jsonl/.csv as `read_texts` reads them."""
    items = []
    for path in paths:
        records = read_texts(path)
        if not records:
            raise InputError("no texts: the held-out corpus is empty", str(path))
        items += [
            CapabilityItem("text", r.text, path=str(r.path), line=r.line or 0) for r in records
        ]
    if not items:
        raise InputError("no held-out corpus given")
    return items


def check_items_fit(model, items: Sequence[CapabilityItem], instruction: str = "") -> None:
    """Refuse, before any model work, a held-out text or QA prompt longer than the model's
    context: a perplexity computed past it means nothing, and the forward pass would try to
    allocate for it. InputError naming the file and line."""
    check_context(
        model,
        [
            TextRecord(
                item.text if item.kind == "text" else qa_prompt(item.text, instruction),
                item.path or None,
                item.line or None,
            )
            for item in items
        ],
        what="held-out text or QA prompt",
    )


def items_sha256(items: Sequence[CapabilityItem]) -> str:
    """A hash of what decides the capability numbers (kinds, texts, answers), for run.json."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.kind, item.text, item.answer]).encode() + b"\n")
    return digest.hexdigest()


def qa_tokens(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """(context ids, answer id) for `prompt` followed by a space and `answer`, tokenized as one text.

    The answer must add exactly one token. Whitespace-only tokens the tokenizer puts before it
    (SmolLM2 writes " 4" as " " then "4") belong to the context: the model is asked for the answer
    token right after them. ValueError, saying how the answer splits, otherwise.
    """
    context = tokenizer(prompt, add_special_tokens=False).input_ids
    full = tokenizer(prompt + " " + answer, add_special_tokens=False).input_ids
    shared = 0
    while shared < min(len(context), len(full)) and context[shared] == full[shared]:
        shared += 1
    rest = full[shared:]
    while len(rest) > 1 and not tokenizer.decode([rest[0]]).strip():
        rest = rest[1:]
    if len(rest) != 1:
        raise ValueError(f"is {len(rest)} tokens {[tokenizer.decode([i]) for i in rest]}")
    return full[:-1], rest[0]


def qa_prompt(question: str, instruction: str = "") -> str:
    """The few-shot QA prompt for `question`, after the instruction if there is one."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in QA_SHOTS)
    return (f"{instruction}\n\n" if instruction else "") + f"{shots}Question: {question}\nAnswer:"


def capability_rows(
    model,
    items: Sequence[CapabilityItem],
    instruction: str = "",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict]:
    """One dict per item, under whatever hooks are applied now: "kind", "nll" (nats, summed over
    the scored tokens), "tokens" (tokens scored); QA items also "correct" (bool), "predicted"
    (the model's top token, decoded) and "answer_logprob". on_batch: called with the number of
    items after each batch (a progress bar's update)."""
    tokenizer = model.tokenizer
    start = start_token(tokenizer)
    rows: list[dict] = [{} for _ in items]
    texts = [i for i, item in enumerate(items) if item.kind == "text"]
    if texts:
        prefix = [start] + (
            tokenizer(instruction + "\n\n", add_special_tokens=False).input_ids
            if instruction
            else []
        )
        targets = [tokenizer(items[i].text, add_special_tokens=False).input_ids for i in texts]
        scores = continuation_logprobs(
            model, [prefix] * len(texts), targets, batch_size, on_batch=on_batch
        )
        for i, score in zip(texts, scores):
            rows[i] = {"kind": "text", "nll": float(-score.sum()), "tokens": len(score)}
    questions = [i for i, item in enumerate(items) if item.kind == "qa"]
    if questions:
        sequences = []
        for i in questions:
            context, answer_id = qa_tokens(
                tokenizer, qa_prompt(items[i].text, instruction), items[i].answer
            )
            if answer_id != items[i].answer_id:
                raise InputError(
                    f"QA answer {items[i].answer!r} tokenizes differently after the instruction",
                    items[i].path or None,
                    items[i].line or None,
                )
            sequences.append([start] + context + [answer_id])
        scores, best = token_logprobs(
            model, sequences, batch_size, with_argmax=True, on_batch=on_batch
        )
        for i, score, top in zip(questions, scores, best):
            rows[i] = {
                "kind": "qa",
                "nll": float(-score[-1]),
                "tokens": 1,
                "answer_logprob": float(score[-1]),
                "correct": bool(top[-1] == items[i].answer_id),
                "predicted": tokenizer.decode([int(top[-1])]),
            }
    return rows


def continuation_fluency(model, generations: Sequence, batch_size: int = 16) -> list[dict]:
    """Per `workbench.model.generation.Generation`: "continuation_nll" (nats, summed) and
    "continuation_scored_tokens" of its new tokens given its formatted prompt, under the model
    as it stands (call it with no steering applied: the unsteered model's judgement), and the
    repetition measures of its text. Empty continuations get nll nan and 0 tokens."""
    rows = [repetition(g.text) for g in generations]
    scored = [i for i, g in enumerate(generations) if g.new_tokens]
    if scored:
        contexts = []
        for i in scored:
            ids = encode_prompts(model, [generations[i].formatted_prompt])["input_ids"][0].tolist()
            contexts.append(ids if ids else [start_token(model.tokenizer)])
        scores = continuation_logprobs(
            model, contexts, [list(generations[i].new_tokens) for i in scored], batch_size
        )
        for i, score in zip(scored, scores):
            rows[i].update(
                continuation_nll=float(-score.sum()), continuation_scored_tokens=len(score)
            )
    for row in rows:
        row.setdefault("continuation_nll", math.nan)
        row.setdefault("continuation_scored_tokens", 0)
    return rows


def repetition(text: str) -> dict:
    """{"repeated_3grams": share of word 3-grams already seen earlier in the text,
    "distinct_2": distinct word 2-grams / all word 2-grams (1.0 for texts under two words)}."""
    words = text.lower().split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    seen, repeated = set(), 0
    for gram in trigrams:
        repeated += gram in seen
        seen.add(gram)
    bigrams = [tuple(words[i : i + 2]) for i in range(len(words) - 1)]
    return {
        "repeated_3grams": repeated / len(trigrams) if trigrams else 0.0,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 1.0,
    }


def perplexity(
    nll: Sequence[float],
    tokens: Sequence[int],
    seed: int = 0,
    n_boot: int = 2000,
    unit: str = "texts",
):
    """Perplexity exp(sum nll / sum tokens) with a bootstrap interval over texts (the ratio of sums
    resampled text by text, then exponentiated): a `workbench.core.stats.Estimate`."""
    nll, tokens = np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float)
    keep = tokens > 0
    return ratio(nll[keep], tokens[keep], seed=seed, n_boot=n_boot, unit=unit).map(
        math.exp, "exp of "
    )


def summarise_capability(rows: Sequence[dict], seed: int = 0, n_boot: int = 2000) -> dict:
    """From `capability_rows` (or a capability audit's shard rows): {"heldout_perplexity": Estimate
    (bootstrap over texts), "qa_accuracy": Estimate (Wilson)}, each present when its items are."""
    texts = [r for r in rows if r["kind"] == "text"]
    questions = [r for r in rows if r["kind"] == "qa"]
    summary = {}
    if texts:
        summary["heldout_perplexity"] = perplexity(
            [r["nll"] for r in texts], [r["tokens"] for r in texts], seed, n_boot
        )
    if questions:
        summary["qa_accuracy"] = proportion([bool(r["correct"]) for r in questions])
    return summary
