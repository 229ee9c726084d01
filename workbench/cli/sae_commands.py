"""What the `sae` verbs do once their arguments are parsed (`sae_verbs` declares them; this module
is imported only when one of them runs, so --help loads no torch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..core.datasets import read_texts, read_toxigen
from ..core.errors import InputError
from ..core.storage import write_atomically
from ..interp.sae import load_sae
from ..interp.sae_eval import check_sae_fits, evaluate_sae
from ..interp.sae_features import feature_card, index_features
from ..interp.sae_formats import fetch_sae
from ..interp.sae_train import train_sae
from ..model.corpus_cache import open_cache
from ..safety.sae_toxicity import sparse_vs_dense, text_features, toxicity_features
from ..viz_features import feature_card_html
from .common import emit, say
from .running import load_model


def cmd_sae_train(args) -> int:
    settings = dict(
        hook_out=args.hook_out,
        architecture=args.architecture,
        skip=args.skip,
        batch_size=args.batch_tokens,
        lr=args.lr,
        seed=args.seed,
        exclude_first=not args.keep_first,
        checkpoint_every=args.checkpoint_every,
    )
    # train_sae checks every setting and the cache (positions, hooks) before anything is written
    cache = open_cache(args.cache)  # opened once: each shard's sha256 is checked on its first read
    start = time.perf_counter()
    sae = train_sae(
        cache,
        k=args.k,
        width=args.width,
        tokens=args.tokens,
        hook=args.hook,
        out=args.out,
        progress=not args.json,
        **settings,
    )
    if args.also_sparsify:
        sae.save(Path(args.out) / "sparsify", format="sparsify")
    training = sae.cfg.metadata.get("training", {})
    curve = training.get("curve", {})
    summary = {
        "out": str(Path(args.out).resolve()),
        "model": sae.cfg.model_name,
        "hook": sae.cfg.hook_name,
        "hook_out": sae.cfg.hook_name_out,
        "k": sae.cfg.k,
        "width": sae.cfg.d_sae,
        "tokens": training.get("tokens_seen"),
        "final_training_fvu": (curve.get("fvu") or [None])[-1],
        "final_dead_share": (curve.get("dead_share") or [None])[-1],
        "training_seconds": training.get("seconds"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    emit(
        args,
        summary,
        (
            f"trained {sae!r} on {summary['tokens']} tokens of {args.cache} in {summary['training_seconds']} s: "
            f"training FVU {summary['final_training_fvu']:.3f}, dead {summary['final_dead_share']:.1%} "
            f"(on training batches; `workbench sae eval` measures held-out text); saved to {args.out}"
        ),
    )
    return 0


def _texts(args) -> list:
    return [r for path in args.texts for r in read_texts(path)]


def _load(args):
    """The SAE, the texts and the model, checked in that order (the model loads last)."""
    sae = load_sae(args.sae, args.hookpoint)
    records = _texts(args) if hasattr(args, "texts") else None
    model = load_model(args)
    check_sae_fits(model, sae)
    return sae, records, model


def _windows(args) -> dict:
    """How `eval` and `features` cut and batch the texts (their shared options)."""
    return dict(
        context=args.context,
        max_windows=args.max_windows,
        batch_size=args.batch_size,
        progress=not args.json,
    )


def cmd_sae_eval(args) -> int:
    sae, records, model = _load(args)
    result = evaluate_sae(model, sae, records, **_windows(args))
    summary = {
        "model": model.info.name,
        "sae": str(args.sae),
        "texts": args.texts,
        **result.to_dict(),
    }
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_atomically(Path(args.out) / "eval.json", json.dumps(summary, indent=1, default=str))
    frame = result.to_frame()
    lines = [repr(result), ""]
    for row in frame.to_dict("records"):
        interval = (
            ""
            if row["low"] is None or row["low"] != row["low"]
            else f" [{row['low']:.4f}, {row['high']:.4f}]"
        )
        lines.append(f"  {row['metric']:<20} {row['value']:.4f}{interval}  ({row['method']})")
    emit(args, summary, "\n".join(lines))
    return 0


def cmd_sae_features(args) -> int:
    sae, records, model = _load(args)
    for latent in args.latents or []:
        if not 0 <= latent < sae.cfg.d_sae:
            raise InputError(
                f"--latents: {latent} is not a latent of this SAE (0 to {sae.cfg.d_sae - 1})"
            )
    index = index_features(model, sae, records, **_windows(args))
    if args.index_out:
        index.save(args.index_out)
    density = index.density()
    latents = args.latents
    if not latents:
        live = torch.nonzero(density > 0).flatten()
        pick = torch.randperm(len(live), generator=torch.Generator().manual_seed(args.seed))[:8]
        latents = sorted(live[pick].tolist())
    say(
        args,
        f"{int((density > 0).sum())} of {sae.cfg.d_sae} latents active on {index.n_tokens} tokens",
    )
    cards = [feature_card(model, sae, index, latent, top=args.top) for latent in latents]
    if args.html:
        page = "".join(feature_card_html(card) for card in cards)
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            args.html,
            f"<!doctype html><meta charset='utf-8'><title>SAE features</title><body>{page}</body>",
        )
    summary = {
        "model": model.info.name,
        "sae": str(args.sae),
        "n_tokens": index.n_tokens,
        "live_latents": int((density > 0).sum()),
        "cards": [
            {
                "latent": c.latent,
                "density": c.density,
                "promoted": c.promoted[:5],
                "top_contexts": ["".join(x["tokens"]) for x in c.contexts[:3]],
            }
            for c in cards
        ],
        "html": args.html,
    }
    human = "\n".join(
        f"latent {c.latent}: density {c.density:.3%}; promotes {', '.join(repr(t) for t, _ in c.promoted[:5])}; "
        f"top context {''.join(c.contexts[0]['tokens']) if c.contexts else '(never active)'!r}"
        for c in cards
    )
    emit(args, summary, human + (f"\ncards: {args.html}" if args.html else ""))
    return 0


def cmd_sae_toxigen(args) -> int:
    sae = load_sae(args.sae, args.hookpoint)
    if max(args.ks) > sae.cfg.d_sae:
        raise InputError(
            f"--ks: {max(args.ks)} is more latents than this SAE has ({sae.cfg.d_sae})"
        )
    rows = read_toxigen(args.toxigen)
    model = load_model(args)
    check_sae_fits(model, sae)
    features = text_features(model, sae, [r.text for r in rows], progress=not args.json)
    table = sparse_vs_dense(features, rows, ks=args.ks)
    found = toxicity_features(features, rows, top=args.top)
    summary = {
        "model": model.info.name,
        "sae": str(args.sae),
        "split": table.split,
        "probes": table.to_frame().to_dict("records"),
        "toxicity_features": found.to_frame().to_dict("records"),
    }
    human = (
        f"{table!r}\n{table.to_frame().to_string(index=False, float_format=lambda v: f'{v:.3f}')}\n\n"
        f"{found!r}\n{found.to_frame().to_string(index=False, float_format=lambda v: f'{v:.3f}')}"
    )
    emit(args, summary, human)
    return 0


def cmd_sae_fetch(args) -> int:
    path = fetch_sae(args.repo, args.hookpoint)
    emit(args, {"repo": args.repo, "path": str(path)}, f"{args.repo}: {path}")
    return 0
