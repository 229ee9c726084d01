"""`workbench demo`: a short tour of the foundation on one model.

Prints the model card, answers two questions through the model's prompt format,
caches the residual stream of a small corpus to disk (resumable shards) and
reads one layer back. Writes ``summary.json`` in the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.datasets import TextRecord
from ..core.paths import package_data
from ..model.activations import cache_activations
from ..model.generation import generate
from ..model.loading import load

QUESTIONS = ["What is the capital of France?", "Name three primary colours."]


def tour_texts() -> list[TextRecord]:
    source = package_data("tour_texts.txt")
    lines = source.read_text(encoding="utf-8").splitlines()
    return [
        TextRecord(t, "workbench/data/tour_texts.txt", n)
        for n, t in enumerate(lines, 1)
        if t.strip()
    ]


def run_tour(model_name: str, out: str | Path, device: str | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = load(model_name, device=device)
    print(f"loaded {model!r} in {time.perf_counter() - start:.1f} s")
    answers = generate(model, QUESTIONS, max_new_tokens=40, progress=False)
    for answer in answers:
        print(f"Q: {answer.prompt}\nA: {answer.text}")
    texts = tour_texts()
    begin = time.perf_counter()
    cache = cache_activations(
        model, texts, hooks="resid_post", positions="last", out=out / "cache", batch_size=8
    )
    seconds = time.perf_counter() - begin
    middle = f"blocks.{model.n_layers // 2}.hook_resid_post"
    acts = cache[middle]
    print(
        f"cached {len(texts)} texts x {len(cache.hooks)} hooks in {seconds:.1f} s -> {out / 'cache'}; "
        f"{middle}: {tuple(acts.shape)}, mean norm {acts.norm(dim=-1).mean():.2f}"
    )
    summary = {
        "model": model.info.to_dict(),
        "answers": [{"prompt": a.prompt, "text": a.text} for a in answers],
        "cache": {
            "folder": str(out / "cache"),
            "n_texts": len(texts),
            "hooks": len(cache.hooks),
            "seconds": round(seconds, 2),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return summary
