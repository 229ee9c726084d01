"""Activation-caching cost on the default model, as ratios to a plain Hugging Face forward.

    python bench/cache.py [--model smollm2-135m] [--repeats 5]

Everything is measured in the same run, interleaved (median of --repeats rounds),
on a batch of 8 x 128 random tokens, fp32, eager attention:

- plain HF forward (the baseline, ratio 1.00; a fresh un-hooked HF model) and the
  HF base model without the unembedding (for reference);
- (a) the bridge's forward; (b) workbench caching filtered to hook_resid_post
  (every position; also the last position only); (c) workbench caching of every
  hook; (d) the same filtered cache streamed to disk, also as a ratio to (b);
- peers for the same hooks: TransformerLens' bridge `run_with_cache` (filtered and
  every hook) and nnsight (if installed: `pip install -e .[bench]`) saving the layer outputs.

Then peak RSS while streaming a corpus to disk at 1x and 10x size (fresh processes,
64 and 640 texts of 128 tokens by default).
Workbench caching stops the forward pass after the last requested hook, so it
skips the unembedding when only the residual stream is wanted; that is part of
what is measured, and the base-model line shows how much of it that is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, peak_rss, print_table, save_json  # noqa: E402

import workbench as wb
from workbench.model.hooks import hook_table  # noqa: E402


def random_tokens(model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(100, model.info.d_vocab - 100, (batch, length), generator=generator)


def nnsight_case(hf_model, tokenizer, ids):
    try:
        from nnsight import LanguageModel
    except ImportError:
        return None
    wrapped = LanguageModel(hf_model, tokenizer=tokenizer)
    n_layers = hf_model.config.num_hidden_layers

    def run():
        saved = []
        with wrapped.trace(ids):
            for i in range(n_layers):
                saved.append(wrapped.model.layers[i].output.save())
        assert len(saved) == n_layers
        return saved

    return run


def speed(model_name: str, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = wb.load(model_name, device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(
        model.info.path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    peer = AutoModelForCausalLM.from_pretrained(
        model.info.path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = random_tokens(model, 8, 128)
    rows = ids.tolist()
    resid_filter = lambda name: name.endswith("hook_resid_post")  # noqa: E731
    stream_root = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    counter = iter(range(10**6))

    def streamed():
        folder = stream_root / str(next(counter))
        result = wb.cache_tokens(
            model, rows, "resid_post", "all", batch_size=8, out=folder, progress=False
        )
        shutil.rmtree(folder)
        return result

    cases = {
        "hf_forward": lambda: plain(ids),
        "hf_base_model_forward": lambda: plain.model(ids),
        "bridge_forward": lambda: model.bridge(ids, return_type="logits"),
        "workbench_resid_post_all_positions": lambda: wb.cache_tokens(
            model, rows, "resid_post", "all", batch_size=8, progress=False
        ),
        "workbench_resid_post_last_position": lambda: wb.cache_tokens(
            model, rows, "resid_post", "last", batch_size=8, progress=False
        ),
        "workbench_every_hook": lambda: wb.cache_tokens(
            model, rows, "all", "all", batch_size=8, progress=False
        ),
        "workbench_streamed_resid_post": streamed,
        "tl_run_with_cache_resid_post": lambda: model.bridge.run_with_cache(
            ids, names_filter=resid_filter
        ),
        "tl_run_with_cache_every_hook": lambda: model.bridge.run_with_cache(ids),
    }
    nnsight_run = nnsight_case(peer, model.tokenizer, ids)
    if nnsight_run is not None:
        cases["nnsight_layer_outputs"] = nnsight_run
    medians = interleaved_medians(cases, repeats=repeats)
    shutil.rmtree(stream_root, ignore_errors=True)
    base = medians["hf_forward"]
    ratios = {name: value / base for name, value in medians.items()}
    ratios["streamed_vs_in_memory"] = (
        medians["workbench_streamed_resid_post"] / medians["workbench_resid_post_all_positions"]
    )
    print_table(
        f"{model_name}, batch 8 x 128, fp32, {torch.get_num_threads()} threads, median of {repeats}",
        [
            (name, f"{medians[name] * 1000:.0f} ms", f"{ratios[name]:.2f}x plain HF forward")
            for name in medians
        ]
        + [("streamed / in-memory (resid_post)", "", f"{ratios['streamed_vs_in_memory']:.2f}x")],
    )
    return {"seconds": medians, "ratios": ratios, "threads": torch.get_num_threads()}


def rss_child(model_name: str, n_texts: int, out: str) -> None:
    """Runs in a fresh process: stream a corpus to disk; print RSS after loading and its peak while caching.

    RSS is sampled every 5 ms by a thread (ru_maxrss would carry the parent's peak across fork+exec).
    """
    model = wb.load(model_name, device="cpu", dtype="float32")
    hook_table(model)
    rows = random_tokens(model, n_texts, 128, seed=1).tolist()
    with peak_rss() as rss:
        wb.cache_tokens(model, rows, "resid_post", "all", batch_size=8, out=out, progress=False)
    print(f"RSS {rss['start'] / 2**20:.1f} {rss['peak'] / 2**20:.1f}")


def rss(model_name: str, n_small: int) -> dict:
    results = {}
    for label, n in (("1x", n_small), ("10x", 10 * n_small)):
        with tempfile.TemporaryDirectory() as folder:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rss-child",
                    str(n),
                    "--model",
                    model_name,
                    "--out",
                    folder,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            loaded, peak = map(float, done.stdout.strip().splitlines()[-1].split()[1:])
        results[label] = {"texts": n, "rss_before_caching_mib": loaded, "peak_rss_mib": peak}
    results["ratio_10x_to_1x"] = results["10x"]["peak_rss_mib"] / results["1x"]["peak_rss_mib"]
    print_table(
        "peak RSS while streaming a cache to disk (resid_post, all positions, 128 tokens per text)",
        [
            (
                f"{label}: {results[label]['texts']} texts",
                f"{results[label]['peak_rss_mib']:.0f} MiB",
                f"(before caching: {results[label]['rss_before_caching_mib']:.0f} MiB)",
            )
            for label in ("1x", "10x")
        ]
        + [("10x / 1x", "", f"{results['ratio_10x_to_1x']:.2f}x")],
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--rss-texts", type=int, default=64, help="corpus size at 1x (10x is ten times it)"
    )
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="results/bench/cache.json")
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.model, args.rss_child, args.out)
        return
    results = {
        "model": args.model,
        "speed": speed(args.model, args.repeats),
        "rss": rss(args.model, args.rss_texts),
    }
    save_json(args.out, results)


if __name__ == "__main__":
    main()
