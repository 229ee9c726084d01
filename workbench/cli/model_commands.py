"""What the model verbs do once their arguments are parsed (`model_verbs` declares them;
this module is imported only when one of them runs, so --help loads no torch)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core.checks import check_context
from ..core.datasets import read_texts
from ..core.errors import InputError
from ..model.activations import cache_activations, cache_tokens
from ..model.cache_plan import chunk_token_ids
from ..model.generation import format_prompt, generate
from ..model.hooks import hook_aliases, hook_table, resolve_hooks
from ..model.loading import default_device, default_dtype, fetch, list_models, load, parse_dtype
from ..model.memory import format_bytes, load_estimate, model_shape
from ..safety.scorers import fetch_detoxify
from .common import emit
from .running import executor_from, load_model


def cmd_models(args) -> int:
    rows = [
        {
            "name": s.name,
            "source": s.source,
            "hf_id": s.hf_id,
            "revision": s.revision,
            "pinned": s.source != "hub" or bool(s.revision),
            "prompt_format": s.prompt_format,
            "note": s.note,
        }
        for s in list_models()
    ]

    def pin(r: dict) -> str:
        if r["source"] != "hub":
            return "local build"
        return f"pinned {r['revision'][:12]}" if r["revision"] else "NOT pinned (main)"

    emit(
        args,
        {"models": rows},
        "\n".join(f"{r['name']:12s} {r['source']:6s} {pin(r):20s} {r['note']}" for r in rows),
    )
    return 0


def cmd_fetch(args) -> int:
    name = args.name or args.model
    if name == "detoxify" or name.startswith("detoxify:"):
        folder = fetch_detoxify(name.split(":", 1)[1] if ":" in name else "original")
        emit(
            args,
            {"model": name, "path": str(folder)},
            f"{name}: ready in {folder}; --scorers auto now uses it",
        )
        return 0
    folder = fetch(name)
    emit(args, {"model": name, "path": str(folder)}, f"{name}: ready in {folder}")
    return 0


def cmd_info(args) -> int:
    device = args.device or default_device()
    dtype = str(parse_dtype(args.dtype) or default_dtype(device)).replace("torch.", "")
    estimate = load_estimate(model_shape(args.model), dtype)
    if args.no_load:
        emit(
            args,
            {
                "model": args.model,
                "dtype": dtype,
                "load_estimate_bytes": estimate.bytes,
                "load_estimate": estimate.text(),
            },
            estimate.text(),
        )
        return 0
    print(estimate.text(), file=sys.stderr, flush=True)
    model = load_model(args)
    info = {
        **model.info.to_dict(),
        "weights": format_bytes(model.info.weight_bytes),
        "load_estimate": format_bytes(estimate.bytes),
    }
    width = max(len(k) for k in info)
    emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return 0


def cmd_hooks(args) -> int:
    # the names and shapes need no weights: the model is built on the meta device
    model = load(args.model, device="meta", dtype=args.dtype)
    names = set(resolve_hooks(model, args.pattern))
    table = hook_table(model)
    rows = [
        {"name": canonical, "aliases": aliases, "shape_for_5_tokens": list(table[canonical].shape)}
        for canonical, aliases in hook_aliases(model).items()
        if names & {canonical, *aliases}
    ]
    emit(
        args,
        {"model": model.info.name, "hooks": rows},
        "\n".join(
            f"{r['name']:40s} {str(tuple(r['shape_for_5_tokens'])):20s} "
            + (f"also: {', '.join(r['aliases'])}" if r["aliases"] else "")
            for r in rows
        ).rstrip()
        + "\n(one line per hook point: its TransformerLens name, the shape for one text of 5 tokens, "
        "and the other names of the same point)",
    )
    return 0


def cmd_generate(args) -> int:
    model = load_model(args)
    check_context(
        model,
        [format_prompt(model, args.prompt, raw=args.raw)],
        args.max_new_tokens,
        where="--prompt",
    )
    start = time.perf_counter()
    result = generate(
        model,
        [args.prompt],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        seed=args.seed,
        raw=args.raw,
        progress=not args.json,
    )[0]
    seconds = time.perf_counter() - start
    summary = {
        "model": model.info.name,
        "prompt": args.prompt,
        "formatted_prompt": result.formatted_prompt,
        "text": result.text,
        "new_tokens": len(result.new_tokens),
        "seconds": round(seconds, 3),
        "sampled": args.sample,
        "seed": args.seed,
    }
    emit(args, summary, result.text)
    return 0


def cmd_cache(args) -> int:
    # bad input fails before loading
    if args.windows is None and args.max_windows is not None:
        raise InputError("--max-windows needs --windows")
    if args.windows is not None and (args.truncate or args.max_length is not None):
        raise InputError("--windows cuts the texts itself: drop --truncate and --max-length")
    for name in ("windows", "max_windows"):
        value = getattr(args, name)
        if value is not None and value < (2 if name == "windows" else 1):
            raise InputError(
                f"--{name.replace('_', '-')} must be at least {2 if name == 'windows' else 1}, not {value}"
            )
    inputs = args.input if isinstance(args.input, list) else [args.input]
    records = [r for path in inputs for r in read_texts(path, field=args.field, column=args.column)]
    store_dtype = parse_dtype(args.store_dtype)
    executor = executor_from(args)
    model = load_model(args)
    start = time.perf_counter()
    common = dict(
        hooks=args.hooks,
        positions=args.positions,
        batch_size=args.batch_size,
        out=args.out,
        shard_size=args.shard_size,
        executor=executor,
        store_dtype=store_dtype,
        progress=not args.json,
    )
    if args.windows is not None:
        windows = chunk_token_ids(model, records, args.windows, args.prepend_bos, args.max_windows)
        result = cache_tokens(model, windows, **common)
    else:
        result = cache_activations(
            model,
            records,
            truncate=args.truncate,
            max_length=args.max_length,
            prepend_bos=args.prepend_bos,
            **common,
        )
    seconds = time.perf_counter() - start
    manifest = result.manifest
    size = sum((Path(args.out) / s["file"]).stat().st_size for s in manifest["shards"])
    summary = {
        "out": str(Path(args.out).resolve()),
        "model": model.info.name,
        "n_texts": manifest["n_texts"],
        "hooks": manifest["hooks"],
        "positions": manifest["positions"],
        "token_counts": manifest["token_counts"],
        "shards": len(manifest["shards"]),
        "bytes": size,
        "seconds": round(seconds, 2),
        "already_complete": result.already_complete,
    }
    truncated = manifest["token_counts"]["truncated_texts"]
    if result.already_complete:
        emit(
            args,
            summary,
            f"already complete: {args.out} holds this cache ({manifest['n_texts']} texts x "
            f"{len(manifest['hooks'])} hooks, {len(manifest['shards'])} shards, {format_bytes(size)}); "
            "nothing was recomputed. To recompute, delete the folder or choose another --out.",
        )
        return 0
    emit(
        args,
        summary,
        f"cached {manifest['n_texts']} texts x {len(manifest['hooks'])} hooks ({args.positions}) "
        f"to {args.out}: {len(manifest['shards'])} shards, {format_bytes(size)}, {seconds:.1f} s"
        + (f"; {truncated} texts truncated" if truncated else ""),
    )
    return 0
