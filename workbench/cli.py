"""The `workbench` command: one verb per capability.

Every verb prints a human summary (or, with --json, one JSON object on stdout);
progress bars go to stderr. Exit codes: 0 done, 1 model unavailable or other
failure, 2 bad input (one line naming the file, line and problem).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import InputError, WorkbenchError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except InputError as error:
        print(f"workbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except WorkbenchError as error:
        print(f"workbench {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="command", metavar="VERB")

    def verb(name: str, help_text: str, func, model: bool = True) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        if model:
            sub.add_argument("--model", default=DEFAULT_MODEL,
                             help=f"registry name, local folder or HF id (default {DEFAULT_MODEL})")
            sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
            sub.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default by device)")
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return sub

    verb("models", "List the models the registry knows.", cmd_models, model=False)
    verb("fetch", "Download or convert a model's weights (the only verb that downloads).", cmd_fetch)
    verb("info", "Describe a model: layers, widths, vocabulary, context, parameters.", cmd_info)
    sub = verb("hooks", "List the hook names that fire in a forward pass.", cmd_hooks)
    sub.add_argument("--pattern", default="all", help="only names matching this pattern")

    sub = verb("generate", "Continue a prompt (in the model's prompt format unless --raw).", cmd_generate)
    sub.add_argument("--prompt", required=True)
    sub.add_argument("--max-new-tokens", type=int, default=64)
    sub.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sub.add_argument("--temperature", type=float, default=1.0)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--raw", action="store_true", help="send the prompt as is, without the prompt format")

    sub = verb("cache", "Cache activations of a corpus to a folder of safetensors shards (resumable).",
               cmd_cache)
    sub.add_argument("--input", required=True, help=".txt (one text per line), .jsonl or .csv")
    sub.add_argument("--field", default="text", help="JSONL field holding the text (default text)")
    sub.add_argument("--column", default=None, help="CSV column holding the text (default text)")
    sub.add_argument("--hooks", default="resid_post", help="hook names or patterns, comma-separated")
    sub.add_argument("--positions", default="last", choices=["all", "last", "mean"])
    sub.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    sub.add_argument("--batch-size", type=int, default=8)
    sub.add_argument("--shard-size", type=int, default=None,
                     help="texts per shard file (default: about 256 MiB per shard)")
    sub.add_argument("--truncate", action="store_true", help="cut texts longer than the context")
    sub.add_argument("--max-length", type=int, default=None, help="token limit (default: the context)")

    sub = verb("demo", "The main job on one model (default: the embedded smollm2-135m).", cmd_demo)
    sub.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    return parser


def _load(args):
    from .models import load

    return load(args.model, device=args.device, dtype=args.dtype)


def _emit(args, summary: dict, human: str) -> None:
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(human)


def cmd_models(args) -> int:
    from .models import list_models

    rows = [{"name": s.name, "source": s.source, "hf_id": s.hf_id, "revision": s.revision,
             "prompt_format": s.prompt_format, "note": s.note} for s in list_models()]
    _emit(args, {"models": rows}, "\n".join(f"{r['name']:14s} {r['source']:6s} {r['note']}" for r in rows))
    return 0


def cmd_fetch(args) -> int:
    from .models import fetch

    folder = fetch(args.model)
    _emit(args, {"model": args.model, "path": str(folder)}, f"{args.model}: ready in {folder}")
    return 0


def cmd_info(args) -> int:
    model = _load(args)
    info = model.info.to_dict()
    width = max(len(k) for k in info)
    _emit(args, info, "\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return 0


def cmd_hooks(args) -> int:
    from .hooks import hook_table, resolve_hooks

    model = _load(args)
    names = resolve_hooks(model, args.pattern)
    table = hook_table(model)
    rows = [{"name": n, "shape_for_5_tokens": list(table[n].shape)} for n in names]
    _emit(args, {"model": model.info.name, "hooks": rows},
          "\n".join(f"{r['name']:45s} {tuple(r['shape_for_5_tokens'])}" for r in rows))
    return 0


def cmd_generate(args) -> int:
    from .generation import generate

    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    model = _load(args)
    start = time.perf_counter()
    result = generate(model, [args.prompt], max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                      temperature=args.temperature, seed=args.seed, raw=args.raw)[0]
    seconds = time.perf_counter() - start
    summary = {"model": model.info.name, "prompt": args.prompt, "formatted_prompt": result.formatted_prompt,
               "text": result.text, "new_tokens": len(result.new_tokens), "seconds": round(seconds, 3),
               "sampled": args.sample, "seed": args.seed}
    _emit(args, summary, result.text)
    return 0


def cmd_cache(args) -> int:
    from .cache import cache_activations, format_bytes
    from .datasets import read_texts

    records = read_texts(args.input, field=args.field, column=args.column)  # bad input fails before loading
    model = _load(args)
    start = time.perf_counter()
    result = cache_activations(model, records, hooks=args.hooks, positions=args.positions,
                               batch_size=args.batch_size, out=args.out, shard_size=args.shard_size,
                               truncate=args.truncate, max_length=args.max_length)
    seconds = time.perf_counter() - start
    manifest = result.manifest
    size = sum((Path(args.out) / s["file"]).stat().st_size for s in manifest["shards"])
    summary = {"out": str(Path(args.out).resolve()), "model": model.info.name, "n_texts": manifest["n_texts"],
               "hooks": manifest["hooks"], "positions": manifest["positions"],
               "token_counts": manifest["token_counts"], "shards": len(manifest["shards"]),
               "bytes": size, "seconds": round(seconds, 2)}
    truncated = manifest["token_counts"]["truncated_texts"]
    _emit(args, summary,
          f"cached {manifest['n_texts']} texts x {len(manifest['hooks'])} hooks ({args.positions}) "
          f"to {args.out}: {len(manifest['shards'])} shards, {format_bytes(size)}, {seconds:.1f} s"
          + (f"; {truncated} texts truncated" if truncated else ""))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_tour

    summary = run_tour(args.model, args.out, device=args.device)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
