"""A real SAE on the default model, end to end: cache the general corpus, train, evaluate, read,
probe; and training speed against eai-sparsify's own trainer.

    python bench/sae.py                       # SmolLM2-135M, layer 10, TopK k=32, width 4608, 5M tokens
    python bench/sae.py --model tiny-phi --layer 1 --windows 400 --tokens 50000 --width 256 --k 8   # smoke

Steps (each resumable: rerun the same command after an interruption):
1. cache `blocks.L.hook_resid_post` of the training corpus (WikiText-2 train + State of the Union +
   Wikipedia vital-article summaries, ../shared/data/corpus/) as windows of 128 tokens, bfloat16 on
   disk (`workbench cache --windows 128 --positions all --store-dtype bfloat16`);
2. train the SAE from that cache (`workbench sae train`), tokens/s and the FVU curve;
3. evaluate on WikiText-2 *test* (never trained on): explained variance, CE-loss recovered, KL, L0,
   dead and dense latents (`workbench sae eval`);
4. feature cards: index WikiText-2 test, then the toxicity features of ToxiGen (chosen on its train
   split, measured on its test split) and the sparse-vs-dense probe table;
5. speed: our trainer from the cache against sparsify's `Trainer` (which runs the model for every
   batch) on the same model, layer, width, k and batch, both for --compare-tokens tokens, in this
   run; peak RSS of training runs of 1x and 4x as many tokens (flat: the cache is streamed).
Results go to results/bench/sae/ (results.json, cards.html, curve.html).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_json  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.core.datasets import read_texts, read_toxigen  # noqa: E402
from workbench.interp.sae_eval import evaluate_sae  # noqa: E402
from workbench.interp.sae_features import feature_card, index_features  # noqa: E402
from workbench.safety.sae_toxicity import sparse_vs_dense, text_features, toxicity_features  # noqa: E402
from workbench.viz import save_html  # noqa: E402
from workbench.viz_features import feature_card_html, training_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
TRAIN_FILES = ["wikitext-2-raw/train.txt", "sotu/sotu.txt", "wiki-vital/summaries.txt"]
PUBLIC = (100e6, 1 - 0.949, "public SmolLM2 suite: EV 0.949 at ~100M tokens (k=50, 18,432 latents)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--tokens", type=int, default=5_000_000, help="training tokens")
    parser.add_argument("--batch-size", type=int, default=1024, help="tokens per training step")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--windows", type=int, default=40_000, help="128-token windows cached")
    parser.add_argument("--eval-windows", type=int, default=200)
    parser.add_argument("--cache", default=None, help="cache folder (default under --out)")
    parser.add_argument("--out", default="results/bench/sae")
    parser.add_argument("--toxigen", default=str(ROOT.parent / "shared" / "data" / "toxigen"))
    parser.add_argument(
        "--compare-tokens", type=int, default=32_768, help="tokens per speed run (0: skip)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    hook = f"blocks.{args.layer}.hook_resid_post"
    model = wb.load(args.model)
    results: dict = {"model": args.model, "hook": hook, "k": args.k, "width": args.width}

    # 1. the cache
    records = [r for name in TRAIN_FILES for r in read_texts(CORPUS / name)]
    windows = wb.chunk_token_ids(model, records, 128, max_chunks=args.windows)
    cache_dir = Path(args.cache or out / f"cache-L{args.layer}")
    start = time.perf_counter()
    cache = wb.cache_tokens(
        model,
        windows,
        hooks=hook,
        positions="all",
        batch_size=16,
        out=cache_dir,
        store_dtype=torch.bfloat16,
    )
    results["cache"] = {
        "folder": str(cache_dir),
        "windows": len(windows),
        "tokens": len(windows) * 128,
        "seconds_this_run": round(time.perf_counter() - start, 1),
        "already_complete": cache.already_complete,
        "bytes": sum(p.stat().st_size for p in (cache_dir / "shards").iterdir()),
    }
    print(f"cache: {results['cache']}", flush=True)

    # 2. training
    name = f"L{args.layer}-k{args.k}-w{args.width}-t{args.tokens}"
    sae = wb.train_sae(
        cache,
        k=args.k,
        width=args.width,
        tokens=args.tokens,
        hook=hook,
        batch_size=args.batch_size,
        lr=args.lr,
        out=out / name,
    )
    training = sae.cfg.metadata["training"]
    results["training"] = {k: training[k] for k in ("seconds", "tokens_seen", "scale_in")}
    results["training"]["tokens_per_second"] = training["tokens_seen"] / max(
        training["seconds"], 1e-9
    )
    results["training"]["final_fvu"] = training["curve"]["fvu"][-1]
    save_html(training_curve({name: training["curve"]}, PUBLIC), out / "curve.html")
    print(f"training: {results['training']}", flush=True)

    # 3. evaluation on held-out text
    test_texts = read_texts(CORPUS / "wikitext-2-raw" / "test.txt")
    start = time.perf_counter()
    evaluation = evaluate_sae(model, sae, test_texts, context=128, max_windows=args.eval_windows)
    results["evaluation"] = {
        **evaluation.to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(repr(evaluation), flush=True)
    print(evaluation.to_frame().to_string(index=False), flush=True)

    # 4. features: cards of the toxicity features, sparse vs dense probes
    index = index_features(model, sae, test_texts, context=64, max_windows=800)
    index.save(out / name)
    rows = read_toxigen(args.toxigen)
    features = text_features(model, sae, [r.text for r in rows])
    table = sparse_vs_dense(features, rows)
    found = toxicity_features(features, rows)
    print(
        repr(table),
        table.to_frame().to_string(index=False),
        repr(found),
        found.to_frame().to_string(index=False),
        sep="\n",
        flush=True,
    )
    cards = []
    for row in found.rows[:3]:
        card = feature_card(model, sae, index, row["latent"], top=10)
        hateful = sorted(
            range(len(rows)), key=lambda i: -float(features.latents[i, row["latent"]])
        )[:5]
        cards.append(
            {
                "latent": card.latent,
                "density": card.density,
                "promoted": card.promoted[:8],
                "suppressed": card.suppressed[:5],
                "top_contexts": ["".join(c["tokens"]) for c in card.contexts[:5]],
                "top_toxigen_texts": [rows[i].text for i in hateful],
                "html": feature_card_html(card),
            }
        )
    (out / "cards.html").write_text(
        "<!doctype html><meta charset='utf-8'><body>"
        + "".join(c.pop("html") for c in cards)
        + "</body>"
    )
    results["probes"] = {"split": table.split, "rows": table.to_frame().to_dict("records")}
    results["toxicity_features"] = found.to_frame().to_dict("records")
    results["cards"] = cards
    print(json.dumps(cards, indent=1), flush=True)

    # 5. speed against sparsify, and memory flat in tokens
    if args.compare_tokens:
        results["speed"] = compare_speed(model, cache, hook, windows, args)
        print(f"speed: {results['speed']}", flush=True)
    save_json(out / "results.json", results)


def compare_speed(model, cache, hook: str, windows, args) -> dict:
    """Tokens/s of our trainer (from the cache) and of sparsify's Trainer (model forward every
    batch), same model, hook, width, k and tokens per step; and our peak RSS at 1x and 4x tokens."""
    n = args.compare_tokens
    start = time.perf_counter()
    wb.train_sae(
        cache,
        k=args.k,
        width=args.width,
        tokens=n,
        hook=hook,
        batch_size=args.batch_size,
        progress=False,
    )
    ours = n / (time.perf_counter() - start)
    speed = {"tokens": n, "ours_tokens_per_second": round(ours, 1)}
    try:
        speed["sparsify_tokens_per_second"] = round(_sparsify_speed(model, windows, args), 1)
        speed["ratio"] = round(ours / speed["sparsify_tokens_per_second"], 2)
    except Exception as error:  # report why, keep the rest of the bench
        speed["sparsify_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    speed["peak_rss_mib"] = {}
    for factor in (1, 4):
        child = (
            "import resource, workbench as wb\n"
            f"wb.train_sae({str(cache.folder)!r}, k={args.k}, width={args.width}, tokens={factor * n}, "
            f"hook={hook!r}, batch_size={args.batch_size}, progress=False)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        rss = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        )
        speed["peak_rss_mib"][f"{factor * n} tokens"] = round(int(rss.stdout.split()[-1]) / 1024, 1)
    return speed


def _sparsify_speed(model, windows, args) -> float:
    """sparsify 1.3.3's Trainer on CPU: batch_size sequences of 128 tokens, one hookpoint."""
    from datasets import Dataset
    from sparsify import SparseCoderConfig, TrainConfig, Trainer

    sequences = max(1, args.batch_size // 128)
    steps = max(2, args.compare_tokens // (sequences * 128))
    data = Dataset.from_dict({"input_ids": windows[: steps * sequences]}).with_format("torch")
    with tempfile.TemporaryDirectory() as save_dir:
        cfg = TrainConfig(
            SparseCoderConfig(num_latents=args.width, k=args.k),
            batch_size=sequences,
            hookpoints=[f"layers.{args.layer}"],
            optimizer="adam",
            save_every=10**9,
            log_to_wandb=False,
            save_dir=save_dir,
            run_name="bench",
        )
        trainer = Trainer(cfg, data, model.hf_model)
        start = time.perf_counter()
        trainer.fit()
        return steps * sequences * 128 / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
