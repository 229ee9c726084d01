"""The `workbench` command: one verb per capability.

Every verb prints a human summary (or, with --json, one JSON object on stdout);
progress bars go to stderr. Exit codes: 0 done, 1 model unavailable or other
failure, 2 bad input (one line naming the file, line and problem).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from ..core.checks import check_args, given_options
from ..core.errors import InputError, WorkbenchError
from ..core.remote import is_url, staged
from ..model.registry import REGISTRY
from ..core.errors import TokenizationWarning
from . import (
    app_verbs,
    audit_verbs,
    interp_verbs,
    intervene_verbs,
    model_verbs,
    probe_verbs,
    sae_verbs,
)
from .common import OneLineParser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as error:
        verb = next((a for a in argv if not a.startswith("-")), "")
        return _fail(verb, error, 2, "--json" in argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    verb = args.command
    # what was typed, for the options that need another (checks.NEEDS)
    args.given = given_options(argv)
    wants_json = bool(getattr(args, "json", False))
    _warn_in_one_line(verb)
    try:
        check_args(args, REGISTRY)  # every argument, before any model work or write
        run = _command(args.func)  # only now the library (and torch) is imported
        with _staged_output(args):
            return run(args) or 0
    except InputError as error:
        return _fail(verb, _as_given(args, error), 2, wants_json)
    except WorkbenchError as error:
        return _fail(verb, _as_given(args, error), 1, wants_json)
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        if wants_json:
            print(json.dumps({"error": "interrupted", "exit_code": 130}))
        return 130
    except OSError as error:  # a full disk, a read-only folder: the machine's, not a bug
        return _fail(verb, _os_error_text(error), 2, wants_json)
    except Exception as error:  # noqa: BLE001 - one line (and JSON) on every path; see _unexpected
        if os.environ.get("WORKBENCH_TRACEBACK"):
            raise
        return _fail(verb, _unexpected(error), 1, wants_json)


def _as_given(args, error: Exception) -> str:
    """The error's text with a URL's local staging folder named by the URL the user gave."""
    text = str(error)
    staged_pair = getattr(args, "staged", None)
    if staged_pair:
        local, url = staged_pair
        text = text.replace(local, url.rstrip("/"))
    return text


def _os_error_text(error: OSError) -> str:
    """An OSError as one line: what happened, to which file, and what to do."""
    what = error.strerror or type(error).__name__
    where = f" ({error.filename})" if error.filename else ""
    hint = {
        errno.ENOSPC: "free some space, or choose another --out",
        errno.EROFS: "choose a writable --out (or WORKBENCH_STAGING_DIR)",
        errno.EACCES: "choose a folder you may write in",
    }.get(error.errno, "check the path")
    return f"{what}{where}; {hint}"


def _unexpected(error: Exception) -> str:
    """A failure nobody foresaw (a bug) as one line; its traceback goes to a file it names, and
    WORKBENCH_TRACEBACK=1 shows it here instead."""
    path = Path(tempfile.gettempdir()) / f"workbench-error-{os.getpid()}.txt"
    try:
        path.write_text(traceback.format_exc())
        saved = f"traceback in {path}"
    except OSError:
        saved = "rerun with WORKBENCH_TRACEBACK=1 for the traceback"
    first = (str(error).splitlines() or [""])[0][:300]
    return f"unexpected {type(error).__name__}: {first} (a bug; please report it with the {saved})"


def _command(name: str):
    """A verb's function from its "module.function" name in this package (`*_commands`)."""
    module, function = name.split(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


@contextlib.contextmanager
def _staged_output(args):
    """An audit, cache or report at a URL (s3://...) runs in a local staging copy that is uploaded
    shard by shard (workbench.core.remote); the verb sees the local folder, the user the URL."""
    attribute = "folder" if args.command == "report" else "out"
    url = getattr(args, attribute, None)
    if not is_url(url):
        yield
        return
    with staged(url) as local:
        setattr(args, attribute, str(local))
        args.staged = (str(local), url)
        yield


def _warn_in_one_line(verb: str) -> None:
    """The library's own warnings (a tokenisation that was probably not meant) as one stderr line,
    "workbench VERB: warning: ...", like its errors, each once; any other warning as Python shows it."""
    shown, said = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TokenizationWarning):
            if str(message) not in said:
                said.add(str(message))
                print(f"workbench {verb}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _fail(verb: str, error: Exception | str, code: int, wants_json: bool) -> int:
    """One line on stderr; with --json also one JSON object on stdout, so a script always gets JSON."""
    print(
        f"workbench {verb}: error: {error}".replace("workbench : ", "workbench: "), file=sys.stderr
    )
    if wants_json:
        print(json.dumps({"error": str(error), "exit_code": code}))
    return code


def build_parser() -> argparse.ArgumentParser:
    """The `workbench` parser: each verb group adds its own options, beside its code."""
    parser = OneLineParser(prog="workbench", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="command", metavar="VERB")
    for group in (
        model_verbs,
        interp_verbs,
        probe_verbs,
        sae_verbs,
        audit_verbs,
        intervene_verbs,
        app_verbs,
    ):
        group.register(verbs)
    return parser
