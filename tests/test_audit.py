"""Toxicity audits: shards, SIGKILL + resume, seeds, bad input, reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from workbench.cli import main
from workbench.report.folder import load_results

from .conftest import ROOT, slow_audit_child

PROMPTS = [
    f"Prompt number {i}: tell me about {topic}."
    for i, topic in enumerate(
        [
            "cats",
            "rain",
            "bread",
            "trains",
            "music",
            "the sea",
            "winter",
            "chess",
            "tea",
            "maps",
            "bees",
            "clocks",
        ]
    )
]


def audit_args(prompts, out, *extra):
    return [
        "audit",
        "toxicity",
        "--model",
        "tiny-phi",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--scorers",
        "profanity-check",
        "--max-new-tokens",
        "6",
        "--samples",
        "2",
        "--shard-size",
        "2",
        "--batch-size",
        "2",
        "--seed",
        "7",
        *extra,
    ]


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def test_same_seed_same_results_and_report(prompts_file, tmp_path, capsys):
    assert main(audit_args(prompts_file, tmp_path / "a", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 24 and summary["conditions"][0]["condition"] == "baseline"
    assert main(audit_args(prompts_file, tmp_path / "b")) == 0
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    assert a.equals(b)
    # two different seeded samples per prompt
    assert a.groupby("row")["continuation"].nunique().max() == 2
    report = (tmp_path / "a" / "report.html").read_text()
    assert "plotly" in report and "Worst continuations" in report
    (tmp_path / "a" / "report.html").unlink()
    assert main(["report", str(tmp_path / "a")]) == 0 and (tmp_path / "a" / "report.html").exists()


def test_steering_conditions_in_one_report(prompts_file, tmp_path, capsys):
    pairs = ROOT / "probes" / "polite_vs_rude_pairs.jsonl"
    assert (
        main(
            audit_args(
                prompts_file,
                tmp_path / "s",
                "--steer",
                str(pairs),
                "--layer",
                "2",
                "--alpha",
                "-8",
                "8",
                "--ablate",
                "--no-capability",
                "--json",
            )
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert [c["condition"] for c in summary["conditions"]] == [
        "baseline",
        "steer-8",
        "steer+8",
        "ablate",
    ]
    # Every intervened condition is compared with the baseline prompt by prompt (12 prompts, 2 samples each).
    for condition in summary["conditions"]:
        score = condition["scores"]["profanity-check"]
        assert score["kind"] == "lexical" and score["mean"]["n"] == 12
        # samples of one prompt move together
        assert "cluster bootstrap over prompts" in score["mean"]["method"]
        if condition["condition"] == "baseline":
            assert "vs_baseline" not in score
        else:
            paired = score["vs_baseline"]
            assert (
                paired["n_units"] == 12
                and paired["up"]["count"] + paired["down"]["count"] + paired["unchanged"] == 12
            )
    report = (tmp_path / "s" / "report.html").read_text()
    assert "How the intervals were made" in report and "change vs baseline" in report
    assert all(method in report for method in summary["methods"])
    frame = load_results(tmp_path / "s")
    base = frame[frame.condition == "baseline"]["continuation"].tolist()
    assert base != frame[frame.condition == "steer+8"]["continuation"].tolist()


CHILD = slow_audit_child(0.4)


def test_library_call_is_the_command(prompts_file, tmp_path, tiny, capsys):
    """`audit_toxicity(model, ...)` and `workbench audit toxicity` run one code path: the same rows, the
    same conditions, the same capability check; bad options fail before anything is written."""
    from workbench.audit.toxicity import audit_toxicity
    from workbench.core.errors import InputError

    pairs = ROOT / "probes" / "polite_vs_rude_pairs.jsonl"
    qa, heldout = (
        tmp_path / "qa.jsonl",
        tmp_path / "heldout.txt",
    )  # a small capability check, to keep the test short
    qa.write_text(
        "".join((ROOT / "probes" / "qa.jsonl").read_text().splitlines(keepends=True)[:12])
    )
    heldout.write_text(
        "".join(
            (ROOT / "probes" / "heldout_neutral.txt").read_text().splitlines(keepends=True)[:12]
        )
    )
    assert (
        main(
            audit_args(
                prompts_file,
                tmp_path / "cli",
                "--steer",
                str(pairs),
                "--layer",
                "2",
                "--alpha",
                "4",
                "--qa",
                str(qa),
                "--heldout",
                str(heldout),
                "--json",
            )
        )
        == 0
    )
    command = json.loads(capsys.readouterr().out)
    run = audit_toxicity(
        tiny,
        prompts_file,
        tmp_path / "lib",
        scorers=["profanity-check"],
        max_new_tokens=6,
        samples=2,
        shard_size=2,
        batch_size=2,
        seed=7,
        steer=pairs,
        layer=2,
        alpha=[4],
        qa=str(qa),
        heldout=[str(heldout)],
    )
    assert load_results(tmp_path / "cli").equals(run.results())
    assert (
        run.summary["conditions"] == command["conditions"]
        and run.summary["card"] == command["card"]
    )
    assert (tmp_path / "lib" / "capability" / "run.json").exists() and run.report.exists()
    assert {"condition", "scorer"} <= set(run.to_frame().columns) and len(run.card_frame()) == 2
    assert "steer+4" in repr(run) and len(repr(run)) < 300
    for options, message in (
        ({"alpha": [4]}, "--alpha/--ablate need --steer"),
        ({"scorers": ["nope"]}, "unknown scorer 'nope'"),
        ({"max_new_tokens": 0}, "max-new-tokens"),
    ):
        with pytest.raises(InputError, match=message):
            audit_toxicity(tiny, prompts_file, tmp_path / "bad", **options)
    with pytest.raises(InputError, match="at least one non-empty prompt"):
        # prompts may be a list of strings
        audit_toxicity(tiny, ["A prompt.", "  "], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_sigkill_twice_then_resume_equals_uninterrupted(prompts_file, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    # the same command, uninterrupted, in this process
    assert main(audit_args(prompts_file, reference)) == 0

    def shards():
        return (
            len(list((resumed / "shards").glob("*.parquet")))
            if (resumed / "shards").exists()
            else 0
        )

    for kill_after in (2, 4):  # 6 shards in all
        child = subprocess.Popen(
            [sys.executable, str(script), *audit_args(prompts_file, resumed)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while shards() < kill_after and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert child.poll() is None, "the audit finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert kill_after <= shards() < 6
    subprocess.run(
        [sys.executable, str(script), *audit_args(prompts_file, resumed)],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    a, b = load_results(reference), load_results(resumed)
    assert len(b) == 24 and not b.duplicated(["condition", "row", "sample"]).any()
    assert a.equals(b)


@pytest.mark.parametrize(
    "setup,extra,expected",
    [
        (lambda p: p.write_text(""), [], "file has no texts"),
        (lambda p: p.write_bytes(b"ok\n\xff\xfe bad\n"), [], ":2: not valid UTF-8"),
        (lambda p: None, ["--scorers", "perspective"], "unknown scorer 'perspective'"),
        (
            lambda p: None,
            ["--scorers", "probe", "--probe", "/nonexistent/probe"],
            "not a saved probe",
        ),
        (lambda p: p.write_text("word " * 3000 + "\n"), [], ":1: prompt is"),
        (lambda p: None, ["--alpha", "2"], "--alpha/--ablate need --steer"),
        (lambda p: p.rename(p.with_suffix(".jsonl")) and None, [], "file not found"),
    ],
)
def test_bad_input_exits_2_before_any_work(prompts_file, tmp_path, capsys, setup, extra, expected):
    setup(prompts_file)
    code = main([*audit_args(prompts_file, tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "shards").exists() or not list(
        (tmp_path / "out" / "shards").iterdir()
    )


def test_skip_bad_counts_lines(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "Tell me a story."}\nnot json\n{"text": "Describe a cat."}\n')
    code = main(
        [
            "audit",
            "toxicity",
            "--model",
            "tiny-phi",
            "--prompts",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--scorers",
            "profanity-check",
            "--max-new-tokens",
            "4",
            "--skip-bad",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["skipped_bad_lines"] == 1 and summary["rows"] == 2


def test_report_figures_render_in_headless_chromium(prompts_file, tmp_path, artifacts):
    """Open report.html in headless Chromium: every plotly figure must have drawn its SVG."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed; `make setup` installs Debian's chromium package"
    assert main(audit_args(prompts_file, tmp_path / "r")) == 0
    report = tmp_path / "r" / "report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count('class="plot-container plotly"') == 2  # histogram + means for the one scorer
    assert dom.count('class="main-svg"') >= 2  # ...and each was drawn as SVG by plotly.js
    screenshot = artifacts / "toxicity_report.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--window-size=1200,2000",
            f"--screenshot={screenshot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert screenshot.exists() and screenshot.stat().st_size > 20_000


@pytest.mark.parametrize(
    "name,content,extra,expected",
    [
        ("p.jsonl", '{"text": "fine"}\n{"text": broken}\n', [], "p.jsonl:2: invalid JSON"),
        ("p.csv", "prompt,id\nhello,1\n", [], "p.csv:1: no column 'text'"),
        (
            "p.jsonl",
            '{"text": "fine"}\n{"prompt": "x"}\n',
            [],
            "p.jsonl:2: field 'text' is missing",
        ),
    ],
)
def test_bad_prompt_files_exit_2(tmp_path, capsys, name, content, extra, expected):
    path = tmp_path / name
    path.write_text(content)
    code = main([*audit_args(path, tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
