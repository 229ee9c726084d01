"""Every command-line argument checked in one place, before any model work or any write.

`check_args(args, model_names)` runs right after parsing, for every verb: numbers have ranges
and must be finite, choices are checked, strings must be non-empty and
encodable, lists must not repeat themselves, devices and dtypes are resolved,
output paths must be creatable folders (or files, for --html) on a writable
filesystem. A failure raises `InputError` with one line naming the argument;
the CLI turns it into exit code 2. File contents are checked by the readers in
`workbench.core.datasets` (shared by every format), and checks that need the model
(a layer index, a prompt against the context) by `check_context` and
`workbench.model.tokens.check_layer` right after loading, still before any work.

`args` is anything with the options as attributes: the CLI's parsed arguments, or a typed
options object such as `workbench.audit.ToxicityAuditOptions` (its `command` says which
verb's rules apply to `out`). `model_names` are the registry's names
(`workbench.model.REGISTRY`): this layer knows no models, so the caller says which exist.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Collection

from .datasets import TextRecord, read_input_bytes
from .errors import InputError
from .remote import check_url, is_url, local_path

MAX_SEED = 2**31 - 1
MAX_NEW_TOKENS = 4096  # also capped by the model's context (check_context)
HF_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")  # a Hugging Face id, owner/name
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")

# attribute -> (kind, low, high): "int" and "float" ranges are inclusive; "fraction" is open (0, 1).
NUMBERS = {
    "max_new_tokens": ("int", 1, MAX_NEW_TOKENS),
    "batch_size": ("int", 1, 4096),
    "shard_size": ("int", 1, 10**7),
    "bootstrap": ("int", 100, 10**6),
    "samples": ("int", 1, 1000),
    "seed": ("int", 0, MAX_SEED),
    "top": ("int", 1, 10**6),
    "layer": ("int", 0, 10**4),
    "head": ("int", 0, 10**4),
    "max_length": ("int", 1, 10**7),
    "prompts_per_group": ("int", 1, 10**5),
    "port": ("int", 1, 65535),
    "steps": ("int", 1, 1000),
    "verify": ("int", 0, 10**6),
    "threads_per_worker": ("int", 1, 4096),
    "temperature": ("float", 1e-3, 100.0),
    "test_fraction": ("fraction", 0.0, 1.0),
    "val_fraction": ("fraction", 0.0, 1.0),
    "validation_share": ("fraction", 0.0, 1.0),
    "threshold": ("float", 0.0, 1.0),
    "budget_qa": ("float", 0.0, 100.0),
    "budget_perplexity": ("float", 0.0, 10**6),
    "max_prompts": ("int", 2, 10**7),
    # sparse autoencoders (workbench sae ...; workbench cache --windows)
    "k": ("int", 1, 10**6),
    "width": ("int", 1, 10**8),
    "tokens": ("int", 1, 10**13),
    "batch_tokens": ("int", 1, 10**7),
    "checkpoint_every": ("int", 1, 10**13),
    "lr": ("float", 1e-12, 10.0),
    "context": ("int", 2, 10**6),
    "windows": ("int", 2, 10**6),
    "max_windows": ("int", 1, 10**9),
    "sae_latent": ("int", 0, 10**9),
}
LISTS = {  # attribute -> (kind, low, high) for each element
    "alpha": ("float", -1e4, 1e4),
    "alphas": ("float", -1e4, 1e4),
    "l2": ("float", 0.0, 1e6),
    "sparse_k": ("int", 1, 10**6),
    "coefficients": ("float", -100.0, 100.0),
    "layers": ("int", 0, 10**4),
    "ks": ("int", 1, 10**6),
    "latents": ("int", 0, 10**9),
}
# single strings that must be non-empty
TEXTS = ("prompt", "text", "clean", "corrupt", "instruct", "pattern", "instruction")
TEXT_LISTS = ("answers", "groups", "continuations", "positive_words", "negative_words")
COMMA_LISTS = ("kinds", "hooks")  # comma-separated names: none empty, none repeated
FILE_LISTS = ("heldout", "prompts")  # several files: none given twice (its texts would count twice)


def check_args(args, model_names: Collection[str]) -> None:
    """Check every argument `args` carries (see the module docstring); InputError on the first
    problem. model_names: the registry's model names, which --model may give."""
    for name, (kind, low, high) in NUMBERS.items():
        value = getattr(args, name, None)
        # a flag of the same name elsewhere (probe apply --tokens) is a switch, not a number
        if value is not None and not isinstance(value, bool):
            _check_number(name, value, kind, low, high)
    for name, (kind, low, high) in LISTS.items():
        values = getattr(args, name, None)
        if values:
            for value in values:
                _check_number(name, value, kind, low, high)
            if len({float(v) for v in values}) != len(values):
                raise InputError(
                    f"--{_flag(name)} repeats a value ({' '.join(f'{v:g}' for v in values)}): "
                    "each would be the same condition"
                )
    if (
        getattr(args, "test_fraction", None) is not None
        and getattr(args, "val_fraction", None) is not None
    ):
        if args.test_fraction + args.val_fraction >= 1:
            raise InputError(
                f"--test-fraction {args.test_fraction} and --val-fraction {args.val_fraction} leave "
                "no training rows; their sum must be below 1"
            )
    for name in TEXTS:
        value = getattr(args, name, None)
        if value is not None:
            _check_text(name, value)
    for name in TEXT_LISTS:
        values = getattr(args, name, None)
        if values is not None:
            for value in values:
                _check_text(name, value)
            if len(set(values)) != len(values):
                raise InputError(f"--{_flag(name)} repeats an entry")
    for name in COMMA_LISTS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            names = [n.strip() for n in value.split(",")]
            if not all(names):
                raise InputError(
                    f"--{_flag(name)} {value!r}: a name is empty; give comma-separated names"
                )
            if len(set(names)) != len(names):
                raise InputError(f"--{_flag(name)} {value!r}: a name is repeated")
    for name in FILE_LISTS:
        values = getattr(args, name, None)
        if isinstance(values, list):
            resolved = [str(Path(v).expanduser().resolve()) for v in values]
            if len(set(resolved)) != len(resolved):
                raise InputError(
                    f"--{_flag(name)} names a file twice; its texts would be counted twice"
                )
    threads = getattr(args, "threads_per_worker", None)
    if threads is not None and getattr(args, "ray", None) == "local" and threads > os.cpu_count():
        raise InputError(
            f"--threads-per-worker {threads}: with --ray local every worker runs on this machine, "
            f"which has {os.cpu_count()} cores; give at most {os.cpu_count()}"
        )
    if getattr(args, "instruct", None) is not None:
        if getattr(args, "raw", False):
            raise InputError(
                "--instruct needs the model's prompt format: with --raw an instruction is just more "
                "text to continue; drop one of them"
            )
        if not getattr(args, "instruct_means", None):
            raise InputError(
                "--instruct needs --instruct-means more-toxic or less-toxic (what the instruction is "
                "meant to do, for the report card)"
            )
    elif getattr(args, "instruct_means", None):
        raise InputError("--instruct-means needs --instruct TEXT")
    if getattr(args, "no_capability", False) and (
        getattr(args, "qa", None) or getattr(args, "heldout", None)
    ):
        raise InputError(
            "--no-capability skips the QA and held-out checks; drop --qa/--heldout or it"
        )
    if getattr(args, "scorers", None) is not None:
        names = [n.strip() for n in args.scorers.split(",")]
        if not any(names) or not all(names):
            raise InputError(
                f"scorers {args.scorers!r}: one name is empty; e.g. --scorers auto,probe"
            )
        if len(set(names)) != len(names):
            raise InputError(f"scorers {args.scorers!r}: a scorer is repeated")
    if getattr(args, "dtype", None) is not None and args.dtype not in DTYPES:
        raise InputError(
            f"--dtype {args.dtype!r} is not supported; choose float32, bfloat16 or float16"
        )
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "command", None) == "fetch":
        check_fetch_name(args.name if args.name is not None else args.model, model_names)
    elif getattr(args, "model", None) is not None:
        check_model_name(args.model, model_names)
    if getattr(args, "out", None) is not None:
        _check_out(args)
    if getattr(args, "command", None) == "report" and not _local_target(args.folder):
        raise InputError("report: the folder is empty; give an audit folder (. for this one)")
    if getattr(args, "command", None) == "report" and is_url(args.folder):
        check_url(args.folder, "folder")
    if getattr(args, "html", None) is not None:
        if is_url(args.html):
            raise InputError(
                "--html writes a local file (figures are not uploaded); give a path such as "
                "figures.html",
                args.html,
            )
        args.html = _local_target(args.html)
        if not args.html:
            raise InputError("--html names no file; give one such as figures.html")
        check_output_file(args.html, "--html")
    if getattr(args, "results", None) is not None:
        check_output_folder(args.results, "--results")
    if getattr(args, "host", None) is not None:
        check_host(args.host)
    check_needs(args)


HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
)


def check_host(host: str) -> None:
    """--host is an IP address, or a host name that resolves (looked up once, here)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not HOST_NAME.fullmatch(host):
        raise InputError(f"--host {host!r} is neither an IP address nor a host name")
    try:
        socket.getaddrinfo(host, None)
    except OSError as error:
        raise InputError(f"--host {host!r} does not resolve ({error.strerror or error})") from None


def _scorers(args) -> list[str]:
    return [n.strip() for n in (getattr(args, "scorers", None) or "").split(",")]


def _eap_ig(method) -> bool:
    return method in ("eap-ig", "all")


# An option that only means something with another: (verbs, option, the other holds, naming it).
# Given without it, the option would be ignored without a word, so it is refused instead.
# A verb is "audit bias", "steer", ...; an option its attribute name; `holds` reads the args.
NEEDS = (
    *(
        ("audit bias", option, lambda a: a.localise, "--localise")
        for option in (
            "top_k",
            "attribution",
            "steps",
            "skip_bad",
            "heldout",
            "qa",
            "cluster_column",
        )
    ),
    ("audit bias", "steps", lambda a: _eap_ig(a.attribution), "--attribution eap-ig"),
    *(
        (verb, "layer", lambda a: a.steer, "--steer PAIRS")
        for verb in ("audit toxicity", "audit toxigen", "audit counterfactual", "audit bias")
    ),
    ("audit toxicity", "positive_means", lambda a: a.steer, "--steer PAIRS"),
    (
        "audit toxicity",
        "probe",
        lambda a: "probe" in _scorers(a),
        "the probe scorer (--scorers ...,probe)",
    ),
    (
        "audit toxicity",
        "temperature",
        lambda a: a.samples > 1,
        "--samples K > 1 (one sample is greedy)",
    ),
    (
        "audit toxicity",
        "common_seeds",
        lambda a: a.samples > 1,
        "--samples K > 1 (one sample is greedy)",
    ),
    ("generate", "temperature", lambda a: a.sample, "--sample"),
    ("generate", "seed", lambda a: a.sample, "--sample"),
    ("steer", "html", lambda a: a.positive_words, "--positive-words and --negative-words"),
    ("patch", "steps", lambda a: _eap_ig(a.method), "--method eap-ig (or all)"),
    (
        "patch",
        "verify",
        lambda a: a.method != "exact",
        "an attribution --method (exact needs no check)",
    ),
    *(
        (verb, option, lambda a: a.ray, "--ray")
        for verb in (
            "cache",
            "audit toxicity",
            "audit toxigen",
            "audit counterfactual",
            "audit bias",
        )
        for option in ("workers", "threads_per_worker")
    ),
    *(
        ("intervene search", option, lambda a: "conditional" in a.methods, "--methods conditional")
        for option in ("probe", "threshold")
    ),
    (
        "intervene search",
        "coefficients",
        lambda a: bool({"add", "conditional"} & set(a.methods)),
        "--methods add (or conditional)",
    ),
    ("intervene search", "instruction", lambda a: "prompt" in a.methods, "--methods prompt"),
    ("intervene search", "toxigen", lambda a: a.direction == "toxigen", "--direction toxigen"),
    ("intervene search", "sae", lambda a: a.direction == "sae", "--direction sae"),
    ("intervene search", "sae_latent", lambda a: a.direction == "sae", "--direction sae"),
    (
        "intervene search",
        "direction_probe",
        lambda a: a.direction == "probe",
        "--direction probe",
    ),
    (
        "intervene search",
        "scorer_probe",
        lambda a: "probe" in _scorers(a),
        "the probe scorer (--scorers ...,probe)",
    ),
    (
        "intervene search",
        "temperature",
        lambda a: a.samples > 1,
        "--samples K > 1 (one sample is greedy)",
    ),
)


def verb_of(args) -> str:
    """The verb the arguments are for: "generate", "audit bias", "probe train"..."""
    sub = (
        getattr(args, "audit_command", None)
        or getattr(args, "probe_command", None)
        or getattr(args, "intervene_command", None)
    )
    return f"{args.command} {sub}" if sub else str(getattr(args, "command", ""))


def check_needs(args) -> None:
    """Refuse an option given without the option it needs (the `NEEDS` table). `args.given` holds
    the options given on the command line (the CLI sets it); without it nothing is checked."""
    given = getattr(args, "given", None)
    if not given:
        return
    verb = verb_of(args)
    for needs_verb, option, holds, needed in NEEDS:
        if needs_verb == verb and option in given and not holds(args):
            raise InputError(f"--{_flag(option)} needs {needed}; without it, it would be ignored")


def given_options(argv: list[str]) -> set[str]:
    """The attribute names of the options on a command line (``--top-k 5`` -> "top_k"); the
    parser takes no abbreviations, so each is spelled in full."""
    given = set()
    for token in argv:
        if token == "--":
            break
        if token.startswith("--"):
            given.add(token[2:].split("=", 1)[0].replace("-", "_"))
    return given


URL_COMMANDS = ("audit", "cache")  # and report's folder: the verbs whose output may be at a URL


def _check_out(args) -> None:
    """--out is a folder we can create, or (audits and caches) a URL whose store answers; a file://
    URL is turned into its path here."""
    if is_url(args.out):
        if args.command not in URL_COMMANDS:
            raise InputError(
                f"--out: a URL is accepted by workbench {', '.join(URL_COMMANDS)} and report only; "
                "give a local folder",
                args.out,
            )
        check_url(args.out, "--out")
        return
    folder = _local_target(args.out)
    if not folder:
        raise InputError(
            f"--out {args.out!r} names no folder; give one (--out . for the current folder)"
        )
    args.out = folder
    check_output_folder(args.out, "--out")


def _local_target(target) -> str:
    """A local path or file:// URL (a Path from the Python API, a string from the command line)
    as a path string; "" when it names nothing ("", "  ", "file://"), which Path would take for
    the current folder, so run.json and shards would land in the working directory."""
    text = str(target)
    return str(local_path(text)) if text.removeprefix("file://").strip() else ""


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_number(name: str, value, kind: str, low, high) -> None:
    flag = f"--{_flag(name)}"
    if kind == "int":
        if not low <= value <= high:
            raise InputError(f"{flag} must be between {low} and {high}, not {value}")
        return
    if not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, not {value}")
    if kind == "fraction" and not low < value < high:
        raise InputError(f"{flag} must be strictly between {low:g} and {high:g}, not {value}")
    if kind == "float" and not low <= value <= high:
        raise InputError(f"{flag} must be between {low:g} and {high:g}, not {value}")


def _check_text(name: str, value: str) -> None:
    flag = f"--{_flag(name)}"
    if not value or not value.strip():
        raise InputError(f"{flag} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{flag} holds an unpaired surrogate") from None


def check_device(device: str) -> None:
    """cpu, cuda, cuda:N or mps, and only a device this machine has."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise InputError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return
    # lazy: torch takes 1.5 s to import; --help and the other argument checks never need it
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {device}: CUDA is not available here (no GPU, or a CPU-only torch build); "
                "use --device cpu"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            "--device mps: Apple's MPS backend is not available here; use --device cpu"
        )


def check_model_name(name: str, model_names: Collection[str]) -> None:
    """A registry name (one of `model_names`), a model folder (with config.json) or a Hugging
    Face id (owner/name)."""
    if name in model_names:
        return
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(
                "--model: is a file, not a model folder (expected config.json and weights inside)",
                name,
            )
        if not (path / "config.json").is_file():
            raise InputError("--model: not a model folder (no config.json inside)", name)
        _check_model_config(path / "config.json")
        return
    if not HF_ID.fullmatch(name):
        raise InputError(
            f"--model {name!r} is neither a registry name ({', '.join(model_names)}), a folder, "
            "nor a Hugging Face id (owner/name)"
        )


def _check_model_config(path: Path) -> None:
    """A model folder's config.json: a JSON object naming its model_type (what Transformers builds)."""
    try:
        config = json.loads(read_input_bytes(path, "model config"))
    except (ValueError, RecursionError):
        raise InputError("--model: config.json is not valid JSON", str(path)) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(
            '--model: config.json names no model_type (e.g. "phi"), so no model can be built '
            "from it",
            str(path),
        )


def check_fetch_name(name: str, model_names: Collection[str]) -> None:
    """What `workbench fetch` may download: a registry name, ``detoxify[:variant]`` (the variant is
    checked by the fetcher) or a Hugging Face id owner/name. Never a local path: a folder needs no
    fetching, and "ready in /etc" would be a lie."""
    if name in model_names or name == "detoxify" or name.startswith("detoxify:"):
        return
    if not HF_ID.fullmatch(name) or ".." in name.split("/"):
        raise InputError(
            f"fetch {name!r}: give a registry name ({', '.join(model_names)}), "
            "detoxify[:original|unbiased|multilingual] or a Hugging Face id owner/name; a local "
            "folder needs no fetching (pass it to --model)"
        )


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing ancestor of `path` (which must be a folder we can write into)."""
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    return ancestor


def check_output_folder(out: str, flag: str) -> None:
    """`out` is an existing folder or can be created, on a writable filesystem."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag}: exists and is not a folder", out)
    ancestor = _writable_ancestor(path)
    if not ancestor.is_dir():
        raise InputError(f"{flag}: {ancestor} is not a folder, so {out} cannot be created", out)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{flag}: cannot write in {ancestor} (read-only or no permission)", out)


def check_output_file(target: str, flag: str) -> None:
    """`target` is a file we can create or replace (not a folder)."""
    path = Path(target).expanduser()
    if path.is_dir():
        raise InputError(f"{flag}: is a folder; give a file name such as figures.html", target)
    ancestor = _writable_ancestor(path.parent)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(
            f"{flag}: cannot write in {ancestor} (read-only, no permission, or not a folder)",
            target,
        )


def check_context(
    model, prompts, max_new_tokens: int = 0, formatted: bool = False, where=None, what="prompt"
) -> None:
    """Refuse prompts that, with `max_new_tokens` new tokens, would not fit the model's context.

    prompts: strings or TextRecords (then the error names the file and line). Checked by token
    count after the model's prompt format unless `formatted` is False for raw prompts.
    """
    limit = model.info.n_ctx - max_new_tokens
    if limit < 1:
        raise InputError(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in "
            f"{model.info.name}'s context of {model.info.n_ctx} tokens"
        )
    for item in prompts:
        text = item.text if isinstance(item, TextRecord) else item
        # far too long to fit however it tokenizes: no need to tokenize it
        if len(text) > 64 * model.info.n_ctx:
            n = len(text)
            unit = "characters"
        else:
            n, unit = len(model.tokenizer(text).input_ids), "tokens"
        if n > limit:
            path = item.path if isinstance(item, TextRecord) else None
            line = item.line if isinstance(item, TextRecord) else None
            raise InputError(
                f"{what} is {n} {unit}; with {max_new_tokens} new tokens it exceeds "
                f"{model.info.name}'s context of {model.info.n_ctx} tokens",
                path or where,
                line,
            )
