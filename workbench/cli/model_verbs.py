"""The model verbs: models, fetch, info, hooks, generate, cache."""

from __future__ import annotations

from .common import add_prepend_bos, add_scale_args, add_verb


def register(verbs) -> None:
    """Add these verbs to the `workbench` parser's sub-parsers."""
    add_verb(
        verbs,
        "models",
        "List the models the registry knows.",
        "model_commands.cmd_models",
        model=False,
    )
    sub = add_verb(
        verbs,
        "fetch",
        "Download or convert a model's weights, or a Detoxify checkpoint (the only verb that "
        "downloads).",
        "model_commands.cmd_fetch",
    )
    sub.add_argument(
        "name",
        nargs="?",
        default=None,
        help="model to fetch (same as --model), or detoxify[:original|unbiased|multilingual]",
    )
    sub = add_verb(
        verbs,
        "info",
        "Describe a model: layers, widths, vocabulary, context, parameters, memory.",
        "model_commands.cmd_info",
    )
    sub.add_argument(
        "--no-load",
        action="store_true",
        help="only the memory estimate of loading it, from its config (nothing is allocated)",
    )
    sub = add_verb(
        verbs,
        "hooks",
        "List the hook names that fire in a forward pass.",
        "model_commands.cmd_hooks",
    )
    sub.add_argument("--pattern", default="all", help="only names matching this pattern")

    sub = add_verb(
        verbs,
        "generate",
        "Continue a prompt (in the model's prompt format unless --raw).",
        "model_commands.cmd_generate",
    )
    sub.add_argument("--prompt", required=True, help="the text to continue")
    sub.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most")
    sub.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sub.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (with --sample)"
    )
    sub.add_argument("--seed", type=int, default=0, help="sampling seed (with --sample)")
    sub.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the prompt format"
    )

    sub = add_verb(
        verbs,
        "cache",
        "Cache activations of a corpus to a folder of safetensors shards (resumable).",
        "model_commands.cmd_cache",
    )
    sub.add_argument(
        "--input",
        required=True,
        nargs="+",
        help=".txt (one text per line), .jsonl or .csv; several files are read in the order given",
    )
    sub.add_argument("--field", default="text", help="JSONL field holding the text (default text)")
    sub.add_argument("--column", default=None, help="CSV column holding the text (default text)")
    sub.add_argument(
        "--hooks", default="resid_post", help="hook names or patterns, comma-separated"
    )
    sub.add_argument(
        "--windows",
        type=int,
        default=None,
        metavar="N",
        help="join the texts into one token stream and cache windows of N tokens each (each "
        "starting with the start token where the model takes one), as SAE training wants; "
        "default: one row per text",
    )
    sub.add_argument(
        "--max-windows",
        type=int,
        default=None,
        help="keep the first this many windows (with --windows)",
    )
    sub.add_argument(
        "--store-dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="dtype written to disk (default: the model's; bfloat16 halves a float32 cache)",
    )
    sub.add_argument(
        "--positions",
        default="last",
        choices=["all", "last", "mean", "mean_after_first"],
        help="what is kept per text: every token, the last, the mean, or the mean without the first "
        "token (the one probe train uses)",
    )
    sub.add_argument(
        "--out", required=True, help="output folder or s3:// URL (rerun the same command to resume)"
    )
    sub.add_argument("--batch-size", type=int, default=8, help="texts per forward pass")
    sub.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="texts per shard file (default: about 256 MiB per shard)",
    )
    sub.add_argument("--truncate", action="store_true", help="cut texts longer than the context")
    add_prepend_bos(sub)
    sub.add_argument(
        "--max-length", type=int, default=None, help="token limit (default: the context)"
    )
    add_scale_args(sub)
