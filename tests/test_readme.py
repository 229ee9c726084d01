"""Every code block of the README runs, so a renamed function, a changed flag or an undefined
name fails CI.

- Python blocks run as written, in order, in one namespace (like a notebook), on the README's
  own model (smollm2-135m), in a scratch folder outside the repository, reading the package's
  own data and ``$WORKBENCH_DATA`` (small stand-ins for the public data sets).
- Shell blocks: every ``workbench`` command runs through the CLI in the same scratch folder,
  on ``tiny-phi`` (``--model tiny-phi`` is added or substituted, and the few layer numbers
  that tiny-phi's 4 layers lack are mapped: SHELL_SUBSTITUTIONS), and must exit 0.
- What cannot run here is listed in NOT_RUN with the reason and the test that covers it
  instead; a block or line that is neither run nor listed fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest

from workbench.cli import main

from .conftest import ROOT, SHARED_DATA

README = ROOT / "README.md"

# Whole Python blocks not run, by a phrase they contain, with the reason.
PYTHON_NOT_RUN = {
    'RayExecutor("local", workers=2)': "starts Ray and writes to S3: tests/test_distributed.py and "
    "tests/test_remote.py make the same calls on a local Ray instance "
    "and a local S3 server",
}
# Shell lines not run, by prefix, with the reason.
NOT_RUN = {
    "make ": "the set-up, the demo and the suite themselves (CI runs `make test` on a clean clone)",
    ".venv/bin/pip": "installs packages",
    "# or:": "a comment",
    "workbench fetch phi-2": "downloads 5.6 GB from the hub (tests/test_models.py checks what loading without "
    "those weights says, and that it names this command)",
    "workbench dashboard": "starts a server (tests/test_dashboard_e2e.py drives it in Chromium)",
    "workbench intervene search": "audits every candidate on 120 prompts x 4 samples (minutes even on "
    "tiny-phi); tests/test_interventions.py runs the same command on 8 prompts",
    "workbench audit toxicity --prompts prompts.txt --out tox/ --samples 5 --intervention": "the shipped "
    "intervention is made for smollm2-135m and tiny-phi refuses it; tests/test_interventions.py "
    "audits with it on smollm2-135m",
    "workbench audit toxicity --prompts my_prompts.txt": "the same command (above)",
    "workbench audit bias --pairs probes/gender_occupations.csv": "localises 120 pairs and measures 114 capability "
    "items twice (a minute on tiny-phi); "
    "tests/test_localise.py runs the same command on "
    "12 pairs",
}
# tests/test_distributed.py runs these commands
RAY_ADDRESS = re.compile(r"--ray (local|auto|\S+:\d+)")
SHELL_SUBSTITUTIONS = [
    ("--layer 9 ", "--layer 1 "),  # tiny-phi has 4 layers
    ("blocks.15.", "blocks.1."),
    # the Features section's full-size SAE, cut to seconds on tiny-phi: the real corpus, 40 windows
    ("blocks.10.", "blocks.1."),
    ("../shared/data/", f"{SHARED_DATA}/"),
    ("--max-windows 40000", "--max-windows 40"),
    ("--tokens 5000000", "--tokens 4096"),
    ("--width 4608", "--width 256"),
]
NO_MODEL = (["models"], ["report"], ["sae", "train"], ["sae", "fetch"])  # verbs without --model


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if language is None and line.startswith("```") and line.strip() != "```":
            language, start, lines = line.strip("`").strip(), number, []
        elif language is not None and line.strip() == "```":
            blocks.append((start, language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def shell_commands(code: str) -> list[str]:
    """One string per command: continuation lines joined, trailing comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("#"):
            commands.append(line)
            continue
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """A working folder outside the repository. The Python blocks read the package's own data and
    WORKBENCH_DATA (here: small stand-ins for the public data sets); the shell lines also name
    files in the current folder (prompts.txt, probes/, crows_pairs_anonymized.csv)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "probes").symlink_to(ROOT / "probes")
    data = tmp_path / "public-data"
    monkeypatch.setenv("WORKBENCH_DATA", str(data))
    (data / "crows_pairs").mkdir(parents=True)
    toxigen = data / "toxigen" / "prompts"
    toxigen.mkdir(parents=True)
    for group in ("women", "muslim", "jewish", "black", "asian"):
        for kind in ("hate", "neutral"):
            source = SHARED_DATA / "toxigen" / "prompts" / f"{kind}_{group}_1k.txt"
            (toxigen / source.name).write_text(
                "".join(source.read_text().splitlines(keepends=True)[:3])
            )
    crows = (
        (SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    for path in (tmp_path / "crows_pairs_anonymized.csv", tmp_path / "crows.csv"):
        path.write_text("\n".join(crows[:21]) + "\n")
    (data / "crows_pairs" / "crows_pairs_anonymized.csv").write_text("\n".join(crows[:21]) + "\n")
    prompts = ["The weather today is", "My neighbour said", "I think that", "The movie was"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    texts = "".join(f'{{"text": "Text number {i} is here."}}\n' for i in range(6))
    (tmp_path / "texts.jsonl").write_text(texts)
    (tmp_path / "corpus.jsonl").write_text(texts)
    return tmp_path


def test_every_readme_block_is_run_or_listed_with_a_reason():
    """The census: nothing in the README escapes both the runners below and the NOT_RUN lists."""
    blocks = code_blocks(README.read_text(encoding="utf-8"))
    languages = {language for _, language, _ in blocks}
    assert languages <= {"python", "bash", "text"}, languages
    unlisted = []
    for start, language, code in blocks:
        if language == "bash":
            for command in shell_commands(code):
                if not (command.startswith("workbench ") or _not_run(command)):
                    unlisted.append(f"README.md:{start}: {command}")
    assert not unlisted, "\n".join(unlisted)


def _not_run(command: str) -> str | None:
    for prefix, reason in NOT_RUN.items():
        if command.startswith(prefix):
            return reason
    if RAY_ADDRESS.search(command):
        return "needs Ray (tests/test_distributed.py runs these commands on a local instance and a 2-node cluster)"
    return None


@pytest.mark.integration
def test_readme_python_blocks_run_as_written(scratch, capsys):
    blocks = [
        (start, code)
        for start, language, code in code_blocks(README.read_text(encoding="utf-8"))
        if language == "python"
    ]
    for shell_only in ("probes", "prompts.txt", "crows_pairs_anonymized.csv", "crows.csv"):
        (scratch / shell_only).unlink()  # the Python blocks need none of them
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for start, code in blocks:
        if any(phrase in code for phrase in PYTHON_NOT_RUN):
            continue
        try:
            exec(compile(code, f"README.md:{start}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(
                f"README.md:{start}: the Python block fails: {type(error).__name__}: {error}"
            ) from error
        ran += 1
    assert ran == len(blocks) - len(PYTHON_NOT_RUN) >= 3
    # What the blocks' comments promise.
    assert namespace["exact"].shape == (
        namespace["model"].cfg.n_layers,
        namespace["model"].cfg.n_heads,
    )
    assert len(repr(namespace["vector"])) < 200
    assert namespace["disk"]["resid_post", 15].shape == (4, namespace["model"].cfg.d_model)
    assert (
        len(namespace["run"].results()) == 4
        and (Path("results/tox-python") / "report.html").exists()
    )
    print(f"README: {ran} Python blocks run, {len(PYTHON_NOT_RUN)} listed as not run")


def test_readme_shell_commands_run_on_tiny_phi(scratch, capsys):
    ran, skipped, seconds = [], [], {}
    for start, language, code in code_blocks(README.read_text(encoding="utf-8")):
        if language != "bash":
            continue
        for command in shell_commands(code):
            if _not_run(command) or not command.startswith("workbench "):
                skipped.append(command)
                continue
            argv = _on_tiny_phi(command)
            start_time = time.perf_counter()
            code_ = main(argv[1:])
            seconds[command[:60]] = round(time.perf_counter() - start_time, 1)
            captured = capsys.readouterr()
            assert code_ == 0, (
                f"README.md:{start}: `{command}` ran as `{shlex.join(argv)}` and exited "
                f"{code_}: {captured.err.strip()[-500:]}"
            )
            ran.append(command)
    assert len(ran) >= 15, ran
    print(
        f"README: {len(ran)} workbench commands run, {len(skipped)} lines listed as not run; slowest:",
        sorted(seconds.items(), key=lambda item: -item[1])[:5],
    )


def _on_tiny_phi(command: str) -> list[str]:
    """The command with --model tiny-phi (substituted or added) and SHELL_SUBSTITUTIONS applied."""
    for old, new in SHELL_SUBSTITUTIONS:
        command = command.replace(old, new)
    argv = [os.path.expandvars(a) for a in shlex.split(command)]  # "$WORKBENCH_DATA/toxigen"
    if "--model" in argv:
        argv[argv.index("--model") + 1] = "tiny-phi"
    elif argv[1:2] not in NO_MODEL and argv[1:3] not in NO_MODEL:
        argv += ["--model", "tiny-phi"]
    return [
        str(Path(a).relative_to("/")) if a.startswith("/path/") or a.startswith("/shared/") else a
        for a in argv
    ]
