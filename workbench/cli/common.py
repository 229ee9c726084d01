"""What every verb's parser shares: the help formatter, the one-line usage errors, the model, scale
and steering options; and what every verb prints: progress lines on stderr and the human-or-JSON
output. Nothing here imports torch (`workbench --help` stays quick); `running` loads models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..core.errors import InputError
from ..model.registry import DEFAULT_MODEL

# workbench.interp.attribution.METHODS, spelled out so that --help imports no torch
# (tests/test_cli_help.py keeps the two equal)
ATTRIBUTION_METHODS = ("atp", "atp*", "eap-ig")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already says it (or the option
    is required); flags read "(default: off)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text + " (default: off)"
        if action.default is None or action.default == []:
            return text + " (default: none)"
        value = (
            " ".join(map(str, action.default))
            if isinstance(action.default, (list, tuple))
            else action.default
        )
        return text + f" (default: {value})".replace("%", "%%")


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (InputError, exit 2), like every other bad input,
    and a default beside every option in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        # no prefix matching: --js would be taken for --json, and a later option starting the
        # same way would silently change what an old command line means
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise InputError(message.replace("\n", " "))


def add_model_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registry name, local folder or HF id (default {DEFAULT_MODEL})",
    )
    sub.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)"
    )
    sub.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default by device)")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_steer_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--steer", default=None, help="contrast pairs JSONL for a steering vector")
    sub.add_argument("--layer", type=int, default=None, help="layer of the steering vector")
    sub.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=[],
        help="steering coefficients (one condition each)",
    )
    sub.add_argument(
        "--ablate", action="store_true", help="add a condition with the vector's direction ablated"
    )


OUT_HELP = (
    "audit folder or s3:// URL: shards, run.json, summary.json, report.html (rerun to resume)"
)


def add_scale_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the shards on Ray workers, one model replica each: 'local' (a Ray instance on this "
        "machine for this run), 'auto' (the cluster of `ray start`) or a cluster address; "
        "--out may be a folder every node sees or an s3:// URL (README: Beyond one machine)",
    )
    sub.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray workers (default: one per GPU, else 2); needs --ray",
    )
    sub.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="torch threads of each CPU worker (default: this process's thread count, which keeps "
        "results bit-identical to a run without --ray; fewer is faster when workers share "
        "cores, and may change float32's last bits); needs --ray",
    )


def add_audit_args(
    sub: argparse.ArgumentParser,
    bootstrap_help: str = "bootstrap resamples for the intervals (summary only)",
) -> None:
    """What every audit takes: --out (resumable), --bootstrap, the steering conditions and the Ray options."""
    sub.add_argument("--out", required=True, help=OUT_HELP)
    sub.add_argument("--bootstrap", type=int, default=2000, help=bootstrap_help)
    add_steer_args(sub)
    add_scale_args(sub)


def progress(args, items, desc: str, unit: str):
    """A progress bar on stderr over `items` (for verbs whose steps take seconds each); none
    under --json."""
    return tqdm(
        list(items),
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=bool(getattr(args, "json", False)),
    )


def say(args, message: str) -> None:
    """One line on stderr about a long step, so a slow verb is never silent."""
    print(f"workbench {args.command}: {message}", file=sys.stderr, flush=True)


def emit(args, summary: dict, human: str) -> None:
    text = json.dumps(summary, indent=2, default=str) if args.json else human
    # name the URL, not the staging copy that is about to be deleted
    if getattr(args, "staged", None):
        local, url = args.staged
        text = text.replace(str(Path(local).resolve()), url).replace(local, url)
    print(text)


def add_prepend_bos(sub: argparse.ArgumentParser) -> None:
    """--prepend-bos / --no-prepend-bos: TransformerLens' tokenisation switch (default: what its
    bridge does for the model, as `model.to_tokens`)."""
    sub.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start every prompt with the model's start token (default: what TransformerLens' "
        "bridge does for the model: yes for SmolLM2, no for Phi-2)",
    )


def add_verb(
    verbs, name: str, help_text: str, func, model: bool = True, description: str | None = None
) -> argparse.ArgumentParser:
    """A verb's parser, with --model/--device/--dtype/--json (or only --json when model=False);
    `description` (default: the help text) heads its --help."""
    sub = verbs.add_parser(name, help=help_text, description=description or help_text)
    sub.set_defaults(func=func)
    if model:
        add_model_args(sub)
    else:
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return sub
