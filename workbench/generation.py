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
from typing import Sequence

import torch

from .hooks import bypass_unhooked_bridges


@dataclass(frozen=True)
class Generation:
    """One prompt and what the model wrote after it (special tokens stripped)."""

    prompt: str
    formatted_prompt: str
    text: str
    new_tokens: tuple[int, ...]


def format_prompt(model, prompt: str, raw: bool = False) -> str:
    """Apply the model's prompt format to `prompt` unless `raw`."""
    style = "raw" if raw else model.info.prompt_format
    if style == "chat" and getattr(model.tokenizer, "chat_template", None):
        return model.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    if style == "instruct":
        return f"Instruct: {prompt}\nOutput:"
    return prompt


def encode_prompts(model, formatted: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded input ids and attention mask for a batch of formatted prompts."""
    tokenizer = model.tokenizer
    tokenizer.padding_side = "left"
    try:
        # Chat templates already hold the special tokens they need.
        add_special = model.info.prompt_format != "chat"
        batch = tokenizer(list(formatted), return_tensors="pt", padding=True, add_special_tokens=add_special)
    finally:
        tokenizer.padding_side = "right"
    return {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


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
) -> list[Generation]:
    """Continue each prompt; greedy by default, sampled with `do_sample=True`.

    Sampling is seeded per batch from `seed` (the global torch RNG is restored
    afterwards), so the same call gives the same text.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    results: list[Generation] = []
    pad_id = model.tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        formatted = [format_prompt(model, p, raw=raw) for p in chunk]
        inputs = encode_prompts(model, formatted)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(seed + start)
            with torch.no_grad(), bypass_unhooked_bridges(model):
                output = model.hf_model.generate(**inputs, max_new_tokens=max_new_tokens,
                                                 pad_token_id=pad_id, **sampling)
        prompt_len = inputs["input_ids"].shape[1]
        for prompt, shown, row in zip(chunk, formatted, output[:, prompt_len:].tolist()):
            new = _strip_after_eos(row, model.hf_model.generation_config.eos_token_id, pad_id)
            text = model.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Generation(prompt, shown, text.strip(), tuple(new)))
    return results


def _strip_after_eos(tokens: list[int], eos, pad_id) -> list[int]:
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[:i]
    return tokens
