"""`workbench VERB --help` explains every option: help text and a default (or "required") for each,
found by walking the parser; and --json yields JSON on stdout even for an error."""

from __future__ import annotations

import argparse
import json

import pytest

from workbench.cli import build_parser, main


def all_parsers(parser: argparse.ArgumentParser, path=("workbench",)):
    """(command path, parser) for the top level and every verb, sub-verb, ..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, path + (name,))


def test_every_option_of_every_verb_has_help_and_a_default():
    missing = []
    parsers = list(all_parsers(build_parser()))
    assert len(parsers) >= 20
    for path, parser in parsers:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = (
                " ".join(path)
                + " "
                + (action.option_strings[0] if action.option_strings else action.dest)
            )
            text = formatter._get_help_string(action) if action.help else ""
            if not text.strip():
                missing.append(f"{name}: no help")
            elif action.option_strings and not action.required and "default" not in text:
                missing.append(f"{name}: no default shown")
    assert not missing, "\n".join(missing)


def test_help_renders_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "toxicity", "--help"])
    out = capsys.readouterr().out
    assert "tokens generated per continuation (default: 32)" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "sample instead of greedy decoding (default: off)" in out
        and "--prompt PROMPT the text to continue" in out
    )


def test_one_spelling_per_idea():
    """--alpha (never --alphas); one positions vocabulary for cache and probe train."""
    spellings = {}
    for path, parser in all_parsers(build_parser()):
        for action in parser._actions:
            for option in action.option_strings:
                spellings.setdefault(option, []).append(" ".join(path))
                if option == "--positions" and path[-1] in ("cache", "train"):
                    assert set(action.choices) <= {"all", "last", "mean", "mean_after_first"}
    assert "--alphas" not in spellings and "steer" in " ".join(spellings["--alpha"])


def test_json_errors_are_json_on_stdout(capsys, tmp_path):
    assert main(["info", "--model", str(tmp_path / "missing"), "--json"]) in (1, 2)
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["exit_code"] in (1, 2) and "missing" in payload["error"]
    assert len(captured.err.strip().splitlines()) == 1
    assert main(["generate", "--json"]) == 2  # a usage error (no --prompt) too
    assert "--prompt" in json.loads(capsys.readouterr().out)["error"]


def test_reruns_say_already_complete_and_how_to_force(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n")
    command = [
        "cache",
        "--model",
        "tiny-phi",
        "--input",
        str(texts),
        "--out",
        str(tmp_path / "acts"),
    ]
    assert main(command) == 0
    assert "cached 2 texts" in capsys.readouterr().out
    assert main(command + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["already_complete"] is True
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "already complete" in out and "delete the folder or choose another --out" in out
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\n")
    audit = [
        "audit",
        "toxicity",
        "--model",
        "tiny-phi",
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "tox"),
        "--scorers",
        "profanity-check",
        "--max-new-tokens",
        "2",
        "--no-capability",
    ]
    assert main(audit) == 0
    capsys.readouterr()
    assert main(audit) == 0
    assert "were already complete; nothing was recomputed" in capsys.readouterr().err


def test_long_verbs_say_what_they_are_doing(capsys):
    assert (
        main(
            [
                "patch",
                "--model",
                "tiny-phi",
                "--clean",
                "When Mary and John met, John gave it to",
                "--corrupt",
                "When Mary and John met, Mary gave it to",
                "--answers",
                " Mary",
                " John",
                "--kinds",
                "attn_head",
                "--method",
                "all",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "exact patching" in err
    assert "eap-ig: one clean forward pass, 5 forward and backward passes" in err


def test_cli_attribution_methods_are_the_library_s():
    """The verbs' --method choices are the library's methods."""
    from workbench.cli.interp_verbs import ATTRIBUTION_METHODS
    from workbench.interp.attribution import METHODS

    assert tuple(ATTRIBUTION_METHODS) == tuple(METHODS)


HELP_CHILD = """
import sys
from workbench.cli import build_parser, main

for argv in [a.split() for a in sys.argv[1:]]:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = ("torch", "transformers", "transformer_lens", "pandas", "plotly", "pyarrow", "numpy")
print("IMPORTED:", *[m for m in heavy if m in sys.modules])
"""


def test_help_and_argument_errors_import_no_torch():
    """`workbench VERB --help` (every verb) and an argument error import none of the model stack:
    the import set is measured in a fresh interpreter, not the time."""
    import subprocess
    import sys

    verbs = [" ".join(path[1:] + ("--help",)) for path, _ in all_parsers(build_parser())]
    errors = ["lens --model nope --prompt x", "patch --method nope", "lens"]
    done = subprocess.run(
        [sys.executable, "-c", HELP_CHILD, *verbs, *errors],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "IMPORTED:", done.stdout.splitlines()[-1]
    assert done.stderr.count("error:") == len(errors)
