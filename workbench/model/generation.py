"""Text generation through the hooked model, with each model's prompt format.

Generation runs Hugging Face's own `generate` (with its KV cache) on the booted
model. Booting replaced the HF decoder layers with bridge modules, so every hook
applied with `workbench.apply_hooks` (steering, ablation, caching) also acts
during generation. Bridge components with no hook below them run as plain HF
modules meanwhile (`bypass_unhooked_bridges`), which keeps generation near plain
HF speed; hooked components run through the bridge as usual.

Prompt formats (recorded per model in the registry):
- "chat": the tokenizer's chat template with one user turn (SmolLM2-Instruct
  needs it: asked a bare question it answers end-of-text at once);
- "instruct": ``Instruct: <prompt>\\nOutput:`` as Phi-2's model card suggests;
- "raw": the prompt as given (also what ``raw=True`` / ``--raw`` forces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Int

from ..core.display import clip
from ..core.progress import progress_bar
from .run import bypass_unhooked_bridges


@dataclass(frozen=True)
class Generation:
    """One prompt and what the model wrote after it (special tokens stripped)."""

    prompt: str
    formatted_prompt: str
    text: str
    new_tokens: tuple[int, ...]

    def __repr__(self) -> str:
        return (
            f"Generation({len(self.new_tokens)} new tokens: {clip(self.text)} after "
            f"{clip(self.prompt)})"
        )


def format_prompt(model, prompt: str, raw: bool = False) -> str:
    """Apply the model's prompt format to `prompt` unless `raw`."""
    style = "raw" if raw else model.info.prompt_format
    if style == "chat" and getattr(model.tokenizer, "chat_template", None):
        return model.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    if style == "instruct":
        return f"Instruct: {prompt}\nOutput:"
    return prompt


def encode_prompts(model, formatted: Sequence[str]) -> dict[str, Int[torch.Tensor, "batch pos"]]:
    """Left-padded input ids and attention mask for a batch of formatted prompts."""
    tokenizer = model.tokenizer
    tokenizer.padding_side = "left"
    try:
        # Chat templates already hold the special tokens they need.
        add_special = model.info.prompt_format != "chat"
        batch = tokenizer(
            list(formatted), return_tensors="pt", padding=True, add_special_tokens=add_special
        )
    finally:
        tokenizer.padding_side = "right"
    return {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


LONG_GENERATION = 64  # decoding steps from which `generate` shows a bar by default


def generate(
    model,
    prompts: str | Sequence[str],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    raw: bool = False,
    batch_size: int = 8,
    seeds: Sequence[int] | None = None,
    progress: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Continue each prompt; greedy by default, sampled with `do_sample=True`.

    Sampling gives every prompt its own random stream: prompt i draws from a generator
    seeded with ``seeds[i]`` (default: derived from `seed` and i), so a prompt's text does
    not depend on the batch size, on which prompts share its batch, or on how a run is
    split across workers. (It samples by the Gumbel-max trick: argmax of the tempered,
    top-p-filtered logits plus Gumbel noise from the prompt's own generator, which is an
    exact draw from the softmax.) The global torch RNG is not touched.

    progress: a bar on stderr that moves per generated token (batches x max_new_tokens; a batch
    that stops early at its end token counts its remaining steps at once); None shows it when the
    work is at least `LONG_GENERATION` steps; the library's own loops pass False. on_batch: called with
    the number of prompts after each batch (an audit's bar counts rows with it).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if seeds is None:
        seeds = [row_seed(seed, i) for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    results: list[Generation] = []
    pad_id = model.tokenizer.pad_token_id
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    n_batches = -(-len(prompts) // batch_size)
    if progress is None:
        progress = n_batches * max_new_tokens >= LONG_GENERATION
    with progress_bar(n_batches * max_new_tokens, "generating", "token", progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            formatted = [format_prompt(model, p, raw=raw) for p in chunk]
            inputs = encode_prompts(model, formatted)
            # lazy: transformers takes ~1 s to import; only model work needs it
            from transformers import LogitsProcessorList

            processors = [_TokenTicker(bar)] if progress else []
            if do_sample:
                processors.append(
                    _RowSampler(seeds[start : start + batch_size], temperature, top_p, model.device)
                )
            extra = {"logits_processor": LogitsProcessorList(processors)} if processors else {}
            with torch.no_grad(), bypass_unhooked_bridges(model):
                output = model.hf_model.generate(
                    **inputs, max_new_tokens=max_new_tokens, pad_token_id=pad_id, **greedy, **extra
                )
            prompt_len = inputs["input_ids"].shape[1]
            for prompt, shown, row in zip(chunk, formatted, output[:, prompt_len:].tolist()):
                new = _strip_after_eos(row, model.hf_model.generation_config.eos_token_id, pad_id)
                text = model.tokenizer.decode(new, skip_special_tokens=True)
                results.append(Generation(prompt, shown, text.strip(), tuple(new)))
            bar.update((start // batch_size + 1) * max_new_tokens - bar.n)  # steps a stop skipped
            if on_batch is not None:
                on_batch(len(chunk))
    return results


def row_seed(*parts: int) -> int:
    """A seed below 2**63 mixed from non-negative integers by numpy's SeedSequence: one random
    stream per (run, condition, prompt, sample), whatever the batching."""
    high, low = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(high) << 31) ^ int(low)


class _TokenTicker:
    """Logits processor that leaves the scores alone and moves a progress bar one step."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.bar.update(1)
        return scores


class _RowSampler:
    """Logits processor that turns greedy decoding into sampling with one generator per row.

    scores: Float[Tensor, "batch vocab"]. Each call draws one Gumbel vector per row from that
    row's own generator, so row i's k-th token depends only on its seed and its own tokens.
    """

    def __init__(
        self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device
    ):
        # lazy: transformers takes ~1 s to import; only model work needs it
        from transformers.generation.logits_process import TopPLogitsWarper

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=g, device=scores.device)
                for g in self.generators[: scores.shape[0]]
            ]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        return scores + gumbel


def _strip_after_eos(tokens: list[int], eos, pad_id) -> list[int]:
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[:i]
    return tokens
