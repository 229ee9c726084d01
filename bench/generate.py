"""Generation speed through the hooked model, as a ratio to plain Hugging Face `generate`.

    python bench/generate.py [--model smollm2-135m] [--new-tokens 64] [--repeats 3]

Same run, interleaved, greedy, KV cache on, fp32, eager attention, one prompt in
the model's prompt format (--batch N: N prompts, left-padded). Cases: plain HF generate on an un-booted copy of the
model (baseline), workbench `generate` (HF generate on the booted model, with
un-hooked bridge components bypassed), the same with a steering-style hook on a
middle layer (that layer runs through the bridge), HF generate through every
bridge module, and (batch 1) TransformerLens' own `bridge.generate` with its KV cache. Also checks that all produce the same tokens.

--samples K > 1 times sampled generation instead, as a toxicity audit with K samples per prompt
runs it: plain HF `generate(num_return_sequences=K)` on the batch against `workbench.generate` of
the batch's prompts each repeated K times (prompt-major, one seed per row, the audit's call).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, print_table, save_json  # noqa: E402

import workbench as wb
from workbench.model.generation import encode_prompts, format_prompt
from workbench.model.run import bypass_unhooked_bridges

PROMPTS = [
    "Write a short story about a dragon who learns to bake bread.",
    "Explain why the sky is blue.",
    "Give me three tips for learning to cook.",
    "Describe a walk along the beach at sunset.",
]


def main() -> None:
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="prompts generated together")
    parser.add_argument("--samples", type=int, default=1, help="K > 1: time K samples per prompt")
    parser.add_argument("--out", default="results/bench/generate.json")
    args = parser.parse_args()

    model = wb.load(args.model, device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(
        model.info.path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    inputs = encode_prompts(model, [format_prompt(model, p) for p in prompts])
    n_prompt = inputs["input_ids"].shape[1]
    fixed = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    if args.samples > 1:
        return k_samples(args, model, plain, prompts, inputs, n_prompt)
    middle = f"blocks.{model.n_layers // 2}.hook_resid_post"

    def workbench_generate():
        with bypass_unhooked_bridges(model):
            return model.hf_model.generate(**inputs, **fixed)

    def with_hook():
        with wb.apply_hooks(model, [(middle, lambda act, hook: act + 0.0)]):
            return workbench_generate()

    cases = {
        "hf_generate": lambda: plain.generate(**inputs, **fixed),
        "workbench_generate": workbench_generate,
        "workbench_generate_with_hook": with_hook,
        "bridge_generate_every_module_wrapped": lambda: model.hf_model.generate(**inputs, **fixed),
    }
    if args.batch == 1:  # TL's generate takes unpadded prompts
        cases["tl_bridge_generate_kv_cache"] = lambda: model.bridge.generate(
            inputs["input_ids"],
            max_new_tokens=args.new_tokens,
            do_sample=False,
            use_past_kv_cache=True,
            verbose=False,
            stop_at_eos=False,
        )
    with torch.no_grad():
        outputs = {name: fn()[:, n_prompt:].tolist() for name, fn in cases.items()}
    same = {name: tokens == outputs["hf_generate"] for name, tokens in outputs.items()}
    medians = interleaved_medians(cases, repeats=args.repeats)
    speed = {name: args.batch * args.new_tokens / seconds for name, seconds in medians.items()}
    ratio = {name: speed[name] / speed["hf_generate"] for name in speed}
    print_table(
        f"{args.model}: {args.new_tokens} new tokens, greedy, KV cache, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}",
        [
            (
                name,
                f"{speed[name]:.1f} tok/s",
                f"{ratio[name]:.2f}x plain HF; same tokens as HF: {same[name]}",
            )
            for name in cases
        ],
    )
    save_json(
        args.out,
        {
            "model": args.model,
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "seconds": medians,
            "tokens_per_second": speed,
            "ratio_to_hf": ratio,
            "same_tokens_as_hf": same,
        },
    )


def k_samples(args, model, plain, prompts, inputs, n_prompt) -> None:
    """K sampled continuations per prompt: HF's num_return_sequences against the audit's call."""
    k, rows = args.samples, len(prompts) * args.samples
    repeated = [p for p in prompts for _ in range(k)]
    seeds = list(range(rows))
    ended = {}

    def hf_samples():
        return plain.generate(
            **inputs,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=True,
            top_k=0,
            num_return_sequences=k,
            pad_token_id=model.tokenizer.pad_token_id,
        )

    def workbench_samples():
        out = wb.generate(
            model,
            repeated,
            max_new_tokens=args.new_tokens,
            do_sample=True,
            seeds=seeds,
            batch_size=rows,
            progress=False,
        )
        ended["rows"] = sum(len(g.new_tokens) < args.new_tokens for g in out)
        return out

    cases = {
        "hf_generate_num_return_sequences": hf_samples,
        "workbench_k_samples": workbench_samples,
    }
    medians = interleaved_medians(cases, repeats=args.repeats)
    speed = {name: rows * args.new_tokens / seconds for name, seconds in medians.items()}
    ratio = {name: speed[name] / speed["hf_generate_num_return_sequences"] for name in speed}
    print_table(
        f"{args.model}: {len(prompts)} prompts x K = {k} samples of {args.new_tokens} tokens, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} (rows x tokens / s; "
        f"{ended.get('rows', 0)} workbench rows ended before {args.new_tokens} tokens)",
        [(name, f"{speed[name]:.1f} tok/s", f"{ratio[name]:.2f}x plain HF") for name in cases],
    )
    save_json(
        args.out,
        {
            "model": args.model,
            "prompts": len(prompts),
            "samples": k,
            "new_tokens": args.new_tokens,
            "seconds": medians,
            "tokens_per_second": speed,
            "ratio_to_hf": ratio,
        },
    )


if __name__ == "__main__":
    main()
